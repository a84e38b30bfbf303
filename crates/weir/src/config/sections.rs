//! The top-level sections `[server]`, `[routing]`, `[limits]`, `[services]`, `[log]`,
//! `[tracing]` and `[shared]`: each known key is read by exactly one line here, with its absolute bounds
//! on that line.

use weir_gateway::config::{
    AccessLogFormat, AccessLogTarget, Http2Config, LimitsConfig, LogConfig, OnSharedFailure, RabbitMqConfig,
    RoutingConfig, ServerConfig, ServerTlsConfig, ServiceCredential, ServicesConfig, ServicesTlsConfig,
    SharedLimitsConfig, SniCertificateConfig, TracingConfig,
};
use weir_rabbitmq::{BrokerAddress, BrokerSettings};
use weir_shared::SharedConfig;

use super::*;

/// `[server]`: one line per key.
pub(super) fn read_server(s: &mut Section<'_, '_>, c: &mut ServerConfig) {
    s.value("listen", &mut c.listen, socket_addr);
    s.value("shutdown_grace", &mut c.shutdown_grace, duration);
    s.value("default_timeout", &mut c.default_timeout, duration);
    s.value("max_timeout", &mut c.max_timeout, duration);
    s.value("header_timeout", &mut c.header_timeout, duration);
    s.value("read_timeout", &mut c.read_timeout, duration);
    s.value("admin_listen", &mut c.admin_listen, |item| socket_addr(item).map(Some));
    s.value("send_timeout", &mut c.send_timeout, duration);
    s.value("max_connections_per_ip", &mut c.max_connections_per_ip, mounts::count);
    s.value("min_request_data_rate", &mut c.min_request_data_rate, size(1, u64::MAX));
    s.value("min_response_data_rate", &mut c.min_response_data_rate, size(1, u64::MAX));
    s.value("data_rate_grace", &mut c.data_rate_grace, duration);
    s.value("idle_timeout", &mut c.idle_timeout, duration);
    s.value("max_connections", &mut c.max_connections, |item| mounts::count(item).map(Some));
    s.section("http2", |h| read_http2(h, &mut c.http2));
    s.value("http_redirect_listen", &mut c.http_redirect_listen, |item| socket_addr(item).map(Some));
    s.value("trusted_proxies", &mut c.trusted_proxies, networks);
    s.value("forwarded_header", &mut c.forwarded_header, boolean);
    s.value("handover_socket", &mut c.handover_socket, |item| file_path(item).map(Some));
    s.value("handover_wait", &mut c.handover_wait, duration);
    s.value("keep_alive_drain", &mut c.keep_alive_drain, duration);
    s.value("ready_services", &mut c.ready_services, service_names);
    s.section("tls", |t| {
        if t.present() {
            c.tls = read_server_tls(t);
        }
    });
}

/// `[server.http2]`: one line per key, windows within RFC 9113's bounds (a connection's
/// window starts at 65,535 bytes and cannot be set lower; no window exceeds 2^31 - 1).
fn read_http2(s: &mut Section<'_, '_>, c: &mut Http2Config) {
    s.value("max_concurrent_streams", &mut c.max_concurrent_streams, |item| bounded_count(item, MAX_H2_STREAMS));
    s.value("initial_stream_window", &mut c.initial_stream_window, size(KIB, MAX_H2_WINDOW));
    s.value("initial_connection_window", &mut c.initial_connection_window, size(MIN_H2_CONN_WINDOW, MAX_H2_WINDOW));
    s.value("max_send_buffer", &mut c.max_send_buffer, size(KIB, MAX_CHUNK));
    s.value("max_header_list_size", &mut c.max_header_list_size, size(KIB, MAX_H2_HEADER_LIST));
    s.value("keep_alive_interval", &mut c.keep_alive_interval, |item| duration(item).map(Some));
    s.value("keep_alive_timeout", &mut c.keep_alive_timeout, |item| duration(item).map(Some));
    s.value("max_pending_accept_reset_streams", &mut c.max_pending_accept_reset_streams, reset_count);
    s.value("max_local_error_reset_streams", &mut c.max_local_error_reset_streams, reset_count);
}

/// A number of HTTP/2 stream resets within `1..=MAX_H2_RESETS`.
fn reset_count(item: &Item) -> Result<usize, String> {
    let n = bounded_count(item, MAX_H2_RESETS)?;
    usize::try_from(n).map_err(|_| format!("{n} is too large for this platform"))
}

/// A count within `1..=max`.
fn bounded_count(item: &Item, max: u32) -> Result<u32, String> {
    let n = mounts::count(item)?;
    within(n, 1, max, |n| n.to_string())?;
    Ok(n)
}

/// `[server.tls]`: `cert` and `key` are required once the table is there; then
/// `[[server.tls.certificates]]`, each with its `names`, `cert` and `key`.
fn read_server_tls(s: &mut Section<'_, '_>) -> Option<ServerTlsConfig> {
    let cert = s.required("cert", file_path);
    let key = s.required("key", file_path);
    let mut tls = ServerTlsConfig::new(cert?, key?);
    s.value("strict_sni", &mut tls.strict_sni, boolean);
    s.value("handshake_timeout", &mut tls.handshake_timeout, duration);
    s.tables("certificates", &mut tls.certificates, |e| {
        let names = e.required("names", server_names);
        let cert = e.required("cert", file_path);
        let key = e.required("key", file_path);
        Some(SniCertificateConfig { names: names?, cert: cert?, key: key? })
    });
    Some(tls)
}

/// `[routing]`: one line per key.
pub(super) fn read_routing(s: &mut Section<'_, '_>, c: &mut RoutingConfig) {
    s.value("region", &mut c.region, string);
    s.value("version_header", &mut c.version_header, header_name);
    s.map("default_versions", &mut c.default_versions, service_version);
    s.value("heartbeat_interval", &mut c.heartbeat_interval, duration);
    s.value("degraded_after", &mut c.degraded_after, duration);
    s.value("evict_after", &mut c.evict_after, duration);
    s.value("forget_after", &mut c.forget_after, duration);
    s.value("max_routes", &mut c.max_routes, count_of);
}

/// `[limits]`: one line per key, with its absolute bounds in bytes.
pub(super) fn read_limits(s: &mut Section<'_, '_>, c: &mut LimitsConfig) {
    let p = &mut c.payload;
    s.value("max_request_bytes_per_call", &mut p.max_request_bytes_per_call, size(1, MAX_BUFFERED_CALL));
    s.value("max_request_bytes_per_connection", &mut p.max_request_bytes_per_connection, size(1, u64::MAX));
    s.value("max_aggregate_inflight_bytes", &mut p.max_aggregate_inflight_bytes, size(1, u64::MAX));
    s.value("max_inflight_bytes_per_client", &mut p.max_inflight_bytes_per_client, size(1, u64::MAX));
    s.value("max_upload_size", &mut c.max_upload_size, size(1, u64::MAX));
    s.value("chunk_size", &mut c.chunk_size, size(1, MAX_CHUNK));
    s.value("stream_window", &mut c.stream_window, size(KIB, GIB));
}

/// `[services]`: one line per key, then `[services.tls]`, `[services.rabbitmq]` and
/// `[[services.credentials]]`.
pub(super) fn read_services(s: &mut Section<'_, '_>, c: &mut ServicesConfig) {
    s.value("listen", &mut c.listen, socket_addr);
    s.value("handshake_timeout", &mut c.handshake_timeout, duration);
    s.value("max_hello_size", &mut c.max_hello_size, size(KIB, MAX_CHUNK));
    s.value("max_pending_handshakes", &mut c.max_pending_handshakes, count_of);
    s.value("max_endpoints", &mut c.max_endpoints, count_of);
    s.section("tls", |t| {
        if t.present() {
            c.tls = read_services_tls(t);
        }
    });
    s.section("rabbitmq", |r| {
        if r.present() {
            c.rabbitmq = read_rabbitmq(r);
        }
    });
    let mutual_tls = c.tls.as_ref().is_some_and(|tls| tls.client_ca.is_some());
    s.tables("credentials", &mut c.credentials, |e| read_credential(e, mutual_tls));
}

/// A positive count (`1..=u32::MAX`) as a `usize`.
fn count_of(item: &Item) -> Result<usize, String> {
    let n = mounts::count(item)?;
    usize::try_from(n).map_err(|_| format!("{n} is too large for this platform"))
}

/// `[services.tls]`: `cert` and `key` are required once the table is there.
fn read_services_tls(s: &mut Section<'_, '_>) -> Option<ServicesTlsConfig> {
    let cert = s.required("cert", file_path);
    let key = s.required("key", file_path);
    let mut client_ca = None;
    s.value("client_ca", &mut client_ca, |item| file_path(item).map(Some));
    Some(ServicesTlsConfig { cert: cert?, key: key?, client_ca })
}

/// `[services.rabbitmq]`: `url` is required once the table is there.
fn read_rabbitmq(s: &mut Section<'_, '_>) -> Option<RabbitMqConfig> {
    let url = s.required("url", |item| {
        let text = item.as_str().ok_or_else(|| "expected an amqp:// or amqps:// URL string".to_owned())?;
        text.parse::<BrokerAddress>().map_err(|e| e.to_string())
    });
    let mut settings = BrokerSettings::default();
    s.value("prefix", &mut settings.prefix, queue_name_part);
    s.value("gateway", &mut settings.gateway, queue_name_part);
    s.value("prefetch", &mut settings.prefetch, |item| whole_number(item, 1, u16::MAX));
    s.value("heartbeat", &mut settings.heartbeat, |item| whole_number(item, 0, u16::MAX));
    s.value("liveness_interval", &mut settings.liveness_interval, duration);
    Some(RabbitMqConfig { url: url?, settings })
}

/// Part of a queue name: 1 to 100 of `A-Z a-z 0-9 . _ -`.
fn queue_name_part(item: &Item) -> Result<String, String> {
    let text = non_empty_string(item)?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if text.len() > 100 || !text.chars().all(allowed) {
        return Err(format!("`{text}` must be 1 to 100 letters, digits, `.`, `_` or `-`"));
    }
    Ok(text)
}

/// A whole number within `min..=max`.
fn whole_number(item: &Item, min: u16, max: u16) -> Result<u16, String> {
    let n = item.as_integer().ok_or_else(|| expected("a whole number", item))?;
    u16::try_from(n)
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("{n} must be between {min} and {max}"))
}

/// One `[[services.credentials]]` entry. Without a token only an mTLS identity can prove
/// the service, so a token is required unless `services.tls.client_ca` is set.
fn read_credential(s: &mut Section<'_, '_>, mutual_tls: bool) -> Option<ServiceCredential> {
    let service = s.required("service", non_empty_string);
    let mut token = None;
    s.value("token", &mut token, |item| non_empty_string(item).map(Some));
    let prefixes = s.required("prefixes", path_prefixes);
    if token.is_none() && !mutual_tls && !s.reader.rejected.contains(&s.key_path("token")) {
        s.missing("token", "required unless services.tls.client_ca is set (only mutual TLS can stand in for it)");
        return None;
    }
    Some(ServiceCredential { service: service?, token, prefixes: prefixes? })
}

/// `[log]`: the access log's destination and line format.
pub(super) fn read_log(s: &mut Section<'_, '_>, c: &mut LogConfig) {
    s.value("access", &mut c.access, access_target);
    s.value("format", &mut c.format, access_format);
}

/// `"stdout"`, `"off"`, or the path of a file.
fn access_target(item: &Item) -> Result<AccessLogTarget, String> {
    match item.as_str() {
        Some("stdout") => Ok(AccessLogTarget::Stdout),
        Some("off") => Ok(AccessLogTarget::Off),
        _ => file_path(item).map(AccessLogTarget::File),
    }
}

/// `"json"` or `"text"`.
fn access_format(item: &Item) -> Result<AccessLogFormat, String> {
    match item.as_str() {
        Some("json") => Ok(AccessLogFormat::Json),
        Some("text") => Ok(AccessLogFormat::Text),
        Some(other) => Err(format!("expected \"json\" or \"text\", found {other:?}")),
        None => Err(expected("\"json\" or \"text\"", item)),
    }
}

/// `[tracing]`: one line per key.
pub(super) fn read_tracing(s: &mut Section<'_, '_>, c: &mut TracingConfig) {
    s.value("otlp_endpoint", &mut c.otlp_endpoint, otlp_endpoint);
}

/// `[shared]`: `redis` is required once the table is there; every other key has a
/// default (the replica's name: the host name and process id).
pub(super) fn read_shared(s: &mut Section<'_, '_>) -> Option<SharedLimitsConfig> {
    let url = s.required("redis", |item| {
        let text = item.as_str().ok_or_else(|| "expected a redis:// or rediss:// URL string".to_owned())?;
        let config = SharedConfig::new(text, "weir");
        config.validate().map_err(|e| e.to_string())?;
        Ok(text.to_owned())
    });
    let mut store = SharedConfig::new(url.clone().unwrap_or_default(), "weir");
    store.replica = default_replica_name();
    s.value("key_prefix", &mut store.key_prefix, queue_name_part);
    s.value("replica", &mut store.replica, queue_name_part);
    s.value("connect_timeout", &mut store.connect_timeout, positive_duration);
    s.value("command_timeout", &mut store.command_timeout, positive_duration);
    let mut on_failure = OnSharedFailure::default();
    s.value("on_failure", &mut on_failure, |item| match item.as_str() {
        Some("local") => Ok(OnSharedFailure::Local),
        Some("deny") => Ok(OnSharedFailure::Deny),
        _ => Err(expected("\"local\" or \"deny\"", item)),
    });
    url?;
    Some(SharedLimitsConfig { store, on_failure })
}

/// A duration above zero.
fn positive_duration(item: &Item) -> Result<Duration, String> {
    duration(item).and_then(|d| if d.is_zero() { Err("must be above zero".to_owned()) } else { Ok(d) })
}

/// This process among the replicas: the host name (as the kernel has it) and the pid.
fn default_replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String =
        host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')).collect();
    let host = if host.is_empty() { "weir".to_owned() } else { host };
    format!("{host}-{}", std::process::id())
}

/// The base URL of an OTLP/HTTP receiver, as the gateway's span export takes it.
fn otlp_endpoint(item: &Item) -> Result<Option<String>, String> {
    let endpoint = non_empty_string(item)?;
    weir_gateway::otlp_traces_url(&endpoint).map_err(|err| err.to_string())?;
    Ok(Some(endpoint))
}
