//! The link's outgoing byte queue: frames in, vectored writes out.
//!
//! Written by hand rather than with tokio-util's `FramedWrite` because that copies every
//! payload into one contiguous buffer, and a link's payloads are mostly body bytes (up to
//! `chunk_size`, 64 KiB by default): copying them cost several percent of the CPU time of
//! a proxied upload or 64 KiB echo (`bench/README.md`, "Profile"). Here a frame header and
//! a small payload are appended to `pending`; a payload of [`COPY_LIMIT`] bytes or more is
//! kept as its own `Bytes` segment, and a flush writes every segment with `writev`.
//!
//! Invariant: `segments` followed by `pending` is exactly the byte sequence of the frames
//! pushed and not yet written, in order. Flushing keeps the link's [`WriteClock`] told of
//! its progress, so a peer that stopped reading shows as a writer stalled with bytes queued.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use weir_proto::codec::{encode_frame_header, FRAME_HEADER_LEN};
use weir_proto::{Frame, ProtoError};

use super::write_clock::WriteClock;

/// Payloads at least this long are written from their own buffer instead of copied.
const COPY_LIMIT: usize = 4096;
/// Most buffers handed to one `writev` (Linux allows 1024; a few dozen fill a socket).
const MAX_SLICES: usize = 64;

/// Frames waiting to be written to `io`.
pub(super) struct FrameWriter<W> {
    io: W,
    max_payload: usize,
    /// Bytes ready to go, before `pending`.
    segments: VecDeque<Bytes>,
    /// Headers and small payloads appended since the last segment.
    pending: BytesMut,
    /// Total bytes in `segments` and `pending`.
    queued: usize,
    /// Shared with the link, whose owner reads how long a flush has made no progress.
    clock: Arc<WriteClock>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer that first sends `leftover` (bytes an earlier writer had not flushed).
    pub(super) fn new(io: W, max_payload: usize, leftover: BytesMut, clock: Arc<WriteClock>) -> Self {
        let queued = leftover.len();
        FrameWriter { io, max_payload, segments: VecDeque::new(), pending: leftover, queued, clock }
    }

    /// Bytes queued and not yet written.
    pub(super) fn queued(&self) -> usize {
        self.queued
    }

    /// Queues one frame; refuses a payload over the maximum, as the peer would.
    pub(super) fn push(&mut self, frame: Frame) -> Result<(), ProtoError> {
        let len = frame.payload.len();
        let copied = len < COPY_LIMIT;
        self.pending.reserve(FRAME_HEADER_LEN + if copied { len } else { 0 });
        encode_frame_header(&frame, self.max_payload, &mut self.pending)?;
        if copied {
            self.pending.extend_from_slice(&frame.payload);
        } else {
            // `pending` holds at least this frame's header, so no segment is empty.
            self.segments.push_back(self.pending.split().freeze());
            self.segments.push_back(frame.payload);
        }
        self.queued += FRAME_HEADER_LEN + len;
        Ok(())
    }

    /// Writes everything queued.
    pub(super) async fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.segments.push_back(self.pending.split().freeze());
        }
        if !self.segments.is_empty() {
            self.clock.waiting();
        }
        while !self.segments.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let count = self.segments.len().min(MAX_SLICES);
            for (slice, segment) in slices.iter_mut().zip(&self.segments) {
                *slice = IoSlice::new(segment);
            }
            let written = self.io.write_vectored(&slices[..count]).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.consume(written);
            self.clock.progressed();
        }
        self.io.flush().await?;
        self.clock.idle();
        Ok(())
    }

    /// Drops `written` bytes from the front of `segments`.
    fn consume(&mut self, mut written: usize) {
        self.queued -= written;
        while let Some(front) = self.segments.front_mut() {
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.segments.pop_front();
        }
    }

    /// Flushes, then shuts the write side down.
    pub(super) async fn close(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        self.io.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio_util::codec::Encoder;
    use weir_proto::{FrameCodec, FrameType};

    use super::*;

    /// Accepts at most `step` bytes per write, so that writes end mid-buffer.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut left = self.step;
            for buf in bufs {
                let n = buf.len().min(left);
                self.out.extend_from_slice(&buf[..n]);
                left -= n;
                if left == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(self.step - left))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn frames() -> Vec<Frame> {
        let big = Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        vec![
            Frame::data(FrameType::RequestStreamData, 1, Bytes::from_static(b"small"), false),
            Frame::data(FrameType::RequestStreamData, 1, big.slice(..COPY_LIMIT), false),
            Frame::data(FrameType::RequestStreamData, 3, big.clone(), true),
            Frame::data(FrameType::ResponseStreamData, 5, Bytes::new(), true),
            Frame::data(FrameType::RequestStreamData, 1, big.slice(..COPY_LIMIT - 1), true),
        ]
    }

    #[tokio::test]
    async fn writes_the_same_bytes_as_the_codec_whatever_each_write_takes() {
        let mut expected = BytesMut::new();
        for frame in frames() {
            FrameCodec::default().encode(frame, &mut expected).unwrap();
        }
        for step in [1, 7, 4096, 65_536, 1 << 20] {
            let mut writer =
                FrameWriter::new(Trickle { out: Vec::new(), step }, 1 << 20, BytesMut::from(&b"x"[..]), Arc::default());
            for frame in frames() {
                writer.push(frame).unwrap();
            }
            assert_eq!(writer.queued(), expected.len() + 1);
            writer.flush().await.unwrap();
            assert_eq!(writer.queued(), 0);
            assert_eq!(writer.io.out[0], b'x');
            assert!(writer.io.out[1..] == expected[..], "step {step}");
        }
    }

    #[tokio::test]
    async fn more_segments_than_one_writev_takes_go_out_in_several() {
        let chunk = Bytes::from(vec![7u8; COPY_LIMIT]);
        let frames: Vec<Frame> = (0..MAX_SLICES as u64)
            .map(|id| Frame::data(FrameType::RequestStreamData, id, chunk.clone(), false))
            .collect();
        let mut expected = BytesMut::new();
        for frame in frames.clone() {
            FrameCodec::default().encode(frame, &mut expected).unwrap();
        }
        // Each frame is two segments (header, payload): twice what one writev is given.
        let mut writer =
            FrameWriter::new(Trickle { out: Vec::new(), step: usize::MAX }, 1 << 20, BytesMut::new(), Arc::default());
        for frame in frames {
            writer.push(frame).unwrap();
        }
        writer.flush().await.unwrap();
        assert_eq!(writer.queued(), 0);
        assert!(writer.io.out[..] == expected[..]);
    }

    #[tokio::test]
    async fn an_oversized_payload_is_refused_and_nothing_is_queued() {
        let mut writer = FrameWriter::new(Trickle { out: Vec::new(), step: 10 }, 16, BytesMut::new(), Arc::default());
        let frame = Frame::data(FrameType::RequestStreamData, 1, Bytes::from(vec![0; 17]), false);
        assert_eq!(writer.push(frame).unwrap_err(), ProtoError::FrameTooLarge { len: 17, max: 16 });
        assert_eq!(writer.queued(), 0);
    }
}
