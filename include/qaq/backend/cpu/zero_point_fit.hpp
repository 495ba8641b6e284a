#pragma once
// The fp16 parameters of storage::uniform_zero_point (not symmetric, width >= 1) for eight
// groups at once, for quantizer::quantize_batch.
//
// Per group, fit() is a chain of dependent scalar steps: min rounded down to fp16, a
// division, a rounding up, a coverage check in double, then (in the encoder) the
// reciprocal of the scale. One group after another that chain was about half of
// quantize's time; here each step is one vector instruction for eight groups.
//
// The values are fit()'s: z = min rounded toward -Inf to fp16, s = (max - z) / (2^B - 1)
// rounded toward +Inf (F16C, as precision.hpp rounds them), kept when z + (2^B - 1) s >= max
// in double. A group whose s would need fit()'s further steps up, width 0, or s = 0 (a
// constant group) is left to fit().

#include <cstdint>

#include "qaq/backend/cpu/simd.hpp"
#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN
namespace backend::batch {

/// What fit_zero_point_fp16 found for eight groups.
struct zero_point_fits {
    alignas(32) float centre[8];    ///< z
    alignas(32) float scale[8];     ///< s
    alignas(32) float inverse[8];   ///< 1 / s, as the encoder computes it
    alignas(32) float steps[8];     ///< 2^B - 1
    alignas(32) std::uint16_t stored[16];  ///< z0, s0, z1, s1, ...: the fp16 bits fit() stores, in order
    unsigned fitted = 0;    ///< bit j: group j's values above are fit()'s
    unsigned in_range = 0;  ///< bit j: every value of group j quantizes into [0, 2^B - 1] unclamped
};

/// The largest |min| and |max| fit_zero_point_fp16 takes: below it no rounding of fit() can
/// leave the fp16 range (z >= -2^14, s <= 2^15 before its steps up), so a group within it never
/// throws there, whatever its width.
constexpr float zero_point_fit_bound = 16384.0f;

#if QAQ_SIMD_AVX2
namespace detail {

QAQ_TARGET_AVX2 inline void fit_zero_point_fp16_avx2(const float* min, const float* max, const int* widths,
                                                     zero_point_fits& out) noexcept {
    const __m256 mn = _mm256_loadu_ps(min), mx = _mm256_loadu_ps(max);
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(widths));
    const __m256i one = _mm256_set1_epi32(1);
    const __m256 steps = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_sllv_epi32(one, w), one));
    // vcvtps2ph immediates: 1 rounds toward -Inf, 2 toward +Inf.
    const __m128i zh = _mm256_cvtps_ph(mn, 1);
    const __m256 z = _mm256_cvtph_ps(zh);
    const __m128i sh = _mm256_cvtps_ph(_mm256_div_ps(_mm256_sub_ps(mx, z), steps), 2);
    const __m256 s = _mm256_cvtph_ps(sh);
    // z + steps * s >= max in double. The product is exact (16 x 11 significant bits), so a
    // contraction into an FMA gives the same sum.
    const __m256d lo = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(z)),
                                     _mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(steps)),
                                                   _mm256_cvtps_pd(_mm256_castps256_ps128(s))));
    const __m256d hi = _mm256_add_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(z, 1)),
                                     _mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(steps, 1)),
                                                   _mm256_cvtps_pd(_mm256_extractf128_ps(s, 1))));
    const unsigned covered =
        static_cast<unsigned>(_mm256_movemask_pd(_mm256_cmp_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(mx)), _CMP_GE_OQ))) |
        static_cast<unsigned>(_mm256_movemask_pd(_mm256_cmp_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(mx, 1)), _CMP_GE_OQ)))
            << 4;
    const unsigned positive = static_cast<unsigned>(
        _mm256_movemask_ps(_mm256_cmp_ps(s, _mm256_setzero_ps(), _CMP_GT_OQ)));  // width 0 gives s = +Inf or NaN
    const unsigned nonzero_width = static_cast<unsigned>(
        _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(w, _mm256_setzero_si256()))));
    const __m256 inverse = _mm256_div_ps(_mm256_set1_ps(1.0f), s);
    // The encoder's own test (affine::encode): (lo - z) / s >= 0 and (hi - z) / s <= 2^B - 1.
    const unsigned in_range = static_cast<unsigned>(_mm256_movemask_ps(_mm256_and_ps(
        _mm256_cmp_ps(_mm256_mul_ps(_mm256_sub_ps(mn, z), inverse), _mm256_setzero_ps(), _CMP_GE_OQ),
        _mm256_cmp_ps(_mm256_mul_ps(_mm256_sub_ps(mx, z), inverse), steps, _CMP_LE_OQ))));
    _mm256_store_ps(out.centre, z);
    _mm256_store_ps(out.scale, s);
    _mm256_store_ps(out.inverse, inverse);
    _mm256_store_ps(out.steps, steps);
    _mm_store_si128(reinterpret_cast<__m128i*>(out.stored), _mm_unpacklo_epi16(zh, sh));
    _mm_store_si128(reinterpret_cast<__m128i*>(out.stored + 8), _mm_unpackhi_epi16(zh, sh));
    // s finite and positive: 1 / s is finite too (s >= 2^-24).
    const unsigned finite_s = static_cast<unsigned>(_mm256_movemask_ps(
        _mm256_cmp_ps(s, _mm256_set1_ps(65504.0f), _CMP_LE_OQ)));
    out.fitted = covered & positive & nonzero_width & finite_s;
    out.in_range = in_range;
}

}  // namespace detail
#endif  // QAQ_SIMD_AVX2

/// fit()'s parameters of eight groups from their min, max (each of magnitude at most
/// zero_point_fit_bound, finite) and widths (0..16); see zero_point_fits. Returns false (nothing
/// set) when the F16C path does not run: fit() is then the only path.
inline bool fit_zero_point_fp16(const float* min, const float* max, const int* widths, zero_point_fits& out) noexcept {
#if QAQ_SIMD_AVX2
    if (simd::use_avx2()) {
        detail::fit_zero_point_fp16_avx2(min, max, widths, out);
        return true;
    }
#endif
    (void)min, (void)max, (void)widths, (void)out;
    return false;
}

}  // namespace backend::batch
QAQ_NAMESPACE_END
