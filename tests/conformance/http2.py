"""RFC 9113 (HTTP/2) checks, frame by frame: the preface and SETTINGS exchange, frames
that must be ignored or refused, flow-control windows, malformed requests (§8) and
stream states (§5.1), and two floods (rapid reset, endless CONTINUATION). Frames are
built here byte by byte, so that frames no client library would send can be; header
blocks are encoded with hpack, or as plain literals where a check needs exact bytes.
Frames the gateway sends are read with hyperframe.

Every answer a check waits for is an event of one stream or of the connection: the
response's status, a RST_STREAM's code, a GOAWAY's code, or the connection's close.
"""

import socket
import struct
import time
from dataclasses import dataclass
from typing import Optional

import hpack
from hyperframe.frame import (ContinuationFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame)

from harness import WAIT, Failed, check

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, WINDOW_UPDATE, CONTINUATION = 0, 1, 2, 3, 4, 6, 8, 9
END_STREAM = ACK = 0x1
END_HEADERS = 0x4

# Error codes (§7), by name.
CODES = {0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
         0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM", 0x8: "CANCEL",
         0x9: "COMPRESSION_ERROR", 0xb: "ENHANCE_YOUR_CALM"}
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
MAX_WINDOW = 2**31 - 1


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One frame: the 9-byte header (§4.1), then the payload."""
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def settings(*entries: tuple) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in entries))


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", increment))


def literal(name: bytes, value: bytes) -> bytes:
    """A field as an HPACK literal without indexing, no Huffman (RFC 7541 §6.2.2): the
    bytes reach the decoder exactly as given. Lengths under 127 only."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def literal_block(fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(literal(n, v) for n, v in fields)


def request_fields(method: str = "GET", path: str = "/api/hello") -> list[tuple[bytes, bytes]]:
    return [(b":method", method.encode()), (b":scheme", b"http"), (b":path", path.encode()),
            (b":authority", b"weir.test")]


@dataclass
class Event:
    """What became of a stream, or of the connection."""

    kind: str  # "response", "reset", "goaway", "closed" or "silent"
    value: Optional[int] = None  # the status, or the error code

    def __str__(self):
        if self.kind in ("reset", "goaway"):
            return f"{self.kind} {CODES.get(self.value, hex(self.value))}"
        return self.kind if self.value is None else f"{self.kind} {self.value}"


class Wire:
    """A raw HTTP/2 connection: sends bytes, reads frames, acknowledges the gateway's
    SETTINGS (so that the settings it announced are in force) and decodes its header
    blocks in order (the HPACK table is per connection)."""

    def __init__(self, addr: tuple, opening: bytes = PREFACE + settings()):
        self.sock = socket.create_connection(addr, timeout=WAIT)
        self.buffer = b""
        self.decoder = hpack.Decoder()
        self.encoder = hpack.Encoder()
        self.sock.sendall(opening)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def headers(self, stream: int, fields, end_stream: bool = True, end_headers: bool = True) -> bytes:
        """A HEADERS frame of `fields`, encoded with this connection's HPACK encoder."""
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return frame(HEADERS, flags, stream, self.encoder.encode(fields))

    def next_frame(self, deadline: float) -> Optional[Frame]:
        """The next frame, `None` once the connection is closed; raises socket.timeout
        at `deadline`."""
        while True:
            if len(self.buffer) >= 9:
                parsed, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
                if len(self.buffer) >= 9 + length:
                    parsed.parse_body(memoryview(self.buffer[9:9 + length]))
                    self.buffer = self.buffer[9 + length:]
                    self._react(parsed)
                    return parsed
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return None
            self.buffer += data

    def _react(self, parsed: Frame) -> None:
        if isinstance(parsed, SettingsFrame) and "ACK" not in parsed.flags:
            try:
                self.sock.sendall(frame(SETTINGS, ACK, 0))
            except (BrokenPipeError, ConnectionResetError):
                pass  # a connection the gateway closed: what it sent is still read
        if isinstance(parsed, (HeadersFrame, ContinuationFrame)):
            parsed.fields = self.decoder.decode(parsed.data) if parsed.data else []

    def frames_until(self, wanted, wait: float = WAIT) -> Optional[Frame]:
        """Reads frames until `wanted(frame)`; `None` on close or after `wait`."""
        deadline = time.monotonic() + wait
        try:
            while (parsed := self.next_frame(deadline)) is not None:
                if wanted(parsed):
                    return parsed
        except socket.timeout:
            pass
        return None

    def outcome(self, stream: int, wait: float = WAIT) -> Event:
        """What happens first to `stream`: its response head, its reset, the GOAWAY
        (which ends a connection error: the close after it is not awaited), or the close."""
        deadline = time.monotonic() + wait
        try:
            while (parsed := self.next_frame(deadline)) is not None:
                if isinstance(parsed, GoAwayFrame):
                    return Event("goaway", parsed.error_code)
                if parsed.stream_id != stream:
                    continue
                if isinstance(parsed, RstStreamFrame):
                    return Event("reset", parsed.error_code)
                if isinstance(parsed, HeadersFrame):
                    status = dict(parsed.fields).get(":status")
                    return Event("response", int(status))
            return Event("closed")
        except socket.timeout:
            return Event("silent")


def expect(event: Event, *allowed: tuple) -> None:
    """Fails unless `event` is one of `allowed`, each `(kind, value)`."""
    if (event.kind, event.value) not in allowed:
        wanted = " or ".join(str(Event(k, v)) for k, v in allowed)
        raise Failed(f"expected {wanted}, got {event}")


def connection_error(name: str) -> tuple:
    code = next(c for c, n in CODES.items() if n == name)
    return ("goaway", code)


def stream_error(name: str) -> tuple:
    code = next(c for c, n in CODES.items() if n == name)
    return ("reset", code)


def still_serving(wire: Wire, stream: int) -> None:
    """The connection goes on: a GET on `stream` is answered 200."""
    wire.send(wire.headers(stream, request_fields()))
    expect(wire.outcome(stream), ("response", 200))


# ----- §3.4, §6.5, §6.7: the opening, SETTINGS and PING -----

@check("RFC 9113 §3.4", "the server's preface is a SETTINGS frame")
def server_preface(addr):
    with Wire(addr) as wire:
        first = wire.next_frame(time.monotonic() + WAIT)
        if not isinstance(first, SettingsFrame) or "ACK" in first.flags:
            raise Failed(f"first frame: {first}")


@check("RFC 9113 §3.4", "an invalid preface closes the connection")
def invalid_preface(addr):
    with Wire(addr, opening=b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + settings()) as wire:
        wire.sock.settimeout(WAIT)
        try:
            while wire.sock.recv(65536):
                pass
        except socket.timeout:
            raise Failed("the connection stayed open") from None
        except ConnectionResetError:
            pass


@check("RFC 9113 §6.5.3", "a client's SETTINGS is acknowledged")
def settings_acknowledged(addr):
    with Wire(addr, opening=PREFACE + settings((SETTINGS_INITIAL_WINDOW_SIZE, 100_000))) as wire:
        ack = wire.frames_until(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags)
        if ack is None:
            raise Failed("no SETTINGS with ACK")


@check("RFC 9113 §6.5", "a SETTINGS ACK with a payload is a FRAME_SIZE_ERROR",
       known="h2 answers every frame it cannot load with GOAWAY PROTOCOL_ERROR")
def settings_ack_with_payload(addr):
    with Wire(addr) as wire:
        wire.send(frame(SETTINGS, ACK, 0, struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, 1)))
        expect(wire.outcome(0), connection_error("FRAME_SIZE_ERROR"))


@check("RFC 9113 §6.5", "a SETTINGS length not a multiple of 6 is a FRAME_SIZE_ERROR",
       known="h2 answers every frame it cannot load with GOAWAY PROTOCOL_ERROR")
def settings_bad_length(addr):
    with Wire(addr) as wire:
        wire.send(frame(SETTINGS, 0, 0, b"\x00\x04\x00\x00\x10"))
        expect(wire.outcome(0), connection_error("FRAME_SIZE_ERROR"))


@check("RFC 9113 §6.5.2", "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1 is a FLOW_CONTROL_ERROR",
       known="h2 answers every frame it cannot load with GOAWAY PROTOCOL_ERROR (the value fails to load)")
def settings_window_too_large(addr):
    with Wire(addr) as wire:
        wire.send(settings((SETTINGS_INITIAL_WINDOW_SIZE, 2**31)))
        expect(wire.outcome(0), connection_error("FLOW_CONTROL_ERROR"))


@check("RFC 9113 §6.7", "a PING is answered with ACK and the same data")
def ping_answered(addr):
    with Wire(addr) as wire:
        wire.send(frame(PING, 0, 0, b"weir-rfc"))
        pong = wire.frames_until(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags)
        if pong is None or pong.opaque_data != b"weir-rfc":
            raise Failed(f"answer: {pong}")


@check("RFC 9113 §6.7", "a PING of other than 8 bytes is a FRAME_SIZE_ERROR",
       known="h2 answers every frame it cannot load with GOAWAY PROTOCOL_ERROR")
def ping_bad_length(addr):
    with Wire(addr) as wire:
        wire.send(frame(PING, 0, 0, b"short"))
        expect(wire.outcome(0), connection_error("FRAME_SIZE_ERROR"))


# ----- §4, §5.5, §6: frames as such -----

@check("RFC 9113 §5.5", "frames of an unknown type are ignored")
def unknown_frame_type(addr):
    with Wire(addr) as wire:
        wire.send(frame(0xFA, 0x5, 0, b"extension"), frame(0xFA, 0, 1, b"on an idle stream"))
        still_serving(wire, 1)


@check("RFC 9113 §5.1", "PRIORITY on an idle stream is allowed and opens nothing")
def priority_on_idle_stream(addr):
    with Wire(addr) as wire:
        wire.send(frame(PRIORITY, 0, 5, struct.pack(">IB", 0, 15)))
        still_serving(wire, 1)
        still_serving(wire, 5)


@check("RFC 9113 §4.2", "a frame over SETTINGS_MAX_FRAME_SIZE is a FRAME_SIZE_ERROR")
def frame_too_large(addr):
    with Wire(addr) as wire:
        wire.send(wire.headers(1, request_fields("POST", "/api/echo"), end_stream=False),
                  frame(DATA, END_STREAM, 1, b"x" * 16_385))
        event = wire.outcome(1)
        expect(event, connection_error("FRAME_SIZE_ERROR"), stream_error("FRAME_SIZE_ERROR"))


@check("RFC 9113 §4.3", "a header block that cannot be decoded is a COMPRESSION_ERROR",
       known="h2 answers an HPACK decoding failure with GOAWAY PROTOCOL_ERROR")
def undecodable_block(addr):
    with Wire(addr) as wire:
        # An indexed field whose index is past both tables.
        wire.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\xff\xff\xff\xff\x0f"))
        expect(wire.outcome(1), connection_error("COMPRESSION_ERROR"))


@check("RFC 9113 §5.1.1", "a client stream with an even id is a PROTOCOL_ERROR")
def even_stream_id(addr):
    with Wire(addr) as wire:
        wire.send(wire.headers(2, request_fields()))
        expect(wire.outcome(2), connection_error("PROTOCOL_ERROR"))


@check("RFC 9113 §6.2", "HEADERS on stream 0 is a PROTOCOL_ERROR")
def headers_on_stream_zero(addr):
    with Wire(addr) as wire:
        wire.send(wire.headers(0, request_fields()))
        expect(wire.outcome(0), connection_error("PROTOCOL_ERROR"))


@check("RFC 9113 §6.10", "another frame inside a header block is a PROTOCOL_ERROR")
def frame_inside_header_block(addr):
    with Wire(addr) as wire:
        wire.send(wire.headers(1, request_fields(), end_headers=False), frame(PING, 0, 0, b"12345678"))
        expect(wire.outcome(1), connection_error("PROTOCOL_ERROR"))


# ----- §6.9: flow control -----

@check("RFC 9113 §6.9.1", "a WINDOW_UPDATE past 2^31-1 on the connection is a FLOW_CONTROL_ERROR")
def connection_window_overflow(addr):
    with Wire(addr) as wire:
        wire.send(window_update(0, MAX_WINDOW))
        expect(wire.outcome(0), connection_error("FLOW_CONTROL_ERROR"))


@check("RFC 9113 §6.9.1", "a WINDOW_UPDATE past 2^31-1 on a stream resets it (FLOW_CONTROL_ERROR)")
def stream_window_overflow(addr):
    with Wire(addr) as wire:
        wire.send(wire.headers(1, request_fields("GET", "/api/slow?ms=3000")), window_update(1, MAX_WINDOW))
        expect(wire.outcome(1), stream_error("FLOW_CONTROL_ERROR"))
        still_serving(wire, 3)


@check("RFC 9113 §6.9", "a WINDOW_UPDATE of 0 on the connection is a PROTOCOL_ERROR")
def zero_window_update(addr):
    with Wire(addr) as wire:
        wire.send(window_update(0, 0))
        expect(wire.outcome(0), connection_error("PROTOCOL_ERROR"))


# ----- §8: malformed requests -----

def malformed_request(addr, fields, stream_only: bool = True) -> None:
    """A request with `fields` (plain literals) is a stream error PROTOCOL_ERROR, and
    the connection goes on."""
    with Wire(addr) as wire:
        wire.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, literal_block(fields)))
        expect(wire.outcome(1), stream_error("PROTOCOL_ERROR"))
        still_serving(wire, 3)


@check("RFC 9113 §8.2.2", "a connection-specific field is a PROTOCOL_ERROR")
def connection_specific_field(addr):
    malformed_request(addr, request_fields() + [(b"connection", b"keep-alive")])


@check("RFC 9113 §8.2.1", "a field value with leading whitespace is a PROTOCOL_ERROR")
def value_leading_space(addr):
    malformed_request(addr, request_fields() + [(b"x-probe", b" padded")])


@check("RFC 9113 §8.2.1", "a field value with trailing whitespace (HTAB) is a PROTOCOL_ERROR")
def value_trailing_tab(addr):
    malformed_request(addr, request_fields() + [(b"x-probe", b"padded\t")])


@check("RFC 9113 §8.2.1", "an uppercase field name is a PROTOCOL_ERROR",
       known="h2 fails to decode the block: GOAWAY PROTOCOL_ERROR, a connection error")
def uppercase_field_name(addr):
    malformed_request(addr, request_fields() + [(b"X-Probe", b"1")])


@check("RFC 9113 §8.2.1", "a field value with a NUL is a stream PROTOCOL_ERROR",
       known="h2 fails to decode the block: GOAWAY PROTOCOL_ERROR, a connection error")
def value_with_nul(addr):
    malformed_request(addr, request_fields() + [(b"x-probe", b"a\x00b")])


@check("RFC 9113 §8.3.1", "a request without :method is a PROTOCOL_ERROR")
def missing_method(addr):
    malformed_request(addr, request_fields()[1:])


@check("RFC 9113 §8.5", "CONNECT without :authority is a PROTOCOL_ERROR")
def connect_without_authority(addr):
    malformed_request(addr, [(b":method", b"CONNECT")])


@check("RFC 9113 §8.1.1", "DATA longer than content-length is a PROTOCOL_ERROR")
def content_length_mismatch(addr):
    with Wire(addr) as wire:
        fields = request_fields("POST", "/api/echo") + [("content-length", "2")]
        wire.send(wire.headers(1, fields, end_stream=False), frame(DATA, END_STREAM, 1, b"hello"))
        expect(wire.outcome(1), stream_error("PROTOCOL_ERROR"))


@check("RFC 9113 §8.1", "a pseudo-header field in trailers is a PROTOCOL_ERROR",
       known="h2 drops pseudo-header fields from trailers without a word: the request is served")
def pseudo_header_in_trailers(addr):
    with Wire(addr) as wire:
        trailers = literal_block([(b":method", b"GET"), (b"x-trailer", b"1")])
        wire.send(wire.headers(1, request_fields("POST", "/api/echo"), end_stream=False),
                  frame(DATA, 0, 1, b"hello"), frame(HEADERS, END_HEADERS | END_STREAM, 1, trailers))
        expect(wire.outcome(1), stream_error("PROTOCOL_ERROR"), connection_error("PROTOCOL_ERROR"))


# ----- §5.1: stream states -----

@check("RFC 9113 §5.1", "DATA on a half-closed (remote) stream is a stream error STREAM_CLOSED",
       known="h2 answers GOAWAY PROTOCOL_ERROR, a connection error")
def data_on_half_closed_stream(addr):
    with Wire(addr) as wire:
        wire.send(wire.headers(1, request_fields("GET", "/api/slow?ms=2000")), frame(DATA, 0, 1, b"late"))
        expect(wire.outcome(1), stream_error("STREAM_CLOSED"))


@check("RFC 9113 §5.1", "DATA on a closed stream is a connection error STREAM_CLOSED",
       known="h2 answers RST_STREAM STREAM_CLOSED (a stream error) and the connection goes on")
def data_on_closed_stream(addr):
    with Wire(addr) as wire:
        wire.send(wire.headers(1, request_fields()))
        ended = wire.frames_until(lambda f: f.stream_id == 1 and "END_STREAM" in f.flags)
        if ended is None:
            raise Failed("the response never ended")
        wire.send(frame(DATA, END_STREAM, 1, b"late"))
        expect(wire.outcome(1), connection_error("STREAM_CLOSED"))


# ----- §10.5: floods -----

@check("RFC 9113 §10.5", "rapid reset (HEADERS + RST_STREAM, 1,000 times) ends in ENHANCE_YOUR_CALM")
def rapid_reset(addr):
    with Wire(addr) as wire:
        cancel = struct.pack(">I", 0x8)
        burst = b"".join(wire.headers(s, request_fields("GET", "/api/slow?ms=1000")) + frame(RST_STREAM, 0, s, cancel)
                         for s in range(1, 2001, 2))
        try:
            wire.send(burst)
        except (BrokenPipeError, ConnectionResetError):
            pass
        expect(wire.outcome(0), connection_error("ENHANCE_YOUR_CALM"))


@check("RFC 9113 §10.5", "endless CONTINUATION frames end in ENHANCE_YOUR_CALM")
def continuation_flood(addr):
    with Wire(addr) as wire:
        filler = literal(b"x-filler", b"y" * 100) * 80
        try:
            wire.send(frame(HEADERS, 0, 1, literal_block(request_fields())))
            for _ in range(2000):
                wire.send(frame(CONTINUATION, 0, 1, filler))
        except (BrokenPipeError, ConnectionResetError):
            pass
        expect(wire.outcome(0), connection_error("ENHANCE_YOUR_CALM"))
