//! Slow senders against the payload budget: many uploads from one address trickling
//! their bodies must not hold the budget that uploads from another address need (a
//! streamed body holds only its bytes in flight, not a whole idle window), and one
//! client holding `limits.max_inflight_bytes_per_client` gets 503 while another client
//! is still served. The attacker connects from 127.0.0.1, the legitimate client binds
//! 127.0.0.2. Every test ends with the budget back at zero.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use weir_gateway::GatewayConfig;
use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service};

use crate::common::*;

const KIB: u64 = 1024;
/// Uploads the attacker keeps open at once: at a whole window each, twelve times the
/// per-connection budget.
const SLOW_SENDERS: usize = 48;

/// A budget a handful of whole windows fill: 64 KiB per call and per stream window,
/// 256 KiB per service connection and for the gateway, 128 KiB per client.
fn small_budget() -> GatewayConfig {
    let mut cfg = config();
    let payload = &mut cfg.limits.payload;
    payload.max_request_bytes_per_call = 64 * KIB;
    payload.max_request_bytes_per_connection = 256 * KIB;
    payload.max_aggregate_inflight_bytes = 256 * KIB;
    payload.max_inflight_bytes_per_client = 128 * KIB;
    cfg.limits.stream_window = 64 * 1024;
    cfg.server.read_timeout = Duration::from_secs(2);
    // The attack runs longer than the default grace: it is the budget under test here,
    // not the minimum data rate.
    cfg.server.data_rate_grace = Duration::from_secs(60);
    cfg
}

/// A client of the gateway from 127.0.0.2, another address than the attacker's.
fn legit_client() -> reqwest::Client {
    let local = IpAddr::from([127, 0, 0, 2]);
    reqwest::Client::builder().local_address(local).pool_max_idle_per_host(0).build().unwrap()
}

/// One slow sender: a chunked upload to the demo's `/stream/upload` that sends one byte
/// per `interval` until `stop`, then ends its body; returns the status line it got.
async fn trickle(addr: SocketAddr, interval: Duration, stop: CancellationToken) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let head = b"POST /stream/upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
    socket.write_all(head).await.unwrap();
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => socket.write_all(b"1\r\nx\r\n").await.unwrap(),
        }
    }
    socket.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(WAIT, socket.read(&mut answer)).await.expect("no answer").unwrap();
    String::from_utf8_lossy(&answer[..n]).lines().next().unwrap_or_default().to_owned()
}

fn chunked(total: usize, chunk: usize) -> reqwest::Body {
    let chunks = (0..total.div_ceil(chunk)).map(move |i| {
        let n = chunk.min(total - i * chunk);
        Ok::<Bytes, std::io::Error>(Bytes::from(vec![i as u8; n]))
    });
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

/// The legitimate traffic: streamed uploads (unknown length, eight windows each) and
/// small buffered POSTs, all at once, each checked.
pub(crate) async fn legit_traffic(h: &Harness) {
    let client = legit_client();
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let request = client.post(h.url("/stream/upload")).body(chunked(512 * 1024, 16 * 1024));
        tasks.spawn(async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "streamed upload refused");
            let json: serde_json::Value = response.json().await.unwrap();
            assert_eq!(json["bytes"], 512 * 1024);
        });
    }
    for seed in 0..16u8 {
        let request = client.post(h.url("/api/echo")).body(vec![seed; 8 * 1024]);
        tasks.spawn(async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "buffered POST refused");
            assert_eq!(response.bytes().await.unwrap(), vec![seed; 8 * 1024]);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_from_one_address_do_not_starve_uploads_from_another() {
    let h = Harness::with_demo_on(small_budget(), Transport::Tcp).await;
    let stop = CancellationToken::new();
    let mut attack = JoinSet::new();
    for _ in 0..SLOW_SENDERS {
        attack.spawn(trickle(h.addr, Duration::from_millis(100), stop.clone()));
    }
    // Every slow upload admitted and forwarding, yet together they hold less than one
    // window: what they sent and the service has not acknowledged.
    let budget = h.gateway.budget();
    until(|| budget.counters().reservations >= SLOW_SENDERS as u64).await;
    assert!(budget.counters().aggregate_bytes < 64 * KIB, "{:?}", budget.counters());
    legit_traffic(&h).await;
    stop.cancel();
    while let Some(status) = attack.join_next().await {
        assert_eq!(status.unwrap(), "HTTP/1.1 200 OK", "a slow but valid upload must complete");
    }
    h.assert_budget_released().await;
}

/// A buffered endpoint whose handler holds each request (and so its body's bytes in
/// the budget) until a permit is released.
fn holding_service(gate: Arc<Semaphore>, started: mpsc::UnboundedSender<()>) -> Service {
    let endpoint = Endpoint::post("/held").raw(move |_ctx: RawRequestContext| {
        let (gate, started) = (Arc::clone(&gate), started.clone());
        async move {
            let _ = started.send(());
            let _permit = gate.acquire().await;
            Ok::<_, HandlerError>(RawResponse::text(200, "done"))
        }
    });
    Service::builder("holding", "1.0.0").endpoint(endpoint).build().unwrap()
}

async fn overloaded(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["error"], "overloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_inflight_cap_gets_503_and_another_client_does_not() {
    let mut cfg = small_budget();
    cfg.server.read_timeout = Duration::from_millis(300);
    let mut h = Harness::with_demo(cfg).await;
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    h.attach(holding_service(Arc::clone(&gate), started_tx)).await;
    // Two held 64 KiB bodies from 127.0.0.1: its whole 128 KiB cap.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::spawn(h.client.post(h.url("/held")).body(vec![1u8; 64 * 1024]).send()));
        tokio::time::timeout(WAIT, started.recv()).await.unwrap();
    }
    let view: serde_json::Value = h.client.get(h.admin_url("/budget")).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["top_clients"][0], serde_json::json!({"client": "127.0.0.1", "bytes": 128 * KIB}));
    // Over the cap, on another service connection too: buffered or streamed, a body
    // that has waited the read timeout for room gets 503.
    overloaded(h.client.post(h.url("/api/echo")).body(vec![2u8; 1024]).send().await.unwrap()).await;
    overloaded(h.client.post(h.url("/stream/upload")).body(chunked(16 * 1024, 4096)).send().await.unwrap()).await;
    // Another client is under its own cap, and the connection has room.
    let other = legit_client().post(h.url("/api/echo")).body(vec![3u8; 1024]).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    gate.add_permits(2);
    for request in held {
        assert_eq!(request.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    h.assert_budget_released().await;
}
