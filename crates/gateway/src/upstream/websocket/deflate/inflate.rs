//! The client's socket with its compressed messages inflated, as tungstenite reads it:
//! [`Inflating`] follows the client's frames and rewrites each compressed message
//! (RSV1 on its first frame) into plain frames of its inflated bytes, passing every
//! other frame through as it came.
//!
//! It inflates only as far as its reader reads, a bounded piece at a time: it holds at
//! most one read of the socket ([`INPUT`]) and one piece of output ([`OUTPUT`]) beside
//! the inflater's window. So the decompressed size of a message is bounded where the plain
//! frames are read: under the payload budget of the session's reader (`flight.rs`, which
//! therefore counts *decompressed* bytes, those the gateway actually holds) and by
//! tungstenite's `ws_max_message_size`, which fails an oversized message with 1009 as
//! soon as its assembled bytes would pass the limit. A compression bomb costs the
//! gateway what the mount lets one message hold, never what it inflates to.
//!
//! Each piece of a compressed message's output becomes a non-final frame, masked with a
//! zero key (tungstenite requires masked client frames; a zero key leaves the bytes
//! as they are), and the message ends with an empty final frame, once the flush's
//! `0x00 0x00 0xff 0xff` tail, which the client leaves out, has been inflated.
//!
//! Invariant: a frame whose use of the extension is wrong (RSV1 on a control frame or a
//! continuation, RSV2 or RSV3, an unmasked compressed frame, a new message inside a
//! compressed one) is passed on untouched together with everything after it, so that
//! tungstenite fails it exactly as it fails any protocol error (1002).

use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

use super::compress::FLUSH_TAIL;
use super::Deflate;

/// Bytes read from the socket at a time.
const INPUT: usize = 16 * 1024;
/// Inflated bytes per plain frame, and about as much as waits for the reader. A frame
/// and its header stay well inside the read-ahead the session's budget grants beyond its
/// largest message (`session::in_flight_limit`), so the frame that carries a message
/// past `ws_max_message_size` can always be read, and the message refused.
const OUTPUT: usize = 8 * 1024;
const _: () = assert!(OUTPUT + MAX_FRAME_HEADER <= crate::upstream::websocket::session::READ_BUFFER);
/// Compressed bytes unmasked and inflated per step.
const STEP: usize = 4 * 1024;
/// Longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
const MAX_FRAME_HEADER: usize = 14;

/// The client broke the extension in a way the plain frames cannot show tungstenite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InflateError {
    /// A compressed frame longer than the mount's largest message (as for a plain one).
    #[error("a compressed frame longer than the largest message")]
    FrameTooLong,
    /// The compressed data is not valid deflate.
    #[error("invalid compressed data")]
    Corrupt,
}

/// Where the reader is in the client's frames.
#[derive(Debug, Clone, Copy)]
enum FrameState {
    /// Reading a header (its bytes so far in `Inflater::header`).
    Header,
    /// Passing `left` payload bytes on as they are.
    Copy { left: u64 },
    /// Inflating a compressed frame: `left` masked bytes to come, `offset` of them read.
    Inflate { left: u64, mask: [u8; 4], offset: u64, last: bool },
    /// The compressed message's frames are read: inflating the flush tail, `fed` of it in.
    Tail { fed: usize },
    /// The client broke the protocol: everything passes as it is, for tungstenite to fail.
    Raw,
}

/// The data message being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageState {
    /// None: the next data frame starts one.
    Between,
    /// An uncompressed message, passed through.
    Plain,
    /// A compressed message: its opcode, whether a frame of it was written yet, and
    /// whether any compressed byte of it was inflated yet.
    Compressed { opcode: OpData, started: bool, fed: bool },
}

/// The extension's reading state for one session.
struct Inflater {
    decompress: Decompress,
    /// `client_no_context_takeover`: each message starts a new deflate stream.
    reset_each_message: bool,
    /// The longest frame the mount accepts (`ws_max_message_size`).
    max_frame: u64,
    /// Bytes read from the socket, not yet processed: `input[start..end]`.
    input: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes for the reader: `output[taken..]`.
    output: Vec<u8>,
    taken: usize,
    /// One piece of inflated output, before it is framed.
    piece: Vec<u8>,
    /// The header being read.
    header: Vec<u8>,
    frame: FrameState,
    message: MessageState,
    /// The message's deflate stream ended (a final block): the rest of it is ignored and
    /// the inflater starts afresh with the next message.
    stream_ended: bool,
    /// A failure, repeated to every later read.
    failed: Option<InflateError>,
    /// The socket reached its end.
    eof: bool,
}

/// The client's socket, its compressed messages inflated when the extension is on.
pub(crate) struct Inflating<T> {
    io: T,
    /// `None`: no extension negotiated, the bytes pass as they are.
    inflater: Option<Box<Inflater>>,
}

impl<T> Inflating<T> {
    /// The socket, inflating the client's messages if `deflate` was negotiated; frames
    /// longer than `max_frame` are refused as tungstenite refuses plain ones.
    pub(crate) fn new(io: T, deflate: Option<&Deflate>, max_frame: u64) -> Self {
        let inflater = deflate.map(|deflate| {
            Box::new(Inflater {
                decompress: Decompress::new(false),
                reset_each_message: deflate.client_no_context_takeover,
                max_frame,
                input: vec![0; INPUT].into_boxed_slice(),
                start: 0,
                end: 0,
                output: Vec::with_capacity(OUTPUT + 2 * MAX_FRAME_HEADER),
                taken: 0,
                piece: Vec::with_capacity(OUTPUT),
                header: Vec::with_capacity(MAX_FRAME_HEADER),
                frame: FrameState::Header,
                message: MessageState::Between,
                stream_ended: false,
                failed: None,
                eof: false,
            })
        });
        Inflating { io, inflater }
    }

    /// The socket itself, for draining bytes that are thrown away unread.
    pub(crate) fn raw(&mut self) -> &mut T {
        &mut self.io
    }
}

/// What a read error from the client's socket says about the extension, if anything.
pub(crate) fn inflate_error(err: &io::Error) -> Option<InflateError> {
    err.get_ref().and_then(|inner| inner.downcast_ref::<InflateError>()).copied()
}

impl Inflater {
    /// Bytes waiting for the reader.
    fn pending(&self) -> usize {
        self.output.len() - self.taken
    }

    /// Processes buffered input until the reader has [`OUTPUT`] bytes waiting or more
    /// input is needed.
    fn process(&mut self) -> Result<(), InflateError> {
        while self.pending() < OUTPUT {
            let progressed = match self.frame {
                FrameState::Header => self.read_header()?,
                FrameState::Copy { left } => self.copy(left),
                FrameState::Raw => self.copy(u64::MAX),
                FrameState::Inflate { left, mask, offset, last } => self.inflate(left, mask, offset, last)?,
                FrameState::Tail { fed } => self.inflate_tail(fed)?,
            };
            if !progressed {
                break;
            }
        }
        Ok(())
    }

    /// Takes header bytes until one parses, then starts its frame.
    fn read_header(&mut self) -> Result<bool, InflateError> {
        if self.start == self.end {
            return Ok(false);
        }
        while self.start < self.end {
            self.header.push(self.input[self.start]);
            self.start += 1;
            match FrameHeader::parse(&mut Cursor::new(&self.header)) {
                Ok(Some((header, length))) => {
                    self.begin_frame(&header, length)?;
                    return Ok(true);
                }
                Ok(None) if self.header.len() < MAX_FRAME_HEADER => {}
                _ => {
                    self.go_raw();
                    return Ok(true);
                }
            }
        }
        Ok(true)
    }

    /// Decides how the frame whose header was just read goes on.
    fn begin_frame(&mut self, header: &FrameHeader, length: u64) -> Result<(), InflateError> {
        let last = header.is_final;
        if header.rsv2 || header.rsv3 {
            self.go_raw();
            return Ok(());
        }
        let data = match header.opcode {
            OpCode::Control(_) if header.rsv1 => {
                self.go_raw();
                return Ok(());
            }
            OpCode::Control(_) => {
                self.pass_header(length);
                return Ok(());
            }
            OpCode::Data(data) => data,
        };
        let compressed = header.rsv1 || matches!(self.message, MessageState::Compressed { .. });
        if compressed && header.mask.is_some() && length > self.max_frame {
            return Err(InflateError::FrameTooLong);
        }
        match (data, header.rsv1, self.message, header.mask) {
            (OpData::Continue, false, MessageState::Compressed { .. }, Some(mask)) => {
                self.header.clear();
                self.frame = FrameState::Inflate { left: length, mask, offset: 0, last };
            }
            (OpData::Continue, false, MessageState::Plain, _) => {
                if last {
                    self.message = MessageState::Between;
                }
                self.pass_header(length);
            }
            (OpData::Text | OpData::Binary, true, MessageState::Between, Some(mask)) => {
                self.header.clear();
                self.message = MessageState::Compressed { opcode: data, started: false, fed: false };
                self.frame = FrameState::Inflate { left: length, mask, offset: 0, last };
            }
            (OpData::Text | OpData::Binary, false, MessageState::Between, _) => {
                if !last {
                    self.message = MessageState::Plain;
                }
                self.pass_header(length);
            }
            _ => self.go_raw(),
        }
        Ok(())
    }

    /// Passes the header read on as it is, and then `length` payload bytes.
    fn pass_header(&mut self, length: u64) {
        self.output.extend_from_slice(&self.header);
        self.header.clear();
        self.frame = if length == 0 { FrameState::Header } else { FrameState::Copy { left: length } };
    }

    /// From here on, everything passes as it is, starting with the header read.
    fn go_raw(&mut self) {
        self.output.extend_from_slice(&self.header);
        self.header.clear();
        self.frame = FrameState::Raw;
    }

    /// Passes up to `left` buffered bytes on.
    fn copy(&mut self, left: u64) -> bool {
        let room = OUTPUT.saturating_sub(self.pending()).max(1);
        // Bounded by the buffered input, so it fits usize.
        let n = left.min((self.end - self.start).min(room) as u64) as usize;
        if n == 0 {
            return false;
        }
        self.output.extend_from_slice(&self.input[self.start..self.start + n]);
        self.start += n;
        if let FrameState::Copy { left } = &mut self.frame {
            *left -= n as u64;
            if *left == 0 {
                self.frame = FrameState::Header;
            }
        }
        true
    }

    /// Inflates a step of the compressed frame's buffered payload.
    fn inflate(&mut self, left: u64, mask: [u8; 4], offset: u64, last: bool) -> Result<bool, InflateError> {
        if left == 0 {
            self.frame = if last { FrameState::Tail { fed: 0 } } else { FrameState::Header };
            return Ok(true);
        }
        // Bounded by STEP, so it fits usize.
        let n = left.min((self.end - self.start).min(STEP) as u64) as usize;
        if n == 0 {
            return Ok(false);
        }
        let mut step = [0u8; STEP];
        for (i, (out, masked)) in step.iter_mut().zip(&self.input[self.start..self.start + n]).enumerate() {
            *out = masked ^ mask[(offset as usize + i) % 4];
        }
        let consumed = self.feed(&step[..n], FlushDecompress::None)?;
        if let MessageState::Compressed { fed, .. } = &mut self.message {
            *fed = true;
        }
        if consumed == 0 && self.piece.is_empty() {
            return Err(InflateError::Corrupt);
        }
        self.start += consumed;
        self.frame = FrameState::Inflate { left: left - consumed as u64, mask, offset: offset + consumed as u64, last };
        self.frame_piece();
        Ok(true)
    }

    /// Inflates the flush tail the client left out; ends the message once all of it is in
    /// and the inflater has nothing more to give.
    fn inflate_tail(&mut self, fed: usize) -> Result<bool, InflateError> {
        if matches!(self.message, MessageState::Compressed { fed: false, .. }) {
            // No payload at all: an empty message, and no flushed block to complete.
            self.end_message();
            return Ok(true);
        }
        let consumed = self.feed(&FLUSH_TAIL[fed..], FlushDecompress::Sync)?;
        let fed = fed + consumed;
        let drained = self.piece.len() < self.piece.capacity();
        self.frame_piece();
        if fed == FLUSH_TAIL.len() && drained {
            self.end_message();
        } else {
            self.frame = FrameState::Tail { fed };
        }
        Ok(true)
    }

    /// Inflates `compressed` into a fresh piece; returns how much of it was used (all of
    /// it once the message's deflate stream has ended).
    fn feed(&mut self, compressed: &[u8], flush: FlushDecompress) -> Result<usize, InflateError> {
        self.piece.clear();
        if self.stream_ended {
            return Ok(compressed.len());
        }
        let before = self.decompress.total_in();
        let status =
            self.decompress.decompress_vec(compressed, &mut self.piece, flush).map_err(|_| InflateError::Corrupt)?;
        self.stream_ended = status == Status::StreamEnd;
        // Bounded by the slice's length, so it fits usize.
        Ok((self.decompress.total_in() - before) as usize)
    }

    /// Writes the piece, if any, as a non-final frame of the compressed message.
    fn frame_piece(&mut self) {
        if self.piece.is_empty() {
            return;
        }
        let opcode = self.next_opcode();
        self.write_header(opcode, false, self.piece.len() as u64);
        self.output.extend_from_slice(&self.piece);
    }

    /// The compressed message is complete: its final frame, empty, and the inflater made
    /// ready for the next message.
    fn end_message(&mut self) {
        let opcode = self.next_opcode();
        self.write_header(opcode, true, 0);
        if self.reset_each_message || self.stream_ended {
            self.decompress.reset(false);
            self.stream_ended = false;
        }
        self.message = MessageState::Between;
        self.frame = FrameState::Header;
    }

    /// The opcode of the compressed message's next plain frame.
    fn next_opcode(&mut self) -> OpData {
        match &mut self.message {
            MessageState::Compressed { started: started @ false, opcode, .. } => {
                *started = true;
                *opcode
            }
            _ => OpData::Continue,
        }
    }

    /// Writes a plain frame's header, masked with a zero key.
    fn write_header(&mut self, opcode: OpData, last: bool, length: u64) {
        let header = FrameHeader {
            is_final: last,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode: OpCode::Data(opcode),
            mask: Some([0; 4]),
        };
        // Writing into a Vec cannot fail.
        let _ = header.format(length, &mut self.output);
    }

    /// Moves the unprocessed input to the front, for another read behind it.
    fn compact(&mut self) {
        self.input.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
    }

    /// Hands the reader what is waiting, as much as `buf` takes.
    fn hand_out(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.pending().min(buf.remaining());
        buf.put_slice(&self.output[self.taken..self.taken + n]);
        self.taken += n;
        if self.taken == self.output.len() {
            self.output.clear();
            self.taken = 0;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Inflating<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(inflater) = this.inflater.as_deref_mut() else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        loop {
            if inflater.pending() > 0 {
                inflater.hand_out(buf);
                return Poll::Ready(Ok(()));
            }
            if let Some(err) = inflater.failed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, err)));
            }
            if let Err(err) = inflater.process() {
                inflater.failed = Some(err);
                continue;
            }
            if inflater.pending() > 0 || inflater.failed.is_some() {
                continue;
            }
            if inflater.eof {
                return Poll::Ready(Ok(()));
            }
            inflater.compact();
            if inflater.end == inflater.input.len() {
                // Cannot happen: a full buffer always lets `process` advance (a header
                // is at most 14 bytes, any payload step takes input). Fail closed.
                inflater.failed = Some(InflateError::Corrupt);
                continue;
            }
            let mut read = ReadBuf::new(&mut inflater.input[inflater.end..]);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            match read.filled().len() {
                0 => inflater.eof = true,
                n => inflater.end += n,
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Inflating<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    const MASK: [u8; 4] = [9, 8, 7, 6];

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        out
    }

    /// `payload` deflated on `compress`'s stream, flushed, without the tail.
    fn deflated(compress: &mut Compress, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 1024);
        compress.compress_vec(payload, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&FLUSH_TAIL));
        out.truncate(out.len() - FLUSH_TAIL.len());
        out
    }

    type Server = WebSocketStream<Inflating<tokio::io::DuplexStream>>;

    /// A server WebSocket reading `wire` through an inflating socket, and the client's
    /// end (open: the server answers pings).
    async fn server(wire: Vec<u8>, max_message: usize) -> (Server, tokio::io::DuplexStream) {
        let (mut client, socket) = tokio::io::duplex(wire.len() + 1024);
        client.write_all(&wire).await.unwrap();
        let config = WebSocketConfig::default().max_message_size(Some(max_message)).max_frame_size(Some(max_message));
        let io = Inflating::new(socket, Some(&Deflate::default()), max_message as u64);
        (WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await, client)
    }

    #[tokio::test]
    async fn compressed_messages_reach_tungstenite_as_plain_ones_between_plain_frames() {
        let mut compress = Compress::new(Compression::default(), false);
        let text = "weir ".repeat(10_000);
        let first = deflated(&mut compress, text.as_bytes());
        let second = deflated(&mut compress, text.as_bytes());
        assert!(second.len() < first.len(), "the second message refers to the first");
        let mut wire = frame(0x41, &first[..10]);
        wire.extend(frame(0x89, b"ping"));
        wire.extend(frame(0x80, &first[10..]));
        wire.extend(frame(0x82, b"plain"));
        wire.extend(frame(0xc2, &second));
        let (mut ws, _client) = server(wire, 1 << 20).await;
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::Ping(b"ping".to_vec().into()));
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text.clone()));
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(b"plain".to_vec()));
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(text.into_bytes()));
    }

    #[tokio::test]
    async fn a_bomb_is_inflated_only_as_far_as_it_is_read() {
        let mut compress = Compress::new(Compression::best(), false);
        let bomb = deflated(&mut compress, &vec![0u8; 64 << 20]);
        let (mut client, socket) = tokio::io::duplex(bomb.len() + 64);
        client.write_all(&frame(0xc2, &bomb)).await.unwrap();
        let mut io = Inflating::new(socket, Some(&Deflate::default()), 1 << 30);
        let mut read = vec![0u8; 4096];
        let mut total = 0;
        while total < 1 << 20 {
            total += io.read(&mut read).await.unwrap();
        }
        let inflater = io.inflater.as_ref().unwrap();
        assert!(inflater.pending() <= OUTPUT + 2 * MAX_FRAME_HEADER);
        assert!(inflater.decompress.total_out() < 2 << 20, "inflated {}", inflater.decompress.total_out());
        drop(client);
    }

    #[tokio::test]
    async fn a_misused_rsv1_reaches_tungstenite_as_it_came() {
        for wire in [frame(0xc9, b"ping"), [frame(0x01, b"a"), frame(0xc0, b"b")].concat(), frame(0xe2, b"x")] {
            let (mut ws, _client) = server(wire, 1024).await;
            let err = ws.next().await.unwrap().unwrap_err();
            assert!(matches!(err, tokio_tungstenite::tungstenite::Error::Protocol(_)), "{err}");
        }
    }

    #[tokio::test]
    async fn oversized_or_invalid_compressed_frames_are_refused() {
        let (mut ws, _client) = server(frame(0xc2, &[0u8; 2000]), 1024).await;
        let err = ws.next().await.unwrap().unwrap_err();
        let tokio_tungstenite::tungstenite::Error::Io(err) = err else { panic!("{err}") };
        assert_eq!(inflate_error(&err), Some(InflateError::FrameTooLong));
        let (mut ws, _client) = server(frame(0xc2, &[0xff; 8]), 1024).await;
        let tokio_tungstenite::tungstenite::Error::Io(err) = ws.next().await.unwrap().unwrap_err() else { panic!() };
        assert_eq!(inflate_error(&err), Some(InflateError::Corrupt));
    }
}
