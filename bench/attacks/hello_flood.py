#!/usr/bin/env python3
"""Hello flood: many unauthenticated connections each sending a huge Hello frame.

Starts `weir serve --no-demo` with service credentials configured, opens CONNECTIONS
connections to its service port, and on each sends a frame header announcing a Hello of
SIZE bytes followed by as much of that payload as the gateway will take. Samples the
gateway's resident memory (VmRSS) while the connections push, and again after they are
closed and the handshake timeout has passed. A gateway that buffers a whole frame before
authenticating grows by about CONNECTIONS x SIZE; one that limits frames before the
Welcome (services.max_hello_size) refuses each from its header.

    python3 bench/attacks/hello_flood.py --weir target/release/weir
    python3 bench/attacks/hello_flood.py --weir target/release/weir --connections 150 --size 16MiB

Prints one line per phase and a summary; exit status 0. Python 3 standard library only.
"""

import argparse
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from gateway_process import rss_kib, stop

HELLO = 1
ERROR = 10
CHUNK = 64 * 1024


def parse_size(text):
    match = re.fullmatch(r"(\d+)\s*(|B|KiB|MiB)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text}")
    return int(match.group(1)) * {"": 1, "B": 1, "KiB": 1024, "MiB": 1024 * 1024}[match.group(2)]


def start_weir(binary, handshake_timeout):
    config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    config.write(
        f"""[server]
listen = "127.0.0.1:0"
[services]
listen = "127.0.0.1:0"
handshake_timeout = "{handshake_timeout}s"
[[services.credentials]]
service = "billing"
token = "a-secret-the-attacker-does-not-have"
prefixes = ["/billing"]
"""
    )
    config.close()
    proc = subprocess.Popen(
        [binary, "serve", "--config", config.name, "--no-demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    services = None
    deadline = time.time() + 30
    while time.time() < deadline and services is None:
        line = proc.stdout.readline()
        if not line:
            break
        found = re.search(r"weir services on tcp://(\S+)", line)
        if found:
            services = found.group(1)
    if services is None:
        proc.kill()
        sys.exit("weir did not report its service address")
    host, port = services.rsplit(":", 1)
    return proc, (host, int(port)), config.name


class Attacker(threading.Thread):
    """One connection: the header of a SIZE-byte Hello, then its payload."""

    def __init__(self, addr, size, stop):
        super().__init__(daemon=True)
        self.addr, self.size, self.stop = addr, size, stop
        self.sent = 0
        self.refused = False  # got an Error frame back
        self.closed = False

    def run(self):
        try:
            sock = socket.create_connection(self.addr, timeout=5)
        except OSError:
            self.closed = True
            return
        sock.settimeout(0.2)
        header = struct.pack(">IBBQ", self.size + 10, HELLO, 0, 0)
        payload = b"\0" * CHUNK
        try:
            sock.sendall(header)
            while self.sent < self.size and not self.stop.is_set():
                try:
                    self.sent += sock.send(payload[: min(CHUNK, self.size - self.sent)])
                except socket.timeout:
                    self.poll(sock)
                    if self.closed:
                        break
            while not self.stop.is_set() and not self.closed:
                self.poll(sock)
        except OSError:
            self.closed = True
        finally:
            sock.close()

    def poll(self, sock):
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return
        if not data:
            self.closed = True
        elif len(data) >= 5 and data[4] == ERROR:
            self.refused = True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weir", default="target/release/weir")
    parser.add_argument("--connections", type=int, default=150)
    parser.add_argument("--size", type=parse_size, default=16 * 1024 * 1024)
    parser.add_argument("--push-seconds", type=float, default=10.0)
    parser.add_argument("--handshake-timeout", type=int, default=10)
    args = parser.parse_args()

    proc, addr, config = start_weir(args.weir, args.handshake_timeout)
    try:
        time.sleep(0.5)
        idle = rss_kib(proc.pid)
        print(f"idle: RSS {idle / 1024:.1f} MiB")
        stop = threading.Event()
        attackers = [Attacker(addr, args.size, stop) for _ in range(args.connections)]
        for attacker in attackers:
            attacker.start()
        peak = idle
        end = time.time() + args.push_seconds
        while time.time() < end:
            peak = max(peak, rss_kib(proc.pid))
            time.sleep(0.05)
        sent = sum(a.sent for a in attackers)
        print(f"pushing {args.connections} x {args.size} B Hellos: peak RSS {peak / 1024:.1f} MiB, "
              f"{sent / 2**20:.1f} MiB sent, {sum(a.refused for a in attackers)} refused with an Error, "
              f"{sum(a.closed for a in attackers)} closed by the gateway")
        stop.set()
        for attacker in attackers:
            attacker.join(timeout=5)
        time.sleep(args.handshake_timeout + 1)
        after = rss_kib(proc.pid)
        print(f"after the handshake timeout: RSS {after / 1024:.1f} MiB")
        print(f"SUMMARY idle={idle / 1024:.1f}MiB peak={peak / 1024:.1f}MiB after={after / 1024:.1f}MiB")
    finally:
        stop(proc)
        os.unlink(config)


if __name__ == "__main__":
    main()
