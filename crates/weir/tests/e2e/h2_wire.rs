//! A raw HTTP/2 client for the attack tests: it writes frames no client library would
//! (resets by the thousand, endless CONTINUATION, floods of SETTINGS and PING, HPACK
//! blocks that reference one entry over and over) and reads back what the gateway
//! answers, GOAWAY above all. Header blocks use HPACK literals only (with or without
//! indexing), which any decoder must accept; no HPACK crate is needed.
//!
//! It writes every frame type an attack may need; not every test uses all of them.

#![allow(dead_code)]

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::common::WAIT;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 §6).
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

/// Flags.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// Error codes (RFC 9113 §7).
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const STREAM_CLOSED: u32 = 0x5;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const COMPRESSION_ERROR: u32 = 0x9;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// SETTINGS identifiers.
pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;
pub const SETTINGS_ENABLE_CONNECT_PROTOCOL: u16 = 0x8;

/// One frame on the wire: the 9-byte header, then the payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = u32::try_from(payload.len()).expect("a frame-sized payload").to_be_bytes()[1..].to_vec();
    bytes.extend_from_slice(&[kind, flags]);
    bytes.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

pub fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> =
        entries.iter().flat_map(|(id, value)| [&id.to_be_bytes()[..], &value.to_be_bytes()].concat()).collect();
    frame(SETTINGS, 0, 0, &payload)
}

pub fn ping(opaque: u64) -> Vec<u8> {
    frame(PING, 0, 0, &opaque.to_be_bytes())
}

pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

pub fn data(stream: u32, flags: u8, bytes: &[u8]) -> Vec<u8> {
    frame(DATA, flags, stream, bytes)
}

/// An HPACK integer with an `prefix`-bit prefix, the first byte's high bits `pattern`
/// (RFC 7541 §5.1).
pub fn hpack_int(pattern: u8, prefix: u32, value: usize) -> Vec<u8> {
    let max = (1usize << prefix) - 1;
    if value < max {
        return vec![pattern | value as u8];
    }
    let mut bytes = vec![pattern | max as u8];
    let mut rest = value - max;
    while rest >= 128 {
        bytes.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    bytes.push(rest as u8);
    bytes
}

/// A string literal, not Huffman-coded.
fn hpack_string(text: &[u8]) -> Vec<u8> {
    [hpack_int(0, 7, text.len()), text.to_vec()].concat()
}

/// A field as a literal without indexing, with a literal name (RFC 7541 §6.2.2).
pub fn literal(name: &str, value: &[u8]) -> Vec<u8> {
    [vec![0x00], hpack_string(name.as_bytes()), hpack_string(value)].concat()
}

/// A field as a literal with incremental indexing: it enters the dynamic table as entry
/// 62 (RFC 7541 §6.2.1).
pub fn literal_indexed(name: &str, value: &[u8]) -> Vec<u8> {
    [vec![0x40], hpack_string(name.as_bytes()), hpack_string(value)].concat()
}

/// A reference to table entry `index` (62 is the newest dynamic entry).
pub fn indexed(index: usize) -> Vec<u8> {
    hpack_int(0x80, 7, index)
}

/// The header block of a request `method path` with the four pseudo-header fields.
pub fn request_block(method: &str, path: &str) -> Vec<u8> {
    [
        literal(":method", method.as_bytes()),
        literal(":scheme", b"http"),
        literal(":path", path.as_bytes()),
        literal(":authority", b"weir.test"),
    ]
    .concat()
}

/// A whole GET of `path` on `stream`, no body.
pub fn get(stream: u32, path: &str) -> Vec<u8> {
    frame(HEADERS, END_HEADERS | END_STREAM, stream, &request_block("GET", path))
}

/// A connection that has sent the preface and an empty SETTINGS frame.
pub async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.expect("connect to the gateway");
    socket.write_all(&[PREFACE, &settings(&[])].concat()).await.expect("preface");
    socket
}

/// One frame read back.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A GOAWAY's error code.
    pub fn goaway_code(&self) -> Option<u32> {
        (self.kind == GOAWAY).then(|| u32::from_be_bytes(self.payload[4..8].try_into().expect("8-byte GOAWAY")))
    }

    /// A RST_STREAM's error code.
    pub fn reset_code(&self) -> Option<u32> {
        (self.kind == RST_STREAM).then(|| u32::from_be_bytes(self.payload[..4].try_into().expect("4-byte RST_STREAM")))
    }

    /// A SETTINGS frame's value for `id`.
    pub fn setting(&self, id: u16) -> Option<u32> {
        let entries = self.payload.chunks_exact(6).filter(|_| self.kind == SETTINGS);
        entries
            .filter(|e| u16::from_be_bytes([e[0], e[1]]) == id)
            .map(|e| u32::from_be_bytes([e[2], e[3], e[4], e[5]]))
            .next_back()
    }
}

/// The next frame, or `None` once the connection is closed or reset.
pub async fn read_frame(reader: &mut (impl AsyncReadExt + Unpin)) -> Option<Frame> {
    let mut head = [0u8; 9];
    reader.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await.ok()?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some(Frame { kind: head[3], flags: head[4], stream, payload })
}

/// What the gateway sent until it closed the connection, and when it closed.
#[derive(Debug)]
pub struct Closed {
    pub frames: Vec<Frame>,
    pub at: Instant,
}

impl Closed {
    /// The GOAWAY's error code, if one came.
    pub fn goaway(&self) -> Option<u32> {
        self.frames.iter().find_map(Frame::goaway_code)
    }

    pub fn count(&self, kind: u8) -> usize {
        self.frames.iter().filter(|f| f.kind == kind).count()
    }
}

/// Reads every frame until the gateway closes the connection; panics if it is still
/// open after [`WAIT`].
pub async fn read_until_closed(mut reader: OwnedReadHalf) -> Closed {
    let mut frames = Vec::new();
    let read = async {
        while let Some(frame) = read_frame(&mut reader).await {
            frames.push(frame);
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("the gateway kept the connection open");
    Closed { frames, at: Instant::now() }
}

/// Writes `next(i)` for `i` in `0..limit`, never reading: `Some(i)` when write `i`
/// failed because the gateway closed the connection, `None` if all went through.
pub async fn flood(writer: &mut OwnedWriteHalf, limit: usize, mut next: impl FnMut(usize) -> Vec<u8>) -> Option<usize> {
    for i in 0..limit {
        if writer.write_all(&next(i)).await.is_err() {
            return Some(i);
        }
    }
    None
}

/// A connection whose socket buffers are small, so that a client that does not read
/// fills them with little data; the preface and an empty SETTINGS are sent.
pub async fn connect_small(addr: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.set_send_buffer_size(4096).expect("SO_SNDBUF");
    let mut socket = socket.connect(addr).await.expect("connect to the gateway");
    socket.write_all(&[PREFACE, &settings(&[])].concat()).await.expect("preface");
    socket
}

/// Resident memory of this process (the gateway runs in it), in bytes.
pub fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS in kB");
    kib * 1024
}
