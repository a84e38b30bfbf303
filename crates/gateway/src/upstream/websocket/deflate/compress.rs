//! The gateway's messages to a client that negotiated permessage-deflate: each data
//! message of at least [`MIN_COMPRESSED`] bytes becomes one frame with RSV1 set whose
//! payload is the message deflated and flushed, without the flush's final
//! `0x00 0x00 0xff 0xff` (RFC 7692 §7.2.1); shorter ones go out as they are, which the
//! extension allows per message and which leaves the compression context untouched.
//!
//! Invariant: the compressor's window is at most what the client allowed
//! (`server_max_window_bits`), and with `server_no_context_takeover` it is reset after
//! every message, so no message refers back to another.

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

use super::Deflate;

/// Messages shorter than this go out uncompressed: the few bytes deflate could save are
/// not worth the CPU, and tiny messages often grow.
pub(crate) const MIN_COMPRESSED: usize = 64;
/// The tail a sync flush ends with, which the sender drops and the receiver puts back.
pub(crate) const FLUSH_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// zlib's level 1: the relay runs at line rate, and on short messages higher levels gain
/// little over it.
const LEVEL: u32 = 1;

/// Compression failed: the compressor's state can no longer be trusted.
#[derive(Debug, thiserror::Error)]
#[error("compressing a message for the client: {0}")]
pub(crate) struct CompressError(String);

/// One session's compressor for the messages it sends the client.
pub(crate) struct Compressor {
    /// The raw deflate stream all compressed messages share (unless reset after each).
    deflate: Compress,
    /// `server_no_context_takeover` was agreed: reset after every message.
    reset_each_message: bool,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor").field("reset_each_message", &self.reset_each_message).finish_non_exhaustive()
    }
}

impl Compressor {
    /// The compressor for the parameters the client accepted.
    pub(crate) fn new(deflate: &Deflate) -> Self {
        let window_bits = deflate.server_window_bits();
        Compressor {
            deflate: Compress::new_with_window_bits(Compression::new(LEVEL), false, window_bits),
            reset_each_message: deflate.server_no_context_takeover,
        }
    }

    /// The message as one compressed frame, or `None` when it is too short to compress.
    pub(crate) fn message(&mut self, text: bool, payload: &[u8]) -> Result<Option<Message>, CompressError> {
        if payload.len() < MIN_COMPRESSED {
            return Ok(None);
        }
        let mut compressed = self.deflate_flushed(payload)?;
        if compressed.ends_with(&FLUSH_TAIL) {
            compressed.truncate(compressed.len() - FLUSH_TAIL.len());
        }
        if self.reset_each_message {
            self.deflate.reset();
        }
        let opcode = OpCode::Data(if text { OpData::Text } else { OpData::Binary });
        let mut frame = Frame::message(Bytes::from(compressed), opcode, true);
        frame.header_mut().rsv1 = true;
        Ok(Some(Message::Frame(frame)))
    }

    /// `payload` deflated and sync-flushed: all of it, ending on a byte boundary.
    fn deflate_flushed(&mut self, payload: &[u8]) -> Result<Vec<u8>, CompressError> {
        let start = self.deflate.total_in();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        loop {
            // Bounded by the payload's length, so it fits usize.
            let consumed = (self.deflate.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity());
            }
            let status = self
                .deflate
                .compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| CompressError(e.to_string()))?;
            let consumed = (self.deflate.total_in() - start) as usize;
            // The flush is complete once all input is in and the output had room left.
            if consumed == payload.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if status == Status::StreamEnd {
                return Err(CompressError("the deflate stream ended".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn inflate(decompress: &mut Decompress, payload: &[u8]) -> Vec<u8> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&FLUSH_TAIL);
        let mut out = Vec::with_capacity(1 << 20);
        decompress.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
        out
    }

    fn compressed(message: Option<Message>) -> Frame {
        match message {
            Some(Message::Frame(frame)) => frame,
            other => panic!("not a compressed frame: {other:?}"),
        }
    }

    #[test]
    fn messages_share_a_context_unless_the_client_said_otherwise() {
        let text = "{\"event\":\"tick\",\"symbol\":\"WEIR\",\"price\":12345,\"volume\":678}".repeat(3);
        for server_no_context_takeover in [false, true] {
            let mut compressor = Compressor::new(&Deflate { server_no_context_takeover, ..Deflate::default() });
            let mut decompress = Decompress::new(false);
            let first = compressed(compressor.message(true, text.as_bytes()).unwrap());
            let second = compressed(compressor.message(true, text.as_bytes()).unwrap());
            assert!(first.header().rsv1 && first.header().is_final);
            assert_eq!(inflate(&mut decompress, first.payload()), text.as_bytes());
            if server_no_context_takeover {
                decompress.reset(false);
                assert_eq!(second.payload(), first.payload(), "each message on its own");
            } else {
                assert!(second.len() < first.len(), "the second refers back to the first");
            }
            assert_eq!(inflate(&mut decompress, second.payload()), text.as_bytes());
        }
    }

    #[test]
    fn short_messages_go_out_as_they_are() {
        let mut compressor = Compressor::new(&Deflate::default());
        assert!(compressor.message(false, &[0u8; MIN_COMPRESSED - 1]).unwrap().is_none());
    }

    #[test]
    fn a_small_window_still_compresses_what_a_full_window_inflates() {
        let deflate = Deflate { server_max_window_bits: Some(9), ..Deflate::default() };
        let mut compressor = Compressor::new(&deflate);
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8 ^ (i / 7000) as u8).collect();
        let frame = compressed(compressor.message(false, &payload).unwrap());
        assert_eq!(inflate(&mut Decompress::new(false), frame.payload()), payload);
    }
}
