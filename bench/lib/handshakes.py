#!/usr/bin/env python3
"""A full TLS handshake per request, as many as the server takes: bench/run's tls_handshakes.

  handshakes.py --port PORT [--path /api/hello] [--connections 64] [--processes 8] [--seconds 3]
                [--timeout 1]

CONNECTIONS clients (PROCESSES processes of CONNECTIONS / PROCESSES threads each: the TLS
work runs in OpenSSL with the GIL released) each loop until the duration ends: open a TCP
connection to 127.0.0.1:PORT, do a TLS handshake (OpenSSL's defaults, so TLS 1.3 where
the server offers it; no ALPN, so HTTP/1.1; the certificate is not checked), send
`GET PATH HTTP/1.1` with `Connection: close`, read the answer to its end and close.
Every handshake is a full one: each connection gets a new SSL object and is never given
a previous session, so no session is resumed (`resumed` counts any that were, and makes
them failures: a resumed handshake is not what this measures).

Prints one line of key=value figures: rps, p50_ms, p99_ms, p999_ms (connect to end of
answer), requests, non2xx, errors (refused, reset, TLS failure, short answer), timeouts
(no progress for TIMEOUT seconds), resumed, failures (the sum of those four, plus one
when no request succeeded), and what the first handshake negotiated: tls_version,
tls_cipher.
"""

import argparse
import multiprocessing
import socket
import ssl
import threading
import time


def client(port, request, deadline, timeout, context, out):
    """One client's loop; appends (latencies, counts) to out."""
    latencies = []
    counts = {"non2xx": 0, "errors": 0, "timeouts": 0, "resumed": 0}
    negotiated = None
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    if tls.session_reused:
                        counts["resumed"] += 1
                    negotiated = negotiated or (tls.version(), tls.cipher()[0])
                    tls.sendall(request)
                    answer = read_to_end(tls)
        except socket.timeout:
            counts["timeouts"] += 1
            continue
        except (OSError, ssl.SSLError):
            counts["errors"] += 1
            continue
        status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/1.") and b" " in answer else b""
        if not status.startswith(b"2"):
            counts["non2xx" if status else "errors"] += 1
            continue
        latencies.append(time.monotonic() - started)
    out.append((latencies, counts, negotiated))


def read_to_end(tls):
    """The whole answer: the server closes the connection after it (Connection: close)."""
    chunks = []
    while True:
        try:
            chunk = tls.recv(65536)
        except ssl.SSLZeroReturnError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def process_main(args, threads, deadline, queue):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = f"GET {args.path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    out = []
    workers = [
        threading.Thread(target=client, args=(args.port, request, deadline, args.timeout, context, out))
        for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put(out)


def percentile(sorted_values, fraction):
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/api/hello")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args()
    threads = max(1, args.connections // args.processes)
    queue = multiprocessing.Queue()
    started = time.monotonic()
    deadline = started + args.seconds
    processes = [
        multiprocessing.Process(target=process_main, args=(args, threads, deadline, queue))
        for _ in range(args.processes)
    ]
    for process in processes:
        process.start()
    results = [item for _ in processes for item in queue.get()]
    for process in processes:
        process.join()
    elapsed = time.monotonic() - started
    latencies = sorted(value for lat, _, _ in results for value in lat)
    totals = {key: sum(counts[key] for _, counts, _ in results) for key in ("non2xx", "errors", "timeouts", "resumed")}
    negotiated = next((n for _, _, n in results if n), ("none", "none"))
    failures = sum(totals.values()) + (0 if latencies else 1)
    ms = lambda fraction: percentile(latencies, fraction) * 1e3  # noqa: E731
    print(
        f"rps={len(latencies) / elapsed:.1f} p50_ms={ms(0.5):.3f} p99_ms={ms(0.99):.3f} p999_ms={ms(0.999):.3f} "
        f"requests={len(latencies) + totals['non2xx']} non2xx={totals['non2xx']} errors={totals['errors']} "
        f"timeouts={totals['timeouts']} resumed={totals['resumed']} failures={failures} "
        f"tls_version={negotiated[0]} tls_cipher={negotiated[1]}"
    )


if __name__ == "__main__":
    main()
