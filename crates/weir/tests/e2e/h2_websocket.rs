//! WebSockets over HTTP/2 (RFC 8441 extended CONNECT), with the `h2` crate as the client
//! and tokio-tungstenite speaking WebSocket over the stream: the demo's echo through
//! several WebSockets multiplexed on one connection, large messages included, with the
//! budget idle again afterwards; an open WebSocket keeps its connection from being
//! closed as idle, and the connection is closed as idle once it ends; and the refusals:
//! an extended CONNECT to an endpoint that is not a WebSocket (400), for another
//! protocol (501), and a plain HTTP/2 GET to a WebSocket endpoint (400); and
//! permessage-deflate negotiated on an extended CONNECT.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use h2::client::SendRequest;
use http::{Method, Request, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::common::*;

/// One HTTP/2 stream as a byte stream: what the client's WebSocket runs over.
struct H2Io {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    /// Received bytes not read yet.
    unread: Bytes,
}

impl AsyncRead for H2Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.unread.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    this.unread = data;
                }
                Some(Err(err)) => return Poll::Ready(Err(io::Error::other(err))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.send.reserve_capacity(data.len());
        loop {
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(0)) => continue,
                Some(Ok(n)) => {
                    let n = n.min(data.len());
                    this.send.send_data(Bytes::copy_from_slice(&data[..n]), false).map_err(io::Error::other)?;
                    return Poll::Ready(Ok(n));
                }
                Some(Err(err)) => return Poll::Ready(Err(io::Error::other(err))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = self.get_mut().send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}

/// An HTTP/2 connection to the gateway once its SETTINGS allow extended CONNECT, and
/// the task driving it (it ends when the connection closes).
async fn h2_client(h: &Harness) -> (SendRequest<Bytes>, JoinHandle<()>) {
    let tcp = TcpStream::connect(h.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let client = client.ready().await.unwrap();
    // The gateway's SETTINGS arrive on their own time; an extended CONNECT must wait for them.
    until(|| client.is_extended_connect_protocol_enabled()).await;
    (client, driver)
}

/// Sends `method path`, with `:protocol` set when `protocol` is; returns the status and
/// the stream.
async fn open(
    client: &mut SendRequest<Bytes>,
    h: &Harness,
    method: Method,
    path: &str,
    protocol: Option<&str>,
) -> (StatusCode, H2Io) {
    let mut request = Request::builder().method(method).uri(format!("http://{}{path}", h.addr));
    request = request.header("sec-websocket-version", "13");
    if let Some(protocol) = protocol {
        request = request.extension(h2::ext::Protocol::from(protocol));
    }
    *client = client.clone().ready().await.unwrap();
    let (response, send) = client.send_request(request.body(()).unwrap(), false).unwrap();
    let response = tokio::time::timeout(WAIT, response).await.expect("no answer").unwrap();
    let status = response.status();
    (status, H2Io { send, recv: response.into_body(), unread: Bytes::new() })
}

/// A client WebSocket over an extended CONNECT to `path`.
async fn websocket(client: &mut SendRequest<Bytes>, h: &Harness, path: &str) -> WebSocketStream<H2Io> {
    let (status, io) = open(client, h, Method::CONNECT, path, Some("websocket")).await;
    assert_eq!(status, StatusCode::OK, "the extended CONNECT was refused");
    WebSocketStream::from_raw_socket(io, Role::Client, None).await
}

async fn next_message(ws: &mut WebSocketStream<H2Io>) -> Message {
    tokio::time::timeout(WAIT, ws.next()).await.expect("no message").expect("closed").expect("a WebSocket error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_over_http2_echo_many_at_once_on_one_connection() {
    let h = Harness::with_demo(config()).await;
    let (mut client, _driver) = h2_client(&h).await;
    let mut sockets = Vec::new();
    for _ in 0..8 {
        sockets.push(websocket(&mut client, &h, "/stream/echo").await);
    }
    let sessions = sockets.into_iter().enumerate().map(|(i, mut ws)| async move {
        for round in 0..20 {
            let text = format!("socket {i} round {round}");
            ws.send(Message::text(text.clone())).await.unwrap();
            assert_eq!(next_message(&mut ws).await, Message::text(text));
        }
        // Larger than every window on the way: flow control on both hops.
        let large: Vec<u8> = (0..600_000u32).map(|n| (n % 251) as u8).collect();
        ws.send(Message::binary(large.clone())).await.unwrap();
        assert_eq!(next_message(&mut ws).await, Message::binary(large));
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = tokio::time::timeout(WAIT, ws.next()).await.expect("no close") {}
    });
    futures_util::future::join_all(sessions).await;
    h.assert_budget_released().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_websocket_keeps_its_connection_open_past_idle_timeout() {
    let mut cfg = config();
    cfg.server.idle_timeout = Duration::from_millis(300);
    let h = Harness::with_demo(cfg).await;
    let (mut client, driver) = h2_client(&h).await;
    let mut ws = websocket(&mut client, &h, "/stream/echo").await;
    // An idle connection is told GOAWAY at idle_timeout and dropped a second later (the
    // goodbye time) unless something is in flight: wait that out with nothing sent; only
    // the open WebSocket keeps the connection.
    tokio::time::sleep(Duration::from_millis(300 + 1000 + 700)).await;
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("still here"));
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = tokio::time::timeout(WAIT, ws.next()).await.expect("no close") {}
    drop((ws, client));
    // Once it ended, the connection is idle: closed at idle_timeout.
    tokio::time::timeout(WAIT, driver).await.expect("the idle connection stayed open").unwrap();
    h.assert_budget_released().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_connects_that_are_not_websockets_are_refused() {
    let h = Harness::with_demo(config()).await;
    let (mut client, _driver) = h2_client(&h).await;
    let (status, _) = open(&mut client, &h, Method::CONNECT, "/api/hello", Some("websocket")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an extended CONNECT to a plain endpoint");
    let (status, _) = open(&mut client, &h, Method::CONNECT, "/stream/echo", Some("webtransport")).await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "an extended CONNECT for another protocol");
    let (status, _) = open(&mut client, &h, Method::GET, "/stream/echo", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a plain GET to a WebSocket endpoint");
    // The connection serves on after the refusals.
    let mut ws = websocket(&mut client, &h, "/stream/echo").await;
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_websocket_negotiates_permessage_deflate() {
    use crate::ws_compression::{streaming, DeflateClient, BINARY, TEXT};

    let h = Harness::with_demo(streaming(|s| s.ws_compression = true)).await;
    let (client, _driver) = h2_client(&h).await;
    let offer = "permessage-deflate; client_no_context_takeover";
    let request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{}/stream/echo", h.addr))
        .header("sec-websocket-version", "13")
        .header("sec-websocket-extensions", offer)
        .extension(h2::ext::Protocol::from("websocket"))
        .body(())
        .unwrap();
    let mut client = client.ready().await.unwrap();
    let (response, send) = client.send_request(request, false).unwrap();
    let response = tokio::time::timeout(WAIT, response).await.expect("no answer").unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["sec-websocket-extensions"], offer, "the offer accepted as it was");
    let io = H2Io { send, recv: response.into_body(), unread: Bytes::new() };
    let mut ws = DeflateClient::new(io, Vec::new(), offer);
    let text = "{\"over\":\"http/2\",\"compressed\":true}".repeat(20);
    ws.send(TEXT, text.as_bytes(), 1, true).await;
    let echo = ws.message().await.expect("the echo");
    assert!(echo.compressed && echo.payload == text.as_bytes());
    let binary: Vec<u8> = (0..200_000u32).map(|n| (n % 7) as u8).collect();
    ws.send(BINARY, &binary, 3, true).await;
    let echo = ws.message().await.expect("the echo");
    assert!(echo.compressed && echo.payload == binary);
    ws.close().await;
    h.assert_budget_released().await;
}
