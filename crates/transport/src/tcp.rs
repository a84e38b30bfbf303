//! The TCP transport: a service connection is one TCP socket carrying frames.
//!
//! Both ends turn Nagle's algorithm off (`TCP_NODELAY`): frames are written in flushed
//! batches by the link's writer, so delaying small writes only adds latency (a request
//! head waiting for the ACK of the previous one). Dialling is bounded by
//! [`CONNECT_TIMEOUT`], so a reconnect loop is never stuck on an unreachable host.
//! Nothing else is TCP-specific: the socket goes to the same handshake and link as any
//! other [`crate::ByteStream`].

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

/// Longest a dial may take before it fails with `TimedOut`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `addr` (resolved now) with `TCP_NODELAY` set, within [`CONNECT_TIMEOUT`].
pub async fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Gateway side: the next accepted socket, with `TCP_NODELAY` set.
pub async fn accept(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    let (stream, peer) = listener.accept().await?;
    stream.set_nodelay(true)?;
    Ok((stream, peer))
}

/// Service side: dials one gateway over TCP. The address (`host:port`) is resolved on
/// every dial, so a gateway that moves behind a DNS name is found again. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpDialer {
    addr: String,
}

impl TcpDialer {
    /// A dialer for `addr`, e.g. `"127.0.0.1:7070"` or `"gateway.internal:7070"`.
    pub fn new(addr: impl Into<String>) -> Self {
        TcpDialer { addr: addr.into() }
    }

    /// The address it dials.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Opens one connection.
    pub async fn dial(&self) -> io::Result<TcpStream> {
        connect(self.addr.as_str()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_ends_disable_nagle() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dialer = TcpDialer::new(listener.local_addr().unwrap().to_string());
        let (client, accepted) = tokio::join!(dialer.dial(), accept(&listener));
        assert!(client.unwrap().nodelay().unwrap());
        assert!(accepted.unwrap().0.nodelay().unwrap());
    }

    #[tokio::test]
    async fn refused_dial_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = TcpDialer::new(addr.to_string()).dial().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }
}
