"""RFC 6455 (WebSocket) checks on /stream/echo, the demo's echo endpoint: the opening
handshake (the key, the version, the Accept the server computes) and framing (masking,
reserved opcodes and bits, control frames, the close handshake, UTF-8 in text
messages). The good path runs through the `websockets` client; the faults are raw
frames on a socket.
"""

import base64
import hashlib
import os
import socket
import struct
import time
from typing import Optional

from websockets.sync.client import connect as ws_connect

from harness import WAIT, Failed, check

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


def handshake(key: Optional[str] = KEY, version: Optional[str] = "13") -> bytes:
    lines = ["GET /stream/echo HTTP/1.1", "host: weir.test", "upgrade: websocket", "connection: Upgrade"]
    if key is not None:
        lines.append(f"sec-websocket-key: {key}")
    if version is not None:
        lines.append(f"sec-websocket-version: {version}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_head(sock: socket.socket) -> tuple[int, dict, bytes]:
    """The response's status, its fields (lowercase names) and the bytes after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise Failed(f"closed before the answer's head ended: {data!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), fields, rest


def client_frame(opcode: int, payload: bytes = b"", fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    """One frame as a client sends it (§5.2): masked unless told otherwise."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head = bytes([first, mask_bit | length])
    elif length < 65536:
        head = bytes([first, mask_bit | 126]) + struct.pack(">H", length)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack(">Q", length)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawSession:
    """An open WebSocket on a raw socket, for frames the client library will not send."""

    def __init__(self, addr: tuple):
        self.sock = socket.create_connection(addr, timeout=WAIT)
        self.sock.sendall(handshake())
        status, _, self.buffer = read_head(self.sock)
        if status != 101:
            raise Failed(f"handshake answered {status}")

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.sock.close()

    def _take(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        taken, self.buffer = self.buffer[:count], self.buffer[count:]
        return taken

    def next_frame(self) -> tuple[bool, int, bytes]:
        """The server's next frame: FIN, opcode, payload (servers do not mask)."""
        first, second = self._take(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._take(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._take(8))[0]
        return bool(first & 0x80), first & 0x0F, self._take(length)

    def close_code(self) -> Optional[int]:
        """The code of the server's Close frame (skipping other frames), `None` if the
        connection ended without one."""
        deadline = time.monotonic() + WAIT
        try:
            while time.monotonic() < deadline:
                _, opcode, payload = self.next_frame()
                if opcode == CLOSE:
                    return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
        except (EOFError, ConnectionResetError):
            return None
        except socket.timeout:
            raise Failed("no Close frame and no close") from None
        raise Failed("no Close frame and no close")


def expect_close(addr: tuple, code: int, *frames: bytes) -> None:
    with RawSession(addr) as session:
        session.sock.sendall(b"".join(frames))
        got = session.close_code()
        if got != code:
            raise Failed(f"expected Close {code}, got {got}")


# ----- §4: the opening handshake -----

def answer(addr: tuple, request: bytes) -> tuple[int, dict]:
    with socket.create_connection(addr, timeout=WAIT) as sock:
        sock.sendall(request)
        status, fields, _ = read_head(sock)
        return status, fields


@check("RFC 6455 §4.2.2", "a good handshake gets 101 with the right Sec-WebSocket-Accept")
def good_handshake(addr):
    status, fields = answer(addr, handshake())
    accept = base64.b64encode(hashlib.sha1(KEY.encode() + GUID).digest()).decode()
    if status != 101 or fields.get("sec-websocket-accept") != accept:
        raise Failed(f"{status}, accept {fields.get('sec-websocket-accept')!r}, expected {accept!r}")
    if fields.get("upgrade", "").lower() != "websocket" or "upgrade" not in fields.get("connection", "").lower():
        raise Failed(f"upgrade {fields.get('upgrade')!r}, connection {fields.get('connection')!r}")


@check("RFC 6455 §4.2.1", "a handshake without Sec-WebSocket-Key gets 400")
def handshake_without_key(addr):
    status, _ = answer(addr, handshake(key=None))
    if status != 400:
        raise Failed(f"answered {status}")


@check("RFC 6455 §4.2.2", "a handshake for version 8 gets 426 naming version 13")
def handshake_bad_version(addr):
    status, fields = answer(addr, handshake(version="8"))
    if status != 426 or fields.get("sec-websocket-version") != "13":
        raise Failed(f"answered {status}, sec-websocket-version {fields.get('sec-websocket-version')!r}")


# ----- §5: framing -----

@check("RFC 6455 §5.1", "a text message is echoed (websockets client)")
def echo(addr):
    with ws_connect(f"ws://{addr[0]}:{addr[1]}/stream/echo", open_timeout=WAIT) as ws:
        ws.send("hello, weir")
        got = ws.recv(timeout=WAIT)
        if got != "hello, weir":
            raise Failed(f"echo: {got!r}")


@check("RFC 6455 §5.5.2", "a Ping is answered with a Pong of the same data (websockets client)")
def ping_pong(addr):
    with ws_connect(f"ws://{addr[0]}:{addr[1]}/stream/echo", open_timeout=WAIT) as ws:
        if not ws.ping(b"weir-ping").wait(WAIT):
            raise Failed("no Pong")


@check("RFC 6455 §5.5.2", "a raw Ping gets a Pong with the same payload")
def raw_ping(addr):
    with RawSession(addr) as session:
        session.sock.sendall(client_frame(PING, b"12345"))
        fin, opcode, payload = session.next_frame()
        if (fin, opcode, payload) != (True, PONG, b"12345"):
            raise Failed(f"got fin={fin} opcode={opcode:#x} payload={payload!r}")


@check("RFC 6455 §5.5.1", "a Close is answered with a Close of the same code, then the close")
def close_handshake(addr):
    with RawSession(addr) as session:
        session.sock.sendall(client_frame(CLOSE, struct.pack(">H", 1000) + b"bye"))
        got = session.close_code()
        if got != 1000:
            raise Failed(f"answered Close {got}")
        try:
            if session._take(1):
                raise Failed("more bytes after the Close")
        except (EOFError, ConnectionResetError):
            pass


@check("RFC 6455 §5.1", "an unmasked client frame is closed with 1002")
def unmasked_frame(addr):
    expect_close(addr, 1002, client_frame(TEXT, b"hello", masked=False))


@check("RFC 6455 §5.2", "a reserved opcode (0x3) is closed with 1002")
def reserved_opcode(addr):
    expect_close(addr, 1002, client_frame(0x3, b"hello"))


@check("RFC 6455 §5.2", "RSV1 without a negotiated extension is closed with 1002")
def reserved_bit(addr):
    expect_close(addr, 1002, client_frame(TEXT, b"hello", rsv=0x4))


@check("RFC 6455 §5.5", "a fragmented control frame is closed with 1002")
def fragmented_ping(addr):
    expect_close(addr, 1002, client_frame(PING, b"half", fin=False))


@check("RFC 6455 §8.1", "fragmented text with invalid UTF-8 is closed with 1007")
def invalid_utf8(addr):
    # "\xce" opens a two-byte sequence that "A" does not continue.
    expect_close(addr, 1007, client_frame(TEXT, b"ok \xce", fin=False), client_frame(CONTINUATION, b"A"))
