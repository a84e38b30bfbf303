//! W3C trace context through the gateway: a client's valid `traceparent` is continued
//! under the gateway's own span, which is the parent the service sees; a missing or
//! invalid one starts a new trace; and with `[tracing] otlp_endpoint` each request's
//! span reaches an OTLP/HTTP receiver started here, with the client's trace id, the
//! right parent, its attributes and its phase events. Many clients at once, over
//! HTTP/1.1 and HTTP/2; the demo's `GET /api/headers` shows what the service received.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use reqwest::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use weir_gateway::config::TracingConfig;
use weir_gateway::GatewayConfig;

use crate::common::*;

/// Concurrent clients, half HTTP/1.1 and half HTTP/2, and requests each.
const CLIENTS: usize = 16;
const ROUNDS: usize = 3;

/// What the demo service saw of one request's trace context.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    traceparent: String,
    trace_id: String,
    parent_id: String,
    sampled: bool,
    tracestate: Option<String>,
}

/// Sends `GET /api/headers` with `headers` and reads what the service received.
async fn seen(client: &reqwest::Client, url: &str, headers: &[(&str, String)]) -> Seen {
    let mut request = client.get(format!("{url}/api/headers"));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let json: serde_json::Value = response.json().await.unwrap();
    let trace = &json["trace"];
    assert!(trace.is_object(), "the SDK reads a valid trace context: {json}");
    Seen {
        traceparent: json["headers"]["traceparent"].as_str().unwrap().to_owned(),
        trace_id: trace["trace_id"].as_str().unwrap().to_owned(),
        parent_id: trace["parent_id"].as_str().unwrap().to_owned(),
        sampled: trace["sampled"].as_bool().unwrap(),
        tracestate: trace["tracestate"].as_str().map(str::to_owned),
    }
}

/// A client's own trace: random ids (never zero), sampled or not.
fn client_trace(sampled: bool) -> (String, String, String) {
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let parent_id = format!("{:016x}", rand::random::<u64>() | 1);
    let traceparent = format!("00-{trace_id}-{parent_id}-{}", if sampled { "01" } else { "00" });
    (traceparent, trace_id, parent_id)
}

/// HTTP/1.1 for even `c`, HTTP/2 (prior knowledge) for odd.
fn clients() -> Vec<reqwest::Client> {
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    (0..CLIENTS).map(|c| if c % 2 == 0 { reqwest::Client::new() } else { h2.clone() }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_trace_is_continued_and_any_other_request_starts_one() {
    let h = Harness::with_demo(config()).await;
    let mut tasks = Vec::new();
    for (c, client) in clients().into_iter().enumerate() {
        let url = h.url("");
        tasks.push(tokio::spawn(async move {
            let mut started = Vec::new();
            for r in 0..ROUNDS {
                let (traceparent, trace_id, parent_id) = client_trace(r % 2 == 0);
                let state = format!("weir-test=c{c}r{r},other@vendor=x");
                let headers = [("traceparent", traceparent.clone()), ("tracestate", state.clone())];
                let continued = seen(&client, &url, &headers).await;
                assert_eq!(continued.trace_id, trace_id, "the client's trace");
                assert_ne!(continued.parent_id, parent_id, "the gateway's span is the service's parent");
                assert_eq!(continued.sampled, r % 2 == 0, "the client's sampling decision holds");
                assert_eq!(continued.tracestate.as_deref(), Some(state.as_str()));
                let flags = if r % 2 == 0 { "01" } else { "00" };
                assert_eq!(continued.traceparent, format!("00-{trace_id}-{}-{flags}", continued.parent_id));

                let invalid = [
                    vec![],
                    vec![("traceparent", traceparent.to_uppercase()), ("tracestate", state.clone())],
                    vec![("traceparent", format!("ff{}", &traceparent[2..]))],
                    vec![("traceparent", format!("00-{}-{parent_id}-01", "0".repeat(32)))],
                    vec![("traceparent", traceparent.clone()), ("traceparent", traceparent.clone())],
                ];
                for headers in invalid {
                    let fresh = seen(&client, &url, &headers).await;
                    assert_ne!(fresh.trace_id, trace_id, "a new trace for {headers:?}");
                    assert_eq!(fresh.tracestate, None, "no tracestate without its traceparent");
                    assert!(!fresh.sampled, "nothing records a trace the gateway starts without export");
                    started.push(fresh.trace_id);
                }
            }
            started
        }));
    }
    let mut started = Vec::new();
    for task in tasks {
        started.extend(task.await.unwrap());
    }
    let count = started.len();
    started.sort();
    started.dedup();
    assert_eq!(started.len(), count, "every new trace has an id of its own");
}

/// An OTLP/HTTP receiver on 127.0.0.1: every span posted to `/v1/traces`, decoded,
/// comes out of the channel; its resource's `service.name` with it.
async fn otlp_receiver() -> (SocketAddr, mpsc::UnboundedReceiver<(String, Span)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (spans, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let spans = spans.clone();
            let export = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let spans = spans.clone();
                async move {
                    assert_eq!(request.uri().path(), "/v1/traces");
                    assert_eq!(request.headers()["content-type"], "application/x-protobuf");
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    let export = ExportTraceServiceRequest::decode(body).unwrap();
                    for resource in export.resource_spans {
                        let attributes = resource.resource.map(|r| r.attributes).unwrap_or_default();
                        let service = attributes.iter().find(|kv| kv.key == "service.name").map(text);
                        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                            let _ = spans.send((service.clone().unwrap_or_default(), span));
                        }
                    }
                    let ok = hyper::Response::builder().header("content-type", "application/x-protobuf");
                    Ok::<_, hyper::Error>(ok.body(Full::new(Bytes::new())).unwrap())
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), export));
        }
    });
    (addr, received)
}

/// A string attribute's value, or an integer's in decimal.
fn text(kv: &opentelemetry_proto::tonic::common::v1::KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(n)) => n.to_string(),
        other => panic!("{}: unexpected value {other:?}", kv.key),
    }
}

/// The span's attributes by key.
fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes.iter().map(|kv| (kv.key.clone(), text(kv))).collect()
}

/// Receives spans until one has arrived for each of `wanted` (by span id), within
/// [`WAIT`] of the batch processor's period; spans of other traces are kept too.
async fn receive(received: &mut mpsc::UnboundedReceiver<(String, Span)>, wanted: usize) -> Vec<(String, Span)> {
    let mut spans = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while spans.len() < wanted {
        match tokio::time::timeout_at(deadline, received.recv()).await {
            Ok(Some(span)) => spans.push(span),
            _ => panic!("{} of {wanted} spans arrived", spans.len()),
        }
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_exports_one_span_under_the_clients_with_its_attributes_and_phases() {
    let (receiver, mut received) = otlp_receiver().await;
    let tracing = TracingConfig { otlp_endpoint: Some(format!("http://{receiver}")) };
    let h = Harness::with_demo(GatewayConfig { tracing, ..config() }).await;

    // An unsampled client trace first, ended before any other request: its span would
    // be queued ahead of theirs, so it would arrive with them if it were exported.
    let (unsampled, _, _) = client_trace(false);
    let not_exported = seen(&h.client, &h.url(""), &[("traceparent", unsampled)]).await.trace_id;
    until_reported(&h, 1).await;

    let mut tasks = Vec::new();
    for client in clients() {
        let url = h.url("");
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for _ in 0..ROUNDS {
                let (traceparent, trace_id, parent_id) = client_trace(true);
                let service_saw = seen(&client, &url, &[("traceparent", traceparent.clone())]).await;
                assert!(service_saw.sampled);
                sent.push((trace_id, parent_id, service_saw.parent_id));
            }
            let (traceparent, trace_id, parent_id) = client_trace(true);
            let missing = client.get(format!("{url}/api/no-such-route")).header("traceparent", traceparent);
            assert_eq!(missing.send().await.unwrap().status(), StatusCode::NOT_FOUND);
            (sent, (trace_id, parent_id))
        }));
    }
    let mut answered = HashMap::new();
    let mut refused = HashMap::new();
    for task in tasks {
        let (sent, (trace_id, parent_id)) = task.await.unwrap();
        for (trace_id, client_span, gateway_span) in sent {
            answered.insert(trace_id, (client_span, gateway_span));
        }
        refused.insert(trace_id, parent_id);
    }
    let spans = receive(&mut received, answered.len() + refused.len()).await;
    for (service, span) in &spans {
        assert_eq!(service, "weir");
        let trace_id = hex::encode(&span.trace_id);
        assert_ne!(trace_id, not_exported, "an unsampled trace's span is not exported");
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert!(span.start_time_unix_nano <= span.end_time_unix_nano);
        let attributes = attributes(span);
        if let Some(parent) = refused.remove(&trace_id) {
            assert_refused(span, &attributes, &parent);
            continue;
        }
        let (client_span, gateway_span) = answered.remove(&trace_id).expect("a span of a trace sent once");
        assert_eq!(hex::encode(&span.parent_span_id), client_span, "the client's span is the parent");
        assert_eq!(hex::encode(&span.span_id), gateway_span, "the span the service saw as its parent");
        assert_eq!(span.name, "GET /api/headers");
        let expected = [
            ("http.request.method", "GET"),
            ("http.route", "/api/headers"),
            ("url.path", "/api/headers"),
            ("http.response.status_code", "200"),
            ("weir.mount", "/"),
            ("weir.service", "demo"),
        ];
        for (key, value) in expected {
            assert_eq!(attributes.get(key).map(String::as_str), Some(value), "{key} in {attributes:?}");
        }
        assert!(attributes.get("weir.instance").is_some_and(|i| !i.is_empty()), "{attributes:?}");
        assert!(!attributes.contains_key("error.type"), "{attributes:?}");
        let mut names: Vec<&str> = span.events.iter().map(|e| e.name.as_str()).collect();
        assert!(span.events.windows(2).all(|w| w[0].time_unix_nano <= w[1].time_unix_nano), "events in order");
        assert!(span
            .events
            .iter()
            .all(|e| (span.start_time_unix_nano..=span.end_time_unix_nano).contains(&e.time_unix_nano)));
        assert_eq!(names.pop(), Some("done"));
        names.sort_unstable();
        assert_eq!(names, ["admitted", "first byte from service", "routed"]);
    }
    assert!(answered.is_empty() && refused.is_empty(), "spans missing: {answered:?} {refused:?}");
}

/// Waits until the gateway has reported `count` answered `GET /api/headers` (a request
/// ends, and its span with it, a moment after its client has read the answer).
async fn until_reported(h: &Harness, count: u64) {
    let series = r#"http_server_request_duration_seconds_count{mount="/",route="/api/headers",method="GET",status="200",service="demo"} "#;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = h.client.get(h.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
        let reported = text.lines().find_map(|line| line.strip_prefix(series)).map(|n| n.parse::<u64>().unwrap());
        if reported == Some(count) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never reported; last scrape:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The span of a request the gateway answered 404 itself: no route, no service.
fn assert_refused(span: &Span, attributes: &HashMap<String, String>, client_span: &str) {
    assert_eq!(hex::encode(&span.parent_span_id), client_span);
    assert_eq!(span.name, "GET");
    assert_eq!(attributes.get("http.response.status_code").map(String::as_str), Some("404"));
    assert_eq!(attributes.get("error.type").map(String::as_str), Some("not_found"), "{attributes:?}");
    assert!(!attributes.contains_key("http.route") && !attributes.contains_key("weir.service"));
    let names: Vec<&str> = span.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["done"]);
}
