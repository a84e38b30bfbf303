//! The probes an orchestrator asks the admin listener, under many HTTP/1.1 and HTTP/2
//! clients at once: `/livez` answers while the gateway runs; `/readyz` follows the
//! services of `server.ready_services` as they attach, report draining and leave, a
//! reload changes the list it judges by, and a gateway whose public listener is still
//! held back (a hand-over waiting for its services) is not ready.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use weir_gateway::{Gateway, GatewayConfig, Listeners};
use weir_proto::HealthStatus;
use weir_service::{Endpoint, RawRequestContext, RawResponse, Service};

use crate::common::*;

/// Probes at once from each client.
const PROBES: usize = 16;

fn needing(services: &[&str]) -> GatewayConfig {
    let mut config = config();
    config.server.ready_services = services.iter().map(|s| s.to_string()).collect();
    config
}

/// HTTP/1.1 and HTTP/2 (prior knowledge) clients, half each.
fn clients() -> Vec<reqwest::Client> {
    (0..PROBES)
        .map(|i| {
            let builder = reqwest::Client::builder();
            if i % 2 == 0 { builder.http1_only() } else { builder.http2_prior_knowledge() }.build().unwrap()
        })
        .collect()
}

/// Asks `url` from every client at once; each must get `status` and `body`.
async fn probe_all(url: &str, status: StatusCode, body: &Value) {
    let tasks: Vec<_> = clients()
        .into_iter()
        .map(|client| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let response = client.get(url).send().await.unwrap();
                let csp = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
                (response.status(), csp, response.json::<Value>().await.unwrap())
            })
        })
        .collect();
    for task in tasks {
        let (got, csp, answer) = task.await.unwrap();
        assert_eq!((got, &answer), (status, body), "{url}");
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
    }
}

/// A harness whose public listener is serving: `/readyz` reports `listening` from the
/// moment the public listener accepts, which the harness does not wait for.
async fn serving(config: GatewayConfig) -> Harness {
    let h = Harness::start(config).await;
    let healthz = h.client.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), StatusCode::OK);
    h
}

fn not_ready(listening: bool, missing: &[&str]) -> Value {
    json!({ "status": "not_ready", "listening": listening, "missing_services": missing })
}

fn ready() -> Value {
    json!({ "status": "ready", "listening": true, "missing_services": [] })
}

fn orders() -> Service {
    let endpoint = Endpoint::get("/orders").raw(|_ctx: RawRequestContext| async { Ok(RawResponse::new(200)) });
    Service::builder("orders", "1.0.0").endpoint(endpoint).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_named_services_as_they_attach_drain_and_leave() {
    let mut h = serving(needing(&["demo", "orders"])).await;
    let (readyz, livez) = (h.admin_url("/readyz"), h.admin_url("/livez"));
    probe_all(&livez, StatusCode::OK, &json!({ "status": "live" })).await;
    probe_all(&readyz, StatusCode::SERVICE_UNAVAILABLE, &not_ready(true, &["demo", "orders"])).await;

    let demo = h.attach(weir::demo::service()).await;
    probe_all(&readyz, StatusCode::SERVICE_UNAVAILABLE, &not_ready(true, &["orders"])).await;
    let orders = h.attach(orders()).await;
    probe_all(&readyz, StatusCode::OK, &ready()).await;

    // A draining instance takes no new requests: the gateway is not ready for them.
    orders.set_status(HealthStatus::Draining);
    until(|| !h.gateway.routing().healthy_services().contains("orders")).await;
    probe_all(&readyz, StatusCode::SERVICE_UNAVAILABLE, &not_ready(true, &["orders"])).await;
    orders.set_status(HealthStatus::Healthy);
    until(|| h.gateway.routing().healthy_services().contains("orders")).await;
    probe_all(&readyz, StatusCode::OK, &ready()).await;

    demo.shutdown();
    demo.unregistered().await;
    until(|| !h.gateway.routing().healthy_services().contains("demo")).await;
    probe_all(&readyz, StatusCode::SERVICE_UNAVAILABLE, &not_ready(true, &["demo"])).await;
    probe_all(&livez, StatusCode::OK, &json!({ "status": "live" })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_services_readyz_waits_for() {
    let mut h = serving(needing(&[])).await;
    let readyz = h.admin_url("/readyz");
    probe_all(&readyz, StatusCode::OK, &ready()).await;
    h.gateway.reload(needing(&["orders"])).unwrap();
    probe_all(&readyz, StatusCode::SERVICE_UNAVAILABLE, &not_ready(true, &["orders"])).await;
    h.attach(orders()).await;
    probe_all(&readyz, StatusCode::OK, &ready()).await;
    h.gateway.reload(needing(&["orders", "demo"])).unwrap();
    probe_all(&readyz, StatusCode::SERVICE_UNAVAILABLE, &not_ready(true, &["demo"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_public_listener_held_back_by_its_gate() {
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = public.local_addr().unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let readyz = format!("http://{}/readyz", admin.local_addr().unwrap());
    let gateway = Gateway::new(config()).unwrap();
    let listeners = Listeners { public, admin: Some(admin), redirect: None, services: None, broker: None };
    let (gate, opened) = tokio::sync::oneshot::channel::<()>();
    let shutdown = CancellationToken::new();
    let running = {
        let (gateway, shutdown) = (Arc::clone(&gateway), shutdown.clone());
        tokio::spawn(async move {
            let gate = async {
                let _ = opened.await;
            };
            gateway.run_public_after(listeners, shutdown, gate).await
        })
    };
    probe_all(&readyz, StatusCode::SERVICE_UNAVAILABLE, &not_ready(false, &[])).await;
    gate.send(()).unwrap();
    // Answered on the public listener: its gate has opened, and readiness was set first.
    let healthz = reqwest::get(format!("http://{addr}/healthz")).await.unwrap();
    assert_eq!(healthz.status(), StatusCode::OK);
    probe_all(&readyz, StatusCode::OK, &ready()).await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
}
