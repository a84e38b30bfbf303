//! What an operator sees of client requests: per-route series at `/metrics` (duration,
//! body sizes, requests in flight, refusals by reason), whose labels come from
//! registrations and never from the paths clients send, and the request id each request
//! carries to the service and back to the client. Many clients at once, over HTTP/1.1
//! and HTTP/2.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use weir_service::{Endpoint, RawRequestContext, RawResponse, Service};

use crate::common::*;

/// The admin `/metrics` text.
pub(crate) async fn scrape(h: &Harness) -> String {
    let response = h.client.get(h.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    response.text().await.unwrap()
}

/// The value of the series `series` (name and labels exactly as exposed), 0 if absent.
pub(crate) fn value(text: &str, series: &str) -> f64 {
    let line = text.lines().find(|line| line.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')));
    line.map_or(0.0, |line| line.rsplit(' ').next().unwrap().parse().unwrap())
}

/// Scrapes until `holds`, within [`WAIT`]: a request is reported once hyper has let go
/// of its response body, a moment after the client has read it.
pub(crate) async fn until_scraped(h: &Harness, holds: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = scrape(h).await;
        if holds(&text) {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "never held; last scrape:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const ITEMS: &str = r#"mount="/api",route="/api/items/{id}",method="GET",status="200",service="demo""#;
const ECHO: &str = r#"mount="/api",route="/api/echo",method="POST",status="200",service="demo""#;
const ECHO_UPLOAD: &str = r#"mount="/api",route="/api/echo",method="POST",service="demo""#;
const UNROUTED: &str = r#"mount="/api",route="",method="GET",status="404",service="""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_lands_in_its_routes_series_and_random_paths_add_none() {
    let h = Harness::with_demo(demo_mounts()).await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let (clients, rounds) = (32, 8);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = if c % 2 == 0 { h.client.clone() } else { h2.clone() };
        let url = h.url("");
        tasks.push(tokio::spawn(async move {
            for r in 0..rounds {
                let item = client.get(format!("{url}/api/items/{c}-{r}")).send().await.unwrap();
                assert_eq!(item.status(), StatusCode::OK);
                item.bytes().await.unwrap();
                let body = vec![b'x'; 1000 + c * 10 + r];
                let echo = client.post(format!("{url}/api/echo")).header("content-type", "text/plain").body(body);
                let echo = echo.send().await.unwrap();
                assert_eq!(echo.status(), StatusCode::OK);
                assert_eq!(echo.bytes().await.unwrap().len(), 1000 + c * 10 + r);
                let scan = client.get(format!("{url}/api/no-such-{c}-{r}")).send().await.unwrap();
                assert_eq!(scan.status(), StatusCode::NOT_FOUND);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let n = (clients * rounds) as f64;
    let echoed: usize = (0..clients).flat_map(|c| (0..rounds).map(move |r| 1000 + c * 10 + r)).sum();
    let text = until_scraped(&h, |text| {
        value(text, &format!("http_server_request_duration_seconds_count{{{UNROUTED}}}")) == n
            && value(text, r#"http_server_active_requests{mount="/api"}"#) == 0.0
    })
    .await;
    assert_eq!(value(&text, &format!("http_server_request_duration_seconds_count{{{ITEMS}}}")), n, "{text}");
    assert_eq!(value(&text, &format!("http_server_request_duration_seconds_count{{{ECHO}}}")), n, "{text}");
    assert_eq!(value(&text, &format!("http_server_request_body_size_bytes_sum{{{ECHO_UPLOAD}}}")), echoed as f64);
    assert_eq!(value(&text, &format!("http_server_response_body_size_bytes_sum{{{ECHO}}}")), echoed as f64);
    assert_eq!(value(&text, r#"weir_refusals_total{mount="/api",reason="not_found"}"#), n, "{text}");
    let slowest = format!("http_server_request_duration_seconds_bucket{{{ITEMS},le=\"+Inf\"}}");
    assert_eq!(value(&text, &slowest), n, "{text}");
    // Hundreds of distinct paths, three routes' worth of series: no label holds a path.
    let series = text.lines().filter(|l| l.starts_with("http_server_request_duration_seconds_count{")).count();
    assert_eq!(series, 3, "{text}");
    assert!(!text.contains("no-such"), "a client's path became a label:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_session_is_reported_when_it_ends_with_its_bytes() {
    let h = Harness::with_demo(demo_mounts()).await;
    let url = format!("ws://{}/stream/echo", h.addr);
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await.unwrap().unwrap();
    let series = r#"mount="/stream",route="/stream/echo",method="GET",status="101",service="demo""#;
    let count = format!("http_server_request_duration_seconds_count{{{series}}}");
    let active = r#"http_server_active_requests{mount="/stream"}"#;
    until_scraped(&h, |text| value(text, active) == 1.0).await;
    for _ in 0..3 {
        ws.send(Message::text("x".repeat(100))).await.unwrap();
        assert!(ws.next().await.unwrap().unwrap().is_text());
    }
    assert_eq!(value(&scrape(&h).await, &count), 0.0, "not reported while the session is open");
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    let text = until_scraped(&h, |text| value(text, &count) == 1.0).await;
    assert_eq!(value(&text, active), 0.0, "{text}");
    let sent = format!("http_server_request_body_size_bytes_sum{{{}}}", series.replace(r#",status="101""#, ""));
    assert!(value(&text, &sent) >= 300.0, "the session's bytes from the client count:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_reaches_the_service_and_comes_back() {
    let mut h = Harness::start(config()).await;
    let echo_id = Endpoint::get("/id").raw(|ctx: RawRequestContext| async move {
        let id = String::from_utf8_lossy(ctx.header("x-request-id").unwrap_or_default()).into_owned();
        Ok::<_, weir_service::HandlerError>(RawResponse::text(200, id))
    });
    h.attach(Service::builder("ids", "1.0.0").endpoint(echo_id).build().unwrap()).await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut tasks = Vec::new();
    for c in 0..16 {
        let client = if c % 2 == 0 { h.client.clone() } else { h2.clone() };
        let url = h.url("/id");
        tasks.push(tokio::spawn(async move {
            let chosen = format!("client-{c}:abc");
            let kept = client.get(&url).header("x-request-id", &chosen).send().await.unwrap();
            assert_eq!(kept.headers()["x-request-id"], chosen.as_str());
            assert_eq!(kept.text().await.unwrap(), chosen, "the service saw the client's id");
            let fresh = client.get(&url).header("x-request-id", "not a valid id").send().await.unwrap();
            let id = fresh.headers()["x-request-id"].to_str().unwrap().to_owned();
            assert_eq!(id.len(), 32, "{id}");
            assert_eq!(fresh.text().await.unwrap(), id, "the service saw the id the client got");
            id
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 16, "every generated id is different");
    let missing = h.client.get(h.url("/nothing-here")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.headers().contains_key("x-request-id"), "refusals carry the id too");
}
