//! The multiplexed link: many request streams over one framed connection.
//!
//! A `Link` owns two tasks. The reader decodes frames and routes them: stream frames to
//! the stream's entry in the stream table (`streams.rs`), everything else to the owner as
//! [`LinkEvent`]s. The writer drains two queues: an unbounded control queue (credit,
//! cancel, heartbeat, error: small frames whose number is bounded by the traffic that
//! causes them) that it always serves first, and a bounded data queue (heads and stream
//! data) whose bound is the link's backpressure.
//!
//! Stream rules, enforced here for both roles: the gateway opens streams with strictly
//! increasing ids and queues each head in id order (see `streams.rs`); data may not
//! exceed granted credit, follow END_STREAM, or arrive for a stream that never existed.
//! Any violation closes the whole link with an Error frame and
//! a logged reason; other links are untouched. Frames for a stream that has ended
//! (completed or cancelled, by either side) are ignored however late they come, since
//! the peer may have sent them before it saw the end: so a violation is something only a
//! faulty peer can cause, never a race between two correct ones.
//! When the link closes, every open stream fails with `ConnectionLost`.
//!
//! An owner that counts the link's traffic starts it with a [`TrafficObserver`], told of
//! each frame as the reader decodes it and as the writer queues it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Framed, FramedParts};
use tokio_util::sync::CancellationToken;
use weir_proto::{
    BodyMode, Cancel, CancelReason, Credit, EndpointsUpdate, ErrorCode, ErrorMessage, Frame, FrameCodec, FrameType,
    GoAway, Heartbeat, Message, RequestHead, ResponseHead, Welcome,
};

pub mod flow;
mod frame_writer;
mod handles;
mod reader;
mod streams;
mod write_clock;
mod writer;

pub use handles::{Responder, StreamHandle};

use self::flow::{CreditGate, DataReceiver, DataSender, StreamError};
use crate::ByteStream;
use streams::{LinkClosed, StreamEntry, StreamTable, Streams};
use write_clock::WriteClock;

/// Why the reader closes a link: a description of the peer's violation.
type Violation = String;

/// Largest credit a peer may accumulate on one stream (as HTTP/2: 2^31 - 1).
const MAX_CREDIT: u64 = (1 << 31) - 1;

/// Told of every frame a link reads and writes, with its size on the wire (header and
/// payload): how the link's owner counts its traffic (the gateway, per service). Called
/// from the link's reader and writer tasks, so it must be cheap and never block.
pub trait TrafficObserver: Send + Sync + std::fmt::Debug {
    /// A frame of `wire_bytes` was read from the peer.
    fn frame_read(&self, wire_bytes: usize);
    /// A frame of `wire_bytes` was queued for the peer, in the order it is written.
    fn frame_written(&self, wire_bytes: usize);
}

/// The size of `frame` on the wire.
fn wire_size(frame: &Frame) -> usize {
    weir_proto::codec::FRAME_HEADER_LEN + frame.payload.len()
}

/// Which end of the connection this link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens streams: sends requests, receives responses.
    Gateway,
    /// Accepts streams: receives requests, sends responses.
    Service,
}

impl Role {
    /// The reason sent when a body sender is dropped unfinished.
    pub(crate) fn default_abort_reason(self) -> CancelReason {
        match self {
            Role::Gateway => CancelReason::ClientDisconnected,
            Role::Service => CancelReason::HandlerFailed,
        }
    }

    fn outgoing_data(self) -> FrameType {
        match self {
            Role::Gateway => FrameType::RequestStreamData,
            Role::Service => FrameType::ResponseStreamData,
        }
    }
}

/// Sizes a link works with.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    /// Largest frame payload read or written.
    pub max_frame_payload: usize,
    /// Stream bytes we let the peer send per stream before we grant more.
    pub recv_window: u32,
    /// How far a stream's receive window may grow while its consumer keeps up. Above
    /// `recv_window`, the link's receivers are paced (see [`DataReceiver`]):
    /// `recv_window` is then only where a window starts, so that a consumer that never
    /// takes anything costs that much and no more.
    pub recv_window_max: u32,
    /// Stream bytes the peer lets us send per stream before it grants more.
    pub send_window: u32,
    /// Frames the data queue holds before senders wait (the link's backpressure).
    pub data_queue: usize,
    /// Gateway role: the most endpoints an EndpointsUpdate may declare. One declaring
    /// more is judged from its count prefix alone and never decoded, so a peer cannot make
    /// the link allocate for a list its owner would refuse anyway; the owner gets
    /// [`LinkEvent::EndpointsOverLimit`] instead.
    pub max_update_endpoints: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            max_frame_payload: weir_proto::DEFAULT_MAX_FRAME_PAYLOAD,
            recv_window: weir_proto::DEFAULT_STREAM_WINDOW,
            recv_window_max: weir_proto::DEFAULT_STREAM_WINDOW,
            send_window: weir_proto::DEFAULT_STREAM_WINDOW,
            data_queue: 64,
            // The wire's own bound on a list: no update is refused by its count.
            max_update_endpoints: usize::from(u16::MAX),
        }
    }
}

/// What the link tells its owner.
// A request is the common event and is moved once; boxing it would cost an allocation
// per request to save stack space on the rare heartbeat.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum LinkEvent {
    Heartbeat(Heartbeat),
    EndpointsUpdate(EndpointsUpdate),
    /// Gateway role: an EndpointsUpdate declaring `declared` endpoints, more than
    /// [`LinkConfig::max_update_endpoints`]; refused undecoded, the link stays open.
    EndpointsOverLimit {
        declared: usize,
    },
    /// Service role: a new request stream.
    Request(IncomingRequest),
    /// Service role: the gateway asks for a new connection; this one stays up until the
    /// gateway closes it.
    GoAway(GoAway),
}

/// Service role: one request to answer.
#[derive(Debug)]
pub struct IncomingRequest {
    pub head: RequestHead,
    /// The streamed body, when the head says `Streamed`.
    pub body: Option<DataReceiver>,
    /// Fires when the gateway cancels the request or the link closes.
    pub cancel: CancellationToken,
    pub responder: Responder,
}

/// Gateway role: a response head and, when streamed, its body.
#[derive(Debug)]
pub struct IncomingResponse {
    pub head: ResponseHead,
    pub body: Option<DataReceiver>,
}

/// Gateway role: a request sent, awaiting its response.
#[derive(Debug)]
pub struct OutgoingCall {
    /// The body sender, when the request head says `Streamed`.
    pub body: Option<DataSender>,
    /// Resolves with the response head or the stream's failure.
    pub response: oneshot::Receiver<Result<IncomingResponse, StreamError>>,
    /// Cancels the stream when dropped before [`StreamHandle::complete`].
    pub handle: StreamHandle,
}

#[derive(Debug)]
struct Shared {
    role: Role,
    config: LinkConfig,
    streams: Streams,
    control_tx: mpsc::UnboundedSender<Frame>,
    data_tx: mpsc::Sender<Frame>,
    /// Fires once when the link closes, for any reason.
    closed: CancellationToken,
    close_reason: Mutex<Option<String>>,
    /// When the link started; `last_received_ms` counts from it.
    started: Instant,
    /// Milliseconds from `started` to the last frame read, for liveness checks.
    last_received_ms: AtomicU64,
    /// Heartbeats read from the peer: liveness is judged only against a peer that sends them.
    peer_heartbeats: AtomicU64,
    /// How long the writer has been stuck on bytes the peer does not take: a peer that
    /// stopped reading still heartbeats, so only this shows it.
    write_clock: Arc<WriteClock>,
    /// Told of every frame read and written, when the owner counts the link's traffic.
    observer: Option<Arc<dyn TrafficObserver>>,
}

/// A handle on one multiplexed connection; cheap to clone.
#[derive(Debug, Clone)]
pub struct Link {
    shared: Arc<Shared>,
}

type FrameSink<T> = frame_writer::FrameWriter<WriteHalf<T>>;
type FrameSource<T> = Framed<ReadHalf<T>, FrameCodec>;

impl Link {
    /// Starts the reader and writer tasks on a connection past its Hello. A link started
    /// held (`open == false`) writes only control frames until it has written the
    /// Welcome of [`Link::open_with`].
    pub fn start<T: ByteStream>(
        framed: Framed<T, FrameCodec>,
        role: Role,
        config: LinkConfig,
        open: bool,
    ) -> (Link, mpsc::UnboundedReceiver<LinkEvent>) {
        Link::start_observed(framed, role, config, open, None)
    }

    /// Like [`Link::start`], telling `observer` of every frame read and written.
    pub fn start_observed<T: ByteStream>(
        framed: Framed<T, FrameCodec>,
        role: Role,
        config: LinkConfig,
        open: bool,
        observer: Option<Arc<dyn TrafficObserver>>,
    ) -> (Link, mpsc::UnboundedReceiver<LinkEvent>) {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (data_tx, data_rx) = mpsc::channel(config.data_queue.max(1));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let link = Link {
            shared: Arc::new(Shared {
                role,
                config,
                streams: Streams::default(),
                control_tx,
                data_tx,
                closed: CancellationToken::new(),
                close_reason: Mutex::new(None),
                started: Instant::now(),
                last_received_ms: AtomicU64::new(0),
                peer_heartbeats: AtomicU64::new(0),
                write_clock: Arc::default(),
                observer,
            }),
        };
        let parts = framed.into_parts();
        let (read_half, write_half) = tokio::io::split(parts.io);
        // The handshake may have read with a smaller maximum (a peer not yet authenticated);
        // from here on frames may be as large as the link's configuration allows.
        // Bytes the handshake read past its last frame belong to the first frames here, and
        // are decoded before the socket is read again (built from parts, the reader knows
        // its buffer may already hold frames: a request right behind the Welcome is not
        // left waiting for the peer's next bytes).
        let mut source_parts = FramedParts::new::<Frame>(read_half, FrameCodec::new(config.max_frame_payload));
        source_parts.read_buf = parts.read_buf;
        let source = Framed::from_parts(source_parts);
        let clock = Arc::clone(&link.shared.write_clock);
        let sink = frame_writer::FrameWriter::new(write_half, config.max_frame_payload, parts.write_buf, clock);
        tokio::spawn(link.clone().write_loop(sink, control_rx, data_rx, open));
        tokio::spawn(link.clone().read_loop(source, events_tx));
        (link, events_rx)
    }

    /// Queues `welcome` on the control queue; once the writer has written it, data frames
    /// flow (a held link's writer opens on the Welcome it writes, so no request queued
    /// meanwhile can overtake it, and none waits behind a flag set too late).
    pub fn open_with(&self, welcome: &Welcome) -> Result<(), StreamError> {
        self.send_control(welcome.to_frame(0).map_err(|e| StreamError::Failed(e.to_string()))?)
    }

    /// This link's role.
    pub fn role(&self) -> Role {
        self.shared.role
    }

    /// Whether the link has closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Resolves when the link closes.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    /// Why the link closed, once it has.
    pub fn close_reason(&self) -> Option<String> {
        self.reason_slot().clone()
    }

    /// When the last frame arrived from the peer (the link's start if none has).
    pub fn last_received(&self) -> Instant {
        self.shared.started + Duration::from_millis(self.shared.last_received_ms.load(Ordering::Relaxed))
    }

    /// How long, at `now`, bytes have waited to be written without the peer taking any:
    /// zero while the writer is idle or making progress. A peer that stopped reading its
    /// socket shows here, however regularly it still sends heartbeats.
    pub fn write_stalled_for(&self, now: Instant) -> Duration {
        self.shared.write_clock.stalled_for(now)
    }

    /// How many heartbeats the peer has sent on this link.
    pub fn peer_heartbeats(&self) -> u64 {
        self.shared.peer_heartbeats.load(Ordering::Relaxed)
    }

    /// Reader side: `frame` arrived now.
    fn note_received(&self, frame: &Frame) {
        if let Some(observer) = &self.shared.observer {
            observer.frame_read(wire_size(frame));
        }
        let frame_type = frame.frame_type;
        let ms = u64::try_from(self.shared.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.shared.last_received_ms.store(ms, Ordering::Relaxed);
        if frame_type == FrameType::Heartbeat {
            self.shared.peer_heartbeats.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether stream `id` is open (in the table: not ended, not cancelled).
    pub(crate) fn stream_open(&self, id: u64) -> bool {
        self.table().entries.contains_key(&id)
    }

    /// Free places in the queue of data frames waiting for the writer.
    pub(crate) fn data_queue_free(&self) -> usize {
        self.shared.data_tx.capacity()
    }

    /// Streams currently open.
    pub fn open_streams(&self) -> usize {
        self.table().entries.len()
    }

    /// Closes the link: every open stream fails with `ConnectionLost(reason)`.
    pub fn close(&self, reason: impl Into<String>) {
        let reason = reason.into();
        {
            let mut slot = self.reason_slot();
            if slot.is_some() {
                return;
            }
            *slot = Some(reason.clone());
        }
        let entries = self.table().close();
        for entry in entries {
            entry.fail(StreamError::ConnectionLost(reason.clone()));
        }
        self.shared.closed.cancel();
    }

    /// Sends an Error frame for the connection, then closes it.
    pub fn close_with_error(&self, code: ErrorCode, message: impl Into<String>) {
        let message = message.into();
        if let Ok(frame) = (ErrorMessage { code, message: message.clone() }).to_frame(0) {
            let _ = self.shared.control_tx.send(frame);
        }
        self.close(message);
    }

    /// Sends a heartbeat (either role).
    pub fn send_heartbeat(&self, heartbeat: &Heartbeat) -> Result<(), StreamError> {
        self.send_control(heartbeat.to_frame(0).map_err(|e| StreamError::Failed(e.to_string()))?)
    }

    /// Gateway role: tells the service to dial again while this link finishes its streams.
    pub fn send_go_away(&self, go_away: &GoAway) -> Result<(), StreamError> {
        self.send_control(go_away.to_frame(0).map_err(|e| StreamError::Failed(e.to_string()))?)
    }

    /// Service role: replaces the registered endpoint list.
    pub fn send_endpoints_update(&self, update: &EndpointsUpdate) -> Result<(), StreamError> {
        self.send_control(update.to_frame(0).map_err(|e| StreamError::Failed(e.to_string()))?)
    }

    /// Gateway role: opens a stream and sends the request head. With a `Streamed` head the
    /// body sender starts with `send_window` credit at most (the peer's window caps it).
    pub async fn call(&self, head: RequestHead, send_window: u32) -> Result<OutgoingCall, StreamError> {
        debug_assert_eq!(self.role(), Role::Gateway);
        let streamed = head.body_mode == BodyMode::Streamed;
        let frame_payload = head.encode().map_err(|e| StreamError::Failed(e.to_string()))?;
        // Room in the data queue first: the head then goes in without waiting, inside the
        // table's lock, right as its id is allocated. Dropping this future before that
        // leaves nothing behind.
        let permit = tokio::select! {
            permit = self.shared.data_tx.reserve() => permit.map_err(|_| self.lost())?,
            _ = self.shared.closed.cancelled() => return Err(self.lost()),
        };
        let gate = CreditGate::new(u64::from(send_window.min(self.shared.config.send_window)));
        let (tx, rx) = oneshot::channel();
        let id = self
            .shared
            .streams
            .open(StreamEntry::outgoing(Arc::clone(&gate), tx), |id| {
                permit.send(Frame::new(FrameType::Request, id, frame_payload));
            })
            .map_err(|LinkClosed| self.lost())?;
        let handle = StreamHandle { link: self.clone(), id, done: false };
        let body = streamed.then(|| self.data_sender(id, gate));
        Ok(OutgoingCall { body, response: rx, handle })
    }

    fn data_sender(&self, id: u64, gate: Arc<CreditGate>) -> DataSender {
        let max = self.shared.config.max_frame_payload;
        DataSender::new(self.clone(), id, gate, self.role().outgoing_data(), max)
    }

    /// Cancels a stream (idempotent): tells the peer and fails local waiters.
    pub fn cancel_stream(&self, id: u64, reason: CancelReason) {
        let entry = self.table().entries.remove(&id);
        if let Some(entry) = entry {
            if let Ok(frame) = (Cancel { reason }).to_frame(id) {
                let _ = self.send_control(frame);
            }
            entry.fail(StreamError::Cancelled(reason));
        }
    }

    /// Marks a stream finished normally on our side, forgetting it if nothing is pending.
    pub(crate) fn local_body_finished(&self, id: u64) {
        if self.role() == Role::Service {
            self.complete_stream(id);
        }
    }

    /// Forgets a stream that ended normally; late peer frames for it are then ignored
    /// (the peer may still be sending a body nobody reads any more).
    fn complete_stream(&self, id: u64) {
        let entry = self.table().entries.remove(&id);
        if let Some(entry) = entry {
            entry.send_gate.close(StreamError::Closed);
        }
    }

    pub(crate) fn grant_credit(&self, id: u64, bytes: usize) {
        let Ok(increment) = u32::try_from(bytes) else {
            return;
        };
        {
            let mut table = self.table();
            let Some(entry) = table.entries.get_mut(&id) else {
                return;
            };
            entry.recv_credit += u64::from(increment);
        }
        if let Ok(frame) = (Credit { increment }).to_frame(id) {
            let _ = self.send_control(frame);
        }
    }

    pub(crate) async fn send_data(&self, frame: Frame) -> Result<(), StreamError> {
        if self.is_closed() {
            return Err(self.lost());
        }
        tokio::select! {
            sent = self.shared.data_tx.send(frame) => sent.map_err(|_| self.lost()),
            _ = self.shared.closed.cancelled() => Err(self.lost()),
        }
    }

    /// The error of an operation on a closed link.
    fn lost(&self) -> StreamError {
        StreamError::ConnectionLost(self.close_reason().unwrap_or_else(|| "link closed".into()))
    }

    fn send_control(&self, frame: Frame) -> Result<(), StreamError> {
        if self.is_closed() {
            return Err(StreamError::ConnectionLost(self.close_reason().unwrap_or_default()));
        }
        self.shared.control_tx.send(frame).map_err(|_| StreamError::ConnectionLost("writer stopped".into()))
    }

    fn table(&self) -> crate::sync::MutexGuard<'_, StreamTable> {
        self.shared.streams.lock()
    }

    fn reason_slot(&self) -> MutexGuard<'_, Option<String>> {
        self.shared.close_reason.lock().unwrap_or_else(|p| p.into_inner())
    }
}
