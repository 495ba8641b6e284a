#pragma once
// The per-element and per-group scalar core of the CUDA backend.
//
// Everything here is QAQ_HOST_DEVICE and plain C++: with nvcc it runs inside
// the kernels, with an ordinary C++ compiler it is what
// tests/cuda/test_scalar_core.cpp checks against the CPU path (exact
// equality with the shared policies and codecs), so the device arithmetic is
// unit-tested without a GPU.
//
// Why this file mirrors a few shared members instead of calling them: the bit
// policies' operator(), the codecs' fit/store/load/range and the precision
// helpers are host-only today (not QAQ_HOST_DEVICE, and fit/round_parameter
// throw). The mirrors below reproduce them operation for operation and the
// tests prove equality on the host; they go once the shared members are
// device-callable.
//
// Floating point: on the device every rounding step is an explicit
// round-to-nearest intrinsic (__fmul_rn, __fdiv_rn, ...), so nvcc can neither
// contract a * b + c into an FMA nor relax a division (--use_fast_math): the
// device results equal the CPU's operation for operation.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "qaq/bit_packing.hpp"
#include "qaq/config.hpp"
#include "qaq/group_statistics.hpp"
#include "qaq/policy/bits/bits_context.hpp"
#include "qaq/policy/bits/fixed.hpp"
#include "qaq/policy/bits/key_query_norm.hpp"
#include "qaq/policy/bits/value_attention.hpp"
#include "qaq/policy/storage/codec_parameters.hpp"
#include "qaq/policy/storage/uniform_mean_centred.hpp"
#include "qaq/policy/storage/uniform_zero_point.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN
namespace cuda {

// ---------------------------------------------------------------------------
// Correctly rounded arithmetic that no compiler may fuse or relax.
// ---------------------------------------------------------------------------
namespace scalar {

#if defined(__CUDA_ARCH__)
QAQ_HOST_DEVICE float add_rn(float a, float b) noexcept { return __fadd_rn(a, b); }
QAQ_HOST_DEVICE float sub_rn(float a, float b) noexcept { return __fsub_rn(a, b); }
QAQ_HOST_DEVICE float mul_rn(float a, float b) noexcept { return __fmul_rn(a, b); }
QAQ_HOST_DEVICE float div_rn(float a, float b) noexcept { return __fdiv_rn(a, b); }
QAQ_HOST_DEVICE double add_rn(double a, double b) noexcept { return __dadd_rn(a, b); }
QAQ_HOST_DEVICE double sub_rn(double a, double b) noexcept { return __dsub_rn(a, b); }
QAQ_HOST_DEVICE double mul_rn(double a, double b) noexcept { return __dmul_rn(a, b); }
QAQ_HOST_DEVICE double div_rn(double a, double b) noexcept { return __ddiv_rn(a, b); }
QAQ_HOST_DEVICE float round_to_integer(float x) noexcept { return rintf(x); }  // half to even
QAQ_HOST_DEVICE std::uint32_t float_bits(float x) noexcept { return __float_as_uint(x); }
QAQ_HOST_DEVICE float bits_float(std::uint32_t u) noexcept { return __uint_as_float(u); }
#else
// Host builds of the project do not enable FMA contraction (-std=c++17 implies
// -ffp-contract=off with GCC), so the plain operators are correctly rounded.
QAQ_HOST_DEVICE float add_rn(float a, float b) noexcept { return a + b; }
QAQ_HOST_DEVICE float sub_rn(float a, float b) noexcept { return a - b; }
QAQ_HOST_DEVICE float mul_rn(float a, float b) noexcept { return a * b; }
QAQ_HOST_DEVICE float div_rn(float a, float b) noexcept { return a / b; }
QAQ_HOST_DEVICE double add_rn(double a, double b) noexcept { return a + b; }
QAQ_HOST_DEVICE double sub_rn(double a, double b) noexcept { return a - b; }
QAQ_HOST_DEVICE double mul_rn(double a, double b) noexcept { return a * b; }
QAQ_HOST_DEVICE double div_rn(double a, double b) noexcept { return a / b; }
QAQ_HOST_DEVICE float round_to_integer(float x) noexcept { return std::nearbyint(x); }  // half to even
QAQ_HOST_DEVICE std::uint32_t float_bits(float x) noexcept {
    std::uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}
QAQ_HOST_DEVICE float bits_float(std::uint32_t u) noexcept {
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}
#endif

QAQ_HOST_DEVICE bool is_finite(float x) noexcept { return (float_bits(x) & 0x7f800000u) != 0x7f800000u; }

QAQ_HOST_DEVICE float infinity() noexcept { return bits_float(0x7f800000u); }

// ---------------------------------------------------------------------------
// fp16, bit for bit as the host stores it (Eigen::half: round to nearest even,
// overflow to +-Inf, NaN to the quiet NaN 0x7e00 with the sign kept).
// ---------------------------------------------------------------------------

/// The fp16 bit pattern nearest to `x` (ties to even).
QAQ_HOST_DEVICE std::uint16_t float_to_half_bits(float x) noexcept {
    std::uint32_t u = float_bits(x);
    const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u >= 0x47800000u) {  // |x| >= 65536, Inf or NaN
        return static_cast<std::uint16_t>(sign | (u > 0x7f800000u ? 0x7e00u : 0x7c00u));
    }
    if (u < 0x38800000u) {  // below 2^-14: an fp16 subnormal or zero
        if (u <= 0x33000000u) return sign;  // at most 2^-25: rounds to zero (2^-25 is a tie, to even)
        const std::uint32_t mantissa = (u & 0x7fffffu) | 0x800000u;
        const int shift = 126 - static_cast<int>(u >> 23);  // 14 .. 24
        std::uint32_t h = mantissa >> shift;
        const std::uint32_t rest = mantissa & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rest > half || (rest == half && (h & 1u))) ++h;
        return static_cast<std::uint16_t>(sign | h);
    }
    std::uint32_t h = (u - 0x38000000u) >> 13;  // re-bias the exponent, keep 10 mantissa bits
    const std::uint32_t rest = u & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // may carry into Inf: correct
    return static_cast<std::uint16_t>(sign | h);
}

/// The float an fp16 bit pattern holds (exact).
QAQ_HOST_DEVICE float half_bits_to_float(std::uint16_t h) noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    if (exponent == 0x1fu) return bits_float(sign | 0x7f800000u | (mantissa << 13));
    if (exponent == 0) {
        const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;  // m * 2^-24, exact
        return sign ? -magnitude : magnitude;
    }
    return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

/// What `x` becomes when held in `p` (qaq::round_to without Eigen).
QAQ_HOST_DEVICE float to_storage(storage_precision p, float x) noexcept {
    return p == storage_precision::fp16 ? half_bits_to_float(float_to_half_bits(x)) : x;
}

/// qaq::round_parameter_directed without exceptions: to_storage rounded toward
/// +Inf (`up`) or -Inf; `overflow` is set where the host would throw.
QAQ_HOST_DEVICE float to_storage_directed(storage_precision p, float x, bool up, bool& overflow) noexcept {
    float r = to_storage(p, x);
    overflow = overflow || !is_finite(r);
    if (p == storage_precision::fp16 && (up ? r < x : r > x)) {
        std::uint16_t h = float_to_half_bits(r);
        if ((h & 0x7fffu) == 0) h = up ? 0x0001u : 0x8001u;
        else if (((h & 0x8000u) != 0) == up) h = static_cast<std::uint16_t>(h - 1u);
        else h = static_cast<std::uint16_t>(h + 1u);
        r = half_bits_to_float(h);
        overflow = overflow || !is_finite(r);
    }
    return r;
}

/// Reads value `i` of an array stored in precision `p` (fp16 bits or fp32).
QAQ_HOST_DEVICE float read_stored(storage_precision p, const void* values, std::int64_t i) noexcept {
    if (p == storage_precision::fp16) return half_bits_to_float(static_cast<const std::uint16_t*>(values)[i]);
    return static_cast<const float*>(values)[i];
}

/// Writes value `i` of an array stored in precision `p`; `x` is already representable.
QAQ_HOST_DEVICE void write_stored(storage_precision p, void* values, std::int64_t i, float x) noexcept {
    if (p == storage_precision::fp16)
        static_cast<std::uint16_t*>(values)[i] = float_to_half_bits(x);
    else
        static_cast<float*>(values)[i] = x;
}

// ---------------------------------------------------------------------------
// Bit allocation
// ---------------------------------------------------------------------------

/// ceil(log2(y)) for y >= 1 as float32: the value the host's
/// std::ceil(std::log2(float)) gives. The device's log2f is not correctly
/// rounded (1 ulp), so the logarithm is taken in double and rounded once; for
/// every float y in [1, 2^18] this equals glibc's result (checked
/// exhaustively by tests/cuda/test_scalar_core.cpp), and above 2^18 any
/// answer >= 18 clamps to bits_max <= 16 anyway. NaN stays NaN.
QAQ_HOST_DEVICE float ceil_log2(float y) noexcept {
    return std::ceil(static_cast<float>(std::log2(static_cast<double>(y))));
}

/// qaq::bits::detail::bits_from_error on both sides: clamp(ceil(log2(R / (2E) + 1))), NaN -> bits_max.
QAQ_HOST_DEVICE int bits_from_error(float range, float twice_error, int bits_min, int bits_max) noexcept {
    const float b = ceil_log2(add_rn(div_rn(range, twice_error), 1.0f));
    if (b != b) return bits_max;  // NaN: no error budget, the most bits
    if (b <= static_cast<float>(bits_min)) return bits_min;
    if (b >= static_cast<float>(bits_max)) return bits_max;
    return static_cast<int>(b);
}

}  // namespace scalar

/// A bits policy in the form a kernel evaluates: the double-precision part of
/// each formula (one value per cache) is computed on the host by the shared
/// policy code, the float32 tail per group on the device.
///   fixed:            width
///   value_attention:  E = (1 / A) * numerator, numerator = float32(sqrt(12 / T) * eps)
///   key_query_norm:   twice_error = float32(2 * E(T)), E from key_query_norm::tolerated_error
struct device_bits {
    enum class formula : std::uint8_t { fixed, value_attention, key_query_norm };
    formula kind = formula::fixed;
    int width = 4;
    int bits_min = 0, bits_max = 0;
    int window = 1;
    float numerator = 0.0f;
    float twice_error = 0.0f;

    static constexpr bool is_device_bits = true;

    QAQ_HOST_DEVICE int operator()(const bits::context& c) const noexcept {
        switch (kind) {
            case formula::fixed: return width;
            case formula::value_attention: {
                if (c.token >= c.tokens - (window - 1)) return bits_max;  // no full window of history
                const float error = scalar::mul_rn(scalar::div_rn(1.0f, c.predicted_attention), numerator);
                return scalar::bits_from_error(c.range, scalar::mul_rn(2.0f, error), bits_min, bits_max);
            }
            case formula::key_query_norm:
                if (c.tokens <= 1) return bits_max;  // the formula divides by T - 1
                if (c.token >= c.tokens - (window - 1)) return bits_max;
                return scalar::bits_from_error(c.range, twice_error, bits_min, bits_max);
        }
        return bits_max;
    }
};

/// The device form of a library bits policy for a cache of `tokens` tokens.
inline device_bits to_device_bits(const bits::fixed& p, std::int64_t /*tokens*/) {
    device_bits d;
    d.kind = device_bits::formula::fixed;
    d.width = p.width;
    d.bits_min = d.bits_max = p.width;
    return d;
}
inline device_bits to_device_bits(const bits::value_attention& p, std::int64_t tokens) {
    device_bits d;
    d.kind = device_bits::formula::value_attention;
    d.bits_min = p.min_bits;
    d.bits_max = p.max_bits_;
    d.window = p.attention_window;
    // Exactly value_attention::operator()'s double part.
    d.numerator = static_cast<float>(std::sqrt(12.0 / static_cast<double>(tokens)) * p.target_error);
    return d;
}
inline device_bits to_device_bits(const bits::key_query_norm& p, std::int64_t tokens) {
    device_bits d;
    d.kind = device_bits::formula::key_query_norm;
    d.bits_min = p.min_bits;
    d.bits_max = p.max_bits_;
    d.window = p.attention_window;
    if (tokens > 1) d.twice_error = static_cast<float>(2.0 * p.tolerated_error(tokens));
    return d;
}
/// Any other bits policy is used as it is: its operator() must be QAQ_HOST_DEVICE.
template <class Bits>
inline const Bits& to_device_bits(const Bits& p, std::int64_t /*tokens*/) {
    return p;
}

// ---------------------------------------------------------------------------
// Outliers (docs/method.md, "Outliers")
// ---------------------------------------------------------------------------
namespace scalar {

/// k_lo = ceil((a / 2) * N), k_hi = floor((1 - a / 2) * N), the products in double.
QAQ_HOST_DEVICE void quantile_ranks(double ratio, std::int64_t finite, std::int64_t& k_lo, std::int64_t& k_hi) noexcept {
    const double half_ratio = div_rn(ratio, 2.0);
    k_lo = static_cast<std::int64_t>(std::ceil(mul_rn(half_ratio, static_cast<double>(finite))));
    k_hi = static_cast<std::int64_t>(std::floor(mul_rn(sub_rn(1.0, half_ratio), static_cast<double>(finite))));
}

/// x is stored exactly: non-finite, or outside (lo, hi]. Without quantile
/// outliers lo = -Inf and hi = +Inf, which leaves only the non-finite test.
QAQ_HOST_DEVICE bool is_outlier(float x, float lo, float hi) noexcept { return !is_finite(x) || x <= lo || x > hi; }

// ---------------------------------------------------------------------------
// Codecs with an affine form (uniform_mean_centred, uniform_zero_point)
// ---------------------------------------------------------------------------

/// 2^bits - 1 as float (uniform_zero_point's step count).
QAQ_HOST_DEVICE float zero_point_steps(int bits) noexcept { return static_cast<float>((1u << bits) - 1u); }

/// `codec.fit(stats, bits)` without exceptions: `overflow` is set where the
/// host's round_parameter would throw (a parameter fp16 cannot hold).
QAQ_HOST_DEVICE codec_parameters fit(const storage::uniform_mean_centred& codec, const group_statistics& s, int bits,
                                     bool& overflow) noexcept {
    const float steps = static_cast<float>(1u << bits);  // std::ldexp(1.0f, bits)
    codec_parameters p;
    if (s.count == 0) return p;
    auto rounded = [&](float v) {
        const float r = to_storage(codec.precision, v);
        overflow = overflow || !is_finite(r);
        return r;
    };
    if (codec.symmetric) {
        p.scale = rounded(div_rn(mul_rn(2.0f, s.absmax), steps));
    } else {
        p.centre = rounded(s.mean);
        p.scale = rounded(div_rn(sub_rn(s.max, s.min), steps));
    }
    return p;
}
QAQ_HOST_DEVICE void store(const storage::uniform_mean_centred& codec, const codec_parameters& p, float* stored) noexcept {
    if (codec.symmetric) {
        stored[0] = p.scale;
    } else {
        stored[0] = p.centre;
        stored[1] = p.scale;
    }
}
QAQ_HOST_DEVICE codec_parameters load(const storage::uniform_mean_centred& codec, const float* stored, int /*bits*/) noexcept {
    return codec.symmetric ? codec_parameters{0.0f, stored[0]} : codec_parameters{stored[0], stored[1]};
}

QAQ_HOST_DEVICE codec_parameters load(const storage::uniform_zero_point& codec, const float* stored, int bits) noexcept {
    if (!codec.symmetric) return {stored[0], stored[1]};
    if (bits == 0) return {0.0f, 0.0f};
    const float absmax = stored[0];
    return {-absmax, div_rn(mul_rn(2.0f, absmax), zero_point_steps(bits))};
}
QAQ_HOST_DEVICE codec_parameters fit(const storage::uniform_zero_point& codec, const group_statistics& s, int bits,
                                     bool& overflow) noexcept {
    if (s.count == 0) return {};
    auto rounded = [&](float v) {
        const float r = to_storage(codec.precision, v);
        overflow = overflow || !is_finite(r);
        return r;
    };
    float stored[2] = {0.0f, 0.0f};
    if (codec.symmetric) {
        stored[0] = to_storage_directed(codec.precision, s.absmax, true, overflow);
    } else if (bits == 0) {
        stored[0] = rounded(add_rn(s.min, div_rn(sub_rn(s.max, s.min), 2.0f)));
        stored[1] = 0.0f;
    } else if (codec.precision == storage_precision::fp16) {
        // storage::uniform_zero_point::fit: z down, s up until z + (2^B - 1) s >= max (in double).
        const float z = to_storage_directed(codec.precision, s.min, false, overflow);
        const float steps = zero_point_steps(bits);
        float step = to_storage_directed(codec.precision, div_rn(sub_rn(s.max, z), steps), true, overflow);
        while (!overflow && add_rn(static_cast<double>(z), mul_rn(static_cast<double>(steps), static_cast<double>(step))) <
                                static_cast<double>(s.max))
            step = to_storage_directed(codec.precision, bits_float(float_bits(step) + 1u), true, overflow);
        stored[0] = z;
        stored[1] = step;
    } else {
        stored[0] = rounded(s.min);
        stored[1] = rounded(div_rn(sub_rn(s.max, s.min), zero_point_steps(bits)));
    }
    return load(codec, stored, bits);
}
QAQ_HOST_DEVICE void store(const storage::uniform_zero_point& codec, const codec_parameters& p, float* stored) noexcept {
    if (codec.symmetric) {
        stored[0] = -p.centre;  // the zero point is -max|x|
    } else {
        stored[0] = p.centre;
        stored[1] = p.scale;
    }
}

/// The range R the bit formulas read (codec.range(stats) for the uniform codecs).
template <class Codec>
QAQ_HOST_DEVICE float range(const Codec& codec, const group_statistics& s) noexcept {
    return s.range(codec.symmetric);
}

/// Parameters stored per group (codec.stored_parameter_count()).
template <class Codec>
QAQ_HOST_DEVICE int parameter_count(const Codec& codec) noexcept {
    return codec.symmetric ? 1 : 2;
}

/// The affine encode of the CPU backend: clamp(rint((x - c) / s), lowest, highest) + bias; bias when s == 0.
QAQ_HOST_DEVICE std::uint32_t affine_encode(const affine_code& a, float x) noexcept {
    if (!(a.scale > 0.0f)) return static_cast<std::uint32_t>(a.bias);
    float q = round_to_integer(div_rn(sub_rn(x, a.centre), a.scale));
    q = q < a.lowest ? a.lowest : q;
    q = q > a.highest ? a.highest : q;
    return static_cast<std::uint32_t>(static_cast<std::int32_t>(add_rn(q, a.bias)));
}

/// The affine decode: (code - bias) * s + c, the product rounded before the sum.
QAQ_HOST_DEVICE float affine_decode(const affine_code& a, std::uint32_t code) noexcept {
    return add_rn(mul_rn(sub_rn(static_cast<float>(code), a.bias), a.scale), a.centre);
}

// ---------------------------------------------------------------------------
// Code packing (the layout of qaq/bit_packing.hpp: LSB first, group start byte aligned)
// ---------------------------------------------------------------------------

/// Packs `count` <= 8 codes (each < 2^bits, bits 1..16) into
/// packed_code_bytes(count, bits) bytes at `out`. Codes 8k .. 8k+7 of a group
/// are exactly bytes [k * bits, (k + 1) * bits) of its stream, so each device
/// thread packs its own eight codes with no cross-thread traffic.
QAQ_HOST_DEVICE void pack8(const std::uint32_t* codes, int count, int bits, std::uint8_t* out) noexcept {
    std::uint64_t word[2] = {0, 0};
    for (int k = 0; k < count; ++k) {
        const int position = k * bits;
        const std::uint64_t code = codes[k];
        if (position < 64) {
            word[0] |= code << position;
            if (position + bits > 64) word[1] |= code >> (64 - position);
        } else {
            word[1] |= code << (position - 64);
        }
    }
    const int bytes = static_cast<int>(packed_code_bytes(count, bits));
    for (int b = 0; b < bytes; ++b) out[b] = static_cast<std::uint8_t>(word[b >> 3] >> ((b & 7) * 8));
}

}  // namespace scalar

/// A uniform codec as a runtime value, so that one kernel serves both codecs
/// (the branch is uniform across a launch). Everything it does is the typed
/// codec's: the shared QAQ_HOST_DEVICE affine() and decode(), and the scalar
/// mirrors of fit/store/load above.
struct device_codec {
    codec_kind kind = codec_kind::uniform_zero_point;
    bool symmetric = false;
    storage_precision precision = storage_precision::fp16;

    static device_codec of(const storage::uniform_mean_centred& c) noexcept {
        return {codec_kind::uniform_mean_centred, c.symmetric, c.precision};
    }
    static device_codec of(const storage::uniform_zero_point& c) noexcept {
        return {codec_kind::uniform_zero_point, c.symmetric, c.precision};
    }

    QAQ_HOST_DEVICE storage::uniform_mean_centred mean_centred() const noexcept {
        storage::uniform_mean_centred c;
        c.symmetric = symmetric;
        c.precision = precision;
        return c;
    }
    QAQ_HOST_DEVICE storage::uniform_zero_point zero_point() const noexcept {
        storage::uniform_zero_point c;
        c.symmetric = symmetric;
        c.precision = precision;
        return c;
    }

    /// Stored parameters per group (1 symmetric, 2 asymmetric, for both codecs).
    QAQ_HOST_DEVICE int parameter_count() const noexcept { return symmetric ? 1 : 2; }

    QAQ_HOST_DEVICE codec_parameters fit(const group_statistics& s, int bits, bool& overflow) const noexcept {
        return kind == codec_kind::uniform_mean_centred ? scalar::fit(mean_centred(), s, bits, overflow)
                                                        : scalar::fit(zero_point(), s, bits, overflow);
    }
    /// Writes group g's stored parameters into `parameters` (P values per group, in `precision`).
    QAQ_HOST_DEVICE void store(const codec_parameters& p, void* parameters, std::int64_t g) const noexcept {
        float stored[2] = {0.0f, 0.0f};
        if (kind == codec_kind::uniform_mean_centred)
            scalar::store(mean_centred(), p, stored);
        else
            scalar::store(zero_point(), p, stored);
        const int count = parameter_count();
        for (int k = 0; k < count; ++k) scalar::write_stored(precision, parameters, g * count + k, stored[k]);
    }
    /// Group g's parameters as the codec reconstructs from them.
    QAQ_HOST_DEVICE codec_parameters load(const void* parameters, std::int64_t g, int bits) const noexcept {
        const int count = parameter_count();
        float stored[2] = {0.0f, 0.0f};
        for (int k = 0; k < count; ++k) stored[k] = scalar::read_stored(precision, parameters, g * count + k);
        return kind == codec_kind::uniform_mean_centred ? scalar::load(mean_centred(), stored, bits)
                                                        : scalar::load(zero_point(), stored, bits);
    }
    /// The shared affine form (bits >= 1).
    QAQ_HOST_DEVICE affine_code affine(const codec_parameters& p, int bits) const noexcept {
        return kind == codec_kind::uniform_mean_centred ? mean_centred().affine(p, bits) : zero_point().affine(p, bits);
    }
    /// The one value every non-outlier of a 0-bit group is reconstructed at (the shared decode).
    QAQ_HOST_DEVICE float decode_zero_bits(const codec_parameters& p) const noexcept {
        return kind == codec_kind::uniform_mean_centred ? mean_centred().decode(0u, p, 0) : zero_point().decode(0u, p, 0);
    }
    /// Reconstructs code `code` of a `bits`-wide group (outliers are restored separately).
    QAQ_HOST_DEVICE float decode(const codec_parameters& p, int bits, std::uint32_t code) const noexcept {
        return bits == 0 ? decode_zero_bits(p) : scalar::affine_decode(affine(p, bits), code);
    }
};

}  // namespace cuda
QAQ_NAMESPACE_END
