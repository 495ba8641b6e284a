#pragma once
// The scalar reference implementation of qaq's quantizers: the test oracle
// for the packed CPU backend and the CUDA backend.
//
// It follows docs/method.md ("The method as implemented") line by line, one
// element at a time, with no vectorisation and no shortcuts; comments cite the
// section of docs/method.md each step implements. Speed is not a goal.
//
// Floating-point conventions (docs/method.md, "Bit allocation"): arithmetic is
// float32 unless the spec marks it double. Every product that is followed by
// an addition goes through `detail::rounded_product`, so a compiler allowed
// to contract a * b + c into a fused multiply-add cannot change the result:
// the oracle computes exactly the float32 expressions written in the spec.

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>
#include <vector>

#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/quantizer_config.hpp"
#include "qaq/reference/normal_quantiles.hpp"
#include "qaq/tensor_view.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN
namespace reference {

/// Everything the reference computes for one cache.
struct result {
    /// x' per element, contiguous [L, B, H, T, D].
    std::vector<float> dequantized;
    /// One bit width per group, in the group order of docs/method.md ("Groups").
    /// Empty when the quantizer is disabled.
    std::vector<int> bits;
    /// 1 where the element is an outlier (stored exactly), contiguous [L, B, H, T, D].
    std::vector<std::uint8_t> outlier_mask;
    /// [B, T] (token), [B, T, L] (layer), [B, T, L, H] (head), [B, T, L, H, D/G] (sub_head);
    /// empty when the quantizer is disabled.
    std::vector<std::int64_t> bits_shape;
    /// mean(bits) * (1 - a) + 16 a; 16 when the quantizer is disabled.
    double average_bits_reference = 16.0;
    /// average_bits_reference + 16 * params / group_size; 16 when disabled.
    double bits_per_element_reference = 16.0;
    /// 16 / bits_per_element_reference; 1 when disabled.
    double compression_ratio_reference = 1.0;
};

/// Statistics of a group's non-outlier values (docs/method.md, "Statistics over non-outliers").
/// All fields are 0 when the group has no non-outlier.
struct group_statistics {
    std::int64_t count = 0;  ///< number of non-outliers
    float min = 0.0f;
    float max = 0.0f;
    float absmax = 0.0f;  ///< max |x|
    float mean = 0.0f;    ///< sum accumulated in double / count in double, rounded to float32
    float std = 0.0f;     ///< sample standard deviation (count - 1) in double, rounded; 0 if count < 2

    /// R of the bit formulas, in float32: max - min (asymmetric), 2 * absmax
    /// (symmetric), 0 when there is no non-outlier.
    float range(bool symmetric) const noexcept {
        if (count == 0) return 0.0f;
        return symmetric ? 2.0f * absmax : max - min;
    }
};

namespace detail {

/// a * b rounded to the type's precision before the caller adds anything to it.
/// The volatile store is what forbids fusing the product into a later addition.
inline float rounded_product(float a, float b) noexcept {
    volatile float product = a * b;
    return product;
}
inline double rounded_product(double a, double b) noexcept {
    volatile double product = a * b;
    return product;
}

/// The value `x` becomes when held in `precision`: itself in fp32, the nearest
/// fp16 (round half to even; overflow gives +-Inf, NaN stays NaN) in fp16.
inline float to_storage(storage_precision precision, float x) noexcept {
    if (precision == storage_precision::fp16) return static_cast<float>(Eigen::half(x));
    return x;
}

/// A codec parameter as stored (docs/method.md, "Codecs": parameters are rounded
/// to the storage precision before encoding). A finite parameter that fp16
/// cannot hold is an error rather than a silent Inf.
inline float stored_parameter(storage_precision precision, float value, const char* name) {
    const float stored = to_storage(precision, value);
    QAQ_CHECK(std::isfinite(stored), "group parameter ", name, " = ", value,
              " does not fit fp16 parameter storage (expected |value| <= 65504); use storage_precision::fp32");
    return stored;
}

/// stored_parameter rounded toward +Inf (`up`) or -Inf instead of to nearest
/// (docs/method.md, "Codecs": uniform_zero_point's fp16 parameters). fp32: `value`.
inline float stored_parameter_directed(storage_precision precision, float value, bool up, const char* name) {
    float stored = stored_parameter(precision, value, name);
    if (precision == storage_precision::fp16 && (up ? stored < value : stored > value)) {
        // One fp16 step in that direction: the bit pattern's magnitude +-1 (from +-0, the smallest subnormal).
        auto bits = Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(stored));
        const bool negative = (bits & 0x8000u) != 0;
        if ((bits & 0x7fffu) == 0) bits = up ? 0x0001u : 0x8001u;
        else bits = static_cast<std::uint16_t>(negative == up ? bits - 1u : bits + 1u);
        stored = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits));
        QAQ_CHECK(std::isfinite(stored), "group parameter ", name, " = ", value,
                  " does not fit fp16 parameter storage (expected |value| <= 65504); use storage_precision::fp32");
    }
    return stored;
}

/// The normal codec's tables for `bits`, built once per width on first use.
struct normal_table {
    std::vector<float> boundaries;
    std::vector<float> centres;
};

inline const normal_table& normal_table_for(int bits) {
    QAQ_CHECK(bits >= 0 && bits <= max_bits, "normal codec bits is ", bits, ", expected 0..", max_bits);
    static std::array<std::once_flag, max_bits + 1> built;
    static std::array<normal_table, max_bits + 1> tables;
    const auto index = static_cast<std::size_t>(bits);
    std::call_once(built[index], [&] {
        tables[index].boundaries = normal_boundaries(bits);
        tables[index].centres = normal_centres(bits);
    });
    return tables[index];
}

/// ceil(log2(...)) as float32, clamped to [bits_min, bits_max] (docs/method.md,
/// "Bit allocation"). NaN (0/0 or Inf/Inf in the formula) is not covered by
/// the spec; the reference takes the conservative bits_max.
inline int clamp_bits(float unclamped, const quantizer_config& config) noexcept {
    if (std::isnan(unclamped)) return config.bits_max;
    if (unclamped <= static_cast<float>(config.bits_min)) return config.bits_min;
    if (unclamped >= static_cast<float>(config.bits_max)) return config.bits_max;
    return static_cast<int>(unclamped);
}

/// 2^bits as float32 (exact for bits <= 16).
inline float power_of_two(int bits) noexcept { return static_cast<float>(std::int64_t{1} << bits); }

}  // namespace detail

// ---------------------------------------------------------------------------
// Outliers (docs/method.md, "Outliers (quantile policy, ratio a)")
// ---------------------------------------------------------------------------

/// 1 for each element of the group that is stored exactly: every non-finite
/// value, plus (when ratio > 0), among the N finite values,
///   k_lo = ceil((a / 2) * N), k_hi = floor((1 - a / 2) * N)   (double)
///   lo = k_lo-th smallest, hi = k_hi-th smallest (-Inf if k_hi == 0)
///   outlier <=> x <= lo or x > hi.
inline std::vector<std::uint8_t> outlier_mask(const float* group, std::int64_t n, double ratio) {
    QAQ_CHECK(n >= 0, "group size is ", n, ", expected >= 0");
    QAQ_CHECK(n == 0 || group != nullptr, "group data is null for a group of ", n, " elements");
    QAQ_CHECK(ratio >= 0.0 && ratio < 1.0, "outlier ratio is ", ratio, ", expected a value in [0, 1)");

    std::vector<std::uint8_t> mask(static_cast<std::size_t>(n), 0);
    std::vector<float> finite_sorted;
    for (std::int64_t i = 0; i < n; ++i) {
        if (std::isfinite(group[i]))
            finite_sorted.push_back(group[i]);
        else
            mask[static_cast<std::size_t>(i)] = 1;  // NaN and +-Inf: always outliers
    }
    if (ratio == 0.0 || finite_sorted.empty()) return mask;

    std::sort(finite_sorted.begin(), finite_sorted.end());
    const double count = static_cast<double>(finite_sorted.size());
    const auto k_lo = static_cast<std::int64_t>(std::ceil((ratio / 2.0) * count));
    const auto k_hi = static_cast<std::int64_t>(std::floor((1.0 - ratio / 2.0) * count));
    // 0 < ratio < 1 and N >= 1 give 1 <= k_lo <= N and 0 <= k_hi <= N.
    const float lo = finite_sorted[static_cast<std::size_t>(k_lo - 1)];
    const float hi = k_hi == 0 ? -std::numeric_limits<float>::infinity()
                               : finite_sorted[static_cast<std::size_t>(k_hi - 1)];
    for (std::int64_t i = 0; i < n; ++i) {
        const float x = group[i];
        if (std::isfinite(x) && (x <= lo || x > hi)) mask[static_cast<std::size_t>(i)] = 1;
    }
    return mask;
}

// ---------------------------------------------------------------------------
// Statistics (docs/method.md, "Statistics over non-outliers")
// ---------------------------------------------------------------------------

/// Statistics over the elements whose `is_outlier` entry is 0 (all elements
/// when `is_outlier` is null). The caller's mask must mark every non-finite
/// value, as outlier_mask does.
inline group_statistics statistics(const float* group, const std::uint8_t* is_outlier, std::int64_t n) {
    QAQ_CHECK(n >= 0, "group size is ", n, ", expected >= 0");
    QAQ_CHECK(n == 0 || group != nullptr, "group data is null for a group of ", n, " elements");

    group_statistics s;
    double sum = 0.0;
    float min = std::numeric_limits<float>::infinity();
    float max = -std::numeric_limits<float>::infinity();
    float absmax = 0.0f;
    for (std::int64_t i = 0; i < n; ++i) {
        if (is_outlier != nullptr && is_outlier[i] != 0) continue;
        const float x = group[i];
        ++s.count;
        min = std::min(min, x);
        max = std::max(max, x);
        absmax = std::max(absmax, std::fabs(x));
        sum += static_cast<double>(x);
    }
    if (s.count == 0) return s;  // no quantized part: every statistic stays 0

    s.min = min;
    s.max = max;
    s.absmax = absmax;
    const double mean = sum / static_cast<double>(s.count);
    s.mean = static_cast<float>(mean);
    if (s.count >= 2) {
        // Second pass around the double mean, squares accumulated in double.
        double squares = 0.0;
        for (std::int64_t i = 0; i < n; ++i) {
            if (is_outlier != nullptr && is_outlier[i] != 0) continue;
            const double deviation = static_cast<double>(group[i]) - mean;
            squares += detail::rounded_product(deviation, deviation);
        }
        s.std = static_cast<float>(std::sqrt(squares / static_cast<double>(s.count - 1)));
    }
    return s;
}

// ---------------------------------------------------------------------------
// Bit allocation (docs/method.md, "Bit allocation")
// ---------------------------------------------------------------------------

/// value_attention: E = (1 / A) * float32(sqrt(12 / T) * eps [double]) (PyTorch's
/// evaluation of the original's `c / A`),
/// bits = clamp(ceil(log2(R / (2 * E) + 1)), bits_min, bits_max), all float32.
/// A = 0 gives E = Inf and so bits_min. The no-history rule is the caller's
/// (it depends on the token's position, see quantize()).
inline int value_attention_bits(float range, float predicted_attention, std::int64_t tokens,
                                const quantizer_config& config) {
    QAQ_CHECK(tokens >= 1, "token count is ", tokens, ", expected >= 1");
    QAQ_CHECK(std::isfinite(predicted_attention) && predicted_attention >= 0.0f, "predicted attention is ",
              predicted_attention, ", expected a finite value >= 0");
    const double target = std::sqrt(12.0 / static_cast<double>(tokens)) * config.target_error;  // double
    const float tolerated_error = (1.0f / predicted_attention) * static_cast<float>(target);    // float32
    const float unclamped = std::ceil(std::log2(range / (2.0f * tolerated_error) + 1.0f));
    return detail::clamp_bits(unclamped, config);
}

/// key_query_norm: E = sqrt(12 / qn * ln(T^3 / (T - 1) * eps^2 + 1)) in double,
/// bits = clamp(ceil(log2(R / float32(2 * E) + 1)), bits_min, bits_max) in float32.
/// T = 1 (division by zero in the formula) gives bits_max.
inline int key_query_norm_bits(float range, std::int64_t tokens, const quantizer_config& config) {
    QAQ_CHECK(tokens >= 1, "token count is ", tokens, ", expected >= 1");
    if (tokens == 1) return config.bits_max;
    const double t = static_cast<double>(tokens);
    const double eps = config.target_error;
    const double log_argument = detail::rounded_product(t * t * t / (t - 1.0), eps * eps) + 1.0;
    const double tolerated_error = std::sqrt(12.0 / config.q_norm * std::log(log_argument));
    const float twice_error = static_cast<float>(2.0 * tolerated_error);
    const float unclamped = std::ceil(std::log2(range / twice_error + 1.0f));
    return detail::clamp_bits(unclamped, config);
}

// ---------------------------------------------------------------------------
// Codecs (docs/method.md, "Codecs (section 6), per group with B bits")
// ---------------------------------------------------------------------------

namespace detail {

/// uniform_mean_centred, the reference codec.
inline void reconstruct_mean_centred(const quantizer_config& config, int bits, const group_statistics& s,
                                     const float* group, const std::uint8_t* is_outlier, std::int64_t n,
                                     float* out) {
    const bool symmetric = config.symmetric;
    // Asymmetric: c = mean. Symmetric: c = 0.
    const float centre = symmetric ? 0.0f : stored_parameter(config.precision, s.mean, "mean");
    // s = (max - min) / 2^B (asymmetric) or 2 * absmax / 2^B (symmetric), i.e. R / 2^B.
    const float scale = stored_parameter(config.precision, s.range(symmetric) / power_of_two(bits), "scale");
    if (bits == 0) {
        // B = 0: the original clamps codes to [-0.5, -0.5] and torch.clamp promotes
        // them to float, so every non-outlier is x' = -0.5 * s + c with s = R.
        for (std::int64_t i = 0; i < n; ++i)
            if (is_outlier == nullptr || is_outlier[i] == 0) out[i] = rounded_product(-0.5f, scale) + centre;
        return;
    }
    const float lowest_code = -power_of_two(bits - 1);        // -2^(B-1)
    const float highest_code = power_of_two(bits - 1) - 1.0f;  // 2^(B-1) - 1
    for (std::int64_t i = 0; i < n; ++i) {
        if (is_outlier != nullptr && is_outlier[i] != 0) continue;
        if (scale == 0.0f) {
            out[i] = centre;  // s == 0 (constant group): x' = c
            continue;
        }
        // q = clamp(rint((x - c) / s), -2^(B-1), 2^(B-1) - 1), rint = half to even.
        float q = std::nearbyint((group[i] - centre) / scale);
        q = std::min(std::max(q, lowest_code), highest_code);
        out[i] = rounded_product(q, scale) + centre;  // x' = q * s + c
    }
}

/// uniform_zero_point: 2^B - 1 steps over [min, max] (or [-absmax, absmax]).
inline void reconstruct_zero_point(const quantizer_config& config, int bits, const group_statistics& s,
                                   const float* group, const std::uint8_t* is_outlier, std::int64_t n,
                                   float* out) {
    const bool symmetric = config.symmetric;
    if (bits == 0) {
        // B = 0: x' = z + (max - min) / 2, the midpoint (0 if symmetric); the
        // midpoint is the one stored parameter.
        const float midpoint =
            symmetric ? 0.0f : stored_parameter(config.precision, s.min + (s.max - s.min) / 2.0f, "midpoint");
        for (std::int64_t i = 0; i < n; ++i)
            if (is_outlier == nullptr || is_outlier[i] == 0) out[i] = midpoint;
        return;
    }
    const float steps = power_of_two(bits) - 1.0f;  // 2^B - 1
    float zero_point = 0.0f;
    float scale = 0.0f;
    if (symmetric) {
        // One stored parameter, absmax (fp16: rounded up): z = -absmax, s = 2 * absmax / (2^B - 1).
        const float absmax = stored_parameter_directed(config.precision, s.absmax, true, "absmax");
        zero_point = -absmax;
        scale = 2.0f * absmax / steps;
        // The packed path refuses such a group (its range 2 * absmax overflows float32); so does the oracle,
        // rather than reconstructing 0 * Inf = NaN.
        QAQ_CHECK(std::isfinite(scale), "a group's range overflows float32 (2 * absmax = ", 2.0f * absmax,
                  "); values must be below 1.7e38 in magnitude");
    } else if (config.precision == storage_precision::fp16) {
        // fp16: z = min rounded down, s = (max - z) / (2^B - 1) rounded up, then raised one fp16
        // step at a time until z + (2^B - 1) s >= max (in double): [min, max] is covered.
        zero_point = stored_parameter_directed(config.precision, s.min, false, "min");
        scale = stored_parameter_directed(config.precision, (s.max - zero_point) / steps, true, "scale");
        while (static_cast<double>(zero_point) + static_cast<double>(steps) * static_cast<double>(scale) <
               static_cast<double>(s.max))
            scale = stored_parameter_directed(config.precision, std::nextafter(scale, HUGE_VALF), true, "scale");
    } else {
        // fp32: z = min, s = (max - min) / (2^B - 1), both stored.
        zero_point = stored_parameter(config.precision, s.min, "min");
        scale = stored_parameter(config.precision, (s.max - s.min) / steps, "scale");
    }
    for (std::int64_t i = 0; i < n; ++i) {
        if (is_outlier != nullptr && is_outlier[i] != 0) continue;
        if (scale == 0.0f) {
            out[i] = zero_point;  // s == 0: x' = z
            continue;
        }
        // q = clamp(rint((x - z) / s), 0, 2^B - 1).
        float q = std::nearbyint((group[i] - zero_point) / scale);
        q = std::min(std::max(q, 0.0f), steps);
        out[i] = rounded_product(q, scale) + zero_point;  // x' = q * s + z
    }
}

/// normal: standard-normal quantile bins around c = mean (0 if symmetric), s = std.
inline void reconstruct_normal(const quantizer_config& config, int bits, const group_statistics& s,
                               const float* group, const std::uint8_t* is_outlier, std::int64_t n, float* out) {
    const float centre = config.symmetric ? 0.0f : stored_parameter(config.precision, s.mean, "mean");
    if (bits == 0) {
        // B = 0: every non-outlier at c.
        for (std::int64_t i = 0; i < n; ++i)
            if (is_outlier == nullptr || is_outlier[i] == 0) out[i] = centre;
        return;
    }
    // The symmetric variant keeps the std around the mean (as the reference does).
    const float scale = stored_parameter(config.precision, s.std, "std");
    const normal_table& table = normal_table_for(bits);
    for (std::int64_t i = 0; i < n; ++i) {
        if (is_outlier != nullptr && is_outlier[i] != 0) continue;
        if (scale == 0.0f) {
            out[i] = centre;  // s == 0: x' = c
            continue;
        }
        const float z = (group[i] - centre) / scale;
        // q = the first i with u_i >= z (the last boundary is +Inf, so one exists).
        const auto first_not_below = std::lower_bound(table.boundaries.begin(), table.boundaries.end(), z);
        const auto q = static_cast<std::size_t>(first_not_below - table.boundaries.begin());
        out[i] = rounded_product(table.centres[q], scale) + centre;  // x' = Phi^-1((q + 0.5) / 2^B) * s + c
    }
}

}  // namespace detail

/// Reconstructs one group stored with `bits` bits: statistics over the
/// non-outliers, the configured codec with parameters rounded to the storage
/// precision, then every outlier written back (exact in fp32, nearest fp16 in
/// fp16). `is_outlier` null means no element is an outlier.
inline void reconstruct_group(const quantizer_config& config, int bits, const float* group,
                              const std::uint8_t* is_outlier, std::int64_t n, float* out) {
    QAQ_CHECK(bits >= 0 && bits <= max_bits, "bits is ", bits, ", expected 0..", max_bits);
    QAQ_CHECK(n >= 0, "group size is ", n, ", expected >= 0");
    QAQ_CHECK(n == 0 || (group != nullptr && out != nullptr), "group input or output is null for a group of ", n,
              " elements");
    const group_statistics s = statistics(group, is_outlier, n);
    if (s.count > 0) {
        switch (config.codec) {
            case codec_kind::uniform_mean_centred:
                detail::reconstruct_mean_centred(config, bits, s, group, is_outlier, n, out);
                break;
            case codec_kind::uniform_zero_point:
                detail::reconstruct_zero_point(config, bits, s, group, is_outlier, n, out);
                break;
            case codec_kind::normal:
                detail::reconstruct_normal(config, bits, s, group, is_outlier, n, out);
                break;
        }
    }
    // Outliers are written back after reconstruction.
    for (std::int64_t i = 0; i < n; ++i)
        if (is_outlier != nullptr && is_outlier[i] != 0) out[i] = detail::to_storage(config.precision, group[i]);
}

// ---------------------------------------------------------------------------
// Groups and attention (docs/method.md, "Tensors" and "Groups")
// ---------------------------------------------------------------------------

namespace detail {

/// One element of a group, by its cache coordinates.
struct group_member {
    std::int64_t layer, head, dim;
};

/// One group: its (batch, token) and its elements in the spec's element order.
struct group_description {
    std::int64_t batch = 0;
    std::int64_t token = 0;
    std::vector<group_member> members;
};

/// Calls visit(group) for every group, in the order of the bit array
/// (docs/method.md, "Groups" table). One description is reused, so nothing
/// proportional to the cache is held at once.
template <class Visit>
void for_each_group(group_level level, const kv_shape& shape, std::int64_t group_dims, Visit&& visit) {
    group_description g;
    for (std::int64_t b = 0; b < shape.batch; ++b) {
        for (std::int64_t t = 0; t < shape.tokens; ++t) {
            g.batch = b;
            g.token = t;
            switch (level) {
                case group_level::token:  // group (b, t): (l, h, d) over all L, H, D
                    g.members.clear();
                    for (std::int64_t l = 0; l < shape.layers; ++l)
                        for (std::int64_t h = 0; h < shape.heads; ++h)
                            for (std::int64_t d = 0; d < shape.head_dim; ++d) g.members.push_back({l, h, d});
                    visit(g);
                    break;
                case group_level::layer:  // group (b, t, l): (h, d) over all H, D
                    for (std::int64_t l = 0; l < shape.layers; ++l) {
                        g.members.clear();
                        for (std::int64_t h = 0; h < shape.heads; ++h)
                            for (std::int64_t d = 0; d < shape.head_dim; ++d) g.members.push_back({l, h, d});
                        visit(g);
                    }
                    break;
                case group_level::head:  // group (b, t, l, h): d over D
                    for (std::int64_t l = 0; l < shape.layers; ++l)
                        for (std::int64_t h = 0; h < shape.heads; ++h) {
                            g.members.clear();
                            for (std::int64_t d = 0; d < shape.head_dim; ++d) g.members.push_back({l, h, d});
                            visit(g);
                        }
                    break;
                case group_level::sub_head:  // group (b, t, l, h, s): d over G*s .. G*s + G - 1
                    for (std::int64_t l = 0; l < shape.layers; ++l)
                        for (std::int64_t h = 0; h < shape.heads; ++h)
                            for (std::int64_t s = 0; s < shape.head_dim / group_dims; ++s) {
                                g.members.clear();
                                for (std::int64_t d = group_dims * s; d < group_dims * s + group_dims; ++d)
                                    g.members.push_back({l, h, d});
                                visit(g);
                            }
                    break;
            }
        }
    }
}

/// Elements per group at `level`.
inline std::int64_t group_size(group_level level, const kv_shape& shape, std::int64_t group_dims) {
    switch (level) {
        case group_level::token: return shape.layers * shape.heads * shape.head_dim;
        case group_level::layer: return shape.heads * shape.head_dim;
        case group_level::head: return shape.head_dim;
        case group_level::sub_head: return group_dims;
    }
    return 0;
}

inline std::vector<std::int64_t> bits_shape(group_level level, const kv_shape& shape, std::int64_t group_dims) {
    switch (level) {
        case group_level::token: return {shape.batch, shape.tokens};
        case group_level::layer: return {shape.batch, shape.tokens, shape.layers};
        case group_level::head: return {shape.batch, shape.tokens, shape.layers, shape.heads};
        case group_level::sub_head:
            return {shape.batch, shape.tokens, shape.layers, shape.heads, shape.head_dim / group_dims};
    }
    return {};
}

/// Throws unless `attention` fits a cache of `shape` (docs/method.md, "Tensors")
/// and holds finite, non-negative probabilities.
inline void check_attention(attention_view<const float> attention, const kv_shape& shape) {
    const attention_shape& a = attention.shape;
    QAQ_CHECK(attention.data != nullptr,
              "value_attention bits need attention probabilities [L, B, query_heads, rows, T]; none were given");
    QAQ_CHECK(a.layers == shape.layers, "attention shape ", to_string(a), " has ", a.layers,
              " layers, expected the cache's ", shape.layers);
    QAQ_CHECK(a.batch == shape.batch, "attention shape ", to_string(a), " has batch ", a.batch,
              ", expected the cache's ", shape.batch);
    QAQ_CHECK(a.tokens == shape.tokens, "attention shape ", to_string(a), " covers ", a.tokens,
              " tokens, expected the cache's ", shape.tokens);
    QAQ_CHECK(a.query_heads >= 1 && a.query_heads % shape.heads == 0, "attention shape ", to_string(a), " has ",
              a.query_heads, " query heads, expected a positive multiple of the cache's ", shape.heads,
              " KV heads");
    QAQ_CHECK(a.rows >= 1, "attention shape ", to_string(a), " has ", a.rows, " rows, expected >= 1");
    for (std::int64_t l = 0; l < a.layers; ++l)
        for (std::int64_t b = 0; b < a.batch; ++b)
            for (std::int64_t q = 0; q < a.query_heads; ++q)
                for (std::int64_t r = 0; r < a.rows; ++r)
                    for (std::int64_t t = 0; t < a.tokens; ++t) {
                        const float p = attention(l, b, q, r, t);
                        QAQ_CHECK(std::isfinite(p) && p >= 0.0f, "attention probability at [", l, ", ", b, ", ",
                                  q, ", ", r, ", ", t, "] is ", p, ", expected a finite value >= 0");
                    }
}

/// P(l, b, h, t) = max over the last `window` rows (all rows if fewer) and
/// over the query heads q of KV head h (q / (Hq / H) == h), contiguous [L, B, H, T].
inline std::vector<float> predicted_attention(attention_view<const float> attention, const kv_shape& shape,
                                              int window) {
    const std::int64_t rows = attention.shape.rows;
    const std::int64_t first_row = std::max<std::int64_t>(0, rows - window);
    const std::int64_t query_heads_per_kv_head = attention.shape.query_heads / shape.heads;
    std::vector<float> predicted(static_cast<std::size_t>(shape.layers * shape.batch * shape.heads * shape.tokens));
    std::size_t index = 0;
    for (std::int64_t l = 0; l < shape.layers; ++l)
        for (std::int64_t b = 0; b < shape.batch; ++b)
            for (std::int64_t h = 0; h < shape.heads; ++h)
                for (std::int64_t t = 0; t < shape.tokens; ++t) {
                    float maximum = 0.0f;  // probabilities are >= 0 (checked), so 0 is the neutral start
                    for (std::int64_t q = h * query_heads_per_kv_head; q < (h + 1) * query_heads_per_kv_head; ++q)
                        for (std::int64_t r = first_row; r < rows; ++r)
                            maximum = std::max(maximum, attention(l, b, q, r, t));
                    predicted[index++] = maximum;
                }
    return predicted;
}

}  // namespace detail

// ---------------------------------------------------------------------------
// The whole cache
// ---------------------------------------------------------------------------

/// Quantizes and reconstructs one key or value cache as docs/method.md
/// specifies. `attention` is read only for value_attention bits (it may be
/// empty otherwise). Cache NaN/Inf are outliers, stored exactly; they never
/// raise. Throws qaq::error for an invalid config, an empty cache, group_dims
/// not dividing head_dim, or missing, mis-shaped, non-finite or negative
/// attention when value_attention needs it.
inline result quantize(const quantizer_config& config, kv_view<const float> cache,
                       attention_view<const float> attention) {
    config.validate();
    const kv_shape& shape = cache.shape;
    QAQ_CHECK(shape.layers >= 1 && shape.batch >= 1 && shape.heads >= 1 && shape.tokens >= 1 && shape.head_dim >= 1,
              "cache shape ", to_string(shape), " is empty, expected every extent of [L, B, H, T, D] >= 1");
    QAQ_CHECK(cache.data != nullptr, "cache data is null for a cache of shape ", to_string(shape));

    const std::int64_t elements = shape.element_count();
    auto contiguous_index = [&](std::int64_t l, std::int64_t b, std::int64_t h, std::int64_t t, std::int64_t d) {
        return static_cast<std::size_t>((((l * shape.batch + b) * shape.heads + h) * shape.tokens + t) *
                                            shape.head_dim +
                                        d);
    };

    result out;
    out.dequantized.assign(static_cast<std::size_t>(elements), 0.0f);
    out.outlier_mask.assign(static_cast<std::size_t>(elements), 0);

    if (!config.enabled) {
        // No quantization: the cache passes through unchanged at 16 bits.
        for (std::int64_t l = 0; l < shape.layers; ++l)
            for (std::int64_t b = 0; b < shape.batch; ++b)
                for (std::int64_t h = 0; h < shape.heads; ++h)
                    for (std::int64_t t = 0; t < shape.tokens; ++t)
                        for (std::int64_t d = 0; d < shape.head_dim; ++d)
                            out.dequantized[contiguous_index(l, b, h, t, d)] = cache(l, b, h, t, d);
        out.average_bits_reference = 16.0;
        out.bits_per_element_reference = 16.0;
        out.compression_ratio_reference = 1.0;
        return out;
    }

    const std::int64_t group_dims = config.level == group_level::sub_head ? config.group_dims : shape.head_dim;
    if (config.level == group_level::sub_head)
        QAQ_CHECK(shape.head_dim % group_dims == 0, "sub_head group_dims ", group_dims,
                  " does not divide head_dim ", shape.head_dim, ", expected a divisor of head_dim");

    std::vector<float> predicted;
    if (config.bits == bits_kind::value_attention) {
        detail::check_attention(attention, shape);
        predicted = detail::predicted_attention(attention, shape, config.window);
    }
    auto predicted_at = [&](std::int64_t l, std::int64_t b, std::int64_t h, std::int64_t t) {
        return predicted[static_cast<std::size_t>(((l * shape.batch + b) * shape.heads + h) * shape.tokens + t)];
    };

    out.bits_shape = detail::bits_shape(config.level, shape, group_dims);

    std::vector<float> values;
    std::vector<float> reconstructed;
    detail::for_each_group(config.level, shape, group_dims, [&](const detail::group_description& g) {
        const auto n = static_cast<std::int64_t>(g.members.size());
        values.resize(g.members.size());
        reconstructed.resize(g.members.size());
        for (std::size_t i = 0; i < g.members.size(); ++i) {
            const detail::group_member& m = g.members[i];
            values[i] = cache(m.layer, g.batch, m.head, g.token, m.dim);
        }

        // Outliers, then statistics over the rest.
        const std::vector<std::uint8_t> is_outlier = outlier_mask(values.data(), n, config.outlier_ratio);
        const group_statistics s = statistics(values.data(), is_outlier.data(), n);
        const float range = s.range(config.symmetric);

        // Bit allocation.
        int bits = 0;
        if (config.bits == bits_kind::fixed) {
            bits = config.fixed_bits;
        } else if (g.token >= shape.tokens - (static_cast<std::int64_t>(config.window) - 1)) {
            bits = config.bits_max;  // no history: the last n - 1 tokens have no full window
        } else if (config.bits == bits_kind::value_attention) {
            float group_attention = 0.0f;  // A = max of P over the group's (l, h) pairs
            for (const detail::group_member& m : g.members)
                group_attention = std::max(group_attention, predicted_at(m.layer, g.batch, m.head, g.token));
            bits = value_attention_bits(range, group_attention, shape.tokens, config);
        } else {
            bits = key_query_norm_bits(range, shape.tokens, config);
        }
        out.bits.push_back(bits);

        // Codec and outlier write-back.
        reconstruct_group(config, bits, values.data(), is_outlier.data(), n, reconstructed.data());
        for (std::size_t i = 0; i < g.members.size(); ++i) {
            const detail::group_member& m = g.members[i];
            const std::size_t index = contiguous_index(m.layer, g.batch, m.head, g.token, m.dim);
            out.dequantized[index] = reconstructed[i];
            out.outlier_mask[index] = is_outlier[i];
        }
    });

    // Accounting (docs/method.md, "Accounting"): the reference figures.
    double bit_sum = 0.0;
    for (const int b : out.bits) bit_sum += static_cast<double>(b);
    const double mean_bits = bit_sum / static_cast<double>(out.bits.size());
    const double a = config.outlier_ratio;
    const double group_size = static_cast<double>(detail::group_size(config.level, shape, group_dims));
    out.average_bits_reference = mean_bits * (1.0 - a) + 16.0 * a;
    out.bits_per_element_reference =
        out.average_bits_reference + 16.0 * static_cast<double>(config.reference_parameter_count()) / group_size;
    out.compression_ratio_reference = 16.0 / out.bits_per_element_reference;
    return out;
}

}  // namespace reference
QAQ_NAMESPACE_END
