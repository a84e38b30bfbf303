//! weir's broker transport: service connections carried through RabbitMQ.
//!
//! A service behind NAT, or in another network, reaches the gateway without either side
//! opening a port: both dial the broker. This crate turns a pair of RabbitMQ queues into
//! the same [`weir_transport::ByteStream`] every other transport yields, so the
//! handshake, the link's multiplexing and credit flow control, Cancel and the whole
//! conformance suite run over it unchanged. The only thing written here by hand is that
//! mapping; AMQP itself is `lapin`'s.
//!
//! How frames map to the broker (the contract `docs/protocol.md` documents):
//!
//! - Each gateway consumes a *connect queue*, `<prefix>.connect.<gateway>`. A service
//!   dials by declaring its own exclusive *inbox* (`<prefix>.service.<random>`) and
//!   publishing a `weir.connect` message to the connect queue, with `reply_to` naming
//!   the inbox. The gateway declares an inbox of its own for the session
//!   (`<prefix>.session.<random>`) and answers `weir.accept` with `reply_to` naming it.
//!   From then on each side publishes straight to the other's inbox through the default
//!   exchange ([`stream`]).
//! - A message body is a run of the link's bytes: whatever the link's writer flushed,
//!   up to [`MAX_MESSAGE`]. Frames may span messages; the receiving side reads the
//!   bodies in order as one byte stream, and one inbox has one publisher, so order holds.
//! - Per-instance queues, not per-service ones: the gateway keeps choosing the instance
//!   (least loaded, draining, evicted), and credit flow control stays end to end.
//! - Inboxes are exclusive: the broker deletes them the moment their owner's connection
//!   closes. Each side publishes a mandatory `weir.ping` to its peer's inbox every
//!   [`BrokerSettings::liveness_interval`], on a channel in confirm mode; a ping the
//!   broker returns means the peer is gone, and the session ends at once, as a TCP reset
//!   would end a socket.
//! - Deliveries are acknowledged in batches, and at most [`BrokerSettings::prefetch`]
//!   are unacknowledged per session; what waits in an inbox is bounded by the link's
//!   credit windows, since a peer sends no data beyond the credit it was given.
//!
//! [`listener`] is the gateway's side, [`dialer`] the service's.

mod address;
pub mod dialer;
pub mod listener;
mod stream;

use std::time::Duration;

pub use address::{BrokerAddress, BrokerError};
pub use dialer::RabbitMqDialer;
pub use listener::{BrokerListener, ConnectRequest};
pub use stream::BrokerStream;

/// Largest message body a session publishes: the link's writes gathered between flushes.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// How the gateways and services of one deployment meet on the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSettings {
    /// Names every queue this deployment declares: `<prefix>.connect.<gateway>`, so two
    /// deployments can share a broker (or a virtual host) without meeting.
    pub prefix: String,
    /// The gateway's name within the prefix. Replicas with the same name share one
    /// connect queue, and the broker spreads service connections among them; replicas
    /// with different names are dialled one by one (`RabbitMqDialer::gateway`).
    pub gateway: String,
    /// Most deliveries unacknowledged per session (AMQP `basic.qos`).
    pub prefetch: u16,
    /// AMQP heartbeat with the broker, in seconds; 0 leaves it to the broker.
    pub heartbeat: u16,
    /// How often each side of a session checks, with a mandatory ping, that its peer's
    /// inbox still exists: the bound on noticing a killed peer.
    pub liveness_interval: Duration,
    /// Longest a dial (broker connection, connect request, accept) may take.
    pub connect_timeout: Duration,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            prefix: "weir".to_owned(),
            gateway: "default".to_owned(),
            prefetch: 64,
            heartbeat: 10,
            liveness_interval: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl BrokerSettings {
    /// The queue the gateway named [`BrokerSettings::gateway`] takes connect requests on.
    pub fn connect_queue(&self) -> String {
        format!("{}.connect.{}", self.prefix, self.gateway)
    }
}
