//! Clients that take their responses slowly or not at all: HTTP/2 clients that keep
//! every stream's window at zero (each stream holds at most its start window of the
//! service's bytes, is reset once `send_timeout` passes, and its service stream is
//! cancelled, while the connection and other clients go on), and HTTP/1.1 readers that
//! trickle (closed by the minimum response rate while others are served).

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

/// A service whose `/big` download is endless, counts the chunks it yields and reports
/// each stream cancelled, and whose `/small` answers 1 MiB.
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
    let service = Service::builder("big", "1.0.0").endpoint(big).endpoint(small).build().unwrap();
    Download { service, yielded, cancelled }
}

/// An HTTP/2 connection whose client grants no stream any window.
async fn zero_window_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new().initial_window_size(0).handshake(tcp).await.unwrap();
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
        let mut client = zero_window_client(h.addr).await;
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
    let mut client = zero_window_client(h.addr).await;
    let first = open_download(&mut client, h.addr).await;
    assert_eq!(reset_reason(first).await, h2::Reason::CANCEL);
    // The connection was not closed: a new stream on it gets its head.
    let second = open_download(&mut client, h.addr).await;
    assert_eq!(reset_reason(second).await, h2::Reason::CANCEL);
}

/// A reader that takes `rate` bytes a second through a 4 KiB receive buffer, forever
/// (the kernel's buffers hold more than it would read in the test, so even a closed
/// connection keeps it reading).
async fn trickle(addr: SocketAddr, rate: usize) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut socket = socket.connect(addr).await.unwrap();
    socket.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; rate / 10];
    while let Ok(1..) = socket.read(&mut buf).await {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_http1_readers_are_closed_by_the_minimum_rate_while_others_are_served() {
    const READERS: usize = 12;
    let mut cfg = config();
    cfg.server.data_rate_grace = Duration::from_millis(300);
    // The kernel's send buffer takes the first megabytes at once and counts as read, so
    // the minimum is set high above the readers' rate to cut them within the test.
    cfg.server.min_response_data_rate = 10 * 1024 * 1024;
    let mut h = Harness::start(cfg).await;
    let mut download = download_service();
    h.attach(download.service).await;
    let readers: Vec<_> = (0..READERS).map(|_| tokio::spawn(trickle(h.addr, 20 * 1024))).collect();
    for _ in 0..4 {
        assert_eq!(legit_download(&h).await, 64 * CHUNK);
    }
    for _ in 0..READERS {
        let cut = tokio::time::timeout(WAIT, download.cancelled.recv()).await;
        assert!(cut.is_ok(), "20 KiB/s readers were not cut at a 10 MiB/s minimum");
    }
    for reader in readers {
        reader.abort();
    }
    h.assert_budget_released().await;
}
