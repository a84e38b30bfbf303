#!/usr/bin/env python3
"""Send exactly N HTTP/1.1 requests over keep-alive connections and check every answer.

Used by `bench/profile --callgrind`, where the server runs some 50 times slower under
valgrind and the figure is a count per request, so the number sent must be exact (wrk
runs for a time, not a count). CONNECTIONS connections share the N requests (each takes
the next one as soon as its previous answer is in, so every connection has one request
in flight until the last ones), over one asyncio loop.

A request succeeds when its answer has status 200 and, for a POST, a body of exactly the
bytes sent (the echo routes send it back). Anything else (another status, a shorter
body, a closed connection, no answer within TIMEOUT seconds) is a failure; a connection
that fails is reopened for its next request.

Prints one JSON object: {"requests": N, "ok": ..., "failures": ..., "seconds": ...,
"first_failure": "..."}; exits 1 when any request failed.
"""

import argparse
import asyncio
import json
import sys
import time


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return status, bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    if length is None:
        raise RuntimeError(f"status {status} answer without a length (the client needs keep-alive)")
    return status, await reader.readexactly(length)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/api/hello")
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--body-bytes", type=int, default=0, help="POST a body of this many bytes (echoed back)")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()

    body = b"x" * args.body_bytes
    if body:
        request = (f"POST {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
                   f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    else:
        request = f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n\r\n".encode()

    remaining = args.requests
    ok = 0
    failures = 0
    first_failure = ""

    async def connection() -> None:
        nonlocal remaining, ok, failures, first_failure
        reader = writer = None
        while remaining > 0:
            remaining -= 1
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(args.host, args.port), args.timeout)
                writer.write(request)
                status, answer = await asyncio.wait_for(read_response(reader), args.timeout)
                if status != 200:
                    raise RuntimeError(f"status {status}: {answer[:200]!r}")
                if body and answer != body:
                    raise RuntimeError(f"echoed {len(answer)} bytes, not the {len(body)} sent")
                ok += 1
            except Exception as err:  # counted, reported once, never fatal
                failures += 1
                first_failure = first_failure or f"{type(err).__name__}: {err}"
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(connection() for _ in range(min(args.connections, args.requests))))
    seconds = time.monotonic() - started
    print(json.dumps({"requests": args.requests, "ok": ok, "failures": failures,
                      "seconds": round(seconds, 3), "first_failure": first_failure}))
    return 1 if failures or ok != args.requests else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
