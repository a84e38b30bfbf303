//! Per-stream flow control: the sending half waits for credit, the receiving half grants
//! credit as its consumer takes bytes.
//!
//! Invariant: a sender never has more unacknowledged stream bytes outstanding than the
//! receiver's window for the stream: the credit it started with, for a receiver that
//! grants back exactly what its consumer took, or the paced window (at most the link's
//! `recv_window_max`) for a paced one (see [`DataReceiver`]). So the receiver's queue for
//! one stream never holds more than its window, and that queue can be an unbounded
//! channel without being unbounded memory.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use thiserror::Error;
use tokio::sync::{mpsc, Notify};
use weir_proto::{CancelReason, Frame, FrameType};

use super::Link;

/// Why a stream ended without its normal end.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StreamError {
    #[error("stream cancelled: {0:?}")]
    Cancelled(CancelReason),
    #[error("peer reported a stream failure: {0}")]
    Failed(String),
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    #[error("stream already closed")]
    Closed,
}

/// What the link's reader hands a [`DataReceiver`].
#[derive(Debug)]
pub(crate) enum DataEvent {
    /// A chunk; `true` when it is the last.
    Data(Bytes, bool),
    /// The stream ended abnormally.
    Reset(StreamError),
}

#[derive(Debug, Default)]
struct GateState {
    available: u64,
    closed: Option<StreamError>,
}

/// Credit the peer has granted us on one stream.
#[derive(Debug, Default)]
pub(crate) struct CreditGate {
    state: Mutex<GateState>,
    notify: Notify,
}

impl CreditGate {
    pub(crate) fn new(initial: u64) -> Arc<Self> {
        Arc::new(CreditGate {
            state: Mutex::new(GateState { available: initial, closed: None }),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        // Plain integers behind the lock: a panic elsewhere cannot leave them torn.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds credit; returns the new total so the caller can refuse absurd grants.
    pub(crate) fn add(&self, increment: u64) -> u64 {
        let total = {
            let mut s = self.lock();
            s.available = s.available.saturating_add(increment);
            s.available
        };
        self.notify.notify_waiters();
        total
    }

    /// Fails every current and future wait with `error` (first error wins).
    pub(crate) fn close(&self, error: StreamError) {
        self.lock().closed.get_or_insert(error);
        self.notify.notify_waiters();
    }

    /// Credit left to send with.
    fn available(&self) -> u64 {
        self.lock().available
    }

    /// Waits until the credit left exceeds `seen`, or the stream has closed (its error).
    async fn wait_above(&self, seen: u64) -> Result<(), StreamError> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let s = self.lock();
                if let Some(err) = &s.closed {
                    return Err(err.clone());
                }
                if s.available > seen {
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// Waits until some credit is available and takes up to `want` bytes of it.
    async fn acquire(&self, want: usize) -> Result<usize, StreamError> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if let Some(err) = &s.closed {
                    return Err(err.clone());
                }
                if s.available > 0 {
                    let n = s.available.min(want as u64);
                    s.available -= n;
                    return Ok(n as usize);
                }
            }
            notified.await;
        }
    }
}

/// A wait for credit longer than this is logged (debug) with the stream's state.
const CREDIT_WAIT_REPORT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a sender can tell about its stream and link, for the log line of a stalled
/// transfer: whose side the bytes wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendState {
    /// Credit left to send with.
    pub credit: u64,
    /// Whether the stream is still open in the link's table (not ended, not cancelled).
    pub stream_open: bool,
    /// Free places in the link's queue of data frames.
    pub data_queue_free: usize,
    /// How long the link's writer has waited on a socket that takes nothing.
    pub write_stalled: std::time::Duration,
    /// How long since the last frame arrived from the peer.
    pub since_last_received: std::time::Duration,
}

/// The sending half of one stream's body.
///
/// Dropped before [`DataSender::finish`], it cancels the stream (the body was cut short).
#[derive(Debug)]
pub struct DataSender {
    link: Link,
    id: u64,
    gate: Arc<CreditGate>,
    frame_type: FrameType,
    max_frame: usize,
    finished: bool,
}

impl DataSender {
    pub(crate) fn new(link: Link, id: u64, gate: Arc<CreditGate>, frame_type: FrameType, max_frame: usize) -> Self {
        DataSender { link, id, gate, frame_type, max_frame, finished: false }
    }

    /// The stream's correlation id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Credit left: how many more bytes may be sent before the peer grants more. The
    /// initial window minus this is what the peer has not acknowledged yet.
    pub fn credit(&self) -> u64 {
        self.gate.available()
    }

    /// The stream's and the link's state now (see [`SendState`]).
    pub fn state(&self) -> SendState {
        let now = std::time::Instant::now();
        SendState {
            credit: self.gate.available(),
            stream_open: self.link.stream_open(self.id),
            data_queue_free: self.link.data_queue_free(),
            write_stalled: self.link.write_stalled_for(now),
            since_last_received: now.saturating_duration_since(self.link.last_received()),
        }
    }

    /// Resolves once the credit left exceeds `seen` (the peer acknowledged bytes), or
    /// with the stream's error once it has closed.
    pub async fn credit_above(&self, seen: u64) -> Result<(), StreamError> {
        self.gate.wait_above(seen).await
    }

    /// Sends `chunk`, waiting for credit; splits it when credit or frame size is smaller.
    pub async fn send(&mut self, mut chunk: Bytes) -> Result<(), StreamError> {
        while !chunk.is_empty() {
            let n = self.acquire(chunk.len().min(self.max_frame)).await?;
            let part = chunk.split_to(n);
            self.link.send_data(Frame::data(self.frame_type, self.id, part, false)).await?;
        }
        Ok(())
    }

    /// Waits for credit for up to `want` bytes; a wait past [`CREDIT_WAIT_REPORT`] is
    /// logged once at debug level with the stream's state (a peer that takes nothing is
    /// normal, a slow client behind it; when a transfer stalls, this says on whose side).
    async fn acquire(&self, want: usize) -> Result<usize, StreamError> {
        let acquire = self.gate.acquire(want);
        tokio::pin!(acquire);
        tokio::select! {
            taken = &mut acquire => return taken,
            () = tokio::time::sleep(CREDIT_WAIT_REPORT) => {}
        }
        tracing::debug!(stream = self.id, state = ?self.state(), "waiting for the peer's credit for {CREDIT_WAIT_REPORT:?}");
        acquire.await
    }

    /// Ends the stream with an explicit END_STREAM.
    pub async fn finish(mut self) -> Result<(), StreamError> {
        self.finished = true;
        self.link.send_data(Frame::data(self.frame_type, self.id, Bytes::new(), true)).await?;
        self.link.local_body_finished(self.id);
        Ok(())
    }

    /// Cancels the stream with `reason`.
    pub fn abort(mut self, reason: CancelReason) {
        self.finished = true;
        self.link.cancel_stream(self.id, reason);
    }
}

impl Drop for DataSender {
    fn drop(&mut self) {
        if !self.finished {
            let reason = self.link.role().default_abort_reason();
            self.link.cancel_stream(self.id, reason);
        }
    }
}

/// The receiving half of one stream's body: a forward-only sequence of chunks.
///
/// Each chunk taken grants the sender that many bytes of credit again. On a link whose
/// `recv_window_max` exceeds its `recv_window` the receiver is *paced*: it grants a
/// chunk's credit only when its consumer asks for the next one (the chunk has left the
/// consumer), and sizes the stream's window to the consumer, from `recv_window` up to
/// `recv_window_max` while the consumer keeps up and back down while it does not. A
/// consumer that stops asking (a client that reads nothing) thereby holds at most the
/// initial window.
#[derive(Debug)]
pub struct DataReceiver {
    rx: mpsc::UnboundedReceiver<DataEvent>,
    link: Link,
    id: u64,
    ended: bool,
    /// `Some` when paced: credit follows the consumer instead of the taking.
    pacing: Option<Pacing>,
}

/// The window of a paced receiver.
///
/// Invariant: `window` is the credit the sender may have outstanding (unsent, in transit,
/// queued here or taken and not yet released), and stays within `start..=max`. It grows
/// by what the consumer released whenever the consumer finds nothing queued (the stream,
/// not the consumer, is the bottleneck: slow start, doubling per window), and shrinks back
/// by what it released whenever a chunk was already waiting for it (the consumer is the
/// bottleneck, so a bigger window would only be bytes held here).
#[derive(Debug)]
struct Pacing {
    window: u64,
    /// The link's initial window: what a consumer that never takes anything costs.
    start: u64,
    /// The most a consumer that keeps up is given.
    max: u64,
    /// Bytes of the last chunk taken, granted back when the consumer asks again.
    taken: u64,
}

impl Pacing {
    /// The credit to grant for the bytes released now, adjusting the window by whether
    /// the consumer found a chunk waiting.
    fn grant_for(&mut self, released: u64, chunk_waiting: bool) -> u64 {
        if chunk_waiting {
            let shrink = released.min(self.window - self.start);
            self.window -= shrink;
            released - shrink
        } else {
            let grow = released.min(self.max - self.window);
            self.window += grow;
            released + grow
        }
    }
}

impl DataReceiver {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<DataEvent>, link: Link, id: u64) -> Self {
        let config = &link.shared.config;
        let (start, max) = (u64::from(config.recv_window), u64::from(config.recv_window_max));
        let pacing = (max > start).then_some(Pacing { window: start, start, max, taken: 0 });
        DataReceiver { rx, link, id, ended: false, pacing }
    }

    /// Grants the credit for the chunk the consumer took last, now that it asks again.
    fn release_taken(&mut self, chunk_waiting: bool) {
        let Some(pacing) = &mut self.pacing else { return };
        let released = std::mem::take(&mut pacing.taken);
        if released == 0 {
            return;
        }
        let increment = pacing.grant_for(released, chunk_waiting);
        if increment > 0 {
            // At most twice a chunk's length, which fits in usize.
            self.link.grant_credit(self.id, increment as usize);
        }
    }

    /// Credit for a chunk just taken: granted now, or, paced, when the consumer asks again.
    fn took(&mut self, len: usize) {
        match &mut self.pacing {
            Some(pacing) => pacing.taken = len as u64,
            None => self.link.grant_credit(self.id, len),
        }
    }

    /// The next chunk; `None` after the explicit end of the stream.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, StreamError>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// Polls for the next chunk (see [`DataReceiver::next_chunk`]).
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = self.rx.poll_recv(cx);
        self.release_taken(polled.is_ready());
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(DataEvent::Data(bytes, last))) => {
                if last {
                    self.ended = true;
                    if bytes.is_empty() {
                        return Poll::Ready(None);
                    }
                } else if !bytes.is_empty() {
                    self.took(bytes.len());
                }
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(Some(DataEvent::Reset(err))) => {
                self.ended = true;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                self.ended = true;
                let reason = self.link.close_reason().unwrap_or_else(|| "stream dropped".to_owned());
                Poll::Ready(Some(Err(StreamError::ConnectionLost(reason))))
            }
        }
    }

    /// Whether the explicit end (or an error) has been seen.
    pub fn is_ended(&self) -> bool {
        self.ended
    }
}

impl Stream for DataReceiver {
    type Item = Result<Bytes, StreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_chunk(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::Pacing;

    #[test]
    fn a_paced_window_doubles_while_the_consumer_keeps_up_and_falls_back_while_it_does_not() {
        let mut pacing = Pacing { window: 16, start: 16, max: 64, taken: 0 };
        assert_eq!(pacing.grant_for(16, false), 32, "starved: what was released, and as much again");
        assert_eq!(pacing.window, 32);
        assert_eq!(pacing.grant_for(32, false), 64);
        assert_eq!(pacing.window, 64);
        assert_eq!(pacing.grant_for(32, false), 32, "capped at max");
        assert_eq!(pacing.grant_for(16, true), 0, "a chunk was waiting: the window shrinks instead");
        assert_eq!(pacing.window, 48);
        assert_eq!(pacing.grant_for(64, true), 32, "never below the start");
        assert_eq!(pacing.window, 16);
        assert_eq!(pacing.grant_for(16, true), 16);
    }
}
