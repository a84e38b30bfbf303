//! WebSocket handlers as the gateway sees them, over a real in-memory link: the SDK
//! accepts with a streamed 101, delivers framed messages however the frames split them,
//! sends the handler's messages framed, and closes what the handler left open (the
//! client's code echoed, or 1011 with the error's detail) before ending the stream. A
//! request without a streamed body is refused with 400.

mod common;

use bytes::{Bytes, BytesMut};
use common::{connect_quiet, get, within};
use weir_proto::websocket::{WsDecoder, WsMessage};
use weir_proto::BodyMode;
use weir_service::{Endpoint, HandlerError, Service, WebSocketContext};
use weir_transport::{DataReceiver, DataSender};

fn service() -> Service {
    Service::builder("ws", "1.0.0")
        .endpoint(Endpoint::get("/echo").websocket_handler(|mut ws: WebSocketContext| async move {
            while let Some(message) = ws.next().await {
                match message? {
                    WsMessage::Close { .. } => break,
                    data => ws.send(data).await?,
                }
            }
            Ok(())
        }))
        .endpoint(Endpoint::get("/fail").websocket_handler(|mut ws: WebSocketContext| async move {
            let _ = ws.next().await;
            Err(HandlerError::internal("the database is down"))
        }))
        .build()
        .unwrap()
}

/// The service's messages until the end of its direction.
async fn messages(mut body: DataReceiver) -> Vec<WsMessage> {
    let mut decoder = WsDecoder::new(1024);
    let mut out = Vec::new();
    while let Some(chunk) = within(body.next_chunk()).await {
        decoder.push(&chunk.unwrap());
        while let Some(message) = decoder.next_message().unwrap() {
            out.push(message);
        }
    }
    decoder.finish().unwrap();
    out
}

/// Opens a WebSocket stream on `path`; returns our sender and the service's messages.
async fn open(gateway: &common::Gateway, path: &str) -> (DataSender, DataReceiver) {
    let mut head = get(path);
    head.body_mode = BodyMode::Streamed;
    let mut call = gateway.call(head).await;
    let response = within(call.response).await.unwrap().unwrap();
    assert_eq!((response.head.status, response.head.body_mode), (101, BodyMode::Streamed));
    call.handle.complete();
    (call.body.take().unwrap(), response.body.unwrap())
}

#[tokio::test]
async fn echo_sees_messages_split_across_frames_and_echoes_the_close() {
    let service = service();
    let (gateway, _session) = connect_quiet(&service).await;
    let (mut to_service, from_service) = open(&gateway, "/echo").await;
    let mut wire = BytesMut::new();
    for message in [
        WsMessage::Text("hello".into()),
        WsMessage::Binary(Bytes::from_static(&[0, 1, 2])),
        WsMessage::close(4001, "bye"),
    ] {
        wire.extend_from_slice(&message.encode().unwrap());
    }
    // Three bytes a frame: no frame boundary matches a message boundary.
    for piece in wire.chunks(3) {
        to_service.send(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    to_service.finish().await.unwrap();
    assert_eq!(
        messages(from_service).await,
        [
            WsMessage::Text("hello".into()),
            WsMessage::Binary(Bytes::from_static(&[0, 1, 2])),
            WsMessage::close(4001, "bye"),
        ]
    );
}

#[tokio::test]
async fn a_failing_handler_closes_with_1011_and_its_detail() {
    let service = service();
    let (gateway, _session) = connect_quiet(&service).await;
    let (mut to_service, from_service) = open(&gateway, "/fail").await;
    to_service.send(WsMessage::Text("hi".into()).encode().unwrap()).await.unwrap();
    assert_eq!(messages(from_service).await, [WsMessage::close(1011, "the database is down")]);
}

#[tokio::test]
async fn a_request_without_a_streamed_body_is_refused() {
    let service = service();
    let (gateway, _session) = connect_quiet(&service).await;
    let (head, body) = gateway.exchange(get("/echo")).await;
    assert_eq!(head.status, 400);
    assert!(String::from_utf8_lossy(&body).contains("streamed request"), "{body:?}");
}
