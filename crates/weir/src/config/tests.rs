//! Loading config files: every key, its bounds and units, every rule between keys, and
//! how errors are reported (key, line, all of them).

use weir_gateway::config::{Http2Config, LimitsConfig, RoutingConfig, ServerConfig, ServicesConfig};
use weir_rabbitmq::BrokerSettings;

use super::reader::edit_distance;
use super::*;

/// The errors of `text`, as `(line, key)` pairs in report order.
fn problems(text: &str) -> Vec<(usize, String)> {
    let errors = load_config(text).expect_err("config should be rejected").errors;
    errors.into_iter().map(|e| (e.line, e.key)).collect()
}

/// The single error of `text`.
fn only_error(text: &str) -> ConfigError {
    let errors = load_config(text).expect_err("config should be rejected").errors;
    assert_eq!(errors.len(), 1, "expected one error, got {errors:?}");
    errors.into_iter().next().expect("one error")
}

fn limits(body: &str) -> LimitsConfig {
    load_config(&format!("[limits]\n{body}\n")).expect("valid config").limits
}

fn server(body: &str) -> ServerConfig {
    load_config(&format!("[server]\n{body}\n")).expect("valid config").server
}

#[test]
fn empty_file_and_empty_sections_give_defaults() {
    assert_eq!(load_config("").unwrap(), GatewayConfig::default());
    assert_eq!(load_config("# only a comment\n\n").unwrap(), GatewayConfig::default());
    let sections = "[server]\n[routing]\n[routing.default_versions]\n[limits]\n";
    assert_eq!(load_config(sections).unwrap(), GatewayConfig::default());
}

#[test]
fn documented_example_loads_with_every_key() {
    let doc = include_str!("../../../../docs/configuration.md");
    let start = doc.find("```toml\n").expect("example block") + "```toml\n".len();
    let example = &doc[start..start + doc[start..].find("```").expect("block end")];
    let c = load_config(example).unwrap_or_else(|e| panic!("example is invalid:\n{e}"));
    assert_eq!(c.server.listen, "0.0.0.0:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(20));
    assert_eq!(c.server.default_timeout, Duration::from_secs(15));
    assert_eq!(c.server.max_timeout, Duration::from_secs(120));
    assert_eq!(c.server.header_timeout, Duration::from_secs(5));
    assert_eq!(c.server.read_timeout, Duration::from_millis(15_000));
    assert_eq!(c.server.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
    let trusted: Vec<String> = c.server.trusted_proxies.iter().map(ToString::to_string).collect();
    assert_eq!(trusted, ["10.0.0.0/8", "fd00::/8", "192.0.2.1/32"]);
    assert!(c.server.forwarded_header);
    assert_eq!(c.server.handover_socket, Some("/run/weir/handover.sock".into()));
    assert_eq!(c.server.handover_wait, Duration::from_secs(3));
    assert_eq!(c.server.keep_alive_drain, Duration::from_secs(3));
    assert_eq!(c.server.ready_services, ["billing", "search"]);
    let h2 = &c.server.http2;
    assert_eq!(
        (h2.max_concurrent_streams, h2.initial_stream_window, h2.initial_connection_window),
        (64, 256 * 1024, 2 << 20)
    );
    assert_eq!((h2.max_send_buffer, h2.max_header_list_size), (32 * 1024, 32 * 1024));
    assert_eq!(
        (h2.keep_alive_interval, h2.keep_alive_timeout),
        (Some(Duration::from_secs(10)), Some(Duration::from_secs(5)))
    );
    assert_eq!((h2.max_pending_accept_reset_streams, h2.max_local_error_reset_streams), (50, 500));
    assert_eq!(c.routing.region, "eu-west");
    assert_eq!(c.routing.version_header, "x-api-version");
    assert_eq!(c.routing.default_versions["billing"], "2.1.0");
    assert_eq!(c.routing.default_versions["search"], "1.0.0-beta.2");
    assert_eq!(c.routing.heartbeat_interval, Duration::from_secs(2));
    assert_eq!(c.routing.degraded_after, Duration::from_secs(6));
    assert_eq!(c.routing.evict_after, Duration::from_secs(60));
    assert_eq!(c.limits.payload.max_request_bytes_per_call, 2 * MIB);
    assert_eq!(c.limits.payload.max_request_bytes_per_connection, 32 * MIB);
    assert_eq!(c.limits.payload.max_aggregate_inflight_bytes, GIB);
    assert_eq!(c.limits.payload.max_inflight_bytes_per_client, 16 * MIB);
    assert_eq!(c.limits.max_upload_size, 5 * GIB);
    assert_eq!(c.limits.chunk_size, 128 * 1024);
    assert_eq!(c.limits.stream_window, 512 * 1024);
    let services = &c.services;
    assert_eq!(services.listen, "0.0.0.0:7443".parse::<SocketAddr>().unwrap());
    assert_eq!(services.handshake_timeout, Duration::from_secs(5));
    let tls = services.tls.as_ref().expect("tls");
    assert_eq!(tls.client_ca, Some(PathBuf::from("/etc/weir/services-ca.pem")));
    assert_eq!(services.credentials.len(), 2);
    assert_eq!(services.credentials[0].prefixes, ["/billing", "/invoices"]);
    assert_eq!(services.credentials[1].token, None);
    let rabbitmq = services.rabbitmq.as_ref().expect("rabbitmq");
    assert_eq!(rabbitmq.url.to_string(), "amqps://broker.internal:5671/%2fprod");
    let expected = BrokerSettings {
        prefix: "shop".into(),
        gateway: "eu-1".into(),
        prefetch: 128,
        heartbeat: 15,
        liveness_interval: Duration::from_millis(250),
        ..BrokerSettings::default()
    };
    assert_eq!(rabbitmq.settings, expected);
    assert_eq!(c.tracing.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318"));
}

#[test]
fn missing_keys_keep_their_defaults() {
    let c = load_config("[server]\nmax_timeout = \"10m\"\n").unwrap();
    let expected = ServerConfig { max_timeout: Duration::from_secs(600), ..ServerConfig::default() };
    assert_eq!(c.server, expected);
    assert_eq!(c.routing, RoutingConfig::default());
    assert_eq!(c.limits, LimitsConfig::default());
}

#[test]
fn sizes_accept_every_unit() {
    let cases = [
        ("1048576", MIB),
        ("\"1048576\"", MIB),
        ("\"1048576B\"", MIB),
        ("\"1024KiB\"", MIB),
        ("\"1MiB\"", MIB),
        ("\"1 mib\"", MIB),
        ("\"1000KB\"", 1_000_000),
        ("\"1MB\"", 1_000_000),
        ("\"1gb\"", 1_000_000_000),
        ("\"2GiB\"", 2 * GIB),
        ("\"1TB\"", 1_000_000_000_000),
        ("\"3TiB\"", 3 * TIB),
    ];
    for (value, bytes) in cases {
        let l = limits(&format!("max_upload_size = {value}"));
        assert_eq!(l.max_upload_size, bytes, "{value}");
    }
}

#[test]
fn invalid_sizes_are_rejected_with_reasons() {
    let cases = [
        ("\"1.5MiB\"", "fraction"),
        ("1.5", "fractions are not allowed"),
        ("-1", "must not be negative"),
        ("\"-1KiB\"", "negative"),
        ("0", "greater than zero"),
        ("\"0MiB\"", "greater than zero"),
        ("\"10XB\"", "unknown size unit `XB`"),
        ("\"10 K\"", "unknown size unit `K`"),
        ("\"MiB\"", "does not start with a number"),
        ("\"\"", "does not start with a number"),
        ("\"99999999999999999999\"", "too large"),
        ("\"20000000TiB\"", "too large"),
        ("true", "expected a size"),
        ("[1]", "found array"),
    ];
    for (value, reason) in cases {
        let e = only_error(&format!("[limits]\nmax_upload_size = {value}\n"));
        assert_eq!((e.line, e.key.as_str()), (2, "limits.max_upload_size"), "{value}");
        assert!(e.message.contains(reason), "{value}: {}", e.message);
    }
}

#[test]
fn sizes_convert_to_each_field_type() {
    let l = limits("chunk_size = \"16MiB\"\nstream_window = \"1GiB\"\nmax_request_bytes_per_call = \"8MiB\"");
    assert_eq!(l.chunk_size, 16 * 1024 * 1024);
    assert_eq!(l.stream_window, 1 << 30);
    assert_eq!(l.payload.max_request_bytes_per_call, 8 * MIB);
    assert_eq!(limits("stream_window = \"1KiB\"").stream_window, 1024);
}

#[test]
fn absolute_size_bounds_are_enforced() {
    let cases = [
        ("max_request_bytes_per_call = \"9MiB\"", "above the maximum of 8 MiB"),
        ("chunk_size = \"17MiB\"", "above the maximum of 16 MiB"),
        ("stream_window = 1023", "below the minimum of 1 KiB"),
        ("stream_window = \"2GiB\"", "above the maximum of 1 GiB"),
    ];
    for (line, reason) in cases {
        let e = only_error(&format!("[limits]\n{line}\n"));
        assert!(e.message.contains(reason), "{line}: {}", e.message);
    }
}

#[test]
fn durations_accept_every_unit() {
    let cases = [
        ("7", Duration::from_secs(7)),
        ("\"7\"", Duration::from_secs(7)),
        ("\"7s\"", Duration::from_secs(7)),
        ("\"300ms\"", Duration::from_millis(300)),
        ("\"250us\"", Duration::from_micros(250)),
        ("\"250µs\"", Duration::from_micros(250)),
        ("\"2m\"", Duration::from_secs(120)),
        ("\"1h\"", Duration::from_secs(3600)),
        ("\"24h\"", Duration::from_secs(86_400)),
        ("\"5S\"", Duration::from_secs(5)),
        ("\"5 ms\"", Duration::from_millis(5)),
    ];
    for (value, expected) in cases {
        assert_eq!(server(&format!("shutdown_grace = {value}")).shutdown_grace, expected, "{value}");
    }
}

#[test]
fn invalid_durations_are_rejected_with_reasons() {
    let cases = [
        ("0", "greater than zero"),
        ("\"0ms\"", "greater than zero"),
        ("-5", "must not be negative"),
        ("\"-5s\"", "negative"),
        ("1.5", "fractions are not allowed"),
        ("\"1.5s\"", "fraction"),
        ("\"5d\"", "unknown duration unit `d`"),
        ("\"1h30m\"", "unknown duration unit `h30m`"),
        ("\"25h\"", "above the maximum of 24h"),
        ("\"99999999999999999999h\"", "too large"),
        ("\"18446744073709551615h\"", "too large"),
        ("\"s\"", "does not start with a number"),
        ("\"fast\"", "does not start with a number"),
        ("{ secs = 5 }", "expected a duration"),
    ];
    for (value, reason) in cases {
        let e = only_error(&format!("[server]\nshutdown_grace = {value}\n"));
        assert_eq!((e.line, e.key.as_str()), (2, "server.shutdown_grace"), "{value}");
        assert!(e.message.contains(reason), "{value}: {}", e.message);
    }
}

#[test]
fn scalar_values_are_checked() {
    let cases = [
        ("[server]\nlisten = \"localhost:80\"", "server.listen", "not a socket address"),
        ("[server]\nlisten = 8080", "server.listen", "found integer"),
        ("[routing]\nregion = 3", "routing.region", "expected a string, found integer"),
        ("[routing]\nversion_header = \"X-Version\"", "routing.version_header", "write `x-version`"),
        ("[routing]\nversion_header = \"x version\"", "routing.version_header", "' ' is not allowed"),
        ("[routing]\nversion_header = \"x:v\"", "routing.version_header", "':' is not allowed"),
        ("[routing]\nversion_header = \"\"", "routing.version_header", "must not be empty"),
        ("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]", "server.trusted_proxies", "not an address or a network"),
        ("[server]\ntrusted_proxies = \"10.0.0.0/8\"", "server.trusted_proxies", "expected an array of networks"),
        ("[server]\nforwarded_header = \"yes\"", "server.forwarded_header", "expected true or false"),
        ("[server]\nready_services = \"demo\"", "server.ready_services", "expected an array of service names"),
        ("[server]\nready_services = [\"\"]", "server.ready_services", "must not be empty"),
        ("[server]\nready_services = [\"a\", \"a\"]", "server.ready_services", "`a` is listed twice"),
        ("[server]\nready_services = [1]", "server.ready_services", "expected service name strings"),
    ];
    for (text, key, reason) in cases {
        let e = only_error(text);
        assert_eq!((e.line, e.key.as_str()), (2, key), "{text}");
        assert!(e.message.contains(reason), "{text}: {}", e.message);
    }
    assert_eq!(server("ready_services = [\"orders\", \"demo\"]").ready_services, ["orders", "demo"]);
    assert!(server("ready_services = []").ready_services.is_empty());
    let listen = server("listen = \"[::1]:0\"").listen;
    assert_eq!(listen, "[::1]:0".parse::<SocketAddr>().unwrap());
}

#[test]
fn server_tls_keys_are_read_and_their_files_checked_by_key() {
    assert_eq!(server("").tls, None);
    let text = "[server]\nhttp_redirect_listen = \"127.0.0.1:8081\"\n\n[server.tls]\n\
                cert = \"/nonexistent/weir/c.pem\"\nkey = \"/nonexistent/weir/k.pem\"\nstrict_sni = \"yes\"\n\
                handshake_timeout = \"2s\"\n\n[[server.tls.certificates]]\nnames = [\"*.com\", \"ok.example.com\"]\n\
                cert = \"c.pem\"\nkey = \"k.pem\"\n\n[[server.tls.certificates]]\nnames = [\"A.example.com\"]\n";
    let expected = [
        (5, "server.tls.cert"),
        (6, "server.tls.key"),
        (7, "server.tls.strict_sni"),
        (11, "server.tls.certificates[0].names"),
        (15, "server.tls.certificates[1].cert"),
        (15, "server.tls.certificates[1].key"),
    ];
    let found = problems(text);
    let found: Vec<(usize, &str)> = found.iter().map(|(line, key)| (*line, key.as_str())).collect();
    assert_eq!(found, expected);
    let e = only_error("[server]\nhttp_redirect_listen = \"127.0.0.1:8081\"\n");
    assert_eq!((e.line, e.key.as_str()), (2, "server.http_redirect_listen"));
    assert!(e.message.contains("requires [server.tls]"), "{}", e.message);
}

#[test]
fn admin_listen_is_optional_and_apart_from_listen() {
    assert_eq!(server("").admin_listen, None);
    let admin = server("admin_listen = \"[::1]:9000\"").admin_listen;
    assert_eq!(admin, Some("[::1]:9000".parse().unwrap()));
    let both_ephemeral = "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"";
    assert_eq!(server(both_ephemeral).admin_listen.map(|a| a.port()), Some(0));
    let e = only_error("[server]\nlisten = \"0.0.0.0:80\"\nadmin_listen = \"0.0.0.0:80\"\n");
    assert_eq!((e.line, e.key.as_str()), (3, "server.admin_listen"));
    assert_eq!(e.message, "must differ from server.listen");
    let e = only_error("[server]\nadmin_listen = \"off\"\n");
    assert!(e.message.contains("not a socket address"), "{}", e.message);
}

#[test]
fn idle_timeout_and_max_connections_are_read_and_bounded() {
    assert_eq!(server("").idle_timeout, Duration::from_secs(30));
    assert_eq!(server("").max_connections, None, "derived from the open-files limit at start");
    let c = server("idle_timeout = \"750ms\"\nmax_connections = 2000");
    assert_eq!((c.idle_timeout, c.max_connections), (Duration::from_millis(750), Some(2000)));
    let e = only_error("[server]\nmax_connections = 0\n");
    assert_eq!((e.line, e.key.as_str()), (2, "server.max_connections"));
    let e = only_error("[server]\nidle_timeout = 0\n");
    assert_eq!((e.line, e.key.as_str()), (2, "server.idle_timeout"));
}

#[test]
fn default_versions_accept_inline_and_sub_tables() {
    let inline = "[routing]\ndefault_versions = { billing = \"1.2.3\", \"user-profile\" = \"0.1.0\" }\n";
    let sub = "[routing.default_versions]\nbilling = \"1.2.3\"\n\"user-profile\" = \"0.1.0\"\n";
    for text in [inline, sub] {
        let versions = load_config(text).unwrap().routing.default_versions;
        let expected = [("billing", "1.2.3"), ("user-profile", "0.1.0")];
        let expected = expected.map(|(k, v)| (k.to_owned(), v.to_owned())).into_iter().collect();
        assert_eq!(versions, expected, "{text}");
    }
}

#[test]
fn default_versions_report_each_bad_entry_on_its_line() {
    let text = "[routing.default_versions]\na = \"1.2\"\nb = \"1.0.0\"\nc = \"v1.0.0\"\nd = 1\n\"\" = \"1.0.0\"\n";
    let errors = load_config(text).unwrap_err().errors;
    let got: Vec<_> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    let want = [
        (2, "routing.default_versions.a"),
        (4, "routing.default_versions.c"),
        (5, "routing.default_versions.d"),
        (6, "routing.default_versions."),
    ];
    assert_eq!(got, want);
    assert!(errors[0].message.contains("not a semantic version"));
    assert!(errors[2].message.contains("expected a version string"));
    assert!(errors[3].message.contains("service name must not be empty"));
    let e = only_error("[routing]\ndefault_versions = \"1.0.0\"\n");
    assert_eq!((e.line, e.key.as_str()), (2, "routing.default_versions"));
    assert!(e.message.contains("expected a table, found string"));
}

#[test]
fn unknown_keys_and_sections_are_reported_with_lines() {
    let text = "[server]\nlisten = \"0.0.0.0:80\"\nlistn = 1\ncolour = \"blue\"\n\n[metrics]\nport = 9\n\n[[plugins]]\nname = \"x\"\n";
    let errors = load_config(text).unwrap_err().errors;
    let got: Vec<_> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(got, [(3, "server.listn"), (4, "server.colour"), (6, "metrics"), (9, "plugins")]);
    assert_eq!(errors[0].message, "unknown key; did you mean `listen`?");
    assert!(errors[1].message.starts_with("unknown key; expected one of `listen`, `shutdown_grace`"));
    assert!(errors[2].message.starts_with("unknown table; expected one of `server`, `routing`, `limits`"));
    assert!(errors[3].message.starts_with("unknown table"));
}

#[test]
fn unknown_keys_in_nested_and_dotted_forms_are_reported() {
    assert_eq!(problems("server.lissten = \"x\"\n"), [(1, "server.lissten".to_owned())]);
    assert_eq!(problems("[limits.extra]\nx = 1\n"), [(1, "limits.extra".to_owned())]);
    assert_eq!(problems("top = 1\n"), [(1, "top".to_owned())]);
    let c = load_config("server.listen = \"127.0.0.1:9\"\n").unwrap();
    assert_eq!(c.server.listen.port(), 9);
}

#[test]
fn a_section_of_the_wrong_type_is_one_error() {
    let e = only_error("\n\nserver = 5\n");
    assert_eq!((e.line, e.key.as_str()), (3, "server"));
    assert_eq!(e.message, "expected a table, found integer");
    let e = only_error("[[limits]]\nchunk_size = 1\n");
    assert_eq!((e.line, e.key.as_str()), (1, "limits"));
    assert!(e.message.contains("found array of tables"));
}

#[test]
fn every_error_is_reported_at_once_in_line_order() {
    let text = "\
[limits]
chunk_size = \"1.5MiB\"
stream_window = 0
bogus = true

[server]
listen = \"nowhere\"
default_timeout = \"2h\"
max_timeout = \"1h\"

[routing]
version_header = \"X-V\"
evict_after = \"5s\"
[nope]
";
    let got = problems(text);
    let want = [
        (2, "limits.chunk_size"),
        (3, "limits.stream_window"),
        (4, "limits.bogus"),
        (7, "server.listen"),
        (8, "server.default_timeout"),
        (12, "routing.version_header"),
        (13, "routing.evict_after"),
        (14, "nope"),
    ];
    assert_eq!(got, want.map(|(l, k)| (l, k.to_owned())));
}

#[test]
fn cross_field_rules_name_the_key_set_in_the_file() {
    let cases = [
        (
            "[server]\ndefault_timeout = \"10m\"",
            "server.default_timeout",
            "10m must not exceed server.max_timeout (5m)",
        ),
        ("[server]\nmax_timeout = 20", "server.max_timeout", "20s must be at least server.default_timeout (30s)"),
        (
            "[routing]\nheartbeat_interval = 15",
            "routing.heartbeat_interval",
            "15s must be less than routing.degraded_after (15s)",
        ),
        (
            "[routing]\ndegraded_after = 5",
            "routing.degraded_after",
            "5s must be more than routing.heartbeat_interval (5s)",
        ),
        ("[routing]\nevict_after = 15", "routing.evict_after", "15s must be more than routing.degraded_after (15s)"),
        (
            "[limits]\nmax_request_bytes_per_call = \"8MiB\"\nmax_request_bytes_per_connection = \"4MiB\"",
            "limits.max_request_bytes_per_call",
            "8 MiB must not exceed limits.max_request_bytes_per_connection (4 MiB)",
        ),
        (
            "[limits]\nmax_request_bytes_per_connection = \"512KiB\"",
            "limits.max_request_bytes_per_connection",
            "512 KiB must be at least limits.max_request_bytes_per_call (1 MiB)",
        ),
        (
            "[limits]\nmax_aggregate_inflight_bytes = \"8MiB\"",
            "limits.max_aggregate_inflight_bytes",
            "8 MiB must be at least limits.max_request_bytes_per_connection (16 MiB)",
        ),
        (
            "[limits]\nmax_inflight_bytes_per_client = \"512KiB\"",
            "limits.max_inflight_bytes_per_client",
            "512 KiB must be at least limits.max_request_bytes_per_call (1 MiB)",
        ),
        (
            "[limits]\nmax_upload_size = 1000",
            "limits.max_upload_size",
            "1000 bytes must be at least limits.chunk_size (64 KiB)",
        ),
        ("[limits]\nchunk_size = \"2MiB\"\nmax_upload_size = \"1MiB\"", "limits.chunk_size", "must not exceed"),
    ];
    for (text, key, message) in cases {
        let e = only_error(text);
        assert_eq!(e.key, key, "{text}");
        assert!(e.message.contains(message), "{text}: {}", e.message);
        assert_eq!(e.line, 2, "{text}");
    }
}

#[test]
fn relations_may_hold_at_their_bounds() {
    let text = "[server]\ndefault_timeout = 60\nmax_timeout = 60\n[limits]\nmax_request_bytes_per_call = \"1MiB\"\n\
                max_request_bytes_per_connection = \"1MiB\"\nmax_aggregate_inflight_bytes = \"1MiB\"\n\
                chunk_size = 4096\nmax_upload_size = 4096\n";
    assert!(load_config(text).is_ok());
}

#[test]
fn a_rejected_value_does_not_also_fail_its_relations() {
    let e =
        only_error("[limits]\nmax_request_bytes_per_call = \"lots\"\nmax_request_bytes_per_connection = \"512KiB\"\n");
    assert_eq!(e.key, "limits.max_request_bytes_per_call");
}

#[test]
fn toml_syntax_errors_carry_their_line() {
    let e = only_error("[server]\nlisten = \"0.0.0.0:80\"\nmax_timeout = = 3\n");
    assert_eq!((e.line, e.key.as_str()), (3, ""));
    assert!(e.message.starts_with("invalid TOML"), "{}", e.message);
    let e = only_error("[server]\nmax_timeout = 3\nmax_timeout = 4\n");
    assert_eq!(e.line, 3);
}

#[test]
fn display_prints_one_error_per_line() {
    let errors = load_config("[server]\nlisten = 1\n[x]\n").unwrap_err();
    let shown = errors.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0], "line 2: server.listen: expected a socket address string, found integer");
    assert!(lines[1].starts_with("line 3: x: unknown table"));
    assert_eq!(only_error("a = = 1").to_string().split(": ").next(), Some("line 1"));
}

#[test]
fn shown_values_use_the_largest_exact_unit() {
    assert_eq!(show_size(&(8 * MIB)), "8 MiB");
    assert_eq!(show_size(&(1536 * KIB)), "1536 KiB");
    assert_eq!(show_size(&1000), "1000 bytes");
    assert_eq!(show_duration(&Duration::from_secs(7200)), "2h");
    assert_eq!(show_duration(&Duration::from_secs(90)), "90s");
    assert_eq!(show_duration(&Duration::from_millis(1500)), "1500ms");
    assert_eq!(show_duration(&Duration::from_micros(250)), "250us");
    assert_eq!(edit_distance("listn", "listen"), 1);
    assert_eq!(edit_distance("", "abc"), 3);
}

fn services(body: &str) -> ServicesConfig {
    load_config(body).unwrap_or_else(|e| panic!("invalid:\n{e}")).services
}

#[test]
fn services_keys_tls_and_credentials_are_read() {
    let text = "\
[services]
listen = \"0.0.0.0:7443\"
handshake_timeout = \"3s\"

[services.tls]
cert = \"gw.pem\"
key = \"/etc/weir/gw.key\"
client_ca = \"ca.pem\"

[[services.credentials]]
service = \"billing\"
token = \"s3cret\"
prefixes = [\"/billing\", \"/invoices/\"]

[[services.credentials]]
service = \"search\"
prefixes = [\"/\"]
";
    let c = services(text);
    assert_eq!(c.listen, "0.0.0.0:7443".parse::<SocketAddr>().unwrap());
    assert_eq!(c.handshake_timeout, Duration::from_secs(3));
    let tls = c.tls.expect("tls");
    assert_eq!((tls.cert.to_str(), tls.key.to_str()), (Some("gw.pem"), Some("/etc/weir/gw.key")));
    assert_eq!(tls.client_ca, Some(PathBuf::from("ca.pem")));
    assert_eq!(c.credentials.len(), 2);
    assert_eq!(c.credentials[0].service, "billing");
    assert_eq!(c.credentials[0].token.as_deref(), Some("s3cret"));
    assert_eq!(c.credentials[0].prefixes, ["/billing", "/invoices/"]);
    assert_eq!((c.credentials[1].token.as_ref(), c.credentials[1].prefixes.as_slice()), (None, &["/".to_owned()][..]));
}

#[test]
fn service_side_caps_are_read_and_bounded() {
    let text = "[services]\nmax_hello_size = \"8KiB\"\nmax_pending_handshakes = 4\nmax_endpoints = 10\n\
                [routing]\nforget_after = \"2m\"\nmax_routes = 100\n";
    let c = load_config(text).unwrap();
    assert_eq!((c.services.max_hello_size, c.services.max_pending_handshakes, c.services.max_endpoints), (8192, 4, 10));
    assert_eq!((c.routing.forget_after, c.routing.max_routes), (Duration::from_secs(120), 100));
    let defaults = GatewayConfig::default();
    assert_eq!((defaults.services.max_hello_size, defaults.services.max_pending_handshakes), (64 * 1024, 256));
    assert_eq!((defaults.services.max_endpoints, defaults.routing.max_routes), (1024, 16384));
    assert_eq!(defaults.routing.forget_after, Duration::from_secs(300));
    for (text, key) in [
        ("[services]\nmax_hello_size = \"17MiB\"", "services.max_hello_size"),
        ("[services]\nmax_hello_size = 100", "services.max_hello_size"),
        ("[services]\nmax_pending_handshakes = 0", "services.max_pending_handshakes"),
        ("[services]\nmax_endpoints = -1", "services.max_endpoints"),
        ("[routing]\nmax_routes = 0", "routing.max_routes"),
        ("[routing]\nforget_after = \"48h\"", "routing.forget_after"),
    ] {
        let errors = load_config(text).unwrap_err().errors;
        assert_eq!(errors.len(), 1, "{text}: {errors:?}");
        assert_eq!(errors[0].key, key, "{text}");
    }
}

#[test]
fn services_default_to_plain_tcp_on_7070_without_credentials() {
    let c = services("[services]\n");
    assert_eq!(c, ServicesConfig::default());
    assert_eq!(c.listen, "127.0.0.1:7070".parse::<SocketAddr>().unwrap());
    assert_eq!((c.tls, c.credentials.len()), (None, 0));
    let inline = "[services]\ncredentials = [{ service = \"a\", token = \"t\", prefixes = [\"/a\"] }]\n";
    assert_eq!(services(inline).credentials[0].prefixes, ["/a"]);
}

#[test]
fn services_rabbitmq_needs_a_url_and_checks_every_key() {
    let c = services("[services.rabbitmq]\nurl = \"amqp://u:p@127.0.0.1/%2f\"\n").rabbitmq.expect("rabbitmq");
    assert_eq!((c.url.to_string(), c.settings), ("amqp://127.0.0.1:5672/%2f".to_owned(), BrokerSettings::default()));
    assert_eq!(services("[services]\n").rabbitmq, None);
    let cases = [
        ("prefix = \"x\"", "services.rabbitmq.url", "missing"),
        ("url = \"http://u:s3cret@h/\"", "services.rabbitmq.url", "amqp://"),
        ("url = 5", "services.rabbitmq.url", "URL string"),
        ("url = \"amqp://h\"\nprefix = \"a b\"", "services.rabbitmq.prefix", "letters, digits"),
        ("url = \"amqp://h\"\ngateway = \"\"", "services.rabbitmq.gateway", "must not be empty"),
        ("url = \"amqp://h\"\nprefetch = 0", "services.rabbitmq.prefetch", "between 1 and 65535"),
        ("url = \"amqp://h\"\nheartbeat = 70000", "services.rabbitmq.heartbeat", "between 0 and 65535"),
        ("url = \"amqp://h\"\nliveness_interval = \"0s\"", "services.rabbitmq.liveness_interval", ""),
    ];
    for (body, key, message) in cases {
        let e = only_error(&format!("[services.rabbitmq]\n{body}\n"));
        assert_eq!(e.key, key, "{body}");
        assert!(e.message.contains(message), "{body}: {}", e.message);
        assert!(!e.message.contains("s3cret"), "{}", e.message);
    }
}

#[test]
fn shared_needs_a_redis_url_and_checks_every_key() {
    let text = "[shared]\nredis = \"redis://:pw@10.0.0.9:6379/2\"\nkey_prefix = \"prod\"\nreplica = \"r1\"\n\
                command_timeout = \"50ms\"\non_failure = \"deny\"\n";
    let shared = load_config(text).unwrap().shared.expect("shared");
    assert_eq!(shared.store.url, "redis://:pw@10.0.0.9:6379/2");
    assert_eq!((shared.store.key_prefix.as_str(), shared.store.replica.as_str()), ("prod", "r1"));
    assert_eq!(shared.store.command_timeout, std::time::Duration::from_millis(50));
    assert_eq!(shared.on_failure, weir_gateway::config::OnSharedFailure::Deny);
    assert_eq!(load_config("").unwrap().shared, None);
    let cases = [
        ("key_prefix = \"x\"", "shared.redis", "missing"),
        ("redis = \"http://u:s3cret@h/\"", "shared.redis", "redis://"),
        ("redis = 5", "shared.redis", "URL string"),
        ("redis = \"redis://h\"\nkey_prefix = \"a:b\"", "shared.key_prefix", "letters, digits"),
        ("redis = \"redis://h\"\ncommand_timeout = \"0s\"", "shared.command_timeout", ""),
        ("redis = \"redis://h\"\non_failure = \"maybe\"", "shared.on_failure", "local"),
    ];
    for (body, key, message) in cases {
        let e = only_error(&format!("[shared]\n{body}\n"));
        assert_eq!(e.key, key, "{body}");
        assert!(e.message.contains(message), "{body}: {}", e.message);
        assert!(!e.message.contains("s3cret"), "{}", e.message);
    }
}

#[test]
fn services_tls_needs_a_cert_and_a_key() {
    let errors = load_config("[services.tls]\nclient_ca = \"ca.pem\"\n").unwrap_err().errors;
    let got: Vec<_> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(got, [(1, "services.tls.cert"), (1, "services.tls.key")]);
    assert!(errors[0].message.starts_with("missing"), "{}", errors[0].message);
    let e = only_error("[services.tls]\ncert = \"\"\nkey = \"k.pem\"\n");
    assert_eq!((e.line, e.key.as_str(), e.message.as_str()), (2, "services.tls.cert", "must not be empty"));
}

#[test]
fn bad_credentials_are_reported_per_entry_and_key() {
    let cases = [
        ("token = \"t\"\nprefixes = [\"/a\"]", "services.credentials[0].service", "missing"),
        ("service = \"a\"\ntoken = \"t\"", "services.credentials[0].prefixes", "missing"),
        ("service = \"\"\ntoken = \"t\"\nprefixes = [\"/a\"]", "services.credentials[0].service", "must not be empty"),
        ("service = \"a\"\ntoken = \"\"\nprefixes = [\"/a\"]", "services.credentials[0].token", "must not be empty"),
        ("service = \"a\"\ntoken = 5\nprefixes = [\"/a\"]", "services.credentials[0].token", "expected a string"),
        ("service = \"a\"\ntoken = \"t\"\nprefixes = []", "services.credentials[0].prefixes", "at least one prefix"),
        (
            "service = \"a\"\ntoken = \"t\"\nprefixes = [\"api\"]",
            "services.credentials[0].prefixes",
            "must start with `/`",
        ),
        (
            "service = \"a\"\ntoken = \"t\"\nprefixes = [\"/a/{id}\"]",
            "services.credentials[0].prefixes",
            "literal path",
        ),
        ("service = \"a\"\ntoken = \"t\"\nprefixes = \"/a\"", "services.credentials[0].prefixes", "expected an array"),
        (
            "service = \"a\"\ntoken = \"t\"\nprefixes = [\"/a\"]\nprefix = 1",
            "services.credentials[0].prefix",
            "unknown key",
        ),
        ("service = \"a\"\nprefixes = [\"/a\"]", "services.credentials[0].token", "unless services.tls.client_ca"),
    ];
    for (entry, key, reason) in cases {
        let e = only_error(&format!("[[services.credentials]]\n{entry}\n"));
        assert_eq!(e.key, key, "{entry}");
        assert!(e.message.contains(reason), "{entry}: {}", e.message);
    }
    let e = only_error("[services]\ncredentials = 5\n");
    assert_eq!((e.line, e.key.as_str()), (2, "services.credentials"));
    assert!(e.message.contains("expected an array of tables"), "{}", e.message);
}

#[test]
fn each_credential_entry_is_numbered_and_found_on_its_line() {
    let text = "[[services.credentials]]\nservice = \"a\"\ntoken = \"t\"\nprefixes = [\"/a\"]\n\n\
                [[services.credentials]]\nservice = \"b\"\ntoken = \"t\"\nprefixes = [\"b\"]\n";
    let e = only_error(text);
    assert_eq!((e.line, e.key.as_str()), (9, "services.credentials[1].prefixes"));
    let missing = only_error("[[services.credentials]]\nservice = \"a\"\ntoken = \"t\"\n");
    assert_eq!(missing.line, 1, "{missing}");
}

#[test]
fn a_token_without_client_ca_is_only_optional_with_mutual_tls() {
    let text = "[services.tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\n\
                [[services.credentials]]\nservice = \"a\"\nprefixes = [\"/a\"]\n";
    assert_eq!(services(text).credentials[0].token, None);
}

#[test]
fn tokens_never_appear_in_errors_or_debug_output() {
    let text = "[[services.credentials]]\nservice = \"a\"\ntoken = \"hunter2\"\nprefixes = [\"bad\"]\n";
    assert!(!load_config(text).unwrap_err().to_string().contains("hunter2"));
    let ok = "[[services.credentials]]\nservice = \"a\"\ntoken = \"hunter2\"\nprefixes = [\"/a\"]\n";
    assert!(!format!("{:?}", load_config(ok).unwrap()).contains("hunter2"));
}

fn http2(body: &str) -> Http2Config {
    load_config(&format!("[server.http2]\n{body}\n")).expect("valid config").server.http2
}

#[test]
fn http2_settings_are_read_with_their_units() {
    let h = http2(
        "max_concurrent_streams = 64\ninitial_stream_window = \"256KiB\"\ninitial_connection_window = \"4MiB\"\n\
         max_send_buffer = \"32KiB\"\nmax_header_list_size = \"8KiB\"\nkeep_alive_interval = \"10s\"\n\
         keep_alive_timeout = \"5s\"\nmax_pending_accept_reset_streams = 50\nmax_local_error_reset_streams = 200",
    );
    assert_eq!(h.max_concurrent_streams, 64);
    assert_eq!(h.initial_stream_window, 256 * 1024);
    assert_eq!(h.initial_connection_window, 4 * 1024 * 1024);
    assert_eq!(h.max_send_buffer, 32 * 1024);
    assert_eq!(h.max_header_list_size, 8 * 1024);
    assert_eq!(h.keep_alive_interval, Some(Duration::from_secs(10)));
    assert_eq!(h.keep_alive_timeout, Some(Duration::from_secs(5)));
    assert_eq!(h.max_pending_accept_reset_streams, 50);
    assert_eq!(h.max_local_error_reset_streams, 200);
    assert_eq!(load_config("[server.http2]\n").unwrap().server.http2, Http2Config::default());
}

#[test]
fn http2_pings_default_to_half_the_idle_timeout() {
    let c = load_config("[server]\nidle_timeout = \"40s\"\n").unwrap().server;
    assert_eq!(c.http2.ping_interval(c.idle_timeout), Duration::from_secs(20));
    assert_eq!(c.http2.ping_timeout(c.idle_timeout), Duration::from_secs(20));
    let h = http2("keep_alive_interval = \"3s\"");
    assert_eq!(h.ping_interval(Duration::from_secs(40)), Duration::from_secs(3));
    assert_eq!(h.ping_timeout(Duration::from_secs(40)), Duration::from_secs(20));
}

#[test]
fn http2_settings_stay_within_the_specs_bounds() {
    let cases = [
        ("max_concurrent_streams = 0", "between 1 and"),
        ("max_concurrent_streams = 10001", "above the maximum of 10000"),
        ("initial_stream_window = 0", "greater than zero"),
        ("initial_stream_window = \"2GiB\"", "above the maximum of 2147483647 bytes"),
        ("initial_connection_window = 65534", "below the minimum of 65535 bytes"),
        ("initial_connection_window = 2147483648", "above the maximum of 2147483647 bytes"),
        ("max_send_buffer = 1000", "below the minimum of 1 KiB"),
        ("max_header_list_size = \"2MiB\"", "above the maximum of 1 MiB"),
        ("keep_alive_interval = 0", "greater than zero"),
        ("keep_alive_timeout = \"-1s\"", "negative"),
        ("max_pending_accept_reset_streams = 0", "between 1 and"),
        ("max_local_error_reset_streams = 100001", "above the maximum of 100000"),
    ];
    for (line, reason) in cases {
        let e = only_error(&format!("[server.http2]\n{line}\n"));
        let key = line.split(' ').next().expect("a key");
        assert_eq!(e.key, format!("server.http2.{key}"), "{line}");
        assert_eq!(e.line, 2, "{line}");
        assert!(e.message.contains(reason), "{line}: {}", e.message);
    }
}

#[test]
fn an_http2_stream_window_may_not_exceed_the_connection_window() {
    let e = only_error("[server.http2]\ninitial_stream_window = \"2MiB\"\n");
    assert_eq!(e.key, "server.http2.initial_stream_window");
    assert!(e.message.contains("must not exceed server.http2.initial_connection_window (1 MiB)"), "{}", e.message);
    let e = only_error("[server.http2]\ninitial_connection_window = \"512KiB\"\n");
    assert_eq!(e.key, "server.http2.initial_connection_window");
    let h = http2("initial_stream_window = \"2MiB\"\ninitial_connection_window = \"2MiB\"");
    assert_eq!(h.initial_stream_window, h.initial_connection_window);
}

#[test]
fn unknown_http2_keys_are_reported() {
    let e = only_error("[server.http2]\nmax_concurrent_stream = 10\n");
    assert_eq!(e.key, "server.http2.max_concurrent_stream");
    assert!(e.message.contains("did you mean `max_concurrent_streams`"), "{}", e.message);
}

#[test]
fn the_access_log_goes_to_stdout_a_file_or_nowhere_in_json_or_text() {
    use weir_gateway::config::{AccessLogFormat, AccessLogTarget, LogConfig};
    let log = |body: &str| load_config(&format!("[log]\n{body}\n")).expect("valid config").log;
    assert_eq!(log(""), LogConfig { access: AccessLogTarget::Stdout, format: AccessLogFormat::Json });
    assert_eq!(log("access = \"off\"").access, AccessLogTarget::Off);
    assert_eq!(
        log("access = \"/var/log/weir/access.log\"").access,
        AccessLogTarget::File("/var/log/weir/access.log".into())
    );
    assert_eq!(log("format = \"text\"").format, AccessLogFormat::Text);
    for (line, reason) in [
        ("format = \"xml\"", "expected \"json\" or \"text\", found \"xml\""),
        ("access = \"\"", "must not be empty"),
        ("access = 1", "expected a file path"),
    ] {
        let e = only_error(&format!("[log]\n{line}\n"));
        assert!(e.key.starts_with("log.") && e.message.contains(reason), "{line}: {e:?}");
    }
    assert_eq!(only_error("[log]\nacces = \"off\"\n").key, "log.acces", "unknown keys are refused");
}

#[test]
fn tracing_exports_to_a_plain_http_receiver_or_nowhere() {
    assert_eq!(load_config("").unwrap().tracing.otlp_endpoint, None);
    let c = load_config("[tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\n").unwrap();
    assert_eq!(c.tracing.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318"));
    for bad in ["\"https://collector:4318\"", "\"\"", "\"collector:4318\"", "4318"] {
        let e = only_error(&format!("[tracing]\notlp_endpoint = {bad}\n"));
        assert_eq!((e.line, e.key.as_str()), (2, "tracing.otlp_endpoint"), "{bad}: {e}");
    }
    let e = only_error("[tracing]\nsampling = 1\n");
    assert_eq!((e.line, e.key.as_str()), (2, "tracing.sampling"), "unknown keys are refused: {e}");
}
