//! Abuse from the service side, driven with raw frames on the service port: a service that
//! stops reading its socket gets its callers 504 within their timeout and is evicted
//! (its requests in flight failing at once); before a peer is authenticated its frames
//! are held to `services.max_hello_size` and its handshakes to
//! `services.max_pending_handshakes`; a service's endpoints are capped by
//! `services.max_endpoints` in its Hello and in every update; departed endpoints are
//! forgotten after `routing.forget_after`; and the table holds at most
//! `routing.max_routes` endpoints.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Framed, FramedWrite};
use weir_gateway::GatewayConfig;
use weir_proto::{
    EndpointDescriptor, ErrorCode, ErrorMessage, Frame, FrameCodec, FrameType, HealthStatus, Heartbeat, Hello, Message,
};
use weir_transport::ByteStream;

use crate::common::*;

/// A hand-driven service connection.
type Raw = Framed<Box<dyn ByteStream>, FrameCodec>;

fn endpoint(method: &str, path: &str, timeout: Duration) -> EndpointDescriptor {
    EndpointDescriptor { timeout: Some(timeout), ..EndpointDescriptor::new(method, path) }
}

/// Sends `hello` on a new connection and returns it with the gateway's first answer
/// (Welcome or Error).
async fn handshake(h: &Harness, hello: &Hello) -> (Raw, Frame) {
    let mut raw = Framed::new(h.dial().await, FrameCodec::default());
    raw.send(hello.to_frame(0).unwrap()).await.unwrap();
    let answer = tokio::time::timeout(WAIT, raw.next()).await.unwrap().expect("closed").unwrap();
    (raw, answer)
}

fn heartbeat() -> Frame {
    Heartbeat::new(HealthStatus::Healthy, 0, 0.0).to_frame(0).unwrap()
}

/// Reads until the connection closes; `true` if it did within [`WAIT`].
async fn closes(mut io: impl tokio::io::AsyncRead + Unpin) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(WAIT, io.read_to_end(&mut sink)).await.is_ok()
}

fn health_of(h: &Harness, path: &str) -> Option<String> {
    let routes = h.gateway.routing().snapshot();
    let route = routes.iter().find(|r| r.template == path)?;
    route.instances.first().map(|i| format!("{:?}", i.health))
}

/// Heartbeats every 100 ms, degraded after 400 ms of silence or stuck writes, evicted
/// after 4 s: long enough to fill a link and probe it before the eviction.
fn stuck_config() -> GatewayConfig {
    let mut cfg = config();
    cfg.routing.heartbeat_interval = Duration::from_millis(100);
    cfg.routing.degraded_after = Duration::from_millis(400);
    cfg.routing.evict_after = Duration::from_secs(4);
    cfg.server.max_connections_per_ip = 1000;
    // The fillers all come from one address: their bodies must fit its share of the budget.
    cfg.limits.payload.max_inflight_bytes_per_client = cfg.limits.payload.max_request_bytes_per_connection;
    cfg
}

const FILLERS: usize = 100;
const FILLER_BODY: usize = 128 * 1024;
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const FILLER_TIMEOUT: Duration = Duration::from_secs(20);

/// A service that stops reading keeps heartbeating, so only its stuck writes give it
/// away: once its link's queue is full, a call waiting for room gets 504 within the
/// endpoint's timeout; the instance is then degraded, and evicted, failing the requests
/// in flight on it at once rather than at their (much longer) timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_stops_reading_gets_504s_in_time_and_is_evicted() {
    let h = Harness::with_demo(stuck_config()).await;
    let endpoints =
        vec![endpoint("POST", "/stuck/fill", FILLER_TIMEOUT), endpoint("GET", "/stuck/probe", PROBE_TIMEOUT)];
    let (raw, answer) = handshake(&h, &hello("stuck", endpoints)).await;
    assert_eq!(answer.frame_type, FrameType::Welcome);
    // From now on the service only writes (heartbeats) and never reads its socket.
    let (_unread, writer) = tokio::io::split(raw.into_inner());
    let beating = tokio::spawn(async move {
        let mut writer = FramedWrite::new(writer, FrameCodec::default());
        let mut every = tokio::time::interval(Duration::from_millis(50));
        while writer.send(heartbeat()).await.is_ok() {
            every.tick().await;
        }
    });
    let started = Instant::now();
    let fillers: Vec<_> = (0..FILLERS)
        .map(|_| tokio::spawn(h.client.post(h.url("/stuck/fill")).body(vec![b'x'; FILLER_BODY]).send()))
        .collect();
    // Every body read and waiting: far more than the pipe, the writer and the queue hold.
    until(|| h.gateway.budget().counters().aggregate_bytes >= (FILLERS * FILLER_BODY) as u64).await;
    until(|| health_of(&h, "/stuck/probe").as_deref() == Some("Degraded")).await;
    let probe_sent = Instant::now();
    let probe = h.client.get(h.url("/stuck/probe")).send().await.unwrap();
    assert_eq!(probe.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(probe_sent.elapsed() < PROBE_TIMEOUT + Duration::from_secs(1), "504 after {:?}", probe_sent.elapsed());
    assert_eq!(probe.json::<serde_json::Value>().await.unwrap()["error"], "upstream_timeout");
    until(|| h.gateway.service_connections() == 1).await;
    let mut statuses = Vec::new();
    for filler in fillers {
        statuses.push(filler.await.unwrap().unwrap().status());
    }
    assert!(started.elapsed() < FILLER_TIMEOUT, "the fillers waited for their timeout");
    assert!(statuses.contains(&StatusCode::BAD_GATEWAY), "no request in flight failed with the link: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == StatusCode::BAD_GATEWAY || *s == StatusCode::SERVICE_UNAVAILABLE));
    let after = h.client.get(h.url("/stuck/probe")).send().await.unwrap();
    assert_eq!(after.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.client.get(h.url("/api/hello")).send().await.unwrap().status(), StatusCode::OK);
    beating.abort();
    h.assert_budget_released().await;
}

/// Endpoints `/{prefix}/0` … `/{prefix}/{n-1}`.
fn endpoints(prefix: &str, n: usize) -> Vec<EndpointDescriptor> {
    (0..n).map(|i| EndpointDescriptor::new("GET", &format!("/{prefix}/{i}"))).collect()
}

/// The gateway's answer to a connection that says `first`, or `None` if it closed the
/// connection without one.
async fn answer_to(h: &Harness, first: &[u8]) -> (Raw, Option<Frame>) {
    let mut raw = Framed::new(h.dial().await, FrameCodec::default());
    if raw.get_mut().write_all(first).await.is_err() {
        return (raw, None);
    }
    let answer = tokio::time::timeout(WAIT, raw.next()).await.expect("no answer");
    (raw, answer.and_then(Result::ok))
}

fn encoded(frame: Frame) -> Vec<u8> {
    let mut bytes = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(&mut FrameCodec::default(), frame, &mut bytes).unwrap();
    bytes.to_vec()
}

fn error_of(frame: Option<Frame>) -> ErrorMessage {
    let frame = frame.expect("closed without an Error");
    assert_eq!(frame.frame_type, FrameType::Error);
    ErrorMessage::decode(frame.payload).unwrap()
}

/// With credentials configured, a connection's first frame is held to
/// `services.max_hello_size`: a header announcing 16 MiB is refused from the header alone
/// (nothing more is sent, so only a refusal from the length can answer), a Hello one
/// byte over the size is refused, one under it registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_hello_is_refused_before_it_is_buffered() {
    let mut cfg = with_credential(config(), "big", Some("t0ken"), &["/big"]);
    cfg.services.max_hello_size = 4096;
    let h = Harness::start_on(cfg, Transport::Tcp).await;
    let announced = (16u32 << 20) + 10;
    let header = [&announced.to_be_bytes()[..], &[FrameType::Hello as u8, 0], &[0; 8]].concat();
    let started = Instant::now();
    let (raw, answer) = answer_to(&h, &header).await;
    let error = error_of(answer);
    assert_eq!(error.code, ErrorCode::ProtocolViolation);
    assert!(error.message.contains("4096"), "{}", error.message);
    assert!(closes(raw.into_inner()).await);
    assert!(started.elapsed() < h.gateway.config().services.handshake_timeout, "closed only by the timeout");

    let mut fits = hello("big", endpoints("big", 1));
    fits.token = "t0ken".into();
    let size = |hello: &Hello| hello.to_frame(0).unwrap().payload.len();
    while size(&fits) <= 4096 {
        fits.endpoints = endpoints("big", fits.endpoints.len() + 1);
    }
    let over = fits.clone();
    fits.endpoints.pop();
    assert!(size(&fits) <= 4096 && size(&over) > 4096);
    let (raw, answer) = answer_to(&h, &encoded(over.to_frame(0).unwrap())).await;
    assert_eq!(error_of(answer).code, ErrorCode::ProtocolViolation);
    assert!(closes(raw.into_inner()).await);
    let (_raw, answer) = answer_to(&h, &encoded(fits.to_frame(0).unwrap())).await;
    assert_eq!(answer.expect("closed").frame_type, FrameType::Welcome);
}

/// Beyond `services.max_pending_handshakes` connections in their handshake, a new one is
/// closed at once; a slot comes back when a pending connection goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_handshake_cap_are_closed_at_once() {
    let mut cfg = config();
    cfg.services.max_pending_handshakes = 2;
    let h = Harness::start_on(cfg, Transport::Tcp).await;
    let silent = [h.dial().await, h.dial().await];
    let started = Instant::now();
    // Accepted in order: once a third connection is closed, both silent ones hold slots.
    let third = h.dial().await;
    assert!(closes(third).await, "a connection over the cap was kept");
    assert!(started.elapsed() < h.gateway.config().services.handshake_timeout, "closed only by the timeout");
    drop(silent);
    let registered = tokio::time::timeout(WAIT, async {
        loop {
            let (_raw, answer) =
                answer_to(&h, &encoded(hello("late", endpoints("late", 1)).to_frame(0).unwrap())).await;
            if answer.is_some_and(|f| f.frame_type == FrameType::Welcome) {
                return;
            }
        }
    });
    registered.await.expect("the slots never came back");
}

/// `services.max_endpoints` holds for the Hello (refused, RegistrationRefused) and for
/// every update (refused, the previous list stays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_lists_over_the_cap_are_refused_in_hellos_and_updates() {
    let mut cfg = config();
    cfg.services.max_endpoints = 4;
    let h = Harness::start_on(cfg, Transport::Tcp).await;
    let (_raw, answer) = handshake(&h, &hello("many", endpoints("many", 5))).await;
    let error = error_of(Some(answer));
    assert_eq!(error.code, ErrorCode::RegistrationRefused);
    assert!(error.message.contains("at most 4"), "{}", error.message);

    let (mut raw, answer) = handshake(&h, &hello("many", endpoints("many", 4))).await;
    assert_eq!(answer.frame_type, FrameType::Welcome);
    let update = |endpoints| weir_proto::EndpointsUpdate { endpoints }.to_frame(0).unwrap();
    raw.send(update(endpoints("over", 5))).await.unwrap();
    raw.send(update(endpoints("next", 4))).await.unwrap();
    let served = |prefix: &str| h.gateway.routing().snapshot().iter().any(|r| r.template.starts_with(prefix));
    // Updates apply in order: once the next one shows, the one over the cap was refused.
    until(|| served("/next/")).await;
    assert!(!served("/over/"), "an update over the cap was applied");
}

/// An endpoint whose last instance left answers 503 for `routing.forget_after`, then 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departed_endpoints_are_forgotten_after_forget_after() {
    let mut cfg = stuck_config();
    cfg.routing.forget_after = Duration::from_secs(1);
    let h = Harness::start_on(cfg, Transport::Tcp).await;
    let (raw, answer) = handshake(&h, &hello("gone", endpoints("gone", 1))).await;
    assert_eq!(answer.frame_type, FrameType::Welcome);
    drop(raw);
    let left = Instant::now();
    until(|| h.gateway.service_connections() == 0).await;
    let status = || async { h.client.get(h.url("/gone/0")).send().await.unwrap().status() };
    assert_eq!(status().await, StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::timeout(WAIT, async {
        while status().await != StatusCode::NOT_FOUND {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("never forgotten");
    assert!(left.elapsed() >= Duration::from_secs(1), "forgotten after {:?}", left.elapsed());
}

/// A registration that would take the table over `routing.max_routes` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_over_max_routes_are_refused() {
    let mut cfg = config();
    cfg.routing.max_routes = 3;
    let h = Harness::start_on(cfg, Transport::Tcp).await;
    let (_first, answer) = handshake(&h, &hello("first", endpoints("first", 2))).await;
    assert_eq!(answer.frame_type, FrameType::Welcome);
    let (_second, answer) = handshake(&h, &hello("second", endpoints("second", 2))).await;
    let error = error_of(Some(answer));
    assert_eq!(error.code, ErrorCode::RegistrationRefused);
    assert!(error.message.contains("at most 3"), "{}", error.message);
    let (_third, answer) = handshake(&h, &hello("third", endpoints("third", 1))).await;
    assert_eq!(answer.frame_type, FrameType::Welcome, "one more endpoint fits");
}
