#!/usr/bin/env python3
"""Hold N idle keep-alive connections open on a server and measure what they cost it.

Used by bench/run for idle_1k and idle_10k. Steps:
  1. read the resident set (VmRSS) of the measured process: the baseline;
  2. open N connections (a bounded number at a time) from PER_SOURCE connections per
     loopback source address (127.0.1.1, 127.0.1.2, ...: like many clients, and under a
     per-IP connection limit), send one `GET PATH` on each and
     read its whole response, so that each is an established, used, idle keep-alive
     connection (the proxies have also set up their upstream side once);
  3. wait SETTLE seconds, read VmRSS again, check how many connections are still open;
  4. close them all.
Prints one JSON object: connections asked and held, baseline and loaded RSS in KiB, and
(loaded - baseline) / held as rss_per_conn_kib.
"""

import argparse
import asyncio
import json
import resource
import sys
import time


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


def source_address(index: int, per_source: int) -> str:
    n = index // per_source + 1
    return f"127.0.{1 + n // 250}.{1 + n % 250}"


async def open_one(host, port, source, request, limiter, held, failures):
    async with limiter:
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
            writer.write(request)
            status = await asyncio.wait_for(read_response(reader), 30)
            if status != 200:
                raise RuntimeError(f"status {status}")
            held.append((reader, writer))
        except Exception as err:  # counted and reported, never fatal
            failures.append(repr(err))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--path", default="/api/hello")
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="process whose RSS is measured")
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--parallel", type=int, default=256, help="connections being opened at once")
    parser.add_argument("--per-source", type=int, default=50, help="connections per source address")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))

    request = f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n\r\n".encode()
    baseline = rss_kib(args.pid)
    held, failures = [], []
    limiter = asyncio.Semaphore(args.parallel)
    started = time.monotonic()
    await asyncio.gather(
        *(
            open_one(args.host, args.port, source_address(i, args.per_source), request, limiter, held, failures)
            for i in range(args.connections)
        )
    )
    open_seconds = time.monotonic() - started
    await asyncio.sleep(args.settle)
    loaded = rss_kib(args.pid)

    # A connection the server closed meanwhile reads EOF at once; an open one times out.
    async def still_open(reader):
        try:
            return await asyncio.wait_for(reader.read(1), 0.001) != b""
        except asyncio.TimeoutError:
            return True
        except Exception:
            return False

    alive = sum(await asyncio.gather(*(still_open(r) for r, _ in held)))
    for _, writer in held:
        writer.close()
    result = {
        "connections": args.connections,
        "held": len(held),
        "alive_at_sample": alive,
        "failed": len(failures),
        "first_failure": failures[0] if failures else None,
        "open_seconds": round(open_seconds, 2),
        "rss_baseline_kib": baseline,
        "rss_kib": loaded,
        "rss_per_conn_kib": round((loaded - baseline) / max(alive, 1), 2),
    }
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
