//! A file's bytes as a response body: read with async reads (`tokio::fs`) in pieces of at
//! most `chunk_size`, one piece at a time, so a download of any size holds one chunk in
//! memory. The static profile ([`crate::static_files`]) makes one; [`crate::response`]
//! wraps it as a [`crate::response::GatewayBody`].
//!
//! Invariant: the body never yields more than the announced length. A file that grows
//! while it is sent is cut at that length; one that shrinks ends the body with an error
//! (hyper then aborts the response) rather than sending fewer bytes than announced.

use std::pin::Pin;
use std::task::{Context, Poll};

use super::BodyError;
use bytes::{Bytes, BytesMut};
use tokio::fs::File;
use tokio::io::{AsyncRead, ReadBuf};

/// The next `remaining` bytes of an open file, positioned where they start.
#[derive(Debug)]
pub(crate) struct FileBody {
    file: File,
    /// Bytes still to send; the size hint.
    remaining: u64,
    chunk_size: usize,
    /// The chunk being filled, kept across `Pending`.
    buf: BytesMut,
}

impl FileBody {
    /// Sends `len` bytes of `file` from its current position, `chunk_size` at a time.
    pub(crate) fn new(file: File, len: u64, chunk_size: usize) -> Self {
        FileBody { file, remaining: len, chunk_size: chunk_size.max(1), buf: BytesMut::new() }
    }

    /// Bytes still to send.
    pub(crate) fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The next chunk, `None` at the end.
    pub(crate) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        // At most chunk_size, so the conversion cannot truncate.
        let want = self.remaining.min(self.chunk_size as u64) as usize;
        if self.buf.len() != want {
            self.buf = BytesMut::zeroed(want);
        }
        let mut read_buf = ReadBuf::new(&mut self.buf);
        match Pin::new(&mut self.file).poll_read(cx, &mut read_buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(err)) => {
                tracing::warn!(error = %err, "static file read failed mid-response");
                self.remaining = 0;
                Poll::Ready(Some(Err(BodyError::FileUnreadable)))
            }
            Poll::Ready(Ok(())) => {
                let read = read_buf.filled().len();
                if read == 0 {
                    tracing::warn!(missing = self.remaining, "static file shrank while it was sent");
                    self.remaining = 0;
                    return Poll::Ready(Some(Err(BodyError::FileShrank)));
                }
                let mut chunk = std::mem::take(&mut self.buf);
                chunk.truncate(read);
                self.remaining -= read as u64;
                Poll::Ready(Some(Ok(chunk.freeze())))
            }
        }
    }
}
