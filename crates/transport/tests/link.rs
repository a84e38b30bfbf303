//! The multiplexed link on its own, over the in-memory pipe: requests and streamed bodies
//! in both directions, credit flow control (a stalled stream holds at most its window and
//! does not stall the others), cancellation both ways, and every protocol violation
//! closing only the offending link with a reason.

use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, FramedWrite};
use weir_proto::*;
use weir_transport::*;

const WAIT: Duration = Duration::from_secs(5);

fn hello(window: u32) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        service: "svc".into(),
        version: "1.0.0".into(),
        region: String::new(),
        instance_id: "i-1".into(),
        initial_window: window,
        token: String::new(),
        endpoints: vec![EndpointDescriptor::new("POST", "/x")],
    }
}

fn welcome(window: u32) -> Welcome {
    Welcome { protocol_version: PROTOCOL_VERSION, initial_window: window, heartbeat_interval: Duration::from_secs(5) }
}

/// A gateway link and a service link joined by an in-memory pipe.
async fn pair(service_window: u32, gateway_window: u32) -> (Link, Link, mpsc::UnboundedReceiver<LinkEvent>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let h = hello(service_window);
    let dialing = tokio::spawn(async move { dial(a, &h, LinkConfig::default(), WAIT).await });
    let pending = accept_hello(b, DEFAULT_MAX_FRAME_PAYLOAD, WAIT).await.unwrap();
    let (gateway, _events) = pending.welcome(&welcome(gateway_window), LinkConfig::default()).await.unwrap();
    let (service, service_events, _) = dialing.await.unwrap().unwrap();
    (gateway, service, service_events)
}

fn request(mode: BodyMode) -> RequestHead {
    RequestHead {
        method: "POST".into(),
        path: "/x".into(),
        query: String::new(),
        template: "/x".into(),
        params: vec![],
        headers: vec![],
        body_mode: mode,
        body: Bytes::new(),
        chunk_size: None,
    }
}

fn response(mode: BodyMode, body: &'static [u8]) -> ResponseHead {
    ResponseHead { status: 200, headers: vec![], body_mode: mode, body: Bytes::from_static(body) }
}

async fn next_request(events: &mut mpsc::UnboundedReceiver<LinkEvent>) -> IncomingRequest {
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await.expect("no request arrived").expect("link closed") {
            LinkEvent::Request(request) => return request,
            _ => continue,
        }
    }
}

#[tokio::test]
async fn streamed_request_and_response_round_trip() {
    let (gateway, _service, mut events) = pair(64 * 1024, 64 * 1024).await;
    let mut call = gateway.call(request(BodyMode::Streamed), 64 * 1024).await.unwrap();
    let mut body = call.body.take().unwrap();
    let sender = tokio::spawn(async move {
        for i in 0..100u8 {
            body.send(Bytes::from(vec![i; 10_000])).await.unwrap();
        }
        body.finish().await.unwrap();
    });
    let incoming = next_request(&mut events).await;
    let mut data = incoming.body.unwrap();
    let mut received = 0usize;
    while let Some(chunk) = data.next_chunk().await {
        received += chunk.unwrap().len();
    }
    assert_eq!(received, 1_000_000);
    sender.await.unwrap();
    let mut out = incoming.responder.send(response(BodyMode::Streamed, b"")).await.unwrap().unwrap();
    out.send(Bytes::from_static(b"hello ")).await.unwrap();
    out.send(Bytes::from_static(b"world")).await.unwrap();
    out.finish().await.unwrap();
    let answer = tokio::time::timeout(WAIT, call.response).await.unwrap().unwrap().unwrap();
    let mut body = answer.body.unwrap();
    let mut all = Vec::new();
    while let Some(chunk) = body.next_chunk().await {
        all.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(all, b"hello world");
    call.handle.complete();
    assert_eq!(gateway.open_streams(), 0);
}

#[tokio::test]
async fn a_stalled_stream_holds_one_window_and_does_not_stall_others() {
    let window = 32 * 1024;
    let (gateway, _service, mut events) = pair(window, window).await;
    let mut stalled = gateway.call(request(BodyMode::Streamed), window).await.unwrap();
    let mut stalled_body = stalled.body.take().unwrap();
    let _stalled_request = next_request(&mut events).await; // never read
    stalled_body.send(Bytes::from(vec![0; window as usize])).await.unwrap();
    // The window is used up: one more byte must wait for credit that never comes.
    let blocked = tokio::time::timeout(Duration::from_millis(200), stalled_body.send(Bytes::from_static(b"x"))).await;
    assert!(blocked.is_err(), "sender went past its window");
    // Another stream on the same link still flows.
    let mut other = gateway.call(request(BodyMode::Buffered), window).await.unwrap();
    let incoming = next_request(&mut events).await;
    incoming.responder.send(response(BodyMode::Buffered, b"ok")).await.unwrap();
    let answer = tokio::time::timeout(WAIT, &mut other.response).await.unwrap().unwrap().unwrap();
    assert_eq!(&answer.head.body[..], b"ok");
    other.handle.complete();
}

#[tokio::test]
async fn cancel_from_the_gateway_fires_the_service_token_and_fails_its_body() {
    let (gateway, _service, mut events) = pair(1024, 1024).await;
    let call = gateway.call(request(BodyMode::Streamed), 1024).await.unwrap();
    let incoming = next_request(&mut events).await;
    call.handle.cancel(CancelReason::Timeout);
    tokio::time::timeout(WAIT, incoming.cancel.cancelled()).await.unwrap();
    let mut body = incoming.body.unwrap();
    assert_eq!(body.next_chunk().await, Some(Err(StreamError::Cancelled(CancelReason::Timeout))));
}

#[tokio::test]
async fn dropped_responder_fails_the_call_at_once() {
    let (gateway, _service, mut events) = pair(1024, 1024).await;
    let call = gateway.call(request(BodyMode::Buffered), 1024).await.unwrap();
    drop(next_request(&mut events).await);
    let result = tokio::time::timeout(WAIT, call.response).await.unwrap().unwrap();
    assert_eq!(result.unwrap_err(), StreamError::Cancelled(CancelReason::HandlerFailed));
}

#[tokio::test]
async fn closing_the_service_fails_pending_calls() {
    let (gateway, service, mut events) = pair(1024, 1024).await;
    let call = gateway.call(request(BodyMode::Buffered), 1024).await.unwrap();
    let _incoming = next_request(&mut events).await;
    service.close("test");
    let result = tokio::time::timeout(WAIT, call.response).await.unwrap().unwrap();
    assert!(matches!(result, Err(StreamError::ConnectionLost(_))), "{result:?}");
    tokio::time::timeout(WAIT, gateway.closed()).await.unwrap();
}

/// A gateway link whose peer is a raw frame writer, to send what a real SDK never would.
async fn gateway_with_raw_peer() -> (Link, Framed<DuplexStream, FrameCodec>) {
    let (gateway, raw, _events) = configured_gateway_with_raw_peer(LinkConfig::default()).await;
    (gateway, raw)
}

/// [`gateway_with_raw_peer`] with the gateway link's `config`, and its events.
async fn configured_gateway_with_raw_peer(
    config: LinkConfig,
) -> (Link, Framed<DuplexStream, FrameCodec>, mpsc::UnboundedReceiver<LinkEvent>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let mut raw = Framed::new(a, FrameCodec::default());
    raw.send(hello(1024).to_frame(0).unwrap()).await.unwrap();
    let pending = accept_hello(b, 1024 * 1024, WAIT).await.unwrap();
    let (gateway, events) = pending.welcome(&welcome(1024), config).await.unwrap();
    (gateway, raw, events)
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<LinkEvent>) -> LinkEvent {
    tokio::time::timeout(WAIT, events.recv()).await.expect("no event arrived").expect("link closed")
}

/// An EndpointsUpdate declaring more endpoints than `max_update_endpoints` is refused
/// from its count alone: its body, here not even present, is never decoded, and the link
/// stays open. Within the limit, updates are decoded (and a malformed one closes the link).
#[tokio::test]
async fn an_update_declaring_too_many_endpoints_is_refused_undecoded() {
    let config = LinkConfig { max_update_endpoints: 4, ..LinkConfig::default() };
    let (gateway, mut raw, mut events) = configured_gateway_with_raw_peer(config).await;
    let _welcome = raw.next().await;
    // 65,535 endpoints declared, none sent: decoding would fail as truncated.
    let forged = Frame::new(FrameType::EndpointsUpdate, 0, Bytes::from_static(b"\xff\xff"));
    raw.send(forged).await.unwrap();
    let event = next_event(&mut events).await;
    assert!(matches!(event, LinkEvent::EndpointsOverLimit { declared: 65_535 }), "{event:?}");
    let endpoints = vec![EndpointDescriptor::new("GET", "/a"); 4];
    raw.send(EndpointsUpdate { endpoints }.to_frame(0).unwrap()).await.unwrap();
    let event = next_event(&mut events).await;
    assert!(matches!(&event, LinkEvent::EndpointsUpdate(u) if u.endpoints.len() == 4), "{event:?}");
    assert!(!gateway.is_closed());
    // Within the limit, the same lie is decoded and found out.
    raw.send(Frame::new(FrameType::EndpointsUpdate, 0, Bytes::from_static(b"\x00\x04"))).await.unwrap();
    assert_closed_with(&gateway, "malformed").await;
}

async fn assert_closed_with(link: &Link, needle: &str) {
    tokio::time::timeout(WAIT, link.closed()).await.expect("link stayed open");
    let reason = link.close_reason().unwrap();
    assert!(reason.contains(needle), "reason {reason:?} lacks {needle:?}");
}

#[tokio::test]
async fn violations_close_only_the_offending_link() {
    let (healthy, _service, mut events) = pair(1024, 1024).await;
    let cases: Vec<(&str, Vec<Frame>)> = vec![
        ("unknown stream", vec![response(BodyMode::Buffered, b"").to_frame(7).unwrap()]),
        ("malformed", vec![Frame::new(FrameType::Response, 1, Bytes::from_static(b"\x00"))]),
        ("unexpected", vec![Frame::new(FrameType::Request, 1, request(BodyMode::Buffered).encode().unwrap())]),
        (
            "credit",
            vec![
                response(BodyMode::Streamed, b"").to_frame(1).unwrap(),
                Frame::data(FrameType::ResponseStreamData, 1, Bytes::from(vec![0; 2048]), false),
            ],
        ),
        (
            "second response",
            vec![
                response(BodyMode::Streamed, b"").to_frame(1).unwrap(),
                response(BodyMode::Streamed, b"").to_frame(1).unwrap(),
            ],
        ),
    ];
    for (needle, frames) in cases {
        let (gateway, mut raw) = gateway_with_raw_peer().await;
        let _welcome = raw.next().await;
        let _call = gateway.call(request(BodyMode::Buffered), 1024).await.unwrap();
        for frame in frames {
            raw.send(frame).await.unwrap();
        }
        assert_closed_with(&gateway, needle).await;
    }
    // The healthy link never noticed.
    let mut call = healthy.call(request(BodyMode::Buffered), 1024).await.unwrap();
    next_request(&mut events).await.responder.send(response(BodyMode::Buffered, b"fine")).await.unwrap();
    assert!(tokio::time::timeout(WAIT, &mut call.response).await.unwrap().unwrap().is_ok());
    call.handle.complete();
}

#[tokio::test]
async fn late_frames_for_ended_streams_are_ignored_however_late() {
    let (gateway, mut raw) = gateway_with_raw_peer().await;
    let _welcome = raw.next().await;
    // Stream 1 completes normally; stream 2 is cancelled by the gateway (a timeout).
    let mut first = gateway.call(request(BodyMode::Buffered), 1024).await.unwrap();
    raw.send(response(BodyMode::Buffered, b"one").to_frame(1).unwrap()).await.unwrap();
    assert!(tokio::time::timeout(WAIT, &mut first.response).await.unwrap().unwrap().is_ok());
    first.handle.complete();
    let second = gateway.call(request(BodyMode::Buffered), 1024).await.unwrap();
    second.handle.cancel(CancelReason::Timeout);
    // The peer, unaware, answers both again, streams bodies and grants credit.
    for id in [1, 2] {
        raw.send(response(BodyMode::Streamed, b"").to_frame(id).unwrap()).await.unwrap();
        raw.send(Frame::data(FrameType::ResponseStreamData, id, Bytes::from(vec![0; 4096]), false)).await.unwrap();
        raw.send(Frame::data(FrameType::ResponseStreamData, id, Bytes::new(), true)).await.unwrap();
        raw.send((Credit { increment: 1 << 20 }).to_frame(id).unwrap()).await.unwrap();
        raw.send((Cancel { reason: CancelReason::HandlerFailed }).to_frame(id).unwrap()).await.unwrap();
    }
    // A third stream still works: nothing above closed the link.
    let mut third = gateway.call(request(BodyMode::Buffered), 1024).await.unwrap();
    assert_eq!(third.handle.id(), 3);
    raw.send(response(BodyMode::Buffered, b"three").to_frame(3).unwrap()).await.unwrap();
    let answer = tokio::time::timeout(WAIT, &mut third.response).await.unwrap().unwrap().unwrap();
    assert_eq!(&answer.head.body[..], b"three");
    third.handle.complete();
    assert!(!gateway.is_closed(), "{:?}", gateway.close_reason());
}

#[tokio::test]
async fn garbage_and_oversized_frames_close_the_link() {
    for (bytes, needle) in [
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), "exceeds the maximum"),
        (vec![0, 0, 0, 10, 99, 0, 0, 0, 0, 0, 0, 0, 0, 1], "unknown frame type"),
        (vec![0xff, 0xff, 0xff, 0xff], "exceeds the maximum"),
    ] {
        let (gateway, raw) = gateway_with_raw_peer().await;
        let mut io = raw.into_inner();
        let mut welcome = [0u8; 64];
        let _ = io.read(&mut welcome).await.unwrap();
        io.write_all(&bytes).await.unwrap();
        assert_closed_with(&gateway, needle).await;
    }
}

#[tokio::test]
async fn reused_stream_id_closes_the_service_side() {
    let (service, mut writer, _events) = service_with_raw_gateway().await;
    writer.send(request(BodyMode::Buffered).to_frame(5).unwrap()).await.unwrap();
    writer.send(request(BodyMode::Buffered).to_frame(5).unwrap()).await.unwrap();
    assert_closed_with(&service, "reuses stream id").await;
}

/// A service link whose peer is a raw frame writer posing as the gateway.
async fn service_with_raw_gateway() -> (Link, FramedWrite<DuplexStream, FrameCodec>, mpsc::UnboundedReceiver<LinkEvent>)
{
    let (a, b) = tokio::io::duplex(64 * 1024);
    let h = hello(1024);
    let dialing = tokio::spawn(async move { dial(a, &h, LinkConfig::default(), WAIT).await });
    let mut raw = Framed::new(b, FrameCodec::default());
    let _hello = raw.next().await;
    raw.send(welcome(1024).to_frame(0).unwrap()).await.unwrap();
    let (service, events, _) = dialing.await.unwrap().unwrap();
    (service, FramedWrite::new(raw.into_inner(), FrameCodec::default()), events)
}

#[tokio::test]
async fn data_after_the_end_of_a_tracked_stream_closes_the_service_side() {
    let (service, mut writer, _events) = service_with_raw_gateway().await;
    writer.send(request(BodyMode::Streamed).to_frame(1).unwrap()).await.unwrap();
    writer.send(Frame::data(FrameType::RequestStreamData, 1, Bytes::from_static(b"a"), true)).await.unwrap();
    writer.send(Frame::data(FrameType::RequestStreamData, 1, Bytes::from_static(b"b"), true)).await.unwrap();
    assert_closed_with(&service, "after end of stream").await;
}

use futures_util::StreamExt;

#[tokio::test]
async fn a_cancel_right_after_the_request_never_overtakes_its_head() {
    let (gateway, _service, mut events) = pair(1024, 1024).await;
    for _ in 0..50 {
        let call = gateway.call(request(BodyMode::Buffered), 1024).await.unwrap();
        call.handle.cancel(CancelReason::ClientDisconnected);
    }
    let mut call = gateway.call(request(BodyMode::Buffered), 1024).await.unwrap();
    loop {
        let incoming = next_request(&mut events).await;
        if incoming.responder.id() != call.handle.id() {
            continue;
        }
        incoming.responder.send(response(BodyMode::Buffered, b"alive")).await.unwrap();
        break;
    }
    let answer = tokio::time::timeout(WAIT, &mut call.response).await.unwrap().unwrap().unwrap();
    assert_eq!(&answer.head.body[..], b"alive");
    call.handle.complete();
    assert!(!gateway.is_closed());
}

#[tokio::test]
async fn the_link_records_when_the_peer_last_spoke_and_its_heartbeats() {
    let (gateway, service, _events) = pair(64 * 1024, 64 * 1024).await;
    let before = service.last_received();
    assert_eq!(service.peer_heartbeats(), 0);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let heartbeat = Heartbeat::new(HealthStatus::Healthy, 0, 0.0);
    gateway.send_heartbeat(&heartbeat).unwrap();
    tokio::time::timeout(WAIT, async {
        while service.peer_heartbeats() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the heartbeat never arrived");
    assert!(service.last_received() > before);
}

#[tokio::test]
async fn a_request_read_with_the_welcome_is_delivered_without_further_bytes() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let h = hello(1024);
    let dialing = tokio::spawn(async move { dial(a, &h, LinkConfig::default(), WAIT).await });
    let mut raw = Framed::new(b, FrameCodec::default());
    let _hello = raw.next().await;
    // The Welcome and a request in one write: the handshake reads both at once.
    let mut wire = bytes::BytesMut::new();
    let mut codec = FrameCodec::default();
    tokio_util::codec::Encoder::encode(&mut codec, welcome(1024).to_frame(0).unwrap(), &mut wire).unwrap();
    tokio_util::codec::Encoder::encode(&mut codec, request(BodyMode::Buffered).to_frame(1).unwrap(), &mut wire)
        .unwrap();
    raw.get_mut().write_all(&wire).await.unwrap();
    let (_service, mut events, _) = dialing.await.unwrap().unwrap();
    // Nothing more is sent: the request must come out of what was already read.
    let incoming = next_request(&mut events).await;
    assert_eq!(incoming.responder.id(), 1);
}

/// A held gateway link opened while its writer is busy with the Welcome: a request sent
/// right after must go out at once, not wait for the next control frame (no heartbeat
/// comes here, so a request left behind would never arrive). Many rounds on two worker
/// threads, so the writer and the opener interleave every way they can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_right_after_the_welcome_goes_out_at_once() {
    for round in 0..300 {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let h = hello(1024);
        let dialing = tokio::spawn(async move { dial(a, &h, LinkConfig::default(), WAIT).await });
        let pending = accept_hello(b, DEFAULT_MAX_FRAME_PAYLOAD, WAIT).await.unwrap();
        let (gateway, _events) = pending.welcome(&welcome(1024), LinkConfig::default()).await.unwrap();
        let call = gateway.call(request(BodyMode::Buffered), 1024).await.unwrap();
        let (_service, mut events, _) = dialing.await.unwrap().unwrap();
        let incoming = tokio::time::timeout(WAIT, next_request(&mut events)).await;
        let incoming = incoming.unwrap_or_else(|_| panic!("round {round}: the request never went out"));
        incoming.responder.send(response(BodyMode::Buffered, b"ok")).await.unwrap();
        let answered = tokio::time::timeout(WAIT, call.response).await.unwrap().unwrap().unwrap();
        assert_eq!(&answered.head.body[..], b"ok");
    }
}
