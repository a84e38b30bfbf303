//! The answer to a connection refused before hyper serves it (over the per-IP limit, or
//! at the connection cap with none idle to shed), in the protocol the client speaks: an
//! HTTP/2 client (one that opens with the connection preface, RFC 9113 §3.4) gets the
//! server's SETTINGS then GOAWAY `ENHANCE_YOUR_CALM` naming the reason; any other client
//! the HTTP/1.1 503 of [`GatewayError::to_http1`]. Written by hand because hyper is not
//! running on such a connection; the two frames are fixed and tiny.
//!
//! Invariant: a refused connection costs at most [`REFUSAL_BOUND`] of waiting for the
//! client's first bytes and writing the answer, then the lingering close.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::stream::ClientStream;
use crate::response::error::GatewayError;

/// The HTTP/2 connection preface a client sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest a refused connection is read from (its first bytes) and then written to.
const REFUSAL_BOUND: Duration = Duration::from_secs(1);

/// HTTP/2 frame types and the error code of the GOAWAY (RFC 9113 §6, §7).
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Answers `stream` with `refusal` in its client's protocol, then closes it. `None`: a
/// TLS listener's connection, which would read a plain answer as garbage: only closed.
pub(super) async fn refuse_connection(mut stream: TcpStream, refusal: Option<GatewayError>) {
    if let Some(refusal) = refusal {
        let answer = match tokio::time::timeout(REFUSAL_BOUND, opens_http2(&mut stream)).await {
            Ok(true) => goaway(&refusal.to_string()),
            _ => refusal.to_http1(),
        };
        let _ = tokio::time::timeout(REFUSAL_BOUND, stream.write_all(&answer)).await;
    }
    ClientStream::Plain(stream).close_lingering().await;
}

/// Whether the client's first bytes are the HTTP/2 preface; reads no further than it.
async fn opens_http2(stream: &mut TcpStream) -> bool {
    let mut seen = [0u8; H2_PREFACE.len()];
    let mut read = 0;
    while read < seen.len() {
        match stream.read(&mut seen[read..]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => read += n,
        }
        if seen[..read] != H2_PREFACE[..read] {
            return false;
        }
    }
    true
}

/// An empty SETTINGS (the server's preface), then GOAWAY with no stream processed,
/// `ENHANCE_YOUR_CALM` and `reason` as debug data.
fn goaway(reason: &str) -> Vec<u8> {
    let mut bytes = frame_head(0, SETTINGS);
    let debug = reason.as_bytes();
    bytes.extend(frame_head(8 + debug.len(), GOAWAY));
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
    bytes.extend_from_slice(debug);
    bytes
}

/// A frame header on stream 0 with no flags: 24-bit length, type.
fn frame_head(length: usize, kind: u8) -> Vec<u8> {
    let length = u32::try_from(length).unwrap_or(u32::MAX).min(0xff_ffff).to_be_bytes();
    vec![length[1], length[2], length[3], kind, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_goaway_follows_an_empty_settings_and_carries_the_reason() {
        let bytes = goaway("too many");
        assert_eq!(&bytes[..9], &[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[9..18], &[0, 0, 16, GOAWAY, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[18..26], &[0, 0, 0, 0, 0, 0, 0, 0x0b]);
        assert_eq!(&bytes[26..], b"too many");
    }
}
