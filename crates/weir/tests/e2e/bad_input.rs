//! Bad input is refused with the documented answer and loses nothing else: malformed
//! client requests get 400; a service that sends a malformed frame, an unknown frame
//! type, an unparsable template, or claims another service's endpoint is refused with a
//! logged reason while the gateway keeps serving everyone else.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use weir_proto::{
    EndpointDescriptor, ErrorCode, ErrorMessage, FrameCodec, FrameType, HealthStatus, Heartbeat, Hello, Message,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use weir_transport::{dial, HandshakeError, LinkConfig, LinkEvent};

use crate::common::*;
use crate::observability::until_scraped;

conformance! {
    malformed_frame_closes_only_that_service,
    unknown_frame_type_closes_only_that_service,
    unparsable_template_is_refused_and_nothing_is_registered,
    claiming_another_services_endpoint_is_refused,
    unsupported_protocol_version_is_refused,
    version_1_service_is_welcomed_in_its_version_without_probes,
    garbage_instead_of_hello_is_dropped,
}

async fn raw_http(h: &Harness, request: &[u8]) -> String {
    let mut socket = TcpStream::connect(h.addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, socket.read_to_end(&mut answer)).await.expect("no answer");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn malformed_client_requests_get_400() {
    let h = Harness::with_demo(config()).await;
    for request in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET /api/hello HTTP/1.1\r\nhost: x\r\nbad header line\r\n\r\n",
        b"POST /api/echo HTTP/1.1\r\nhost: x\r\ncontent-length: nope\r\n\r\n",
    ] {
        let answer = raw_http(&h, request).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{request:?} got {answer:?}");
    }
    assert_demo_still_serves(&h).await;
}

#[tokio::test]
async fn invalid_version_header_gets_400() {
    let h = Harness::with_demo(config()).await;
    let response = h.client.get(h.url("/api/hello")).header("x-weir-version", "latest").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

async fn assert_demo_still_serves(h: &Harness) {
    let response = h.client.get(h.url("/api/hello")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// A registered raw service connection sends `bytes`; the gateway must close it with a
/// ProtocolViolation and keep serving the demo.
async fn registered_peer_sends(bytes: &[u8], transport: Transport) {
    let h = Harness::with_demo_on(config(), transport).await;
    let io = h.dial().await;
    let mut framed = Framed::new(io, FrameCodec::default());
    framed.send(hello("rogue", vec![EndpointDescriptor::new("GET", "/rogue")]).to_frame(0).unwrap()).await.unwrap();
    let welcome = framed.next().await.unwrap().unwrap();
    assert_eq!(welcome.frame_type, FrameType::Welcome);
    framed.get_mut().write_all(bytes).await.unwrap();
    let error = loop {
        let frame = tokio::time::timeout(WAIT, framed.next()).await.unwrap().expect("closed without an Error").unwrap();
        if frame.frame_type == FrameType::Error {
            break ErrorMessage::decode(frame.payload).unwrap();
        }
    };
    assert_eq!(error.code, ErrorCode::ProtocolViolation);
    assert!(tokio::time::timeout(WAIT, framed.next()).await.unwrap().is_none(), "connection stayed open");
    assert_demo_still_serves(&h).await;
    let gone = h.client.get(h.url("/rogue")).send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::SERVICE_UNAVAILABLE);
}

async fn malformed_frame_closes_only_that_service(transport: Transport) {
    // A Heartbeat whose status byte is 9: a frame of a known type with a bad payload.
    registered_peer_sends(&[0, 0, 0, 19, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0], transport).await;
}

async fn unknown_frame_type_closes_only_that_service(transport: Transport) {
    registered_peer_sends(&[0, 0, 0, 10, 77, 0, 0, 0, 0, 0, 0, 0, 0, 0], transport).await;
}

async fn refused(h: &Harness, hello: Hello) -> (ErrorCode, String) {
    let io = h.dial().await;
    match dial(io, &hello, LinkConfig::default(), Duration::from_secs(5)).await {
        Err(HandshakeError::Refused { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn unparsable_template_is_refused_and_nothing_is_registered(transport: Transport) {
    let h = Harness::with_demo_on(config(), transport).await;
    let endpoints = vec![EndpointDescriptor::new("GET", "/fine"), EndpointDescriptor::new("GET", "/broken/{id")];
    let (code, message) = refused(&h, hello("broken", endpoints)).await;
    assert_eq!(code, ErrorCode::RegistrationRefused);
    assert!(message.contains("/broken/{id"), "{message}");
    assert_eq!(h.client.get(h.url("/fine")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_demo_still_serves(&h).await;
}

async fn claiming_another_services_endpoint_is_refused(transport: Transport) {
    let h = Harness::with_demo_on(config(), transport).await;
    let mut hijack = EndpointDescriptor::new("GET", "/api/hello");
    hijack.supports_streaming = true;
    let (code, message) = refused(&h, hello("hijacker", vec![hijack])).await;
    assert_eq!(code, ErrorCode::RegistrationRefused);
    assert!(message.contains("demo"), "{message}");
    assert_demo_still_serves(&h).await;
}

async fn unsupported_protocol_version_is_refused(transport: Transport) {
    let h = Harness::with_demo_on(config(), transport).await;
    for version in [MIN_PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1, 99] {
        let mut other = hello("future", vec![EndpointDescriptor::new("GET", "/future")]);
        other.protocol_version = version;
        let (code, message) = refused(&h, other).await;
        assert_eq!(code, ErrorCode::RegistrationRefused, "version {version}");
        let supported = format!("{MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}");
        assert!(message.contains(&format!("version {version} ")) && message.contains(&supported), "{message}");
    }
    assert_eq!(h.client.get(h.url("/future")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_demo_still_serves(&h).await;
}

/// A version 1 service is welcomed in version 1 and never sent a heartbeat probe, which
/// its decoder would refuse; a probe it sends anyway is not taken as a round trip.
async fn version_1_service_is_welcomed_in_its_version_without_probes(transport: Transport) {
    let h = Harness::with_demo_on(config(), transport).await;
    let mut old = hello("legacy", vec![EndpointDescriptor::new("GET", "/legacy")]);
    old.protocol_version = 1;
    let (link, mut events, welcome) = dial(h.dial().await, &old, LinkConfig::default(), WAIT).await.unwrap();
    assert_eq!(welcome.protocol_version, 1);
    for _ in 0..3 {
        h.gateway.sweep_once(std::time::Instant::now());
        let heartbeat = loop {
            match tokio::time::timeout(WAIT, events.recv()).await.unwrap().expect("link open") {
                LinkEvent::Heartbeat(heartbeat) => break heartbeat,
                _ => continue,
            }
        };
        assert_eq!(heartbeat.probe, None);
        // Answered as a version 2 service would: the gateway must not time it.
        link.send_heartbeat(&Heartbeat { probe: Some(0), ..Heartbeat::new(HealthStatus::Healthy, 0, 0.0) }).unwrap();
    }
    assert!(!link.is_closed(), "{:?}", link.close_reason());
    // Heartbeats are taken in order: once this one shows, the ones before it were taken.
    link.send_heartbeat(&Heartbeat::new(HealthStatus::Draining, 0, 0.0)).unwrap();
    let draining = r#"weir_service_instances{service="legacy",version="1.0.0",health="draining"} 1"#;
    let text = until_scraped(&h, |text| text.contains(draining)).await;
    assert!(!text.contains(r#"weir_service_heartbeat_rtt_seconds_count{service="legacy"}"#), "{text}");
    assert_demo_still_serves(&h).await;
}

async fn garbage_instead_of_hello_is_dropped(transport: Transport) {
    let h = Harness::with_demo_on(config(), transport).await;
    let mut io = h.dial().await;
    io.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, io.read_to_end(&mut rest)).await.expect("connection stayed open");
    assert_demo_still_serves(&h).await;
}
