#!/usr/bin/env python3
"""Turn bench/run's raw measurements (one JSON object a line) into the results files.

  report.py RAW.jsonl OUT.json OUT.md [--title TEXT] [--note TEXT]...

Each raw line has `scenario`, `system`, `round` and some metrics. Rounds of the same
(scenario, system) are combined by the median of each metric; the output JSON is
`{"machine": "...", "results": [{"scenario": ..., "system": ..., <metrics>}, ...]}` and the
Markdown has one row per (scenario, metric): each system's figure and its ratio to nginx.
"""

import argparse
import json
import platform
import statistics
import subprocess
from collections import OrderedDict

SCENARIOS = ["small_get", "echo_1k", "echo_64k", "stream_upload", "stream_download", "idle_1k", "idle_10k"]
SYSTEMS = ["weir", "nginx", "haproxy", "upstream"]

# metric -> (label, unit, True when higher is better, decimals)
METRICS = OrderedDict(
    [
        ("rps", ("requests/s", "", True, 0)),
        ("p50_ms", ("p50", "ms", False, 3)),
        ("p99_ms", ("p99", "ms", False, 3)),
        ("p999_ms", ("p99.9", "ms", False, 3)),
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
        key = (record["scenario"], record["system"])
        groups.setdefault(key, []).append(record)
    results = []
    for scenario in SCENARIOS:
        for system in SYSTEMS + sorted({s for (_, s) in groups} - set(SYSTEMS)):
            records = groups.get((scenario, system))
            if not records:
                continue
            entry = OrderedDict(scenario=scenario, system=system)
            numeric = OrderedDict()
            for record in records:
                for name, value in record.items():
                    if name in ("scenario", "system", "round"):
                        continue
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        numeric.setdefault(name, []).append(value)
                    elif value is not None:
                        entry.setdefault(name, value)
            for name, values in numeric.items():
                value = statistics.median(values)
                decimals = METRICS.get(name, (None, None, None, 3))[3]
                entry[name] = round(value, decimals) if decimals else int(round(value))
            entry["rounds"] = len({r.get("round") for r in records})
            results.append(entry)
    return results


def cell(value, base, decimals):
    text = f"{value:,.{decimals}f}" if decimals else f"{int(value):,}"
    if base:
        return f"{text} ({value / base:.2f}×)"
    return text


def markdown(results, title, notes, machine_text):
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in results)]
    systems += sorted({r["system"] for r in results} - set(SYSTEMS))
    by = {(r["scenario"], r["system"]): r for r in results}
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
    lines.append("Each cell: the figure, then its ratio to nginx's. ↑ higher is better, ↓ lower is better.")
    lines.append("")
    lines.append("| scenario | metric | " + " | ".join(systems) + " |")
    lines.append("|---|---|" + "---:|" * len(systems))
    for scenario in SCENARIOS:
        for metric, (label, unit, higher, decimals) in METRICS.items():
            if metric in QUIET:
                continue
            row = [by.get((scenario, s), {}).get(metric) for s in systems]
            if all(v is None for v in row):
                continue
            base = by.get((scenario, "nginx"), {}).get(metric)
            arrow = "↑" if higher else "↓"
            name = f"{label} ({unit}) {arrow}" if unit else f"{label} {arrow}"
            cells = ["–" if v is None else cell(v, base, decimals) for v in row]
            lines.append(f"| {scenario} | {name} | " + " | ".join(cells) + " |")
    extra = [r for r in results if r["scenario"] == "small_get" and "fixed_rate_target" in r]
    if extra:
        lines.append("")
        lines.append(f"Fixed rate for small_get: {extra[0]['fixed_rate_target']:,} requests/s for every system.")
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
    with open(args.json_out, "w") as out:
        json.dump({"machine": machine_text, "results": results}, out, indent=2)
        out.write("\n")
    with open(args.md_out, "w") as out:
        out.write(markdown(results, args.title, args.note, machine_text))


if __name__ == "__main__":
    main()
