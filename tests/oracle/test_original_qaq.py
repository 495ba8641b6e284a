#!/usr/bin/env python3
"""Self-test of the oracle: tiny tensors whose results were worked out by hand.

Run: python3 tests/oracle/test_original_qaq.py   (plain asserts, numpy only)

Every expected value below is derived in the comments from docs/method.md, not
from running the oracle, so the oracle is checked independently of itself.
"""

import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from original_qaq import Params, outlier_mask, predicted_attention, quantize  # noqa: E402

F32 = np.float32


def one_group(values):
    """A [1, 1, 1, 1, D] cache: one head-level group of D values."""
    return np.array(values, dtype=F32).reshape(1, 1, 1, 1, -1)


def assert_exact(actual, expected):
    actual = np.asarray(actual).ravel()
    expected = np.asarray(expected, dtype=actual.dtype).ravel()
    assert actual.shape == expected.shape and np.array_equal(actual, expected), (actual, expected)


def test_uniform_asymmetric():
    # [0, 1, 2, 5], B = 2: min 0, max 5, mean 8/4 = 2 -> c = 2, s = (5 - 0) / 2^2 = 1.25.
    # z = (x - 2) / 1.25 = [-1.6, -0.8, 0, 2.4]; rint -> [-2, -1, 0, 2];
    # clamp to [-2, 1] -> [-2, -1, 0, 1] (5 clips at the top code: the reference's skew clipping);
    # x' = q * 1.25 + 2 = [-0.5, 0.75, 2, 3.25].
    r = quantize(one_group([0, 1, 2, 5]), None, Params(level="head", bits=2))
    assert_exact(r.dequantized, [-0.5, 0.75, 2.0, 3.25])
    assert r.bits.shape == (1, 1, 1, 1) and r.bits.dtype == np.int64 and r.bits.item() == 2
    assert not r.outliers.any()
    assert r.average_bits == 2.0


def test_uniform_symmetric():
    # Symmetric: c = 0, s = 2 * max|x| / 2^2 = 10 / 4 = 2.5.
    # z = [0, 0.4, 0.8, 2] -> rint [0, 0, 1, 2] -> clamp [-2, 1] -> [0, 0, 1, 1]; x' = [0, 0, 2.5, 2.5].
    r = quantize(one_group([0, 1, 2, 5]), None, Params(symmetric=True, bits=2))
    assert_exact(r.dequantized, [0.0, 0.0, 2.5, 2.5])


def test_round_half_to_even():
    # [0, 1, 3, 4], B = 1: mean 2, s = 4 / 2 = 2, z = [-1, -0.5, 0.5, 1].
    # Half-to-even: rint(-0.5) = -0, rint(0.5) = 0 -> q = [-1, 0, 0, 1] -> clamp [-1, 0] -> [-1, 0, 0, 0];
    # x' = [0, 2, 2, 2]. (Half-away-from-zero would give q[1] = -1 and x'[1] = 0.)
    r = quantize(one_group([0, 1, 3, 4]), None, Params(bits=1))
    assert_exact(r.dequantized, [0.0, 2.0, 2.0, 2.0])


def test_zero_bits_and_constant_groups():
    # B = 0: torch.clamp(codes, -0.5, -0.5) promotes the codes to float, so x' = -0.5 * s + c with
    # s = R / 2^0: asymmetric mean 2, R = 5 -> -0.5; symmetric c = 0, s = 2 * 5 = 10 -> -5.
    assert_exact(quantize(one_group([0, 1, 2, 5]), None, Params(bits=0)).dequantized, [-0.5] * 4)
    assert_exact(quantize(one_group([0, 1, 2, 5]), None, Params(bits=0, symmetric=True)).dequantized, [-5] * 4)
    # Constant group, no outliers: s = 0, reconstructed at the centre = the constant itself.
    assert_exact(quantize(one_group([1.5] * 4), None, Params(bits=3)).dequantized, [1.5] * 4)
    # Constant group with outliers: every value is <= lo = 1.5, so all are outliers, stored exactly.
    r = quantize(one_group([1.5] * 4), None, Params(bits=3, outliers_ratio=0.2))
    assert r.outliers.all()
    assert_exact(r.dequantized, [1.5] * 4)


def test_normal_codec():
    # [0, 1, 2, 5], B = 1: mean 2, sample std sqrt((4 + 1 + 0 + 9) / 3) = sqrt(14/3) = 2.160246899...
    # Upper bounds: [Phi^-1(1/2) = 0, +inf]; centres: Phi^-1(1/4) = -0.674489750..., Phi^-1(3/4) = +0.674489750...
    # z = (x - 2) / 2.1602 = [-0.926, -0.463, 0, 1.389]; first bound >= z: [0, 0, 0 (0 <= 0: side left), 1].
    # x' = 2 -+ 0.6744897 * 2.1602469 = 2 -+ 1.4570643 -> [0.5429357, 0.5429357, 0.5429357, 3.4570643].
    r = quantize(one_group([0, 1, 2, 5]), None, Params(bits=1, method="normal"))
    delta = 0.6744897501960817 * math.sqrt(14 / 3)
    expected = np.array([2 - delta, 2 - delta, 2 - delta, 2 + delta])
    assert np.allclose(r.dequantized.ravel(), expected, rtol=0, atol=1e-6), r.dequantized.ravel()
    # Symmetric: c = 0, s = the same std (around the mean). z = x / 2.1602 = [0, 0.463, 0.926, 2.315]
    # -> codes [0, 1, 1, 1] -> x' = [-1.4570643, 1.4570643, 1.4570643, 1.4570643].
    r = quantize(one_group([0, 1, 2, 5]), None, Params(bits=1, method="normal", symmetric=True))
    assert np.allclose(r.dequantized.ravel(), [-delta, delta, delta, delta], rtol=0, atol=1e-6)


def test_outlier_thresholds():
    # N = 10, a = 0.2: k_lo = ceil(0.1 * 10) = 1, k_hi = floor(0.9 * 10) = 9.
    # Values are a permutation of 0..9: lo = 1st smallest = 0, hi = 9th smallest = 8.
    # Outliers: x <= 0 (the 0 at index 5) and x > 8 (the 9 at index 2).
    values = np.array([5, 3, 9, 1, 7, 0, 8, 2, 6, 4], dtype=F32)
    assert_exact(outlier_mask(values, 0.2), [0, 0, 1, 0, 0, 1, 0, 0, 0, 0])
    # Duplicates of the minimum are all outliers (x <= lo).
    assert_exact(outlier_mask(np.array([0, 0, 1, 2, 3, 4, 5, 6, 7, 8], F32), 0.2), [1, 1] + [0] * 7 + [1])
    # N = 4, a = 0.2: k_lo = ceil(0.4) = 1 -> lo = 10; k_hi = floor(3.6) = 3 -> hi = 30: 10 and 40.
    assert_exact(outlier_mask(np.array([10, 20, 30, 40], F32), 0.2), [1, 0, 0, 1])
    # N = 4, a = 0.01: k_hi = floor(0.995 * 4) = 3 -> hi = 30 -> 40 is an outlier; lo = 10.
    assert_exact(outlier_mask(np.array([40, 30, 20, 10], F32), 0.01), [1, 0, 0, 1])
    # N = 10, a = 0.01: k_hi = floor(9.95) = 9 as well. N = 200: k_lo = 1, k_hi = floor(199.0) = 199:
    # exactly the minimum and the maximum.
    big = np.arange(200, dtype=F32)[::-1].copy()
    mask = outlier_mask(big, 0.01)
    assert mask.sum() == 2 and mask[0] and mask[-1]
    # N = 1, a = 0.2: k_hi = floor(0.9) = 0 -> hi = -inf: the single value is an outlier.
    assert_exact(outlier_mask(np.array([3], F32), 0.2), [1])
    # a = 0: nothing, except non-finite values, which always are.
    assert_exact(outlier_mask(np.array([1, np.nan, np.inf, 2], F32), 0.0), [0, 1, 1, 0])


def test_outliers_excluded_from_statistics():
    # 10 values 0..9 at head level, a = 0.2: 0 and 9 are outliers (above), kept exactly.
    # Non-outliers 1..8: min 1, max 8, mean 4.5. B = 3: s = 7 / 8 = 0.875, z = (x - 4.5) / 0.875:
    # x = 1 -> -4 -> q -4 -> x' = 1.0; x = 8 -> 4 -> clamp 3 -> x' = 7.125; x = 5 -> 0.571 -> 1 -> 5.375.
    values = [5, 3, 9, 1, 7, 0, 8, 2, 6, 4]
    r = quantize(one_group(values), None, Params(bits=3, outliers_ratio=0.2))
    out = r.dequantized.ravel()
    assert out[2] == 9 and out[5] == 0  # outliers exact
    assert out[3] == F32(1.0) and out[6] == F32(7.125) and out[0] == F32(5.375)
    # average bits: 3 * (1 - 0.2) + 16 * 0.2 = 2.4 + 3.2 = 5.6
    assert abs(r.average_bits - 5.6) < 1e-12


def two_token_case():
    # L = B = H = 1, T = 2, D = 2: token 0 = [-1, 3] (R = 4), token 1 = [0, 0.5] (R = 0.5).
    cache = np.array([[-1, 3], [0, 0.5]], dtype=F32).reshape(1, 1, 1, 2, 2)
    # Two query heads (GQA, both read KV head 0), two rows each:
    #   q0: [[1, 0], [0.6, 0.4]]     q1: [[1, 0], [0.9, 0.1]]
    attention = np.array([[[1, 0], [0.6, 0.4]], [[1, 0], [0.9, 0.1]]], dtype=F32).reshape(1, 1, 2, 2, 2)
    return cache, attention


def test_value_attention_bits():
    cache, attention = two_token_case()
    # last_n = 1: the last row only. A_0 = max(0.6, 0.9) = 0.9, A_1 = max(0.4, 0.1) = 0.4.
    # eps = 0.5: numerator = float32(sqrt(12 / 2) * 0.5) = 1.2247449.
    # t0: E = 1.2247449 / 0.9 = 1.3608277, 2E = 2.7216554, R / 2E = 4 / 2.7216554 = 1.4696938,
    #     log2(2.4696938) = 1.3043 -> ceil 2.
    # t1: E = 1.2247449 / 0.4 = 3.0618622, 2E = 6.1237244, 0.5 / 6.1237244 = 0.0816497,
    #     log2(1.0816497) = 0.1132 -> ceil 1.
    p = Params(cache="value", level="head", attention_aware=True, last_n=1, target_error=0.5, bits_min=0, bits_max=8)
    r = quantize(cache, attention, p)
    assert r.bits.shape == (1, 2, 1, 1)
    assert_exact(r.bits, [2, 1])
    # Codes: t0 at 2 bits: mean 1, s = 4 / 4 = 1, z = [-2, 2] -> clamp [-2, 1] -> [-1, 2].
    #        t1 at 1 bit: mean 0.25, s = 0.5 / 2 = 0.25, z = [-1, 1] -> clamp [-1, 0] -> [0, 0.25].
    assert_exact(r.dequantized, [-1, 2, 0, 0.25])
    assert r.average_bits == 1.5
    # bits_min 2 lifts t1; bits_max 1 caps t0.
    assert_exact(quantize(cache, attention, Params(**{**p.__dict__, "bits_min": 2})).bits, [2, 2])
    assert_exact(quantize(cache, attention, Params(**{**p.__dict__, "bits_max": 1})).bits, [1, 1])
    # last_n = 2: both rows. A_0 = max(1, 0.6, 1, 0.9) = 1: E = 1.2247449, 4 / 2.4494898 = 1.6329932,
    # log2(2.6329932) = 1.397 -> 2. Token 1 is among the last n - 1 = 1 tokens: bits_max = 8.
    r = quantize(cache, attention, Params(**{**p.__dict__, "last_n": 2}))
    assert_exact(r.bits, [2, 8])
    # t1 at 8 bits: mean 0.25, s = 0.5 / 256 = 0.001953125, z = [-128, 128] -> clamp [-128, 127]
    # -> x' = [0, 127 * 0.001953125 + 0.25] = [0, 0.498046875].
    assert_exact(r.dequantized, [-1, 2, 0, 0.498046875])
    assert r.average_bits == 5.0
    # last_n = 5 > T: every token is within the last n - 1: all bits_max.
    assert_exact(quantize(cache, attention, Params(**{**p.__dict__, "last_n": 5})).bits, [8, 8])


def test_attention_zero_gives_bits_min():
    # A = 0: E = +inf, R / 2E = 0, log2(1) = 0 -> bits_min.
    cache, attention = two_token_case()
    attention[..., 1] = 0
    p = Params(cache="value", attention_aware=True, last_n=1, target_error=0.5, bits_min=3, bits_max=8)
    assert_exact(quantize(cache, attention, p).bits, [3, 3])


def test_gqa_head_mapping():
    # H = 2 KV heads, Hq = 4: query heads 0, 1 read KV head 0; 2, 3 read KV head 1.
    attention = np.zeros((1, 1, 4, 1, 3), dtype=F32)
    attention[0, 0, 2, 0, 1] = 0.7  # only query head 2 looks at token 1
    attention[0, 0, 1, 0, 0] = 0.3  # only query head 1 looks at token 0
    p = predicted_attention(attention, heads=2, last_n=1)  # [B, T, L, H]
    assert p.shape == (1, 3, 1, 2)
    assert_exact(p[0, :, 0, 0], [0.3, 0, 0])
    assert_exact(p[0, :, 0, 1], [0, 0.7, 0])


def test_key_bits():
    cache, attention = two_token_case()
    # T = 2, qn = 12, eps = 1: E = sqrt(12 / 12 * ln(2^3 / 1 * 1 + 1)) = sqrt(ln 9) = 1.4823038,
    # float32(2E) = 2.9646077. t0: 4 / 2.9646077 = 1.3492529 -> log2(2.3492529) = 1.232 -> 2.
    # t1: 0.5 / 2.9646077 = 0.1686566 -> log2(1.1686566) = 0.2249 -> 1.
    p = Params(cache="key", attention_aware=True, last_n=1, target_error=1.0, q_norm=12.0, bits_min=0, bits_max=8)
    assert_exact(quantize(cache, attention, p).bits, [2, 1])
    assert_exact(quantize(cache, None, p).bits, [2, 1])  # keys ignore the attention
    # T = 1: the formula divides by T - 1 = 0: bits_max.
    r = quantize(cache[:, :, :, :1], None, Params(**{**p.__dict__, "bits_max": 6}))
    assert_exact(r.bits, [6])


def test_levels_and_layout():
    # L = 2, B = 1, H = 2, T = 1, D = 2: the token group is all 8 values.
    cache = np.arange(8, dtype=F32).reshape(2, 1, 2, 1, 2)  # values 0..7
    r = quantize(cache, None, Params(level="token", bits=3))
    assert r.bits.shape == (1, 1)
    # One group: mean 3.5, s = 7 / 8 = 0.875; x = 7: z = 4 -> clamp 3 -> 3.5 + 2.625 = 6.125.
    assert r.dequantized[1, 0, 1, 0, 1] == F32(6.125)
    # Layer level: groups {0..3} and {4..7}: each mean 1.5 / 5.5, s = 3 / 8 = 0.375.
    # x = 0: z = -4 -> x' = 1.5 - 1.5 = 0; x = 3: z = 4 -> clamp 3 -> 1.5 + 1.125 = 2.625.
    r = quantize(cache, None, Params(level="layer", bits=3))
    assert r.bits.shape == (1, 1, 2)
    assert r.dequantized[0, 0, 0, 0, 0] == 0 and r.dequantized[0, 0, 1, 0, 1] == F32(2.625)
    assert r.dequantized[1, 0, 1, 0, 1] == F32(6.625)
    # Head level: groups of 2 values {2k, 2k+1}: mean 2k + 0.5, s = 1 / 8: 2k -> z -4 -> 2k exactly;
    # 2k+1 -> z 4 -> clamp 3 -> 2k + 0.875.
    r = quantize(cache, None, Params(level="head", bits=3))
    assert r.bits.shape == (1, 1, 2, 2)
    assert_exact(r.dequantized, [0, 0.875, 2, 2.875, 4, 4.875, 6, 6.875])


def test_attention_levels():
    # Value bits at layer / token level use the maximum attention over the group's heads.
    cache = np.array([0, 4, 0, 0.5], dtype=F32).reshape(1, 1, 2, 1, 2)  # head 0 R = 4, head 1 R = 0.5
    attention = np.array([0.9, 0.4], dtype=F32).reshape(1, 1, 2, 1, 1)  # A = 0.9 (head 0), 0.4 (head 1)
    # T = 1: numerator = float32(sqrt(12) * 0.1) = 0.34641016.
    # head level: h0: E = 0.3849002, 4 / 0.7698004 = 5.196152 -> log2(6.196) = 2.63 -> 3;
    #             h1: E = 0.8660254, 0.5 / 1.7320508 = 0.2886751 -> log2(1.2887) = 0.366 -> 1.
    base = dict(cache="value", attention_aware=True, last_n=1, target_error=0.1, bits_min=0, bits_max=8)
    assert_exact(quantize(cache, attention, Params(level="head", **base)).bits, [3, 1])
    # layer level: one group, A = 0.9, R = max - min = 4 - 0 = 4 -> 3 bits.
    assert_exact(quantize(cache, attention, Params(level="layer", **base)).bits, [3])


def main():
    tests = [(name, fn) for name, fn in sorted(globals().items()) if name.startswith("test_") and callable(fn)]
    for name, fn in tests:
        fn()
        print("ok", name)
    print(f"{len(tests)} oracle self-tests passed")


if __name__ == "__main__":
    main()
