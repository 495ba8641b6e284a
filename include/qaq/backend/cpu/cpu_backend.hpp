#pragma once
// The CPU backend: group statistics with Eigen reductions, and encode + pack /
// unpack + decode. Codecs with an affine form (the uniform ones) run as Eigen
// array expressions (vectorized); any other codec goes through its scalar
// element functions.

#include <Eigen/Core>
#include <bitset>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "qaq/backend/cpu/affine_kernels.hpp"
#include "qaq/bit_packing.hpp"
#include "qaq/config.hpp"
#include "qaq/group_statistics.hpp"
#include "qaq/policy/storage/codec_parameters.hpp"

QAQ_NAMESPACE_BEGIN
namespace backend {

namespace detail {
template <class Codec, class = void>
struct has_affine_form : std::false_type {};
template <class Codec>
struct has_affine_form<Codec, std::void_t<decltype(std::declval<const Codec&>().affine(codec_parameters{}, 1))>>
    : std::true_type {};
// Optional: Codec::affine_forms(stored, bits, count, scales, offsets), the affine forms of a block
// of groups of one width at once (see storage::uniform_zero_point).
template <class Codec, class = void>
struct has_affine_batch : std::false_type {};
template <class Codec>
struct has_affine_batch<Codec, std::void_t<decltype(std::declval<const Codec&>().affine_forms(
                                   static_cast<const float*>(nullptr), 1, std::int64_t{0}, static_cast<float*>(nullptr),
                                   static_cast<float*>(nullptr)))>> : std::true_type {};
}  // namespace detail

/// Index of the lowest set bit of v (v != 0).
inline int lowest_set_bit(std::uint64_t v) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctzll(v);
#else
    int k = 0;
    while (!(v & 1u)) v >>= 1, ++k;
    return k;
#endif
}

/// Calls f(i) for each nonzero byte of a mask, in order. Each 64 mask bytes become a 64-bit
/// set of the nonzero ones without branches, then one step per set bit: testing byte after byte
/// mispredicted a branch on nearly every outlier (a quarter of quantize with quantile outliers).
template <class F>
void for_each_marked(const std::uint8_t* mask, std::int64_t n, F&& f) {
    constexpr std::uint64_t low7 = 0x7F7F7F7F7F7F7F7Full;
    std::int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        std::uint64_t set = 0;
        for (int w = 0; w < 8; ++w) {
            std::uint64_t word;
            std::memcpy(&word, mask + i + 8 * w, 8);
            // 0x01 in each nonzero byte, then byte k -> bit k (the products do not overlap).
            const std::uint64_t ones = ((((word & low7) + low7) | word) & ~low7) >> 7;
            set |= ((ones * 0x0102040810204080ull) >> 56) << (8 * w);
        }
        for (; set != 0; set &= set - 1) f(i + lowest_set_bit(set));
    }
    for (; i < n; ++i)
        if (mask[i]) f(i);
}

struct cpu {
    static constexpr bool is_backend = true;
    static constexpr const char* name = "cpu";

    using array_f = Eigen::Array<float, Eigen::Dynamic, 1>;
    using array_i = Eigen::Array<std::int32_t, Eigen::Dynamic, 1>;
    using array_u8 = Eigen::Array<std::uint8_t, Eigen::Dynamic, 1>;

    /// Marks non-finite values (always exact outliers); returns their count.
    static std::int64_t mark_non_finite(const float* x, std::int64_t n, std::uint8_t* is_outlier) noexcept {
        const Eigen::Map<const array_f> v(x, n);
        Eigen::Map<array_u8> mask(is_outlier, n);
        mask = (!v.isFinite()).cast<std::uint8_t>();
        return mask.cast<std::int64_t>().sum();
    }

    /// True when some byte of the mask is nonzero (eight bytes at a time).
    static bool any_marked(const std::uint8_t* is_outlier, std::int64_t n) noexcept {
        std::uint64_t any = 0;
        std::int64_t i = 0;
        for (; i + 8 <= n; i += 8) {
            std::uint64_t word;
            std::memcpy(&word, is_outlier + i, 8);
            any |= word;
        }
        for (; i < n; ++i) any |= is_outlier[i];
        return any != 0;
    }

    /// Number of nonzero bytes in a mask.
    static std::int64_t count_marked(const std::uint8_t* is_outlier, std::int64_t n) noexcept {
        // Eight bytes at a time: the high bit of each byte of (b & 0x7F) + 0x7F, or b, says b != 0.
        constexpr std::uint64_t low7 = 0x7F7F7F7F7F7F7F7Full;
        std::int64_t count = 0, i = 0;
        for (; i + 8 <= n; i += 8) {
            std::uint64_t word;
            std::memcpy(&word, is_outlier + i, 8);
            count += static_cast<std::int64_t>(std::bitset<64>((((word & low7) + low7) | word) & ~low7).count());
        }
        for (; i < n; ++i) count += is_outlier[i] != 0;
        return count;
    }

    /// Sum of n floats in double precision. Eight independent accumulators let the
    /// compiler vectorize (a single chain of dependent double adds is latency bound);
    /// every float is exact in double, so only the final roundings differ from a
    /// sequential sum, far below float precision.
    static double double_sum(const float* x, std::int64_t n) noexcept {
        double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        std::int64_t i = 0;
        for (; i + 8 <= n; i += 8)
            for (int k = 0; k < 8; ++k) acc[k] += static_cast<double>(x[i + k]);
        for (; i < n; ++i) acc[0] += static_cast<double>(x[i]);
        return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }

    /// Statistics of the values whose `is_outlier` byte is 0.
    static group_statistics statistics(const float* x, const std::uint8_t* is_outlier, std::int64_t n,
                                       std::int64_t outliers, bool need_std) {
        const Eigen::Map<const array_f> v(x, n);
        group_statistics s;
        s.count = n - outliers;
        if (s.count == 0) return s;
        constexpr float inf = std::numeric_limits<float>::infinity();
        double sum = 0.0;
        if (outliers == 0 && affine::dense_statistics(x, n, true, s.min, s.max, sum)) {
            // all finite: min, max (+0 for a zero) and double_sum's sum in one pass
        } else if (outliers == 0) {
            s.min = v.minCoeff();
            s.max = v.maxCoeff();
            sum = double_sum(x, n);
        } else {
            const Eigen::Map<const array_u8> mask(is_outlier, n);
            const auto keep = mask == std::uint8_t{0};
            s.min = keep.select(v, inf).minCoeff();
            s.max = keep.select(v, -inf).maxCoeff();
            sum = keep.select(v.cast<double>(), 0.0).sum();
        }
        const double mean = sum / static_cast<double>(s.count);
        s.mean = static_cast<float>(mean);
        s.absmax = std::max(std::fabs(s.min), std::fabs(s.max));
        if (need_std && s.count >= 2) {
            // Two-pass around the double mean, as a float64 std would.
            double sq = 0.0;
            for (std::int64_t i = 0; i < n; ++i)
                if (!is_outlier[i]) sq += (x[i] - mean) * (x[i] - mean);
            s.std = static_cast<float>(std::sqrt(sq / static_cast<double>(s.count - 1)));
        }
        return s;
    }

    /// Encodes the `n` values (outliers get an arbitrary in-range code; they are
    /// restored exactly on decode) and packs them into packed_code_bytes(n, bits)
    /// bytes at `out`. `scratch` holds n codes. `is_outlier` may be null: no outliers.
    /// `lo` and `hi`, when known (NaN: not), bound the non-outlier values (a faster encoder).
    template <class Codec>
    static void encode(const Codec& codec, const codec_parameters& p, int bits, const float* x,
                       const std::uint8_t* is_outlier, std::int64_t n, std::uint32_t* scratch, std::uint8_t* out,
                       float lo = std::numeric_limits<float>::quiet_NaN(),
                       float hi = std::numeric_limits<float>::quiet_NaN()) {
        if (bits == 0) return;
        if (is_outlier && !any_marked(is_outlier, n)) is_outlier = nullptr;
        if constexpr (detail::has_affine_form<Codec>::value) {
            const affine_code a = codec.affine(p, bits);
            Eigen::Map<array_i> codes(reinterpret_cast<std::int32_t*>(scratch), n);
            if (!(a.scale > 0.0f)) {
                codes.setConstant(static_cast<std::int32_t>(a.bias));
            } else if (affine::encode(x, is_outlier, n, bits, a, scratch, out, lo, hi)) {
                return;  // SIMD encode + pack, the same codes
            } else {
                // Outliers (possibly non-finite) are replaced by the centre before any arithmetic.
                affine::affine_codes_scalar(x, is_outlier, n, a, scratch);
            }
        } else {
            (void)lo, (void)hi;
            for (std::int64_t i = 0; i < n; ++i)
                scratch[i] = (is_outlier && is_outlier[i]) ? 0u : codec.encode(x[i], p, bits);
        }
        pack_codes(scratch, n, bits, out);
    }

    /// Unpacks and decodes `n` values into `out` (outliers are not restored here).
    template <class Codec>
    static void decode(const Codec& codec, const codec_parameters& p, int bits, const std::uint8_t* in,
                       std::int64_t n, std::uint32_t* scratch, float* out) {
        Eigen::Map<array_f> values(out, n);
        if (bits == 0) {
            values.setConstant(codec.decode(0u, p, 0));  // one value for the whole group
            return;
        }
        if constexpr (detail::has_affine_form<Codec>::value) {
            const affine_code a = codec.affine(p, bits);
            if (affine::decode(in, n, bits, a, out)) return;  // SIMD unpack + decode
            if (bits <= 8 && n % 8 == 0) {
                // Unpack and decode in one pass, eight codes per word.
                dispatch_width(bits, [&](auto w) { decode_affine<decltype(w)::value>(in, n, a, out); });
                return;
            }
            unpack_codes(in, n, bits, scratch);
            const Eigen::Map<const array_i> codes(reinterpret_cast<const std::int32_t*>(scratch), n);
            values = (codes.cast<float>() - a.bias) * a.scale + a.centre;
        } else {
            unpack_codes(in, n, bits, scratch);
            for (std::int64_t i = 0; i < n; ++i) out[i] = codec.decode(scratch[i], p, bits);
        }
    }

    /// x = (code - bias) * scale + centre for n codes of width W <= 8, n a multiple of 8.
    template <int W>
    static void decode_affine(const std::uint8_t* in, std::int64_t n, const affine_code& a, float* out) noexcept {
        constexpr std::uint64_t mask = (std::uint64_t{1} << W) - 1u;
        for (std::int64_t b = 0; b < n / 8; ++b) {
            std::uint64_t word = 0;
            for (int k = 0; k < W; ++k) word |= static_cast<std::uint64_t>(in[b * W + k]) << (8 * k);
            for (int k = 0; k < 8; ++k)
                out[8 * b + k] = (static_cast<float>(static_cast<std::int32_t>((word >> (k * W)) & mask)) - a.bias) *
                                     a.scale + a.centre;
        }
    }
};

}  // namespace backend
QAQ_NAMESPACE_END
