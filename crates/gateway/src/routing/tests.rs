//! Unit tests of the routing table through its public API, with a `u32` standing in for
//! the connection handle and explicit `Instant`s for time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_proto::{EndpointDescriptor, HealthStatus, Heartbeat, Hello};

use super::*;

type Table = RoutingTable<u32>;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

fn table_with(config: RoutingConfig) -> Table {
    RoutingTable::new(config, DEFAULT_TIMEOUT, MAX_TIMEOUT)
}

fn table() -> Table {
    table_with(RoutingConfig::default())
}

fn endpoint(method: &str, path: &str) -> EndpointDescriptor {
    EndpointDescriptor::new(method, path)
}

fn hello(service: &str, version: &str, region: &str, endpoints: &[(&str, &str)]) -> Hello {
    Hello {
        protocol_version: weir_proto::PROTOCOL_VERSION,
        service: service.to_owned(),
        version: version.to_owned(),
        region: region.to_owned(),
        instance_id: format!("{service}-{version}-{region}"),
        initial_window: 65536,
        token: String::new(),
        endpoints: endpoints.iter().map(|(m, p)| endpoint(m, p)).collect(),
    }
}

fn register(table: &Table, conn_id: u64, hello: &Hello) -> Arc<Instance<u32>> {
    table.register(conn_id, hello, conn_id as u32, Instant::now()).expect("registration accepted")
}

fn chosen(table: &Table, method: &str, path: &str, version: Option<&str>) -> u64 {
    table.route(method, path, version).expect("routed").instance.conn_id
}

fn heartbeat(table: &Table, conn_id: u64, status: HealthStatus, now: Instant) {
    let hb = Heartbeat::new(status, 0, 0.0);
    table.heartbeat(conn_id, &hb, now);
}

/// How often each connection is chosen over `requests` requests.
fn spread(table: &Table, path: &str, requests: usize) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..requests {
        *counts.entry(chosen(table, "GET", path, None)).or_default() += 1;
    }
    counts
}

#[test]
fn template_params_and_catch_all() {
    let t = table();
    let endpoints =
        [("GET", "/users/{id}/orders/{order}"), ("GET", "/users/me/orders/{order}"), ("GET", "/files/{*rest}")];
    register(&t, 1, &hello("svc", "1.0.0", "", &endpoints));

    let d = t.route("GET", "/users/42/orders/a%20b", None).unwrap();
    assert_eq!(d.template, "/users/{id}/orders/{order}");
    let expected = vec![("id".into(), "42".into()), ("order".into(), "a b".into())];
    assert_eq!(d.params, expected);

    let d = t.route("GET", "/users/me/orders/7", None).unwrap();
    assert_eq!(d.template, "/users/me/orders/{order}");

    let d = t.route("GET", "/files/a/b%2Fc.txt", None).unwrap();
    assert_eq!(d.params, vec![("rest".into(), "a/b/c.txt".into())]);

    let d = t.route("GET", "/users/x%2Fy/orders/1", None).unwrap();
    assert_eq!(d.params[0], ("id".into(), "x/y".into()));

    assert_eq!(t.route("GET", "/files/", None).unwrap_err(), RouteError::NotFound);
    assert_eq!(t.route("GET", "/users/42/orders", None).unwrap_err(), RouteError::NotFound);
    let invalid_utf8 = t.route("GET", "/users/%FF/orders/1", None).unwrap_err();
    assert_eq!(invalid_utf8, RouteError::NotFound);
}

#[test]
fn not_found_versus_method_not_allowed() {
    let t = table();
    let endpoints = [
        ("POST", "/items"),
        ("GET", "/items"),
        ("DELETE", "/items/{id}"),
        ("PUT", "/blobs/{id}"),
        ("HEAD", "/blobs/{id}"),
    ];
    register(&t, 1, &hello("svc", "1.0.0", "", &endpoints));

    assert_eq!(t.route("GET", "/nothing", None).unwrap_err(), RouteError::NotFound);
    let err = t.route("PUT", "/items", None).unwrap_err();
    let allow = vec!["GET".to_owned(), "HEAD".into(), "POST".into()];
    assert_eq!(err, RouteError::MethodNotAllowed { allow });
    assert_eq!(status_of(&err), http::StatusCode::METHOD_NOT_ALLOWED);

    let allow = vec!["DELETE".to_owned()];
    let err = t.route("GET", "/items/3", None).unwrap_err();
    assert_eq!(err, RouteError::MethodNotAllowed { allow });

    let head = t.route("HEAD", "/items", None).unwrap();
    assert_eq!(head.endpoint.method, "GET");
    let head = t.route("HEAD", "/blobs/1", None).unwrap();
    assert_eq!(head.endpoint.method, "HEAD");
    let allow = vec!["HEAD".to_owned(), "PUT".into()];
    let err = t.route("GET", "/blobs/1", None).unwrap_err();
    assert_eq!(err, RouteError::MethodNotAllowed { allow });
    assert_eq!(status_of(&t.route("get", "/items", None).unwrap_err()), 405);
}

#[test]
fn version_is_requested_else_default_else_highest() {
    let endpoints = [("GET", "/x")];
    let mut config = RoutingConfig::default();
    config.default_versions.insert("svc".into(), "1.0.0".into());
    let with_default = table_with(config);
    let highest = table();
    for t in [&with_default, &highest] {
        register(t, 1, &hello("svc", "1.0.0", "", &endpoints));
        register(t, 2, &hello("svc", "2.0.0", "", &endpoints));
        register(t, 3, &hello("svc", "1.10.0", "", &endpoints));
        assert_eq!(chosen(t, "GET", "/x", Some("1.10.0")), 3);
        assert_eq!(chosen(t, "GET", "/x", Some("2.0.0")), 2);
    }
    assert_eq!(chosen(&with_default, "GET", "/x", None), 1);
    assert_eq!(chosen(&highest, "GET", "/x", None), 2);

    let err = highest.route("GET", "/x", Some("3.0.0")).unwrap_err();
    let RouteError::NoHealthyInstance { detail } = &err else {
        panic!("expected NoHealthyInstance, got {err:?}");
    };
    assert!(detail.contains("svc") && detail.contains("3.0.0"), "{detail}");
    assert_eq!(status_of(&err), http::StatusCode::SERVICE_UNAVAILABLE);

    for invalid in ["1.0", "v1.0.0", "latest", ""] {
        let err = highest.route("GET", "/x", Some(invalid)).unwrap_err();
        let value = invalid.to_owned();
        assert_eq!(err, RouteError::InvalidVersion { value });
        assert_eq!(status_of(&err), http::StatusCode::BAD_REQUEST);
    }

    // The highest version ignores draining instances.
    heartbeat(&highest, 2, HealthStatus::Draining, Instant::now());
    assert_eq!(chosen(&highest, "GET", "/x", None), 3);
}

#[test]
fn default_version_without_instances_does_not_fall_back() {
    let mut config = RoutingConfig::default();
    config.default_versions.insert("svc".into(), "9.0.0".into());
    let t = table_with(config);
    register(&t, 1, &hello("svc", "1.0.0", "", &[("GET", "/x")]));
    let err = t.route("GET", "/x", None).unwrap_err();
    assert!(matches!(err, RouteError::NoHealthyInstance { .. }), "{err:?}");
}

#[test]
fn new_preferences_route_the_next_requests_and_keep_the_instances() {
    let t = table();
    let endpoints = [("GET", "/x")];
    register(&t, 1, &hello("svc", "1.0.0", "eu", &endpoints));
    register(&t, 2, &hello("svc", "2.0.0", "us", &endpoints));
    assert_eq!(chosen(&t, "GET", "/x", None), 2, "the highest version");

    let mut config = RoutingConfig::default();
    config.default_versions.insert("svc".into(), "1.0.0".into());
    t.set_preferences(config, DEFAULT_TIMEOUT, MAX_TIMEOUT);
    assert_eq!(chosen(&t, "GET", "/x", None), 1, "the new default version");
    assert_eq!(chosen(&t, "GET", "/x", Some("2.0.0")), 2, "both instances are still registered");

    let longer = Duration::from_secs(45);
    t.set_preferences(RoutingConfig::default(), longer, MAX_TIMEOUT);
    let routed = t.route("GET", "/x", None).expect("routed");
    assert_eq!((routed.instance.conn_id, routed.effective_timeout), (2, longer), "the new default timeout");
}

#[test]
fn local_region_is_preferred_after_health() {
    let config = RoutingConfig { region: "eu".into(), ..RoutingConfig::default() };
    let t = table_with(config);
    let endpoints = [("GET", "/x")];
    register(&t, 1, &hello("svc", "1.0.0", "us", &endpoints));
    let local = register(&t, 2, &hello("svc", "1.0.0", "eu", &endpoints));

    // Region comes before load.
    let _busy = local.begin_call();
    assert_eq!(spread(&t, "/x", 10), BTreeMap::from([(2, 10)]));

    // Health comes before region.
    heartbeat(&t, 2, HealthStatus::Degraded, Instant::now());
    assert_eq!(spread(&t, "/x", 10), BTreeMap::from([(1, 10)]));
}

#[test]
fn without_a_region_all_regions_are_equal() {
    let t = table();
    let endpoints = [("GET", "/x")];
    register(&t, 1, &hello("svc", "1.0.0", "us", &endpoints));
    register(&t, 2, &hello("svc", "1.0.0", "eu", &endpoints));
    assert_eq!(spread(&t, "/x", 10), BTreeMap::from([(1, 5), (2, 5)]));
}

#[test]
fn least_in_flight_is_preferred() {
    let t = table();
    let endpoints = [("GET", "/x")];
    let first = register(&t, 1, &hello("svc", "1.0.0", "", &endpoints));
    let second = register(&t, 2, &hello("svc", "1.0.0", "", &endpoints));

    let guard = first.begin_call();
    assert_eq!(first.in_flight(), 1);
    assert_eq!(spread(&t, "/x", 5), BTreeMap::from([(2, 5)]));

    let _a = second.begin_call();
    let _b = second.begin_call();
    assert_eq!(spread(&t, "/x", 5), BTreeMap::from([(1, 5)]));

    drop(guard);
    assert_eq!(first.in_flight(), 0);
    assert_eq!(spread(&t, "/x", 5), BTreeMap::from([(1, 5)]));
}

#[test]
fn equal_instances_are_taken_in_turn() {
    let t = table();
    let endpoints = [("GET", "/x")];
    for conn_id in 1..=3 {
        register(&t, conn_id, &hello("svc", "1.0.0", "", &endpoints));
    }
    let expected = BTreeMap::from([(1, 10), (2, 10), (3, 10)]);
    assert_eq!(spread(&t, "/x", 30), expected);

    // Rotation keeps working across republished snapshots.
    register(&t, 4, &hello("svc", "1.0.0", "", &endpoints));
    let expected = BTreeMap::from([(1, 10), (2, 10), (3, 10), (4, 10)]);
    assert_eq!(spread(&t, "/x", 40), expected);
}

#[test]
fn draining_instances_get_no_new_requests() {
    let t = table();
    let endpoints = [("GET", "/x")];
    register(&t, 1, &hello("svc", "1.0.0", "", &endpoints));
    register(&t, 2, &hello("svc", "1.0.0", "", &endpoints));
    heartbeat(&t, 1, HealthStatus::Draining, Instant::now());
    assert_eq!(spread(&t, "/x", 6), BTreeMap::from([(2, 6)]));

    heartbeat(&t, 2, HealthStatus::Draining, Instant::now());
    let err = t.route("GET", "/x", None).unwrap_err();
    assert!(matches!(err, RouteError::NoHealthyInstance { .. }), "{err:?}");
    let err = t.route("GET", "/x", Some("1.0.0")).unwrap_err();
    assert!(matches!(err, RouteError::NoHealthyInstance { .. }), "{err:?}");
}

#[test]
fn degraded_instances_serve_only_when_no_healthy_one_is_left() {
    let t = table();
    let endpoints = [("GET", "/x")];
    let first = register(&t, 1, &hello("svc", "1.0.0", "", &endpoints));
    register(&t, 2, &hello("svc", "1.0.0", "", &endpoints));
    heartbeat(&t, 1, HealthStatus::Degraded, Instant::now());
    assert_eq!(first.status(), InstanceHealth::Degraded);
    assert_eq!(spread(&t, "/x", 6), BTreeMap::from([(2, 6)]));

    heartbeat(&t, 2, HealthStatus::Degraded, Instant::now());
    assert_eq!(spread(&t, "/x", 6), BTreeMap::from([(1, 3), (2, 3)]));

    heartbeat(&t, 1, HealthStatus::Healthy, Instant::now());
    assert_eq!(spread(&t, "/x", 6), BTreeMap::from([(1, 6)]));
}

#[test]
fn sweep_degrades_silent_instances_then_evicts_them() {
    let config = RoutingConfig {
        degraded_after: Duration::from_secs(15),
        evict_after: Duration::from_secs(30),
        ..RoutingConfig::default()
    };
    let t = table_with(config);
    let t0 = Instant::now();
    let secs = |s| t0 + Duration::from_secs(s);
    let endpoints = [("GET", "/x")];
    let first = t.register(1, &hello("svc", "1.0.0", "", &endpoints), 1, t0).unwrap();
    let second = t.register(2, &hello("svc", "1.0.0", "", &endpoints), 2, t0).unwrap();

    heartbeat(&t, 2, HealthStatus::Healthy, secs(10));
    assert_eq!(t.sweep(secs(15)), Vec::<u64>::new());
    assert_eq!(first.status(), InstanceHealth::Healthy);
    assert_eq!(t.sweep(secs(16)), Vec::<u64>::new());
    assert_eq!(first.status(), InstanceHealth::Degraded);
    assert_eq!(second.status(), InstanceHealth::Healthy);
    assert_eq!(spread(&t, "/x", 4), BTreeMap::from([(2, 4)]));

    // A heartbeat restores the reported status.
    heartbeat(&t, 1, HealthStatus::Healthy, secs(20));
    assert_eq!(first.status(), InstanceHealth::Healthy);

    // Second heard at 10 s, first at 20 s: at 41 s only the second is overdue.
    assert_eq!(t.sweep(secs(41)), vec![2]);
    assert_eq!(spread(&t, "/x", 4), BTreeMap::from([(1, 4)]));
    assert_eq!(t.sweep(secs(51)), vec![1]);
    let err = t.route("GET", "/x", None).unwrap_err();
    assert!(matches!(err, RouteError::NoHealthyInstance { .. }), "{err:?}");
    assert_eq!(t.sweep(secs(100)), Vec::<u64>::new());
}

#[test]
fn a_removed_instance_leaves_its_endpoints_known() {
    let t = table();
    register(&t, 1, &hello("orders", "1.0.0", "", &[("GET", "/o/{id}")]));
    t.remove(1);
    t.remove(1);

    let err = t.route("GET", "/o/1", None).unwrap_err();
    assert_eq!(status_of(&err), http::StatusCode::SERVICE_UNAVAILABLE);
    let RouteError::NoHealthyInstance { detail } = &err else {
        panic!("expected NoHealthyInstance, got {err:?}");
    };
    assert!(detail.contains("orders"), "{detail}");
    let allow = vec!["GET".to_owned(), "HEAD".into()];
    let err = t.route("POST", "/o/1", None).unwrap_err();
    assert_eq!(err, RouteError::MethodNotAllowed { allow });
    let routes = t.snapshot();
    assert_eq!(routes.len(), 1);
    assert!(routes[0].instances.is_empty());

    // Ownership follows live instances: another service may take the endpoint over.
    register(&t, 2, &hello("billing", "1.0.0", "", &[("GET", "/o/{id}")]));
    assert_eq!(chosen(&t, "GET", "/o/1", None), 2);
    assert_eq!(t.snapshot()[0].service, "billing");
}

#[test]
fn an_unserved_template_gives_way_to_a_conflicting_new_one() {
    let t = table();
    register(&t, 1, &hello("svc", "1.0.0", "", &[("GET", "/a/{x}")]));
    t.remove(1);
    register(&t, 2, &hello("svc", "2.0.0", "", &[("GET", "/a/{id}")]));
    let d = t.route("GET", "/a/7", None).unwrap();
    assert_eq!(d.template, "/a/{id}");
    assert_eq!(d.params, vec![("id".into(), "7".into())]);
    let templates: Vec<String> = t.snapshot().into_iter().map(|r| r.template).collect();
    assert_eq!(templates, vec!["/a/{id}".to_owned()]);
}

/// Registers `hello` on a table holding svc `GET /a/{x}` and `GET /b`, expects the
/// refusal `check` accepts, and that the table did not change.
fn assert_refused(hello: &Hello, check: impl Fn(&RegistrationError) -> bool) {
    let t = table();
    register(&t, 1, &hello_base());
    let before = t.snapshot();
    let err = t.register(9, hello, 9, Instant::now()).unwrap_err();
    assert!(check(&err), "unexpected error: {err:?}");
    assert!(!err.to_string().is_empty());
    assert_eq!(t.snapshot(), before);
    assert_eq!(t.route("GET", "/new", None).unwrap_err(), RouteError::NotFound);
    assert_eq!(chosen(&t, "GET", "/b", None), 1);
}

fn hello_base() -> Hello {
    hello("svc", "1.0.0", "", &[("GET", "/a/{x}"), ("GET", "/b")])
}

#[test]
fn a_claim_on_another_services_endpoint_is_refused() {
    let other = hello("other", "1.0.0", "", &[("GET", "/new"), ("GET", "/b")]);
    assert_refused(&other, |e| {
        matches!(e, RegistrationError::Conflict { owner, method, template }
            if owner == "svc" && method == "GET" && template == "/b")
    });
    // Another method on the same template is another endpoint: allowed.
    let t = table();
    register(&t, 1, &hello_base());
    register(&t, 2, &hello("other", "1.0.0", "", &[("POST", "/b")]));
    assert_eq!(chosen(&t, "POST", "/b", None), 2);
}

#[test]
fn one_version_must_declare_identical_descriptors() {
    let mut same_version = hello("svc", "1.0.0", "", &[("GET", "/new"), ("GET", "/b")]);
    same_version.endpoints[1].timeout = Some(Duration::from_secs(5));
    assert_refused(&same_version, |e| {
        matches!(e, RegistrationError::DescriptorMismatch { template, version, .. }
            if template == "/b" && version == "1.0.0")
    });

    let t = table();
    register(&t, 1, &hello_base());
    let mut next_version = same_version.clone();
    next_version.version = "2.0.0".into();
    register(&t, 2, &next_version);
    let d = t.route("GET", "/b", Some("2.0.0")).unwrap();
    assert_eq!(d.endpoint.timeout, Some(Duration::from_secs(5)));
    let d = t.route("GET", "/b", Some("1.0.0")).unwrap();
    assert_eq!(d.endpoint.timeout, None);
}

#[test]
fn templates_matchit_cannot_hold_together_are_refused() {
    let renamed = hello("svc2", "1.0.0", "", &[("GET", "/new"), ("POST", "/a/{y}")]);
    assert_refused(&renamed, |e| {
        matches!(e, RegistrationError::TemplateConflict { template, existing }
            if template == "/a/{y}" && existing == "/a/{x}")
    });
    let catch_all = hello("svc2", "1.0.0", "", &[("GET", "/new"), ("GET", "/a/{*rest}")]);
    assert_refused(&catch_all, |e| matches!(e, RegistrationError::TemplateConflict { .. }));
    let within_one = hello("svc2", "1.0.0", "", &[("GET", "/new"), ("GET", "/c/{p}"), ("PUT", "/c/{q}")]);
    assert_refused(&within_one, |e| matches!(e, RegistrationError::TemplateConflict { .. }));
}

#[test]
fn malformed_declarations_are_refused() {
    let duplicate = hello("svc2", "1.0.0", "", &[("GET", "/new"), ("GET", "/new")]);
    assert_refused(&duplicate, |e| {
        matches!(e, RegistrationError::DuplicateEndpoint { method, template }
            if method == "GET" && template == "/new")
    });
    for template in ["new", "/new/{id", "/new/{a}/{a}", "/new/{*all}/x", "/img{id}.png"] {
        let bad = hello("svc2", "1.0.0", "", &[("GET", "/new"), ("GET", template)]);
        assert_refused(&bad, |e| matches!(e, RegistrationError::InvalidTemplate { template: t, .. } if t == template));
    }
    let mut lower_case = hello("svc2", "1.0.0", "", &[("GET", "/new")]);
    lower_case.endpoints.push(EndpointDescriptor { method: "post".into(), ..endpoint("POST", "/new") });
    assert_refused(&lower_case, |e| matches!(e, RegistrationError::InvalidMethod { method, .. } if method == "post"));
    let bad_version = hello("svc2", "1.0", "", &[("GET", "/new")]);
    assert_refused(&bad_version, |e| matches!(e, RegistrationError::InvalidVersion { value, .. } if value == "1.0"));
    let no_name = hello("", "1.0.0", "", &[("GET", "/new")]);
    assert_refused(&no_name, |e| matches!(e, RegistrationError::InvalidIdentity { .. }));
}

#[test]
fn a_connection_registers_once() {
    let t = table();
    register(&t, 1, &hello_base());
    let again = hello("svc", "1.0.0", "", &[("GET", "/new")]);
    let err = t.register(1, &again, 1, Instant::now()).unwrap_err();
    assert_eq!(err, RegistrationError::AlreadyRegistered { conn_id: 1 });
    assert_eq!(t.route("GET", "/new", None).unwrap_err(), RouteError::NotFound);
}

#[test]
fn update_replaces_the_endpoint_list_atomically() {
    let t = table();
    register(&t, 1, &hello_base());
    let others = [("GET", "/other"), ("GET", "/o/{p}")];
    register(&t, 2, &hello("other", "1.0.0", "", &others));

    t.update_endpoints(1, &[endpoint("GET", "/b"), endpoint("GET", "/c/{id}")]).unwrap();
    assert_eq!(chosen(&t, "GET", "/c/1", None), 1);
    assert_eq!(chosen(&t, "GET", "/b", None), 1);
    let err = t.route("GET", "/a/1", None).unwrap_err();
    assert!(matches!(err, RouteError::NoHealthyInstance { .. }), "{err:?}");

    let before = t.snapshot();
    let refused = [
        vec![endpoint("GET", "/d"), endpoint("GET", "bad")],
        vec![endpoint("GET", "/d"), endpoint("GET", "/other")],
        vec![endpoint("GET", "/d"), endpoint("GET", "/o/{q}")],
        vec![endpoint("GET", "/d"), endpoint("GET", "/d")],
    ];
    for endpoints in &refused {
        assert!(t.update_endpoints(1, endpoints).is_err(), "{endpoints:?}");
        assert_eq!(t.snapshot(), before);
        assert_eq!(t.route("GET", "/d", None).unwrap_err(), RouteError::NotFound);
        assert_eq!(chosen(&t, "GET", "/c/1", None), 1);
    }
    let err = t.update_endpoints(7, &[]).unwrap_err();
    assert_eq!(err, RegistrationError::UnknownConnection { conn_id: 7 });

    // An instance may rename the parameters of its own template.
    t.update_endpoints(1, &[endpoint("GET", "/c/{key}")]).unwrap();
    let d = t.route("GET", "/c/1", None).unwrap();
    assert_eq!(d.params, vec![("key".into(), "1".into())]);
}

#[test]
fn an_update_may_change_the_instances_own_descriptor() {
    let t = table();
    register(&t, 1, &hello("svc", "1.0.0", "", &[("GET", "/x")]));
    let mut slow = endpoint("GET", "/x");
    slow.timeout = Some(Duration::from_secs(9));
    t.update_endpoints(1, &[slow]).unwrap();
    let d = t.route("GET", "/x", None).unwrap();
    assert_eq!(d.effective_timeout, Duration::from_secs(9));
}

#[test]
fn effective_timeout_is_capped() {
    let t = table();
    let mut h = hello("svc", "1.0.0", "", &[("GET", "/default")]);
    for (path, secs) in [("/short", 10), ("/long", 120)] {
        let mut e = endpoint("GET", path);
        e.timeout = Some(Duration::from_secs(secs));
        h.endpoints.push(e);
    }
    register(&t, 1, &h);
    let timeout = |path| t.route("GET", path, None).unwrap().effective_timeout;
    assert_eq!(timeout("/default"), DEFAULT_TIMEOUT);
    assert_eq!(timeout("/short"), Duration::from_secs(10));
    assert_eq!(timeout("/long"), MAX_TIMEOUT);
}

#[test]
fn snapshot_lists_endpoints_with_their_instances() {
    let t = table();
    let first = register(&t, 1, &hello("svc", "1.0.0", "eu", &[("GET", "/x"), ("POST", "/x")]));
    register(&t, 2, &hello("svc", "1.1.0", "us", &[("GET", "/x")]));
    let _call = first.begin_call();
    heartbeat(&t, 2, HealthStatus::Draining, Instant::now());

    let routes = t.snapshot();
    let keys: Vec<(&str, &str)> = routes.iter().map(|r| (r.template.as_str(), r.method.as_str())).collect();
    assert_eq!(keys, vec![("/x", "GET"), ("/x", "POST")]);
    let get = &routes[0];
    assert_eq!(get.service, "svc");
    let expected = vec![
        InstanceInfo {
            conn_id: 1,
            instance_id: "svc-1.0.0-eu".into(),
            version: "1.0.0".into(),
            region: "eu".into(),
            health: InstanceHealth::Healthy,
            in_flight: 1,
        },
        InstanceInfo {
            conn_id: 2,
            instance_id: "svc-1.1.0-us".into(),
            version: "1.1.0".into(),
            region: "us".into(),
            health: InstanceHealth::Draining,
            in_flight: 0,
        },
    ];
    assert_eq!(get.instances, expected);
    let json = serde_json::to_value(&routes[1]).unwrap();
    assert_eq!(json["instances"][0]["health"], "healthy");
}

#[test]
fn routing_runs_while_registrations_change() {
    let t = Arc::new(table());
    register(&t, 1, &hello("svc", "1.0.0", "", &[("GET", "/x")]));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let t = Arc::clone(&t);
            std::thread::spawn(move || {
                for _ in 0..2000 {
                    let d = t.route("GET", "/x", None).unwrap();
                    let _call = d.instance.begin_call();
                }
            })
        })
        .collect();
    for conn_id in 2..200 {
        register(&t, conn_id, &hello("svc", "1.0.0", "", &[("GET", "/x")]));
        t.remove(conn_id);
    }
    for reader in readers {
        reader.join().unwrap();
    }
    let routes = t.snapshot();
    assert_eq!(routes[0].instances.len(), 1);
    assert_eq!(routes[0].instances[0].in_flight, 0);
}

/// The status the gateway answers a route error with.
fn status_of(err: &RouteError) -> http::StatusCode {
    crate::response::error::GatewayError::from(err.clone()).status()
}

#[test]
fn unserved_endpoints_answer_503_until_forget_after_then_404() {
    // Nobody is evicted for silence here: only departures leave endpoints unserved.
    let config = RoutingConfig {
        forget_after: Duration::from_secs(60),
        degraded_after: Duration::from_secs(1000),
        evict_after: Duration::from_secs(2000),
        ..RoutingConfig::default()
    };
    let t = table_with(config);
    let t0 = Instant::now();
    let secs = |s| t0 + Duration::from_secs(s);
    register(&t, 1, &hello("svc", "1.0.0", "", &[("GET", "/gone"), ("GET", "/kept")]));
    register(&t, 2, &hello("svc", "1.0.0", "", &[("GET", "/kept")]));
    t.remove(1);
    t.sweep(secs(1));
    assert!(matches!(t.route("GET", "/gone", None), Err(RouteError::NoHealthyInstance { .. })));
    t.sweep(secs(61));
    assert!(matches!(t.route("GET", "/gone", None), Err(RouteError::NoHealthyInstance { .. })));
    t.sweep(secs(62));
    assert_eq!(t.route("GET", "/gone", None).unwrap_err(), RouteError::NotFound);
    assert_eq!(chosen(&t, "GET", "/kept", None), 2, "a served endpoint is never forgotten");
    // Served again before its time, an endpoint's clock starts over.
    register(&t, 3, &hello("svc", "1.0.0", "", &[("GET", "/back")]));
    t.remove(3);
    t.sweep(secs(100));
    register(&t, 4, &hello("svc", "1.0.0", "", &[("GET", "/back")]));
    t.sweep(secs(150));
    t.remove(4);
    t.sweep(secs(170));
    t.sweep(secs(200));
    assert!(matches!(t.route("GET", "/back", None), Err(RouteError::NoHealthyInstance { .. })));
}

#[test]
fn registrations_over_max_routes_are_refused_and_change_nothing() {
    let t = table_with(RoutingConfig { max_routes: 3, ..RoutingConfig::default() });
    register(&t, 1, &hello("a", "1.0.0", "", &[("GET", "/a"), ("POST", "/a")]));
    let over = t.register(2, &hello("b", "1.0.0", "", &[("GET", "/b"), ("GET", "/c")]), 2, Instant::now());
    assert_eq!(over.unwrap_err(), RegistrationError::TooManyRoutes { known: 2, added: 2, max: 3 });
    assert_eq!(t.route("GET", "/b", None).unwrap_err(), RouteError::NotFound);
    // Endpoints already known cost nothing more; one more new one fits exactly.
    register(&t, 3, &hello("a", "1.0.0", "", &[("GET", "/a"), ("GET", "/d")]));
    let update = [endpoint("GET", "/a"), endpoint("GET", "/e")];
    assert!(matches!(t.update_endpoints(3, &update), Err(RegistrationError::TooManyRoutes { .. })));
    assert_eq!(chosen(&t, "GET", "/d", None), 3, "the refused update left the old list");
}

#[test]
fn a_service_is_healthy_while_one_of_its_instances_is() {
    let table = table();
    assert!(table.healthy_services().is_empty());
    register(&table, 1, &hello("orders", "1.0.0", "", &[("GET", "/orders")]));
    register(&table, 2, &hello("billing", "1.0.0", "", &[("GET", "/bills")]));
    register(&table, 3, &hello("billing", "1.1.0", "", &[("GET", "/bills")]));
    let names = |table: &Table| table.healthy_services().into_iter().collect::<Vec<_>>();
    assert_eq!(names(&table), ["billing", "orders"]);
    let now = Instant::now();
    heartbeat(&table, 2, HealthStatus::Draining, now);
    assert_eq!(names(&table), ["billing", "orders"], "billing still has instance 3");
    heartbeat(&table, 3, HealthStatus::Degraded, now);
    assert_eq!(names(&table), ["orders"]);
    table.remove(1);
    assert!(names(&table).is_empty());
    heartbeat(&table, 3, HealthStatus::Healthy, now);
    assert_eq!(names(&table), ["billing"]);
}
