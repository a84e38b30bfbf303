//! Clients that take their responses slowly or not at all: HTTP/2 clients that keep
//! every stream's window at zero (each stream holds at most its start window of the
//! service's bytes, is reset once `send_timeout` passes, and its service stream is
//! cancelled, while the connection and other clients go on), and HTTP/1.1 readers that
//! trickle (closed by the minimum response rate, judged by what they acknowledged, while
//! readers above it and other clients are served).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service};

use crate::common::*;

/// Size of the chunks the test download yields.
const CHUNK: usize = 16 * 1024;

/// What the `/big` service saw: chunks its downloads yielded, streams cancelled.
struct Download {
    service: Service,
    yielded: Arc<AtomicU64>,
    cancelled: mpsc::UnboundedReceiver<()>,
}

/// Length of the `/one` response, a body in one piece.
const ONE: usize = 32 * 1024;

/// A service whose `/big` download is endless, counts the chunks it yields and reports
/// each stream cancelled, whose `/small` answers 1 MiB and whose `/one` answers [`ONE`]
/// bytes in a single piece.
fn download_service() -> Download {
    let (tx, cancelled) = mpsc::unbounded_channel();
    let yielded = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&yielded);
    let big = Endpoint::get("/big").raw(move |ctx: RawRequestContext| {
        let (tx, counter) = (tx.clone(), Arc::clone(&counter));
        async move {
            let cancel = ctx.cancel.clone();
            tokio::spawn(async move {
                cancel.cancelled().await;
                let _ = tx.send(());
            });
            let chunk = Bytes::from(vec![7u8; CHUNK]);
            let chunks = futures_util::stream::repeat_with(move || {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok::<_, std::io::Error>(chunk.clone())
            });
            Ok::<_, HandlerError>(RawResponse::stream(200, "application/octet-stream", chunks))
        }
    });
    let small = Endpoint::get("/small").raw(|_ctx: RawRequestContext| async move {
        let chunks =
            futures_util::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![1u8; CHUNK]))));
        Ok::<_, HandlerError>(RawResponse::stream(200, "application/octet-stream", chunks))
    });
    let one = Endpoint::get("/one")
        .raw(|_ctx: RawRequestContext| async move { Ok::<_, HandlerError>(RawResponse::text(200, "x".repeat(ONE))) });
    let service = Service::builder("big", "1.0.0").endpoint(big).endpoint(small).endpoint(one).build().unwrap();
    Download { service, yielded, cancelled }
}

/// An HTTP/2 connection whose client grants each stream `window` bytes and never more.
async fn stingy_client(addr: SocketAddr, window: u32) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new().initial_window_size(window).handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Opens `/big` on `client`; returns the response body once the head arrived.
async fn open_download(client: &mut h2::client::SendRequest<Bytes>, addr: SocketAddr) -> h2::RecvStream {
    let request = http::Request::get(format!("http://{addr}/big")).body(()).unwrap();
    let (response, _) = client.clone().ready().await.unwrap().send_request(request, true).unwrap();
    let response = tokio::time::timeout(WAIT, response).await.expect("no response head").unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body()
}

/// The server's reset of a zero-window stream, or a failure if data or the end came.
async fn reset_reason(mut body: h2::RecvStream) -> h2::Reason {
    match tokio::time::timeout(WAIT, body.data()).await.expect("the stalled stream was never reset") {
        Some(Err(err)) => err.reason().expect("a stream reset"),
        other => panic!("expected a reset, got {other:?}"),
    }
}

async fn legit_download(h: &Harness) -> usize {
    let response = h.client.get(h.url("/small")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.bytes().await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_window_streams_hold_one_start_window_are_reset_at_send_timeout_and_cancelled() {
    const CONNECTIONS: usize = 4;
    const STREAMS: usize = 24;
    let send_timeout = Duration::from_millis(600);
    let mut cfg = config();
    cfg.server.send_timeout = send_timeout;
    let mut h = Harness::start(cfg).await;
    let mut download = download_service();
    let service = h.attach(download.service).await;

    let started = Instant::now();
    let mut bodies = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut client = stingy_client(h.addr, 0).await;
        for _ in 0..STREAMS {
            bodies.push(open_download(&mut client, h.addr).await);
        }
    }
    let total = CONNECTIONS * STREAMS;
    // Meanwhile, another client is served in full.
    assert_eq!(legit_download(&h).await, 64 * CHUNK);

    let resets = futures_util::future::join_all(bodies.into_iter().map(reset_reason)).await;
    assert!(resets.iter().all(|r| *r == h2::Reason::CANCEL), "{resets:?}");
    assert!(started.elapsed() >= send_timeout, "reset before send_timeout: {:?}", started.elapsed());
    for _ in 0..total {
        tokio::time::timeout(WAIT, download.cancelled.recv()).await.expect("a service stream not cancelled");
    }
    // Each stream's service yielded its start window (one chunk) and one more waiting
    // for credit: with a full window per stream it would have been 16 or more.
    let yielded = download.yielded.load(Ordering::Relaxed);
    assert!(yielded <= 2 * total as u64 + 2, "{yielded} chunks yielded for {total} zero-window streams");
    let stalled = h.gateway.metrics().relay_failures("client_stalled");
    assert_eq!(stalled, total as u64, "streams counted as stalled");
    until(|| service.in_flight() == 0).await;
    let listed: serde_json::Value = h.client.get(h.admin_url("/requests")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "still registered: {listed}");
    h.assert_budget_released().await;
    assert_eq!(h.gateway.service_connections(), 1, "only streams end, not the service link");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_window_connection_keeps_serving_new_streams_after_its_stalled_ones_are_reset() {
    let mut cfg = config();
    cfg.server.send_timeout = Duration::from_millis(300);
    let mut h = Harness::start(cfg).await;
    let download = download_service();
    h.attach(download.service).await;
    let mut client = stingy_client(h.addr, 0).await;
    let first = open_download(&mut client, h.addr).await;
    assert_eq!(reset_reason(first).await, h2::Reason::CANCEL);
    // The connection was not closed: a new stream on it gets its head.
    let second = open_download(&mut client, h.addr).await;
    assert_eq!(reset_reason(second).await, h2::Reason::CANCEL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responses_last_chunk_is_watched_until_its_client_takes_all_of_it() {
    let send_timeout = Duration::from_millis(400);
    let mut cfg = config();
    cfg.server.send_timeout = send_timeout;
    let mut h = Harness::start(cfg).await;
    h.attach(download_service().service).await;
    // The client grants each stream one byte of window and never more: the whole body
    // is handed to h2 at once, and only its first byte can leave.
    let client = stingy_client(h.addr, 1).await;
    let mut bodies = Vec::new();
    for _ in 0..8 {
        let request = http::Request::get(format!("http://{}/one", h.addr)).body(()).unwrap();
        let (response, _) = client.clone().ready().await.unwrap().send_request(request, true).unwrap();
        let response = tokio::time::timeout(WAIT, response).await.expect("no response head").unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        bodies.push(response.into_body());
    }
    let started = Instant::now();
    for mut body in bodies {
        let mut got = 0;
        let reason = loop {
            match tokio::time::timeout(WAIT, body.data()).await.expect("the held stream was never reset") {
                Some(Ok(data)) => got += data.len(),
                Some(Err(err)) => break err.reason().expect("a stream reset"),
                None => panic!("the stream ended after {got} of {ONE} bytes on a one-byte window"),
            }
        };
        assert_eq!(reason, h2::Reason::CANCEL);
        assert!(got < ONE, "{got} bytes through a one-byte window");
    }
    assert!(started.elapsed() < WAIT);
    assert_eq!(h.gateway.metrics().relay_failures("client_stalled"), 8);
}

/// A reader of `/big` that takes `rate` bytes a second through a 4 KiB receive buffer
/// until it has `total` bytes or the connection ends; returns the bytes it got.
async fn read_at(addr: SocketAddr, rate: usize, total: usize) -> usize {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut socket = socket.connect(addr).await.unwrap();
    socket.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; rate / 20];
    let mut got = 0;
    while got < total {
        match socket.read(&mut buf).await {
            Ok(n @ 1..) => got += n,
            _ => break,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got.min(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_readers_under_the_minimum_rate_are_closed_and_those_above_it_are_served() {
    const SLOW: usize = 12;
    const STEADY: usize = 4;
    // Well beyond what the kernels on both sides buffer (the unsent low-water mark and a
    // 4 KiB receive buffer): a reader only gets this far if the gateway keeps sending.
    const STEADY_TOTAL: usize = 96 * 1024;
    let mut cfg = config();
    // The steady readers free the socket's low-water half (16 KiB) only about once a
    // second, so writes wake that seldom: judged by what the socket took rather than by
    // what they acknowledged, they would look stopped for the whole grace period.
    cfg.server.data_rate_grace = Duration::from_millis(300);
    cfg.server.min_response_data_rate = 6 * 1024;
    let mut h = Harness::start(cfg).await;
    let mut download = download_service();
    h.attach(download.service).await;
    let slow: Vec<_> = (0..SLOW).map(|_| tokio::spawn(read_at(h.addr, 1024, usize::MAX))).collect();
    let steady: Vec<_> = (0..STEADY).map(|_| tokio::spawn(read_at(h.addr, 16 * 1024, STEADY_TOTAL))).collect();
    for _ in 0..4 {
        assert_eq!(legit_download(&h).await, 64 * CHUNK);
    }
    for _ in 0..SLOW {
        let cut = tokio::time::timeout(WAIT, download.cancelled.recv()).await;
        assert!(cut.is_ok(), "1 KiB/s readers were not cut at a 6 KiB/s minimum");
    }
    for reader in steady {
        let got = tokio::time::timeout(WAIT, reader).await.expect("a steady reader stalled").unwrap();
        assert_eq!(got, STEADY_TOTAL, "a reader above the minimum rate was cut");
    }
    for reader in slow {
        reader.abort();
    }
    h.assert_budget_released().await;
}
