//! WebSockets through the gateway, with tokio-tungstenite as the client: the demo's echo
//! (text, binary, a message larger than a stream window; on every transport),
//! fire-and-forget telemetry in and notifications out, a service that closes first, and
//! the WebSocket protections: per-message size (close 1009),
//! idle timeout (close 1000 "Idle timeout"), messages per second (close 1008) and
//! connections per user (503 before the upgrade). Also: a bad upgrade is 400, a client
//! that vanishes cancels the service's handler, a lost service link closes the client
//! with 1011, and after every test the payload budget is idle again. A hand-driven
//! service checks the wire format byte for byte (messages split across frames, the
//! close and END_STREAM), a refusal relayed as an ordinary response, a malformed
//! service message (1011 to the client, Cancel to the service), and that the client's
//! extension offers stay with the gateway.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::codec::Framed;
use weir_gateway::config::{AuthConfig, MountConfig, MountSettings, Profile, Rate};
use weir_gateway::GatewayConfig;
use weir_proto::{
    BodyMode, Cancel, CancelReason, EndpointDescriptor, EndpointKind, Frame, FrameCodec, FrameType, Hello,
    Message as _, RequestHead, ResponseHead, PROTOCOL_VERSION,
};
use weir_service::{Endpoint, HandlerError, Service, WebSocketContext, WsMessage};
use weir_transport::ByteStream;

use crate::common::*;

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

conformance! {
    echo_relays_text_binary_and_large_messages,
    a_service_that_closes_first_closes_the_client_with_its_code,
}

/// A `/stream` streaming mount with the declared defaults changed by `change`.
fn streaming(change: impl FnOnce(&mut MountSettings)) -> GatewayConfig {
    let mut settings = MountSettings::declared_defaults();
    change(&mut settings);
    let mount = MountConfig {
        prefix: "/stream".into(),
        profile: Profile::Streaming,
        root: None,
        auth: AuthConfig::None,
        settings,
    };
    GatewayConfig { mounts: vec![mount], ..config() }
}

async fn connect(h: &Harness, path: &str) -> Client {
    let url = format!("ws://{}{path}", h.addr);
    let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("upgrade answered")
        .expect("upgrade accepted");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// The next message, within [`WAIT`].
async fn next(ws: &mut Client) -> Option<Result<Message, WsError>> {
    tokio::time::timeout(WAIT, ws.next()).await.expect("nothing arrived in time")
}

/// Reads until the close frame; returns it (messages before it are skipped).
async fn close_frame(ws: &mut Client) -> CloseFrame {
    loop {
        match next(ws).await {
            Some(Ok(Message::Close(Some(frame)))) => return frame,
            Some(Ok(Message::Close(None))) => panic!("close without a code"),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

fn assert_close(frame: &CloseFrame, code: u16, reason: &str) {
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (code, reason));
}

/// Expects the gateway's close frame with `code` and `reason`, then (the client having
/// replied, as reading does) the end of the connection.
async fn closed_with(ws: &mut Client, code: u16, reason: &str) {
    assert_close(&close_frame(ws).await, code, reason);
    assert!(next(ws).await.is_none(), "the connection ends after the close handshake");
}

/// Closes normally and waits for the gateway's reply and the end of the connection.
async fn close_normally(mut ws: Client) {
    ws.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "done".into() }))).await.unwrap();
    closed_with(&mut ws, 1000, "done").await;
}

async fn echo_relays_text_binary_and_large_messages(transport: Transport) {
    let h = Harness::with_demo_on(config(), transport).await;
    let mut ws = connect(&h, "/stream/echo").await;
    ws.send(Message::text("hello, weir")).await.unwrap();
    assert_eq!(next(&mut ws).await.unwrap().unwrap(), Message::text("hello, weir"));
    let binary = vec![0u8, 1, 2, 254, 255];
    ws.send(Message::binary(binary.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await.unwrap().unwrap(), Message::binary(binary));
    // Larger than a stream window (256 KiB): the message spans many frames and credits.
    let large: Vec<u8> = (0..700 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(large.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await.unwrap().unwrap(), Message::binary(large));
    close_normally(ws).await;
    h.assert_budget_released().await;
}

#[tokio::test]
async fn telemetry_counts_every_message_and_answers_nothing() {
    let h = Harness::with_demo(config()).await;
    let mut ws = connect(&h, "/stream/telemetry").await;
    for i in 0..50 {
        ws.feed(Message::text(format!("{{\"reading\": {i}}}"))).await.unwrap();
    }
    ws.flush().await.unwrap();
    let stats: serde_json::Value =
        h.client.get(h.url("/stream/telemetry/stats?at_least=50")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["messages"], 50);
    // Nothing came back: the first thing the client reads is the reply to its close.
    ws.send(Message::Close(None)).await.unwrap();
    assert!(matches!(next(&mut ws).await, Some(Ok(Message::Close(_)))));
    assert!(next(&mut ws).await.is_none());
    h.assert_budget_released().await;
}

#[tokio::test]
async fn notifications_arrive_every_second_until_the_client_goes() {
    let h = Harness::with_demo(config()).await;
    let mut ws = connect(&h, "/stream/notifications").await;
    let started = Instant::now();
    let mut arrivals = Vec::new();
    while arrivals.len() < 2 {
        let message = tokio::time::timeout_at((started + Duration::from_secs(3)).into(), ws.next())
            .await
            .expect("two notifications within 3 s")
            .unwrap()
            .unwrap();
        let event: serde_json::Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
        arrivals.push((event["seq"].as_u64().unwrap(), Instant::now()));
    }
    assert_eq!((arrivals[0].0, arrivals[1].0), (1, 2));
    let gap = arrivals[1].1 - arrivals[0].1;
    assert!(gap > Duration::from_millis(500) && gap < Duration::from_millis(1500), "gap {gap:?}");
    // The client goes without a word: the feed stops and everything is released.
    drop(ws);
    h.assert_budget_released().await;
}

async fn a_service_that_closes_first_closes_the_client_with_its_code(transport: Transport) {
    let mut h = Harness::start_on(config(), transport).await;
    let closer = Endpoint::get("/ws/closer").websocket_handler(|mut ws: WebSocketContext| async move {
        let first = ws.next().await.transpose()?;
        assert_eq!(first, Some(WsMessage::Text("bye?".into())));
        ws.close(4000, "done here").await?;
        Ok::<_, HandlerError>(())
    });
    h.attach(Service::builder("closer", "1.0.0").endpoint(closer).build().unwrap()).await;
    let mut ws = connect(&h, "/ws/closer").await;
    ws.send(Message::text("bye?")).await.unwrap();
    closed_with(&mut ws, 4000, "done here").await;
    h.assert_budget_released().await;
}

#[tokio::test]
async fn a_message_over_the_limit_closes_with_1009() {
    let h = Harness::with_demo(streaming(|s| s.ws_max_message_size = 1024)).await;
    let mut ws = connect(&h, "/stream/echo").await;
    ws.send(Message::binary(vec![7u8; 1024])).await.unwrap();
    assert_eq!(next(&mut ws).await.unwrap().unwrap(), Message::binary(vec![7u8; 1024]));
    ws.send(Message::binary(vec![7u8; 1025])).await.unwrap();
    closed_with(&mut ws, 1009, "Message too big").await;
    h.assert_budget_released().await;
    assert_eq!(h.gateway.open_websockets("/stream", "127.0.0.1"), 0);
}

#[tokio::test]
async fn a_silent_client_is_closed_with_1000_idle_timeout() {
    // Wide enough that a busy machine's echo round trip stays well inside it.
    let idle = Duration::from_secs(1);
    let h = Harness::with_demo(streaming(|s| s.ws_idle_timeout = idle)).await;
    let mut ws = connect(&h, "/stream/echo").await;
    // Messages keep it open past the idle timeout...
    for i in 0..6 {
        tokio::time::sleep(idle / 4).await;
        ws.send(Message::text(format!("tick {i}"))).await.unwrap();
        assert_eq!(next(&mut ws).await.unwrap().unwrap(), Message::text(format!("tick {i}")));
    }
    // ...silence closes it.
    let silent_since = Instant::now();
    closed_with(&mut ws, 1000, "Idle timeout").await;
    assert!(silent_since.elapsed() >= idle);
    h.assert_budget_released().await;
}

#[tokio::test]
async fn messages_over_the_rate_limit_close_with_1008() {
    let rate = Rate { count: 5, per: Duration::from_secs(1) };
    let h = Harness::with_demo(streaming(|s| s.ws_rate_limit_messages = Some(rate))).await;
    let mut ws = connect(&h, "/stream/telemetry").await;
    for i in 0..20 {
        ws.feed(Message::text(format!("burst {i}"))).await.unwrap();
    }
    ws.flush().await.unwrap();
    closed_with(&mut ws, 1008, "Message rate limit exceeded").await;
    h.assert_budget_released().await;
}

/// A WebSocket from a client at `local` (another loopback address is another user).
async fn connect_from(h: &Harness, local: &str, path: &str) -> Result<Client, WsError> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse::<SocketAddr>().unwrap()).unwrap();
    let stream = socket.connect(h.addr).await.unwrap();
    let url = format!("ws://{}{path}", h.addr);
    let connecting = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream));
    tokio::time::timeout(WAIT, connecting).await.expect("upgrade answered").map(|(ws, _)| ws)
}

#[tokio::test]
async fn connections_over_the_per_user_limit_get_503_with_retry_after() {
    let h = Harness::with_demo(streaming(|s| s.ws_max_connections_per_user = 2)).await;
    let first = connect_from(&h, "127.0.0.1", "/stream/echo").await.unwrap();
    let second = connect_from(&h, "127.0.0.1", "/stream/echo").await.unwrap();
    assert_eq!(h.gateway.open_websockets("/stream", "127.0.0.1"), 2);
    match connect_from(&h, "127.0.0.1", "/stream/echo").await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
        }
        other => panic!("expected 503, got {other:?}"),
    }
    // Another user (another address) is not affected.
    let other_user = connect_from(&h, "127.0.0.2", "/stream/echo").await.unwrap();
    close_normally(other_user).await;
    close_normally(first).await;
    close_normally(second).await;
    // Every slot is released with the budget window (before it, in the same drop).
    h.assert_budget_released().await;
    assert_eq!(h.gateway.open_websockets("/stream", "127.0.0.1"), 0);
    close_normally(connect_from(&h, "127.0.0.1", "/stream/echo").await.unwrap()).await;
    h.assert_budget_released().await;
}

#[tokio::test]
async fn a_request_that_is_not_a_valid_upgrade_is_400_and_another_version_426() {
    let h = Harness::with_demo(config()).await;
    let plain = h.client.get(h.url("/stream/echo")).send().await.unwrap();
    assert_eq!(plain.status(), StatusCode::BAD_REQUEST);
    let wrong_version = h
        .client
        .get(h.url("/stream/echo"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "8")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_version.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(wrong_version.headers()["sec-websocket-version"], "13");
    let body: serde_json::Value = wrong_version.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_websocket_version");
    h.assert_budget_released().await;
}

/// What the holding handler reports.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Started,
    Cancelled,
}

/// A service whose `/ws/hold` handler reports its start, then waits to be cancelled.
fn holding_service() -> (Service, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let hold = Endpoint::get("/ws/hold").websocket_handler(move |ws: WebSocketContext| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(Seen::Started);
            ws.cancel.cancelled().await;
            let _ = tx.send(Seen::Cancelled);
            Ok::<_, HandlerError>(())
        }
    });
    (Service::builder("holder", "1.0.0").endpoint(hold).build().unwrap(), rx)
}

async fn seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("the handler said nothing").expect("handler gone")
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_service_handler() {
    let mut h = Harness::start(config()).await;
    let (service, mut rx) = holding_service();
    h.attach(service).await;
    let ws = connect(&h, "/ws/hold").await;
    assert_eq!(seen(&mut rx).await, Seen::Started);
    // Gone without a close frame: the socket just closes.
    drop(ws);
    assert_eq!(seen(&mut rx).await, Seen::Cancelled);
    h.assert_budget_released().await;
}

#[tokio::test]
async fn a_lost_service_link_closes_the_client_with_1011() {
    let mut h = Harness::start(config()).await;
    let (service, mut rx) = holding_service();
    h.attach(service).await;
    let mut ws = connect(&h, "/ws/hold").await;
    assert_eq!(seen(&mut rx).await, Seen::Started);
    h.gateway.close_services("test: service link lost");
    closed_with(&mut ws, 1011, "Service unavailable").await;
    h.assert_budget_released().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_shutting_down_closes_its_websockets_with_1001_going_away() {
    const SESSIONS: usize = 8;
    let mut h = Harness::start(config()).await;
    let (service, mut rx) = holding_service();
    h.attach(service).await;
    let mut sockets = Vec::new();
    for _ in 0..SESSIONS {
        sockets.push(connect(&h, "/ws/hold").await);
        assert_eq!(seen(&mut rx).await, Seen::Started);
    }
    h.shut_down();
    // Every client gets the goodbye, not the 1011 of a service link that closed under it.
    let closes = sockets.into_iter().map(|mut ws| async move { closed_with(&mut ws, 1001, "Going away").await });
    futures_util::future::join_all(closes).await;
    for _ in 0..SESSIONS {
        assert_eq!(seen(&mut rx).await, Seen::Cancelled);
    }
}

// ---------------------------------------------------------------------------------------
// The wire format, against a hand-driven service
// ---------------------------------------------------------------------------------------

type Wire = Framed<Box<dyn ByteStream>, FrameCodec>;

/// A service driven frame by frame, registering the WebSocket endpoint `GET /ws/raw`.
async fn raw_service(h: &Harness) -> Wire {
    let mut endpoint = EndpointDescriptor::new("GET", "/ws/raw");
    endpoint.kind = EndpointKind::WebSocket;
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        service: "raw".into(),
        version: "1.0.0".into(),
        region: String::new(),
        instance_id: "raw-1".into(),
        initial_window: 65536,
        token: String::new(),
        endpoints: vec![endpoint],
    };
    let mut wire = Framed::new(h.dial().await, FrameCodec::default());
    wire.send(hello.to_frame(0).unwrap()).await.unwrap();
    assert_eq!(next_frame(&mut wire).await.frame_type, FrameType::Welcome);
    wire
}

/// The next frame that is neither a heartbeat nor a credit grant.
async fn next_frame(wire: &mut Wire) -> Frame {
    loop {
        let frame = tokio::time::timeout(WAIT, wire.next()).await.unwrap().expect("closed").unwrap();
        if !matches!(frame.frame_type, FrameType::Heartbeat | FrameType::Credit) {
            return frame;
        }
    }
}

/// Request stream data up to and including the frame that completes `expected` bytes.
async fn request_bytes(wire: &mut Wire, id: u64, expected: usize) -> (Vec<u8>, bool) {
    let (mut bytes, mut ended) = (Vec::new(), false);
    while bytes.len() < expected {
        let frame = next_frame(wire).await;
        assert_eq!((frame.frame_type, frame.correlation_id), (FrameType::RequestStreamData, id));
        bytes.extend_from_slice(&frame.payload);
        ended = frame.is_end_stream();
    }
    (bytes, ended)
}

/// Starts a client's upgrade to `/ws/raw`; returns it and the stream id the service sees.
async fn upgrade_to_raw(h: &Harness, wire: &mut Wire) -> (tokio::task::JoinHandle<Result<Client, WsError>>, u64) {
    let url = format!("ws://{}/ws/raw", h.addr);
    let client = tokio::spawn(async move { tokio_tungstenite::connect_async(url).await.map(|(ws, _)| ws) });
    let request = next_frame(wire).await;
    assert_eq!(request.frame_type, FrameType::Request);
    let head = RequestHead::decode(request.payload).unwrap();
    assert_eq!((head.method.as_str(), head.body_mode), ("GET", BodyMode::Streamed));
    (client, request.correlation_id)
}

fn response_frame(id: u64, status: u16, mode: BodyMode, body: &'static [u8]) -> Frame {
    let head = ResponseHead { status, headers: vec![], body_mode: mode, body: Bytes::from_static(body) };
    head.to_frame(id).unwrap()
}

fn response_data(id: u64, bytes: &[u8], end: bool) -> Frame {
    Frame::data(FrameType::ResponseStreamData, id, Bytes::copy_from_slice(bytes), end)
}

#[tokio::test]
async fn messages_travel_as_kind_length_payload_across_frames() {
    let h = Harness::start(config()).await;
    let mut wire = raw_service(&h).await;
    let (client, id) = upgrade_to_raw(&h, &mut wire).await;
    wire.send(response_frame(id, 101, BodyMode::Streamed, b"")).await.unwrap();
    let mut ws = tokio::time::timeout(WAIT, client).await.unwrap().unwrap().expect("upgraded");
    // Text "hi" = 01 | 00 00 00 02 | 68 69, split across two frames.
    wire.send(response_data(id, &[0x01, 0x00, 0x00], false)).await.unwrap();
    wire.send(response_data(id, &[0x00, 0x02, b'h', b'i'], false)).await.unwrap();
    assert_eq!(next(&mut ws).await.unwrap().unwrap(), Message::text("hi"));
    ws.send(Message::binary(vec![9u8, 8])).await.unwrap();
    assert_eq!(request_bytes(&mut wire, id, 7).await, (vec![0x02, 0, 0, 0, 2, 9, 8], false));
    // The client's close: 08 | 00 00 00 06 | 03 e8 "done", then END_STREAM.
    ws.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "done".into() }))).await.unwrap();
    let (close, mut ended) = request_bytes(&mut wire, id, 11).await;
    assert_eq!(close, [&[0x08, 0, 0, 0, 6, 0x03, 0xe8][..], b"done"].concat());
    while !ended {
        ended = next_frame(&mut wire).await.is_end_stream();
    }
    // The service answers with its own close and END_STREAM; the stream completes.
    wire.send(response_data(id, &[0x08, 0, 0, 0, 2, 0x03, 0xe8], true)).await.unwrap();
    assert_close(&close_frame(&mut ws).await, 1000, "done");
    h.assert_budget_released().await;
}

#[tokio::test]
async fn the_service_never_sees_the_clients_extension_offers() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let h = Harness::start(config()).await;
    let mut wire = raw_service(&h).await;
    let mut request = format!("ws://{}/ws/raw", h.addr).into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-extensions", http::HeaderValue::from_static("permessage-deflate"));
    let client = tokio::spawn(async move { tokio_tungstenite::connect_async(request).await.map(|_| ()) });
    let frame = next_frame(&mut wire).await;
    let head = RequestHead::decode(frame.payload).unwrap();
    let named = |field: &str| head.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case(field));
    assert!(named("sec-websocket-version"), "the rest of the upgrade goes through: {:?}", head.headers);
    assert!(!named("sec-websocket-extensions"), "the gateway negotiates extensions itself");
    wire.send(response_frame(frame.correlation_id, 403, BodyMode::Buffered, b"")).await.unwrap();
    let refused = tokio::time::timeout(WAIT, client).await.unwrap().unwrap();
    assert!(matches!(refused, Err(WsError::Http(response)) if response.status() == 403));
    h.assert_budget_released().await;
}

#[tokio::test]
async fn a_refusal_is_relayed_as_an_ordinary_response() {
    let h = Harness::start(config()).await;
    let mut wire = raw_service(&h).await;
    let (client, id) = upgrade_to_raw(&h, &mut wire).await;
    wire.send(response_frame(id, 403, BodyMode::Buffered, b"no")).await.unwrap();
    match tokio::time::timeout(WAIT, client).await.unwrap().unwrap() {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            assert_eq!(response.body().as_deref(), Some(&b"no"[..]));
        }
        other => panic!("expected the 403, got {other:?}"),
    }
    // The gateway ends its direction without a message.
    let end = next_frame(&mut wire).await;
    assert_eq!((end.frame_type, end.correlation_id), (FrameType::RequestStreamData, id));
    assert!(end.is_end_stream() && end.payload.is_empty());
    h.assert_budget_released().await;
}

#[tokio::test]
async fn a_malformed_service_message_closes_the_client_with_1011_and_cancels() {
    let h = Harness::start(config()).await;
    let mut wire = raw_service(&h).await;
    let (client, id) = upgrade_to_raw(&h, &mut wire).await;
    wire.send(response_frame(id, 101, BodyMode::Streamed, b"")).await.unwrap();
    let mut ws = tokio::time::timeout(WAIT, client).await.unwrap().unwrap().expect("upgraded");
    wire.send(response_data(id, &[0x03, 0, 0, 0, 0], false)).await.unwrap();
    closed_with(&mut ws, 1011, "Service unavailable").await;
    let cancel = next_frame(&mut wire).await;
    assert_eq!((cancel.frame_type, cancel.correlation_id), (FrameType::Cancel, id));
    assert_eq!(Cancel::decode(cancel.payload).unwrap().reason, CancelReason::HandlerFailed);
    h.assert_budget_released().await;
}

#[tokio::test]
async fn open_websockets_count_against_the_per_ip_connection_limit() {
    let mut cfg = config();
    cfg.server.max_connections_per_ip = 2;
    let h = Harness::with_demo(cfg).await;
    let _first = connect(&h, "/stream/echo").await;
    let _second = connect(&h, "/stream/echo").await;
    let mut third = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read_to_end(&mut third, &mut answer)).await.unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 503"), "{}", String::from_utf8_lossy(&answer));
}
