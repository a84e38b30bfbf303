//! The writer task: the only code that writes to the connection.
//!
//! Control frames go first so that credit and cancels are never stuck behind bulk data,
//! with one exception that keeps each stream's frames in order: before a Cancel or Error
//! for a stream, every data frame already queued is written, so a stream's end can never
//! overtake its own head.
//! The data queue is not served while the link is held (see [`Link::open_with`]): the
//! writer itself opens it once it has queued the Welcome, so no data frame can overtake
//! the Welcome and none is left waiting behind it (the loop that wrote the Welcome serves
//! the data queue from its next turn).
//! A write blocked on a peer that stopped reading is abandoned when the link closes, so
//! closing (eviction) frees the connection instead of waiting on it forever.
//! Frames are queued in batches (see [`FrameWriter`](super::frame_writer::FrameWriter)) and flushed once per batch, or
//! sooner once [`FLUSH_AT`] bytes are queued.

use tokio::sync::mpsc;
use weir_proto::{Frame, FrameType, ProtoError};

use super::{FrameSink, Link};
use crate::ByteStream;

/// Frames queued before a flush, so one busy stream cannot delay a flush forever.
const BATCH: usize = 256;
/// Queued bytes that trigger a flush within a batch: large enough for few `writev`
/// calls, small enough that the peer starts reading early.
const FLUSH_AT: usize = 256 * 1024;

/// Whether the writer serves the data queue: from the start, or once it has queued the
/// Welcome of a held link.
struct DataGate {
    open: bool,
}

impl Link {
    pub(super) async fn write_loop<T: ByteStream>(
        self,
        mut sink: FrameSink<T>,
        mut control: mpsc::UnboundedReceiver<Frame>,
        mut data: mpsc::Receiver<Frame>,
        open: bool,
    ) {
        let mut gate = DataGate { open };
        loop {
            let first = tokio::select! {
                biased;
                Some(frame) = control.recv() => frame,
                Some(frame) = data.recv(), if gate.open => frame,
                _ = self.shared.closed.cancelled() => break,
            };
            // Let the tasks already woken queue their frames too, so that one write (and
            // one wake-up of the peer) carries many requests instead of one each.
            tokio::task::yield_now().await;
            // Biased: a closing link still sends what can go at once (its Error frame).
            let written = tokio::select! {
                biased;
                written = self.write_batch(&mut sink, first, &mut control, &mut data, &mut gate) => written,
                _ = self.shared.closed.cancelled() => break,
            };
            if let Err(err) = written {
                tracing::debug!(error = %err, "service link write failed");
                self.close(format!("write failed: {err}"));
                return;
            }
        }
        // Closing: deliver any last control frame (an Error telling the peer why).
        while let Ok(frame) = control.try_recv() {
            if self.queue(&mut sink, frame).is_err() {
                return;
            }
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sink.close()).await;
    }

    async fn write_batch<T: ByteStream>(
        &self,
        sink: &mut FrameSink<T>,
        first: Frame,
        control: &mut mpsc::UnboundedReceiver<Frame>,
        data: &mut mpsc::Receiver<Frame>,
        gate: &mut DataGate,
    ) -> Result<(), ProtoError> {
        self.push(sink, first, data, gate)?;
        for _ in 1..BATCH {
            let next = match control.try_recv() {
                Ok(frame) => {
                    self.push(sink, frame, data, gate)?;
                    continue;
                }
                Err(_) if !gate.open => break,
                Err(_) => match data.try_recv() {
                    Ok(frame) => frame,
                    Err(_) => break,
                },
            };
            self.queue(sink, next)?;
            if sink.queued() >= FLUSH_AT {
                sink.flush().await?;
            }
        }
        Ok(sink.flush().await?)
    }

    /// Queues `frame`; a stream-ending control frame first lets queued data through, and
    /// the Welcome opens the data gate (only control frames come here, never data).
    fn push<T: ByteStream>(
        &self,
        sink: &mut FrameSink<T>,
        frame: Frame,
        data: &mut mpsc::Receiver<Frame>,
        gate: &mut DataGate,
    ) -> Result<(), ProtoError> {
        let ends_stream = matches!(frame.frame_type, FrameType::Cancel | FrameType::Error) && frame.correlation_id != 0;
        if ends_stream && gate.open {
            while let Ok(queued) = data.try_recv() {
                self.queue(sink, queued)?;
            }
        }
        gate.open |= frame.frame_type == FrameType::Welcome;
        self.queue(sink, frame)
    }

    /// Queues `frame` for writing, telling the link's observer.
    fn queue<T: ByteStream>(&self, sink: &mut FrameSink<T>, frame: Frame) -> Result<(), ProtoError> {
        let size = super::wire_size(&frame);
        sink.push(frame)?;
        if let Some(observer) = &self.shared.observer {
            observer.frame_written(size);
        }
        Ok(())
    }
}
