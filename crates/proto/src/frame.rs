//! The frame: the unit of everything that crosses a service connection.
//!
//! Frame type numbers 1 to 8 are the protocol's first frames and never change; 9 and up
//! came later (credit flow control, errors, the gateway's answer to Hello, GoAway).

use bytes::Bytes;

use crate::ProtoError;

/// What a frame carries. The numbers are part of the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Service → gateway, first frame: identity and endpoints.
    Hello = 1,
    /// Both ways: liveness and load.
    Heartbeat = 2,
    /// Service → gateway: replaces the service's endpoint list.
    EndpointsUpdate = 3,
    /// Gateway → service: a request head, with its body inline or streamed after.
    Request = 4,
    /// Gateway → service: a chunk of a streamed request body.
    RequestStreamData = 5,
    /// Service → gateway: a response head, with its body inline or streamed after.
    Response = 6,
    /// Service → gateway: a chunk of a streamed response body.
    ResponseStreamData = 7,
    /// Either way: abandon the stream with a reason.
    Cancel = 8,
    /// Extension. Either way: grants the peer more bytes of stream data.
    Credit = 9,
    /// Extension. Either way: a refusal or failure, for a stream or (id 0) the connection.
    Error = 10,
    /// Extension. Gateway → service: Hello accepted, with the gateway's parameters.
    Welcome = 11,
    /// Extension. Gateway → service, id 0: dial again now (another gateway process is
    /// taking over); this link stays up to finish its streams until the gateway closes it.
    GoAway = 12,
}

impl FrameType {
    /// Every frame type, in number order.
    pub const ALL: [FrameType; 12] = [
        FrameType::Hello,
        FrameType::Heartbeat,
        FrameType::EndpointsUpdate,
        FrameType::Request,
        FrameType::RequestStreamData,
        FrameType::Response,
        FrameType::ResponseStreamData,
        FrameType::Cancel,
        FrameType::Credit,
        FrameType::Error,
        FrameType::Welcome,
        FrameType::GoAway,
    ];

    /// Whether this type carries raw stream bytes rather than an encoded message.
    pub fn is_stream_data(self) -> bool {
        matches!(self, FrameType::RequestStreamData | FrameType::ResponseStreamData)
    }
}

impl TryFrom<u8> for FrameType {
    type Error = ProtoError;

    fn try_from(value: u8) -> Result<Self, ProtoError> {
        FrameType::ALL.get(usize::from(value).wrapping_sub(1)).copied().ok_or(ProtoError::UnknownFrameType(value))
    }
}

/// Flag bits of a frame. Only [`FrameFlags::END_STREAM`] is defined; a frame with any
/// other bit set is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct FrameFlags(u8);

impl FrameFlags {
    /// No flag set.
    pub const NONE: FrameFlags = FrameFlags(0);
    /// On stream data: this is the last chunk of the stream (it may be empty).
    pub const END_STREAM: FrameFlags = FrameFlags(0x01);
    const KNOWN: u8 = 0x01;

    /// Reads flag bits, refusing unknown ones.
    pub fn from_bits(bits: u8) -> Result<Self, ProtoError> {
        if bits & !Self::KNOWN != 0 {
            return Err(ProtoError::UnknownFlags(bits));
        }
        Ok(FrameFlags(bits))
    }

    /// The raw bits.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether END_STREAM is set.
    pub fn is_end_stream(self) -> bool {
        self.0 & Self::END_STREAM.0 != 0
    }
}

/// One frame: type, flags, correlation id (the stream it belongs to; 0 for the
/// connection itself) and payload bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub frame_type: FrameType,
    pub flags: FrameFlags,
    pub correlation_id: u64,
    pub payload: Bytes,
}

impl Frame {
    /// A frame with no flags.
    pub fn new(frame_type: FrameType, correlation_id: u64, payload: Bytes) -> Self {
        Frame { frame_type, flags: FrameFlags::NONE, correlation_id, payload }
    }

    /// A stream data frame; `end` marks the last chunk.
    pub fn data(frame_type: FrameType, correlation_id: u64, chunk: Bytes, end: bool) -> Self {
        let flags = if end { FrameFlags::END_STREAM } else { FrameFlags::NONE };
        Frame { frame_type, flags, correlation_id, payload: chunk }
    }

    /// Whether END_STREAM is set.
    pub fn is_end_stream(&self) -> bool {
        self.flags.is_end_stream()
    }
}
