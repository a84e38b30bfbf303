//! The RabbitMQ transport's faults, against the machine's broker: the broker closing the
//! connections (as a restart does) ends the requests in flight with 502 and traffic
//! resumes once both sides have reconnected by themselves; a service killed with
//! SIGKILL is noticed within 2 s (its requests get 502, new ones 503); a wrong URL,
//! an unreachable broker or refused credentials stop `weir serve` with an error naming
//! the key and never the password; a dial beyond the handshake cap is refused with the
//! reason; replicas share a prefix, each reached by its name or sharing one.
//!
//! Only this harness's connections are closed (they carry its queue prefix in their
//! name): other tests share the broker.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use weir_rabbitmq::{BrokerSettings, RabbitMqDialer};
use weir_service::Dialer;

use crate::cli::{scratch, write, Proc};
use crate::common::*;

/// The demo's slow endpoint, kept in flight for 4 s (its timeout is 5 s).
const IN_FLIGHT: &str = "/api/slow?ms=4000";

/// Closes every broker connection whose client-given name mentions `prefix`, with
/// `rabbitmqctl`; returns how many it closed and when it began closing them.
fn close_broker_connections(prefix: &str) -> (usize, Instant) {
    let listed = Command::new("rabbitmqctl")
        .args(["list_connections", "-q", "--no-table-headers", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl runs");
    assert!(listed.status.success(), "rabbitmqctl list_connections failed");
    let text = String::from_utf8_lossy(&listed.stdout);
    let ours: Vec<&str> =
        text.lines().filter(|line| line.contains(prefix)).filter_map(|line| line.split_whitespace().next()).collect();
    let began = Instant::now();
    for pid in &ours {
        let closed = Command::new("rabbitmqctl").args(["close_connection", pid, "test: broker restart"]).status();
        assert!(closed.unwrap().success(), "rabbitmqctl close_connection {pid} failed");
    }
    (ours.len(), began)
}

/// Starts a request that stays in flight, and waits until the gateway counts it.
async fn request_in_flight(h: &Harness) -> tokio::task::JoinHandle<StatusCode> {
    let (client, url) = (h.client.clone(), h.url(IN_FLIGHT));
    let request = tokio::spawn(async move { client.get(url).send().await.unwrap().status() });
    let started = Instant::now();
    while h.gateway.registry().list().is_empty() {
        assert!(started.elapsed() < WAIT, "the request never reached the gateway");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_closing_every_connection_ends_requests_with_502_and_traffic_resumes() {
    let mut h = Harness::start_on(demo_mounts(), Transport::RabbitMq).await;
    let service = h.attach(weir::demo::service()).await;
    let mut registration = service.registration();
    registration.borrow_and_update();
    let request = request_in_flight(&h).await;

    let prefix = h.broker_settings().prefix.clone();
    let (closed, closed_at) = close_broker_connections(&prefix);
    assert_eq!(closed, 2, "the gateway's and the service's connection");
    let status = tokio::time::timeout(WAIT, request).await.expect("the request in flight never ended").unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    // The bound includes the start-up of the second `rabbitmqctl` (an Erlang VM, about
    // 0.6 s on an idle machine); the gateway notices within one liveness interval.
    assert!(closed_at.elapsed() < Duration::from_secs(5), "502 after {:?}", closed_at.elapsed());

    // Both sides reconnect with backoff, without a restart of either: the service's
    // registration changes (it was lost), then holds again.
    tokio::time::timeout(WAIT, registration.changed()).await.unwrap().unwrap();
    tokio::time::timeout(WAIT, registration.wait_for(|registered| *registered)).await.unwrap().unwrap();
    for _ in 0..20 {
        let response = h.client.get(h.url("/api/hello")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    h.assert_budget_released().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_with_sigkill_is_noticed_within_two_seconds() {
    let h = Harness::start_on(demo_mounts(), Transport::RabbitMq).await;
    let prefix = h.broker_settings().prefix.clone();
    let url = amqp_url();
    let mut demo = Proc::spawn(&["demo-service", "--rabbitmq", &url, "--rabbitmq-prefix", &prefix]);
    let registered = demo.line("weir demo-service registered with ").await;
    assert!(!registered.contains("guest:"), "credentials printed: {registered}");
    let request = request_in_flight(&h).await;

    let killed_at = Instant::now();
    demo.signal("-KILL");
    let status = tokio::time::timeout(WAIT, request).await.expect("the request in flight never ended").unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let response = h.client.get(h.url("/api/hello")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(killed_at.elapsed() < Duration::from_secs(2), "noticed after {:?}", killed_at.elapsed());
    h.assert_budget_released().await;
}

/// `weir serve` with `[services.rabbitmq] url = URL`: its exit status and stderr.
fn serve_with_broker(name: &str, url: &str) -> (bool, String) {
    let dir = scratch(name);
    let config = write(&dir, "weir.toml", &format!("[services.rabbitmq]\nurl = \"{url}\"\n"));
    let args =
        ["serve", "--no-demo", "--config", &config, "--listen", "127.0.0.1:0", "--services-listen", "127.0.0.1:0"];
    let output = Command::new(env!("CARGO_BIN_EXE_weir")).args(args).output().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn refused_credentials_stop_serve_with_the_key_and_without_the_password() {
    let (ok, stderr) = serve_with_broker("amqp-creds", "amqp://guest:n0t-the-pa55word@127.0.0.1:5672/%2f");
    assert!(!ok);
    assert!(stderr.contains("services.rabbitmq.url"), "{stderr}");
    assert!(stderr.contains("amqp://127.0.0.1:5672/%2f"), "{stderr}");
    assert!(!stderr.contains("n0t-the-pa55word"), "the password was printed: {stderr}");
}

#[test]
fn an_unreachable_broker_or_a_bad_url_is_an_error_naming_the_key() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (ok, stderr) = serve_with_broker("amqp-closed", &format!("amqp://u:s3cret@127.0.0.1:{port}/%2f"));
    assert!(!ok);
    assert!(stderr.contains("services.rabbitmq.url") && !stderr.contains("s3cret"), "{stderr}");

    let (ok, stderr) = serve_with_broker("amqp-scheme", "http://u:s3cret@127.0.0.1:5672/");
    assert!(!ok);
    assert!(stderr.contains("services.rabbitmq.url") && !stderr.contains("s3cret"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_service_process_serves_a_gateway_over_tcp_and_another_through_the_broker() {
    let dir = scratch("amqp-both");
    let prefix = unique_broker_settings().prefix;
    let url = amqp_url();
    let brokered =
        write(&dir, "brokered.toml", &format!("[services.rabbitmq]\nurl = \"{url}\"\nprefix = \"{prefix}\"\n"));
    let direct = write(&dir, "direct.toml", "");
    let args = |config: &'static str| {
        ["serve", "--no-demo", "--config", config, "--listen", "127.0.0.1:0", "--services-listen", "127.0.0.1:0"]
    };
    let brokered: &'static str = brokered.leak();
    let direct: &'static str = direct.leak();
    let mut gateway_a = Proc::spawn(&args(brokered));
    let http_a = gateway_a.line("weir listening on ").await;
    gateway_a.line("weir services on tcp://").await;
    let queue = gateway_a.line("weir services on amqp://").await;
    assert_eq!(queue, format!("127.0.0.1:5672/%2f queue {prefix}.connect.default"));
    let mut gateway_b = Proc::spawn(&args(direct));
    let http_b = gateway_b.line("weir listening on ").await;
    let tcp_b = gateway_b.line("weir services on tcp://").await;

    let mut demo =
        Proc::spawn(&["demo-service", "--connect", &tcp_b, "--rabbitmq", &url, "--rabbitmq-prefix", &prefix]);
    let mut places =
        [demo.line("weir demo-service registered with ").await, demo.line("weir demo-service registered with ").await];
    places.sort();
    assert_eq!(places, [format!("amqp://127.0.0.1:5672/%2f queue {prefix}.connect.default"), format!("tcp://{tcp_b}")]);
    for http in [&http_a, &http_b] {
        let response = reqwest::get(format!("{http}/api/items/3")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert!(demo.terminate().await.success());
    assert!(gateway_a.terminate().await.success());
    assert!(gateway_b.terminate().await.success());
    std::fs::remove_dir_all(dir).unwrap();
}

/// Beyond `services.max_pending_handshakes` sessions in their handshake, a dial through
/// the broker is refused at once with the reason; the slots come back when the silent
/// sessions go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_beyond_the_handshake_cap_are_refused_with_the_reason() {
    let mut cfg = demo_mounts();
    cfg.services.max_pending_handshakes = 2;
    let mut h = Harness::start_on(cfg, Transport::RabbitMq).await;
    let silent = [h.dial().await, h.dial().await];
    let Err(err) = h.dialer("third").dial().await else { panic!("a third session was opened") };
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(err.to_string().contains("too many handshakes in progress"), "{err}");
    drop(silent);
    h.attach(weir::demo::service()).await;
    let response = h.client.get(h.url("/api/hello")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Replicas on one prefix: with one gateway name they share the connect queue and the
/// broker spreads the sessions; with a name each, one service registers with every
/// replica through one dialer per name (`run_all`), and each replica serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_a_prefix_and_a_service_registers_with_each_by_name() {
    let shared = unique_broker_settings();
    let named = |gateway: &str| BrokerSettings { gateway: gateway.to_owned(), ..shared.clone() };
    let a = Harness::start_on_broker(demo_mounts(), named("a")).await;
    let b = Harness::start_on_broker(demo_mounts(), named("b")).await;
    let address: weir_rabbitmq::BrokerAddress = amqp_url().parse().unwrap();
    let dialers = ["a", "b"].map(|name| RabbitMqDialer::with_settings(address.clone(), named(name)));
    let running = weir::demo::service().run_all(dialers);
    for run in &running {
        assert!(tokio::time::timeout(WAIT, run.registered()).await.expect("registered"));
    }
    for h in [&a, &b] {
        let response = h.client.get(h.url("/api/hello")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    // Two replicas under one name: every session lands on one of them, none is lost.
    let one = named("one");
    let c = Harness::start_on_broker(demo_mounts(), one.clone()).await;
    let d = Harness::start_on_broker(demo_mounts(), one.clone()).await;
    let sessions: Vec<_> = (0..8)
        .map(|_| weir::demo::service().run(RabbitMqDialer::with_settings(address.clone(), one.clone())))
        .collect();
    for run in &sessions {
        assert!(tokio::time::timeout(WAIT, run.registered()).await.expect("registered"));
    }
    let links = [c.gateway.routing().instances().len(), d.gateway.routing().instances().len()];
    assert_eq!(links[0] + links[1], 8, "{links:?}");
    assert!(links[0] > 0 && links[1] > 0, "the broker gave every session to one replica: {links:?}");
    for run in running.into_iter().chain(sessions) {
        run.shutdown();
    }
}
