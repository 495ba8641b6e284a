#!/usr/bin/env python3
"""Markdown tables from qaq-eval result files (JSON lines), for docs/results.md.

    python3 scripts/results_table.py results/main-n1000/results.jsonl [more.jsonl ...]

One table per dataset: every evaluation in the files, FP16 first, then by
method and falling compression ratio; accuracy with its 95% interval, the drop
against the FP16 row of the same file and dataset, the right answer's mean
log-probability, average bits, and both compression ratios. Then, per dataset
and method, the highest real-bytes ratio whose accuracy is within one point of
FP16 (the paper's Table 1 criterion).
"""
import json
import sys
from collections import defaultdict


def load(paths):
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                    result, meta, key = record["result"], record["meta"], record["key"]
                except (ValueError, KeyError) as e:
                    sys.exit(f"{path}:{number}: not a qaq-eval result line ({e})")
                dataset = key["dataset"]["name"].split(":")[-1].split("/")[0]
                rows.append(dict(file=path, dataset=dataset, n=key["n"], mode=key.get("mode", "prefill"),
                                 method=meta["method"], label=meta["label"], **result))
    return rows


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    rows = load(sys.argv[1:])
    groups = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["n"], r["mode"])].append(r)
    for (dataset, n, mode), group in sorted(groups.items()):
        base = [r for r in group if r["method"] == "fp16"]
        fp16 = base[0]["accuracy"] if base else None
        print(f"\n**{dataset}**, N = {n}" + ("" if mode == "prefill" else f", {mode} protocol") + "\n")
        print("| method | point | accuracy | drop vs fp16 | answer log-prob | K bits | V bits | ratio (real bytes) | ratio (reference) |")
        print("|---|---|---|---|---|---|---|---|---|")
        order = sorted(group, key=lambda r: (r["method"] != "fp16", r["method"], -r["compression_ratio"]))
        for r in order:
            drop = "" if fp16 is None else f"{100 * (fp16 - r['accuracy']):+.1f}"
            print(f"| {r['method']} | {r['label']} | {r['accuracy']:.3f} ± {r['accuracy_ci95']:.3f} | {drop} | "
                  f"{r['answer_logprob']:.3f} | {r['average_bits_key']:.2f} | {r['average_bits_value']:.2f} | "
                  f"{r['compression_ratio']:.2f} | {r['reference_compression_ratio']:.2f} |")
        if fp16 is None:
            continue
        print("\nHighest real-bytes ratio within one point of fp16:\n")
        for method in sorted({r["method"] for r in group} - {"fp16"}):
            ok = [r for r in group if r["method"] == method and r["accuracy"] >= fp16 - 0.01]
            if ok:
                best = max(ok, key=lambda r: r["compression_ratio"])
                print(f"- {method}: {best['compression_ratio']:.2f}x ({best['label']}, reference {best['reference_compression_ratio']:.2f}x, "
                      f"accuracy {best['accuracy']:.3f})")
            else:
                print(f"- {method}: none")


if __name__ == "__main__":
    main()
