//! What an operator sees of services, WebSockets, backpressure, the budget and the
//! process at `/metrics`, under real load: services over TCP that attach, leave and
//! reconnect, Hellos that fail their handshake, many HTTP/1.1 and HTTP/2 clients,
//! WebSocket sessions that send messages and close in different ways, uploads the
//! service acknowledges at its pace and downloads a client reads late.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::codec::Framed;
use weir_proto::{EndpointDescriptor, ErrorCode, Frame, FrameCodec, FrameType};
use weir_service::{Endpoint, HandlerError, RawRequestContext, RawResponse, Service};
use weir_transport::{dial, HandshakeError, LinkConfig};

use crate::common::*;
use crate::observability::{scrape, until_scraped, value};

/// `clients` clients, half HTTP/1.1 and half HTTP/2, each calling `/api/items/{id}` and
/// posting `body` bytes to `/api/echo` `rounds` times.
async fn load(h: &Harness, clients: usize, rounds: usize, body: usize) {
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = if c % 2 == 0 { h.client.clone() } else { h2.clone() };
        let url = h.url("");
        tasks.push(tokio::spawn(async move {
            for r in 0..rounds {
                let item = client.get(format!("{url}/api/items/{c}-{r}")).send().await.unwrap();
                assert_eq!(item.status(), StatusCode::OK);
                item.bytes().await.unwrap();
                let echo = client.post(format!("{url}/api/echo")).header("content-type", "text/plain");
                let echo = echo.body(vec![b'x'; body]).send().await.unwrap();
                assert_eq!(echo.status(), StatusCode::OK);
                assert_eq!(echo.bytes().await.unwrap().len(), body);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

fn extra(instance: &str) -> Service {
    let endpoint = Endpoint::get("/api/extra").raw(|_| async { Ok(RawResponse::text(200, "extra")) });
    Service::builder("extra", "2.1.0").instance_id(instance).endpoint(endpoint).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_that_attach_leave_and_reconnect_are_counted_with_their_links() {
    let mut h = Harness::start_on(demo_mounts(), Transport::Tcp).await;
    let demo = weir::demo::service();
    let demo_id = demo.instance_id().to_owned();
    h.attach(demo).await;
    let version = env!("CARGO_PKG_VERSION");
    let demo_healthy = format!(r#"weir_service_instances{{service="demo",version="{version}",health="healthy"}}"#);
    let extra_healthy = r#"weir_service_instances{service="extra",version="2.1.0",health="healthy"}"#;
    let first = h.attach(extra("extra-1")).await;
    let text = scrape(&h).await;
    assert_eq!(value(&text, &demo_healthy), 1.0, "{text}");
    assert_eq!(value(&text, extra_healthy), 1.0, "{text}");
    let budget = format!(r#"weir_service_budget_reserved_bytes{{service="demo",instance="{demo_id}"}}"#);
    assert!(text.contains(&format!("{budget} 0")), "a live connection has its series:\n{text}");

    let (clients, rounds, body) = (16, 4, 2000);
    load(&h, clients, rounds, body).await;
    let text = scrape(&h).await;
    let link =
        |name: &str, direction: &str| value(&text, &format!(r#"{name}{{service="demo",direction="{direction}"}}"#));
    let calls = (clients * rounds * 2) as f64;
    assert!(link("weir_link_frames_total", "out") >= calls, "a Request frame per call at least:\n{text}");
    assert!(link("weir_link_frames_total", "in") >= calls, "a Response frame per call at least:\n{text}");
    let uploaded = (clients * rounds * body) as f64;
    assert!(link("weir_link_bytes_total", "out") > uploaded, "every uploaded byte went out:\n{text}");
    assert!(link("weir_link_bytes_total", "in") > uploaded, "every echoed byte came in:\n{text}");

    // `extra` leaves: its instance and budget series go; the same instance id comes back.
    first.shutdown();
    let text = until_scraped(&h, |text| value(text, extra_healthy) == 0.0).await;
    assert!(!text.contains(r#"instance="extra-1""#), "a gone connection leaves no series:\n{text}");
    assert_eq!(value(&text, r#"weir_service_reconnects_total{service="extra"}"#), 0.0, "{text}");
    h.attach(extra("extra-1")).await;
    h.attach(extra("extra-2")).await;
    let text = scrape(&h).await;
    assert_eq!(value(&text, extra_healthy), 2.0, "{text}");
    assert_eq!(value(&text, r#"weir_service_reconnects_total{service="extra"}"#), 1.0, "a new id is no reconnect");

    // Every link closes; the SDK dials again at once with the same instance ids.
    h.restart_services().await;
    let text = until_scraped(&h, |text| {
        value(text, r#"weir_service_reconnects_total{service="demo"}"#) == 1.0
            && value(text, r#"weir_service_reconnects_total{service="extra"}"#) == 3.0
    })
    .await;
    assert!(value(&text, &demo_healthy) <= 1.0, "{text}");
}

/// Each gateway heartbeat probes every version 2 instance; their answers, over TCP and
/// under load, time the round trip per service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_round_trips_are_timed_per_service_under_load() {
    let mut h = Harness::start_on(demo_mounts(), Transport::Tcp).await;
    h.attach(weir::demo::service()).await;
    h.attach(extra("extra-1")).await;
    h.attach(extra("extra-2")).await;
    let count = |text: &str, service: &str| {
        value(text, &format!(r#"weir_service_heartbeat_rtt_seconds_count{{service="{service}"}}"#))
    };
    let before = scrape(&h).await;
    let (demo_before, extra_before) = (count(&before, "demo"), count(&before, "extra"));
    let sweeps = 5;
    let loading = load(&h, 16, 4, 20_000);
    let probing = async {
        for sweep in 1..=sweeps {
            h.gateway.sweep_once(std::time::Instant::now());
            let sweep = f64::from(sweep);
            until_scraped(&h, |text| {
                count(text, "demo") >= demo_before + sweep && count(text, "extra") >= extra_before + 2.0 * sweep
            })
            .await;
        }
    };
    tokio::join!(loading, probing);
    let text = scrape(&h).await;
    for (service, instances) in [("demo", 1.0), ("extra", 2.0)] {
        let answered = count(&text, service);
        assert!(answered >= instances * f64::from(sweeps), "{service}: {answered} answers\n{text}");
        let sum = value(&text, &format!(r#"weir_service_heartbeat_rtt_seconds_sum{{service="{service}"}}"#));
        assert!(sum > 0.0 && sum / answered < 1.0, "{service}: {sum} s over {answered} round trips");
        let slowest = format!(r#"weir_service_heartbeat_rtt_seconds_bucket{{service="{service}",le="+Inf"}}"#);
        assert_eq!(value(&text, &slowest), answered, "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hellos_that_fail_the_handshake_are_counted_by_reason() {
    let guarded = with_credential(demo_mounts(), "billing", Some("billing-token"), &["/billing"]);
    let h = Harness::start_on(guarded, Transport::Tcp).await;
    let failures = |text: &str, reason: &str| {
        value(text, &format!(r#"weir_service_handshake_failures_total{{reason="{reason}"}}"#))
    };
    let before = scrape(&h).await;
    for reason in ["timeout", "closed", "protocol", "unauthorized", "registration_refused"] {
        assert!(before.contains(&format!(r#"weir_service_handshake_failures_total{{reason="{reason}"}} 0"#)));
    }
    let attempts = (0..12).map(|i| {
        let h = &h;
        async move {
            let io = h.dial().await;
            match i % 3 {
                // Not a Hello at all.
                0 => {
                    let mut raw = Framed::new(io, FrameCodec::default());
                    raw.send(Frame::new(FrameType::Heartbeat, 0, Default::default())).await.unwrap();
                    while raw.next().await.is_some_and(|frame| frame.is_ok()) {}
                }
                1 => {
                    let hello = billing_hello("wrong-token", "/billing/a");
                    let refused = dial(io, &hello, LinkConfig::default(), WAIT).await;
                    assert!(matches!(refused, Err(HandshakeError::Refused { code: ErrorCode::Unauthorized, .. })));
                }
                _ => {
                    let hello = billing_hello("billing-token", "/elsewhere");
                    let refused = dial(io, &hello, LinkConfig::default(), WAIT).await;
                    let code = ErrorCode::RegistrationRefused;
                    assert!(matches!(refused, Err(HandshakeError::Refused { code: c, .. }) if c == code));
                }
            }
        }
    });
    futures_util::future::join_all(attempts).await;
    let text = until_scraped(&h, |text| failures(text, "protocol") == 4.0).await;
    assert_eq!(failures(&text, "unauthorized"), 4.0, "{text}");
    assert_eq!(failures(&text, "registration_refused"), 4.0, "{text}");
    assert!(!text.contains(r#"service="billing""#), "a refused Hello creates no service series:\n{text}");
}

fn billing_hello(token: &str, path: &str) -> weir_proto::Hello {
    let mut hello = hello("billing", vec![EndpointDescriptor::new("GET", path)]);
    hello.token = token.into();
    hello
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_sessions_count_their_messages_and_closes_per_mount() {
    let h = Harness::with_demo(demo_mounts()).await;
    let url = format!("ws://{}/stream/echo", h.addr);
    // At most `ws_max_connections_per_user` (10) from one client address.
    let (sessions, messages, size) = (8, 5, 100);
    let mut open = Vec::new();
    for _ in 0..sessions {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&url)).await.unwrap().unwrap();
        open.push(ws);
    }
    until_scraped(&h, |text| value(text, r#"weir_websocket_sessions{mount="/stream"}"#) == sessions as f64).await;
    let tasks = open.into_iter().enumerate().map(|(i, mut ws)| async move {
        for _ in 0..messages {
            ws.send(Message::text("x".repeat(size))).await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap().len(), size);
        }
        let close = |code: u16| Some(CloseFrame { code: CloseCode::from(code), reason: "".into() });
        match i % 4 {
            0 => ws.close(close(1000)).await.unwrap(),
            1 => ws.close(close(4000)).await.unwrap(),
            2 => ws.close(None).await.unwrap(),
            // Gone without a close frame.
            _ => {
                drop(ws);
                return;
            }
        }
        while ws.next().await.is_some() {}
    });
    futures_util::future::join_all(tasks).await;
    let text = until_scraped(&h, |text| value(text, r#"weir_websocket_sessions{mount="/stream"}"#) == 0.0).await;
    let each_way = (sessions * messages) as f64;
    for direction in ["client_to_service", "service_to_client"] {
        let series = format!(r#"{{mount="/stream",direction="{direction}"}}"#);
        assert_eq!(value(&text, &format!("weir_websocket_messages_total{series}")), each_way, "{text}");
        assert_eq!(value(&text, &format!("weir_websocket_bytes_total{series}")), each_way * size as f64);
    }
    let closes = |code: &str| value(&text, &format!(r#"weir_websocket_closes_total{{mount="/stream",code="{code}"}}"#));
    let quarter = (sessions / 4) as f64;
    assert_eq!((closes("1000"), closes("other"), closes("none"), closes("1006")), (quarter, quarter, quarter, quarter));
}

/// A service whose `/stream/sink` reads nothing of an upload until `gate` lets it: the
/// stream's window fills and the gateway waits for its credit.
fn sink(gate: Arc<Semaphore>) -> Service {
    let endpoint = Endpoint::post("/stream/sink").streaming().raw(move |mut ctx: RawRequestContext| {
        let gate = Arc::clone(&gate);
        async move {
            let _open = gate.acquire().await.map_err(|e| HandlerError::bad_request(e.to_string()))?;
            let mut bytes = 0;
            while let Some(chunk) = ctx.body.chunk().await.map_err(|e| HandlerError::bad_request(e.to_string()))? {
                bytes += chunk.len();
            }
            Ok(RawResponse::text(200, bytes.to_string()))
        }
    });
    Service::builder("sink", "1.0.0").instance_id("sink-1").endpoint(endpoint).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_waits_bytes_in_flight_and_budget_refusals_are_shown_per_route() {
    let mut config = demo_mounts();
    let window = 64 * 1024;
    config.limits.payload.max_request_bytes_per_call = window;
    let mut h = Harness::with_demo(config).await;
    let gate = Arc::new(Semaphore::new(0));
    h.attach(sink(Arc::clone(&gate))).await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let (uploads, upload) = (4, 1024 * 1024);
    let held = (0..uploads).map(|c| {
        let client = if c % 2 == 0 { h.client.clone() } else { h2.clone() };
        let url = h.url("/stream/sink");
        tokio::spawn(async move {
            let response = client.post(url).body(vec![7u8; upload]).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.text().await.unwrap(), upload.to_string());
        })
    });
    let held: Vec<_> = held.collect();
    // Over the per-call limit, a buffered body is refused before it is read.
    let refused = (0..6).map(|c| {
        let client = if c % 2 == 0 { h.client.clone() } else { h2.clone() };
        let url = h.url("/api/echo");
        async move {
            let response = client.post(url).body(vec![b'x'; 100_000]).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        }
    });
    futures_util::future::join_all(refused).await;

    // The uploads fill their streams' windows while the service reads nothing: each
    // holds up to its window, short of the next piece of the client's body that would
    // not fit.
    let full = (uploads as u64 * window) as f64;
    let inflight = r#"weir_route_inflight_bytes{route="/stream/sink"}"#;
    // The gauges are read in one scrape but move while it is taken: wait for a scrape
    // in which every upload holds its reservation and the two views of it agree.
    let sink_budget = r#"{service="sink",instance="sink-1"}"#;
    let reserved = |text: &str| value(text, &format!("weir_service_budget_reserved_bytes{sink_budget}"));
    let reservations = |text: &str| value(text, &format!("weir_service_budget_reservations{sink_budget}"));
    let text = until_scraped(&h, |text| {
        value(text, inflight) >= full / 2.0
            && reservations(text) == uploads as f64
            && reserved(text) == value(text, inflight)
    })
    .await;
    assert!(value(&text, inflight) <= full, "no stream holds more than its window:\n{text}");
    gate.add_permits(uploads);
    for upload in held {
        upload.await.unwrap();
    }

    // A download the client reads only later: the service's credit is withheld meanwhile.
    let late = h.client.get(h.url("/stream/download?bytes=8388608")).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(late.bytes().await.unwrap().len(), 8 * 1024 * 1024);

    h.assert_budget_released().await;
    let text = until_scraped(&h, |text| {
        value(text, r#"weir_credit_wait_seconds_total{route="/stream/download",direction="to_client"}"#) > 0.0
    })
    .await;
    let waited = |route: &str, direction: &str| {
        value(&text, &format!(r#"weir_credit_wait_seconds_total{{route="{route}",direction="{direction}"}}"#))
    };
    assert!(waited("/stream/sink", "to_service") > 0.0, "the uploads waited for the service:\n{text}");
    assert!(waited("/stream/download", "to_client") >= 0.2, "{text}");
    assert!(text.contains(r#"weir_route_inflight_bytes{route="/stream/sink"} 0"#), "all released:\n{text}");
    assert!(text.contains(&format!("weir_service_budget_reserved_bytes{sink_budget} 0")), "{text}");
    assert_eq!(value(&text, r#"weir_admissions_refused_total{limit="per_call"}"#), 6.0, "{text}");
    assert_eq!(value(&text, r#"weir_admissions_refused_total{limit="aggregate"}"#), 0.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_shows_its_memory_descriptors_and_age() {
    let h = Harness::with_demo(demo_mounts()).await;
    let first = scrape(&h).await;
    load(&h, 4, 2, 100).await;
    let later = scrape(&h).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(value(&later, "process_resident_memory_bytes") > 1_000_000.0, "{later}");
    assert!(value(&later, "process_open_fds") >= 3.0, "{later}");
    let started = value(&later, "process_start_time_seconds");
    assert!(started > now - 3600.0 && started <= now + 1.0, "{started} against {now}");
    assert!(value(&later, "weir_uptime_seconds") > value(&first, "weir_uptime_seconds"), "{later}");
}
