#!/usr/bin/env python3
"""Slow readers: many HTTP/1.1 clients each start a large download and then read it at a
trickle (a small receive buffer, a few hundred bytes a second). A gateway that buffers a
lot per connection grows with every such client; a hardened one holds tens of KiB each
and closes them once they fall under the minimum response rate or stall past
send_timeout. Meanwhile a legitimate client keeps fetching, and its success rate is
reported. The connections the gateway still holds are counted on its side (from
/proc/net/tcp), since a reader learns of a close only after draining its buffers.

    python3 bench/attacks/slow_readers.py --port 8080 --pid $(pgrep -n weir) \
        --clients 340 --min-rate 50 --max-rate 512 --hold 40 --after 10

Python 3 standard library only.
"""

import argparse
import random
import socket
import threading
import time

from gateway_process import established, rss_kib


class SlowReader(threading.Thread):
    def __init__(self, a, rate, stop):
        super().__init__(daemon=True)
        self.a, self.rate, self.stop = a, rate, stop
        self.read = 0
        self.closed_after = None

    def run(self):
        a = self.a
        try:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((a.host, a.port))
            sock.sendall(f"GET {a.path} HTTP/1.1\r\nHost: {a.host}\r\n\r\n".encode())
        except OSError:
            self.closed_after = 0.0
            return
        start = time.monotonic()
        step = 0.25
        try:
            while not self.stop.is_set():
                want = max(1, int(self.rate * step))
                got = sock.recv(want)
                if not got:
                    self.closed_after = time.monotonic() - start
                    return
                self.read += len(got)
                time.sleep(step)
        except OSError:
            self.closed_after = time.monotonic() - start
        finally:
            sock.close()


class Legit(threading.Thread):
    """A normal client: a small GET and a 1 MB download, again and again."""

    def __init__(self, a, stop):
        super().__init__(daemon=True)
        self.a, self.stop = a, stop
        self.ok = self.failed = 0

    def fetch(self, path, expect):
        a = self.a
        with socket.create_connection((a.host, a.port), timeout=10) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {a.host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                part = sock.recv(65536)
                if not part:
                    break
                data += part
        head, _, body = data.partition(b"\r\n\r\n")
        return head.startswith(b"HTTP/1.1 200") and len(body) >= expect

    def run(self):
        while not self.stop.is_set():
            for path, expect in (("/api/hello", 1), ("/stream/download?bytes=1000000", 1000000)):
                try:
                    good = self.fetch(path, expect)
                except OSError:
                    good = False
                self.ok += good
                self.failed += not good
            time.sleep(0.1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--pid", type=int, help="the gateway's process id, for RSS")
    p.add_argument("--clients", type=int, default=340)
    p.add_argument("--min-rate", type=int, default=50, help="slowest reader, bytes/s")
    p.add_argument("--max-rate", type=int, default=512, help="fastest reader, bytes/s")
    p.add_argument("--path", default="/stream/download?bytes=1000000000")
    p.add_argument("--hold", type=float, default=40)
    p.add_argument("--after", type=float, default=10)
    a = p.parse_args()

    rss = (lambda: rss_kib(a.pid)) if a.pid else (lambda: 0)
    before = rss()
    stop = threading.Event()
    readers = [SlowReader(a, random.randint(a.min_rate, a.max_rate), stop) for _ in range(a.clients)]
    legit = Legit(a, stop)
    start = time.monotonic()
    for r in readers:
        r.start()
    legit.start()
    peak = before
    held = {}
    while time.monotonic() - start < a.hold:
        peak = max(peak, rss())
        elapsed = time.monotonic() - start
        for mark in (2, 10, 20, 30):
            if elapsed >= mark and mark not in held:
                held[mark] = established(a.port)
        time.sleep(0.25)
    held["end"] = established(a.port)
    stop.set()
    for r in readers:
        r.join()
    legit.join()
    left = time.monotonic()
    time.sleep(a.after)
    after = rss()
    closed = [r.closed_after for r in readers if r.closed_after is not None]
    print(f"slow readers {a.clients} at {a.min_rate}-{a.max_rate} B/s for {a.hold:.0f}s")
    print(f"rss_before_mib {before / 1024:.1f}")
    print(f"rss_peak_mib {peak / 1024:.1f}")
    print(f"rss_after_leaving_mib {after / 1024:.1f} (after {a.after:.0f}s)")
    print(f"closed_seen_by_readers {len(closed)} of {a.clients}; latest after "
          f"{max(closed) if closed else float('nan'):.1f}s (a reader sees the close only once "
          f"it has read what the kernels still hold for it)")
    print("gateway_open_connections " + ", ".join(f"{k}{'s' if k != 'end' else ''}: {v}" for k, v in held.items()))
    total = legit.ok + legit.failed
    print(f"legit_success {legit.ok}/{total}")


if __name__ == "__main__":
    main()
