//! Connections that die or change, on every transport: a silent, half-open service is
//! evicted (its in-flight request answers 502) while the service's own watchdog gives
//! the silent gateway up (its handler is cancelled) and reconnects; a restarted service
//! listener is dialled again; a draining service finishes its in-flight request but
//! gets no new one; one service stays registered with several gateways.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::sync::{mpsc, oneshot};
use weir_gateway::GatewayConfig;
use weir_proto::HealthStatus;
use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service};

use crate::common::*;

conformance! {
    silent_half_open_service_is_evicted_with_502_and_its_handler_cancelled,
    service_registers_again_after_the_service_listener_restarts,
    draining_service_finishes_its_in_flight_request_and_gets_no_new_one,
    one_service_stays_registered_with_every_gateway_replica,
}

/// What a handler of [`held_service`] reports.
#[derive(Debug, PartialEq)]
enum Seen {
    Started(&'static str),
    Cancelled(&'static str),
}

/// Instance `instance` of service `held`: `GET /hold` reports its start, then answers
/// `instance` once `release` fires, or reports its cancellation; `GET /ok` answers at once.
fn held_service(
    instance: &'static str,
    seen: mpsc::UnboundedSender<Seen>,
    release: Option<oneshot::Receiver<()>>,
) -> Service {
    let release = std::sync::Arc::new(tokio::sync::Mutex::new(release));
    let hold = Endpoint::get("/hold").raw(move |ctx: RawRequestContext| {
        let (seen, release) = (seen.clone(), release.clone());
        async move {
            let _ = seen.send(Seen::Started(instance));
            let release = release.lock().await.take();
            let released = async {
                match release {
                    Some(release) => release.await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                true = released => Ok(RawResponse::text(200, instance)),
                () = ctx.cancel.cancelled() => {
                    let _ = seen.send(Seen::Cancelled(instance));
                    Err(HandlerError::unavailable("cancelled"))
                }
            }
        }
    });
    Service::builder("held", "1.0.0")
        .instance_id(instance)
        .heartbeat_miss_count(3)
        .endpoint(hold)
        .endpoint(Endpoint::get("/ok").raw(move |_| async move { Ok(RawResponse::text(200, instance)) }))
        .build()
        .unwrap()
}

async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, seen.recv()).await.expect("the handler said nothing").expect("handler gone")
}

/// Heartbeats every 50 ms; a service silent for 250 ms is evicted.
fn fast_heartbeats() -> GatewayConfig {
    let mut cfg = config();
    cfg.routing.heartbeat_interval = Duration::from_millis(50);
    cfg.routing.degraded_after = Duration::from_millis(150);
    cfg.routing.evict_after = Duration::from_millis(250);
    cfg
}

async fn get(h: &Harness, path: &str) -> (StatusCode, String) {
    let response = h.client.get(h.url(path)).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn silent_half_open_service_is_evicted_with_502_and_its_handler_cancelled(transport: Transport) {
    let mut h = Harness::start_on(fast_heartbeats(), transport).await;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let (running, wire) = h.attach_tapped(held_service("a", seen_tx, None)).await;
    // The service's watchdog arms on the gateway's first heartbeat.
    wire.gateway_heartbeat().await;
    let request = tokio::spawn(h.client.get(h.url("/hold")).send());
    assert_eq!(next(&mut seen).await, Seen::Started("a"));
    let mut registration = running.registration();
    registration.borrow_and_update();
    wire.freeze();
    // Gateway side: heartbeats stop arriving, the service is evicted, its request fails.
    let response = tokio::time::timeout(WAIT, request).await.expect("no answer").unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["error"], "upstream_failed");
    // Service side: the gateway fell silent, so the link was closed and the handler cancelled.
    assert_eq!(next(&mut seen).await, Seen::Cancelled("a"));
    // ... and the service dialled again, over a fresh connection, and serves. (The new
    // registration may come before or after the 502: wait for any change, then for it.)
    tokio::time::timeout(WAIT, registration.changed()).await.unwrap().unwrap();
    tokio::time::timeout(WAIT, registration.wait_for(|r| *r)).await.unwrap().unwrap();
    assert_eq!(get(&h, "/ok").await, (StatusCode::OK, "a".to_owned()));
    h.assert_budget_released().await;
}

async fn service_registers_again_after_the_service_listener_restarts(transport: Transport) {
    let mut h = Harness::start_on(config(), transport).await;
    let (seen_tx, _seen) = mpsc::unbounded_channel();
    let running = h.attach(held_service("a", seen_tx, None)).await;
    assert_eq!(get(&h, "/ok").await.0, StatusCode::OK);
    let mut registration = running.registration();
    registration.borrow_and_update();
    h.restart_services().await;
    tokio::time::timeout(WAIT, registration.changed()).await.unwrap().unwrap();
    tokio::time::timeout(WAIT, registration.wait_for(|r| *r)).await.unwrap().unwrap();
    assert_eq!(get(&h, "/ok").await, (StatusCode::OK, "a".to_owned()));
    assert_eq!(h.gateway.service_connections(), 1);
}

async fn draining_service_finishes_its_in_flight_request_and_gets_no_new_one(transport: Transport) {
    let mut h = Harness::start_on(config(), transport).await;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let (release, released) = oneshot::channel();
    let a = h.attach(held_service("a", seen_tx.clone(), Some(released))).await;
    let in_flight = tokio::spawn(h.client.get(h.url("/hold")).send());
    assert_eq!(next(&mut seen).await, Seen::Started("a"));
    a.set_status(HealthStatus::Draining);
    let gateway = h.gateway.clone();
    until(|| serde_json::to_string(&gateway.routing().snapshot()).unwrap().contains("draining")).await;
    assert_eq!(get(&h, "/ok").await.0, StatusCode::SERVICE_UNAVAILABLE, "a draining instance got a request");
    h.attach(held_service("b", seen_tx, None)).await;
    for _ in 0..4 {
        assert_eq!(get(&h, "/ok").await, (StatusCode::OK, "b".to_owned()));
    }
    release.send(()).unwrap();
    let response = tokio::time::timeout(WAIT, in_flight).await.unwrap().unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "a");
    assert_eq!(a.in_flight(), 0);
}

async fn one_service_stays_registered_with_every_gateway_replica(transport: Transport) {
    let mut replicas = Vec::new();
    for _ in 0..2 {
        replicas.push(Harness::start_on(config(), transport).await);
    }
    let (seen_tx, _seen) = mpsc::unbounded_channel();
    let service = held_service("a", seen_tx, None);
    let running = service.run_all(replicas.iter().map(|h| h.dialer("held")));
    assert_eq!(running.len(), 2);
    for handle in &running {
        assert!(tokio::time::timeout(WAIT, handle.registered()).await.unwrap());
    }
    for h in &replicas {
        assert_eq!(get(h, "/ok").await, (StatusCode::OK, "a".to_owned()));
    }
    // Each handle is its own gateway's: leaving one replica leaves the other serving.
    running[0].shutdown();
    running[0].unregistered().await;
    until(|| replicas[0].gateway.service_connections() == 0).await;
    assert_eq!(get(&replicas[0], "/ok").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&replicas[1], "/ok").await.0, StatusCode::OK);
    for handle in &running {
        handle.shutdown();
    }
}
