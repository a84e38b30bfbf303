//! A service never frames the client's connection: a `Content-Length` that disagrees
//! with the body cannot split one response into two on a keep-alive connection, and
//! `Transfer-Encoding`, `Connection` (and the fields it names) stay behind. A streamed
//! body that ends shorter or longer than its declared length fails that response only —
//! the client's connection is closed, never left waiting or desynchronised — and is
//! counted. Raw bytes on real sockets, so nothing is normalised on the way.

use bytes::Bytes;
use futures_util::stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service};

use crate::common::*;

/// The demo's answer to `/api/hello`, the second request on each connection.
const HELLO: &str = r#"{"message":"hello from weir","service":"demo"}"#;

/// What a lying service answers: the injected text is shaped as a whole second response.
const INJECTED: &str = "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\ninjected";

fn liar() -> Service {
    Service::builder("liar", "1.0.0")
        .endpoint(Endpoint::get("/short-length").raw(|_ctx: RawRequestContext| async {
            let body = format!("abc{INJECTED}");
            Ok::<_, HandlerError>(RawResponse::new(200).header("content-length", "3").with_body(body))
        }))
        .endpoint(Endpoint::get("/long-length").raw(|_ctx: RawRequestContext| async {
            Ok::<_, HandlerError>(RawResponse::new(200).header("content-length", "1000").with_body("abc"))
        }))
        .endpoint(Endpoint::get("/hop-by-hop").raw(|_ctx: RawRequestContext| async {
            let response = RawResponse::new(200)
                .header("transfer-encoding", "chunked")
                .header("connection", "close, x-private")
                .header("x-private", "secret")
                .header("keep-alive", "timeout=1")
                .header("upgrade", "h2c")
                .with_body("plain");
            Ok::<_, HandlerError>(response)
        }))
        .endpoint(Endpoint::get("/stream-longer").raw(|_ctx: RawRequestContext| async {
            let chunks = stream::iter(["0123456789", INJECTED].map(|c| Ok::<_, HandlerError>(Bytes::from(c))));
            Ok::<_, HandlerError>(RawResponse::stream(200, "text/plain", chunks).header("content-length", "10"))
        }))
        .endpoint(Endpoint::get("/stream-shorter").raw(|_ctx: RawRequestContext| async {
            let chunks = stream::iter(["0123456789"].map(|c| Ok::<_, HandlerError>(Bytes::from(c))));
            Ok::<_, HandlerError>(RawResponse::stream(200, "text/plain", chunks).header("content-length", "100"))
        }))
        .endpoint(Endpoint::get("/stream-exact").raw(|_ctx: RawRequestContext| async {
            let chunks = stream::iter(["01234", "56789"].map(|c| Ok::<_, HandlerError>(Bytes::from(c))));
            Ok::<_, HandlerError>(RawResponse::stream(200, "text/plain", chunks).header("content-length", "10"))
        }))
        .build()
        .unwrap()
}

/// Two pipelined requests on one keep-alive connection, `first` then `/hello`; returns
/// everything the gateway wrote before it closed (the second asks it to).
async fn pipelined(h: &Harness, first: &str) -> String {
    let mut socket = TcpStream::connect(h.addr).await.unwrap();
    let requests = format!(
        "GET {first} HTTP/1.1\r\nhost: x\r\n\r\nGET /api/hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    );
    socket.write_all(requests.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut answer)).await.expect("closed in time").unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The value of `name` in the first response head of `answer`.
fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then_some(value.trim())
    })
}

async fn harness() -> Harness {
    let mut h = Harness::with_demo(config()).await;
    h.attach(liar()).await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffered_body_is_framed_by_its_own_size_whatever_the_service_declares() {
    let h = harness().await;
    let answer = pipelined(&h, "/short-length").await;
    let body = format!("abc{INJECTED}");
    assert_eq!(header(&answer, "content-length"), Some(body.len().to_string().as_str()), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2 + 1, "two responses, one holding the text: {answer}");
    assert!(answer.ends_with(HELLO), "the second answer is the real one: {answer}");

    let answer = pipelined(&h, "/long-length").await;
    assert_eq!(header(&answer, "content-length"), Some("3"), "{answer}");
    assert!(answer.ends_with(HELLO), "no hang, and the second answer follows: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_of_a_service_stay_behind() {
    let h = harness().await;
    let answer = pipelined(&h, "/hop-by-hop").await;
    for name in ["transfer-encoding", "x-private", "keep-alive", "upgrade"] {
        assert_eq!(header(&answer, name), None, "{name} passed: {answer}");
    }
    assert_eq!(header(&answer, "connection"), None, "{answer}");
    assert_eq!(header(&answer, "content-length"), Some("5"), "{answer}");
    assert!(answer.ends_with(HELLO), "the connection stays usable: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_off_its_declared_length_closes_the_connection_and_is_counted() {
    let h = harness().await;
    // The completing chunk waits for the service's end, so the head may not have left
    // when the tail shows up: the client then sees only the close.
    let answer = pipelined(&h, "/stream-longer").await;
    assert!(answer.is_empty() || header(&answer, "content-length") == Some("10"), "{answer}");
    assert!(!answer.contains("injected"), "bytes past the declared length reached the client: {answer}");
    assert!(!answer.contains(HELLO), "the connection was reused after a cut body: {answer}");

    let answer = pipelined(&h, "/stream-shorter").await;
    assert!(answer.is_empty() || header(&answer, "content-length") == Some("100"), "{answer}");
    assert!(!answer.contains(HELLO), "the connection was reused after a cut body: {answer}");

    let answer = pipelined(&h, "/stream-exact").await;
    assert!(answer.contains("\r\n\r\n0123456789HTTP/1.1 200"), "{answer}");
    assert_eq!(h.gateway.metrics().relay_failures("length_mismatch"), 2);
    h.assert_budget_released().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_a_stream_off_its_length_is_reset_and_the_connection_serves_on() {
    let h = harness().await;
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for path in ["/stream-longer", "/stream-shorter"] {
        let result = async { client.get(h.url(path)).send().await?.bytes().await }.await;
        assert!(result.is_err(), "{path}: a cut body must fail: {result:?}");
    }
    let body = client.get(h.url("/short-length")).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, format!("abc{INJECTED}"));
    let hello = client.get(h.url("/api/hello")).send().await.unwrap();
    assert_eq!(hello.status(), 200);
    assert_eq!(h.gateway.metrics().relay_failures("length_mismatch"), 2);
}
