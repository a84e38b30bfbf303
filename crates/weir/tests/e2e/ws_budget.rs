//! WebSocket sessions under the payload budget, as streamed uploads are: a session holds
//! only its bytes in flight towards the service (read from the client, not yet
//! acknowledged), including a message being assembled, so idle sessions hold nothing;
//! a client pushing into a service that does not read is held to
//! `limits.max_inflight_bytes_per_client` (its reads stop) while another client's
//! WebSockets and uploads are served, and is closed with 1013 "Try again later" after
//! the idle timeout, as is a client whose message the service's window cannot take in
//! time (its stream then cancelled); after every session closes the budget is back at
//! zero. The pushing client connects from 127.0.0.1, the other client from 127.0.0.2.
//! The budget is read from the admin listener (`/budget`, `/metrics`), as an operator
//! would.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use weir_gateway::config::{AuthConfig, MountConfig, MountSettings, Profile};
use weir_gateway::{BudgetCounters, GatewayConfig};
use weir_service::{Endpoint, HandlerError, Service, WebSocketContext};

use crate::common::*;

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

const KIB: u64 = 1024;
/// The per-client cap: well under one session's stream window (256 KiB).
const CLIENT_CAP: u64 = 128 * KIB;
/// Idle sessions one client keeps open at once.
const IDLE_SESSIONS: usize = 200;
/// Sessions the pushing client keeps open at once, each pushing far past the cap.
const PUSHERS: usize = 8;
/// Messages each pusher sends: 512 KiB each, four times the cap.
const PUSHED_MESSAGES: usize = 32;
const MESSAGE: usize = 16 * 1024;
/// The deaf service's mount's idle timeout: how long a held-back client waits.
const DEAF_IDLE: Duration = Duration::from_secs(6);

/// A mount with the root's unlimited settings (no request rate, no bandwidth shaping),
/// room for hundreds of WebSockets per user and `idle` as the idle timeout.
fn mount(prefix: &str, cfg: &GatewayConfig, idle: Duration) -> MountConfig {
    let mut settings = MountSettings::unlimited(&cfg.limits);
    settings.ws_idle_timeout = idle;
    settings.ws_max_connections_per_user = 1000;
    settings.ws_max_message_size = 64 * KIB;
    MountConfig { prefix: prefix.into(), profile: Profile::Business, root: None, auth: AuthConfig::None, settings }
}

/// The demo on `/` (a long idle timeout), the deaf service on `/deaf`, a per-client cap
/// of [`CLIENT_CAP`] and 16 KiB chunks.
fn ws_budget_config() -> GatewayConfig {
    let mut cfg = config();
    cfg.server.max_connections_per_ip = 1000;
    cfg.limits.chunk_size = 16 * 1024;
    cfg.limits.payload.max_inflight_bytes_per_client = CLIENT_CAP;
    let mounts = vec![mount("/", &cfg, Duration::from_secs(60)), mount("/deaf", &cfg, DEAF_IDLE)];
    GatewayConfig { mounts, ..cfg }
}

/// A WebSocket to `path` from a client bound to `local` (another loopback address is
/// another client).
async fn connect_from(gateway: SocketAddr, local: IpAddr, path: &str) -> Client {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(local, 0)).unwrap();
    let stream = socket.connect(gateway).await.unwrap();
    let url = format!("ws://{gateway}{path}");
    let connecting = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream));
    tokio::time::timeout(WAIT, connecting).await.expect("upgrade answered").expect("upgrade accepted").0
}

const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// The next message, within [`WAIT`].
async fn next(ws: &mut Client) -> Message {
    tokio::time::timeout(WAIT, ws.next()).await.expect("nothing arrived in time").expect("closed").unwrap()
}

/// One echo round trip of `payload`.
async fn echo(ws: &mut Client, payload: Vec<u8>) {
    ws.send(Message::binary(payload.clone())).await.unwrap();
    assert_eq!(next(ws).await, Message::binary(payload));
}

/// Closes normally and waits for the gateway's reply and the end of the connection.
async fn close_normally(mut ws: Client) {
    ws.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "done".into() }))).await.unwrap();
    assert!(matches!(next(&mut ws).await, Message::Close(_)));
    let end = tokio::time::timeout(WAIT, ws.next()).await.expect("the connection ends after the close handshake");
    assert!(end.is_none(), "{end:?}");
}

/// The admin view of the budget.
async fn budget_view(h: &Harness) -> Value {
    h.client.get(h.admin_url("/budget")).send().await.unwrap().json().await.unwrap()
}

/// The admin `/metrics` value of `name`.
async fn metric(h: &Harness, name: &str) -> u64 {
    let text = h.client.get(h.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.split(' ').next() == Some(name)).expect("metric present");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Waits until `holds` holds for the budget's counters, within [`WAIT`].
async fn until_budget(h: &Harness, holds: impl Fn(&BudgetCounters) -> bool) {
    let budget = h.gateway.budget();
    until(|| holds(&budget.counters())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websockets_hold_nothing_in_the_budget() {
    let h = Harness::with_demo_on(ws_budget_config(), Transport::Tcp).await;
    let mut opening = JoinSet::new();
    for i in 0..IDLE_SESSIONS {
        let gateway = h.addr;
        opening.spawn(async move {
            let mut ws = connect_from(gateway, ATTACKER, "/stream/echo").await;
            // Live: a message goes through each before it falls idle.
            echo(&mut ws, vec![i as u8; 4096]).await;
            ws
        });
    }
    let mut sessions = Vec::new();
    while let Some(ws) = opening.join_next().await {
        sessions.push(ws.unwrap());
    }
    // Every session open, every echo acknowledged: nothing held, by anyone.
    until_budget(&h, |c| c.reservations == IDLE_SESSIONS as u64 && c.aggregate_bytes == 0).await;
    let view = budget_view(&h).await;
    assert_eq!((&view["aggregate_bytes"], &view["reservations"]), (&json!(0), &json!(IDLE_SESSIONS)));
    assert_eq!(view["top_clients"], json!([]), "{view}");
    assert_eq!(metric(&h, "weir_budget_reserved_bytes").await, 0);
    assert_eq!(metric(&h, "weir_budget_reservations").await, IDLE_SESSIONS as u64);
    let mut closing = JoinSet::new();
    for ws in sessions {
        closing.spawn(close_normally(ws));
    }
    while let Some(closed) = closing.join_next().await {
        closed.unwrap();
    }
    h.assert_budget_released().await;
    assert_eq!(
        budget_view(&h).await,
        json!({
            "aggregate_bytes": 0,
            "per_connection_bytes": {},
            "per_connection_reservations": {},
            "per_mount_bytes": {},
            "reservations": 0,
            "top_clients": []
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_being_assembled_is_held_until_it_leaves() {
    let h = Harness::with_demo_on(ws_budget_config(), Transport::Tcp).await;
    let mut ws = connect_from(h.addr, OTHER, "/stream/echo").await;
    let first = Frame::message(vec![1u8; 8192], OpCode::Data(Data::Binary), false);
    ws.send(Message::Frame(first)).await.unwrap();
    // The first fragment's payload is held, nothing more, while the client is silent.
    until_budget(&h, |c| c.aggregate_bytes == 8192).await;
    let view = budget_view(&h).await;
    assert_eq!(view["top_clients"], json!([{"client": "127.0.0.2", "bytes": 8192}]));
    let last = Frame::message(vec![2u8; 8192], OpCode::Data(Data::Continue), true);
    ws.send(Message::Frame(last)).await.unwrap();
    let mut expected = vec![1u8; 8192];
    expected.extend_from_slice(&[2u8; 8192]);
    assert_eq!(next(&mut ws).await, Message::binary(expected));
    until_budget(&h, |c| c.aggregate_bytes == 0).await;
    close_normally(ws).await;
    h.assert_budget_released().await;
}

/// What the deaf service's handler reports.
#[derive(Debug, PartialEq, Eq)]
enum Deaf {
    Started,
    Cancelled,
}

/// A WebSocket endpoint `/deaf/hold` that never reads its messages (so grants no
/// credit), reports each session's start and waits to be cancelled.
fn deaf_service() -> (Service, mpsc::UnboundedReceiver<Deaf>) {
    let (events, rx) = mpsc::unbounded_channel();
    let hold = Endpoint::get("/deaf/hold").websocket_handler(move |ws: WebSocketContext| {
        let events = events.clone();
        async move {
            let _ = events.send(Deaf::Started);
            ws.cancel.cancelled().await;
            let _ = events.send(Deaf::Cancelled);
            Ok::<_, HandlerError>(())
        }
    });
    (Service::builder("deaf", "1.0.0").endpoint(hold).build().unwrap(), rx)
}

async fn deaf_event(events: &mut mpsc::UnboundedReceiver<Deaf>) -> Deaf {
    tokio::time::timeout(2 * WAIT, events.recv()).await.expect("the handler said nothing").expect("handler gone")
}

/// Pushes [`PUSHED_MESSAGES`] messages on `ws` while reading what comes back; returns
/// the close frame the gateway sends.
async fn push_until_closed(ws: Client) -> CloseFrame {
    let (mut sink, mut stream) = ws.split();
    let pushing = async move {
        for i in 0..PUSHED_MESSAGES {
            // Fails once the gateway has closed the connection.
            if sink.send(Message::binary(vec![i as u8; MESSAGE])).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = pushing => unreachable!("pushing never ends by itself"),
        frame = close_frame(&mut stream) => frame,
    }
}

/// Reads until the gateway's close frame (within twice [`WAIT`]: the idle timeout runs first).
async fn close_frame(stream: &mut SplitStream<Client>) -> CloseFrame {
    let reading = async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    };
    tokio::time::timeout(2 * WAIT, reading).await.expect("no close frame in time")
}

/// Another client's traffic, all at once, each checked: WebSocket echoes, and the
/// streamed uploads and buffered POSTs of `budget_abuse.rs`.
async fn other_client_traffic(h: &Harness) {
    let mut sessions = JoinSet::new();
    for i in 0..4u8 {
        let mut ws = connect_from(h.addr, OTHER, "/stream/echo").await;
        sessions.spawn(async move {
            for j in 0..8u8 {
                echo(&mut ws, vec![i ^ j; MESSAGE]).await;
            }
            close_normally(ws).await;
        });
    }
    crate::budget_abuse::legit_traffic(h).await;
    while let Some(done) = sessions.join_next().await {
        done.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pushing_into_a_deaf_service_is_held_to_its_cap_and_another_is_served() {
    let mut h = Harness::with_demo_on(ws_budget_config(), Transport::Tcp).await;
    let (deaf, mut events) = deaf_service();
    h.attach(deaf).await;
    let mut pushers = JoinSet::new();
    for _ in 0..PUSHERS {
        let ws = connect_from(h.addr, ATTACKER, "/deaf/hold").await;
        assert_eq!(deaf_event(&mut events).await, Deaf::Started);
        pushers.spawn(push_until_closed(ws));
    }
    // Eight sessions with a 256 KiB window each, yet together held to the client's cap:
    // the gateway stopped reading them.
    let attacker = |c: &BudgetCounters| {
        c.top_clients.iter().find(|holding| holding.client == "127.0.0.1").map_or(0, |holding| holding.bytes)
    };
    until_budget(&h, |c| attacker(c) == CLIENT_CAP).await;
    other_client_traffic(&h).await;
    // Still held back at its cap, never over it, after the other client was served.
    let view = budget_view(&h).await;
    assert_eq!(view["top_clients"][0], json!({"client": "127.0.0.1", "bytes": CLIENT_CAP}), "{view}");
    // Held back past the idle timeout: every pushing session is closed with 1013.
    while let Some(frame) = pushers.join_next().await {
        let frame = frame.unwrap();
        assert_eq!((u16::from(frame.code), frame.reason.as_str()), (1013, "Try again later"));
    }
    h.assert_budget_released().await;
    assert_eq!(budget_view(&h).await["aggregate_bytes"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_service_window_cannot_take_in_time_is_1013_and_cancels_the_stream() {
    let mut cfg = ws_budget_config();
    cfg.limits.stream_window = 16 * 1024;
    cfg.mounts[1].settings.ws_idle_timeout = Duration::from_secs(1);
    let mut h = Harness::with_demo_on(cfg, Transport::Tcp).await;
    let (deaf, mut events) = deaf_service();
    h.attach(deaf).await;
    let ws = connect_from(h.addr, OTHER, "/deaf/hold").await;
    assert_eq!(deaf_event(&mut events).await, Deaf::Started);
    let (mut sink, mut stream) = ws.split();
    // Twice the 16 KiB window: half of it waits for credit the service never grants.
    sink.send(Message::binary(vec![5u8; 2 * MESSAGE])).await.unwrap();
    let frame = close_frame(&mut stream).await;
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (1013, "Try again later"));
    drop((sink, stream));
    // Half a message cannot be followed by a close message: the stream is cancelled.
    assert_eq!(deaf_event(&mut events).await, Deaf::Cancelled);
    h.assert_budget_released().await;
}
