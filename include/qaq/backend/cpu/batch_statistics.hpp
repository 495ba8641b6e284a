#pragma once
// min and max of eight groups without outliers at once, for quantizer::quantize_batch.
//
// Per group the loop is that of affine::dense_statistics (two chains of min, max and
// lane sums); the eight horizontal reductions are then done together, as a transposed
// reduction (21 shuffles and mins for eight groups instead of 6 per group, for each
// of min, max and the finiteness test), which also leaves the eight minima in one
// register: what the vectorised fit (zero_point_fit.hpp) reads.

#include <cstdint>
#include <limits>

#include "qaq/backend/cpu/simd.hpp"
#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN
namespace backend::batch {

constexpr int lanes = 8;

#if QAQ_SIMD_AVX2
namespace detail {

// r[j] = op over the eight lanes of v[j] (op associative and commutative on these inputs).
template <class Op>
QAQ_TARGET_AVX2 inline __m256 transposed_reduce(const __m256* v, Op op) noexcept {
    const __m256 m01 = op(_mm256_unpacklo_ps(v[0], v[1]), _mm256_unpackhi_ps(v[0], v[1]));
    const __m256 m23 = op(_mm256_unpacklo_ps(v[2], v[3]), _mm256_unpackhi_ps(v[2], v[3]));
    const __m256 m45 = op(_mm256_unpacklo_ps(v[4], v[5]), _mm256_unpackhi_ps(v[4], v[5]));
    const __m256 m67 = op(_mm256_unpacklo_ps(v[6], v[7]), _mm256_unpackhi_ps(v[6], v[7]));
    // [v0 v1 v2 v3 (lanes 0-3) | v0 v1 v2 v3 (lanes 4-7)], the same for v4..v7
    const __m256 m0123 = op(_mm256_shuffle_ps(m01, m23, 0x44), _mm256_shuffle_ps(m01, m23, 0xEE));
    const __m256 m4567 = op(_mm256_shuffle_ps(m45, m67, 0x44), _mm256_shuffle_ps(m45, m67, 0xEE));
    return op(_mm256_permute2f128_ps(m0123, m4567, 0x20), _mm256_permute2f128_ps(m0123, m4567, 0x31));
}

struct min_op {
    QAQ_TARGET_AVX2 __m256 operator()(__m256 a, __m256 b) const noexcept { return _mm256_min_ps(a, b); }
};
struct max_op {
    QAQ_TARGET_AVX2 __m256 operator()(__m256 a, __m256 b) const noexcept { return _mm256_max_ps(a, b); }
};
struct add_op {
    QAQ_TARGET_AVX2 __m256 operator()(__m256 a, __m256 b) const noexcept { return _mm256_add_ps(a, b); }
};

QAQ_TARGET_AVX2 inline unsigned min_max8_avx2(const float* const* x, std::int64_t n, float* min,
                                              float* max) noexcept {
    const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
    const __m256 minus_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 lo[lanes], hi[lanes], check[lanes];
    for (int j = 0; j < lanes; ++j) {
        const float* v = x[j];
        __m256 l0 = inf, l1 = inf, h0 = minus_inf, h1 = minus_inf;
        __m256 c0 = _mm256_setzero_ps(), c1 = c0;
        std::int64_t i = 0;
        for (; i + 16 <= n; i += 16) {
            const __m256 a = _mm256_loadu_ps(v + i), b = _mm256_loadu_ps(v + i + 8);
            l0 = _mm256_min_ps(l0, a);
            h0 = _mm256_max_ps(h0, a);
            c0 = _mm256_add_ps(c0, a);
            l1 = _mm256_min_ps(l1, b);
            h1 = _mm256_max_ps(h1, b);
            c1 = _mm256_add_ps(c1, b);
        }
        if (i < n) {  // n % 16 == 8
            const __m256 a = _mm256_loadu_ps(v + i);
            l0 = _mm256_min_ps(l0, a);
            h0 = _mm256_max_ps(h0, a);
            c0 = _mm256_add_ps(c0, a);
        }
        lo[j] = _mm256_min_ps(l0, l1);
        hi[j] = _mm256_max_ps(h0, h1);
        // |lane sums|: NaN or +Inf when a value is NaN or infinite (or the sums overflow).
        check[j] = _mm256_andnot_ps(sign, _mm256_add_ps(c0, c1));
    }
    // Without NaN the order of a min or max does not matter up to the sign of a zero, which
    // + 0 fixes (-0 + 0 = +0), as in dense_statistics.
    const __m256 zero = _mm256_setzero_ps();
    _mm256_storeu_ps(min, _mm256_add_ps(transposed_reduce(lo, min_op{}), zero));
    _mm256_storeu_ps(max, _mm256_add_ps(transposed_reduce(hi, max_op{}), zero));
    // Sums of non-negative terms: NaN and +Inf survive the reduction.
    const __m256 total = transposed_reduce(check, add_op{});
    return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(total, inf, _CMP_LT_OQ)));
}

}  // namespace detail
#endif  // QAQ_SIMD_AVX2

/// min[j] and max[j] of the n values at x[j] for j < 8 (n a multiple of 8, at least 8), a zero
/// as +0. Sets bit j of `finite` when group j's values are all finite (its min and max are then
/// those of affine::dense_statistics); a group without the bit (a NaN or infinite value, or
/// lane sums that overflowed) has unspecified outputs and takes the general path, which
/// decides. Returns false (nothing set) when the AVX2 path does not run.
inline bool min_max8(const float* const* x, std::int64_t n, float* min, float* max, unsigned& finite) noexcept {
#if QAQ_SIMD_AVX2
    if (simd::use_avx2() && n >= 8 && n % 8 == 0) {
        finite = detail::min_max8_avx2(x, n, min, max);
        return true;
    }
#endif
    (void)x, (void)n, (void)min, (void)max, (void)finite;
    return false;
}

}  // namespace backend::batch
QAQ_NAMESPACE_END
