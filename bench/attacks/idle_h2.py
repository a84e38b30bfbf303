#!/usr/bin/env python3
"""Idle HTTP/2 connections against a weir with few file descriptors.

Starts `weir serve` (the embedded demo) with its open-files limit at --nofile (soft and
hard, so weir cannot raise it), opens --idle connections that send the HTTP/2 preface
and nothing else from --addresses loopback addresses (127.0.0.2, 127.0.0.3, ...), then
sends legitimate GETs from 127.0.0.1 for --seconds and reports, per window, how many
succeeded and how many attacker connections weir still holds open.

    python3 bench/attacks/idle_h2.py --weir target/release/weir
    python3 bench/attacks/idle_h2.py --weir ./weir-before --idle 1080 --addresses 12

Standard library only. Linux (127.0.0.x source addresses need no setup there).
"""

import argparse
import os
import resource
import select
import socket
import subprocess
import sys
import tempfile
import time

from gateway_process import stop

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def start_weir(binary, nofile, config_text):
    """weir on an ephemeral port with RLIMIT_NOFILE fixed at `nofile`; returns (proc, port)."""
    config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    config.write(config_text)
    config.close()

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen(
        [binary, "serve", "--config", config.name, "--listen", "127.0.0.1:0",
         "--services-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=limit, text=True)
    for line in proc.stdout:
        if line.startswith("weir listening on http://"):
            return proc, int(line.strip().rsplit(":", 1)[1])
    raise SystemExit("weir did not start")


def open_idle(port, count, addresses):
    """`count` connections that send the preface only, spread over the addresses."""
    sockets = []
    for i in range(count):
        source = "127.0.0.%d" % (2 + i % addresses)
        s = socket.socket()
        s.setblocking(False)
        s.bind((source, 0))
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        sockets.append(s)
    poller = select.poll()
    by_fd = {s.fileno(): s for s in sockets}
    for fd in by_fd:
        poller.register(fd, select.POLLOUT)
    deadline = time.monotonic() + 5
    while by_fd and time.monotonic() < deadline:
        for fd, _ in poller.poll(200):
            try:
                by_fd.pop(fd).send(PREFACE)
            except OSError:
                pass
            poller.unregister(fd)
    return sockets


def still_open(sockets):
    """Attacker connections weir has not closed (reads drain what it sent)."""
    alive = []
    for s in sockets:
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    s.close()
                    break
        except BlockingIOError:
            alive.append(s)
        except OSError:
            s.close()
    return alive


def legit_get(port, timeout):
    """One GET /api/hello from 127.0.0.1; True on a 200."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET /api/hello HTTP/1.1\r\nhost: weir\r\nconnection: close\r\n\r\n")
            answer = b""
            while len(answer) < 12:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
            return answer.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weir", required=True, help="the weir binary")
    parser.add_argument("--nofile", type=int, default=1024, help="weir's RLIMIT_NOFILE")
    parser.add_argument("--idle", type=int, default=1080, help="idle HTTP/2 connections")
    parser.add_argument("--addresses", type=int, default=12, help="attacker source addresses")
    parser.add_argument("--seconds", type=float, default=30, help="how long legit clients run")
    parser.add_argument("--window", type=float, default=5, help="report window, seconds")
    parser.add_argument("--rate", type=float, default=20, help="legit GETs per second")
    parser.add_argument("--config", default="", help="extra TOML for [server]")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    proc, port = start_weir(args.weir, args.nofile, "[server]\n" + args.config.replace("\\n", "\n") + "\n")
    try:
        assert legit_get(port, 2), "weir does not answer before the attack"
        attackers = open_idle(port, args.idle, args.addresses)
        print("attack: %d preface-only connections from %d addresses; weir nofile=%d"
              % (len(attackers), args.addresses, args.nofile))
        print("%8s %10s %12s" % ("window", "legit ok", "idle open"))
        start = time.monotonic()
        total_ok = total = 0
        while time.monotonic() - start < args.seconds:
            window_start = time.monotonic()
            ok = sent = 0
            while time.monotonic() - window_start < args.window:
                began = time.monotonic()
                ok += legit_get(port, 2)
                sent += 1
                time.sleep(max(0, 1 / args.rate - (time.monotonic() - began)))
            attackers = still_open(attackers)
            print("%4.0f-%-3.0f %5d/%-4d %12d" % (window_start - start, time.monotonic() - start,
                                                   ok, sent, len(attackers)))
            total_ok += ok
            total += sent
        print("legit success: %d/%d (%.1f%%); attacker connections still open: %d"
              % (total_ok, total, 100.0 * total_ok / max(total, 1), len(attackers)))
    finally:
        stop(proc)


if __name__ == "__main__":
    sys.exit(main())
