#!/usr/bin/env python3
"""Checks `qaq-quantize --reference` against the numpy port of the original QAQ.

    python3 tests/oracle/check_cli.py --binary build/examples/quantize/qaq-quantize \
        --workdir /tmp/qaq-oracle [--cases 200] [--seed 1] [--case K] [--keep]

Generates random cases (deterministic from the seed; case K depends only on
(seed, K), so `--case K` reproduces one), writes input.npy / attention.npy,
runs the binary, and compares with original_qaq.quantize:

* bits and the outlier mask: exactly equal;
* dequantized values: per element within max(4 ulp of max(|x|, |centre|), 1e-5 * |scale|),
  where scale is the group's step (uniform) or std (normal). A value off by exactly
  one code (a round-half tie decided the other way) is reported; the case fails if
  any value is off by more than one code, or if more than 0.1% of the elements are
  outside the tolerance;
* summary.json "average_bits_reference": within 1e-5.

Exit status 0 with "N cases passed", 1 when a case fails (one line per failing
case with its parameters and first mismatches), 2 on usage errors.
Only numpy and the standard library are used.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from original_qaq import Params, quantize  # noqa: E402

F32 = np.float32
HEAD_DIMS = (1, 2, 3, 8, 16, 64)
OUTLIER_RATIOS = (0.0, 0.01, 0.05, 0.2)
DISTRIBUTIONS = ("normal", "student_t2", "lognormal", "mixed")


# ---------------------------------------------------------------------------
# Case generation
# ---------------------------------------------------------------------------

def log_uniform(rng, lo, hi):
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def exact_float(x):
    """The double the command line will carry (repr round-trips exactly)."""
    return float(repr(float(x)))


def make_cache(rng, shape):
    layers, batch, heads, tokens, dims = shape
    kind = DISTRIBUTIONS[rng.integers(len(DISTRIBUTIONS))]
    if kind == "normal":
        data = rng.normal(rng.uniform(-1, 1), rng.uniform(0.1, 3), size=shape)
    elif kind == "student_t2":
        data = rng.standard_t(2, size=shape) * rng.uniform(0.1, 2)
    elif kind == "lognormal":
        data = rng.lognormal(0.0, rng.uniform(0.3, 1.2), size=shape) * rng.choice([-1.0, 1.0])
    else:  # a different distribution per head, like real caches
        data = np.empty(shape)
        for h in range(heads):
            which = rng.integers(3)
            sub = (layers, batch, tokens, dims)
            data[:, :, h] = (rng.normal(0, 1, sub), rng.standard_t(2, sub), rng.lognormal(0, 1, sub))[which]
    data = data.astype(F32)
    flat = data.reshape(-1)
    # A few exact duplicates.
    if flat.size > 1:
        count = int(rng.integers(0, max(1, flat.size // 20) + 1))
        src = rng.integers(0, flat.size, count)
        dst = rng.integers(0, flat.size, count)
        flat[dst] = flat[src]
    # An occasional constant group: one head of one token, or a whole token.
    if rng.random() < 0.3:
        l, b, h, t = (int(rng.integers(n)) for n in (layers, batch, heads, tokens))
        value = F32(rng.normal()) if rng.random() < 0.8 else F32(0)
        if rng.random() < 0.5:
            data[l, b, h, t, :] = value
        else:
            data[:, b, :, t, :] = value
    return data


def make_attention(rng, layers, batch, query_heads, tokens):
    rows = int(rng.integers(1, tokens + 1))
    # Sharp softmaxes make some probabilities underflow to exactly 0 in float32.
    temperature = float(rng.choice([0.5, 2.0, 8.0, 60.0]))
    logits = rng.normal(size=(layers, batch, query_heads, rows, tokens)) * temperature
    positions = np.arange(tokens - rows, tokens)  # query position of each row
    causal = np.arange(tokens)[None, :] <= positions[:, None]  # [rows, T]
    logits = np.where(causal, logits, -np.inf)
    logits -= logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    return (weights / weights.sum(axis=-1, keepdims=True)).astype(F32)


def make_case(seed, index):
    rng = np.random.default_rng([seed, index])
    layers = int(rng.integers(1, 4))
    batch = int(rng.integers(1, 3))
    heads = int(rng.integers(1, 5))
    tokens = int(rng.integers(1, 41))
    dims = int(rng.choice(HEAD_DIMS))
    query_heads = heads * int(rng.choice([1, 2, 4]))
    cache = make_cache(rng, (layers, batch, heads, tokens, dims))
    attention = make_attention(rng, layers, batch, query_heads, tokens)

    p = Params()
    p.cache = str(rng.choice(["key", "value"]))
    p.level = str(rng.choice(["token", "layer", "head"]))
    p.symmetric = bool(rng.integers(2))
    p.outliers_ratio = float(rng.choice(OUTLIER_RATIOS))
    p.attention_aware = bool(rng.integers(2))
    if p.attention_aware:
        p.method = "uniform"  # the original raised NotImplementedError for normal
        p.last_n = int(rng.integers(1, 7))
        p.target_error = exact_float(log_uniform(rng, 1e-3, 1.0))
        p.bits_min = int(rng.integers(0, 5))
        p.bits_max = int(rng.integers(p.bits_min, 9))
        if p.cache == "key":
            p.q_norm = exact_float(log_uniform(rng, 0.1, 100.0))
    else:
        p.method = str(rng.choice(["uniform", "normal"]))
        p.bits = int(rng.integers(0, 9))
    return cache, attention, p


def command_line(binary, case_dir, out_dir, p):
    cmd = [binary, "--input", os.path.join(case_dir, "input.npy"),
           "--attention", os.path.join(case_dir, "attention.npy"),
           "--cache", p.cache, "--level", p.level]
    if p.symmetric:
        cmd.append("--symmetric")
    cmd += ["--method", p.method, "--outliers-ratio", repr(p.outliers_ratio)]
    if p.attention_aware:
        cmd += ["--attention-aware", "--last-n", str(p.last_n), "--target-error", repr(p.target_error),
                "--bits-min", str(p.bits_min), "--bits-max", str(p.bits_max)]
        if p.cache == "key":
            cmd += ["--q-norm", repr(p.q_norm)]
    else:
        cmd += ["--bits", str(p.bits)]
    cmd += ["--reference", "--output", out_dir]
    return cmd


def describe(p, cache, attention):
    text = (f"shape={list(cache.shape)} Hq={attention.shape[2]} R={attention.shape[3]} cache={p.cache} "
            f"level={p.level} symmetric={p.symmetric} method={p.method} a={p.outliers_ratio}")
    if p.attention_aware:
        text += (f" attention-aware last_n={p.last_n} eps={p.target_error!r} bits={p.bits_min}..{p.bits_max}")
        if p.cache == "key":
            text += f" q_norm={p.q_norm!r}"
    else:
        text += f" bits={p.bits}"
    return text


# ---------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------

def first_indices(mask, limit=3):
    return [tuple(int(i) for i in idx) for idx in np.argwhere(mask)[:limit]]


def compare(result, out_dir):
    """Returns (problems: list[str], notes: list[str]) for one case."""
    problems, notes = [], []

    def load(name):
        path = os.path.join(out_dir, name)
        if not os.path.exists(path):
            problems.append(f"{name} missing")
            return None
        try:
            return np.load(path, allow_pickle=False)
        except Exception as exc:  # a malformed file is a failure of the binary
            problems.append(f"{name} unreadable: {exc}")
            return None

    deq, bits, outliers = load("dequantized.npy"), load("bits.npy"), load("outliers.npy")
    summary = None
    summary_path = os.path.join(out_dir, "summary.json")
    try:
        with open(summary_path) as f:
            summary = json.load(f)
    except (OSError, ValueError) as exc:
        problems.append(f"summary.json unreadable: {exc}")

    if bits is not None:
        if bits.dtype != np.int64 or bits.shape != result.bits.shape:
            problems.append(f"bits.npy is {bits.dtype}{list(bits.shape)}, expected int64{list(result.bits.shape)}")
        elif not np.array_equal(bits, result.bits):
            bad = bits != result.bits
            where = first_indices(bad)
            problems.append(f"bits differ in {int(bad.sum())}/{bad.size} groups, first at {where}: "
                            f"got {[int(bits[w]) for w in where]}, expected {[int(result.bits[w]) for w in where]}")

    if outliers is not None:
        if outliers.dtype != np.bool_ or outliers.shape != result.outliers.shape:
            problems.append(f"outliers.npy is {outliers.dtype}{list(outliers.shape)}, "
                            f"expected bool{list(result.outliers.shape)}")
        elif not np.array_equal(outliers, result.outliers):
            bad = outliers != result.outliers
            problems.append(f"outlier mask differs at {int(bad.sum())} elements, first at {first_indices(bad)}")

    if deq is not None:
        if deq.dtype != np.float32 or deq.shape != result.dequantized.shape:
            problems.append(f"dequantized.npy is {deq.dtype}{list(deq.shape)}, "
                            f"expected float32{list(result.dequantized.shape)}")
        else:
            expected = result.dequantized
            both_nan = np.isnan(deq) & np.isnan(expected)
            with np.errstate(invalid="ignore", over="ignore"):
                diff = np.abs(deq.astype(np.float64) - expected.astype(np.float64))
            diff[both_nan] = 0.0
            diff[np.isnan(diff)] = np.inf
            magnitude = np.maximum(np.abs(expected), np.abs(result.centre)).astype(F32)
            ulp = np.spacing(magnitude).astype(np.float64)
            tolerance = np.maximum(4 * ulp, 1e-5 * np.abs(result.scale.astype(np.float64)))
            outside = diff > tolerance
            one_code = outside & (diff <= result.code_step.astype(np.float64) + tolerance)
            beyond = outside & ~one_code
            allowed = int(0.001 * deq.size)
            if beyond.any():
                where = first_indices(beyond)
                problems.append(
                    f"dequantized differs by more than one code at {int(beyond.sum())}/{deq.size} elements, "
                    f"first at {where}: got {[float(deq[w]) for w in where]}, "
                    f"expected {[float(expected[w]) for w in where]}")
            if outside.sum() > allowed:
                problems.append(f"{int(outside.sum())}/{deq.size} dequantized values outside the tolerance "
                                f"(at most {allowed} allowed), first at {first_indices(outside)}")
            elif one_code.any():
                where = first_indices(one_code)
                notes.append(f"{int(one_code.sum())} single-code difference(s) (round-half ties?) at {where}")

    if summary is not None:
        value = summary.get("average_bits_reference") if isinstance(summary, dict) else None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            problems.append("summary.json lacks a numeric \"average_bits_reference\"")
        elif not abs(value - result.average_bits) <= 1e-5:
            problems.append(f"average_bits_reference {value!r}, expected {result.average_bits!r}")
    return problems, notes


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def run_case(binary, workdir, seed, index, keep, timeout):
    cache, attention, p = make_case(seed, index)
    case_dir = os.path.join(workdir, f"case_{index:04d}")
    out_dir = os.path.join(case_dir, "out")
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    np.save(os.path.join(case_dir, "input.npy"), cache)
    np.save(os.path.join(case_dir, "attention.npy"), attention)
    cmd = command_line(binary, case_dir, out_dir, p)
    with open(os.path.join(case_dir, "command.txt"), "w") as f:
        f.write(" ".join(cmd) + "\n")
    result = quantize(cache, attention, p)

    problems, notes = [], []
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        problems.append(f"timed out after {timeout} s")
    except OSError as exc:
        problems.append(f"cannot run the binary: {exc}")
    else:
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            problems.append(f"exit status {proc.returncode}: {' | '.join(tail)}")
        else:
            problems, notes = compare(result, out_dir)
    if not problems and not keep:
        shutil.rmtree(case_dir, ignore_errors=True)
    return describe(p, cache, attention), problems, notes, case_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", required=True, help="path of qaq-quantize")
    parser.add_argument("--workdir", required=True, help="where cases are written (failing ones are kept)")
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--case", type=int, help="run only this case index")
    parser.add_argument("--keep", action="store_true", help="keep the files of passing cases too")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per binary run")
    parser.add_argument("--verbose", action="store_true", help="one line per case")
    args = parser.parse_args(argv)
    if args.cases < 0 or args.seed < 0:
        parser.error("--cases and --seed must be non-negative")
    binary = os.path.abspath(args.binary) if os.path.sep in args.binary else args.binary
    if shutil.which(binary) is None:
        print(f"check_cli: {args.binary} is not an executable file", file=sys.stderr)
        return 2
    os.makedirs(args.workdir, exist_ok=True)

    indices = [args.case] if args.case is not None else range(args.cases)
    failed = 0
    single_code_cases = 0
    for index in indices:
        description, problems, notes, case_dir = run_case(binary, args.workdir, args.seed, index, args.keep,
                                                          args.timeout)
        if problems:
            failed += 1
            print(f"FAIL case {index} (seed {args.seed}, files in {case_dir}): {description}: "
                  + "; ".join(problems))
        elif notes:
            single_code_cases += 1
            print(f"note case {index}: {description}: " + "; ".join(notes))
        elif args.verbose:
            print(f"ok   case {index}: {description}")
    total = len(indices)
    if failed:
        print(f"{failed} of {total} cases failed (seed {args.seed}; rerun one with --case K)")
        return 1
    extra = f" ({single_code_cases} with single-code differences)" if single_code_cases else ""
    print(f"{total} cases passed{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
