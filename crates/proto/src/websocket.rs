//! WebSocket messages inside stream data (`docs/protocol.md`, "WebSocket streams").
//!
//! Once a WebSocket stream is open, each direction's stream data is a sequence of
//! messages, each `u8 kind` + `u32 length` (big-endian) + `length` payload bytes. Kinds:
//! 1 text (UTF-8), 2 binary, 8 close (`u16` code + UTF-8 reason). Stream data chunks do
//! not align with messages: a message may span several chunks and a chunk may hold
//! several messages, so the receiving side runs a [`WsDecoder`] over the chunks.
//!
//! Owned here: the message value ([`WsMessage`]), its encoding, and the incremental
//! decoder with its maximum message size. Invariants: the decoder never panics and never
//! buffers a message larger than its maximum (it refuses one as soon as its header is
//! read); every message that decodes re-encodes to the same bytes. Used by the gateway's
//! WebSocket relay and the service SDK's WebSocket handlers.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Message kind byte: a text message (UTF-8 payload).
pub const KIND_TEXT: u8 = 1;
/// Message kind byte: a binary message.
pub const KIND_BINARY: u8 = 2;
/// Message kind byte: a close message (`u16` code + UTF-8 reason).
pub const KIND_CLOSE: u8 = 8;
/// Bytes before each message's payload: kind (1) + length (4).
pub const HEADER_LEN: usize = 5;

/// Close code: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code: the endpoint is going away (shutdown).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: the peer broke the WebSocket protocol.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code: the client's close frame carried no code (never sent as such to a client).
pub const CLOSE_NO_STATUS: u16 = 1005;
/// Close code: a text message was not valid UTF-8.
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// Close code: a policy was violated (message rate, an operator's cancel).
pub const CLOSE_POLICY: u16 = 1008;
/// Close code: a message exceeded the size limit.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: the server failed (service gone, stream broken).
pub const CLOSE_INTERNAL: u16 = 1011;

/// One WebSocket message as it travels in stream data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Bytes),
    /// The sender's last message: a close code and a reason.
    Close { code: u16, reason: String },
}

impl WsMessage {
    /// A close message.
    pub fn close(code: u16, reason: impl Into<String>) -> Self {
        WsMessage::Close { code, reason: reason.into() }
    }

    /// This message's kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            WsMessage::Text(_) => KIND_TEXT,
            WsMessage::Binary(_) => KIND_BINARY,
            WsMessage::Close { .. } => KIND_CLOSE,
        }
    }

    /// The payload length this message encodes to.
    pub fn payload_len(&self) -> usize {
        match self {
            WsMessage::Text(text) => text.len(),
            WsMessage::Binary(bytes) => bytes.len(),
            WsMessage::Close { reason, .. } => 2 + reason.len(),
        }
    }

    /// Whether this is a close message.
    pub fn is_close(&self) -> bool {
        matches!(self, WsMessage::Close { .. })
    }

    /// The message's bytes: header and payload. Refuses a payload over `u32::MAX` bytes.
    pub fn encode(&self) -> Result<Bytes, WsFramingError> {
        let len = self.payload_len();
        let wire_len = u32::try_from(len).map_err(|_| WsFramingError::TooLongToEncode(len))?;
        let mut out = BytesMut::with_capacity(HEADER_LEN + len);
        out.put_u8(self.kind());
        out.put_u32(wire_len);
        match self {
            WsMessage::Text(text) => out.put_slice(text.as_bytes()),
            WsMessage::Binary(bytes) => out.put_slice(bytes),
            WsMessage::Close { code, reason } => {
                out.put_u16(*code);
                out.put_slice(reason.as_bytes());
            }
        }
        Ok(out.freeze())
    }

    /// Reads one message's payload of `kind`.
    fn from_payload(kind: u8, mut payload: Bytes) -> Result<Self, WsFramingError> {
        match kind {
            KIND_TEXT => {
                String::from_utf8(payload.to_vec()).map(WsMessage::Text).map_err(|_| WsFramingError::InvalidText)
            }
            KIND_BINARY => Ok(WsMessage::Binary(payload)),
            KIND_CLOSE => {
                if payload.len() < 2 {
                    return Err(WsFramingError::CloseTooShort(payload.len()));
                }
                let code = payload.get_u16();
                let reason = String::from_utf8(payload.to_vec()).map_err(|_| WsFramingError::InvalidCloseReason)?;
                Ok(WsMessage::Close { code, reason })
            }
            other => Err(WsFramingError::UnknownKind(other)),
        }
    }
}

/// Why stream data could not be read as WebSocket messages.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WsFramingError {
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: u64, max: usize },
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("text message is not valid UTF-8")]
    InvalidText,
    #[error("close message of {0} bytes has no room for its 2-byte code")]
    CloseTooShort(usize),
    #[error("close reason is not valid UTF-8")]
    InvalidCloseReason,
    #[error("the stream ended inside a message ({0} bytes of it pending)")]
    Truncated(usize),
    #[error("message payload of {0} bytes is too long to encode")]
    TooLongToEncode(usize),
}

/// Reads messages out of stream data chunks, however the chunks split them.
///
/// Feed chunks with [`WsDecoder::push`] and take messages with [`WsDecoder::next_message`]
/// until it says `None`; at the end of the stream, [`WsDecoder::finish`] tells whether
/// a message was cut off. After an error the decoder keeps returning it.
#[derive(Debug)]
pub struct WsDecoder {
    max_message: usize,
    buf: BytesMut,
    failed: Option<WsFramingError>,
}

impl WsDecoder {
    /// A decoder refusing messages whose payload exceeds `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        WsDecoder { max_message, buf: BytesMut::new(), failed: None }
    }

    /// The largest payload accepted.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Appends a chunk of stream data.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// The next whole message, `None` when more bytes are needed. A header announcing
    /// more than the maximum is refused before its payload is buffered.
    pub fn next_message(&mut self) -> Result<Option<WsMessage>, WsFramingError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.decode_one();
        if let Err(err) = &result {
            self.failed = Some(err.clone());
            self.buf = BytesMut::new();
        }
        result
    }

    fn decode_one(&mut self) -> Result<Option<WsMessage>, WsFramingError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = self.buf[0];
        if !matches!(kind, KIND_TEXT | KIND_BINARY | KIND_CLOSE) {
            return Err(WsFramingError::UnknownKind(kind));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
        if len_usize > self.max_message {
            return Err(WsFramingError::TooLarge { len: u64::from(len), max: self.max_message });
        }
        if self.buf.len() - HEADER_LEN < len_usize {
            // Reserve once for the whole message (bounded by the maximum just checked).
            self.buf.reserve(HEADER_LEN + len_usize - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let payload = self.buf.split_to(len_usize).freeze();
        WsMessage::from_payload(kind, payload).map(Some)
    }

    /// Bytes received that do not form a whole message yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// At the end of the stream: an error if it ended inside a message.
    pub fn finish(&self) -> Result<(), WsFramingError> {
        match (&self.failed, self.buf.len()) {
            (Some(err), _) => Err(err.clone()),
            (None, 0) => Ok(()),
            (None, n) => Err(WsFramingError::Truncated(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(decoder: &mut WsDecoder, chunks: &[&[u8]]) -> Result<Vec<WsMessage>, WsFramingError> {
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.push(chunk);
            while let Some(message) = decoder.next_message()? {
                out.push(message);
            }
        }
        decoder.finish()?;
        Ok(out)
    }

    #[test]
    fn text_message_bytes_are_kind_length_payload() {
        let bytes = WsMessage::Text("hi".into()).encode().unwrap();
        assert_eq!(&bytes[..], &[1, 0, 0, 0, 2, b'h', b'i']);
        let close = WsMessage::close(1000, "bye").encode().unwrap();
        assert_eq!(&close[..], &[8, 0, 0, 0, 5, 0x03, 0xe8, b'b', b'y', b'e']);
    }

    #[test]
    fn a_message_split_byte_by_byte_decodes_once() {
        let bytes = WsMessage::Binary(Bytes::from_static(b"abcdef")).encode().unwrap();
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        let got = decode_all(&mut WsDecoder::new(16), &chunks).unwrap();
        assert_eq!(got, vec![WsMessage::Binary(Bytes::from_static(b"abcdef"))]);
    }

    #[test]
    fn an_oversized_header_is_refused_before_its_payload() {
        let mut decoder = WsDecoder::new(4);
        decoder.push(&[2, 0, 0, 0, 5]);
        assert_eq!(decoder.next_message(), Err(WsFramingError::TooLarge { len: 5, max: 4 }));
        // Poisoned: the same error again, nothing buffered.
        decoder.push(&[0; 5]);
        assert_eq!(decoder.pending(), 0);
        assert!(decoder.next_message().is_err());
    }

    #[test]
    fn malformed_messages_are_refused() {
        let cases: [(&[u8], WsFramingError); 4] = [
            (&[3, 0, 0, 0, 0], WsFramingError::UnknownKind(3)),
            (&[1, 0, 0, 0, 1, 0xff], WsFramingError::InvalidText),
            (&[8, 0, 0, 0, 1, 0x03], WsFramingError::CloseTooShort(1)),
            (&[8, 0, 0, 0, 3, 0x03, 0xe8, 0xff], WsFramingError::InvalidCloseReason),
        ];
        for (bytes, expected) in cases {
            assert_eq!(decode_all(&mut WsDecoder::new(64), &[bytes]), Err(expected));
        }
    }

    #[test]
    fn a_stream_ending_inside_a_message_is_truncated() {
        let mut decoder = WsDecoder::new(64);
        decoder.push(&[1, 0, 0, 0, 4, b'a']);
        assert_eq!(decoder.next_message(), Ok(None));
        assert_eq!(decoder.finish(), Err(WsFramingError::Truncated(6)));
    }

    fn message() -> impl Strategy<Value = WsMessage> {
        prop_oneof![
            ".{0,40}".prop_map(WsMessage::Text),
            prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| WsMessage::Binary(Bytes::from(b))),
            (any::<u16>(), ".{0,20}").prop_map(|(code, reason)| WsMessage::Close { code, reason }),
        ]
    }

    proptest! {
        #[test]
        fn messages_survive_any_chunking(
            messages in prop::collection::vec(message(), 0..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let mut wire = BytesMut::new();
            for m in &messages {
                wire.extend_from_slice(&m.encode().unwrap());
            }
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.push(0);
            points.push(wire.len());
            points.sort_unstable();
            let chunks: Vec<&[u8]> = points.windows(2).map(|w| &wire[w[0]..w[1]]).collect();
            prop_assert_eq!(decode_all(&mut WsDecoder::new(1024), &chunks)?, messages);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_decoded_messages_reencode_exactly(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
            max in 0usize..128,
            split in any::<prop::sample::Index>(),
        ) {
            let mut decoder = WsDecoder::new(max);
            let at = split.index(bytes.len() + 1);
            let mut decoded = BytesMut::new();
            for chunk in [&bytes[..at], &bytes[at..]] {
                decoder.push(chunk);
                while let Ok(Some(m)) = decoder.next_message() {
                    prop_assert!(m.payload_len() <= max);
                    decoded.extend_from_slice(&m.encode().unwrap());
                }
            }
            prop_assert_eq!(&bytes[..decoded.len()], &decoded[..]);
            let _ = decoder.finish();
        }
    }
}
