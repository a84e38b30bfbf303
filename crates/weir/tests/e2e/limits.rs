//! Payload limits (the budget of `ARCHITECTURE.md`, "The budget"), each crossed: the
//! streaming happy path above the per-call limit (and a service's smaller window held,
//! not the gateway's), the buffered per-call limit with the
//! handler never invoked, the aggregate and per-connection budgets refusing a stream
//! that finds no room within the read timeout,
//! the total upload size, a slow body (408), and a client vanishing mid-upload.
//! Every test ends with the budget back at zero.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use weir_gateway::GatewayConfig;
use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service};

use crate::common::*;

conformance! {
    streaming_upload_larger_than_the_per_call_limit_succeeds,
    a_service_with_a_smaller_window_holds_only_its_window_in_the_budget,
    many_chunked_uploads_through_a_small_window_all_complete,
    buffered_body_over_the_per_call_limit_is_413_and_the_handler_never_runs,
    aggregate_budget_refuses_new_streams_with_503,
    per_connection_budget_refuses_new_streams_with_503,
    upload_over_max_upload_size_is_413_known_or_mid_stream,
    body_that_stops_arriving_gets_408,
    client_vanishing_mid_upload_cancels_the_handler_and_releases_everything,
}

const KIB: u64 = 1024;

fn small_limits() -> GatewayConfig {
    let mut cfg = config();
    cfg.limits.payload.max_request_bytes_per_call = 64 * KIB;
    cfg.limits.stream_window = 64 * 1024;
    cfg
}

/// Counts invocations; a buffered `/buffered` and a streaming `/streamed` endpoint that
/// count the bytes they read.
fn counting_service(calls: Arc<AtomicUsize>) -> Service {
    let counter = move |calls: Arc<AtomicUsize>| {
        move |mut ctx: RawRequestContext| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut n = 0usize;
                while let Some(chunk) = ctx.body.chunk().await.map_err(|e| HandlerError::bad_request(e.to_string()))? {
                    n += chunk.len();
                }
                Ok::<_, HandlerError>(RawResponse::text(200, n.to_string()))
            }
        }
    };
    Service::builder("counting", "1.0.0")
        .endpoint(Endpoint::post("/buffered").raw(counter(Arc::clone(&calls))))
        .endpoint(Endpoint::post("/streamed").streaming().raw(counter(calls)))
        .build()
        .unwrap()
}

fn chunked(total: usize, chunk: usize) -> reqwest::Body {
    let chunks = (0..total.div_ceil(chunk)).map(move |i| {
        let n = chunk.min(total - i * chunk);
        Ok::<Bytes, std::io::Error>(Bytes::from(vec![i as u8; n]))
    });
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

async fn streaming_upload_larger_than_the_per_call_limit_succeeds(transport: Transport) {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut h = Harness::start_on(small_limits(), transport).await;
    h.attach(counting_service(Arc::clone(&calls))).await;
    let size = 4 * 1024 * 1024;
    for body in [reqwest::Body::from(vec![1u8; size]), chunked(size, 10_000)] {
        let response = h.client.post(h.url("/streamed")).body(body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), size.to_string());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    h.assert_budget_released().await;
}

/// A service that announced a window smaller than the gateway's: an upload it has not
/// started reading holds that window in the budget, not the gateway's larger one (what
/// could be in flight, not what was asked for); once it reads, the upload completes.
async fn a_service_with_a_smaller_window_holds_only_its_window_in_the_budget(transport: Transport) {
    const SMALL: u32 = 16 * 1024;
    let mut h = Harness::start_on(small_limits(), transport).await;
    let gate = Arc::new(Semaphore::new(0));
    let waiting = Arc::clone(&gate);
    let endpoint = Endpoint::post("/held").streaming().raw(move |mut ctx: RawRequestContext| {
        let gate = Arc::clone(&waiting);
        async move {
            let _ = gate.acquire().await;
            let mut n = 0usize;
            while let Some(chunk) = ctx.body.chunk().await.map_err(|e| HandlerError::bad_request(e.to_string()))? {
                n += chunk.len();
            }
            Ok::<_, HandlerError>(RawResponse::text(200, n.to_string()))
        }
    });
    h.attach(Service::builder("held", "1.0.0").stream_window(SMALL).endpoint(endpoint).build().unwrap()).await;
    let size = 1024 * 1024;
    // Chunks of the window's size: the first fills it, the second waits for room.
    let upload = tokio::spawn(h.client.post(h.url("/held")).body(chunked(size, SMALL as usize)).send());
    let budget = h.gateway.budget();
    until(|| budget.counters().aggregate_bytes == u64::from(SMALL)).await;
    // Nothing announces that nothing more happens: watch a while that no more is held
    // (a reservation sized by the gateway's 64 KiB window grows at once past 16 KiB).
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let held = budget.counters().aggregate_bytes;
        assert_eq!(held, u64::from(SMALL), "only the service's window is in flight");
    }
    gate.add_permits(1);
    let response = upload.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), size.to_string());
    h.assert_budget_released().await;
}

/// Many clients at once, each upload's window only 16 KiB, so that every few chunks the
/// gateway waits for the service's credit while the link's reader adds it on another
/// thread: every upload completes whole, none stalls into a 504 (an acknowledgement that
/// lands while the gateway settles its reservation must still wake it).
async fn many_chunked_uploads_through_a_small_window_all_complete(transport: Transport) {
    const CLIENTS: usize = 16;
    const SIZE: usize = 2 * 1024 * 1024;
    let mut cfg = config();
    cfg.limits.payload.max_request_bytes_per_call = 16 * 1024;
    cfg.limits.stream_window = 16 * 1024;
    let mut h = Harness::start_on(cfg, transport).await;
    h.attach(counting_service(Arc::new(AtomicUsize::new(0)))).await;
    let uploads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let request = reqwest::Client::new().post(h.url("/streamed")).body(chunked(SIZE, 5_000 + i * 97));
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                (response.status(), response.text().await.unwrap())
            })
        })
        .collect();
    for upload in uploads {
        assert_eq!(upload.await.unwrap(), (StatusCode::OK, SIZE.to_string()));
    }
    h.assert_budget_released().await;
}

async fn buffered_body_over_the_per_call_limit_is_413_and_the_handler_never_runs(transport: Transport) {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut h = Harness::start_on(small_limits(), transport).await;
    h.attach(counting_service(Arc::clone(&calls))).await;
    let limit = 64 * 1024;
    // Known length: refused before a body byte is read.
    let known = h.client.post(h.url("/buffered")).body(vec![0u8; limit + 1]).send().await.unwrap();
    assert_eq!(known.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Chunked: refused the moment the body crosses the limit.
    let chunked = h.client.post(h.url("/buffered")).body(chunked(limit * 4, 4096)).send().await.unwrap();
    assert_eq!(chunked.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(chunked.json::<serde_json::Value>().await.unwrap()["error"], "payload_too_large");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "handler ran for a refused body");
    // At the limit exactly, it passes.
    let fits = h.client.post(h.url("/buffered")).body(vec![0u8; limit]).send().await.unwrap();
    assert_eq!(fits.text().await.unwrap(), limit.to_string());
    h.assert_budget_released().await;
}

/// A streaming endpoint whose handler holds each request until a permit is released.
fn gated_service(gate: Arc<Semaphore>, started: mpsc::UnboundedSender<()>) -> Service {
    let endpoint = Endpoint::post("/gated").streaming().raw(move |mut ctx: RawRequestContext| {
        let gate = Arc::clone(&gate);
        let started = started.clone();
        async move {
            let _ = started.send(());
            let _permit = gate.acquire().await;
            while ctx.body.chunk().await.map_err(|e| HandlerError::bad_request(e.to_string()))?.is_some() {}
            Ok::<_, HandlerError>(RawResponse::text(200, "done"))
        }
    });
    Service::builder("gated", "1.0.0").endpoint(endpoint).build().unwrap()
}

async fn budget_refuses_at_admission(cfg: GatewayConfig, admitted: usize, transport: Transport) {
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let mut h = Harness::start_on(cfg, transport).await;
    h.attach(gated_service(Arc::clone(&gate), started_tx)).await;
    let mut uploads = Vec::new();
    for _ in 0..admitted {
        let request = h.client.post(h.url("/gated")).body(chunked(1024 * 1024, 16 * 1024));
        uploads.push(tokio::spawn(request.send()));
        tokio::time::timeout(WAIT, started.recv()).await.unwrap();
    }
    // The admitted uploads fill their windows, which the gated handlers do not read: the
    // budget is full, and the next upload is refused once it has waited the read timeout.
    let full = admitted as u64 * 64 * KIB;
    until(|| h.gateway.budget().counters().aggregate_bytes >= full).await;
    let refused = h.client.post(h.url("/gated")).body(chunked(1024 * 1024, 16 * 1024)).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.json::<serde_json::Value>().await.unwrap()["error"], "overloaded");
    gate.add_permits(admitted);
    for upload in uploads {
        assert_eq!(upload.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    h.assert_budget_released().await;
}

async fn aggregate_budget_refuses_new_streams_with_503(transport: Transport) {
    let mut cfg = small_limits();
    cfg.server.read_timeout = Duration::from_millis(300);
    cfg.limits.payload.max_aggregate_inflight_bytes = 128 * KIB;
    budget_refuses_at_admission(cfg, 2, transport).await;
}

async fn per_connection_budget_refuses_new_streams_with_503(transport: Transport) {
    let mut cfg = small_limits();
    cfg.server.read_timeout = Duration::from_millis(300);
    cfg.limits.payload.max_request_bytes_per_connection = 192 * KIB;
    budget_refuses_at_admission(cfg, 3, transport).await;
}

async fn upload_over_max_upload_size_is_413_known_or_mid_stream(transport: Transport) {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut cfg = small_limits();
    cfg.limits.max_upload_size = 1024 * 1024;
    let mut h = Harness::start_on(cfg, transport).await;
    h.attach(counting_service(Arc::clone(&calls))).await;
    let known = h.client.post(h.url("/streamed")).body(vec![0u8; 1024 * 1024 + 1]).send().await.unwrap();
    assert_eq!(known.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let under = h.client.post(h.url("/streamed")).body(chunked(1024 * 1024, 8192)).send().await.unwrap();
    assert_eq!(under.status(), StatusCode::OK);
    let over = h.client.post(h.url("/streamed")).body(chunked(3 * 1024 * 1024, 8192)).send().await;
    // The gateway answers 413 mid-stream and closes; the client may see the answer or,
    // if it was still writing, a reset. Either way the handler is cancelled and nothing leaks.
    if let Ok(response) = over {
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    h.assert_budget_released().await;
}

async fn body_that_stops_arriving_gets_408(transport: Transport) {
    let mut cfg = small_limits();
    cfg.server.read_timeout = Duration::from_millis(200);
    let calls = Arc::new(AtomicUsize::new(0));
    let mut h = Harness::start_on(cfg, transport).await;
    h.attach(counting_service(Arc::clone(&calls))).await;
    for path in ["/buffered", "/streamed"] {
        let mut socket = TcpStream::connect(h.addr).await.unwrap();
        let head = format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789");
        socket.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, socket.read_to_end(&mut answer)).await.expect("no answer");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
    }
    h.assert_budget_released().await;
}

async fn client_vanishing_mid_upload_cancels_the_handler_and_releases_everything(transport: Transport) {
    let (tx, mut cancelled) = mpsc::unbounded_channel();
    let endpoint = Endpoint::post("/sink").streaming().raw(move |mut ctx: RawRequestContext| {
        let tx = tx.clone();
        async move {
            let outcome = loop {
                match ctx.body.chunk().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => break "end",
                    Err(_) => break "error",
                }
            };
            ctx.cancel.cancelled().await;
            let _ = tx.send(outcome);
            Ok::<_, HandlerError>(RawResponse::new(200))
        }
    });
    let mut h = Harness::start_on(small_limits(), transport).await;
    h.attach(Service::builder("sink", "1.0.0").endpoint(endpoint).build().unwrap()).await;
    let mut socket = TcpStream::connect(h.addr).await.unwrap();
    socket.write_all(b"POST /sink HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n").await.unwrap();
    for _ in 0..20 {
        socket.write_all(b"4000\r\n").await.unwrap();
        socket.write_all(&[7u8; 0x4000]).await.unwrap();
        socket.write_all(b"\r\n").await.unwrap();
    }
    drop(socket);
    let outcome = tokio::time::timeout(WAIT, cancelled.recv()).await.unwrap().unwrap();
    assert_eq!(outcome, "error", "the handler must see its body fail, not end cleanly");
    h.assert_budget_released().await;
}
