//! The business profile's request registry: a request in flight is listed at the admin
//! endpoint with its route and client, an operator cancels it there (the client gets
//! 503 `cancelled`, the handler its cancellation), and the list is empty afterwards.

use reqwest::StatusCode;
use tokio::sync::mpsc;
use weir_gateway::config::{AuthConfig, MountConfig, MountSettings, Profile};
use weir_gateway::GatewayConfig;
use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service};

use crate::common::*;

#[tokio::test]
async fn an_operator_lists_and_cancels_a_request_in_flight() {
    let settings = MountSettings::declared_defaults();
    let mount =
        MountConfig { prefix: "/".into(), profile: Profile::Business, root: None, auth: AuthConfig::None, settings };
    let mut h = Harness::start(GatewayConfig { mounts: vec![mount], ..config() }).await;
    let (tx, mut seen) = mpsc::unbounded_channel();
    let endpoint = Endpoint::get("/jobs/{id}").raw(move |ctx: RawRequestContext| {
        let tx = tx.clone();
        async move {
            let _ = tx.send("started");
            ctx.cancel.cancelled().await;
            let _ = tx.send("cancelled");
            Err::<RawResponse, _>(HandlerError::unavailable("cancelled"))
        }
    });
    h.attach(Service::builder("jobs", "1.0.0").endpoint(endpoint).build().unwrap()).await;

    let admin = h.admin_url("");

    let request = tokio::spawn(h.client.get(h.url("/jobs/7")).send());
    assert_eq!(tokio::time::timeout(WAIT, seen.recv()).await.unwrap(), Some("started"));
    let list: serde_json::Value = h.client.get(format!("{admin}/requests")).send().await.unwrap().json().await.unwrap();
    let entries = list.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{list}");
    assert_eq!(entries[0]["route"], "/jobs/{id}");
    assert_eq!(entries[0]["path"], "/jobs/7");
    let id = entries[0]["id"].as_u64().unwrap();

    let cancelled = h.client.delete(format!("{admin}/requests/{id}")).send().await.unwrap();
    assert_eq!(cancelled.status(), StatusCode::NO_CONTENT);
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["error"], "cancelled");
    assert_eq!(tokio::time::timeout(WAIT, seen.recv()).await.unwrap(), Some("cancelled"));
    assert!(h.gateway.registry().list().is_empty());
    let again = h.client.delete(format!("{admin}/requests/{id}")).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}
