//! Handles that tie a stream's life to a value: dropping them unfinished cancels it.

use std::sync::Arc;

use weir_proto::{BodyMode, CancelReason, FrameType, Message, ResponseHead};

use super::flow::{CreditGate, DataSender, StreamError};
use super::Link;

/// Gateway role: owns an open stream. Dropped before [`StreamHandle::complete`], it
/// cancels the stream as `ClientDisconnected`, the one way a request future is dropped
/// without the gateway choosing to.
#[derive(Debug)]
pub struct StreamHandle {
    pub(super) link: Link,
    pub(super) id: u64,
    pub(super) done: bool,
}

impl StreamHandle {
    /// The stream's correlation id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Cancels the stream with `reason`.
    pub fn cancel(mut self, reason: CancelReason) {
        self.done = true;
        self.link.cancel_stream(self.id, reason);
    }

    /// The exchange finished normally; nothing to cancel.
    pub fn complete(mut self) {
        self.done = true;
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        if !self.done {
            self.link.cancel_stream(self.id, CancelReason::ClientDisconnected);
        }
    }
}

/// Service role: answers one request. Dropped without answering, it reports the
/// stream as failed so the gateway can answer 502 at once instead of timing out.
#[derive(Debug)]
pub struct Responder {
    link: Link,
    id: u64,
    gate: Arc<CreditGate>,
    done: bool,
}

impl Responder {
    pub(super) fn new(link: Link, id: u64, gate: Arc<CreditGate>) -> Self {
        Responder { link, id, gate, done: false }
    }

    /// The stream's correlation id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sends the response head. With a `Streamed` head, returns the body sender; the
    /// stream ends when it finishes. A buffered head ends the stream at once.
    pub async fn send(mut self, head: ResponseHead) -> Result<Option<DataSender>, StreamError> {
        let streamed = head.body_mode == BodyMode::Streamed;
        // Until the head is queued, dropping `self` (encode error, send error, or this
        // future dropped) cancels the stream, so the gateway never waits for nothing.
        let payload = head.encode().map_err(|e| StreamError::Failed(e.to_string()))?;
        let frame = weir_proto::Frame::new(FrameType::Response, self.id, payload);
        self.link.send_data(frame).await?;
        self.done = true;
        if streamed {
            let max = self.link.shared.config.max_frame_payload;
            let sender =
                DataSender::new(self.link.clone(), self.id, Arc::clone(&self.gate), FrameType::ResponseStreamData, max);
            Ok(Some(sender))
        } else {
            self.link.complete_stream(self.id);
            Ok(None)
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.done {
            self.link.cancel_stream(self.id, CancelReason::HandlerFailed);
        }
    }
}
