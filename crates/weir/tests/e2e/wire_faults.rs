//! Faults on a service connection close that one connection with a logged reason while
//! every other service keeps serving: garbage on the service port, a failed or stalled
//! TLS handshake, a frame over the maximum size, a response for an unknown stream, and
//! data beyond the credit granted. Frames for a stream that has ended (a second
//! response, data after the end) are not faults: they crossed the end on the wire, and
//! are ignored.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use weir_proto::{
    BodyMode, EndpointDescriptor, ErrorCode, ErrorMessage, Frame, FrameCodec, FrameType, Hello, Message, ResponseHead,
    PROTOCOL_VERSION,
};
use weir_transport::tls::{self, TlsDialer};
use weir_transport::ByteStream;

use crate::common::*;

conformance! {
    frame_over_the_maximum_size_closes_only_that_connection,
    response_for_an_unknown_stream_closes_only_that_connection,
    frames_on_an_ended_stream_are_ignored,
    data_beyond_the_granted_credit_closes_only_that_connection,
}

over_network! {
    garbage_on_the_service_port_closes_only_that_connection,
    a_peer_that_never_completes_its_handshake_is_dropped,
}

async fn assert_demo_still_serves(h: &Harness) {
    let response = h.client.get(h.url("/api/hello")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Reads until the connection closes; `true` if it did within [`WAIT`].
async fn closes(mut io: impl tokio::io::AsyncRead + Unpin) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(WAIT, io.read_to_end(&mut sink)).await.is_ok()
}

/// A raw connection to the service side: a bare socket to the listener for TCP and TLS
/// (so what it sends meets the TLS layer), a session through the broker for RabbitMQ.
async fn raw_peer(h: &Harness) -> Box<dyn ByteStream> {
    match h.transport {
        Transport::RabbitMq => h.dial().await,
        _ => Box::new(TcpStream::connect(h.services_addr()).await.unwrap()),
    }
}

async fn garbage_on_the_service_port_closes_only_that_connection(transport: Transport) {
    let h = Harness::with_demo_on(config(), transport).await;
    let mut socket = raw_peer(&h).await;
    // Over TCP and RabbitMQ a frame header announcing ~1.2 GB; over TLS, not a ClientHello.
    socket.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert!(closes(socket).await, "the gateway kept a garbage connection open");
    assert_demo_still_serves(&h).await;
}

async fn a_peer_that_never_completes_its_handshake_is_dropped(transport: Transport) {
    let mut cfg = config();
    cfg.services.handshake_timeout = Duration::from_millis(200);
    let h = Harness::with_demo_on(cfg, transport).await;
    // Connected, then silent: no Hello (TCP, RabbitMQ), no ClientHello (TLS).
    let socket = raw_peer(&h).await;
    assert!(closes(socket).await, "a silent peer was kept past the handshake timeout");
    assert_demo_still_serves(&h).await;
}

#[tokio::test]
async fn plain_tcp_to_the_tls_port_is_dropped() {
    let h = Harness::with_demo_on(config(), Transport::Tls).await;
    let socket = TcpStream::connect(h.services_addr()).await.unwrap();
    let mut framed = Framed::new(socket, FrameCodec::default());
    framed.send(hello().to_frame(0).unwrap()).await.unwrap();
    assert!(closes(framed.into_inner()).await);
    assert_demo_still_serves(&h).await;
}

#[tokio::test]
async fn a_service_trusting_another_ca_fails_its_handshake() {
    let h = Harness::with_demo_on(config(), Transport::Tls).await;
    let stranger = TestPki::new();
    let config = tls::client_config(stranger.roots(), None).unwrap();
    let dialer = TlsDialer::new(h.services_addr().to_string(), None, config).unwrap();
    let err = dialer.dial().await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    assert_demo_still_serves(&h).await;
}

fn hello() -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        service: "rogue".into(),
        version: "1.0.0".into(),
        region: String::new(),
        instance_id: "rogue-1".into(),
        initial_window: 65536,
        token: String::new(),
        endpoints: vec![EndpointDescriptor::new("GET", "/rogue")],
    }
}

type Wire = Framed<Box<dyn ByteStream>, FrameCodec>;

/// A demo gateway and a hand-driven service `rogue`, registered and serving `GET /rogue`.
async fn rogue(transport: Transport) -> (Harness, Wire) {
    let h = Harness::with_demo_on(config(), transport).await;
    let mut wire = Framed::new(h.dial().await, FrameCodec::default());
    wire.send(hello().to_frame(0).unwrap()).await.unwrap();
    let welcome = next_frame(&mut wire).await;
    assert_eq!(welcome.frame_type, FrameType::Welcome);
    (h, wire)
}

/// The next frame that is not a heartbeat.
async fn next_frame(wire: &mut Wire) -> Frame {
    loop {
        let frame = tokio::time::timeout(WAIT, wire.next()).await.unwrap().expect("closed").unwrap();
        if frame.frame_type != FrameType::Heartbeat {
            return frame;
        }
    }
}

/// A client's `GET /rogue` in flight; dropping it (and the response it resolves to)
/// disconnects the client, which cancels the stream.
type Client = tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>;

/// Sends `GET /rogue` from a client; returns the stream id the rogue receives it on.
async fn routed_request(h: &Harness, wire: &mut Wire) -> (u64, Client) {
    let client = tokio::spawn(h.client.get(h.url("/rogue")).send());
    let request = next_frame(wire).await;
    assert_eq!(request.frame_type, FrameType::Request);
    (request.correlation_id, client)
}

fn response(id: u64, mode: BodyMode) -> Frame {
    let head = ResponseHead { status: 200, headers: vec![], body_mode: mode, body: Bytes::from_static(b"ok") };
    Frame::new(FrameType::Response, id, head.encode().unwrap())
}

fn data(id: u64, bytes: usize, end: bool) -> Frame {
    Frame::data(FrameType::ResponseStreamData, id, Bytes::from(vec![7u8; bytes]), end)
}

/// The rogue gets a ProtocolViolation naming `reason`, its connection closes, its
/// endpoint is gone, and the demo still serves.
async fn assert_closed_for(h: &Harness, mut wire: Wire, reason: &str) {
    let error = loop {
        let frame = next_frame(&mut wire).await;
        if frame.frame_type == FrameType::Error {
            break ErrorMessage::decode(frame.payload).unwrap();
        }
    };
    assert_eq!(error.code, ErrorCode::ProtocolViolation);
    assert!(error.message.contains(reason), "{}", error.message);
    assert!(tokio::time::timeout(WAIT, wire.next()).await.unwrap().is_none(), "connection stayed open");
    assert_demo_still_serves(h).await;
    assert_eq!(h.client.get(h.url("/rogue")).send().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
}

async fn frame_over_the_maximum_size_closes_only_that_connection(transport: Transport) {
    let (h, mut wire) = rogue(transport).await;
    // A Heartbeat header announcing a 16 MiB + 1 byte payload.
    let too_big = (weir_proto::DEFAULT_MAX_FRAME_PAYLOAD as u32 + 1 + 10).to_be_bytes();
    let header = [&too_big[..], &[2, 0, 0, 0, 0, 0, 0, 0, 0, 0]].concat();
    wire.get_mut().write_all(&header).await.unwrap();
    assert_closed_for(&h, wire, "unreadable frame").await;
}

async fn response_for_an_unknown_stream_closes_only_that_connection(transport: Transport) {
    let (h, mut wire) = rogue(transport).await;
    wire.send(response(99, BodyMode::Buffered)).await.unwrap();
    assert_closed_for(&h, wire, "unknown stream 99").await;
}

/// Frames for a stream that has ended cross its end on the wire: a second response
/// or more data after the end are ignored, and the connection keeps serving.
async fn frames_on_an_ended_stream_are_ignored(transport: Transport) {
    let (h, mut wire) = rogue(transport).await;
    let (first, client) = routed_request(&h, &mut wire).await;
    wire.send(response(first, BodyMode::Buffered)).await.unwrap();
    assert_eq!(client.await.unwrap().unwrap().status(), StatusCode::OK);
    let (second, client) = routed_request(&h, &mut wire).await;
    wire.send(response(second, BodyMode::Streamed)).await.unwrap();
    wire.send(data(second, 2, true)).await.unwrap();
    assert_eq!(client.await.unwrap().unwrap().text().await.unwrap(), "\u{7}\u{7}");
    for id in [first, second] {
        wire.send(response(id, BodyMode::Buffered)).await.unwrap();
        wire.send(data(id, 10, false)).await.unwrap();
    }
    // Still registered and serving: the next request is answered over the same link.
    let (third, client) = routed_request(&h, &mut wire).await;
    assert!(third > second);
    wire.send(response(third, BodyMode::Buffered)).await.unwrap();
    assert_eq!(client.await.unwrap().unwrap().text().await.unwrap(), "ok");
}

async fn data_beyond_the_granted_credit_closes_only_that_connection(transport: Transport) {
    let (h, mut wire) = rogue(transport).await;
    // The client stays connected, so the stream is open when the excess data arrives.
    let (id, _client) = routed_request(&h, &mut wire).await;
    wire.send(response(id, BodyMode::Streamed)).await.unwrap();
    let window = h.gateway.config().limits.stream_window as usize;
    wire.send(data(id, window + 1, false)).await.unwrap();
    assert_closed_for(&h, wire, "bytes of credit").await;
}
