//! The client connection's byte stream, with the protections that only the socket can
//! see: a write that stalls longer than `send_timeout` (the client stopped reading) and
//! a client that reads slower than `min_response_data_rate` once `data_rate_grace` has
//! passed (a trickling reader) both fail the connection's I/O, so hyper drops it and the
//! response's stream is cancelled. Both are judged by the bytes the client acknowledged,
//! as the kernel counts them, not by the bytes the socket took: the kernel buffers ahead
//! of the client, and wakes a blocked writer only in steps of many kilobytes.
//!
//! It also counts bytes read and written, which tells the front whether a connection
//! that timed out in its request head had started a request (answer 408) or was idle
//! (close quietly), and whether the first bytes were HTTP/2's preface, which tells the
//! connection's supervisor which protocol bounds apply. Reads and writes go through tokio's own `TcpStream` I/O, which reads
//! into hyper's buffer without zeroing it and skips the read that would only find the
//! socket empty. A dropped `ClientIo` hands its stream back in [`ConnState`] instead of
//! closing it, so that the front can still write a 408 after hyper has given up on the
//! connection, and close it gracefully ([`ClientStream::close_lingering`]).
//!
//! The same holds over TLS ([`ClientStream::Tls`]): bytes counted and compared with the
//! preface are the decrypted ones, and must say what ALPN agreed on (the preface after
//! `h2`, anything else otherwise: hyper-util's builder would take either), or the read
//! fails and hyper drops the connection. A write the TLS session cannot pass on to a full
//! socket is a blocked write like any other. Only a TLS stream buffers, so only its
//! flush goes to the stream (under the same stall and rate checks); a plain socket's
//! flush has nothing to do.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use super::socket;
use crate::limits::lock;
pub(crate) use crate::limits::stall::SendLimits;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::stream::ClientStream;

/// What the I/O shares with the front: byte counts, and the socket once hyper lets go
/// of it.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    read: AtomicU64,
    /// `read` as it was at the last write: reads since then are a request in progress.
    read_at_last_write: AtomicU64,
    /// Set when the I/O is dropped: the front may still owe the client a 408 on it, and
    /// closes it.
    released: Mutex<Option<ClientStream>>,
    /// A [`Protocol`] as a number: what the first bytes read said.
    protocol: AtomicU8,
}

/// The client's protocol, as its first bytes tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// Fewer bytes than HTTP/2's preface arrived, all of them matching it.
    Unknown = 0,
    /// The first bytes differ from HTTP/2's preface.
    Http1 = 1,
    /// The whole HTTP/2 preface arrived.
    Http2 = 2,
}

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl ConnState {
    /// Whether bytes of a new request arrived since the last response bytes went out.
    pub(crate) fn request_in_progress(&self) -> bool {
        self.read.load(Ordering::Relaxed) > self.read_at_last_write.load(Ordering::Relaxed)
    }

    /// The client's protocol, as far as its first bytes tell.
    pub(crate) fn protocol(&self) -> Protocol {
        match self.protocol.load(Ordering::Relaxed) {
            1 => Protocol::Http1,
            2 => Protocol::Http2,
            _ => Protocol::Unknown,
        }
    }

    /// Compares `bytes`, read after `offset` earlier bytes, with the HTTP/2 preface.
    fn saw(&self, offset: u64, bytes: &[u8]) {
        let Some(rest) = usize::try_from(offset).ok().and_then(|at| H2_PREFACE.get(at..)) else {
            return;
        };
        let compared = rest.len().min(bytes.len());
        let protocol = if bytes[..compared] != rest[..compared] {
            Protocol::Http1
        } else if compared == rest.len() {
            Protocol::Http2
        } else {
            return;
        };
        self.protocol.store(protocol as u8, Ordering::Relaxed);
    }

    /// The stream, once hyper has dropped its I/O (`None` while an upgraded connection
    /// still uses it, or once taken).
    pub(crate) fn take_socket(&self) -> Option<ClientStream> {
        // A poisoned slot still holds a valid socket (or none).
        lock(&self.released).take()
    }
}

/// A period in which the client is the bottleneck (writes keep hitting a full socket).
#[derive(Debug)]
struct SlowWindow {
    since: Instant,
    /// Bytes the socket took during the window: the client's progress where the kernel
    /// cannot say how much it acknowledged.
    written: u64,
    /// Bytes the client had acknowledged when the window opened, as the kernel counts them.
    acked_at_start: Option<u64>,
    last_blocked: Instant,
}

impl SlowWindow {
    /// Bytes the client took since the window opened: acknowledged, where the kernel
    /// says, which is what the client really read; else taken by the socket, which runs
    /// ahead of the client by what the kernel buffers.
    fn taken(&self, acked: Option<u64>) -> u64 {
        match (acked, self.acked_at_start) {
            (Some(now), Some(start)) => now.saturating_sub(start),
            _ => self.written,
        }
    }
}

/// A blocked write's deadline.
#[derive(Debug)]
struct Stall {
    /// Since when the client has taken nothing.
    since: Instant,
    /// Bytes the client had acknowledged at `since`: more later means it still reads.
    acked: Option<u64>,
    /// Wakes the writer to re-check both bounds.
    deadline: Pin<Box<Sleep>>,
}

/// The client's socket as hyper sees it.
#[derive(Debug)]
pub(crate) struct ClientIo {
    /// Always `Some` until `drop` takes it.
    stream: Option<ClientStream>,
    state: Arc<ConnState>,
    limits: SendLimits,
    stall: Option<Stall>,
    window: Option<SlowWindow>,
    /// The protocol ALPN agreed on (TLS only): the first bytes must speak it.
    agreed: Option<Protocol>,
}

/// A window ends when the socket has not been full for this long.
const CALM: Duration = Duration::from_secs(1);

impl ClientIo {
    /// Wraps `stream`; returns the I/O and what the front keeps of it.
    pub(crate) fn new(stream: ClientStream, limits: SendLimits) -> (ClientIo, Arc<ConnState>) {
        let state = Arc::new(ConnState::default());
        let agreed = stream.alpn_h2().map(|h2| if h2 { Protocol::Http2 } else { Protocol::Http1 });
        let io =
            ClientIo { stream: Some(stream), state: Arc::clone(&state), limits, stall: None, window: None, agreed };
        (io, state)
    }

    /// Fails once the first bytes speak another protocol than the one ALPN agreed on.
    fn check_agreed(&self) -> io::Result<()> {
        let seen = self.state.protocol();
        match self.agreed {
            Some(agreed) if seen != Protocol::Unknown && seen != agreed => {
                let detail = format!("the client speaks {seen:?} after agreeing on {agreed:?} by ALPN");
                Err(io::Error::new(io::ErrorKind::InvalidData, detail))
            }
            _ => Ok(()),
        }
    }

    /// The socket, pinned for tokio's I/O; `None` only after `drop` took it.
    fn socket(&mut self) -> io::Result<Pin<&mut ClientStream>> {
        match &mut self.stream {
            Some(stream) => Ok(Pin::new(stream)),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "client socket already released")),
        }
    }

    /// One write with `write`; a full socket goes through [`ClientIo::blocked`] for the
    /// stall and rate checks.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut ClientStream>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match write(self.socket()?, cx) {
            Poll::Pending => self.blocked(cx),
            Poll::Ready(Ok(n)) => {
                self.wrote(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
        }
    }

    fn wrote(&mut self, n: usize) {
        self.stall = None;
        let c = &self.state;
        c.read_at_last_write.store(c.read.load(Ordering::Relaxed), Ordering::Relaxed);
        if let Some(window) = &mut self.window {
            if window.last_blocked.elapsed() > CALM {
                self.window = None;
            } else {
                window.written += n as u64;
            }
        }
    }

    /// The socket is full: check the stall deadline and the minimum rate, both judged by
    /// what the client acknowledged (see [`super::socket::bytes_acked`]).
    fn blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let now = Instant::now();
        let limits = self.limits;
        let acked = self.stream.as_ref().and_then(|stream| socket::bytes_acked(stream.tcp()));
        let window =
            self.window.get_or_insert(SlowWindow { since: now, written: 0, acked_at_start: acked, last_blocked: now });
        window.last_blocked = now;
        let (elapsed, taken) = (now.duration_since(window.since), window.taken(acked));
        if elapsed > limits.grace && (taken as f64) < limits.min_rate as f64 * elapsed.as_secs_f64() {
            let detail = format!("client read {taken} bytes in {elapsed:?}, under the minimum rate");
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, detail)));
        }
        let rate_floor = Duration::from_secs_f64(taken as f64 / limits.min_rate.max(1) as f64);
        let rate_due = window.since + limits.grace.max(rate_floor) + Duration::from_millis(1);
        let stall = self.stall.get_or_insert_with(|| Stall {
            since: now,
            acked,
            deadline: Box::pin(tokio::time::sleep(limits.send_timeout)),
        });
        if acked > stall.acked {
            (stall.since, stall.acked) = (now, acked);
        }
        if now.duration_since(stall.since) >= limits.send_timeout {
            let detail = format!("client stopped reading for {:?}", limits.send_timeout);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, detail)));
        }
        // Wake again when either bound would be crossed if nothing moves meanwhile: the
        // socket may stay unwritable for long (Linux wakes a writer only once the unsent
        // bytes fall under half the low-water mark), and the checks above only run when
        // polled.
        stall.deadline.as_mut().reset((stall.since + limits.send_timeout).min(rate_due));
        if stall.deadline.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(this.socket()?.poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        let offset = this.state.read.fetch_add(n as u64, Ordering::Relaxed);
        if offset < H2_PREFACE.len() as u64 && this.state.protocol() == Protocol::Unknown {
            this.state.saw(offset, &buf.filled()[before..]);
            this.check_agreed()?;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, |stream, cx| stream.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, |stream, cx| stream.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.socket()?.is_tls() {
            return Poll::Ready(Ok(()));
        }
        // Not a write: hyper flushes while a request head is half read too, which must
        // still count as a request in progress.
        match this.socket()?.poll_flush(cx) {
            Poll::Pending => this.blocked(cx).map_ok(drop),
            Poll::Ready(Ok(())) => {
                this.stall = None;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().socket()?.poll_shutdown(cx)
    }
}

impl Drop for ClientIo {
    fn drop(&mut self) {
        let mut slot = lock(&self.state.released);
        *slot = self.stream.take();
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A connected pair: the gateway's side wrapped in a `ClientIo`, and the client's.
    async fn pair(limits: SendLimits) -> (ClientIo, Arc<ConnState>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (io, state) = ClientIo::new(ClientStream::Plain(server), limits);
        (io, state, client)
    }

    fn lenient() -> SendLimits {
        SendLimits { send_timeout: Duration::from_secs(30), min_rate: 0, grace: Duration::from_secs(30) }
    }

    #[tokio::test]
    async fn a_request_read_but_not_answered_is_in_progress_until_a_write() {
        let (mut io, state, mut client) = pair(lenient()).await;
        assert!(!state.request_in_progress());
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n");
        assert!(state.request_in_progress());
        io.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        assert!(!state.request_in_progress());
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"HTTP/1.1 200 OK\r\n\r\n");
    }

    #[tokio::test]
    async fn dropped_mid_request_the_socket_is_handed_back_for_a_late_answer() {
        let (mut io, state, mut client) = pair(lenient()).await;
        client.write_all(b"GET / HT").await.unwrap();
        let mut buf = [0u8; 64];
        let _ = io.read(&mut buf).await.unwrap();
        drop(io);
        assert!(state.request_in_progress());
        let mut socket = state.take_socket().expect("the socket, handed back");
        socket.answer_late(b"late");
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"late");
        assert!(state.take_socket().is_none(), "handed back once");
    }

    #[tokio::test]
    async fn dropped_between_requests_the_socket_is_handed_back_idle() {
        let (io, state, mut client) = pair(lenient()).await;
        drop(io);
        assert!(!state.request_in_progress());
        drop(state.take_socket().expect("the socket, handed back"));
        let mut buf = [0u8; 8];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0, "closed once dropped");
    }

    #[tokio::test]
    async fn the_http2_preface_is_told_from_http1_as_it_arrives() {
        let (mut io, state, mut client) = pair(lenient()).await;
        let mut buf = [0u8; 64];
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        let _ = io.read(&mut buf).await.unwrap();
        assert_eq!(state.protocol(), Protocol::Unknown);
        client.write_all(&H2_PREFACE[10..]).await.unwrap();
        while state.read.load(Ordering::Relaxed) < 24 {
            let _ = io.read(&mut buf).await.unwrap();
        }
        assert_eq!(state.protocol(), Protocol::Http2);
        let (mut io, state, mut client) = pair(lenient()).await;
        client.write_all(b"POST / HTTP/1.1\r\n").await.unwrap();
        let _ = io.read(&mut buf).await.unwrap();
        assert_eq!(state.protocol(), Protocol::Http1);
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_fails_the_write_after_send_timeout() {
        let limits =
            SendLimits { send_timeout: Duration::from_millis(200), min_rate: 0, grace: Duration::from_secs(30) };
        let (mut io, _state, _client) = pair(limits).await;
        let chunk = vec![0u8; 256 * 1024];
        let started = Instant::now();
        let err = loop {
            if let Err(err) = io.write(&chunk).await {
                break err;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the write never failed");
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
