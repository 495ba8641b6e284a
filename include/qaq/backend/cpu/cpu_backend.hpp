#pragma once
// The CPU backend: group statistics with Eigen reductions, and the encode +
// pack / unpack + decode loops over a codec's scalar element functions.

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <limits>

#include "qaq/bit_packing.hpp"
#include "qaq/config.hpp"
#include "qaq/group_statistics.hpp"
#include "qaq/policy/storage/codec_parameters.hpp"

QAQ_NAMESPACE_BEGIN
namespace backend {

struct cpu {
    static constexpr bool is_backend = true;
    static constexpr const char* name = "cpu";

    /// Statistics of the values whose `is_outlier` byte is 0.
    static group_statistics statistics(const float* x, const std::uint8_t* is_outlier, std::int64_t n,
                                       std::int64_t outliers, bool need_std) {
        using array_f = Eigen::Array<float, Eigen::Dynamic, 1>;
        using array_u8 = Eigen::Array<std::uint8_t, Eigen::Dynamic, 1>;
        const Eigen::Map<const array_f> v(x, n);
        group_statistics s;
        s.count = n - outliers;
        if (s.count == 0) return s;
        constexpr float inf = std::numeric_limits<float>::infinity();
        if (outliers == 0) {
            s.min = v.minCoeff();
            s.max = v.maxCoeff();
            s.mean = static_cast<float>(v.cast<double>().sum() / static_cast<double>(s.count));
        } else {
            const Eigen::Map<const array_u8> mask(is_outlier, n);
            const auto keep = mask == std::uint8_t{0};
            s.min = keep.select(v, inf).minCoeff();
            s.max = keep.select(v, -inf).maxCoeff();
            s.mean = static_cast<float>(keep.select(v.cast<double>(), 0.0).sum() / static_cast<double>(s.count));
        }
        s.absmax = std::max(std::fabs(s.min), std::fabs(s.max));
        if (need_std && s.count >= 2) {
            // Two-pass around the double mean, as a float64 std would.
            double mean = 0.0, sq = 0.0;
            for (std::int64_t i = 0; i < n; ++i)
                if (!is_outlier[i]) mean += x[i];
            mean /= static_cast<double>(s.count);
            for (std::int64_t i = 0; i < n; ++i)
                if (!is_outlier[i]) sq += (x[i] - mean) * (x[i] - mean);
            s.std = static_cast<float>(std::sqrt(sq / static_cast<double>(s.count - 1)));
        }
        return s;
    }

    /// Encodes the `n` values (outliers get code 0; they are restored exactly on
    /// decode) and packs them into packed_code_bytes(n, bits) bytes at `out`.
    /// `scratch` holds n codes.
    template <class Codec>
    static void encode(const Codec& codec, const codec_parameters& p, int bits, const float* x,
                       const std::uint8_t* is_outlier, std::int64_t n, std::uint32_t* scratch, std::uint8_t* out) {
        if (bits == 0) return;
        for (std::int64_t i = 0; i < n; ++i) scratch[i] = is_outlier[i] ? 0u : codec.encode(x[i], p, bits);
        pack_codes(scratch, n, bits, out);
    }

    /// Unpacks and decodes `n` values into `out` (outliers are not restored here).
    template <class Codec>
    static void decode(const Codec& codec, const codec_parameters& p, int bits, const std::uint8_t* in,
                       std::int64_t n, std::uint32_t* scratch, float* out) {
        unpack_codes(in, n, bits, scratch);
        for (std::int64_t i = 0; i < n; ++i) out[i] = codec.decode(scratch[i], p, bits);
    }
};

}  // namespace backend
QAQ_NAMESPACE_END
