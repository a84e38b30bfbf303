//! The life of requests and connections: cancellation, panics, heartbeats, refusal and
//! reconnection, against a hand-driven gateway side.

mod common;

use std::time::Duration;

use common::{accept, connect, connect_quiet, get, welcome, within};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use weir_proto::{CancelReason, ErrorCode, HealthStatus, Heartbeat};
use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service, ServiceError};
use weir_transport::{accept_hello, memory, StreamError};

/// Sends on drop: tells the test a handler future was dropped (finished or aborted).
struct DropSignal(mpsc::UnboundedSender<&'static str>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send("dropped");
    }
}

#[tokio::test]
async fn gateway_cancel_fires_the_handler_token_at_once() {
    let (tx, mut signals) = mpsc::unbounded_channel();
    let service = Service::builder("slow", "1.0.0")
        .endpoint(Endpoint::get("/slow").raw(move |ctx: RawRequestContext| {
            let tx = tx.clone();
            async move {
                let _ = tx.send("started");
                ctx.cancel.cancelled().await;
                let _ = tx.send("cancelled");
                Ok(RawResponse::text(200, "too late"))
            }
        }))
        .build()
        .expect("valid service");
    let (gateway, session) = connect_quiet(&service).await;
    let call = gateway.call(get("/slow")).await;
    assert_eq!(within(signals.recv()).await, Some("started"));
    assert_eq!(session.in_flight(), 1);
    call.handle.cancel(CancelReason::Timeout);
    let fired = tokio::time::timeout(Duration::from_millis(100), signals.recv()).await;
    assert_eq!(fired.expect("token fired within 100 ms"), Some("cancelled"));
    // The response of a cancelled request is not sent; the gateway already gave up.
    assert_eq!(
        within(call.response).await.expect("channel").err(),
        Some(StreamError::Cancelled(CancelReason::Timeout))
    );
}

#[tokio::test]
async fn handler_ignoring_cancellation_is_aborted_after_the_grace() {
    let (tx, mut signals) = mpsc::unbounded_channel();
    let grace = Duration::from_millis(50);
    let service = Service::builder("stubborn", "1.0.0")
        .cancel_grace(grace)
        .endpoint(Endpoint::get("/stubborn").raw(move |_| {
            let tx = tx.clone();
            async move {
                let _guard = DropSignal(tx.clone());
                let _ = tx.send("started");
                std::future::pending::<()>().await;
                Ok(RawResponse::new(200))
            }
        }))
        .build()
        .expect("valid service");
    let (gateway, session) = connect_quiet(&service).await;
    let call = gateway.call(get("/stubborn")).await;
    assert_eq!(within(signals.recv()).await, Some("started"));
    let cancelled_at = Instant::now();
    call.handle.cancel(CancelReason::ClientDisconnected);
    assert_eq!(within(signals.recv()).await, Some("dropped"));
    assert!(cancelled_at.elapsed() >= grace - Duration::from_millis(5), "aborted before its grace");
    // The abort is complete before the request stops counting as in flight.
    within(async {
        while session.in_flight() != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn panicking_handler_fails_its_stream_and_the_connection_keeps_serving() {
    let service = Service::builder("fragile", "1.0.0")
        .endpoint(Endpoint::get("/panic").raw(|_| async {
            if true {
                panic!("handler bug");
            }
            Ok(RawResponse::new(200))
        }))
        .endpoint(Endpoint::get("/ok").raw(|_| async { Ok(RawResponse::text(200, "fine")) }))
        .build()
        .expect("valid service");
    let (gateway, session) = connect_quiet(&service).await;
    let call = gateway.call(get("/panic")).await;
    let outcome = within(call.response).await.expect("channel");
    assert_eq!(outcome.err(), Some(StreamError::Cancelled(CancelReason::HandlerFailed)));
    let (head, body) = gateway.exchange(get("/ok")).await;
    assert_eq!((head.status, &body[..]), (200, &b"fine"[..]));
    assert!(!session.is_closed());
}

#[tokio::test]
async fn set_status_sends_a_heartbeat_at_once() {
    let service = Service::builder("drainer", "1.0.0").build().expect("valid service");
    let (mut gateway, session) = connect_quiet(&service).await;
    session.set_status(HealthStatus::Draining);
    let heartbeat = gateway.next_heartbeat().await;
    assert_eq!(heartbeat.status, HealthStatus::Draining);
    assert_eq!((heartbeat.in_flight, heartbeat.error_rate), (0, 0.0));
    assert_eq!(session.status(), HealthStatus::Draining);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_is_answered_at_once_with_the_same_probe_and_current_figures() {
    let service = Service::builder("prober", "1.0.0").build().expect("valid service");
    let (mut gateway, session) = connect_quiet(&service).await;
    assert_eq!(gateway.hello.protocol_version, weir_proto::PROTOCOL_VERSION);
    session.set_status(HealthStatus::Degraded);
    assert_eq!(gateway.next_heartbeat().await.probe, None, "a status change carries no probe");
    for probe in [1, 7_000_000, u64::MAX] {
        gateway
            .link
            .send_heartbeat(&Heartbeat { probe: Some(probe), ..Heartbeat::new(HealthStatus::Healthy, 0, 0.0) })
            .unwrap();
        let answer = gateway.next_heartbeat().await;
        assert_eq!((answer.probe, answer.status), (Some(probe), HealthStatus::Degraded));
    }
    // A heartbeat without a probe is not answered: the next one answers the probe after it.
    gateway.link.send_heartbeat(&Heartbeat::new(HealthStatus::Healthy, 0, 0.0)).unwrap();
    gateway
        .link
        .send_heartbeat(&Heartbeat { probe: Some(42), ..Heartbeat::new(HealthStatus::Healthy, 0, 0.0) })
        .unwrap();
    assert_eq!(gateway.next_heartbeat().await.probe, Some(42));
}

#[tokio::test]
async fn periodic_heartbeats_report_status_and_error_rate() {
    let service = Service::builder("flaky", "1.0.0")
        .endpoint(Endpoint::get("/fail").raw(|_| async { Err(HandlerError::unavailable("db down")) }))
        .build()
        .expect("valid service");
    let (mut gateway, session) = connect(&service, Duration::from_millis(20)).await;
    let first = gateway.next_heartbeat().await;
    assert_eq!((first.status, first.error_rate), (HealthStatus::Healthy, 0.0));
    let (head, _) = gateway.exchange(get("/fail")).await;
    assert_eq!(head.status, 503);
    // The outcome is recorded just after the answer is sent: wait for a heartbeat with it.
    while gateway.next_heartbeat().await.error_rate != 1.0 {}
    session.set_status(HealthStatus::Draining);
    while gateway.next_heartbeat().await.status != HealthStatus::Draining {}
    let later = gateway.next_heartbeat().await;
    assert_eq!((later.status, later.error_rate), (HealthStatus::Draining, 1.0));
}

#[tokio::test]
async fn refusal_is_reported_with_its_reason() {
    let service = Service::builder("intruder", "1.0.0").token("wrong").build().expect("valid service");
    let (mut listener, connector) = memory::listener();
    let serving = tokio::spawn({
        let service = service.clone();
        async move { service.serve_memory(&connector).await }
    });
    let io = within(listener.accept()).await.expect("a connection");
    let pending = within(accept_hello(io, weir_proto::DEFAULT_MAX_FRAME_PAYLOAD, common::WAIT)).await.expect("hello");
    assert_eq!(pending.hello.token, "wrong");
    pending.refuse(ErrorCode::Unauthorized, "bad token").await;
    match within(serving).await.expect("serve task") {
        Err(ServiceError::Refused { code, message }) => {
            assert_eq!((code, message.as_str()), (ErrorCode::Unauthorized, "bad token"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn run_retries_refusals_and_reconnects_after_the_link_closes() {
    let service = Service::builder("resilient", "2.0.0")
        .endpoint(Endpoint::get("/ping").raw(|_| async { Ok(RawResponse::text(200, "pong")) }))
        .build()
        .expect("valid service");
    let (mut listener, connector) = memory::listener();
    let running = service.run(connector);

    // First attempt refused: retried with backoff.
    let io = within(listener.accept()).await.expect("first connection");
    let pending = within(accept_hello(io, weir_proto::DEFAULT_MAX_FRAME_PAYLOAD, common::WAIT)).await.expect("hello");
    pending.refuse(ErrorCode::RegistrationRefused, "try later").await;

    // Second attempt welcomed.
    let gateway = accept(&mut listener, &welcome(Duration::from_secs(3600))).await;
    assert_eq!(gateway.hello.service, "resilient");
    assert!(within(running.registered()).await);
    let (head, _) = gateway.exchange(get("/ping")).await;
    assert_eq!(head.status, 200);

    // The gateway drops the connection: the service dials again with the same identity.
    gateway.link.close("gateway restarting");
    within(running.unregistered()).await;
    let again = accept(&mut listener, &welcome(Duration::from_secs(3600))).await;
    assert_eq!(again.hello.instance_id, gateway.hello.instance_id);
    assert!(within(running.registered()).await);
    let (head, body) = again.exchange(get("/ping")).await;
    assert_eq!((head.status, &body[..]), (200, &b"pong"[..]));

    // Shutdown closes the connection and stops the loop.
    running.shutdown();
    within(again.link.closed()).await;
    within(running.join()).await;
}

#[tokio::test]
async fn run_reports_status_across_reconnects() {
    let service = Service::builder("steady", "1.0.0").build().expect("valid service");
    let (mut listener, connector) = memory::listener();
    let running = service.run(connector);
    let mut gateway = accept(&mut listener, &welcome(Duration::from_secs(3600))).await;
    assert!(within(running.registered()).await);
    running.set_status(HealthStatus::Draining);
    assert_eq!(gateway.next_heartbeat().await.status, HealthStatus::Draining);
    gateway.link.close("bye");
    // The new session announces the status it inherited straight away.
    let mut again = accept(&mut listener, &welcome(Duration::from_secs(3600))).await;
    assert_eq!(again.next_heartbeat().await.status, HealthStatus::Draining);
    running.shutdown();
    within(running.join()).await;
}

#[tokio::test]
async fn hello_carries_identity_settings_and_endpoint_options() {
    let service = Service::builder("catalog", "3.1.4")
        .region("eu-west")
        .instance_id("catalog-a")
        .token("s3cret")
        .stream_window(64 * 1024)
        .endpoint(
            Endpoint::post("/upload/{name}")
                .streaming()
                .timeout(Duration::from_secs(30))
                .require_claim("role", Some("uploader"))
                .require_claim("tenant", None)
                .content_type("application/octet-stream")
                .max_body_bytes(1 << 30)
                .raw(|_| async { Ok(RawResponse::new(204)) }),
        )
        .endpoint(Endpoint::get("/feed").websocket_handler(|_ws| async { Ok(()) }))
        .build()
        .expect("valid service");
    let (gateway, _session) = connect_quiet(&service).await;
    let hello = &gateway.hello;
    assert_eq!(
        (hello.service.as_str(), hello.version.as_str(), hello.region.as_str()),
        ("catalog", "3.1.4", "eu-west")
    );
    assert_eq!((hello.instance_id.as_str(), hello.token.as_str()), ("catalog-a", "s3cret"));
    assert_eq!(hello.initial_window, 64 * 1024);
    let upload = &hello.endpoints[0];
    assert_eq!((upload.method.as_str(), upload.path.as_str()), ("POST", "/upload/{name}"));
    assert!(upload.supports_streaming);
    assert_eq!(upload.timeout, Some(Duration::from_secs(30)));
    assert_eq!(upload.requiring_claims.len(), 2);
    assert_eq!(upload.requiring_claims[0].value.as_deref(), Some("uploader"));
    assert_eq!(upload.requiring_claims[1].value, None);
    assert_eq!(upload.content_types, ["application/octet-stream"]);
    assert_eq!(upload.max_body_bytes, Some(1 << 30));
    assert_eq!(hello.endpoints[1].kind, weir_proto::EndpointKind::WebSocket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_away_makes_run_dial_again_at_once_while_the_old_stream_finishes() {
    let (release_tx, release) = tokio::sync::watch::channel(false);
    let service = Service::builder("mover", "1.0.0")
        .endpoint(Endpoint::get("/ping").raw(|_| async { Ok(RawResponse::text(200, "pong")) }))
        .endpoint(Endpoint::get("/slow").raw(move |_| {
            let mut release = release.clone();
            async move {
                // The first chunk at once, the second once the test releases it.
                let second = async move {
                    let _ = release.wait_for(|r| *r).await;
                    Ok::<_, std::io::Error>(bytes::Bytes::from_static(b" end"))
                };
                let chunks = futures_util::stream::once(async { Ok(bytes::Bytes::from_static(b"start")) })
                    .chain(futures_util::stream::once(second));
                Ok(RawResponse::stream(200, "text/plain", chunks))
            }
        }))
        .build()
        .expect("valid service");
    let (mut listener, connector) = memory::listener();
    let running = service.run(connector);
    let old = accept(&mut listener, &welcome(Duration::from_secs(3600))).await;
    assert!(within(running.registered()).await);
    let call = old.call(get("/slow")).await;
    let response = within(call.response).await.expect("channel").expect("a response");
    let mut body = response.body.expect("a streamed body");
    assert_eq!(&within(body.next_chunk()).await.expect("a chunk").expect("data")[..], b"start");

    old.link.send_go_away(&weir_proto::GoAway { reason: "upgrade".into() }).expect("sent");
    // A new session at once, while the old one is still open.
    let new = accept(&mut listener, &welcome(Duration::from_secs(3600))).await;
    assert_eq!(new.hello.instance_id, old.hello.instance_id);
    assert!(!old.link.is_closed());
    let (head, body_new) = new.exchange(get("/ping")).await;
    assert_eq!((head.status, &body_new[..]), (200, &b"pong"[..]));
    // The old session still answers new requests and finishes the stream in progress.
    let (head, _) = old.exchange(get("/ping")).await;
    assert_eq!(head.status, 200);
    release_tx.send_replace(true);
    assert_eq!(&within(body.next_chunk()).await.expect("a chunk").expect("data")[..], b" end");
    assert!(within(body.next_chunk()).await.is_none(), "the stream ended cleanly");
    call.handle.complete();

    // The old gateway closes its link: the service stays registered through the new one.
    old.link.close("drained");
    let (head, _) = new.exchange(get("/ping")).await;
    assert_eq!(head.status, 200);
    assert!(running.is_registered());
    running.shutdown();
    within(new.link.closed()).await;
    within(running.join()).await;
}
