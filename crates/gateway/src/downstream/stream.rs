//! The client connection's byte stream under [`super::client_io::ClientIo`]: the plain
//! socket, or TLS over it once the handshake is done ([`super::tls`]). Everything above
//! (hyper, the timeouts, the minimum data rates, the supervisor) sees the same stream
//! either way; what differs is how a connection hyper has given up on is answered late
//! and closed, which this module owns:
//!
//! - a late answer (the 408 for a request head that did not arrive in time) is written
//!   without blocking: straight to a plain socket if it has room, into the TLS
//!   session's buffer otherwise, which the close then flushes;
//! - the close is lingering ([`ClientStream::close_lingering`]): over TLS a close_notify
//!   (flushing what is buffered) within [`LINGER_TIME`], then, for both, a TCP
//!   half-close and the discarding of what the client still sends.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use weir_transport::tls::ServerTlsStream;

/// A client's connection, plain or under TLS.
#[derive(Debug)]
pub(crate) enum ClientStream {
    Plain(TcpStream),
    /// Boxed: a TLS session is a few kilobytes, a plain socket a few bytes.
    Tls(Box<ServerTlsStream<TcpStream>>),
}

/// How long a closing connection keeps reading what its client still sends (and, over
/// TLS, has to take the close_notify and what was buffered before it).
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How much of it is read and discarded, at most.
const LINGER_BYTES: usize = 4 * 1024 * 1024;

impl ClientStream {
    /// The TCP socket underneath, for what only the kernel can tell about it.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(socket) => socket,
            ClientStream::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Whether this is TLS, whose writes are buffered and must be flushed.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    /// Over TLS, whether ALPN agreed on HTTP/2 (`h2`); `None` for a plain socket.
    pub(crate) fn alpn_h2(&self) -> Option<bool> {
        match self {
            ClientStream::Plain(_) => None,
            ClientStream::Tls(tls) => Some(tls.get_ref().1.alpn_protocol() == Some(b"h2")),
        }
    }

    /// Writes `answer` without ever waiting: what a plain socket has no room for is
    /// lost; over TLS it is buffered in the session and flushed by the close.
    pub(crate) fn answer_late(&mut self, answer: &[u8]) {
        match self {
            ClientStream::Plain(socket) => {
                let _ = socket.try_write(answer);
            }
            ClientStream::Tls(tls) => {
                let _ = tls.get_mut().1.writer().write_all(answer);
            }
        }
    }

    /// Closes a connection hyper is done with: stops sending (the client sees the end of
    /// the response; over TLS, a close_notify after the buffered bytes), then reads and
    /// discards what the client is still sending, for at most [`LINGER_TIME`] and
    /// [`LINGER_BYTES`], before closing. Closing a socket with unread bytes in it makes
    /// the kernel answer with a reset, which can destroy the response just written: a
    /// client still uploading a refused body would see a broken pipe instead of its 413
    /// or 503. A client that already closed costs one read that finds the end.
    pub(crate) async fn close_lingering(self) {
        let deadline = tokio::time::Instant::now() + LINGER_TIME;
        let mut socket = match self {
            ClientStream::Plain(socket) => socket,
            ClientStream::Tls(mut tls) => {
                // Bounded: a client that does not read keeps the close_notify from going out.
                let _ = tokio::time::timeout_at(deadline, tls.shutdown()).await;
                tls.into_inner().0
            }
        };
        let _ = socket.shutdown().await;
        // Allocated only here, so an open connection's task does not carry it.
        let mut discard = vec![0u8; 16 * 1024];
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            match tokio::time::timeout_at(deadline, socket.read(&mut discard)).await {
                Ok(Ok(n @ 1..)) => discarded += n,
                _ => return,
            }
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(socket) => Pin::new(socket).poll_read(cx, buf),
            ClientStream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(socket) => Pin::new(socket).poll_write(cx, buf),
            ClientStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(socket) => Pin::new(socket).poll_write_vectored(cx, bufs),
            ClientStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(socket) => Pin::new(socket).poll_flush(cx),
            ClientStream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(socket) => Pin::new(socket).poll_shutdown(cx),
            ClientStream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
