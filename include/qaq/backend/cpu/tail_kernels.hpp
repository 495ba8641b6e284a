#pragma once
// AVX2 kernels of the quantile outlier policy (policy/outliers/quantile.hpp):
// the finite values' two smallest and two largest in one pass, and the mark
// pass "x is non-finite, x <= lo or x > hi". Both return false when the AVX2
// path does not run; the policy then takes its scalar code.
//
// Why two: a ratio of 1% over groups of 64 or 128 values cuts the 1st
// smallest and the 2nd largest (ceil(0.005 N) = 1, N - floor(0.995 N) + 1 = 2),
// and the k-th smallest of a group for k <= 2 is the k-th smallest of the
// union of every lane's two smallest. Order statistics are counted with
// multiplicity, as nth_element counts them; NaN and +-Inf take no part.

#include <cstdint>
#include <cstring>
#include <limits>

#include "qaq/backend/cpu/simd.hpp"
#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN
namespace backend::tails {

/// The finite values of a group: how many, the two smallest (ascending) and the two largest
/// (descending), padded with +Inf (smallest) and -Inf (largest) when there are fewer.
struct finite_tails {
    std::int64_t count = 0;
    float smallest[2] = {0.0f, 0.0f};
    float largest[2] = {0.0f, 0.0f};
};

#if QAQ_SIMD_AVX2
namespace detail {

// The two smallest of two ascending pairs (a1 <= a2, b1 <= b2), with multiplicity:
// min(a1, b1) and min(max(a1, b1), a2, b2) (b2 >= b1 and a2 >= a1 make the third term safe).
struct low_pair {
    QAQ_TARGET_AVX2 static void merge(__m256& a1, __m256& a2, __m256 b1, __m256 b2) noexcept {
        const __m256 second = _mm256_min_ps(_mm256_max_ps(a1, b1), _mm256_min_ps(a2, b2));
        a1 = _mm256_min_ps(a1, b1);
        a2 = second;
    }
};
struct high_pair {
    QAQ_TARGET_AVX2 static void merge(__m256& a1, __m256& a2, __m256 b1, __m256 b2) noexcept {
        const __m256 second = _mm256_max_ps(_mm256_min_ps(a1, b1), _mm256_max_ps(a2, b2));
        a1 = _mm256_max_ps(a1, b1);
        a2 = second;
    }
};

// Merges the eight lanes' pairs into every lane (halves, then 64-bit, then 32-bit neighbours).
template <class Pair>
QAQ_TARGET_AVX2 inline void reduce_pairs(__m256& p1, __m256& p2) noexcept {
    Pair::merge(p1, p2, _mm256_permute2f128_ps(p1, p1, 1), _mm256_permute2f128_ps(p2, p2, 1));
    Pair::merge(p1, p2, _mm256_shuffle_ps(p1, p1, 0x4E), _mm256_shuffle_ps(p2, p2, 0x4E));
    Pair::merge(p1, p2, _mm256_shuffle_ps(p1, p1, 0xB1), _mm256_shuffle_ps(p2, p2, 0xB1));
}

// |v| < Inf: false for NaN and +-Inf.
QAQ_TARGET_AVX2 inline __m256 finite_mask(__m256 v) noexcept {
    return _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), v),
                         _mm256_set1_ps(std::numeric_limits<float>::infinity()), _CMP_LT_OQ);
}

// The last n % 8 values, the rest of the vector NaN (not finite: no part in either pass).
inline void load_tail(const float* x, std::int64_t count, float* eight) noexcept {
    for (int k = 0; k < 8; ++k) eight[k] = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(eight, x, static_cast<std::size_t>(count) * sizeof(float));
}

// Running two smallest / two largest finite values per lane, and the finite count.
struct tail_state {
    __m256 low1, low2, high1, high2;
    __m256i count;

    QAQ_TARGET_AVX2 tail_state() noexcept {
        low1 = low2 = _mm256_set1_ps(std::numeric_limits<float>::infinity());
        high1 = high2 = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
        count = _mm256_setzero_si256();
    }
    QAQ_TARGET_AVX2 void add(__m256 v) noexcept {
        const __m256 finite = finite_mask(v);
        const __m256 lo = _mm256_blendv_ps(_mm256_set1_ps(std::numeric_limits<float>::infinity()), v, finite);
        const __m256 hi = _mm256_blendv_ps(_mm256_set1_ps(-std::numeric_limits<float>::infinity()), v, finite);
        low2 = _mm256_min_ps(low2, _mm256_max_ps(low1, lo));
        low1 = _mm256_min_ps(low1, lo);
        high2 = _mm256_max_ps(high2, _mm256_min_ps(high1, hi));
        high1 = _mm256_max_ps(high1, hi);
        count = _mm256_sub_epi32(count, _mm256_castps_si256(finite));
    }
};

QAQ_TARGET_AVX2 inline void tails_avx2(const float* x, std::int64_t n, finite_tails& out) noexcept {
    tail_state s;
    std::int64_t i = 0;
    for (; i + 8 <= n; i += 8) s.add(_mm256_loadu_ps(x + i));
    if (i < n) {
        alignas(32) float eight[8];
        load_tail(x + i, n - i, eight);
        s.add(_mm256_load_ps(eight));
    }
    reduce_pairs<low_pair>(s.low1, s.low2);
    reduce_pairs<high_pair>(s.high1, s.high2);
    alignas(32) std::int32_t counts[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(counts), s.count);
    out.count = 0;
    for (int k = 0; k < 8; ++k) out.count += counts[k];
    out.smallest[0] = _mm256_cvtss_f32(s.low1);
    out.smallest[1] = _mm256_cvtss_f32(s.low2);
    out.largest[0] = _mm256_cvtss_f32(s.high1);
    out.largest[1] = _mm256_cvtss_f32(s.high2);
}

inline int popcount32(std::uint32_t v) noexcept {
    v = v - ((v >> 1) & 0x55555555u);
    v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
    return static_cast<int>((((v + (v >> 4)) & 0x0F0F0F0Fu) * 0x01010101u) >> 24);
}

// Outlier (0xFFFFFFFF) lanes: not finite, <= lo or > hi.
QAQ_TARGET_AVX2 inline __m256i outside(__m256 v, __m256 lo, __m256 hi) noexcept {
    const __m256 out = _mm256_or_ps(_mm256_cmp_ps(v, lo, _CMP_LE_OQ), _mm256_cmp_ps(v, hi, _CMP_GT_OQ));
    const __m256 non_finite = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), v),
                                            _mm256_set1_ps(std::numeric_limits<float>::infinity()), _CMP_NLT_UQ);
    return _mm256_castps_si256(_mm256_or_ps(out, non_finite));
}

QAQ_TARGET_AVX2 inline std::int64_t mark_avx2(const float* x, std::int64_t n, float lo, float hi,
                                             std::uint8_t* is_outlier) noexcept {
    const __m256 l = _mm256_set1_ps(lo), h = _mm256_set1_ps(hi);
    const __m256i one = _mm256_set1_epi8(1);
    std::int64_t count = 0, i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m256i m0 = outside(_mm256_loadu_ps(x + i), l, h), m1 = outside(_mm256_loadu_ps(x + i + 8), l, h);
        const __m256i m2 = outside(_mm256_loadu_ps(x + i + 16), l, h), m3 = outside(_mm256_loadu_ps(x + i + 24), l, h);
        // -1 / 0 lanes -> bytes in natural order (signed saturation keeps -1).
        __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(m0, m1), _mm256_packs_epi32(m2, m3));
        b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        count += popcount32(static_cast<std::uint32_t>(_mm256_movemask_epi8(b)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(is_outlier + i), _mm256_and_si256(b, one));
    }
    for (; i < n; i += 8) {
        alignas(32) float eight[8];
        const std::int64_t m = n - i < 8 ? n - i : 8;
        __m256 v;
        if (m == 8) {
            v = _mm256_loadu_ps(x + i);
        } else {
            load_tail(x + i, m, eight);
            v = _mm256_load_ps(eight);
        }
        const unsigned bits = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(outside(v, l, h))));
        for (std::int64_t k = 0; k < m; ++k) {
            const std::uint8_t out = static_cast<std::uint8_t>((bits >> k) & 1u);
            is_outlier[i + k] = out;
            count += out;
        }
    }
    return count;
}

}  // namespace detail
#endif  // QAQ_SIMD_AVX2

/// The finite values' count and two smallest / largest; false: no AVX2 path ran.
inline bool find_finite_tails(const float* x, std::int64_t n, finite_tails& out) noexcept {
#if QAQ_SIMD_AVX2
    if (simd::use_avx2()) {
        detail::tails_avx2(x, n, out);
        return true;
    }
#endif
    (void)x, (void)n, (void)out;
    return false;
}

/// is_outlier[i] = x_i is NaN or +-Inf, or x_i <= lo, or x_i > hi; `count` gets how many.
/// False: no AVX2 path ran (nothing written).
inline bool mark_outside(const float* x, std::int64_t n, float lo, float hi, std::uint8_t* is_outlier,
                         std::int64_t& count) noexcept {
#if QAQ_SIMD_AVX2
    if (simd::use_avx2()) {
        count = detail::mark_avx2(x, n, lo, hi, is_outlier);
        return true;
    }
#endif
    (void)x, (void)n, (void)lo, (void)hi, (void)is_outlier, (void)count;
    return false;
}

}  // namespace backend::tails
QAQ_NAMESPACE_END
