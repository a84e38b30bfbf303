//! Routing through the gateway: the demo's endpoints over HTTP/1.1 and h2c, 404/405,
//! path parameters, timeouts (504), version selection, round-robin, draining, eviction
//! by heartbeat silence, and a disconnected service answering 503.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use weir_gateway::GatewayConfig;
use weir_proto::HealthStatus;
use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service};

use crate::common::*;

conformance! {
    demo_endpoints_answer_over_http1,
    demo_answers_over_h2c_prior_knowledge,
    unknown_path_is_404_and_wrong_method_is_405_with_allow,
    slow_demo_call_past_its_five_second_timeout_is_504,
    effective_timeout_is_capped_by_the_gateway_maximum,
    version_header_default_version_and_highest_version_select_instances,
    equal_instances_share_requests_round_robin,
    draining_instance_gets_no_new_requests,
    silent_service_is_evicted_and_its_endpoint_answers_503,
    disconnected_service_leaves_at_once_and_answers_503_with_retry_after,
    head_is_served_by_get,
}

async fn demo_endpoints_answer_over_http1(transport: Transport) {
    let h = Harness::with_demo_on(config(), transport).await;
    let hello = h.client.get(h.url("/api/hello")).send().await.unwrap();
    assert_eq!(hello.status(), StatusCode::OK);
    assert_eq!(hello.headers()["content-type"], "application/json");
    assert_eq!(hello.json::<serde_json::Value>().await.unwrap()["message"], "hello from weir");

    let item: serde_json::Value = h.client.get(h.url("/api/items/a%20b")).send().await.unwrap().json().await.unwrap();
    assert_eq!(item["id"], "a b");

    let echo =
        h.client.post(h.url("/api/echo")).header("content-type", "text/x-test").body("ping").send().await.unwrap();
    assert_eq!(echo.headers()["content-type"], "text/x-test");
    assert_eq!(echo.text().await.unwrap(), "ping");

    let slow = h.client.get(h.url("/api/slow?ms=20")).send().await.unwrap();
    assert_eq!(slow.status(), StatusCode::OK);
    assert_eq!(h.client.get(h.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    h.assert_budget_released().await;
}

async fn demo_answers_over_h2c_prior_knowledge(transport: Transport) {
    let h = Harness::with_demo_on(config(), transport).await;
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let response = client.get(h.url("/api/items/7")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["id"], "7");
    let echo = client.post(h.url("/api/echo")).body(vec![7u8; 100_000]).send().await.unwrap();
    assert_eq!(echo.bytes().await.unwrap().len(), 100_000);
}

async fn unknown_path_is_404_and_wrong_method_is_405_with_allow(transport: Transport) {
    let h = Harness::with_demo_on(config(), transport).await;
    let missing = h.client.get(h.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    let wrong = h.client.delete(h.url("/api/hello")).send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.headers()["allow"], "GET, HEAD");
    assert_eq!(h.gateway.metrics().errors("method_not_allowed"), 1);
}

async fn slow_demo_call_past_its_five_second_timeout_is_504(transport: Transport) {
    let h = Harness::with_demo_on(config(), transport).await;
    let started = Instant::now();
    let response = h.client.get(h.url("/api/slow?ms=5300")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_millis(5250), "answered after {:?}", started.elapsed());
}

async fn effective_timeout_is_capped_by_the_gateway_maximum(transport: Transport) {
    let mut cfg = config();
    cfg.server.max_timeout = Duration::from_millis(150);
    let h = Harness::with_demo_on(cfg, transport).await;
    let started = Instant::now();
    let response = h.client.get(h.url("/api/slow?ms=3000")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["error"], "upstream_timeout");
}

fn versioned(version: &str, instance: &str) -> Service {
    let tag = format!("{version}/{instance}");
    Service::builder("versioned", version)
        .instance_id(instance)
        .endpoint(Endpoint::get("/v").raw(move |_ctx: RawRequestContext| {
            let tag = tag.clone();
            async move { Ok::<_, HandlerError>(RawResponse::text(200, tag)) }
        }))
        .build()
        .unwrap()
}

async fn get_text(h: &Harness, path: &str, version: Option<&str>) -> (StatusCode, String) {
    let mut request = h.client.get(h.url(path));
    if let Some(version) = version {
        request = request.header("x-weir-version", version);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn version_header_default_version_and_highest_version_select_instances(transport: Transport) {
    let mut h = Harness::start_on(config(), transport).await;
    h.attach(versioned("1.0.0", "a")).await;
    h.attach(versioned("2.0.0", "b")).await;
    assert_eq!(get_text(&h, "/v", None).await.1, "2.0.0/b");
    assert_eq!(get_text(&h, "/v", Some("1.0.0")).await.1, "1.0.0/a");
    assert_eq!(get_text(&h, "/v", Some("3.0.0")).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get_text(&h, "/v", Some("1.0")).await.0, StatusCode::BAD_REQUEST);

    let mut cfg = config();
    cfg.routing.default_versions.insert("versioned".into(), "1.0.0".into());
    let mut h = Harness::start_on(cfg, transport).await;
    h.attach(versioned("1.0.0", "a")).await;
    h.attach(versioned("2.0.0", "b")).await;
    assert_eq!(get_text(&h, "/v", None).await.1, "1.0.0/a");
}

async fn equal_instances_share_requests_round_robin(transport: Transport) {
    let mut h = Harness::start_on(config(), transport).await;
    h.attach(versioned("1.0.0", "a")).await;
    h.attach(versioned("1.0.0", "b")).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..10 {
        *seen.entry(get_text(&h, "/v", None).await.1).or_default() += 1;
    }
    assert_eq!(seen.get("1.0.0/a"), Some(&5), "{seen:?}");
    assert_eq!(seen.get("1.0.0/b"), Some(&5), "{seen:?}");
}

async fn draining_instance_gets_no_new_requests(transport: Transport) {
    let mut h = Harness::start_on(config(), transport).await;
    let a = h.attach(versioned("1.0.0", "a")).await;
    h.attach(versioned("1.0.0", "b")).await;
    a.set_status(HealthStatus::Draining);
    let gateway = h.gateway.clone();
    until(|| serde_json::to_string(&gateway.routing().snapshot()).unwrap().contains("draining")).await;
    for _ in 0..6 {
        assert_eq!(get_text(&h, "/v", None).await.1, "1.0.0/b");
    }
}

async fn silent_service_is_evicted_and_its_endpoint_answers_503(transport: Transport) {
    let mut h = Harness::start_on(config(), transport).await;
    let service = h.attach(versioned("1.0.0", "a")).await;
    assert_eq!(get_text(&h, "/v", None).await.0, StatusCode::OK);
    // Pretend the heartbeats stopped: sweep as if `evict_after` had passed.
    let later = Instant::now() + h.gateway.config().routing.evict_after + Duration::from_secs(1);
    h.gateway.sweep_once(later);
    let (status, body) = get_text(&h, "/v", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    tokio::time::timeout(WAIT, service.unregistered()).await.unwrap();
}

async fn disconnected_service_leaves_at_once_and_answers_503_with_retry_after(transport: Transport) {
    let mut h = Harness::start_on(config(), transport).await;
    let service = h.attach(versioned("1.0.0", "a")).await;
    service.shutdown();
    let gateway = h.gateway.clone();
    until(|| gateway.service_connections() == 0).await;
    let response = h.client.get(h.url("/v")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["error"], "no_healthy_instance");
}

async fn head_is_served_by_get(transport: Transport) {
    let h = Harness::with_demo_on(GatewayConfig::default(), transport).await;
    let response = h.client.head(h.url("/api/hello")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
