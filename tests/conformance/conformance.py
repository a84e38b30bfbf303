"""The conformance harness's entry point: starts `weir serve` (the binary named by
WEIR_BIN) with the embedded demo service, runs every check of http1.py (RFC 9112),
http2.py (RFC 9113) and websocket.py (RFC 6455), prints one line per check, checks
that the gateway is still up and exits cleanly on SIGTERM, and exits 1 on any FAIL.

Usage: conformance.py [FILTER]  (only checks whose section or name contains FILTER)
"""

import os
import sys
import time

import http1  # noqa: F401  (registers its checks)
import http2  # noqa: F401
import websocket  # noqa: F401
from harness import CHECKS, Gateway, report, run_check


def main() -> int:
    binary = os.environ.get("WEIR_BIN", "target/release/weir")
    wanted = sys.argv[1] if len(sys.argv) > 1 else ""
    checks = [c for c in CHECKS if wanted in c.section or wanted in c.name]
    started = time.monotonic()
    gateway = Gateway.start(binary)
    try:
        outcomes = [run_check(item, gateway.addr) for item in checks]
        alive = gateway.alive()
    finally:
        status = gateway.stop()
    report(outcomes)
    counts = {v: sum(o.verdict == v for o in outcomes) for v in ("PASS", "FAIL", "KNOWN-DEVIATION")}
    elapsed = time.monotonic() - started
    print(f"conformance: {counts['PASS']} passed, {counts['FAIL']} failed, "
          f"{counts['KNOWN-DEVIATION']} known deviations, in {elapsed:.1f} s against {binary}")
    problems = []
    if not alive:
        problems.append("the gateway was no longer serving after the checks")
    if status != 0:
        problems.append(f"weir serve exited with status {status} on SIGTERM")
    for problem in problems:
        print(f"conformance: FAIL: {problem}")
    if problems or counts["FAIL"]:
        print(gateway.log_tail())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
