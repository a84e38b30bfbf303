//! Frames on a byte stream.
//!
//! Layout (big-endian), specified with examples in `docs/protocol.md`:
//! `length: u32` (bytes after this field), `type: u8`, `flags: u8`,
//! `correlation_id: u64`, then `length - 10` payload bytes.
//!
//! The decoder checks the length against the configured maximum before buffering a
//! payload, so an oversized frame costs its 4 length bytes, not its size in memory.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::{Frame, FrameFlags, FrameType, ProtoError, DEFAULT_MAX_FRAME_PAYLOAD};

/// Bytes after the length field that every frame has: type, flags, correlation id.
pub const FRAME_HEADER_AFTER_LENGTH: usize = 1 + 1 + 8;
/// Total header size including the length field.
pub const FRAME_HEADER_LEN: usize = 4 + FRAME_HEADER_AFTER_LENGTH;

/// Room the decoder asks for beyond a frame whose payload is still arriving, so that one
/// read can take the rest of it and the start of the next: without it each read was
/// capped by whatever the last frame's allocation had left, about 24 KiB, and a 64 KiB
/// body chunk took almost three reads (`bench/README.md`, "Profile").
const READ_AHEAD: usize = 64 * 1024;

/// Payloads smaller than this are copied out of the read buffer; larger ones share it.
/// A shared payload keeps its whole read allocation alive (its frame, the read-ahead,
/// and any frames read with it), which for a small payload held a long time, such as a
/// chunk waiting for a stalled client, costs several times its size: a 16 KiB chunk kept
/// about 100 KiB. Copying a small payload is cheap; a full-size body chunk (64 KiB, the
/// SDK's `STREAM_CHUNK`) is not copied, and pins at most about twice its size.
const SHARE_FROM: usize = READ_AHEAD;

/// Encodes and decodes [`Frame`]s, refusing payloads over `max_payload` bytes.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    /// Why bounded: a peer must not make us buffer an arbitrary amount for one frame.
    max_payload: usize,
}

impl FrameCodec {
    /// A codec with the given maximum payload size.
    pub fn new(max_payload: usize) -> Self {
        FrameCodec { max_payload }
    }

    /// The maximum payload size this codec accepts and produces.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_PAYLOAD)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtoError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let length = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        let Some(payload_len) = (length as usize).checked_sub(FRAME_HEADER_AFTER_LENGTH) else {
            return Err(ProtoError::FrameTooShort(length));
        };
        if payload_len > self.max_payload {
            return Err(ProtoError::FrameTooLarge { len: payload_len, max: self.max_payload });
        }
        if src.len() < FRAME_HEADER_LEN {
            src.reserve(FRAME_HEADER_LEN - src.len());
            return Ok(None);
        }
        let frame_type = FrameType::try_from(src[4])?;
        let flags = FrameFlags::from_bits(src[5])?;
        let total = FRAME_HEADER_LEN + payload_len;
        if src.len() < total {
            src.reserve(total - src.len() + READ_AHEAD);
            return Ok(None);
        }
        src.advance(6);
        let correlation_id = src.get_u64();
        let payload = if payload_len < SHARE_FROM {
            let copy = Bytes::copy_from_slice(&src[..payload_len]);
            src.advance(payload_len);
            copy
        } else {
            src.split_to(payload_len).freeze()
        };
        Ok(Some(Frame { frame_type, flags, correlation_id, payload }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = ProtoError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), ProtoError> {
        encode_frame(&frame, self.max_payload, dst)
    }
}

/// Appends one frame's bytes to `dst`.
pub fn encode_frame(frame: &Frame, max_payload: usize, dst: &mut BytesMut) -> Result<(), ProtoError> {
    dst.reserve(FRAME_HEADER_LEN + frame.payload.len());
    encode_frame_header(frame, max_payload, dst)?;
    dst.extend_from_slice(&frame.payload);
    Ok(())
}

/// Appends one frame's header (everything but its payload) to `dst`, refusing a payload
/// over `max_payload` bytes; for writers that send the payload from its own buffer.
pub fn encode_frame_header(frame: &Frame, max_payload: usize, dst: &mut BytesMut) -> Result<(), ProtoError> {
    let len = frame.payload.len();
    if len > max_payload {
        return Err(ProtoError::FrameTooLarge { len, max: max_payload });
    }
    let length = u32::try_from(FRAME_HEADER_AFTER_LENGTH + len)
        .map_err(|_| ProtoError::FrameTooLarge { len, max: max_payload })?;
    dst.put_u32(length);
    dst.put_u8(frame.frame_type as u8);
    dst.put_u8(frame.flags.bits());
    dst.put_u64(frame.correlation_id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<Frame>, ProtoError> {
        decode_all_from(BytesMut::from(bytes), max)
    }

    fn decode_all_from(mut buf: BytesMut, max: usize) -> Result<Vec<Frame>, ProtoError> {
        let mut codec = FrameCodec::new(max);
        let mut out = Vec::new();
        while let Some(frame) = codec.decode(&mut buf)? {
            out.push(frame);
        }
        Ok(out)
    }

    #[test]
    fn frame_round_trips_and_partial_input_waits() {
        let frame = Frame::data(FrameType::RequestStreamData, 7, Bytes::from_static(b"abc"), true);
        let mut buf = BytesMut::new();
        FrameCodec::default().encode(frame.clone(), &mut buf).unwrap();
        assert_eq!(&buf[..], &[0, 0, 0, 13, 5, 1, 0, 0, 0, 0, 0, 0, 0, 7, b'a', b'b', b'c']);
        for cut in 0..buf.len() {
            assert_eq!(decode_all(&buf[..cut], 1024).unwrap(), vec![]);
        }
        assert_eq!(decode_all(&buf, 1024).unwrap(), vec![frame]);
    }

    #[test]
    fn oversized_frame_is_refused_from_its_length_alone() {
        let err = decode_all(&[0, 0, 1, 0], 16).unwrap_err();
        assert_eq!(err, ProtoError::FrameTooLarge { len: 256 - 10, max: 16 });
    }

    #[test]
    fn unknown_type_flags_and_short_length_are_errors() {
        assert_eq!(
            decode_all(&[0, 0, 0, 10, 99, 0, 0, 0, 0, 0, 0, 0, 0, 1], 16).unwrap_err(),
            ProtoError::UnknownFrameType(99)
        );
        assert_eq!(
            decode_all(&[0, 0, 0, 10, 5, 0x80, 0, 0, 0, 0, 0, 0, 0, 1], 16).unwrap_err(),
            ProtoError::UnknownFlags(0x80)
        );
        assert_eq!(decode_all(&[0, 0, 0, 3], 16).unwrap_err(), ProtoError::FrameTooShort(3));
    }

    #[test]
    fn small_payloads_are_copied_out_and_large_ones_share_the_read_buffer() {
        let small = Frame::data(FrameType::ResponseStreamData, 1, Bytes::from(vec![1; 16 * 1024]), false);
        let large = Frame::data(FrameType::ResponseStreamData, 1, Bytes::from(vec![2; SHARE_FROM]), false);
        let mut buf = BytesMut::new();
        for frame in [small.clone(), large.clone()] {
            FrameCodec::new(1 << 20).encode(frame, &mut buf).unwrap();
        }
        let read = buf.as_ptr_range();
        let inside = |frame: &Frame| read.contains(&frame.payload.as_ptr());
        let decoded = decode_all_from(buf, 1 << 20).unwrap();
        assert_eq!(decoded, vec![small, large]);
        assert!(!inside(&decoded[0]), "a small payload must not keep the read buffer alive");
        assert!(inside(&decoded[1]), "a full-size payload is not copied");
    }
}
