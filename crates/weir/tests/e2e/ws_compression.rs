//! permessage-deflate (RFC 7692) between clients and the gateway, with a client written
//! here on a raw socket and flate2 (no Rust WebSocket client at hand speaks the
//! extension), so that the tests can also send what a well-behaved client would not.
//!
//! On a mount with `ws_compression = true`: the 101 names the extension, and the demo's
//! echo returns text and binary messages, single and fragmented, compressed and not,
//! through several sessions at once, with the context kept between messages or reset
//! after each as negotiated; the gateway's copies come back compressed (short ones
//! plain). Without `ws_compression` the 101 names nothing and a frame with RSV1 is a
//! protocol error (1002). A compression bomb (1 GiB of zeros in about a MiB) closes with
//! 1009 while the process's memory stays far below what it inflates to; invalid
//! compressed data closes with 1007.

use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_gateway::config::{AuthConfig, MountConfig, MountSettings, Profile};
use weir_gateway::GatewayConfig;

use crate::common::*;

/// The flush tail the sender drops from each compressed message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
/// The mask of every client frame (any key does; a fixed one keeps failures readable).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A `/stream` streaming mount with the declared defaults changed by `change`.
pub(crate) fn streaming(change: impl FnOnce(&mut MountSettings)) -> GatewayConfig {
    let mut settings = MountSettings::declared_defaults();
    change(&mut settings);
    let mount = MountConfig {
        prefix: "/stream".into(),
        profile: Profile::Streaming,
        root: None,
        auth: AuthConfig::None,
        settings,
    };
    GatewayConfig { mounts: vec![mount], ..config() }
}

/// One message as the client read it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Received {
    /// The opcode of its first frame (text, binary or close).
    pub opcode: u8,
    pub payload: Vec<u8>,
    /// Whether its first frame had RSV1 set: it came compressed.
    pub compressed: bool,
}

/// A WebSocket client speaking permessage-deflate by hand over any byte stream.
pub(crate) struct DeflateClient<S> {
    io: S,
    /// Bytes read and not yet parsed.
    unread: Vec<u8>,
    compress: Compress,
    decompress: Decompress,
    /// Reset the compressor after each message (`client_no_context_takeover` agreed).
    reset_compressor: bool,
    /// Reset the decompressor after each message (`server_no_context_takeover` agreed).
    reset_decompressor: bool,
}

/// One frame as a client sends it, masked; `rsv1` sets the compression bit.
pub(crate) fn client_frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n < 65536 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    frame
}

impl<S> DeflateClient<S> {
    /// A client on `io`, whose handshake is done, with the parameters the gateway agreed to.
    pub(crate) fn new(io: S, unread: Vec<u8>, agreed: &str) -> Self {
        DeflateClient {
            io,
            unread,
            compress: Compress::new(Compression::default(), false),
            decompress: Decompress::new(false),
            reset_compressor: agreed.contains("client_no_context_takeover"),
            reset_decompressor: agreed.contains("server_no_context_takeover"),
        }
    }

    /// `payload` compressed as the extension sends it: deflated, sync-flushed, tail off.
    pub(crate) fn deflate(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 64);
        let start = self.compress.total_in();
        loop {
            let consumed = (self.compress.total_in() - start) as usize;
            out.reserve(64 + payload.len() / 4);
            self.compress.compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync).unwrap();
            if self.compress.total_in() - start == payload.len() as u64 && out.len() < out.capacity() {
                break;
            }
        }
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - TAIL.len());
        if self.reset_compressor {
            self.compress.reset();
        }
        out
    }
}

impl<S: AsyncWrite + Unpin> DeflateClient<S> {
    /// Sends one frame, masked; `rsv1` sets the compression bit.
    pub(crate) async fn send_frame(&mut self, fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) {
        self.io.write_all(&client_frame(fin, rsv1, opcode, payload)).await.unwrap();
    }

    /// Sends a message in `fragments` frames, compressed or not.
    pub(crate) async fn send(&mut self, opcode: u8, payload: &[u8], fragments: usize, compressed: bool) {
        let wire = if compressed { self.deflate(payload) } else { payload.to_vec() };
        let size = wire.len().div_ceil(fragments).max(1);
        let pieces: Vec<&[u8]> = if wire.is_empty() { vec![&[][..]] } else { wire.chunks(size).collect() };
        for (i, piece) in pieces.iter().enumerate() {
            let opcode = if i == 0 { opcode } else { CONTINUATION };
            self.send_frame(i + 1 == pieces.len(), compressed && i == 0, opcode, piece).await;
        }
    }
}

impl<S: AsyncRead + Unpin> DeflateClient<S> {
    /// Reads until `n` bytes are buffered.
    async fn fill(&mut self, n: usize) -> bool {
        while self.unread.len() < n {
            let mut buf = [0u8; 16 * 1024];
            match tokio::time::timeout(WAIT, self.io.read(&mut buf)).await.expect("nothing arrived in time") {
                Ok(0) | Err(_) => return false,
                Ok(read) => self.unread.extend_from_slice(&buf[..read]),
            }
        }
        true
    }

    /// The next frame from the gateway: (fin, rsv1, opcode, payload), or `None` at the end.
    async fn frame(&mut self) -> Option<(bool, bool, u8, Vec<u8>)> {
        if !self.fill(2).await {
            return None;
        }
        let (first, second) = (self.unread[0], self.unread[1]);
        assert_eq!(second & 0x80, 0, "the gateway's frames are not masked");
        let (header, length) = match second & 0x7f {
            126 => {
                assert!(self.fill(4).await);
                (4, u64::from(u16::from_be_bytes([self.unread[2], self.unread[3]])))
            }
            127 => {
                assert!(self.fill(10).await);
                (10, u64::from_be_bytes(self.unread[2..10].try_into().unwrap()))
            }
            n => (2, u64::from(n)),
        };
        let end = header + length as usize;
        assert!(self.fill(end).await, "the connection ended inside a frame");
        let payload = self.unread[header..end].to_vec();
        self.unread.drain(..end);
        Some((first & 0x80 != 0, first & 0x40 != 0, first & 0x0f, payload))
    }

    /// The next message (control frames other than close skipped), inflated if it came
    /// compressed; `None` at the end of the connection.
    pub(crate) async fn message(&mut self) -> Option<Received> {
        let (mut fin, compressed, opcode, mut payload) = loop {
            let frame = self.frame().await?;
            if frame.2 < 0x8 || frame.2 == CLOSE {
                break frame;
            }
        };
        while !fin {
            let (last, rsv1, opcode, more) = self.frame().await.expect("the rest of the message");
            assert!(!rsv1 && opcode == CONTINUATION);
            payload.extend_from_slice(&more);
            fin = last;
        }
        if compressed {
            payload = self.inflate(&payload);
        }
        Some(Received { opcode, payload, compressed })
    }

    fn inflate(&mut self, compressed: &[u8]) -> Vec<u8> {
        let input = [compressed, &TAIL].concat();
        let mut out = Vec::with_capacity(input.len() * 8 + 1024);
        let start = self.decompress.total_in();
        while self.decompress.total_in() - start < input.len() as u64 || out.len() == out.capacity() {
            out.reserve(out.capacity());
            let consumed = (self.decompress.total_in() - start) as usize;
            self.decompress.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync).unwrap();
        }
        if self.reset_decompressor {
            self.decompress.reset(false);
        }
        out
    }

    /// Expects the gateway's close frame with `code` and `reason`.
    pub(crate) async fn closed_with(&mut self, code: u16, reason: &str) {
        let close = self.message().await.expect("a close frame");
        assert_eq!(close.opcode, CLOSE, "{close:?}");
        assert_eq!(u16::from_be_bytes([close.payload[0], close.payload[1]]), code);
        assert_eq!(std::str::from_utf8(&close.payload[2..]).unwrap(), reason);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> DeflateClient<S> {
    /// Closes normally and waits for the gateway's reply.
    pub(crate) async fn close(mut self) {
        self.send_frame(true, false, CLOSE, &[0x03, 0xe8]).await;
        self.closed_with(1000, "").await;
    }
}

/// Upgrades to `path` offering `offer`; returns the client and the extension the 101
/// names, if any.
async fn upgrade(h: &Harness, path: &str, offer: &str) -> (DeflateClient<TcpStream>, Option<String>) {
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: {offer}\r\n\r\n",
        h.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let end = loop {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the 101: {}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&buf[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let text = String::from_utf8(head[..end].to_vec()).unwrap();
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    let extensions: Vec<String> = text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-extensions"))
        .map(|(_, value)| value.trim().to_owned())
        .collect();
    assert!(extensions.len() <= 1, "exactly one accepted extension: {extensions:?}");
    let agreed = extensions.into_iter().next();
    let client = DeflateClient::new(tcp, head[end..].to_vec(), agreed.as_deref().unwrap_or(""));
    (client, agreed)
}

/// Text like an application's: compresses well, more so with the previous message at hand.
fn json_text(session: usize, n: usize) -> String {
    (0..n).map(|i| format!("{{\"session\":{session},\"seq\":{i},\"symbol\":\"WEIR\",\"price\":{}}}", i * 7)).collect()
}

/// Runs the exchange of one session: every kind of message, echoed intact.
async fn round_trips(client: &mut DeflateClient<TcpStream>, session: usize) {
    let text = json_text(session, 40);
    let binary: Vec<u8> = (0..300 * 1024).map(|i| (i % 13) as u8 * (session as u8 + 1)).collect();
    let cases: [(u8, &[u8], usize, bool); 6] = [
        (TEXT, text.as_bytes(), 1, true),
        (TEXT, text.as_bytes(), 1, true),
        (BINARY, &binary, 1, true),
        (TEXT, text.as_bytes(), 3, true),
        (BINARY, &binary[..5000], 4, false),
        (TEXT, b"tiny", 1, true),
    ];
    for (opcode, payload, fragments, compressed) in cases {
        client.send(opcode, payload, fragments, compressed).await;
        let echo = client.message().await.expect("the echo");
        assert_eq!((echo.opcode, echo.payload.len()), (opcode, payload.len()));
        assert!(echo.payload == payload, "session {session}: the echo differs");
        assert_eq!(echo.compressed, payload.len() >= 64, "long messages come back compressed, short ones plain");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiated_messages_round_trip_compressed_in_several_sessions_at_once() {
    let h = Harness::with_demo(streaming(|s| s.ws_compression = true)).await;
    let sessions = (0..6).map(|session| {
        let h = &h;
        async move {
            let offer = match session % 2 {
                0 => "permessage-deflate; client_max_window_bits",
                _ => "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            };
            let (mut client, agreed) = upgrade(h, "/stream/echo", offer).await;
            let expected = match session % 2 {
                0 => "permessage-deflate",
                _ => "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            };
            assert_eq!(agreed.as_deref(), Some(expected));
            round_trips(&mut client, session).await;
            client.close().await;
        }
    });
    futures_util::future::join_all(sessions).await;
    h.assert_budget_released().await;
}

#[tokio::test]
async fn the_first_offer_the_gateway_can_honour_is_the_one_accepted() {
    let h = Harness::with_demo(streaming(|s| s.ws_compression = true)).await;
    let offer = "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=10";
    let (mut client, agreed) = upgrade(&h, "/stream/echo", offer).await;
    assert_eq!(agreed.as_deref(), Some("permessage-deflate; server_max_window_bits=10"));
    round_trips(&mut client, 0).await;
    client.close().await;
    h.assert_budget_released().await;
}

#[tokio::test]
async fn without_ws_compression_nothing_is_negotiated_and_rsv1_is_a_protocol_error() {
    let h = Harness::with_demo(streaming(|_| {})).await;
    let (mut client, agreed) = upgrade(&h, "/stream/echo", "permessage-deflate").await;
    assert_eq!(agreed, None, "no extension in the 101");
    client.send(TEXT, b"plain text passes", 1, false).await;
    assert_eq!(client.message().await.unwrap().payload, b"plain text passes");
    let compressed = client.deflate(b"compressed text does not");
    client.send_frame(true, true, TEXT, &compressed).await;
    client.closed_with(1002, "Protocol error").await;
    h.assert_budget_released().await;
}

#[tokio::test]
async fn rsv1_on_a_control_frame_or_a_continuation_is_a_protocol_error() {
    let h = Harness::with_demo(streaming(|s| s.ws_compression = true)).await;
    let (mut client, _) = upgrade(&h, "/stream/echo", "permessage-deflate").await;
    client.send_frame(true, true, 0x9, b"ping").await;
    client.closed_with(1002, "Protocol error").await;
    let (mut client, _) = upgrade(&h, "/stream/echo", "permessage-deflate").await;
    let compressed = client.deflate(&[b'x'; 200]);
    client.send_frame(false, true, BINARY, &compressed[..2]).await;
    client.send_frame(true, true, CONTINUATION, &compressed[2..]).await;
    client.closed_with(1002, "Protocol error").await;
    h.assert_budget_released().await;
}

#[tokio::test]
async fn invalid_compressed_data_closes_with_1007() {
    let h = Harness::with_demo(streaming(|s| s.ws_compression = true)).await;
    let (mut client, _) = upgrade(&h, "/stream/echo", "permessage-deflate").await;
    // Block type 3 does not exist.
    client.send_frame(true, true, BINARY, &[0xff, 0xff, 0xff, 0xff]).await;
    client.closed_with(1007, "Invalid compressed data").await;
    h.assert_budget_released().await;
}

/// The process's resident memory, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS in kB");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compression_bomb_closes_with_1009_without_being_inflated() {
    const GIB: usize = 1 << 30;
    let h = Harness::with_demo(streaming(|s| s.ws_compression = true)).await;
    let (client, _) = upgrade(&h, "/stream/echo", "permessage-deflate").await;
    // 1 GiB of zeros in one message: a MiB of zeros deflated after a full flush (which
    // starts afresh and ends on a byte boundary, so its blocks can be repeated), 1024
    // times, less the last flush's tail.
    let mut compress = Compress::new(Compression::best(), false);
    let mut mib = Vec::with_capacity(64 * 1024);
    compress.compress_vec(&vec![0u8; 1 << 20], &mut mib, FlushCompress::Full).unwrap();
    assert_eq!(compress.total_in(), 1 << 20);
    assert!(mib.ends_with(&TAIL));
    let mut bomb = mib.repeat(GIB >> 20);
    bomb.truncate(bomb.len() - TAIL.len());
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    let before = rss();
    // The gateway stops reading when it closes: the frame goes out while the close is awaited.
    let (read, mut write) = client.io.into_split();
    // In 16 frames, each far below the limit: only inflating can tell the message's size.
    let pieces: Vec<&[u8]> = bomb.chunks(bomb.len().div_ceil(16)).collect();
    let frame: Vec<u8> = pieces
        .iter()
        .enumerate()
        .flat_map(|(i, piece)| {
            let opcode = if i == 0 { BINARY } else { CONTINUATION };
            client_frame(i + 1 == pieces.len(), i == 0, opcode, piece)
        })
        .collect();
    drop(bomb);
    let sending = tokio::spawn(async move {
        let _ = write.write_all(&frame).await;
    });
    let mut reader = DeflateClient::new(read, client.unread, "");
    reader.closed_with(1009, "Message too big").await;
    let grown = rss().saturating_sub(before);
    assert!(grown < 64 << 20, "RSS grew by {grown} bytes for a bomb of {GIB} bytes");
    let _ = tokio::time::timeout(Duration::from_secs(10), sending).await;
    h.assert_budget_released().await;
}
