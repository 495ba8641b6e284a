#!/usr/bin/env python3
"""Independent numpy port of the original QAQ `Quantizer.quantize`.

The original implementation (Dong et al., "QAQ: Quality Adaptive Quantization
for LLM KV Cache", arXiv 2403.04643; Python/PyTorch) quantizes a key or value
cache after one prefill. This module reproduces it in its reference
configuration exactly as docs/method.md specifies, with numpy only, so the C++
library can be checked against a second implementation that shares no code
with it:

* levels token / layer / head (not sub_head);
* codecs "uniform" (the reference mean-centred min-max codec) and "normal";
* symmetric or asymmetric; outlier ratio a (quantile policy);
* fixed bits, or attention-aware bits: value cache from the attention window,
  key cache from the q_norm formula; the last n - 1 tokens get bits_max;
  T = 1 keys get bits_max;
* grouped-query attention: query head q reads KV head q // (Hq // H).

All arithmetic is float32 where the original used float32 tensors, double
where method.md says double. Parameters are kept in fp32 (the original's
storage; no fp16 rounding of scales or outliers).

Where method.md departs from the original code, method.md wins (it is the
contract the C++ reference implements):
  - non-finite values are always outliers (the original produced NaN);
  - a group whose values are all outliers is stored exactly (the original crashed);
  - B = 0 reconstructs every non-outlier at the codec centre;
  - a constant group (scale 0) reconstructs at the centre (the original divided by 0);
  - the mean and std accumulate in double (the original: float32 masked reductions,
    except the asymmetric std);
  - the average bits use 16 for outliers whatever the dtype.

Cache  [layers L, batch B, heads H, tokens T, head_dim D] float32.
Attention [L, B, query_heads Hq, rows R, T] float32 (needed for value bits).

Also a command line mirroring `qaq-quantize --reference` (see `main`).
"""

import argparse
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field

import numpy as np

F32 = np.float32
LEVELS = ("token", "layer", "head")
METHODS = ("uniform", "normal")


@dataclass
class Params:
    cache: str = "value"  # "key" or "value"
    level: str = "head"  # token | layer | head
    symmetric: bool = False
    method: str = "uniform"  # uniform | normal
    outliers_ratio: float = 0.0
    bits: int = 4  # fixed bits (used when attention_aware is False)
    attention_aware: bool = False
    last_n: int = 1
    target_error: float = 0.1
    bits_min: int = 0
    bits_max: int = 8
    q_norm: float = 1.0

    def validate(self):
        assert self.cache in ("key", "value"), self.cache
        assert self.level in LEVELS, self.level
        assert self.method in METHODS, self.method
        assert 0.0 <= self.outliers_ratio < 1.0, self.outliers_ratio
        if self.attention_aware:
            if self.method == "normal":
                # The original raised NotImplementedError here.
                raise NotImplementedError("attention-aware bits with the normal codec")
            assert self.last_n >= 1
            assert self.target_error > 0.0
            assert 0 <= self.bits_min <= self.bits_max <= 16
            if self.cache == "key":
                assert self.q_norm > 0.0
        else:
            assert 0 <= self.bits <= 16


@dataclass
class Result:
    dequantized: np.ndarray  # float32, cache shape
    bits: np.ndarray  # int64, [B,T] / [B,T,L] / [B,T,L,H]
    outliers: np.ndarray  # bool, cache shape
    average_bits: float  # mean(bits) * (1 - a) + 16 * a
    # Per element, for comparisons: the group's scale s (0 where no code is
    # stored: outliers, B = 0, s = 0), the group's centre c, and the largest
    # distance from the reconstruction to a neighbouring code's reconstruction.
    scale: np.ndarray = field(default=None)
    centre: np.ndarray = field(default=None)
    code_step: np.ndarray = field(default=None)


# ---------------------------------------------------------------------------
# Building blocks (each one is exercised on its own by test_original_qaq.py)
# ---------------------------------------------------------------------------

def outlier_mask(values, ratio):
    """Outliers of one group (1-D float32), quantile policy of method.md.

    k_lo = ceil((a / 2) * N), k_hi = floor((1 - a / 2) * N) over the N finite
    values; lo / hi the k-th smallest (1-based), hi = -inf when k_hi == 0;
    x is an outlier iff x <= lo or x > hi. Non-finite values always are.
    """
    values = np.asarray(values, dtype=F32)
    finite = np.isfinite(values)
    mask = ~finite
    if ratio == 0.0:
        return mask
    finite_values = values[finite]
    n = finite_values.size
    if n == 0:
        return mask
    k_lo = math.ceil((ratio / 2) * n)
    k_hi = math.floor((1 - ratio / 2) * n)
    ordered = np.sort(finite_values, kind="stable")
    lo = ordered[k_lo - 1]
    hi = ordered[k_hi - 1] if k_hi >= 1 else F32(-np.inf)
    return mask | (finite & ((values <= lo) | (values > hi)))


def group_statistics(values, mask):
    """min, max, absmax (float32), mean and sample std (double sums -> float32), count."""
    kept = np.asarray(values, dtype=F32)[~mask]
    count = kept.size
    if count == 0:
        return dict(count=0, min=F32(0), max=F32(0), absmax=F32(0), mean=F32(0), std=F32(0))
    as_double = kept.astype(np.float64)
    mean = F32(math.fsum(as_double) / count)
    std = F32(np.std(as_double, ddof=1)) if count >= 2 else F32(0)
    return dict(count=count, min=kept.min(), max=kept.max(), absmax=np.abs(kept).max(), mean=mean, std=std)


def group_range(stats, symmetric):
    """R = max - min (asymmetric) or 2 * absmax (symmetric), float32; 0 without non-outliers."""
    if stats["count"] == 0:
        return F32(0)
    if symmetric:
        return F32(F32(2) * stats["absmax"])
    return F32(stats["max"] - stats["min"])


def log2_f32(x):
    """float32 log2, correctly rounded (through double) so ceil() sees the true value's side."""
    return F32(np.log2(np.float64(x)))


def bits_from_error(r, two_e, bits_min, bits_max):
    """clamp(ceil(log2(R / (2E) + 1)), bits_min, bits_max) in float32."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = F32(F32(r) / F32(two_e))
        exponent = float(log2_f32(F32(ratio + F32(1))))
    if not math.isfinite(exponent):
        return bits_max
    b = math.ceil(exponent)
    return min(max(b, bits_min), bits_max)


def value_error_bound(tokens, target_error, attention):
    """E = (1 / A) * float32(sqrt(12 / T) * eps [double]) in float32 (A = 0 gives +inf).

    The original writes `python_float / tensor`, which PyTorch evaluates as
    `tensor.reciprocal() * python_float`."""
    numerator = F32(math.sqrt(12.0 / tokens) * target_error)
    with np.errstate(divide="ignore", over="ignore"):
        return F32(F32(F32(1.0) / F32(attention)) * numerator)


def key_error_bound_2e(tokens, target_error, q_norm):
    """float32(2 * E), E = sqrt(12 / qn * ln(T^3 / (T - 1) * eps^2 + 1)) in double; T >= 2."""
    e = math.sqrt(12.0 / q_norm * math.log(tokens**3 / (tokens - 1) * target_error**2 + 1))
    return F32(2 * e)


def predicted_attention(attention, heads, last_n):
    """P[b, t, l, h] = max over the last n rows and the query heads of KV head h."""
    attention = np.asarray(attention, dtype=F32)
    layers, batch, query_heads, rows, tokens = attention.shape
    assert query_heads % heads == 0, "query heads must be a multiple of the cache heads"
    window = attention[:, :, :, max(0, rows - last_n):, :]
    per_query_head = window.max(axis=3)  # [L, B, Hq, T]
    per_kv_head = per_query_head.reshape(layers, batch, heads, query_heads // heads, tokens).max(axis=3)
    return per_kv_head.transpose(1, 3, 0, 2)  # [B, T, L, H]


def normal_tables(bits):
    """float32 upper bounds Phi^-1((i+1)/2^B) (last +inf) and centres Phi^-1((i+0.5)/2^B)."""
    n = 2**bits
    nd = statistics.NormalDist()
    upper = [nd.inv_cdf((i + 1) / n) if i + 1 < n else math.inf for i in range(n)]
    centre = [nd.inv_cdf((i + 0.5) / n) for i in range(n)]
    return np.array(upper, dtype=np.float64).astype(F32), np.array(centre, dtype=np.float64).astype(F32)


def encode_group(values, mask, stats, bits, symmetric, method):
    """Reconstruction of one group (float32) plus per-element scale, centre and code step."""
    values = np.asarray(values, dtype=F32)
    out = values.copy()
    size = values.size
    scale = np.zeros(size, dtype=F32)
    centre = np.zeros(size, dtype=F32)
    step = np.zeros(size, dtype=F32)
    kept = ~mask
    if stats["count"] == 0:
        return out, scale, centre, step  # every value is an outlier: stored exactly
    if method == "uniform":
        c = F32(0) if symmetric else stats["mean"]
        s = F32(group_range(stats, symmetric) / F32(2.0**bits))
        centre[:] = c
        if bits == 0:
            # torch.clamp(int codes, -0.5, -0.5) promotes to float: x' = -0.5 * s + c, s = R.
            out[kept] = F32(F32(-0.5) * s) + c
            scale[kept] = s
            return out, scale, centre, step
        if s == 0:
            out[kept] = c
            return out, scale, centre, step
        with np.errstate(over="ignore"):
            z = ((values[kept] - c) / s).astype(F32)
        q = np.clip(np.rint(z), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1).astype(F32)
        out[kept] = (q * s).astype(F32) + c
        scale[kept] = s
        step[kept] = s
        return out, scale, centre, step
    # normal
    c = F32(0) if symmetric else stats["mean"]
    s = stats["std"]
    centre[:] = c
    if bits == 0 or s == 0:
        out[kept] = c
        return out, scale, centre, step
    upper, mid = normal_tables(bits)
    with np.errstate(over="ignore"):
        z = ((values[kept] - c) / s).astype(F32)
    index = np.searchsorted(upper, z, side="left")
    out[kept] = (mid[index] * s).astype(F32) + c
    gaps = np.diff(mid.astype(np.float64))
    below = np.where(index > 0, gaps[np.maximum(index - 1, 0)], 0.0)
    above = np.where(index < mid.size - 1, gaps[np.minimum(index, gaps.size - 1)], 0.0)
    scale[kept] = s
    step[kept] = (np.maximum(below, above) * s).astype(F32)
    return out, scale, centre, step


# ---------------------------------------------------------------------------
# Quantizer.quantize
# ---------------------------------------------------------------------------

def group_shape(level, layers, batch, heads, tokens):
    return {"token": (batch, tokens), "layer": (batch, tokens, layers), "head": (batch, tokens, layers, heads)}[level]


def quantize(cache, attention, params):
    """Quantize-dequantize one cache like the original `Quantizer.quantize`."""
    params.validate()
    cache = np.asarray(cache, dtype=F32)
    assert cache.ndim == 5, "cache must be [layers, batch, heads, tokens, head_dim]"
    layers, batch, heads, tokens, dims = cache.shape
    shape = group_shape(params.level, layers, batch, heads, tokens)
    # The original permutes to [B, T, L, H, D]; a group is the trailing dims.
    n_groups = int(np.prod(shape))
    group_size = cache.size // n_groups if n_groups else 0
    grouped = np.ascontiguousarray(cache.transpose(1, 3, 0, 2, 4)).reshape(n_groups, group_size)

    masks = np.zeros(grouped.shape, dtype=bool)
    stats = []
    ranges = np.zeros(n_groups, dtype=F32)
    for g in range(n_groups):
        masks[g] = outlier_mask(grouped[g], params.outliers_ratio)
        stats.append(group_statistics(grouped[g], masks[g]))
        ranges[g] = group_range(stats[g], params.symmetric)

    bits = np.zeros(n_groups, dtype=np.int64)
    if not params.attention_aware:
        bits[:] = params.bits
    else:
        if params.cache == "value":
            assert attention is not None, "value bits need the attention probabilities"
            attention = np.asarray(attention, dtype=F32)
            assert attention.ndim == 5 and attention.shape[0] == layers and attention.shape[1] == batch \
                and attention.shape[4] == tokens, "attention must be [L, B, Hq, R, T] matching the cache"
            p = predicted_attention(attention, heads, params.last_n)  # [B, T, L, H]
            if params.level == "token":
                a = p.max(axis=(2, 3))
            elif params.level == "layer":
                a = p.max(axis=3)
            else:
                a = p
            a = a.reshape(-1)
            for g in range(n_groups):
                e = value_error_bound(tokens, params.target_error, a[g])
                with np.errstate(over="ignore"):
                    two_e = F32(F32(2) * e)
                bits[g] = bits_from_error(ranges[g], two_e, params.bits_min, params.bits_max)
        else:
            if tokens == 1:
                bits[:] = params.bits_max  # the key formula divides by T - 1
            else:
                two_e = key_error_bound_2e(tokens, params.target_error, params.q_norm)
                for g in range(n_groups):
                    bits[g] = bits_from_error(ranges[g], two_e, params.bits_min, params.bits_max)
        # The last n - 1 tokens have no full attention window.
        if params.last_n > 1:
            by_token = bits.reshape(shape)
            by_token[:, max(0, tokens - (params.last_n - 1)):] = params.bits_max

    out = np.empty_like(grouped)
    scale = np.zeros_like(grouped)
    centre = np.zeros_like(grouped)
    step = np.zeros_like(grouped)
    for g in range(n_groups):
        out[g], scale[g], centre[g], step[g] = encode_group(
            grouped[g], masks[g], stats[g], int(bits[g]), params.symmetric, params.method)

    def back(a):  # [groups, G] -> [L, B, H, T, D]
        return np.ascontiguousarray(a.reshape(batch, tokens, layers, heads, dims).transpose(2, 0, 3, 1, 4))

    a = params.outliers_ratio
    average = float(np.mean(bits.astype(np.float64))) * (1 - a) + 16 * a if n_groups else 16 * a
    return Result(dequantized=back(out), bits=bits.reshape(shape), outliers=back(masks), average_bits=average,
                  scale=back(scale), centre=back(centre), code_step=back(step))


# ---------------------------------------------------------------------------
# Command line: the reference mode of qaq-quantize, in Python.
# ---------------------------------------------------------------------------

def build_arg_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True)
    p.add_argument("--attention")
    p.add_argument("--cache", choices=("key", "value"), required=True)
    p.add_argument("--level", choices=LEVELS, required=True)
    p.add_argument("--symmetric", action="store_true")
    p.add_argument("--method", choices=METHODS, default="uniform")
    p.add_argument("--outliers-ratio", type=float, default=0.0)
    p.add_argument("--bits", type=int)
    p.add_argument("--attention-aware", action="store_true")
    p.add_argument("--last-n", type=int, default=1)
    p.add_argument("--target-error", type=float)
    p.add_argument("--bits-min", type=int)
    p.add_argument("--bits-max", type=int)
    p.add_argument("--q-norm", type=float)
    p.add_argument("--reference", action="store_true", help="accepted for compatibility; always on")
    p.add_argument("--output", required=True)
    return p


def params_from_args(args):
    if args.attention_aware:
        return Params(cache=args.cache, level=args.level, symmetric=args.symmetric, method=args.method,
                      outliers_ratio=args.outliers_ratio, attention_aware=True, last_n=args.last_n,
                      target_error=args.target_error, bits_min=args.bits_min, bits_max=args.bits_max,
                      q_norm=args.q_norm if args.q_norm is not None else 1.0)
    return Params(cache=args.cache, level=args.level, symmetric=args.symmetric, method=args.method,
                  outliers_ratio=args.outliers_ratio, bits=args.bits)


def write_outputs(directory, result):
    os.makedirs(directory, exist_ok=True)
    np.save(os.path.join(directory, "dequantized.npy"), result.dequantized.astype(F32))
    np.save(os.path.join(directory, "bits.npy"), result.bits.astype(np.int64))
    np.save(os.path.join(directory, "outliers.npy"), result.outliers.astype(bool))
    with open(os.path.join(directory, "summary.json"), "w") as f:
        json.dump({"average_bits_reference": result.average_bits}, f)


def main(argv=None):
    args = build_arg_parser().parse_args(argv)
    cache = np.load(args.input)
    attention = np.load(args.attention) if args.attention else None
    result = quantize(cache, attention, params_from_args(args))
    write_outputs(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
