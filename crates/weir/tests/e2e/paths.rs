//! What a request asks for, made unambiguous before routing: dot segments and escaped
//! dots normalised (a `..` cannot carry a request past a prefix or into a parameter),
//! `%00`, `%2F` and `..` above the root refused with 400, templates with dot segments
//! refused at registration, and transfer codings weir does not implement refused with
//! 501 (`gzip, chunked`, `chunked, chunked`), sent as raw bytes on real sockets.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_proto::{EndpointDescriptor, ErrorCode, Hello, PROTOCOL_VERSION};
use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service};
use weir_transport::{dial, HandshakeError, LinkConfig};

use crate::common::*;

/// A service that answers with what it was asked: `path|param`.
fn mirror() -> Service {
    let answer = |ctx: RawRequestContext| async move {
        let param = ctx.params.first().map(|(_, value)| value.clone()).unwrap_or_default();
        Ok::<_, HandlerError>(RawResponse::text(200, format!("{}|{param}", ctx.path)))
    };
    Service::builder("mirror", "1.0.0")
        .endpoint(Endpoint::get("/api/hello").raw(answer))
        .endpoint(Endpoint::get("/files/{name}").raw(answer))
        .endpoint(Endpoint::get("/tree/{*rest}").raw(answer))
        .build()
        .unwrap()
}

/// Writes `request` as raw bytes on a fresh connection; returns the status and the body.
async fn raw(h: &Harness, request: &str) -> (u16, String) {
    let mut socket = TcpStream::connect(h.addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut answer)).await.expect("answered in time").unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

async fn get(h: &Harness, path: &str) -> (u16, String) {
    raw(h, &format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_are_removed_before_routing_and_parameters_never_hold_them() {
    let mut h = Harness::start(config()).await;
    h.attach(mirror()).await;
    for (path, seen) in [
        ("/files/../api/hello", "/api/hello|"),
        ("/files/%2e%2e/api/hello", "/api/hello|"),
        ("/files/%2E%2e/api/hello", "/api/hello|"),
        ("/files/x/./../%2e/y", "/files/y|y"),
        ("/%61pi/hello", "/api/hello|"),
        ("/tree/a/b/../c", "/tree/a/c|a/c"),
        ("/files/a%20b", "/files/a%20b|a b"),
    ] {
        let (status, body) = get(&h, path).await;
        assert_eq!((status, body.as_str()), (200, seen), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_encoded_slashes_and_climbing_above_the_root_are_400() {
    let mut h = Harness::start(config()).await;
    h.attach(mirror()).await;
    for path in [
        "/files/..%2fapi%2fhello",
        "/files/a%2Fb",
        "/tree/x%2f..%2f..%2fetc",
        "/files/a%00b",
        "/../api/hello",
        "/files/../../api/hello",
        "/%2e%2e/%2e%2e/etc/passwd",
    ] {
        let (status, body) = get(&h, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("bad_request"), "{path}: {body}");
    }
    // HTTP/2 gets the same answers.
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let url = format!("http://{}/files/a%2Fb", h.addr);
    assert_eq!(client.get(url).send().await.unwrap().status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_with_dot_segments_is_refused_at_registration() {
    // `billing` may register under `/billing` only; `/billing/../api/hello` would pass
    // a plain prefix check and land on `/api/hello`.
    let config = with_credential(config(), "billing", Some("billing-token"), &["/billing"]);
    let config = with_credential(config, "demo", Some("demo-token"), &["/api", "/stream"]);
    let mut h = Harness::start_on(config, Transport::Tcp).await;
    h.attach(weir::demo::builder().token("demo-token").build().unwrap()).await;
    for template in ["/billing/../api/hello", "/billing/./x", "/billing/%2e%2e/api/hello", "/billing/%2fx"] {
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            service: "billing".into(),
            version: "1.0.0".into(),
            region: String::new(),
            instance_id: "billing-raw".into(),
            initial_window: 65536,
            token: "billing-token".into(),
            endpoints: vec![EndpointDescriptor::new("GET", template)],
        };
        match dial(h.dial().await, &hello, LinkConfig::default(), WAIT).await {
            Err(HandshakeError::Refused { code, message }) => {
                assert_eq!(code, ErrorCode::RegistrationRefused, "{template}: {message}");
                assert!(message.contains(template), "{template}: {message}");
            }
            other => panic!("{template}: expected a refusal, got {other:?}"),
        }
    }
    let (status, body) = get(&h, "/api/hello").await;
    assert_eq!(status, 200);
    assert!(body.contains("hello from weir"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_codings_other_than_one_chunked_are_501_and_close() {
    let mut h = Harness::start(config()).await;
    h.attach(mirror()).await;
    for coding in ["gzip, chunked", "chunked, chunked", "identity, chunked"] {
        let request = format!(
            "POST /api/hello HTTP/1.1\r\nhost: x\r\ntransfer-encoding: {coding}\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
             GET /api/hello HTTP/1.1\r\nhost: x\r\n\r\n"
        );
        let (status, body) = tokio::time::timeout(Duration::from_secs(5), raw(&h, &request)).await.unwrap();
        assert_eq!(status, 501, "{coding}: {body}");
        assert!(body.contains("not_implemented"), "{coding}: {body}");
        assert!(!body.contains("HTTP/1.1 200"), "{coding}: the pipelined request was served after the 501");
    }
    let request =
        "GET /api/hello HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n0\r\n\r\n";
    assert_eq!(raw(&h, request).await.0, 200, "one chunked coding is fine");
}
