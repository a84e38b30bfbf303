//! Every client-side protection, each limit crossed over real sockets: connections
//! per IP (503), slow request heads (408 then close), trickling bodies (408 from the
//! minimum rate before the per-read timeout), whole-upload timeout, a client that stops
//! reading (closed at `send_timeout`, the service's stream cancelled), a trickling
//! reader (minimum response rate), request rate limits (429 with `Retry-After`),
//! bandwidth shaping within 10%, and 500 slowloris connections that do not stop
//! another client from being served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use weir_gateway::config::{AuthConfig, MountConfig, MountSettings, Profile, Rate};
use weir_gateway::GatewayConfig;
use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service};

use crate::common::*;

fn mount(prefix: &str, profile: Profile, settings: MountSettings) -> MountConfig {
    MountConfig { prefix: prefix.into(), profile, root: None, auth: AuthConfig::None, settings }
}

/// Reads until the peer closes; returns what arrived.
async fn read_all(socket: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, socket.read_to_end(&mut answer)).await.expect("connection stayed open");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn connections_over_the_per_ip_limit_get_503_and_close() {
    let mut cfg = config();
    cfg.server.max_connections_per_ip = 3;
    let h = Harness::with_demo(cfg).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut socket = TcpStream::connect(h.addr).await.unwrap();
        // A completed request proves the connection was accepted and counted.
        socket.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 12];
        socket.read_exact(&mut buf).await.unwrap();
        held.push(socket);
    }
    let mut extra = TcpStream::connect(h.addr).await.unwrap();
    let answer = read_all(&mut extra).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"));
    drop(held.pop());
    // The freed slot is usable again (the gateway notices the close asynchronously).
    let response = tokio::time::timeout(WAIT, async {
        loop {
            match h.client.get(h.url("/api/hello")).send().await {
                Ok(response) if response.status() == StatusCode::OK => return response,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_request_head_that_never_completes_gets_408_and_an_idle_connection_just_closes() {
    let mut cfg = config();
    cfg.server.header_timeout = Duration::from_millis(300);
    let h = Harness::with_demo(cfg).await;
    let mut partial = TcpStream::connect(h.addr).await.unwrap();
    partial.write_all(b"GET /api/hello HTTP/1.1\r\nhost: x\r\nx-slow: ").await.unwrap();
    let answer = read_all(&mut partial).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    let mut idle = TcpStream::connect(h.addr).await.unwrap();
    assert_eq!(read_all(&mut idle).await, "");
}

#[tokio::test]
async fn a_trickling_body_is_cut_by_the_minimum_rate_before_the_read_timeout() {
    let mut cfg = config();
    cfg.server.read_timeout = Duration::from_secs(5);
    cfg.server.data_rate_grace = Duration::from_millis(300);
    cfg.server.min_request_data_rate = 1000;
    let h = Harness::with_demo(cfg).await;
    let socket = TcpStream::connect(h.addr).await.unwrap();
    let (mut read_half, mut write_half) = socket.into_split();
    write_half.write_all(b"POST /stream/upload HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n").await.unwrap();
    let started = Instant::now();
    let trickle = async move {
        for _ in 0..100 {
            if write_half.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::future::pending::<()>().await;
    };
    let read = async move {
        let mut answer = Vec::new();
        let _ = read_half.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    let answer = tokio::time::timeout(WAIT, async {
        tokio::select! {
            answer = read => answer,
            _ = trickle => unreachable!("the trickle never ends by itself"),
        }
    })
    .await
    .expect("no answer");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    h.assert_budget_released().await;
}

#[tokio::test]
async fn an_upload_past_upload_timeout_gets_408() {
    let mut settings = MountSettings::unlimited(&GatewayConfig::default().limits);
    settings.upload_timeout = Duration::from_millis(400);
    let cfg = GatewayConfig { mounts: vec![mount("/", Profile::Business, settings)], ..config() };
    let h = Harness::with_demo(cfg).await;
    let mut socket = TcpStream::connect(h.addr).await.unwrap();
    socket.write_all(b"POST /stream/upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n").await.unwrap();
    let chunk = [b"2000\r\n".as_slice(), &[1u8; 0x2000], b"\r\n"].concat();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        if socket.write_all(&chunk).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = read_all(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    h.assert_budget_released().await;
}

/// A service whose `/big` download reports when its stream is cancelled.
pub(crate) fn reporting_download(total: usize) -> (Service, mpsc::UnboundedReceiver<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let endpoint = Endpoint::get("/big").raw(move |ctx: RawRequestContext| {
        let tx = tx.clone();
        async move {
            let cancel = ctx.cancel.clone();
            tokio::spawn(async move {
                cancel.cancelled().await;
                let _ = tx.send(());
            });
            let chunks = futures_util::stream::iter(
                (0..total / 65536).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 65536]))),
            );
            Ok::<_, HandlerError>(RawResponse::stream(200, "application/octet-stream", chunks))
        }
    });
    (Service::builder("big", "1.0.0").endpoint(endpoint).build().unwrap(), rx)
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_at_send_timeout_and_the_stream_cancelled() {
    let mut cfg = config();
    cfg.server.send_timeout = Duration::from_millis(300);
    let mut h = Harness::start(cfg).await;
    let (service, mut cancelled) = reporting_download(512 * 1024 * 1024);
    h.attach(service).await;
    let mut socket = TcpStream::connect(h.addr).await.unwrap();
    socket.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    // Never read: the gateway's writes stall once the socket buffers are full.
    tokio::time::timeout(WAIT, cancelled.recv()).await.expect("stream never cancelled");
    assert_eq!(h.gateway.service_connections(), 1, "only the stream ends, not the service link");
}

#[tokio::test]
async fn a_trickling_reader_is_closed_by_the_minimum_response_rate() {
    let mut cfg = config();
    cfg.server.send_timeout = Duration::from_secs(30);
    cfg.server.data_rate_grace = Duration::from_millis(300);
    cfg.server.min_response_data_rate = 10 * 1024 * 1024;
    let mut h = Harness::start(cfg).await;
    let (service, mut cancelled) = reporting_download(512 * 1024 * 1024);
    h.attach(service).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut socket = socket.connect(h.addr).await.unwrap();
    socket.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let reader = async {
        let mut buf = [0u8; 1024];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    let outcome = tokio::time::timeout(WAIT, async {
        tokio::select! {
            _ = reader => {},
            _ = cancelled.recv() => {},
        }
    })
    .await;
    assert!(outcome.is_ok(), "a 100 KB/s reader was not cut at a 10 MiB/s minimum");
}

#[tokio::test]
async fn requests_over_the_rate_limit_get_429_with_retry_after() {
    let mut settings = MountSettings::declared_defaults();
    settings.rate_limit_requests = Some(Rate { count: 5, per: Duration::from_secs(60) });
    let cfg = GatewayConfig { mounts: vec![mount("/api", Profile::Business, settings)], ..config() };
    let h = Harness::with_demo(cfg).await;
    for _ in 0..5 {
        assert_eq!(h.client.get(h.url("/api/hello")).send().await.unwrap().status(), StatusCode::OK);
    }
    let limited = h.client.get(h.url("/api/hello")).send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry), "retry-after {retry}");
    assert_eq!(limited.json::<serde_json::Value>().await.unwrap()["error"], "too_many_requests");
}

fn shaped(rate: u64) -> GatewayConfig {
    let mut settings = MountSettings::declared_defaults();
    settings.rate_limit_bandwidth = Some(rate);
    settings.max_upload_size = 64 * 1024 * 1024;
    GatewayConfig { mounts: vec![mount("/stream", Profile::Streaming, settings)], ..config() }
}

fn assert_within_ten_percent(took: Duration, expected: Duration) {
    let ratio = took.as_secs_f64() / expected.as_secs_f64();
    assert!((0.9..=1.1).contains(&ratio), "took {took:?}, expected {expected:?}");
}

#[tokio::test]
async fn bandwidth_limit_shapes_a_download_to_its_rate() {
    let rate = 2 * 1024 * 1024;
    let h = Harness::with_demo(shaped(rate)).await;
    let started = Instant::now();
    let body = h
        .client
        .get(h.url(&format!("/stream/download?bytes={}", 3 * rate)))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len() as u64, 3 * rate);
    assert_within_ten_percent(started.elapsed(), Duration::from_secs(3));
}

#[tokio::test]
async fn bandwidth_limit_shapes_an_upload_to_its_rate() {
    let rate = 2 * 1024 * 1024;
    let h = Harness::with_demo(shaped(rate)).await;
    let started = Instant::now();
    let response = h.client.post(h.url("/stream/upload")).body(vec![3u8; 3 * rate as usize]).send().await.unwrap();
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["bytes"], 3 * rate);
    assert_within_ten_percent(started.elapsed(), Duration::from_secs(3));
    h.assert_budget_released().await;
}

async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn still_serving_while_500_slowloris_connections_are_held() {
    let mut cfg = config();
    cfg.server.max_connections_per_ip = 1000;
    cfg.server.header_timeout = Duration::from_secs(30);
    let h = Harness::with_demo(cfg).await;
    let mut attackers = Vec::with_capacity(500);
    for _ in 0..500 {
        let mut socket = connect_from([127, 0, 0, 1], h.addr).await;
        socket.write_all(b"GET /api/hello HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        attackers.push(socket);
    }
    let started = Instant::now();
    for _ in 0..20 {
        let mut socket = connect_from([127, 0, 0, 2], h.addr).await;
        socket.write_all(b"GET /api/hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
        let answer = read_all(&mut socket).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "20 requests took {:?}", started.elapsed());
    drop(attackers);
}

/// A client still sending a body the gateway refused reads the refusal: the gateway
/// closes such a connection lingering (it reads and discards what keeps arriving), so
/// the kernel never answers the unread bytes with a reset that would destroy the 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_sending_a_refused_body_reads_its_413() {
    let mut cfg = config();
    cfg.limits.max_upload_size = 1024;
    let h = Harness::with_demo(cfg).await;
    let body_len = 2 * 1024 * 1024;
    let mut socket = TcpStream::connect(h.addr).await.unwrap();
    let head = format!("POST /api/echo HTTP/1.1\r\nhost: x\r\ncontent-length: {body_len}\r\n\r\n");
    socket.write_all(head.as_bytes()).await.unwrap();
    // The whole body, after the gateway has refused it: every write must still succeed.
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..body_len / chunk.len() {
        socket.write_all(&chunk).await.expect("the gateway reset a connection it had answered");
    }
    let answer = read_all(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

/// The lingering close is bounded: a client that keeps sending a refused body past what
/// the gateway discards (4 MiB) has its connection closed, not read for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_body_is_discarded_only_up_to_the_linger_bound() {
    let mut cfg = config();
    cfg.limits.max_upload_size = 1024;
    let h = Harness::with_demo(cfg).await;
    let body_len: usize = 256 * 1024 * 1024;
    let mut socket = TcpStream::connect(h.addr).await.unwrap();
    let head = format!("POST /api/echo HTTP/1.1\r\nhost: x\r\ncontent-length: {body_len}\r\n\r\n");
    socket.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    let closed = tokio::time::timeout(WAIT, async {
        while sent < body_len {
            if socket.write_all(&chunk).await.is_err() {
                return true;
            }
            sent += chunk.len();
        }
        false
    })
    .await
    .expect("the gateway kept reading a refused body");
    assert!(closed, "the gateway read a 256 MiB refused body to its end");
    assert!(sent < 64 * 1024 * 1024, "{sent} bytes accepted after the refusal");
}
