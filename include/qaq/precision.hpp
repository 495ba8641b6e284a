#pragma once
// Rounding to, and byte storage in, the precision of stored parameters and
// exact outlier values (fp16 for a deployed cache, fp32 for bit-exact results).

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "qaq/backend/cpu/fp16_rounding.hpp"
#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN

inline constexpr std::int64_t bytes_per_value(storage_precision p) noexcept {
    return p == storage_precision::fp16 ? 2 : 4;
}

/// The value `x` becomes when stored in precision `p` (fp16: round to nearest even).
inline float round_to(storage_precision p, float x) noexcept {
    if (p != storage_precision::fp16) return x;
    float r;
    if (backend::simd::fp16_round_nearest(x, r)) return r;  // F16C: the same value, one instruction
    return static_cast<float>(Eigen::half(x));
}

/// Rounds a finite codec parameter; throws when fp16 cannot hold it.
inline float round_parameter(storage_precision p, float x, const char* what) {
    const float r = round_to(p, x);
    QAQ_CHECK(std::isfinite(r), "group ", what, " ", x,
              " does not fit the fp16 parameter storage (|x| <= 65504); use storage_precision::fp32");
    return r;
}

namespace detail {
// round_parameter_directed through Eigen::half: to nearest, then one fp16 step toward x when
// that landed on the wrong side. Out of line, so the F16C path inlines where it is called.
QAQ_NOINLINE inline float round_parameter_directed_general(storage_precision p, float x, bool up, const char* what) {
    float r = round_parameter(p, x, what);
    if (p == storage_precision::fp16 && (up ? r < x : r > x)) {
        // The fp16 neighbour of r in that direction (+-0 step to the smallest subnormal).
        auto bits = Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(r));
        if ((bits & 0x7fffu) == 0) bits = up ? 0x0001u : 0x8001u;
        else if (((bits & 0x8000u) != 0) == up) bits = static_cast<std::uint16_t>(bits - 1u);
        else bits = static_cast<std::uint16_t>(bits + 1u);
        r = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits));
        QAQ_CHECK(std::isfinite(r), "group ", what, " ", x,
                  " does not fit the fp16 parameter storage (|x| <= 65504); use storage_precision::fp32");
    }
    return r;
}
}  // namespace detail

/// round_parameter, rounded toward -Inf (`up` false) or +Inf (`up` true) instead
/// of to nearest: the stored value is <= x (or >= x). Throws where
/// round_parameter does, and where the directed rounding leaves the fp16 range.
inline float round_parameter_directed(storage_precision p, float x, bool up, const char* what) {
    float r;
    // F16C rounds in the wanted direction at once; it declines where the general path throws.
    if (p == storage_precision::fp16 && backend::simd::fp16_round_directed(x, up, r)) return r;
    return detail::round_parameter_directed_general(p, x, up, what);
}

/// Writes `x` (already representable) at `out` in precision `p`.
inline void store_value(storage_precision p, float x, std::uint8_t* out) noexcept {
    if (p == storage_precision::fp16) {
        std::uint16_t bits;
        if (!backend::simd::fp16_bits_nearest(x, bits)) bits = Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(x));
        std::memcpy(out, &bits, 2);
    } else {
        std::memcpy(out, &x, 4);
    }
}

inline float load_value(storage_precision p, const std::uint8_t* in) noexcept {
    if (p == storage_precision::fp16) {
        std::uint16_t bits;
        std::memcpy(&bits, in, 2);
        return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits));
    }
    float x;
    std::memcpy(&x, in, 4);
    return x;
}

QAQ_NAMESPACE_END
