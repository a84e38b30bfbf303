#!/usr/bin/env python3
"""Read oha's JSON output on stdin and print bench/run's figures as key=value pairs.

  oha_summary.py PREFIX [--warmup-failures N] [--exit STATUS]

Every key starts with PREFIX (`fixed_` for the fixed-rate run, `canary_` for the canary
that runs beside wrk). Failed requests (PREFIX + "failures"): every answer that is not
2xx (statusCodeDistribution), every error oha reports (errorDistribution: connect errors,
resets, timeouts, ...), one more when there is no 2xx answer at all or oha failed, plus
the warm-up's failures. Requests cut off because the duration ended ("aborted due to
deadline", only without oha's -w) are the end of the run, not failures, and are left out.
"""

import argparse
import json
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("prefix")
    parser.add_argument("--warmup-failures", type=int, default=0)
    parser.add_argument("--exit", type=int, default=0, help="oha's exit status")
    args = parser.parse_args()
    p = args.prefix
    try:
        report = json.loads(sys.stdin.read())
    except ValueError:
        print(f"{p}requests=0 {p}failures={1 + args.warmup_failures} {p}oha_exit={args.exit}")
        print(f"oha ({p[:-1]}) printed no JSON (exit status {args.exit})", file=sys.stderr)
        return
    codes = report.get("statusCodeDistribution") or {}
    errors = {
        name: n for name, n in (report.get("errorDistribution") or {}).items() if "aborted due to deadline" not in name
    }
    ok = sum(n for code, n in codes.items() if str(code).startswith("2"))
    non2xx = sum(codes.values()) - ok
    failures = non2xx + sum(errors.values()) + (0 if ok else 1) + (1 if args.exit else 0) + args.warmup_failures
    percentiles = report.get("latencyPercentiles") or {}

    def ms(key):
        return (percentiles.get(key) or 0) * 1e3

    rps = (report.get("summary") or {}).get("requestsPerSec") or 0
    print(
        f"{p}rate_rps={rps:.1f} {p}p50_ms={ms('p50'):.3f} {p}p99_ms={ms('p99'):.3f} {p}p999_ms={ms('p99.9'):.3f} "
        f"{p}requests={ok + non2xx} {p}non2xx={non2xx} {p}errors={sum(errors.values())} "
        f"{p}warmup_failures={args.warmup_failures} {p}oha_exit={args.exit} {p}failures={failures}"
    )
    if errors or non2xx:
        print(f"oha ({p[:-1]}): status codes {codes}, errors {errors}", file=sys.stderr)


if __name__ == "__main__":
    main()
