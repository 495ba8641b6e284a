#pragma once
// Whole-group kernels of the CPU backend for codecs with an affine form
// (the uniform codecs): statistics of a group without outliers, encode + pack,
// unpack + decode. Each has an AVX2 path (chosen at run time, simd.hpp) and a
// scalar path.
//
// The codes are exactly those of the scalar definition
//   code = clamp(rint((x - centre) / scale), lowest, highest) + bias
// whichever path runs. The AVX2 encoder multiplies by the reciprocal of the
// scale instead of dividing, which can only change a code when the quotient is
// within a few ulps of a rounding tie (x.5): it checks every value for that
// and re-encodes the group with a true division when one is that close.
//
// Decoding computes x' = (code - bias) * scale + centre with two roundings on
// both paths (no FMA contraction), as the reference does.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "qaq/backend/cpu/simd.hpp"
#include "qaq/bit_packing.hpp"
#include "qaq/config.hpp"
#include "qaq/policy/storage/codec_parameters.hpp"

QAQ_NAMESPACE_BEGIN
namespace backend::affine {

/// min, max and (when wanted) the double-precision sum of n values, all
/// finite. Returns false, leaving the outputs unspecified, when a value is
/// NaN or infinite (the caller then takes the general path, which gives the
/// same statistics; the AVX2 path without the sum also returns false when
/// values near the float limit overflow its lane sums). The sum is
/// bit-identical to backend::cpu::double_sum (eight interleaved accumulators);
/// a zero min or max is +0 whatever the signs of the zeros in the group.
inline bool dense_statistics_scalar(const float* x, std::int64_t n, bool want_sum, float& min, float& max,
                                    double& sum) noexcept {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    float lo = std::numeric_limits<float>::infinity(), hi = -lo;
    bool finite = true;
    std::int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; ++k) {
            const float v = x[i + k];
            finite &= std::isfinite(v);
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
            acc[k] += static_cast<double>(v);
        }
    for (const float* v = x + i; v != x + n; ++v) {  // the tail goes to the first accumulator, as double_sum's
        finite &= std::isfinite(*v);
        lo = *v < lo ? *v : lo;
        hi = *v > hi ? *v : hi;
        acc[0] += static_cast<double>(*v);
    }
    (void)want_sum;
    min = lo + 0.0f, max = hi + 0.0f;  // -0 -> +0: the same bits whatever the order of the scan
    sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    return finite;
}

/// codes[i] = clamp(rint((x_i - centre) / scale), lowest, highest) + bias, outliers (is_outlier[i]
/// != 0; is_outlier may be null: none) encoded as x_i = centre. scale > 0.
inline void affine_codes_scalar(const float* x, const std::uint8_t* is_outlier, std::int64_t n, const affine_code& a,
                                std::uint32_t* codes) noexcept {
    for (std::int64_t i = 0; i < n; ++i) {
        const float v = (is_outlier && is_outlier[i]) ? a.centre : x[i];
        float q = std::nearbyint((v - a.centre) / a.scale);
        q = q < a.lowest ? a.lowest : (q > a.highest ? a.highest : q);
        codes[i] = static_cast<std::uint32_t>(static_cast<std::int32_t>(q + a.bias));
    }
}

#if QAQ_SIMD_AVX2
namespace detail {

// The smallest lane of `lo` and the largest of `hi`, in registers (a store and eight scalar
// steps were a long chain at the head of every group's fit).
QAQ_TARGET_AVX2 inline void horizontal_min_max(__m256 lo, __m256 hi, float& min, float& max) noexcept {
    __m128 l4 = _mm_min_ps(_mm256_castps256_ps128(lo), _mm256_extractf128_ps(lo, 1));
    __m128 h4 = _mm_max_ps(_mm256_castps256_ps128(hi), _mm256_extractf128_ps(hi, 1));
    l4 = _mm_min_ps(l4, _mm_movehl_ps(l4, l4));
    h4 = _mm_max_ps(h4, _mm_movehl_ps(h4, h4));
    min = _mm_cvtss_f32(_mm_min_ss(l4, _mm_movehdup_ps(l4)));
    max = _mm_cvtss_f32(_mm_max_ss(h4, _mm_movehdup_ps(h4)));
}

QAQ_TARGET_AVX2 inline bool dense_statistics_avx2(const float* x, std::int64_t n, bool want_sum, float& min,
                                                  float& max, double& sum) noexcept {
    __m256 lo = _mm256_set1_ps(std::numeric_limits<float>::infinity());
    __m256 hi = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    // The lane sums of the values: NaN or infinite when a value is. (They may also overflow for
    // huge finite values; the caller's general path then gives the same statistics.)
    __m256 check = _mm256_setzero_ps();
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    std::int64_t i = 0;
    if (want_sum) {  // s0, s1: lanes k and 4 + k of double_sum's accumulators (same order of additions)
        __m256 lo2 = lo, hi2 = hi;
        for (; i + 16 <= n; i += 16) {
            const __m256 v = _mm256_loadu_ps(x + i), w = _mm256_loadu_ps(x + i + 8);
            lo = _mm256_min_ps(lo, v);
            hi = _mm256_max_ps(hi, v);
            lo2 = _mm256_min_ps(lo2, w);
            hi2 = _mm256_max_ps(hi2, w);
            s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
            s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
            s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(w)));
            s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(w, 1)));
        }
        for (; i + 8 <= n; i += 8) {
            const __m256 v = _mm256_loadu_ps(x + i);
            lo = _mm256_min_ps(lo, v);
            hi = _mm256_max_ps(hi, v);
            s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
            s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
        }
        lo = _mm256_min_ps(lo, lo2);
        hi = _mm256_max_ps(hi, hi2);
    } else {
        __m256 lo2 = lo, hi2 = hi, check2 = check;  // two chains: min/max latency would bound the loop
        for (; i + 16 <= n; i += 16) {
            const __m256 v = _mm256_loadu_ps(x + i), w = _mm256_loadu_ps(x + i + 8);
            lo = _mm256_min_ps(lo, v);
            hi = _mm256_max_ps(hi, v);
            check = _mm256_add_ps(check, v);
            lo2 = _mm256_min_ps(lo2, w);
            hi2 = _mm256_max_ps(hi2, w);
            check2 = _mm256_add_ps(check2, w);
        }
        for (; i + 8 <= n; i += 8) {
            const __m256 v = _mm256_loadu_ps(x + i);
            lo = _mm256_min_ps(lo, v);
            hi = _mm256_max_ps(hi, v);
            check = _mm256_add_ps(check, v);
        }
        lo = _mm256_min_ps(lo, lo2);
        hi = _mm256_max_ps(hi, hi2);
        check = _mm256_add_ps(check, check2);
    }
    // With no NaN the order of a min or max does not matter up to the sign of a zero, which the
    // + 0.0f below fixes.
    float mn, mx;
    horizontal_min_max(lo, hi, mn, mx);
    bool finite = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), check),
                                                   _mm256_set1_ps(std::numeric_limits<float>::infinity()),
                                                   _CMP_NLT_UQ)) == 0;
    alignas(32) double a[8];
    _mm256_store_pd(a, s0);
    _mm256_store_pd(a + 4, s1);
    for (; i < n; ++i) {
        const float v = x[i];
        finite &= std::isfinite(v);
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
        a[0] += static_cast<double>(v);
    }
    min = mn + 0.0f, max = mx + 0.0f;  // -0 -> +0, as the scalar path
    sum = want_sum ? ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])) : 0.0;
    // min/max skip a NaN operand; the NaN shows in the sum (or in x - x).
    return finite && (!want_sum || std::isfinite(sum)) && std::isfinite(mn) && std::isfinite(mx);
}

QAQ_TARGET_AVX2 inline bool kept_min_max_avx2(const float* x, const std::uint8_t* is_outlier, std::int64_t n,
                                              float& min, float& max) noexcept {
    const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
    const __m256 minus_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    __m256 lo = inf, hi = minus_inf, bad = _mm256_setzero_ps();
    std::int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256i m = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(is_outlier + i)));
        const __m256 keep = _mm256_castsi256_ps(_mm256_cmpeq_epi32(m, _mm256_setzero_si256()));
        lo = _mm256_min_ps(lo, _mm256_blendv_ps(inf, v, keep));
        hi = _mm256_max_ps(hi, _mm256_blendv_ps(minus_inf, v, keep));
        const __m256 non_finite = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), v), inf, _CMP_NLT_UQ);
        bad = _mm256_or_ps(bad, _mm256_and_ps(keep, non_finite));
    }
    float mn, mx;
    horizontal_min_max(lo, hi, mn, mx);
    bool finite = _mm256_movemask_ps(bad) == 0;
    for (; i < n; ++i) {
        if (is_outlier[i]) continue;
        const float v = x[i];
        finite &= std::isfinite(v);
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    min = mn, max = mx;
    // A zero leaves its sign to the order of the general path's reduction: that path decides.
    return finite && mn <= mx && mn != 0.0f && mx != 0.0f;
}

// Eight codes (int32 lanes) of values x[0..8), outliers replaced by the centre, with the
// reciprocal of the scale:
//   t = clamp((x - centre) * (1/scale), lowest, highest),  code = rint(t) + bias.
// lowest and highest are integers, so clamping before rounding gives the codes of clamping after
// it, and beyond the range both quotients give the end code. Otherwise fl(d * fl(1/s)) and
// fl(d / s) are both within 3u of d / s (u = 2^-24, |t| <= bound): when t is farther than
// 8u * bound from every k + 0.5 they round alike; `distance` keeps the largest |t - rint(t)|
// seen (one max per vector instead of a compare and an or), checked against 0.5 - 8u * bound
// once at the end.
// Clamp false: the caller has shown that every t lies in [lowest, highest] (t is monotone in
// x, so it is enough that the group's smallest and largest values and the centre do), and the
// two clamping instructions are left out.
template <bool Clamp>
struct encoder {
    __m256 centre, reciprocal, lowest, highest, distance;
    __m256i bias;
    float half_minus_tol;

    QAQ_TARGET_AVX2 encoder(const affine_code& a, float inverse_scale) noexcept {
        centre = _mm256_set1_ps(a.centre);
        reciprocal = _mm256_set1_ps(inverse_scale);
        lowest = _mm256_set1_ps(a.lowest);
        highest = _mm256_set1_ps(a.highest);
        bias = _mm256_set1_epi32(static_cast<std::int32_t>(a.bias));
        const float lo = std::fabs(a.lowest), hi = std::fabs(a.highest);
        const float bound = (lo > hi ? lo : hi) + 1.0f;
        half_minus_tol = 0.5f - bound * 0x1p-21f;
        distance = _mm256_setzero_ps();
    }

    // rint(t) as int32, without the bias.
    QAQ_TARGET_AVX2 QAQ_ALWAYS_INLINE __m256i steps(__m256 v) noexcept {
        __m256 t = _mm256_mul_ps(_mm256_sub_ps(v, centre), reciprocal);
        if constexpr (Clamp) t = _mm256_min_ps(_mm256_max_ps(t, lowest), highest);
        const __m256 q = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        // t is finite here (clamped, or inside the range), so max never meets a NaN.
        distance = _mm256_max_ps(distance, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_sub_ps(t, q)));
        return _mm256_cvtps_epi32(q);
    }
    template <bool Outliers>
    QAQ_TARGET_AVX2 QAQ_ALWAYS_INLINE __m256i steps_at(const float* x, const std::uint8_t* is_outlier) noexcept {
        __m256 v = _mm256_loadu_ps(x);
        if constexpr (Outliers) {
            const __m256i m = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(is_outlier)));
            v = _mm256_blendv_ps(v, centre, _mm256_castsi256_ps(_mm256_cmpgt_epi32(m, _mm256_setzero_si256())));
        }
        return steps(v);
    }
    // The codes: rint(t) + bias.
    template <bool Outliers>
    QAQ_TARGET_AVX2 __m256i codes_at(const float* x, const std::uint8_t* is_outlier) noexcept {
        return _mm256_add_epi32(steps_at<Outliers>(x, is_outlier), bias);
    }
    // 32 codes as bytes in natural order (widths up to 8): the bias is added once per 16 steps
    // after the first narrowing (|step| < 2^8 fits int16) instead of once per 8.
    template <bool Outliers>
    QAQ_TARGET_AVX2 QAQ_ALWAYS_INLINE __m256i code_bytes_at(const float* x, const std::uint8_t* is_outlier, __m256i bias16) noexcept {
        const __m256i s0 = steps_at<Outliers>(x, is_outlier);
        const __m256i s1 = steps_at<Outliers>(x + 8, Outliers ? is_outlier + 8 : nullptr);
        const __m256i s2 = steps_at<Outliers>(x + 16, Outliers ? is_outlier + 16 : nullptr);
        const __m256i s3 = steps_at<Outliers>(x + 24, Outliers ? is_outlier + 24 : nullptr);
        const __m256i w01 = _mm256_add_epi16(_mm256_packs_epi32(s0, s1), bias16);
        const __m256i w23 = _mm256_add_epi16(_mm256_packs_epi32(s2, s3), bias16);
        return _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w01, w23), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    }
    // Points the encoder at another group of the same code range (centre and 1 / scale).
    QAQ_TARGET_AVX2 void retarget(float group_centre, float inverse_scale) noexcept {
        centre = _mm256_set1_ps(group_centre);
        reciprocal = _mm256_set1_ps(inverse_scale);
        distance = _mm256_setzero_ps();
    }
    QAQ_TARGET_AVX2 bool tie_seen() const noexcept {
        return _mm256_movemask_ps(_mm256_cmp_ps(distance, _mm256_set1_ps(half_minus_tol), _CMP_GE_OQ)) != 0;
    }
};

// Packs 32 code bytes (each < 2^W) LSB first: 4 * W bytes at out (widths 1 to 8).
template <int W>
QAQ_TARGET_AVX2 inline void pack32(__m256i bytes, std::uint8_t* out) noexcept {
    if constexpr (W == 8) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), bytes);
    } else if constexpr (W == 4) {
        const __m256i pairs = _mm256_maddubs_epi16(bytes, _mm256_set1_epi16(0x1001));  // b0 + 16 b1
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi16(pairs, pairs), 0x08);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(packed));
    } else if constexpr (W == 2) {
        const __m256i pairs = _mm256_maddubs_epi16(bytes, _mm256_set1_epi16(0x0401));     // b0 + 4 b1
        const __m256i quads = _mm256_madd_epi16(pairs, _mm256_set1_epi32(0x00100001));   // p0 + 16 p1
        const __m256i words = _mm256_packus_epi16(_mm256_packs_epi32(quads, quads), _mm256_setzero_si256());
        const __m256i packed = _mm256_permutevar8x32_epi32(words, _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(packed));
    } else if constexpr (W == 1) {
        const std::uint32_t bits = static_cast<std::uint32_t>(_mm256_movemask_epi8(_mm256_slli_epi16(bytes, 7)));
        std::memcpy(out, &bits, 4);
    } else {
        static_assert(W == 3 || W == 5 || W == 6 || W == 7, "pack32 covers widths 1 to 8");
        // Odd widths (the generic scalar packer made 3-bit quantize 40% slower than 2 or 4 bits):
        // pairs b0 + b1 << W (16 bits), quads (32 bits), octets q0 | q1 << 4W: every 64-bit lane
        // then holds eight codes in its low W bytes, which a byte shuffle gathers.
        __m256i pairs;
        if constexpr (W < 7) {
            pairs = _mm256_maddubs_epi16(bytes, _mm256_set1_epi16(static_cast<std::int16_t>(1 | (1 << (8 + W)))));
        } else {  // 128 is no signed byte multiplier: b1 moved from bit 8 down to bit 7 instead
            pairs = _mm256_or_si256(_mm256_and_si256(bytes, _mm256_set1_epi16(0x00FF)),
                                    _mm256_and_si256(_mm256_srli_epi16(bytes, 1), _mm256_set1_epi16(0x7F80)));
        }
        const __m256i quads = _mm256_madd_epi16(pairs, _mm256_set1_epi32(1 | (1 << (16 + 2 * W))));
        const __m256i octets = _mm256_or_si256(_mm256_and_si256(quads, _mm256_set1_epi64x(0xFFFFFFFF)),
                                               _mm256_slli_epi64(_mm256_srli_epi64(quads, 32), 4 * W));
        alignas(16) std::int8_t order[16];
        for (int k = 0; k < 16; ++k) order[k] = static_cast<std::int8_t>(k < W ? k : (k < 2 * W ? 8 + k - W : -1));
        const __m256i gather = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(order)));
        alignas(32) std::uint8_t packed[32];
        _mm256_store_si256(reinterpret_cast<__m256i*>(packed), _mm256_shuffle_epi8(octets, gather));
        std::memcpy(out, packed, 2 * W);  // the low lane's 2W bytes, then the high lane's
        std::memcpy(out + 2 * W, packed + 16, 2 * W);
    }
}

// Returns false, having written nothing reliable, when a quotient came near a rounding tie.
template <int W, bool Outliers, bool Clamp>
QAQ_TARGET_AVX2 bool encode_avx2(const float* x, const std::uint8_t* is_outlier, std::int64_t n, const affine_code& a,
                                 float inverse_scale, std::uint32_t* scratch, std::uint8_t* out) noexcept {
    encoder<Clamp> e(a, inverse_scale);
    // Without outliers is_outlier may be null, and null + offset is undefined (UBSan).
    const auto mask_at = [is_outlier](std::int64_t k) { return Outliers ? is_outlier + k : nullptr; };
    std::int64_t i = 0;
    if constexpr (W <= 8) {
        // code_bytes_at narrows steps and bias to int16: true of every codec whose codes fit
        // 8 bits and whose steps are small; any other goes through scratch.
        if (a.lowest >= -32768.0f && a.highest <= 32767.0f && a.bias >= -32768.0f && a.bias <= 32767.0f) {
            const __m256i bias16 = _mm256_set1_epi16(static_cast<std::int16_t>(a.bias));
            for (; i + 32 <= n; i += 32)
                pack32<W>(e.template code_bytes_at<Outliers>(x + i, mask_at(i), bias16), out + i / 8 * W);
        }
    }
    const std::int64_t first = i;  // codes from here on go through scratch and the generic packer
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(scratch + i), e.template codes_at<Outliers>(x + i, mask_at(i)));
    if (e.tie_seen()) return false;
    if (i < n) affine_codes_scalar(x + i, Outliers ? is_outlier + i : nullptr, n - i, a, scratch + i);
    if (first < n) pack_codes(scratch + first, n - first, W, out + first / 8 * W);
    return true;
}

// encode_avx2 (no outliers) for `count` groups of one width whose codes follow one another from
// `out`: the width is dispatched once for all of them, not once per group.
template <int W>
QAQ_TARGET_AVX2 void encode_groups_avx2(const float* const* x, std::int64_t n, int count, const float* centre,
                                        const float* scale, const float* inverse, float lowest, float highest,
                                        float bias, unsigned in_range, std::uint32_t* scratch,
                                        std::uint8_t* out) noexcept {
    const std::int64_t bytes = packed_code_bytes(n, W);
    if constexpr (W <= 8) {
        // Whole blocks of 32 codes (64- and 128-value groups): two encoders set up once for all
        // the groups (clamping or not), only centre and 1 / scale changed per group, and no
        // scratch or generic packer; the codes are encode_avx2's.
        if (n % 32 == 0 && lowest >= -32768.0f && highest <= 32767.0f && bias >= -32768.0f && bias <= 32767.0f) {
            const affine_code first{centre[0], scale[0], lowest, highest, bias};
            encoder<false> plain(first, inverse[0]);
            encoder<true> clamped(first, inverse[0]);
            const __m256i bias16 = _mm256_set1_epi16(static_cast<std::int16_t>(bias));
            for (int j = 0; j < count; ++j) {
                std::uint8_t* to = out + j * bytes;
                bool tie;
                if (in_range >> j & 1u) {
                    plain.retarget(centre[j], inverse[j]);
                    for (std::int64_t i = 0; i < n; i += 32) pack32<W>(plain.code_bytes_at<false>(x[j] + i, nullptr, bias16), to + i / 8 * W);
                    tie = plain.tie_seen();
                } else {
                    clamped.retarget(centre[j], inverse[j]);
                    for (std::int64_t i = 0; i < n; i += 32) pack32<W>(clamped.code_bytes_at<false>(x[j] + i, nullptr, bias16), to + i / 8 * W);
                    tie = clamped.tie_seen();
                }
                if (tie) {  // a value near a rounding tie: the exact division
                    const affine_code a{centre[j], scale[j], lowest, highest, bias};
                    affine_codes_scalar(x[j], nullptr, n, a, scratch);
                    pack_codes(scratch, n, W, to);
                }
            }
            return;
        }
    }
    for (int j = 0; j < count; ++j) {
        const affine_code a{centre[j], scale[j], lowest, highest, bias};
        std::uint8_t* to = out + j * bytes;
        const bool done = (in_range >> j & 1u) ? encode_avx2<W, false, false>(x[j], nullptr, n, a, inverse[j], scratch, to)
                                               : encode_avx2<W, false, true>(x[j], nullptr, n, a, inverse[j], scratch, to);
        if (!done) {  // a value near a rounding tie: the exact division
            affine_codes_scalar(x[j], nullptr, n, a, scratch);
            pack_codes(scratch, n, W, to);
        }
    }
}

// The bytes of eight codes of width W (one 16-byte window holding them, broadcast to both
// lanes) -> eight int32 codes: a byte shuffle brings each code's 2-3 bytes into its lane,
// a variable shift and a mask finish it.
// Compile-time tables of the unpacker: per int32 lane k, the bytes of code k (shuffle indices,
// -1 for none) and its bit offset in the first of them.
template <int W>
struct unpack_tables {
    struct tables {
        alignas(32) std::int8_t shuffle[32];
        alignas(32) std::int32_t shifts[8];
    };
    static constexpr tables make() noexcept {
        tables t{};
        for (int k = 0; k < 8; ++k) {
            const int bit = k * W, byte = bit / 8;
            for (int b = 0; b < 4; ++b)
                t.shuffle[4 * k + b] = (b < 3 && byte + b < 16) ? static_cast<std::int8_t>(byte + b) : std::int8_t{-1};
            t.shifts[k] = bit % 8;
        }
        return t;
    }
    static constexpr tables value = make();
};

template <int W>
struct unpacker {
    __m256i shuffle, unused, shifts, mask;
    QAQ_TARGET_AVX2 unpacker() noexcept {
        shuffle = _mm256_load_si256(reinterpret_cast<const __m256i*>(unpack_tables<W>::value.shuffle));
        unused = _mm256_cmpgt_epi8(_mm256_setzero_si256(), shuffle);
        shifts = _mm256_load_si256(reinterpret_cast<const __m256i*>(unpack_tables<W>::value.shifts));
        mask = _mm256_set1_epi32((1 << W) - 1);
    }
    // The codes of the block whose bytes start at `block`.
    QAQ_TARGET_AVX2 __m256i codes(const std::uint8_t* block) const noexcept {
        const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block)));
        return _mm256_and_si256(_mm256_srlv_epi32(_mm256_shuffle_epi8(v, shuffle), shifts), mask);
    }
    // The same from a 16-byte window that starts `offset` bytes before the block (0..16 - W).
    QAQ_TARGET_AVX2 __m256i codes(const std::uint8_t* window, int offset) const noexcept {
        const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(window)));
        const __m256i s = _mm256_or_si256(_mm256_add_epi8(shuffle, _mm256_set1_epi8(static_cast<char>(offset))), unused);
        return _mm256_and_si256(_mm256_srlv_epi32(_mm256_shuffle_epi8(v, s), shifts), mask);
    }
};

// (code - bias) * scale + centre with two roundings, as the scalar path and the reference compute
// it: the empty asm keeps the compiler from contracting the multiply and the add into an FMA.
QAQ_TARGET_AVX2 inline __m256 multiply_add(__m256 f, __m256 scale, __m256 centre) noexcept {
    __m256 product = _mm256_mul_ps(f, scale);
#if defined(__GNUC__) || defined(__clang__)
    __asm__("" : "+x"(product));
#endif
    return _mm256_add_ps(product, centre);
}

// How many of a group's blocks of eight codes (of `bytes` bytes of codes) can be read as 16 bytes
// from their own first byte without leaving the group: block b starts at byte b * W.
inline std::int64_t direct_block_count(int W, std::int64_t blocks, std::int64_t bytes) noexcept {
    return bytes >= 16 ? std::min<std::int64_t>(blocks, (bytes - 16) / W + 1) : 0;
}

// Blocks 0 .. blocks - 1 of a group, each read as 16 bytes from its own first byte (the caller
// makes sure those bytes are readable).
template <int W>
QAQ_TARGET_AVX2 void decode_direct_blocks(const unpacker<W>& u, const std::uint8_t* in, std::int64_t blocks,
                                          const affine_code& a, float* out) noexcept {
    const __m256 scale = _mm256_set1_ps(a.scale), centre = _mm256_set1_ps(a.centre);
    if (a.bias == 0.0f) {
        for (std::int64_t b = 0; b < blocks; ++b)
            _mm256_storeu_ps(out + 8 * b, multiply_add(_mm256_cvtepi32_ps(u.codes(in + b * W)), scale, centre));
    } else {  // (code - bias) is an exact integer either way
        const __m256i bias = _mm256_set1_epi32(static_cast<std::int32_t>(a.bias));
        for (std::int64_t b = 0; b < blocks; ++b) {
            const __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(u.codes(in + b * W), bias));
            _mm256_storeu_ps(out + 8 * b, multiply_add(f, scale, centre));
        }
    }
}

template <int W>
QAQ_TARGET_AVX2 void decode_avx2(const unpacker<W>& u, const std::uint8_t* in, std::int64_t n, const affine_code& a,
                                 float* out) noexcept {
    const __m256i bias = _mm256_set1_epi32(static_cast<std::int32_t>(a.bias));
    const __m256 scale = _mm256_set1_ps(a.scale), centre = _mm256_set1_ps(a.centre);
    const std::int64_t blocks = n / 8, total = packed_code_bytes(n, W);
    // A block reads 16 bytes from its first one: only while they lie inside the group's codes.
    std::int64_t b = direct_block_count(W, blocks, total);
    decode_direct_blocks<W>(u, in, b, a, out);
    if (b < blocks) {
        if (total >= 16) {  // the last blocks: the window that ends at the last byte
            const std::uint8_t* window = in + total - 16;
            for (; b < blocks; ++b) {
                const int offset = static_cast<int>(b * W - (total - 16));
                const __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(u.codes(window, offset), bias));
                _mm256_storeu_ps(out + 8 * b, multiply_add(f, scale, centre));
            }
        } else {
            alignas(16) std::uint8_t tail[32] = {};
            std::memcpy(tail, in + b * W, static_cast<std::size_t>(total - b * W));
            for (std::int64_t t = b; t < blocks; ++t) {
                const __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(u.codes(tail + (t - b) * W), bias));
                _mm256_storeu_ps(out + 8 * t, multiply_add(f, scale, centre));
            }
        }
    }
    for (std::int64_t i = 8 * blocks; i < n; ++i) {
        float product = (static_cast<float>(static_cast<std::int32_t>(read_code(in, i, W))) - a.bias) * a.scale;
#if defined(__GNUC__) || defined(__clang__)
        __asm__("" : "+x"(product));  // not contracted into an FMA here either
#endif
        out[i] = product + a.centre;
    }
}

template <int W>
QAQ_TARGET_AVX2 void decode_avx2(const std::uint8_t* in, std::int64_t n, const affine_code& a, float* out) noexcept {
    decode_avx2<W>(unpacker<W>(), in, n, a, out);
}

// Groups of one width, one after the other in the code stream: the unpacker's tables are
// loaded and the width dispatched once for all of them. after(k) runs once group k is decoded.
// A group whose 16-byte windows may run into the groups after it (all blocks read from their
// own first byte, no tail logic) is decoded in one tight loop; the last groups of the call,
// whose windows would leave the codes given, and groups of n not a multiple of 8 take
// decode_avx2. The results are the same either way.
template <int W, class After>
QAQ_TARGET_AVX2 void decode_groups_avx2(const std::uint8_t* in, std::int64_t n, const affine_code* a, int count,
                                        float* const* out, After& after) {
    const unpacker<W> u;
    const std::int64_t bytes = packed_code_bytes(n, W), blocks = n / 8;
    // Block b of group k reads bytes [k * bytes + b * W, ... + 16): inside the call's codes
    // while k * bytes + bytes - W + 16 <= count * bytes.
    const std::int64_t spill = bytes > 0 ? (16 - W + bytes - 1) / bytes : count;  // groups a window may reach beyond
    const int direct_groups = n % 8 == 0 ? static_cast<int>(std::max<std::int64_t>(0, count - spill)) : 0;
    int k = 0;
    for (; k < direct_groups; ++k) {
        decode_direct_blocks<W>(u, in + k * bytes, blocks, a[k], out[k]);
        after(k);
    }
    for (; k < count; ++k) {
        decode_avx2<W>(u, in + k * bytes, n, a[k], out[k]);
        after(k);
    }
}

}  // namespace detail
#endif  // QAQ_SIMD_AVX2

/// See dense_statistics_scalar; the AVX2 path gives the same results.
inline bool dense_statistics(const float* x, std::int64_t n, bool want_sum, float& min, float& max,
                             double& sum) noexcept {
#if QAQ_SIMD_AVX2
    if (simd::use_avx2()) return detail::dense_statistics_avx2(x, n, want_sum, min, max, sum);
#endif
    return dense_statistics_scalar(x, n, want_sum, min, max, sum);
}

/// min and max of the values whose is_outlier byte is 0, at least one of them. Returns false,
/// leaving the outputs unspecified, when no AVX2 path ran, a kept value is NaN or infinite, or
/// min or max is zero (the caller then takes the general statistics, which decide all three).
inline bool kept_min_max(const float* x, const std::uint8_t* is_outlier, std::int64_t n, float& min,
                         float& max) noexcept {
#if QAQ_SIMD_AVX2
    if (simd::use_avx2()) return detail::kept_min_max_avx2(x, is_outlier, n, min, max);
#endif
    (void)x, (void)is_outlier, (void)n, (void)min, (void)max;
    return false;
}

/// encode() with 1 / scale (finite) and its range test already done by the caller: `in_range`
/// says that every non-outlier value quantizes into [lowest, highest] unclamped (see encode).
/// Always encodes: the scalar definition when no AVX2 path runs or a quotient came near a tie.
inline void encode_with_reciprocal(const float* x, const std::uint8_t* is_outlier, std::int64_t n, int width,
                                   const affine_code& a, float inverse_scale, bool in_range, std::uint32_t* scratch,
                                   std::uint8_t* out) noexcept {
#if QAQ_SIMD_AVX2
    if (simd::use_avx2()) {
        const bool done = dispatch_width(width, [&](auto w) {
            constexpr int W = decltype(w)::value;
            if (in_range)
                return is_outlier ? detail::encode_avx2<W, true, false>(x, is_outlier, n, a, inverse_scale, scratch, out)
                                  : detail::encode_avx2<W, false, false>(x, is_outlier, n, a, inverse_scale, scratch, out);
            return is_outlier ? detail::encode_avx2<W, true, true>(x, is_outlier, n, a, inverse_scale, scratch, out)
                              : detail::encode_avx2<W, false, true>(x, is_outlier, n, a, inverse_scale, scratch, out);
        });
        if (done) return;
    }
#endif
    (void)inverse_scale, (void)in_range;
    // A value near a rounding tie (rare), or no AVX2: the exact division, in scalar code.
    affine_codes_scalar(x, is_outlier, n, a, scratch);
    pack_codes(scratch, n, width, out);
}

/// encode_with_reciprocal, without outliers, for `count` groups of n values at x[j] and one width
/// 1..16: group j's affine form is {centre[j], scale[j], lowest, highest, bias} (scale > 0), its
/// reciprocal inverse[j] (finite), its range test bit j of `in_range`, and its codes are the
/// packed_code_bytes(n, width) bytes from out + j * packed_code_bytes(n, width). Returns false,
/// having done nothing, when no AVX2 path runs.
inline bool encode_groups(const float* const* x, std::int64_t n, int width, int count, const float* centre,
                          const float* scale, const float* inverse, float lowest, float highest, float bias,
                          unsigned in_range, std::uint32_t* scratch, std::uint8_t* out) noexcept {
#if QAQ_SIMD_AVX2
    if (simd::use_avx2()) {
        dispatch_width(width, [&](auto w) {
            detail::encode_groups_avx2<decltype(w)::value>(x, n, count, centre, scale, inverse, lowest, highest, bias,
                                                           in_range, scratch, out);
        });
        return true;
    }
#endif
    (void)x, (void)n, (void)width, (void)count, (void)centre, (void)scale, (void)inverse, (void)lowest, (void)highest;
    (void)bias, (void)in_range, (void)scratch, (void)out;
    return false;
}

/// Encodes n values with the affine form `a` (scale > 0, width 1..16) and packs them into
/// packed_code_bytes(n, width) bytes at `out`; is_outlier may be null (no outliers).
/// `scratch` holds n codes. Returns false when no SIMD path ran (the caller encodes).
/// [lo, hi], when the caller knows it (NaN: unknown), holds every non-outlier value; the
/// kernel then skips clamping where the end values' quotients show it cannot act.
inline bool encode(const float* x, const std::uint8_t* is_outlier, std::int64_t n, int width, const affine_code& a,
                   std::uint32_t* scratch, std::uint8_t* out, float lo = std::numeric_limits<float>::quiet_NaN(),
                   float hi = std::numeric_limits<float>::quiet_NaN()) noexcept {
#if QAQ_SIMD_AVX2
    const float inverse_scale = 1.0f / a.scale;
    // 1/scale must be finite for the multiply (a subnormal scale takes the scalar path).
    if (simd::use_avx2() && std::isfinite(inverse_scale)) {
        // The kernel's own arithmetic on the end values (t is monotone in x); NaN compares false.
        const bool in_range = (lo - a.centre) * inverse_scale >= a.lowest &&
                              (hi - a.centre) * inverse_scale <= a.highest &&
                              (!is_outlier || (a.lowest <= 0.0f && a.highest >= 0.0f));
        encode_with_reciprocal(x, is_outlier, n, width, a, inverse_scale, in_range, scratch, out);
        return true;
    }
#endif
    (void)x, (void)is_outlier, (void)n, (void)width, (void)a, (void)scratch, (void)out, (void)lo, (void)hi;
    return false;
}

/// Unpacks and decodes n codes of width 1..16: out[i] = (code - bias) * scale + centre.
/// Returns false when no SIMD path ran (the caller decodes).
inline bool decode(const std::uint8_t* in, std::int64_t n, int width, const affine_code& a, float* out) noexcept {
#if QAQ_SIMD_AVX2
    if (simd::use_avx2()) {
        dispatch_width(width, [&](auto w) { detail::decode_avx2<decltype(w)::value>(in, n, a, out); });
        return true;
    }
#endif
    (void)in, (void)n, (void)width, (void)a, (void)out;
    return false;
}

/// decode() for `count` groups of n codes of one width 1..16 stored one after the other from
/// `in` (packed_code_bytes(n, width) bytes each): group k with a[k] into out[k], then after(k)
/// (the caller's outlier restoration). Returns false, having done nothing, when no SIMD path
/// runs (the caller decodes).
template <class After>
inline bool decode_groups(const std::uint8_t* in, std::int64_t n, int width, const affine_code* a, int count,
                          float* const* out, After&& after) {
#if QAQ_SIMD_AVX2
    if (simd::use_avx2()) {
        dispatch_width(width, [&](auto w) { detail::decode_groups_avx2<decltype(w)::value>(in, n, a, count, out, after); });
        return true;
    }
#endif
    (void)in, (void)n, (void)width, (void)a, (void)count, (void)out, (void)after;
    return false;
}

}  // namespace backend::affine
QAQ_NAMESPACE_END
