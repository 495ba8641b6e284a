#pragma once
// One float to fp16 and back, by F16C when the processor has it (simd.hpp):
// rounded to nearest even or toward -Inf / +Inf in one instruction.
//
// Codec parameters are rounded twice or three times per group; through
// Eigen::half (software conversion without -mf16c, then a comparison and a
// step to the fp16 neighbour for the directed roundings) that was a quarter
// of quantize's time. For finite inputs the results are those of the
// Eigen::half path (IEEE conversion; round-to-nearest followed by a step
// toward x when it landed on the wrong side is the directed rounding).
// Each function returns false where it did not run (no F16C, or an input for
// which the caller's general path has to decide: NaN, overflow), and the
// caller then takes that path.

#include <cmath>
#include <cstdint>

#include "qaq/backend/cpu/simd.hpp"
#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN
namespace backend::simd {

namespace detail {
#if QAQ_SIMD_AVX2
// Immediate rounding control of vcvtps2ph: 0 nearest even, 1 toward -Inf, 2 toward +Inf.
template <int Mode>
QAQ_TARGET_AVX2 inline float fp16_round_f16c(float x) noexcept {
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph(_mm_set_ss(x), Mode)));
}
QAQ_TARGET_AVX2 inline std::uint16_t fp16_bits_f16c(float x) noexcept {
    return static_cast<std::uint16_t>(_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(x), 0), 0));
}
#endif
// Below 65520 every rounding to nearest stays finite (65504 is the largest fp16).
inline bool fp16_in_range(float x) noexcept { return std::fabs(x) < 65520.0f; }
}  // namespace detail

/// x rounded to the nearest fp16 (ties to even), as float; false: not done.
inline bool fp16_round_nearest(float x, float& out) noexcept {
#if QAQ_SIMD_AVX2
    if (use_avx2() && detail::fp16_in_range(x)) {
        out = detail::fp16_round_f16c<0>(x);
        return true;
    }
#endif
    (void)x, (void)out;
    return false;
}

/// x rounded to the fp16 value at or below it (`up` false) or at or above it (`up` true);
/// false (not done) also when that value is infinite.
inline bool fp16_round_directed(float x, bool up, float& out) noexcept {
#if QAQ_SIMD_AVX2
    if (use_avx2() && detail::fp16_in_range(x)) {
        const float r = up ? detail::fp16_round_f16c<2>(x) : detail::fp16_round_f16c<1>(x);
        if (std::isfinite(r)) {
            out = r;
            return true;
        }
    }
#endif
    (void)x, (void)up, (void)out;
    return false;
}

/// The fp16 bits of x rounded to nearest even; false: not done.
inline bool fp16_bits_nearest(float x, std::uint16_t& out) noexcept {
#if QAQ_SIMD_AVX2
    if (use_avx2() && detail::fp16_in_range(x)) {
        out = detail::fp16_bits_f16c(x);
        return true;
    }
#endif
    (void)x, (void)out;
    return false;
}

}  // namespace backend::simd
QAQ_NAMESPACE_END
