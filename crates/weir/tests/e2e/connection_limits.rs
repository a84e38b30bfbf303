//! How long a client connection may live without doing anything, and how many may be
//! open, crossed over real sockets: an HTTP/2 preface and nothing else, or half a header
//! block, closed at `header_timeout`; idle HTTP/2 (GOAWAY) and HTTP/1.1 connections
//! closed at `idle_timeout`; an HTTP/2 peer that stops answering pings closed with its
//! request in flight; an HTTP/2 request body that never comes answered 408; at
//! `max_connections`, idle connections shed so that every legitimate client is served,
//! and a 503 for the newcomer when every connection is busy; an HTTP/2 client over the
//! per-IP limit refused in HTTP/2 (GOAWAY `ENHANCE_YOUR_CALM`), not with an HTTP/1.1 503.
//!
//! The HTTP/2 attackers speak raw frames (a preface, SETTINGS, a HEADERS block of static
//! HPACK entries), since no client library sends half of anything.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use weir_gateway::config::ServerConfig;

use crate::common::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// How much later than its bound a close may come: one goodbye (1 s) plus scheduling.
const SLACK: Duration = Duration::from_millis(2500);

/// One HTTP/2 frame's bytes.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut bytes = vec![len[1], len[2], len[3], kind, flags];
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// A GET header block in HPACK: static `:method GET` and `:scheme http`, then `:path`
/// and `:authority` as literals with an indexed name.
fn get_block(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, u8::try_from(path.len()).unwrap()];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 0x01, b'x']);
    block
}

/// A connection that has sent the preface and its (empty) SETTINGS.
async fn h2_connect(h: &Harness) -> TcpStream {
    let mut socket = TcpStream::connect(h.addr).await.unwrap();
    socket.write_all(PREFACE).await.unwrap();
    socket.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    socket
}

/// Opens stream 1 with a whole GET for `path`.
async fn h2_get(socket: &mut TcpStream, path: &str) {
    socket.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &get_block(path))).await.unwrap();
}

/// The frames the gateway sent until it closed (kind, stream, when), answering its
/// pings if `answer_pings`. A reset counts as a close.
async fn frames_until_close(socket: &mut TcpStream, answer_pings: bool) -> Vec<(u8, u32, Instant)> {
    let mut frames = Vec::new();
    let read = async {
        loop {
            let mut head = [0u8; 9];
            if socket.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            if socket.read_exact(&mut payload).await.is_err() {
                return;
            }
            frames.push((head[3], stream, Instant::now()));
            if answer_pings && head[3] == PING && head[4] & ACK == 0 {
                let _ = socket.write_all(&frame(PING, ACK, 0, &payload)).await;
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("the gateway kept the connection open");
    frames
}

/// Reads until the peer closes or resets; returns what arrived.
async fn read_to_close(socket: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while let Ok(n @ 1..) = socket.read(&mut buf).await {
            answer.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("the gateway kept the connection open");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The demo behind a gateway whose `[server]` settings `set` changes.
async fn demo_with(set: impl FnOnce(&mut ServerConfig)) -> Harness {
    let mut cfg = config();
    set(&mut cfg.server);
    Harness::with_demo(cfg).await
}

/// Whether the gateway answered stream 1.
fn answered(frames: &[(u8, u32, Instant)]) -> bool {
    frames.iter().any(|(kind, stream, _)| *kind == HEADERS && *stream == 1)
}

fn kinds(frames: &[(u8, u32, Instant)]) -> Vec<u8> {
    frames.iter().map(|(kind, _, _)| *kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_preface_and_nothing_else_is_closed_with_goaway_at_header_timeout() {
    let h = demo_with(|s| s.header_timeout = Duration::from_millis(300)).await;
    let attackers = (0..8).map(|_| async {
        let started = Instant::now();
        let mut socket = TcpStream::connect(h.addr).await.unwrap();
        socket.write_all(PREFACE).await.unwrap();
        let frames = frames_until_close(&mut socket, false).await;
        (started.elapsed(), kinds(&frames))
    });
    for (lived, kinds) in join_all(attackers).await {
        assert!(lived >= Duration::from_millis(250), "closed before header_timeout: {lived:?}");
        assert!(lived < Duration::from_millis(300) + SLACK, "closed late: {lived:?}");
        assert!(kinds.contains(&GOAWAY), "no GOAWAY: {kinds:?}");
    }
    until(|| h.gateway.connections().open() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_an_h2_header_block_is_closed_at_header_timeout() {
    let h = demo_with(|s| s.header_timeout = Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut socket = h2_connect(&h).await;
    let block = get_block("/api/hello");
    // No END_HEADERS: a CONTINUATION should follow, and never does.
    socket.write_all(&frame(HEADERS, END_STREAM, 1, &block[..4])).await.unwrap();
    let frames = frames_until_close(&mut socket, true).await;
    let lived = started.elapsed();
    assert!(lived < Duration::from_millis(300) + SLACK, "closed late: {lived:?}");
    assert!(!answered(&frames), "answered a half head");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2_connection_gets_goaway_at_idle_timeout() {
    let h = demo_with(|s| s.idle_timeout = Duration::from_millis(600)).await;
    let mut socket = h2_connect(&h).await;
    h2_get(&mut socket, "/healthz").await;
    let frames = frames_until_close(&mut socket, true).await;
    let closed = Instant::now();
    let answered = frames.iter().find(|(kind, stream, _)| *kind == HEADERS && *stream == 1).expect("answered").2;
    let goaway = frames.iter().find(|(kind, _, _)| *kind == GOAWAY).expect("GOAWAY before the close").2;
    let idle = goaway - answered;
    assert!(idle >= Duration::from_millis(550), "GOAWAY before idle_timeout: {idle:?}");
    assert!(closed - answered < Duration::from_millis(600) + SLACK, "closed late: {:?}", closed - answered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http1_connection_is_closed_at_idle_timeout() {
    let h = demo_with(|s| s.idle_timeout = Duration::from_millis(600)).await;
    let mut socket = TcpStream::connect(h.addr).await.unwrap();
    socket.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut head = [0u8; 12];
    socket.read_exact(&mut head).await.unwrap();
    let answered = Instant::now();
    let rest = read_to_close(&mut socket).await;
    let idle = answered.elapsed();
    assert!(rest.contains("{\"status\":\"ok\"}"), "{rest}");
    assert!(idle >= Duration::from_millis(550), "closed before idle_timeout: {idle:?}");
    assert!(idle < Duration::from_millis(600) + SLACK, "closed late (header_timeout is 10 s): {idle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_peer_that_stops_answering_pings_is_closed_with_its_request_in_flight() {
    let h = demo_with(|s| s.idle_timeout = Duration::from_millis(600)).await;
    let started = Instant::now();
    let mut socket = h2_connect(&h).await;
    h2_get(&mut socket, "/api/slow?ms=4000").await;
    let frames = frames_until_close(&mut socket, false).await;
    let lived = started.elapsed();
    assert!(kinds(&frames).contains(&PING), "never pinged: {:?}", kinds(&frames));
    assert!(lived < Duration::from_secs(3), "kept until the response (4 s): {lived:?}");
    assert!(!answered(&frames), "answered without the pings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_request_body_that_never_comes_gets_408() {
    let h = demo_with(|s| s.read_timeout = Duration::from_millis(400)).await;
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let never = futures_util::stream::pending::<Result<Vec<u8>, std::io::Error>>();
    let started = Instant::now();
    let send = client
        .post(h.url("/api/echo"))
        .header("content-type", "text/plain")
        .header("content-length", "10")
        .body(reqwest::Body::wrap_stream(never))
        .send();
    let response = tokio::time::timeout(WAIT, send).await.expect("never answered").unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(started.elapsed() >= Duration::from_millis(350));
    h.assert_budget_released().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_connections_idle_connections_are_shed_for_legitimate_clients() {
    const CAP: u32 = 8;
    let h = demo_with(|s| s.max_connections = Some(CAP)).await;
    let mut attackers = Vec::new();
    for _ in 0..CAP {
        let mut socket = TcpStream::connect(h.addr).await.unwrap();
        socket.write_all(PREFACE).await.unwrap();
        // The gateway's SETTINGS: it speaks HTTP/2 on this connection, so a shed says GOAWAY.
        let mut head = [0u8; 9];
        socket.read_exact(&mut head).await.unwrap();
        assert_eq!(head[3], SETTINGS);
        let mut payload = vec![0u8; usize::from(head[2]) | usize::from(head[1]) << 8];
        socket.read_exact(&mut payload).await.unwrap();
        attackers.push(socket);
    }
    until(|| h.gateway.connections().open() == CAP as usize).await;
    let started = Instant::now();
    for _round in 0..3 {
        let clients = (0..CAP).map(|_| async {
            let response = h.client.get(h.url("/api/hello")).send().await.expect("served");
            (response.status(), response.text().await.unwrap_or_default())
        });
        for (status, body) in join_all(clients).await {
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
    for mut attacker in attackers {
        let frames = frames_until_close(&mut attacker, true).await;
        assert!(kinds(&frames).contains(&GOAWAY), "shed without GOAWAY: {:?}", kinds(&frames));
    }
    assert!(started.elapsed() < Duration::from_secs(5), "the attackers lived to header_timeout (10 s)");
    let metrics = h.client.get(h.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("# TYPE weir_client_connections gauge"), "{metrics}");
    assert!(metrics.lines().any(|line| line.starts_with("weir_client_connections ")), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_connections_with_none_idle_the_newcomer_gets_503() {
    const CAP: usize = 4;
    let h = demo_with(|s| s.max_connections = Some(CAP as u32)).await;
    let mut busy = Vec::new();
    for _ in 0..CAP {
        let mut socket = TcpStream::connect(h.addr).await.unwrap();
        socket.write_all(b"GET /api/slow?ms=1500 HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        busy.push(socket);
    }
    until(|| h.gateway.registry().list().len() == CAP).await;
    let mut newcomer = TcpStream::connect(h.addr).await.unwrap();
    let answer = read_to_close(&mut newcomer).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"overloaded\""), "{answer}");
    assert_eq!(h.gateway.metrics().errors("overloaded"), 1);
    for mut socket in busy {
        let mut head = [0u8; 12];
        socket.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200", "a busy connection was cut");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_over_the_per_ip_limit_is_refused_in_http2() {
    const LIMIT: usize = 3;
    let h = demo_with(|s| s.max_connections_per_ip = LIMIT as u32).await;
    let mut held = Vec::new();
    for _ in 0..LIMIT {
        let mut socket = h2_connect(&h).await;
        h2_get(&mut socket, "/api/slow?ms=3000").await;
        held.push(socket);
    }
    until(|| h.gateway.registry().list().len() == LIMIT).await;
    // Real HTTP/2 clients, several at once: each sees a GOAWAY, not an HTTP/1.1 answer.
    let refused = (0..4).map(|_| async {
        let tcp = TcpStream::connect(h.addr).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        let error = connection.await.expect_err("the connection was refused");
        drop(client);
        error
    });
    for error in join_all(refused).await {
        assert!(error.is_go_away(), "{error:?}");
        assert_eq!(error.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{error:?}");
    }
    // An HTTP/1.1 client over the limit still gets its 503.
    let mut plain = TcpStream::connect(h.addr).await.unwrap();
    plain.write_all(b"GET /api/hello HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let answer = read_to_close(&mut plain).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert_eq!(h.gateway.metrics().errors("overloaded"), 5);
}
