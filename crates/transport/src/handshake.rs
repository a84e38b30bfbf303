//! Opening a service connection: the service's Hello, the gateway's Welcome or Error.
//!
//! Both sides bound the handshake in time, so a peer that connects and says nothing
//! costs one timer, not a connection held forever. The gateway also bounds it in size:
//! until the Welcome, a frame may be no larger than the `max_hello_size` given to
//! [`accept_hello`], checked from the frame's length field before any payload is
//! buffered, so an unauthenticated peer cannot make the gateway hold more than that.
//! A first frame that is oversized, malformed or not a Hello is answered with an Error
//! (`ProtocolViolation`) before the connection closes.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use weir_proto::{
    ErrorCode, ErrorMessage, Frame, FrameCodec, FrameType, Hello, Message, ProtoError, Welcome, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};

use crate::link::{Link, LinkConfig, LinkEvent, Role, TrafficObserver};
use crate::ByteStream;

/// Why a connection did not get past its handshake.
#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("handshake timed out")]
    Timeout,
    #[error("connection closed during the handshake")]
    Closed,
    #[error("protocol error during the handshake: {0}")]
    Protocol(String),
    #[error("refused by the gateway ({code:?}): {message}")]
    Refused { code: ErrorCode, message: String },
}

impl From<ProtoError> for HandshakeError {
    fn from(err: ProtoError) -> Self {
        HandshakeError::Protocol(err.to_string())
    }
}

async fn first_frame<T: ByteStream>(
    framed: &mut Framed<T, FrameCodec>,
    timeout: Duration,
) -> Result<Frame, HandshakeError> {
    match tokio::time::timeout(timeout, framed.next()).await {
        Err(_) => Err(HandshakeError::Timeout),
        Ok(None) => Err(HandshakeError::Closed),
        Ok(Some(frame)) => Ok(frame?),
    }
}

/// Service side: sends `hello`, waits for the Welcome, and starts the link. The link's
/// send window is the one the gateway announced.
pub async fn dial<T: ByteStream>(
    io: T,
    hello: &Hello,
    mut config: LinkConfig,
    timeout: Duration,
) -> Result<(Link, mpsc::UnboundedReceiver<LinkEvent>, Welcome), HandshakeError> {
    let mut framed = Framed::new(io, FrameCodec::new(config.max_frame_payload));
    framed.send(hello.to_frame(0)?).await?;
    let frame = first_frame(&mut framed, timeout).await?;
    match frame.frame_type {
        FrameType::Welcome => {
            let welcome = Welcome::decode(frame.payload)?;
            config.send_window = welcome.initial_window;
            config.recv_window = hello.initial_window;
            // The gateway reserves a request body's window in its payload budget: a
            // service's windows never grow past what its Hello announced.
            config.recv_window_max = hello.initial_window;
            let (link, events) = Link::start(framed, Role::Service, config, true);
            Ok((link, events, welcome))
        }
        FrameType::Error => {
            let error = ErrorMessage::decode(frame.payload)?;
            Err(HandshakeError::Refused { code: error.code, message: error.message })
        }
        other => Err(HandshakeError::Protocol(format!("expected Welcome, got {other:?}"))),
    }
}

/// Gateway side: a connection whose Hello has been read and awaits a verdict.
#[derive(Debug)]
pub struct PendingService<T> {
    framed: Framed<T, FrameCodec>,
    pub hello: Hello,
}

/// Gateway side: reads the first frame, which must be a Hello of at most
/// `max_hello_size` payload bytes in a version we speak. A bad first frame is answered
/// with an Error (`ProtocolViolation`), then the connection closes.
pub async fn accept_hello<T: ByteStream>(
    io: T,
    max_hello_size: usize,
    timeout: Duration,
) -> Result<PendingService<T>, HandshakeError> {
    let mut framed = Framed::new(io, FrameCodec::new(max_hello_size));
    let hello = match first_frame(&mut framed, timeout).await.and_then(decode_hello) {
        Ok(hello) => hello,
        Err(HandshakeError::Protocol(message)) => {
            send_error(&mut framed, ErrorCode::ProtocolViolation, &message).await;
            return Err(HandshakeError::Protocol(message));
        }
        Err(other) => return Err(other),
    };
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.protocol_version) {
        let message = format!(
            "protocol version {} is not supported (this gateway speaks {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION})",
            hello.protocol_version
        );
        send_error(&mut framed, ErrorCode::RegistrationRefused, &message).await;
        return Err(HandshakeError::Protocol(message));
    }
    Ok(PendingService { framed, hello })
}

fn decode_hello(frame: Frame) -> Result<Hello, HandshakeError> {
    if frame.frame_type != FrameType::Hello {
        return Err(HandshakeError::Protocol(format!("expected Hello, got {:?}", frame.frame_type)));
    }
    Ok(Hello::decode(frame.payload)?)
}

/// Sends an Error frame on id 0 and closes, each step bounded so a peer that does not
/// read cannot hold the connection.
async fn send_error<T: ByteStream>(framed: &mut Framed<T, FrameCodec>, code: ErrorCode, message: &str) {
    let error = ErrorMessage { code, message: message.to_owned() };
    if let Ok(frame) = error.to_frame(0) {
        let _ = tokio::time::timeout(Duration::from_secs(1), framed.send(frame)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), framed.close()).await;
}

impl<T: ByteStream> PendingService<T> {
    /// Starts the link held: nothing but control frames is written until
    /// [`Link::open_with`] sends the Welcome. This lets the owner register the service
    /// first and refuse it (an Error frame, then close) without a Welcome ever going out.
    /// The gateway's receive window starts at `welcome.initial_window` (and may grow to
    /// `config.recv_window_max`); its send window is the Hello's.
    pub fn start(self, welcome: &Welcome, config: LinkConfig) -> (Link, mpsc::UnboundedReceiver<LinkEvent>) {
        self.start_observed(welcome, config, None)
    }

    /// Like [`PendingService::start`], telling `observer` of every frame the link reads
    /// and writes from now on.
    pub fn start_observed(
        self,
        welcome: &Welcome,
        mut config: LinkConfig,
        observer: Option<Arc<dyn TrafficObserver>>,
    ) -> (Link, mpsc::UnboundedReceiver<LinkEvent>) {
        config.recv_window = welcome.initial_window;
        config.send_window = self.hello.initial_window;
        Link::start_observed(self.framed, Role::Gateway, config, false, observer)
    }

    /// Accepts the service at once: starts the link and sends `welcome`.
    pub async fn welcome(
        self,
        welcome: &Welcome,
        config: LinkConfig,
    ) -> Result<(Link, mpsc::UnboundedReceiver<LinkEvent>), HandshakeError> {
        let (link, events) = self.start(welcome, config);
        link.open_with(welcome).map_err(|e| HandshakeError::Protocol(e.to_string()))?;
        Ok((link, events))
    }

    /// Refuses the service with a reason it can read, then closes the connection.
    pub async fn refuse(mut self, code: ErrorCode, message: &str) {
        send_error(&mut self.framed, code, message).await;
    }
}
