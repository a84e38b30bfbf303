#!/usr/bin/env python3
"""Slow senders against the payload budget, beside a legitimate client.

Starts `weir serve` (demo service embedded) with the default limits and an admin
listener, then from 127.0.0.1 keeps SENDERS chunked uploads to /stream/upload open, each
trickling RATE bytes/s (just above `min_request_data_rate`; a sender the gateway closes
reconnects at once). After a ramp-up, a legitimate client on 127.0.0.2 runs WORKERS loops
alternating a 2 MiB streamed upload (chunked, unknown length) and a 64 KiB buffered POST
to /api/echo for DURATION seconds, and the script reports its success rate, the
gateway's budget (`/budget`) and RSS as sampled during the attack.

    python3 bench/attacks/slow_senders.py --weir target/release/weir [--senders 80]
        [--rate 300] [--interval 0.1] [--duration 20] [--workers 4]

The issue's other variant, 64 senders writing 1 byte every 2 s (each closed by the
minimum data rate after its grace, and reconnecting): `--senders 64 --rate 0.5 --interval 2`.

Python 3 standard library only. Linux (reads /proc for RSS).
"""

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

from gateway_process import rss_kib, stop

MIB = 1024 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_weir(binary, port, admin_port):
    config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    config.write(f'[server]\nlisten = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{admin_port}"\n')
    config.write(f'[services]\nlisten = "127.0.0.1:{free_port()}"\n')
    config.close()
    proc = subprocess.Popen([binary, "serve", "--config", config.name], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("weir listening on"):
            break
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, config.name


def slow_sender(port, rate, interval, stop, counts):
    """One attacker connection at a time, reconnecting whenever the gateway closes it."""
    piece = max(1, round(rate * interval))
    chunk = f"{piece:x}\r\n".encode() + b"x" * piece + b"\r\n"
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /stream/upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
            counts["connects"] += 1
            while not stop.is_set():
                s.sendall(chunk)
                time.sleep(interval)
            s.close()
        except OSError:
            counts["dropped"] += 1
            time.sleep(0.05)


def streamed_upload(port, size):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=("127.0.0.2", 0))
    block = b"u" * (64 * 1024)
    body = (block for _ in range(size // len(block)))
    conn.request("POST", "/stream/upload", body=body, encode_chunked=True,
                 headers={"transfer-encoding": "chunked"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status == 200 and json.loads(data).get("bytes") == size, response.status


def buffered_post(port, size):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=("127.0.0.2", 0))
    body = b"b" * size
    conn.request("POST", "/api/echo", body=body, headers={"content-type": "application/octet-stream"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status == 200 and data == body, response.status


def legit_worker(port, deadline, results, lock):
    turn = 0
    while time.time() < deadline:
        kind = "upload_2MiB" if turn % 2 == 0 else "post_64KiB"
        try:
            ok, status = streamed_upload(port, 2 * MIB) if turn % 2 == 0 else buffered_post(port, 64 * 1024)
        except OSError as err:
            ok, status = False, type(err).__name__
        with lock:
            entry = results.setdefault(kind, {"ok": 0, "total": 0, "failures": {}})
            entry["total"] += 1
            entry["ok"] += ok
            if not ok:
                entry["failures"][str(status)] = entry["failures"].get(str(status), 0) + 1
        turn += 1


def budget(admin_port):
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    conn.request("GET", "/budget")
    view = json.loads(conn.getresponse().read())
    conn.close()
    return view


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weir", default="target/release/weir")
    parser.add_argument("--senders", type=int, default=80)
    parser.add_argument("--rate", type=float, default=300, help="bytes/s per slow sender")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between a sender's writes")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--ramp", type=float, default=6.0, help="seconds of attack before measuring")
    args = parser.parse_args()

    port, admin_port = free_port(), free_port()
    proc, config = start_weir(args.weir, port, admin_port)
    stop, counts = threading.Event(), {"connects": 0, "dropped": 0}
    attackers = [threading.Thread(target=slow_sender, args=(port, args.rate, args.interval, stop, counts), daemon=True)
                 for _ in range(args.senders)]
    for t in attackers:
        t.start()
    time.sleep(args.ramp)

    results, lock = {}, threading.Lock()
    deadline = time.time() + args.duration
    workers = [threading.Thread(target=legit_worker, args=(port, deadline, results, lock))
               for _ in range(args.workers)]
    for t in workers:
        t.start()
    peak_bytes, peak_rss, top = 0, 0.0, []
    while any(t.is_alive() for t in workers):
        view = budget(admin_port)
        if view["aggregate_bytes"] >= peak_bytes:
            peak_bytes, top = view["aggregate_bytes"], view.get("top_clients", [])
        peak_rss = max(peak_rss, rss_kib(proc.pid) / 1024)
        time.sleep(0.5)
    for t in workers:
        t.join()
    stop.set()

    ok = sum(r["ok"] for r in results.values())
    total = sum(r["total"] for r in results.values())
    report = {
        "senders": args.senders, "rate_bytes_per_s": args.rate,
        "attacker_connects": counts["connects"], "attacker_dropped": counts["dropped"],
        "legit": results, "legit_success_rate": round(ok / total, 4) if total else None,
        "budget_peak_bytes": peak_bytes, "budget_top_clients_at_peak": top,
        "gateway_peak_rss_mib": round(peak_rss, 1),
    }
    print(json.dumps(report, indent=2))
    stop(proc)
    os.unlink(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
