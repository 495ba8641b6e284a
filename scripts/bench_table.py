#!/usr/bin/env python3
"""Turns a qaq-bench JSON result (Google Benchmark's --benchmark_out) into the
Markdown tables of docs/benchmarks.md. Standard library only.

    python3 scripts/bench_table.py results/bench-2024-01-01.json
    python3 scripts/bench_table.py            # the newest results/bench-*.json

With --benchmark_repetitions the median of the repetitions is used (the
aggregates rows); a file without aggregates uses the mean of its runs. Times
are CPU times (less sensitive than wall time to other processes on the
machine); GB/s is 10^9 bytes per second of CPU time, as Google Benchmark
computes bytes_per_second.
"""

import argparse
import glob
import json
import os
import sys
from collections import defaultdict

# The targets docs/benchmarks.md checks (fractions of memcpy bandwidth, time ratio).
QUANTIZE_TARGET = 0.50
DEQUANTIZE_TARGET = 0.70
ATTEND_TARGET = 1.00
ATTEND_AIM = 0.50
WIDTHS = (2, 3, 4, 8)

UNIT_TO_US = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}


def parse_name(run_name):
    """'BM_x/T:1024/D:64' -> ('BM_x', {'T': 1024, 'D': 64})."""
    parts = run_name.split("/")
    args = {}
    for part in parts[1:]:
        key, sep, value = part.partition(":")
        if sep:
            try:
                args[key] = int(value)
            except ValueError:
                args[key] = value
    return parts[0], args


class Result:
    def __init__(self, name, args, entry, cv=None):
        self.name = name
        self.args = args
        self.entry = entry
        self.cv = cv  # coefficient of variation of the CPU time over the repetitions
        self.run_name = entry.get("run_name", entry.get("name"))

    @property
    def time_us(self):
        return self.entry["cpu_time"] * UNIT_TO_US[self.entry.get("time_unit", "ns")]

    @property
    def gbps(self):
        b = self.entry.get("bytes_per_second")
        return None if b is None else b / 1e9

    def counter(self, key, default=None):
        return self.entry.get(key, default)


def load(path):
    with open(path) as f:
        data = json.load(f)
    medians, means, cvs, runs = {}, {}, {}, defaultdict(list)
    for entry in data.get("benchmarks", []):
        if entry.get("error_occurred"):
            continue
        run_name = entry.get("run_name", entry["name"])
        if entry.get("run_type") == "aggregate":
            if entry.get("aggregate_name") == "median":
                medians[run_name] = entry
            elif entry.get("aggregate_name") == "mean":
                means[run_name] = entry
            elif entry.get("aggregate_name") == "cv":
                cvs[run_name] = entry.get("cpu_time")
        else:
            runs[run_name].append(entry)
    results = {}
    for run_name in set(medians) | set(means) | set(runs):
        entry = medians.get(run_name) or means.get(run_name)
        if entry is None:
            group = runs[run_name]
            entry = dict(group[0])
            for key, value in group[0].items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    entry[key] = sum(e.get(key, 0) for e in group) / len(group)
        name, args = parse_name(run_name)
        results[run_name] = Result(name, args, entry, cvs.get(run_name))
    return data.get("context", {}), list(results.values())


def find(results, name, **args):
    for r in results:
        if r.name == name and all(r.args.get(k) == v for k, v in args.items()):
            return r
    return None


def select(results, name):
    return [r for r in results if r.name == name]


def fmt(x, digits=3):
    if x is None:
        return "-"
    if x == 0:
        return "0"
    magnitude = 10 ** (digits - 1)
    if abs(x) >= magnitude:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def fmt_time(us):
    if us is None:
        return "-"
    if us >= 10_000:
        return f"{us / 1000:,.1f} ms"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{fmt(us)} µs"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def context_section(context, path):
    kinds = {"Data": "d", "Instruction": "i"}
    caches = ", ".join(f"L{c['level']}{kinds.get(c['type'], '')} {c['size'] // 1024} KiB"
                       for c in context.get("caches", []))
    rows = [
        ("result file", f"`{os.path.relpath(path)}`"),
        ("date", context.get("date", "-")),
        ("host", context.get("host_name", "-")),
        ("CPU", context.get("cpu_model", "-")),
        ("CPUs / MHz", f"{context.get('num_cpus', '-')} / {context.get('mhz_per_cpu', '-')}"),
        ("caches", caches or "-"),
        ("compiler", context.get("qaq_compiler", "-")),
        ("flags", f"`{context.get('qaq_flags', '-')}` ({context.get('qaq_build_type', '-')}, "
                  f"{context.get('qaq_simd', '-')})"),
        ("qaq", f"{context.get('qaq_version', '-')} at {context.get('git_commit', '-')}"
                + (" + uncommitted changes" if context.get("git_dirty") == "yes" else "")),
        ("load average", ", ".join(f"{x:.2f}" for x in context.get("load_avg", [])) or "-"),
    ]
    return table(["", ""], rows)


def quantize_section(results):
    memcpy = find(results, "BM_memcpy")
    lines = []
    if memcpy is None or memcpy.gbps is None:
        return "No BM_memcpy result: fractions of memcpy bandwidth cannot be computed."
    limit = memcpy.gbps
    lines.append(f"memcpy of the same 16 MiB: **{limit:.2f} GB/s** ({fmt_time(memcpy.time_us)} per copy).")
    lines.append("")
    rows = []
    met_q, met_d, total = 0, 0, 0
    keys = sorted({(r.args.get("D"), r.args.get("bits"), r.args.get("quantile"))
                   for r in results if r.name in ("BM_quantize", "BM_dequantize")})
    for D, bits, quantile in keys:
        q = find(results, "BM_quantize", D=D, bits=bits, quantile=quantile)
        d = find(results, "BM_dequantize", D=D, bits=bits, quantile=quantile)
        fq = q.gbps / limit if q and q.gbps else None
        fd = d.gbps / limit if d and d.gbps else None
        if fq is not None and fd is not None:
            total += 1
            met_q += fq >= QUANTIZE_TARGET
            met_d += fd >= DEQUANTIZE_TARGET
        any_r = q or d
        rows.append([
            D, "2..8 (value_attention)" if quantile == 2 else bits,
            {0: "none", 1: "quantile(0.01)", 2: "quantile(0.01)"}.get(quantile, str(quantile)),
            fmt(any_r.counter("bits_per_element")) if any_r else "-",
            fmt(q.gbps) if q else "-", f"{fq:.0%}" if fq is not None else "-",
            fmt(d.gbps) if d else "-", f"{fd:.0%}" if fd is not None else "-",
        ])
    lines.append(table(["D", "bits", "outliers", "bits/elem", "quantize GB/s", "of memcpy",
                        "dequantize GB/s", "of memcpy"], rows))
    lines.append("")
    lines.append(f"Targets: quantize >= {QUANTIZE_TARGET:.0%} of memcpy met in {met_q}/{total} cases; "
                 f"dequantize >= {DEQUANTIZE_TARGET:.0%} met in {met_d}/{total} cases.")
    return "\n".join(lines)


def attend_section(results):
    keys = sorted({(r.args.get("Hq"), r.args.get("D"), r.args.get("T"))
                   for r in results if r.name.startswith("BM_attend_")})
    rows = []
    checks = []
    for Hq, D, T in keys:
        f32 = find(results, "BM_attend_fp32", T=T, D=D, Hq=Hq)
        f16 = find(results, "BM_attend_fp16", T=T, D=D, Hq=Hq)
        row = [T, D, Hq, fmt_time(f32.time_us) if f32 else "-", fmt_time(f16.time_us) if f16 else "-"]
        for bits in WIDTHS:
            q = find(results, "BM_attend_qaq", T=T, D=D, Hq=Hq, bits=bits)
            if q is None:
                row.append("-")
                continue
            ratio = q.time_us / f32.time_us if f32 else None
            row.append(fmt_time(q.time_us) + (f" ({ratio:.2f}x)" if ratio is not None else ""))
            if bits == 4 and D == 128 and T >= 4096 and Hq == 1 and ratio is not None:
                checks.append((T, ratio))
        rows.append(row)
    lines = [table(["T", "D", "Hq", "fp32", "fp16"] + [f"qaq {b}-bit (/fp32)" for b in WIDTHS], rows), ""]
    if checks:
        met = sum(r <= ATTEND_TARGET for _, r in checks)
        worst = max(r for _, r in checks)
        lines.append(f"Target (4-bit, D = 128, T >= 4096, no slower than FP32): met at {met}/{len(checks)} sizes; "
                     f"qaq/fp32 ranges {min(r for _, r in checks):.2f}x .. {worst:.2f}x "
                     f"(aim {ATTEND_AIM:.1f}x).")
    # Effective read bandwidth and tokens per second at one representative size.
    eff = []
    for bits in WIDTHS:
        for T in sorted({r.args.get("T") for r in select(results, "BM_attend_qaq")}):
            q = find(results, "BM_attend_qaq", T=T, D=128, Hq=1, bits=bits)
            if q is None or T not in (4096, 32768):
                continue
            eff.append([f"qaq {bits}-bit", T, fmt(q.counter("bits_per_element")), fmt(q.counter("bytes_per_call") / 1e6),
                        fmt(q.gbps), fmt(q.counter("tokens_per_second") / 1e6)])
    for name, label in (("BM_attend_fp32", "fp32"), ("BM_attend_fp16", "fp16")):
        for T in (4096, 32768):
            r = find(results, name, T=T, D=128, Hq=1)
            if r is not None:
                eff.append([label, T, "32" if label == "fp32" else "16", fmt(r.counter("bytes_per_call") / 1e6),
                            fmt(r.gbps), fmt(r.counter("tokens_per_second") / 1e6)])
    if eff:
        lines += ["", "Bytes read per call and effective bandwidth (D = 128, one query head):", "",
                  table(["cache", "T", "bits/elem", "MB read per call", "GB/s read", "Mtokens/s"], eff)]
    return "\n".join(lines)


def cache_ops_section(results):
    rows = []
    policies = {0: "fixed 4-bit", 1: "QAQ adaptive 2..8"}
    for r in sorted(select(results, "BM_append"), key=lambda r: (r.args.get("policy"), r.args.get("T"))):
        rows.append(["append (1 token, 8 KV heads)", r.args.get("T"), policies.get(r.args.get("policy"), "?"),
                     fmt_time(r.time_us), f"{fmt(r.counter('tokens_per_second') / 1e3)} k tokens/s",
                     f"{fmt(r.gbps)} GB/s in"])
    for r in sorted(select(results, "BM_rebalance"), key=lambda r: (r.args.get("downgrade"), r.args.get("T"))):
        moved = (r.counter("groups_up_per_call") or 0) + (r.counter("groups_down_per_call") or 0)
        source = "codes" if r.args.get("downgrade") else "host copy"
        rows.append([f"rebalance (down from {source})", r.args.get("T"), policies[1], fmt_time(r.time_us),
                     f"{fmt(moved)} of {fmt(r.counter('groups'))} groups moved",
                     f"{fmt(r.counter('bits_per_element'))} bits/elem"])
    for r in sorted(select(results, "BM_prefill"), key=lambda r: (r.args.get("policy"), r.args.get("T"))):
        rows.append(["prefill (whole cache)", r.args.get("T"), policies.get(r.args.get("policy"), "?"),
                     fmt_time(r.time_us), f"{fmt(r.counter('tokens_per_second') / 1e3)} k tokens/s",
                     f"{fmt(r.gbps)} GB/s in"])
    if not rows:
        return "No cache-operation results."
    return table(["operation", "T", "policy", "time per call", "throughput", ""], rows)


def spread(results, prefixes):
    """One line on how much the repetitions of these benchmarks disagreed."""
    cvs = sorted((r.cv, r.run_name) for r in results if r.cv is not None and r.name.startswith(prefixes))
    if not cvs:
        return ""
    median = cvs[len(cvs) // 2][0]
    worst, name = cvs[-1]
    return (f"\n\nSpread over the repetitions (CPU time): median cv {median:.1%}, "
            f"largest {worst:.1%} (`{name}`).")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json", nargs="?", help="qaq-bench JSON output (default: newest results/bench-*.json)")
    options = parser.parse_args()
    path = options.json
    if path is None:
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "results")
        candidates = sorted(glob.glob(os.path.join(root, "bench-*.json")), key=os.path.getmtime)
        if not candidates:
            sys.exit("bench_table.py: no results/bench-*.json; run scripts/bench.sh first")
        path = candidates[-1]
    context, results = load(path)
    if not results:
        sys.exit(f"bench_table.py: {path} holds no benchmark results")
    sections = [
        ("Machine and build", context_section(context, path)),
        ("Quantize and dequantize (16 MiB float32, head-level groups, single thread)",
         quantize_section(results) + spread(results, ("BM_quantize", "BM_dequantize", "BM_memcpy"))),
        ("Attention over the cache, one decode step (time per call, single thread)",
         attend_section(results) + spread(results, ("BM_attend_",))),
        ("Cache operations (1 layer, 8 KV heads, 32 query heads, D = 128)",
         cache_ops_section(results) + spread(results, ("BM_append", "BM_rebalance", "BM_prefill"))),
    ]
    print("\n\n".join(f"### {title}\n\n{body}" for title, body in sections))


if __name__ == "__main__":
    main()
