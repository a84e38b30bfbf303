//! Per-stream flow control: the sending half waits for credit, the receiving half grants
//! credit as its consumer takes bytes.
//!
//! Invariant: a sender never has more unacknowledged stream bytes outstanding than the
//! credit it started with, because the receiver grants back exactly what its consumer
//! took. So the receiver's queue for one stream never holds more than its window, and
//! that queue can be an unbounded channel without being unbounded memory.

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

    /// Resolves once the credit left exceeds `seen` (the peer acknowledged bytes), or
    /// with the stream's error once it has closed.
    pub async fn credit_above(&self, seen: u64) -> Result<(), StreamError> {
        self.gate.wait_above(seen).await
    }

    /// Sends `chunk`, waiting for credit; splits it when credit or frame size is smaller.
    pub async fn send(&mut self, mut chunk: Bytes) -> Result<(), StreamError> {
        while !chunk.is_empty() {
            let n = self.gate.acquire(chunk.len().min(self.max_frame)).await?;
            let part = chunk.split_to(n);
            self.link.send_data(Frame::data(self.frame_type, self.id, part, false)).await?;
        }
        Ok(())
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
/// Each chunk taken grants the sender that many bytes of credit again.
#[derive(Debug)]
pub struct DataReceiver {
    rx: mpsc::UnboundedReceiver<DataEvent>,
    link: Link,
    id: u64,
    ended: bool,
}

impl DataReceiver {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<DataEvent>, link: Link, id: u64) -> Self {
        DataReceiver { rx, link, id, ended: false }
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
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(DataEvent::Data(bytes, last))) => {
                if last {
                    self.ended = true;
                    if bytes.is_empty() {
                        return Poll::Ready(None);
                    }
                } else if !bytes.is_empty() {
                    self.link.grant_credit(self.id, bytes.len());
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
