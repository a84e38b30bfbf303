//! Rules of the HTTP and WebSocket RFCs that clients rely on, checked on the wire: an
//! HTTP/1.1 request without exactly one valid `Host` is a 400 (RFC 9112 §3.2); a response
//! to HEAD carries no content over HTTP/2 either, and keeps the length a GET would have
//! (RFC 9110 §9.3.2); `OPTIONS *` is answered for the server (RFC 9110 §9.3.7); a
//! WebSocket handshake for another version gets 426 naming version 13 (RFC 6455 §4.2.2).
//! Many clients at once, so that a rule is not checked on one lucky connection.

use futures_util::future::join_all;
use http::{Method, Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Sends raw `request` bytes and reads the answer's head (up to its empty line).
async fn raw_http(h: &Harness, request: &[u8]) -> String {
    let mut socket = TcpStream::connect(h.addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(WAIT, socket.read(&mut buf)).await.expect("no answer") {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> &str {
    answer.get(9..12).unwrap_or(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_requests_without_exactly_one_valid_host_get_400() {
    let h = Harness::with_demo(config()).await;
    let refused: [&[u8]; 6] = [
        b"GET /api/hello HTTP/1.1\r\n\r\n",
        b"GET /api/hello HTTP/1.1\r\nhost: a.test\r\nhost: b.test\r\n\r\n",
        b"GET /api/hello HTTP/1.1\r\nhost: a b\r\n\r\n",
        b"GET /api/hello HTTP/1.1\r\nhost: user@a.test\r\n\r\n",
        b"GET /api/hello HTTP/1.1\r\nhost: a.test:port\r\n\r\n",
        b"GET http://a.test/api/hello HTTP/1.1\r\n\r\n",
    ];
    let served: [&[u8]; 3] = [
        b"GET /api/hello HTTP/1.1\r\nhost: a.test\r\nconnection: close\r\n\r\n",
        b"GET http://a.test/api/hello HTTP/1.1\r\nhost: a.test\r\nconnection: close\r\n\r\n",
        b"GET /api/hello HTTP/1.0\r\n\r\n",
    ];
    let cases = (0..4).flat_map(|_| refused.iter().map(|r| (*r, "400")).chain(served.iter().map(|r| (*r, "200"))));
    let answers = join_all(cases.map(|(request, expected)| {
        let h = &h;
        async move { (request, expected, raw_http(h, request).await) }
    }))
    .await;
    for (request, expected, answer) in answers {
        assert_eq!(status_of(&answer), expected, "{:?} got {answer:?}", String::from_utf8_lossy(request));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_over_http2_sends_no_data_and_keeps_the_length() {
    let h = Harness::with_demo(config()).await;
    let tcp = TcpStream::connect(h.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let get = Request::get(h.url("/stream/download?bytes=70000")).body(()).unwrap();
    let (response, _) = client.clone().ready().await.unwrap().send_request(get, true).unwrap();
    let get_length = response.await.unwrap().headers()["content-length"].clone();
    assert_eq!(get_length, "70000");
    let heads = (0..16).map(|i| {
        let client = client.clone();
        let path = if i % 2 == 0 { "/stream/download?bytes=70000" } else { "/api/hello" };
        let url = h.url(path);
        async move {
            let head = Request::builder().method(Method::HEAD).uri(url).body(()).unwrap();
            let (response, _) = client.ready().await.unwrap().send_request(head, true).unwrap();
            let response = response.await.unwrap();
            (path, response.status(), response.headers().get("content-length").cloned(), response.into_body())
        }
    });
    for (path, status, length, body) in join_all(heads).await {
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(body.is_end_stream(), "HEAD {path}: the HEADERS frame must end the stream, no DATA");
        if path.starts_with("/stream/download") {
            assert_eq!(length.as_ref(), Some(&get_length), "HEAD {path}: the length a GET has");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_asterisk_is_answered_for_the_server() {
    let h = Harness::with_demo(config()).await;
    let answers =
        join_all((0..8).map(|_| raw_http(&h, b"OPTIONS * HTTP/1.1\r\nhost: a.test\r\nconnection: close\r\n\r\n")))
            .await;
    for answer in answers {
        assert_eq!(status_of(&answer), "204", "{answer:?}");
    }
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let response = h2.get(h.url("/api/hello")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the gateway goes on serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_handshake_for_another_version_gets_426_naming_13() {
    let h = Harness::with_demo(config()).await;
    let handshake = |version: &str| {
        let version = if version.is_empty() { String::new() } else { format!("sec-websocket-version: {version}\r\n") };
        format!(
            "GET /stream/echo HTTP/1.1\r\nhost: a.test\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
             sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n{version}\r\n"
        )
    };
    let requests: Vec<String> = ["8", "12", "14", ""].iter().map(|v| handshake(v)).collect();
    let answers = join_all(requests.iter().map(|r| raw_http(&h, r.as_bytes()))).await;
    for (request, answer) in requests.iter().zip(answers) {
        assert_eq!(status_of(&answer), "426", "{request:?} got {answer:?}");
        assert!(answer.to_ascii_lowercase().contains("sec-websocket-version: 13\r\n"), "{answer:?}");
    }
    let answer = raw_http(&h, handshake("13").as_bytes()).await;
    assert_eq!(status_of(&answer), "101", "{answer:?}");
}
