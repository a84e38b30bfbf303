//! A WebSocket session's bytes in flight towards the service, held in the payload budget
//! as a streamed upload's are: read from the client and not yet acknowledged by the
//! service's credit, and nothing more.
//!
//! Two parts make up what a session holds. The *client side* is what the reader has
//! taken from the socket and not handed over yet: the raw bytes of the frame being read
//! and the payloads of the message being assembled (complete data frames give their
//! header back; control frames give everything back once read, tungstenite answering
//! them). [`FrameMeter`] follows the client's frames byte by byte to know it. The
//! *outbound side* is what the relay loop has handed to the stream: the message being
//! sent and what the service has not acknowledged yet. A message moves from one side to
//! the other when the reader yields it, with its stream-framing header already counted
//! (a client frame's header, masked, is never shorter), so the move reserves nothing.
//! With permessage-deflate negotiated, the frames followed are those the client's
//! compressed messages were inflated into (`deflate/inflate.rs`, below this reader): what
//! is held is counted decompressed, as the gateway holds it.
//!
//! [`MeteredIo`] sits under tungstenite and reserves before it reads: it first waits
//! for one byte (so an idle client's reads touch nothing in the budget), then reserves
//! as much of the read as the budget has room for and gives back what the socket did
//! not fill. With no room at all it reads nothing more, keeping that one byte: the
//! client's TCP window closes, and the read waits for anyone to give bytes back
//! ([`PayloadBudget::released`]); the session's idle bound then closes a client held
//! back too long (1013, see `session.rs`).
//!
//! Invariant: the reservation equals the client side plus the outbound side, outside of
//! a read in progress (which holds its grant until it knows how much it read); a reader
//! waiting for room also holds one byte outside it. The reservation is an RAII value
//! owned by the [`Flight`] the session and its reader share, so every exit path
//! releases it with them.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, Cursor};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use weir_proto::websocket as ws;

use crate::limits::budget::{PayloadBudget, Reservation};
use crate::limits::lock;

/// Longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
const MAX_FRAME_HEADER: usize = 14;

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct FrameInProgress {
    /// A control frame (close, ping, pong): given back once read.
    control: bool,
    /// The last frame of a data message: its message is complete once it is read.
    last: bool,
    /// Its header's length, given back once the frame is read.
    header: u64,
    /// Its payload's length.
    payload: u64,
    /// Payload bytes still to come.
    left: u64,
}

/// Follows the client's frames as their bytes are read, to know what the reader holds.
#[derive(Debug, Default)]
pub(crate) struct FrameMeter {
    /// The header being read, until it parses.
    header: Vec<u8>,
    /// The frame whose payload is being read, once its header parsed.
    frame: Option<FrameInProgress>,
    /// Held bytes of the data message being assembled (payloads of its complete frames).
    assembling: u64,
    /// Held bytes of each complete data message not yet handed over, oldest first.
    complete: VecDeque<u64>,
    /// Everything read and not given back.
    held: u64,
    /// The client broke the framing (tungstenite refuses the same bytes and the session
    /// ends): stop following, keep holding what was read.
    lost: bool,
}

impl FrameMeter {
    /// Takes note of `bytes`, just read from the client.
    pub(crate) fn read(&mut self, mut bytes: &[u8]) {
        self.held += bytes.len() as u64;
        while !bytes.is_empty() && !self.lost {
            match &mut self.frame {
                Some(frame) => {
                    // Bounded by the slice's length, so it fits usize.
                    let n = frame.left.min(bytes.len() as u64);
                    frame.left -= n;
                    bytes = &bytes[n as usize..];
                    if frame.left == 0 {
                        self.end_frame();
                    }
                }
                None => {
                    self.header.push(bytes[0]);
                    bytes = &bytes[1..];
                    self.parse_header();
                }
            }
        }
    }

    /// Parses the header read so far, if complete.
    fn parse_header(&mut self) {
        let header = self.header.len() as u64;
        match FrameHeader::parse(&mut Cursor::new(&self.header)) {
            Ok(Some((parsed, payload))) => {
                let control = matches!(parsed.opcode, OpCode::Control(_));
                self.frame = Some(FrameInProgress { control, last: parsed.is_final, header, payload, left: payload });
                self.header.clear();
                if payload == 0 {
                    self.end_frame();
                }
            }
            Ok(None) if self.header.len() < MAX_FRAME_HEADER => {}
            _ => self.lost = true,
        }
    }

    /// The frame in progress is read: gives back what the reader no longer holds.
    fn end_frame(&mut self) {
        let Some(frame) = self.frame.take() else { return };
        if frame.control {
            self.held -= frame.header + frame.payload;
            return;
        }
        self.assembling += frame.payload;
        // The last frame keeps the stream framing's header for its message, so the
        // message moves to the outbound side with its encoded length.
        let kept = if frame.last { frame.header.min(ws::HEADER_LEN as u64) } else { 0 };
        self.held -= frame.header - kept;
        if frame.last {
            self.complete.push_back(self.assembling + kept);
            self.assembling = 0;
        }
    }

    /// The oldest complete data message leaves the reader: how many bytes it held.
    pub(crate) fn hand_over(&mut self) -> u64 {
        let message = self.complete.pop_front().unwrap_or(0);
        self.held -= message;
        message
    }

    /// Bytes read and not handed over or given back.
    pub(crate) fn held(&self) -> u64 {
        self.held
    }
}

/// What a session holds, shared by its reader and its relay loop.
#[derive(Debug)]
struct FlightState {
    /// The session's bytes in the budget: the client side plus the outbound side.
    reservation: Reservation,
    /// The client side: what the reader holds.
    meter: FrameMeter,
    /// The outbound side: the message being sent plus what the service has not
    /// acknowledged.
    outbound: u64,
    /// The reader's last attempt found no room: the client is being held back.
    held_back: bool,
}

impl FlightState {
    /// Gives back whatever neither side holds any more.
    fn shrink_to_held(&mut self) {
        let held = self.meter.held() + self.outbound;
        self.reservation.shrink_to(held);
    }
}

/// One session's bytes in flight; clones share them.
#[derive(Debug, Clone)]
pub(crate) struct Flight {
    /// The state, behind a plain lock: every critical section is a few counter updates.
    state: Arc<Mutex<FlightState>>,
    /// The budget the reservation draws on, to wait for room without the lock.
    budget: Arc<PayloadBudget>,
}

impl Flight {
    /// A flight holding nothing yet in `reservation` (opened empty).
    pub(crate) fn new(reservation: Reservation) -> Self {
        let budget = Arc::clone(reservation.budget());
        let state = FlightState { reservation, meter: FrameMeter::default(), outbound: 0, held_back: false };
        Flight { state: Arc::new(Mutex::new(state)), budget }
    }

    fn lock(&self) -> MutexGuard<'_, FlightState> {
        lock(&self.state)
    }

    /// Moves the oldest complete message from the reader to the outbound side (the
    /// reader has yielded it and it is about to be sent).
    pub(crate) fn hand_over(&self) {
        let mut state = self.lock();
        let message = state.meter.hand_over();
        state.outbound += message;
    }

    /// Drops the oldest complete message: read while closing, it goes nowhere.
    pub(crate) fn discard(&self) {
        let mut state = self.lock();
        state.meter.hand_over();
        state.shrink_to_held();
    }

    /// The service has acknowledged all but `unacknowledged` bytes, and the loop holds
    /// no message unsent: the outbound side shrinks to that.
    pub(crate) fn settle(&self, unacknowledged: u64) {
        let mut state = self.lock();
        state.outbound = state.outbound.min(unacknowledged);
        state.shrink_to_held();
    }

    /// The outbound side's bytes.
    pub(crate) fn outbound(&self) -> u64 {
        self.lock().outbound
    }

    /// Whether the reader is waiting for room: the client is being held back.
    pub(crate) fn held_back(&self) -> bool {
        self.lock().held_back
    }

    /// Reserves up to `want` bytes for a read, or `None` (marking the client held back)
    /// when a limit is full.
    fn grant(&self, want: u64) -> Option<u64> {
        let mut state = self.lock();
        let granted = state.reservation.try_grow_at_most(want).ok();
        state.held_back = granted.is_none();
        granted
    }

    /// `filled` was read under a grant: the meter takes note, and what the read did not
    /// fill, or the meter gave back, is released.
    fn record_read(&self, filled: &[u8]) {
        let mut state = self.lock();
        state.meter.read(filled);
        state.shrink_to_held();
    }
}

/// A wait for room: resolves when anyone gives bytes back to the budget.
type RoomWait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The client's socket under tungstenite, read only as far as the budget has room.
pub(crate) struct MeteredIo<T> {
    io: T,
    flight: Flight,
    /// The first byte of the next read, taken from the socket before reserving: it
    /// waits here (one byte outside the budget) while there is no room.
    first: Option<u8>,
    /// Armed while a read waits for room.
    room: Option<RoomWait>,
}

impl<T> MeteredIo<T> {
    pub(crate) fn new(io: T, flight: Flight) -> Self {
        MeteredIo { io, flight, first: None, room: None }
    }

    /// The socket itself, read without the budget: for draining bytes that are thrown
    /// away at once.
    pub(crate) fn unmetered(&mut self) -> &mut T {
        &mut self.io
    }

    /// Reserves up to `want` bytes, or registers `cx` to be woken when bytes are given
    /// back and returns `None`.
    fn poll_grant(&mut self, cx: &mut Context<'_>, want: u64) -> Option<u64> {
        loop {
            if let Some(room) = &mut self.room {
                if room.as_mut().poll(cx).is_pending() {
                    return None;
                }
                self.room = None;
            }
            if let Some(granted) = self.flight.grant(want) {
                return Some(granted);
            }
            // Arm the wait, then try again: a release between the refusal and the
            // arming is not missed.
            let budget = Arc::clone(&self.flight.budget);
            let mut room: RoomWait = Box::pin(async move { budget.released().await });
            if room.as_mut().poll(cx).is_ready() {
                continue;
            }
            match self.flight.grant(want) {
                Some(granted) => return Some(granted),
                None => self.room = Some(room),
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for MeteredIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let first = match this.first {
            Some(byte) => byte,
            None => {
                let mut one = [0u8; 1];
                let mut probe = ReadBuf::new(&mut one);
                ready!(Pin::new(&mut this.io).poll_read(cx, &mut probe))?;
                // Nothing read: the client closed its side.
                let Some(&byte) = probe.filled().first() else { return Poll::Ready(Ok(())) };
                this.first = Some(byte);
                byte
            }
        };
        let Some(granted) = this.poll_grant(cx, buf.remaining() as u64) else { return Poll::Pending };
        this.first = None;
        let start = buf.filled().len();
        buf.put_slice(&[first]);
        // At most `remaining` (so it fits usize) minus the byte already in.
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(granted as usize - 1));
        if limited.remaining() > 0 {
            // The byte in hand answers this read whatever this polls; an error or the
            // end shows on the next.
            let _ = Pin::new(&mut this.io).poll_read(cx, &mut limited);
        }
        let read = limited.filled().len();
        buf.advance(read);
        this.flight.record_read(&buf.filled()[start..]);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MeteredIo<T> {
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

    /// A masked client frame: `fin`, `opcode`, the payload.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
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
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_message_holds_its_payload_and_a_stream_header_until_handed_over() {
        let mut meter = FrameMeter::default();
        let wire = frame(true, 0x2, &[7u8; 300]);
        // Byte by byte: a header split anywhere still parses.
        for byte in &wire[..10] {
            meter.read(std::slice::from_ref(byte));
        }
        assert_eq!(meter.held(), 10, "an incomplete frame holds what was read");
        meter.read(&wire[10..]);
        assert_eq!(meter.held(), 300 + ws::HEADER_LEN as u64);
        assert_eq!(meter.hand_over(), 300 + ws::HEADER_LEN as u64);
        assert_eq!(meter.held(), 0);
    }

    #[test]
    fn fragments_and_control_frames_hold_only_the_message_being_assembled() {
        let mut meter = FrameMeter::default();
        let mut wire = frame(false, 0x1, b"hello ");
        wire.extend(frame(true, 0x9, b"ping"));
        wire.extend(frame(false, 0x0, &[b'x'; 70_000]));
        meter.read(&wire);
        assert_eq!(meter.held(), 6 + 70_000, "fragments keep their payloads, the ping nothing");
        meter.read(&frame(true, 0x0, b"!"));
        let next = frame(true, 0x2, &[1u8; 40]);
        meter.read(&next[..20]);
        assert_eq!(meter.hand_over(), 6 + 70_000 + 1 + ws::HEADER_LEN as u64);
        assert_eq!(meter.held(), 20, "read ahead into the next message");
        meter.read(&next[20..]);
        assert_eq!(meter.hand_over(), 40 + ws::HEADER_LEN as u64);
        assert_eq!(meter.held(), 0);
    }

    #[tokio::test]
    async fn a_reader_reads_only_what_the_budget_has_room_for_and_waits_for_more() {
        use futures_util::FutureExt;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let limits = crate::config::PayloadLimits {
            max_request_bytes_per_call: 1000,
            max_request_bytes_per_connection: 1000,
            max_aggregate_inflight_bytes: 1000,
            max_inflight_bytes_per_client: 30,
        };
        let budget = PayloadBudget::new(limits, Default::default());
        let mut other = budget.open(2, Some("c"));
        other.try_grow(24).unwrap();
        let flight = Flight::new(budget.open_with_call_limit(1, Some("c"), "/", 1000));
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = MeteredIo::new(server, flight.clone());
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).now_or_never().is_none(), "nothing to read");
        assert_eq!(budget.counters().aggregate_bytes, 24, "an idle reader reserves nothing, even in passing");
        client.write_all(&frame(true, 0x2, &[9u8; 20])).await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 6, "the client's room only");
        assert_eq!(budget.counters().aggregate_bytes, 30);
        assert!(io.read(&mut buf).now_or_never().is_none(), "no room: the read waits");
        assert!(flight.held_back());
        other.shrink_to(20);
        assert_eq!(io.read(&mut buf).await.unwrap(), 4, "the room given back");
        drop(other);
        assert_eq!(io.read(&mut buf).await.unwrap(), 16);
        assert_eq!(budget.counters().aggregate_bytes, 20 + ws::HEADER_LEN as u64, "the complete message");
        assert!(!flight.held_back());
        flight.hand_over();
        flight.settle(0);
        assert_eq!(budget.counters().aggregate_bytes, 0, "acknowledged by the service");
    }

    #[test]
    fn broken_framing_stops_following_but_keeps_holding() {
        let mut meter = FrameMeter::default();
        meter.read(&[0x83, 0x80, 0, 0, 0, 0, 1, 2, 3]);
        assert_eq!(meter.held(), 9);
        assert_eq!(meter.hand_over(), 0);
    }
}
