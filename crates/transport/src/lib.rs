//! weir's service connections, independent of what carries the bytes.
//!
//! A service connection is a byte stream (an in-memory pipe, TCP, TLS) carrying frames.
//! [`handshake`] exchanges Hello and Welcome; then a [`Link`] multiplexes many request
//! streams over the connection with per-stream, credit-based flow control
//! ([`link::flow`]), so a slow stream never stalls the others and neither side buffers
//! more than its window.
//! Both the gateway and the service SDK run the same `Link`, each in its [`Role`].
//!
//! Every transport is only a way to get a [`ByteStream`]: [`memory`] is the in-memory
//! transport, [`tcp`] and [`tls`] hand their sockets to the same code, which is what lets
//! one conformance suite test every transport unchanged. The link records when the peer
//! last sent a frame ([`Link::last_received`]) so that either side can tell a silent,
//! half-open connection from a quiet one.

pub mod handshake;
pub mod link;
pub mod memory;
mod sync;
pub mod tcp;
pub mod tls;

pub use handshake::{accept_hello, dial, HandshakeError, PendingService};
pub use link::flow::{DataReceiver, DataSender, SendState, StreamError};
pub use link::{
    IncomingRequest, IncomingResponse, Link, LinkConfig, LinkEvent, OutgoingCall, Responder, Role, StreamHandle,
    TrafficObserver,
};

use tokio::io::{AsyncRead, AsyncWrite};

/// Anything frames can travel over.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ByteStream for T {}
