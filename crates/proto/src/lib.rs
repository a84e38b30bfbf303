//! weir's wire protocol, with no sockets in it.
//!
//! A service and the gateway exchange [`Frame`]s: a type, flags, a correlation id and an
//! opaque payload. [`codec::FrameCodec`] turns frames into bytes and back for any byte
//! stream (in-memory pipe, TCP, TLS); [`messages`] gives each frame type its typed payload.
//! The byte layout is specified in `docs/protocol.md`, which is the contract another
//! language would implement; this crate is its reference implementation.
//!
//! [`http_file`] is the one piece that is not about frames: the pure HTTP logic of file
//! responses (validators, conditional requests, byte ranges), shared by the gateway's
//! static profile and the SDK's file responses so that both answer alike.
//!
//! [`websocket`] is the message framing inside a WebSocket stream's data (kind, length,
//! payload), with an incremental decoder shared by the gateway's relay and the SDK.
//!
//! [`trace_context`] reads and writes the W3C `traceparent` and `tracestate` headers a
//! request carries through the gateway to its service.
//!
//! Invariants: decoding never panics on any input (a proptest and a fuzz target check
//! it); every decode error is a typed [`ProtoError`]; encoding a value and decoding the
//! bytes gives the value back.

pub mod codec;
pub mod error;
pub mod frame;
pub mod http_file;
pub mod messages;
pub mod trace_context;
pub mod websocket;
mod wire;

pub use codec::FrameCodec;
pub use error::ProtoError;
pub use frame::{Frame, FrameFlags, FrameType};
pub use messages::*;

/// The protocol version this crate speaks, carried in `Hello` and `Welcome`.
pub const PROTOCOL_VERSION: u16 = 2;

/// The oldest version a gateway still accepts in a Hello; it answers in the Hello's own
/// version and sends that peer nothing a later version added.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// The first version whose peers answer a heartbeat's probe (see [`Heartbeat::probe`]).
pub const PROBE_VERSION: u16 = 2;

/// Largest payload a frame may carry unless a peer is configured otherwise (16 MiB).
pub const DEFAULT_MAX_FRAME_PAYLOAD: usize = 16 * 1024 * 1024;

/// Per-stream receive window a peer grants when it does not say otherwise (256 KiB).
pub const DEFAULT_STREAM_WINDOW: u32 = 256 * 1024;
