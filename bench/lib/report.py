#!/usr/bin/env python3
"""Turn bench/run's raw measurements (one JSON object a line) into the results files.

  report.py RAW.jsonl OUT.json OUT.md [--title TEXT] [--note TEXT]...

Each raw line has `placement` (pinned or unpinned), `scenario`, `system`, `round`, some
metrics and failure counts. Rounds of the same (placement, scenario, system) are combined:
metrics by their median, failure counts by their sum. An entry with any failure has
`valid: false`. The output JSON is `{"machine": "...", "valid": ..., "invalid": [...],
"results": [{"placement": ..., "scenario": ..., "system": ..., <metrics>, "failures": N,
"valid": ...}, ...]}` and the Markdown has one table per placement, one row per (scenario,
metric): each system's figure and its ratio to nginx, or the figure struck out and
"invalid (N failed)" when a run behind it had failed requests. With weir_rabbitmq in the
results, each placement also gets a table of its ratios to amqp_ceiling (the broker's
own request-reply ceiling) and to weir (the TCP service transport).

Prints one line per invalid entry on stdout and exits with status 3 when there is any.
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
from collections import OrderedDict

SCENARIOS = [
    "small_get", "echo_1k", "echo_64k", "stream_upload", "stream_download", "idle_1k", "idle_10k",
    "tls_small_get", "tls_handshakes", "h2_small_get",
]
SYSTEMS = ["weir", "nginx", "haproxy", "pingora", "upstream"]
PLACEMENTS = OrderedDict(
    [
        ("pinned", "Pinned: one core each (load generator on one core, system under test on the other)"),
        ("unpinned", "Unpinned: both cores (no pinning, every system and the load generator on all cores)"),
    ]
)

# Counts of failed requests and their causes: summed over rounds, never a median. A run's
# `failures` covers its saturation run (and warm-up), `fixed_failures` its fixed-rate run.
SUMMED = {
    "failures", "fixed_failures", "warmup_failures", "fixed_warmup_failures", "requests", "fixed_requests",
    "non2xx", "fixed_non2xx", "fixed_errors", "connect_errors", "read_errors", "write_errors", "timeouts",
    "failed", "closed", "curl_exit", "wrk_exit", "idle_script_failed",
    "canary_requests", "canary_non2xx", "canary_errors", "canary_failures", "canary_oha_exit", "fixed_oha_exit",
    "errors", "resumed", "handshakes_script_failed", "h2_failed", "h2_errored", "h2_timeout", "h2load_exit",
    "late_replies", "ceiling_exit",
}
# What a failure count makes invalid: the fixed-rate figures follow fixed_failures, all
# the others failures.
FIXED_PREFIX = "fixed_"

# metric -> (label, unit, True when higher is better, decimals)
METRICS = OrderedDict(
    [
        ("rps", ("requests/s", "", True, 0)),
        ("p50_ms", ("p50", "ms", False, 3)),
        ("p99_ms", ("p99", "ms", False, 3)),
        ("p999_ms", ("p99.9", "ms", False, 3)),
        ("mean_ms", ("mean latency", "ms", False, 3)),
        ("cpu_us_per_req", ("CPU of the system under test per request", "µs", False, 1)),
        ("broker_cpu_us_per_req", ("CPU of the RabbitMQ broker per request", "µs", False, 1)),
        ("fixed_rate_rps", ("fixed rate: achieved requests/s", "", True, 0)),
        ("fixed_p50_ms", ("fixed rate: p50", "ms", False, 3)),
        ("fixed_p99_ms", ("fixed rate: p99", "ms", False, 3)),
        ("fixed_p999_ms", ("fixed rate: p99.9", "ms", False, 3)),
        ("mb_per_s", ("throughput", "MB/s", True, 0)),
        ("peak_rss_kib", ("peak RSS", "KiB", False, 0)),
        ("rss_per_conn_kib", ("RSS per idle connection", "KiB", False, 2)),
        ("rss_baseline_kib", ("RSS before", "KiB", False, 0)),
        ("rss_kib", ("RSS with connections open", "KiB", False, 0)),
    ]
)
# What a TLS scenario's client negotiated, listed under each table.
TLS_FIELDS = ["tls_version", "tls_cipher", "tls_group", "tls_signature", "alpn"]
# Figures kept in the JSON but not worth a Markdown row of their own.
QUIET = {"rss_baseline_kib", "rss_kib"}


def machine() -> str:
    model, cores = platform.processor() or "unknown CPU", None
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = fields.get("Model name", model).strip()
        cores = fields.get("CPU(s)", "").strip()
        hypervisor = fields.get("Hypervisor vendor", "").strip()
        if hypervisor:
            model += f" ({hypervisor} guest)"
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{model}, {cores or '?'} cores, Linux {platform.release()}"


def combine(raw_lines):
    groups = OrderedDict()
    for line in raw_lines:
        record = json.loads(line)
        key = (record.get("placement", "pinned"), record["scenario"], record["system"])
        groups.setdefault(key, []).append(record)
    placements = list(PLACEMENTS) + sorted({p for (p, _, _) in groups} - set(PLACEMENTS))
    systems = SYSTEMS + sorted({s for (_, _, s) in groups} - set(SYSTEMS))
    results = []
    for placement in placements:
        for scenario in SCENARIOS:
            for system in systems:
                records = groups.get((placement, scenario, system))
                if records:
                    results.append(combine_one(placement, scenario, system, records))
    return results


def combine_one(placement, scenario, system, records):
    entry = OrderedDict(placement=placement, scenario=scenario, system=system)
    numeric = OrderedDict()
    for record in records:
        for name, value in record.items():
            if name in ("placement", "scenario", "system", "round"):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                numeric.setdefault(name, []).append(value)
            elif value is not None:
                entry.setdefault(name, value)
    for name, values in numeric.items():
        if name in SUMMED:
            entry[name] = sum(values)
            continue
        value = statistics.median(values)
        decimals = METRICS.get(name, (None, None, None, 3))[3]
        entry[name] = round(value, decimals) if decimals else int(round(value))
    entry["rounds"] = len({r.get("round") for r in records})
    # Total failed requests of every run behind this entry. A run that reported no
    # failure count at all (an older raw file) counts as checked and clean.
    fixed = entry.get("fixed_failures", 0)
    entry["failures"] = entry.get("failures", 0) + fixed
    entry["valid"] = entry["failures"] == 0
    return entry


def failed_for(entry, metric):
    """Failed requests behind one figure of an entry."""
    fixed = entry.get("fixed_failures", 0)
    return fixed if metric.startswith(FIXED_PREFIX) else entry.get("failures", 0) - fixed


def cell(value, base, decimals, failed):
    if value is None and not failed:
        return "–"
    if failed:
        struck = "" if value is None else f"~~{fmt(value, decimals)}~~ "
        return f"{struck}**invalid** ({failed:,} failed)"
    text = fmt(value, decimals)
    if base:
        return f"{text} ({value / base:.2f}×)"
    return text


def fmt(value, decimals):
    return f"{value:,.{decimals}f}" if decimals else f"{int(value):,}"


def table(results, placement, systems):
    by = {(r["scenario"], r["system"]): r for r in results if r["placement"] == placement}
    lines = ["| scenario | metric | " + " | ".join(systems) + " |", "|---|---|" + "---:|" * len(systems)]
    for scenario in SCENARIOS:
        for metric, (label, unit, higher, decimals) in METRICS.items():
            if metric in QUIET:
                continue
            entries = [by.get((scenario, s)) for s in systems]
            row = [e.get(metric) if e else None for e in entries]
            row = [v if isinstance(v, (int, float)) and not isinstance(v, bool) else None for v in row]
            if all(v is None for v in row):
                continue
            nginx = by.get((scenario, "nginx"), {})
            # No ratio to a figure that is itself invalid.
            base = None if failed_for(nginx, metric) else nginx.get(metric)
            arrow = "↑" if higher else "↓"
            name = f"{label} ({unit}) {arrow}" if unit else f"{label} {arrow}"
            cells = [cell(v, base, decimals, failed_for(e, metric) if e else 0) for v, e in zip(row, entries)]
            lines.append(f"| {scenario} | {name} | " + " | ".join(cells) + " |")
    negotiated = [
        f"{scenario} {system}: " + ", ".join(str(r[k]) for k in TLS_FIELDS if r.get(k) not in (None, "none"))
        for (scenario, system), r in sorted(by.items(), key=lambda item: SCENARIOS.index(item[0][0]))
        if "tls_version" in r
    ]
    if negotiated:
        lines += ["", "TLS negotiated (version, cipher, key exchange, signature, ALPN): " + "; ".join(negotiated) + "."]
    targets = sorted({r["fixed_rate_target"] for r in by.values() if "fixed_rate_target" in r})
    if targets:
        lines.append("")
        rates = " / ".join(f"{t:,}" for t in targets)
        lines.append(f"Fixed rate for small_get: {rates} requests/s for every system.")
    return lines


# The RabbitMQ comparison: weir_rabbitmq against the broker's own ceiling and against
# weir over TCP. Figures in this order, where both sides have them.
BROKER_METRICS = ["rps", "p50_ms", "p99_ms", "mb_per_s", "cpu_us_per_req", "broker_cpu_us_per_req"]


def rabbitmq_table(results, placement):
    by = {(r["scenario"], r["system"]): r for r in results if r["placement"] == placement}
    if not any(system == "weir_rabbitmq" for (_, system) in by):
        return []
    lines = [
        "",
        "weir over RabbitMQ (weir_rabbitmq) beside the broker's own request-reply ceiling (amqp_ceiling) "
        "and weir over TCP (weir):",
        "",
        "| scenario | metric | weir_rabbitmq | amqp_ceiling | weir | weir_rabbitmq / amqp_ceiling | weir_rabbitmq / weir |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for scenario in SCENARIOS:
        ours = by.get((scenario, "weir_rabbitmq"))
        if not ours:
            continue
        for metric in BROKER_METRICS:
            label, unit, higher, decimals = METRICS[metric]
            value = ours.get(metric)
            if not isinstance(value, (int, float)):
                continue
            cells, ratios = [], []
            for system in ("weir_rabbitmq", "amqp_ceiling", "weir"):
                entry = by.get((scenario, system))
                figure = entry.get(metric) if entry else None
                failed = failed_for(entry, metric) if entry else 0
                cells.append(cell(figure, None, decimals, failed) if isinstance(figure, (int, float)) else "–")
                if system != "weir_rabbitmq":
                    ok = isinstance(figure, (int, float)) and figure and not failed and not failed_for(ours, metric)
                    ratios.append(f"{value / figure:.2f}×" if ok else "–")
            arrow = "↑" if higher else "↓"
            name = f"{label} ({unit}) {arrow}" if unit else f"{label} {arrow}"
            lines.append(f"| {scenario} | {name} | " + " | ".join(cells + ratios) + " |")
    return lines


def describe_failures(entry):
    parts = [
        f"{name.replace('_', ' ')} {entry[name]:,}"
        for name in (
            "non2xx", "connect_errors", "read_errors", "write_errors", "timeouts", "warmup_failures",
            "canary_non2xx", "canary_errors", "canary_oha_exit", "fixed_non2xx", "fixed_errors",
            "fixed_warmup_failures", "fixed_oha_exit", "failed", "closed", "curl_exit", "wrk_exit",
            "idle_script_failed", "errors", "resumed", "handshakes_script_failed", "h2_failed", "h2_errored",
            "h2_timeout", "h2load_exit", "ceiling_exit",
        )
        if entry.get(name)
    ]
    if entry.get("http_code") not in (None, 200):
        parts.append(f"HTTP {entry['http_code']}")
    return ", ".join(parts)


def invalid_lines(results):
    return [
        f"INVALID {r['placement']} {r['scenario']} {r['system']}: {r['failures']:,} failed"
        + (f" ({why})" if (why := describe_failures(r)) else "")
        for r in results
        if not r["valid"]
    ]


def markdown(results, title, notes, machine_text):
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in results)]
    systems += sorted({r["system"] for r in results} - set(SYSTEMS))
    placements = [p for p in PLACEMENTS if any(r["placement"] == p for r in results)]
    placements += sorted({r["placement"] for r in results} - set(PLACEMENTS))
    lines = [f"# {title}", "", f"Machine: {machine_text}", ""]
    busy = [r["busy_before_pct"] for r in results if "busy_before_pct" in r]
    if busy:
        notes = notes + [
            f"Other work on the machine just before the measurements (bench/run waits for it to drop "
            f"under 10%, for a while): median {statistics.median(busy):.0f}%, max {max(busy):.0f}% of both cores."
        ]
    lines += [f"- {note}" for note in notes]
    if notes:
        lines.append("")
    invalid = invalid_lines(results)
    if invalid:
        lines.append(f"**{len(invalid)} invalid row(s)**: figures from runs with failed requests, struck out below.")
        lines.append("")
        lines += [f"- {line}" for line in invalid]
    else:
        lines.append("Every request of every run succeeded (2xx, no socket error, no timeout).")
    lines.append("")
    lines.append("Each cell: the figure, then its ratio to nginx's. ↑ higher is better, ↓ lower is better.")
    for placement in placements:
        lines += ["", f"### {PLACEMENTS.get(placement, placement)}", ""]
        lines += table(results, placement, systems)
        lines += rabbitmq_table(results, placement)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("raw")
    parser.add_argument("json_out")
    parser.add_argument("md_out")
    parser.add_argument("--title", default="weir benchmarks")
    parser.add_argument("--note", action="append", default=[])
    args = parser.parse_args()
    with open(args.raw) as raw:
        results = combine(line for line in raw if line.strip())
    machine_text = machine()
    invalid = invalid_lines(results)
    with open(args.json_out, "w") as out:
        json.dump({"machine": machine_text, "valid": not invalid, "invalid": invalid, "results": results}, out, indent=2)
        out.write("\n")
    with open(args.md_out, "w") as out:
        out.write(markdown(results, args.title, args.note, machine_text))
    if invalid:
        print("\n".join(invalid))
        sys.exit(3)


if __name__ == "__main__":
    main()
