//! One accepted WebSocket, from the client's upgrade to the last byte: messages relayed
//! both ways, the mount's WebSocket limits enforced, and both sides closed when either
//! ends.
//!
//! Two loops run side by side in the session's task, so neither direction can stall the
//! other: *upstream* reads the client (tungstenite answers pings itself; the rate limit
//! counts every frame the client sends, data or control; the idle timer restarts only
//! on a data message, once it has been handed to the service) and writes framed messages
//! to the stream; *downstream* decodes the service's messages and writes them to the
//! client. The first to end decides the [`Plan`]: what the client is told (a close
//! frame, or nothing if it is gone) and what the service is told (a close message and
//! the end of our direction, answered by its own close within [`CLOSE_GRACE`]; or a
//! Cancel). Both closings are bounded in time, and the session's values (slot,
//! reservation, in-flight count, stream handle) drop when the task ends.
//!
//! With permessage-deflate negotiated, the client's socket is read through
//! [`Inflating`] (its compressed messages reach tungstenite as plain frames, so the limits
//! and the budget below apply to decompressed bytes) and the service's messages are
//! compressed for the client ([`Compressor`]).
//!
//! The client is read under the payload budget ([`super::flight`]): only the bytes in
//! flight towards the service are held, and with no room the session stops reading (the
//! client's TCP window closes). A client that cannot hand a message to the service
//! within the idle timeout of the previous one, because the budget or the service's
//! window has no room, is closed with 1013 "Try again later" (silence alone is 1000
//! "Idle timeout").

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, RateLimiter};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use weir_proto::websocket::{self as ws, WsDecoder, WsFramingError, WsMessage};
use weir_proto::CancelReason;
use weir_transport::{DataReceiver, DataSender, Link, StreamError, StreamHandle};

use super::deflate::compress::{CompressError, Compressor};
use super::deflate::inflate::{inflate_error, InflateError, Inflating};
use super::deflate::Deflate;
use super::flight::{Flight, MeteredIo};
use crate::config::MountSettings;
use crate::limits::in_flight::Registered;
use crate::limits::rate::quota;
use crate::limits::shared::SessionSlot;
use crate::observe::exchange::Exchange;
use crate::observe::metrics::backpressure::CreditWait;
use crate::observe::metrics::websocket::SessionMeter;
use crate::routing::InFlightGuard;

/// How long each side gets to finish closing once the session has decided to end.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Silence after which a drained client is taken to have nothing more to send.
const DRAIN_QUIET: Duration = Duration::from_millis(250);
/// Longest close reason a client frame can carry (125-byte control payload − the code).
const MAX_CLOSE_REASON: usize = 123;
/// tungstenite's read buffer per connection (its default, 128 KiB, is a lot per socket).
pub(crate) const READ_BUFFER: usize = 16 * 1024;
/// Close code: the client was held back (no room in the budget or the service's window)
/// longer than the idle timeout; RFC 6455's "Try Again Later".
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// Close code of a connection gone without a close frame (RFC 6455 §7.1.5); never sent,
/// only counted.
const CLOSE_ABNORMAL: u16 = 1006;
/// The reason sent with [`CLOSE_TRY_AGAIN_LATER`].
const TRY_AGAIN_LATER: &str = "Try again later";

type Ws = WebSocketStream<MeteredIo<Inflating<TokioIo<Upgraded>>>>;

/// The most a session may hold in the budget: the per-call limit, or one largest message
/// plus a read ahead of tungstenite's buffer if that is more, so that any message the
/// mount accepts can be assembled.
pub(crate) fn in_flight_limit(per_call: u64, max_message: u64) -> u64 {
    per_call.max(max_message.saturating_add(READ_BUFFER as u64))
}

/// The mount's WebSocket limits, as the session applies them.
#[derive(Debug)]
pub(crate) struct SessionLimits {
    max_message: usize,
    idle: Duration,
    rate: Option<DefaultDirectRateLimiter>,
}

impl SessionLimits {
    pub(crate) fn new(settings: &MountSettings) -> Self {
        SessionLimits {
            max_message: usize::try_from(settings.ws_max_message_size).unwrap_or(usize::MAX),
            idle: settings.ws_idle_timeout,
            rate: settings.ws_rate_limit_messages.and_then(quota).map(RateLimiter::direct),
        }
    }
}

/// Everything one WebSocket holds; dropping it releases all of it.
pub(crate) struct Session {
    pub sender: DataSender,
    pub receiver: DataReceiver,
    /// Cancels the stream (ClientDisconnected) unless completed.
    pub handle: StreamHandle,
    pub limits: SessionLimits,
    /// Business mounts: the registry entry (the operator's cancel).
    pub registered: Option<Registered>,
    /// The opening request's record: the session's bytes count into it, and it is
    /// reported (metrics, access log) when the session ends.
    pub exchange: Arc<Exchange>,
    /// The bytes in flight towards the service, held in the budget; shared with the
    /// reader under tungstenite.
    pub flight: Flight,
    /// The permessage-deflate parameters the client negotiated, if any.
    pub deflate: Option<Deflate>,
    /// The stream's initial credit: the window minus the credit left is what the
    /// service has not acknowledged.
    pub window: u64,
    /// Cancelled when the gateway shuts down: close the client with 1001 "Going away".
    pub going_away: tokio_util::sync::CancellationToken,
    /// The session's counters per mount; it counts as open until dropped.
    pub meter: SessionMeter,
    /// Where the time spent handing messages to the service's stream is counted.
    pub service_wait: CreditWait,
    /// Where the time spent handing messages to the client is counted (the service's
    /// credit is withheld meanwhile).
    pub client_wait: CreditWait,
    /// Held for their drops: the user's slot, the in-flight count.
    pub _permit: SessionSlot,
    /// The client connection: keeps its per-IP slot for the life of the WebSocket.
    pub _conn: std::sync::Arc<crate::limits::connection::ClientConn>,
    pub _in_flight: InFlightGuard<Link>,
}

/// How the client side ended.
#[derive(Debug)]
enum ClientEnd {
    /// A close frame (its code and reason, if any).
    Closed(Option<CloseFrame>),
    /// The connection failed or closed without a close frame.
    Gone(String),
    /// A limit or a protocol rule was broken: close with this code and reason.
    Refused(u16, &'static str),
    /// No room to read or send for the idle timeout; `mid_message`: a message was being
    /// sent, so the stream cannot take a close message after it.
    HeldBack { mid_message: bool },
}

/// How the service side ended.
#[derive(Debug)]
enum ServiceEnd {
    /// A close message.
    Closed(u16, String),
    /// The stream failed, ended without a close, or carried a malformed message.
    Broken { reason: String, cancel: Option<CancelReason> },
    /// Writing to the client failed: it is gone.
    ClientGone(String),
    /// The gateway could not prepare a message for the client (compression failed).
    Failed(String),
}

/// What each side is told when the session ends.
#[derive(Debug)]
struct Plan {
    client: ClientClose,
    service: ServiceClose,
}

#[derive(Debug)]
enum ClientClose {
    /// Send this close frame, then wait for the client's reply.
    Send(Option<CloseFrame>),
    /// The client closed first: flush the close reply tungstenite has queued.
    Acknowledge,
    /// The client is gone.
    Abandon,
}

#[derive(Debug)]
enum ServiceClose {
    /// Send a close message and END_STREAM, then await the service's close and end.
    Send(WsMessage),
    /// The service closed (or failed): await the end of its direction.
    AwaitEnd,
    /// Cancel the stream.
    Cancel(CancelReason),
}

impl Session {
    /// Completes the upgrade and relays until either side ends.
    pub(crate) async fn run(mut self, on_upgrade: OnUpgrade) {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(error = %err, "WebSocket upgrade not completed; cancelling the stream");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .max_message_size(Some(self.limits.max_message))
            .max_frame_size(Some(self.limits.max_message));
        let max_message = self.limits.max_message as u64;
        let client = Inflating::new(TokioIo::new(upgraded), self.deflate.as_ref(), max_message);
        let io = MeteredIo::new(client, self.flight.clone());
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let (mut to_client, mut from_client) = ws.split();
        let plan = self.relay(&mut to_client, &mut from_client).await;
        tracing::debug!(?plan, "WebSocket ending");
        self.meter.closed(plan.close_code());
        let Session { sender, receiver, handle, flight, .. } = self;
        let client = close_client(to_client, from_client, plan.client, &flight);
        let service = close_service(sender, receiver, handle, plan.service);
        tokio::join!(client, service);
    }

    /// Relays both ways until one side ends; returns what to tell each.
    async fn relay(&mut self, to_client: &mut SplitSink<Ws, Message>, from_client: &mut SplitStream<Ws>) -> Plan {
        let operator = self.registered.as_ref().map(|r| r.cancel.clone());
        let operator_cancel = async {
            match &operator {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let traffic = self.exchange.traffic();
        let meter = &self.meter;
        let count_in = |n: usize| {
            traffic.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            meter.client_to_service.message(n);
        };
        let count_out = |n: usize| {
            traffic.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
            meter.service_to_client.message(n);
        };
        let max_message = self.limits.max_message;
        let compressor = self.deflate.as_ref().map(Compressor::new);
        let mut outbound =
            Outbound { sender: &mut self.sender, flight: &self.flight, window: self.window, wait: &self.service_wait };
        let inbound = Inbound { receiver: &mut self.receiver, wait: &self.client_wait };
        tokio::select! {
            end = upstream(from_client, &mut outbound, &self.limits, count_in) => plan_for_client(end),
            end = downstream(inbound, to_client, compressor, max_message, count_out) => plan_for_service(end),
            () = operator_cancel => Plan {
                client: ClientClose::Send(close_frame(ws::CLOSE_POLICY, "Cancelled by an operator")),
                service: ServiceClose::Cancel(CancelReason::Administrative),
            },
            () = self.going_away.cancelled() => Plan {
                client: ClientClose::Send(close_frame(ws::CLOSE_GOING_AWAY, "Going away")),
                service: ServiceClose::Cancel(CancelReason::Shutdown),
            },
        }
    }
}

/// The stream towards the service and the session's bytes in flight on it.
struct Outbound<'s> {
    sender: &'s mut DataSender,
    flight: &'s Flight,
    /// The stream's initial credit: the window minus the credit left is unacknowledged.
    window: u64,
    /// Counts the time messages wait to be taken by the stream (its credit, the link).
    wait: &'s CreditWait,
}

/// The stream from the service, and where the waits for the client are counted.
struct Inbound<'s> {
    receiver: &'s mut DataReceiver,
    /// Counts the time messages wait to be taken by the client.
    wait: &'s CreditWait,
}

impl Outbound<'_> {
    /// Gives back what the service has acknowledged (no message is being sent), judged by
    /// the credit read once here; returns that credit. A wait for more credit must start
    /// from this very value: credit read again later could include an acknowledgement
    /// this settling did not give back, and a wait above it could then never end while
    /// the session keeps bytes in the budget that other sessions of the client need.
    fn settle(&self) -> u64 {
        let credit = self.sender.credit();
        self.flight.settle(self.window.saturating_sub(credit));
        credit
    }

    /// The client's next message; meanwhile gives back what the service acknowledges,
    /// so an idle session holds nothing and a reader waiting for room gets it.
    async fn next_settling(&mut self, from_client: &mut SplitStream<Ws>) -> Option<Result<Message, WsError>> {
        loop {
            let seen = self.settle();
            if self.flight.outbound() == 0 {
                return from_client.next().await;
            }
            let acknowledged = tokio::select! {
                biased;
                next = from_client.next() => return next,
                acknowledged = self.sender.credit_above(seen) => acknowledged,
            };
            if acknowledged.is_err() {
                // The stream is over: downstream sees how and ends the session.
                return from_client.next().await;
            }
        }
    }

    /// How the client ends when the idle timeout passes while waiting for its next
    /// message: held back if the reader had no room, else idle.
    fn past_idle_timeout(&self) -> ClientEnd {
        match self.flight.held_back() {
            true => ClientEnd::HeldBack { mid_message: false },
            false => ClientEnd::Refused(ws::CLOSE_NORMAL, "Idle timeout"),
        }
    }
}

/// Client → service: every data message, framed, until the client ends, breaks a limit
/// or cannot hand a message over within the idle timeout of the previous one.
async fn upstream(
    from_client: &mut SplitStream<Ws>,
    outbound: &mut Outbound<'_>,
    limits: &SessionLimits,
    count: impl Fn(usize),
) -> ClientEnd {
    let mut deadline = idle_deadline(limits.idle);
    loop {
        let next = tokio::select! {
            next = outbound.next_settling(from_client) => next,
            () = tokio::time::sleep_until(deadline) => return outbound.past_idle_timeout(),
        };
        let message = match next {
            None => return ClientEnd::Gone("connection closed".into()),
            Some(Err(err)) => return client_error(err),
            Some(Ok(message)) => message,
        };
        if limits.rate.as_ref().is_some_and(|rate| rate.check().is_err()) {
            return ClientEnd::Refused(ws::CLOSE_POLICY, "Message rate limit exceeded");
        }
        let forward = match message {
            Message::Text(text) => WsMessage::Text(text.as_str().to_owned()),
            Message::Binary(bytes) => WsMessage::Binary(bytes),
            Message::Close(frame) => return ClientEnd::Closed(frame),
            // Pings are answered by tungstenite; pongs and raw frames carry nothing.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        outbound.flight.hand_over();
        count(forward.payload_len());
        let sent = tokio::select! {
            sent = outbound.wait.timed(send_message(outbound.sender, &forward)) => sent,
            () = tokio::time::sleep_until(deadline) => return ClientEnd::HeldBack { mid_message: true },
        };
        if sent.is_err() {
            // The stream ended on the service's side; downstream sees how and ends the
            // session, so this loop just stops reading.
            return std::future::pending().await;
        }
        let _ = outbound.settle();
        deadline = idle_deadline(limits.idle);
    }
}

/// When the client, silent from now on, is idle; an absurdly long timeout never fires.
fn idle_deadline(idle: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(idle).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// What a read error from the client means.
fn client_error(err: WsError) -> ClientEnd {
    match err {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            ClientEnd::Refused(ws::CLOSE_TOO_BIG, "Message too big")
        }
        WsError::Utf8(_) => ClientEnd::Refused(ws::CLOSE_INVALID_DATA, "Invalid UTF-8 in a text message"),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            ClientEnd::Gone("closed without a close frame".into())
        }
        WsError::Protocol(err) => {
            tracing::debug!(error = %err, "WebSocket client broke the protocol");
            ClientEnd::Refused(ws::CLOSE_PROTOCOL_ERROR, "Protocol error")
        }
        WsError::Io(err) => match inflate_error(&err) {
            Some(InflateError::FrameTooLong) => ClientEnd::Refused(ws::CLOSE_TOO_BIG, "Message too big"),
            Some(InflateError::Corrupt) => ClientEnd::Refused(ws::CLOSE_INVALID_DATA, "Invalid compressed data"),
            None => ClientEnd::Gone(err.to_string()),
        },
        other => ClientEnd::Gone(other.to_string()),
    }
}

/// Service → client: every decoded message until a close, an error or the end;
/// compressed when the client negotiated it.
async fn downstream(
    Inbound { receiver, wait }: Inbound<'_>,
    to_client: &mut SplitSink<Ws, Message>,
    mut compressor: Option<Compressor>,
    max_message: usize,
    count: impl Fn(usize),
) -> ServiceEnd {
    let mut decoder = WsDecoder::new(max_message);
    loop {
        loop {
            let message = match decoder.next_message() {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(err) => return malformed(err),
            };
            count(message.payload_len());
            let out = match message {
                WsMessage::Close { code, reason } => return ServiceEnd::Closed(code, reason),
                WsMessage::Text(text) => {
                    compressed(&mut compressor, true, text.as_bytes()).map(|c| c.unwrap_or_else(|| Message::text(text)))
                }
                WsMessage::Binary(bytes) => {
                    compressed(&mut compressor, false, &bytes).map(|c| c.unwrap_or_else(|| Message::Binary(bytes)))
                }
            };
            let out = match out {
                Ok(out) => out,
                Err(err) => return ServiceEnd::Failed(err.to_string()),
            };
            if let Err(err) = wait.timed(to_client.send(out)).await {
                return ServiceEnd::ClientGone(err.to_string());
            }
        }
        match receiver.next_chunk().await {
            Some(Ok(chunk)) => decoder.push(&chunk),
            Some(Err(err)) => return ServiceEnd::Broken { reason: err.to_string(), cancel: None },
            None => {
                let reason = match decoder.finish() {
                    Ok(()) => "the service ended the stream without a close message".to_owned(),
                    Err(err) => err.to_string(),
                };
                return ServiceEnd::Broken { reason, cancel: None };
            }
        }
    }
}

/// The message compressed, if the client negotiated compression and it is long enough.
fn compressed(
    compressor: &mut Option<Compressor>,
    text: bool,
    payload: &[u8],
) -> Result<Option<Message>, CompressError> {
    match compressor {
        Some(compressor) => compressor.message(text, payload),
        None => Ok(None),
    }
}

fn malformed(err: WsFramingError) -> ServiceEnd {
    let cancel = match err {
        WsFramingError::TooLarge { .. } => CancelReason::PayloadLimitExceeded,
        _ => CancelReason::HandlerFailed,
    };
    ServiceEnd::Broken { reason: format!("malformed message from the service: {err}"), cancel: Some(cancel) }
}

impl Plan {
    /// The code the session closes with, for the metrics: the one the client is sent,
    /// else the client's own (passed on to the service), else 1006 for a client gone
    /// without a close frame; `None` for a close without a code.
    fn close_code(&self) -> Option<u16> {
        match (&self.client, &self.service) {
            (ClientClose::Send(frame), _) => frame.as_ref().map(|f| u16::from(f.code)),
            (ClientClose::Acknowledge, ServiceClose::Send(WsMessage::Close { code, .. })) => Some(*code),
            (ClientClose::Acknowledge, _) => None,
            (ClientClose::Abandon, _) => Some(CLOSE_ABNORMAL),
        }
    }
}

/// The client ended first.
fn plan_for_client(end: ClientEnd) -> Plan {
    match end {
        ClientEnd::Closed(frame) => {
            let (code, reason) =
                frame.map_or((ws::CLOSE_NO_STATUS, String::new()), |f| (f.code.into(), f.reason.as_str().to_owned()));
            Plan { client: ClientClose::Acknowledge, service: ServiceClose::Send(WsMessage::close(code, reason)) }
        }
        ClientEnd::Gone(reason) => {
            tracing::debug!(%reason, "WebSocket client gone");
            Plan { client: ClientClose::Abandon, service: ServiceClose::Cancel(CancelReason::ClientDisconnected) }
        }
        ClientEnd::Refused(code, reason) => {
            tracing::info!(code, reason, "closing a WebSocket at a limit");
            Plan {
                client: ClientClose::Send(close_frame(code, reason)),
                service: ServiceClose::Send(WsMessage::close(code, reason)),
            }
        }
        ClientEnd::HeldBack { mid_message } => {
            tracing::info!(mid_message, "closing a WebSocket held back past its idle timeout");
            let service = match mid_message {
                true => ServiceClose::Cancel(CancelReason::Timeout),
                false => ServiceClose::Send(WsMessage::close(CLOSE_TRY_AGAIN_LATER, TRY_AGAIN_LATER)),
            };
            Plan { client: ClientClose::Send(close_frame(CLOSE_TRY_AGAIN_LATER, TRY_AGAIN_LATER)), service }
        }
    }
}

/// The service ended first.
fn plan_for_service(end: ServiceEnd) -> Plan {
    match end {
        ServiceEnd::Closed(code, reason) => {
            Plan { client: ClientClose::Send(close_frame(code, &reason)), service: ServiceClose::AwaitEnd }
        }
        ServiceEnd::Broken { reason, cancel } => {
            tracing::warn!(%reason, "WebSocket stream from the service broke; closing the client with 1011");
            let service = cancel.map_or(ServiceClose::AwaitEnd, ServiceClose::Cancel);
            Plan { client: ClientClose::Send(close_frame(ws::CLOSE_INTERNAL, "Service unavailable")), service }
        }
        ServiceEnd::ClientGone(reason) => {
            tracing::debug!(%reason, "WebSocket client gone while writing to it");
            Plan { client: ClientClose::Abandon, service: ServiceClose::Cancel(CancelReason::ClientDisconnected) }
        }
        ServiceEnd::Failed(reason) => {
            tracing::error!(%reason, "WebSocket message for the client failed; closing both sides with 1011");
            Plan {
                client: ClientClose::Send(close_frame(ws::CLOSE_INTERNAL, "Internal error")),
                service: ServiceClose::Send(WsMessage::close(ws::CLOSE_INTERNAL, "Internal error")),
            }
        }
    }
}

/// The close frame for `code`: none for 1005 (no code), 1011 for a code a client may not
/// receive, the reason cut to fit a control frame.
fn close_frame(code: u16, reason: &str) -> Option<CloseFrame> {
    if code == ws::CLOSE_NO_STATUS {
        return None;
    }
    let code = match CloseCode::from(code) {
        code if code.is_allowed() => code,
        _ => CloseCode::from(ws::CLOSE_INTERNAL),
    };
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Some(CloseFrame { code, reason: reason[..end].to_owned().into() })
}

/// Sends one message on the stream.
async fn send_message(sender: &mut DataSender, message: &WsMessage) -> Result<(), StreamError> {
    let bytes: Bytes = message.encode().map_err(|e| StreamError::Failed(e.to_string()))?;
    sender.send(bytes).await
}

/// Tells the client, bounded by [`CLOSE_GRACE`], then closes the connection.
async fn close_client(
    mut to_client: SplitSink<Ws, Message>,
    mut from_client: SplitStream<Ws>,
    close: ClientClose,
    flight: &Flight,
) {
    let closing = async {
        match close {
            ClientClose::Abandon => {}
            // Flushes the reply tungstenite queued when the client's close arrived.
            ClientClose::Acknowledge => drop(to_client.close().await),
            ClientClose::Send(frame) => {
                if to_client.send(Message::Close(frame)).await.is_err() {
                    return;
                }
                let mut replied = false;
                while let Some(Ok(message)) = from_client.next().await {
                    if message.is_text() || message.is_binary() {
                        flight.discard();
                    }
                    if message.is_close() {
                        // The closing handshake is complete: the server closes the TCP
                        // connection first (RFC 6455 §7.1.1), without waiting for the client.
                        replied = true;
                        break;
                    }
                }
                // No reply: the client's reading broke (an oversized or invalid frame) and
                // it may still be sending. Draining keeps unread bytes from turning the
                // close into a reset that could destroy the close frame in flight.
                if !replied {
                    if let Ok(ws) = from_client.reunite(to_client) {
                        drain(ws).await;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, closing).await;
}

/// Ends our side of the TCP connection and reads what the client still sends, until it
/// closes its side or falls silent for [`DRAIN_QUIET`].
async fn drain(mut ws: Ws) {
    // Thrown away as read: nothing to hold in the budget.
    let io = ws.get_mut().unmetered().raw();
    let _ = io.shutdown().await;
    let mut sink = [0u8; 4096];
    while let Ok(Ok(1..)) = tokio::time::timeout(DRAIN_QUIET, io.read(&mut sink)).await {}
}

/// Tells the service, bounded by [`CLOSE_GRACE`]: the stream completes when the
/// service's direction ends in time, else it is cancelled.
async fn close_service(sender: DataSender, mut receiver: DataReceiver, handle: StreamHandle, close: ServiceClose) {
    let message = match close {
        ServiceClose::Cancel(reason) => return handle.cancel(reason),
        ServiceClose::Send(message) => Some(message),
        ServiceClose::AwaitEnd => None,
    };
    // Kept out here so that a timeout cancels with `Timeout`, not the sender's drop reason.
    let mut sender = Some(sender);
    let ended = tokio::time::timeout(CLOSE_GRACE, async {
        if let (Some(message), Some(open)) = (message, sender.as_mut()) {
            if send_message(open, &message).await.is_ok() {
                if let Some(open) = sender.take() {
                    let _ = open.finish().await;
                }
            }
        }
        // Whatever the service still sends is for a client that has been told goodbye.
        while let Some(Ok(_)) = receiver.next_chunk().await {}
    })
    .await;
    match ended {
        Ok(()) => handle.complete(),
        Err(_) => handle.cancel(CancelReason::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_and_reason(frame: Option<CloseFrame>) -> Option<(u16, String)> {
        frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned()))
    }

    #[test]
    fn close_frames_carry_only_what_a_client_may_receive() {
        assert_eq!(code_and_reason(close_frame(4000, "bye")), Some((4000, "bye".into())));
        assert_eq!(close_frame(ws::CLOSE_NO_STATUS, "ignored"), None);
        assert_eq!(code_and_reason(close_frame(1006, "")), Some((1011, String::new())));
        assert_eq!(code_and_reason(close_frame(2000, "")), Some((1011, String::new())));
        // 62 two-byte characters: cut at 61 of them (122 bytes), never inside one.
        let long = "é".repeat(62);
        let (_, reason) = code_and_reason(close_frame(1000, &long)).unwrap();
        assert_eq!(reason, "é".repeat(61));
    }

    #[test]
    fn an_oversized_client_message_is_1009_and_a_vanished_client_is_gone() {
        let too_long = WsError::Capacity(CapacityError::MessageTooLong { size: 2, max_size: 1 });
        assert!(matches!(client_error(too_long), ClientEnd::Refused(1009, "Message too big")));
        let reset = WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake);
        assert!(matches!(client_error(reset), ClientEnd::Gone(_)));
        let inflated = |err| WsError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, err));
        let bomb = inflated(InflateError::FrameTooLong);
        assert!(matches!(client_error(bomb), ClientEnd::Refused(1009, "Message too big")));
        let corrupt = inflated(InflateError::Corrupt);
        assert!(matches!(client_error(corrupt), ClientEnd::Refused(1007, "Invalid compressed data")));
    }
}
