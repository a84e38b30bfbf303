//! Bodies stream end to end: a 1 GiB upload and a 1 GiB download through the gateway
//! with byte counts and sha256 checked, a generated streaming response, a file response
//! with its headers, and backpressure (a handler that does not read holds the client at
//! one window instead of growing a buffer).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Semaphore};
use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service};

use crate::common::*;

conformance! {
    one_gib_upload_arrives_whole,
    one_gib_download_arrives_whole,
    generated_streaming_response_reaches_the_client_in_order,
    file_response_carries_length_disposition_and_type,
    a_handler_that_does_not_read_holds_the_client_at_one_window,
}

const GIB: u64 = 1024 * 1024 * 1024;

/// A deterministic pseudo-random body of `total` bytes in 1 MiB chunks, and its sha256.
fn body_and_digest(total: u64) -> (reqwest::Body, String) {
    let chunk: Bytes =
        (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<u8>>().into();
    let mut hasher = Sha256::new();
    let count = total / chunk.len() as u64;
    for _ in 0..count {
        hasher.update(&chunk);
    }
    let digest = hex::encode(hasher.finalize());
    let stream = futures_util::stream::iter((0..count).map(move |_| Ok::<Bytes, std::io::Error>(chunk.clone())));
    (reqwest::Body::wrap_stream(stream), digest)
}

async fn one_gib_upload_arrives_whole(transport: Transport) {
    let mut cfg = config();
    cfg.limits.max_upload_size = 2 * GIB;
    let h = Harness::with_demo_on(cfg, transport).await;
    let (body, digest) = body_and_digest(GIB);
    let response = h.client.post(h.url("/stream/upload")).body(body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["bytes"], GIB);
    assert_eq!(answer["sha256"], digest);
    h.assert_budget_released().await;
}

async fn one_gib_download_arrives_whole(transport: Transport) {
    let h = Harness::with_demo_on(config(), transport).await;
    let response = h.client.get(h.url(&format!("/stream/download?bytes={GIB}"))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.content_length(), Some(GIB));
    let expected: Vec<u8> = (0..=255u8).collect();
    let mut received: u64 = 0;
    let mut hasher = Sha256::new();
    let mut reference = Sha256::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        // Byte i is i % 256: check the pattern, not just the count.
        let offset = (received % 256) as usize;
        assert_eq!(chunk[0], expected[offset]);
        hasher.update(&chunk);
        received += chunk.len() as u64;
    }
    assert_eq!(received, GIB);
    let pattern: Vec<u8> = (0..64 * 1024).map(|i| i as u8).collect();
    for _ in 0..GIB / pattern.len() as u64 {
        reference.update(&pattern);
    }
    assert_eq!(hasher.finalize(), reference.finalize());
}

async fn generated_streaming_response_reaches_the_client_in_order(transport: Transport) {
    let endpoint = Endpoint::get("/report").raw(|_ctx: RawRequestContext| async {
        let lines =
            futures_util::stream::iter((0..1000).map(|i| Ok::<_, std::io::Error>(Bytes::from(format!("Line {i}\n")))));
        Ok::<_, HandlerError>(RawResponse::stream(200, "text/plain", lines))
    });
    let mut h = Harness::start_on(config(), transport).await;
    h.attach(Service::builder("report", "1.0.0").endpoint(endpoint).build().unwrap()).await;
    let response = h.client.get(h.url("/report")).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/plain");
    let text = response.text().await.unwrap();
    let expected: String = (0..1000).map(|i| format!("Line {i}\n")).collect();
    assert_eq!(text, expected);
}

async fn file_response_carries_length_disposition_and_type(transport: Transport) {
    let path = std::env::temp_dir().join(format!("weir-e2e-{}.csv", std::process::id()));
    let content: Vec<u8> = (0..300_000u32).map(|i| b"abc,123\n"[(i % 8) as usize]).collect();
    std::fs::write(&path, &content).unwrap();
    let file = path.clone();
    let endpoint = Endpoint::get("/export").raw(move |_ctx: RawRequestContext| {
        let file = file.clone();
        async move { RawResponse::file(&file, Some("report.csv")).await }
    });
    let mut h = Harness::start_on(config(), transport).await;
    h.attach(Service::builder("files", "1.0.0").endpoint(endpoint).build().unwrap()).await;
    let response = h.client.get(h.url("/export")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.content_length(), Some(content.len() as u64));
    assert_eq!(response.headers()["content-disposition"], "attachment; filename=\"report.csv\"");
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert_eq!(response.bytes().await.unwrap(), content);
    std::fs::remove_file(&path).unwrap();
}

async fn a_handler_that_does_not_read_holds_the_client_at_one_window(transport: Transport) {
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let held = Arc::clone(&gate);
    let endpoint = Endpoint::post("/lazy").streaming().raw(move |mut ctx: RawRequestContext| {
        let gate = Arc::clone(&held);
        let started = started_tx.clone();
        async move {
            let _ = started.send(());
            let _permit = gate.acquire().await;
            let mut n = 0usize;
            while let Some(chunk) = ctx.body.chunk().await.map_err(|e| HandlerError::bad_request(e.to_string()))? {
                n += chunk.len();
            }
            Ok::<_, HandlerError>(RawResponse::text(200, n.to_string()))
        }
    });
    let mut h = Harness::start_on(config(), transport).await;
    h.attach(Service::builder("lazy", "1.0.0").endpoint(endpoint).build().unwrap()).await;
    let (sent_tx, mut sent) = mpsc::unbounded_channel::<usize>();
    let chunks = futures_util::stream::iter(0..256).then(move |i| {
        let sent_tx = sent_tx.clone();
        async move {
            let _ = sent_tx.send(i);
            Ok::<Bytes, std::io::Error>(Bytes::from(vec![1u8; 64 * 1024]))
        }
    });
    let upload = tokio::spawn(h.client.post(h.url("/lazy")).body(reqwest::Body::wrap_stream(chunks)).send());
    tokio::time::timeout(WAIT, started.recv()).await.unwrap();
    // Let the client push as much as it can while the handler reads nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut produced = 0;
    while sent.try_recv().is_ok() {
        produced += 1;
    }
    // 16 MiB offered; only the stream window plus socket and pipe buffers can be taken.
    assert!(produced < 128, "the client pushed {produced} x 64 KiB into a handler that read nothing");
    let window = u64::from(h.gateway.config().limits.stream_window);
    assert!(h.gateway.budget().counters().aggregate_bytes <= window);
    gate.add_permits(1);
    let response = upload.await.unwrap().unwrap();
    assert_eq!(response.text().await.unwrap(), (256 * 64 * 1024).to_string());
    h.assert_budget_released().await;
}
