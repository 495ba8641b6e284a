#pragma once
// The reference "normal" codec: values normalised by the group's mean (0 if
// symmetric) and sample std are assumed standard normal; the 2^B codes are the
// equal-probability bins of N(0, 1). Boundaries u_i = Phi^-1((i + 1) / 2^B)
// (the last is +Inf), a value maps to the first boundary >= it, and is
// reconstructed at the bin's median Phi^-1((i + 0.5) / 2^B).

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <vector>

#include "qaq/config.hpp"
#include "qaq/group_statistics.hpp"
#include "qaq/policy/storage/codec_parameters.hpp"
#include "qaq/precision.hpp"
#include "qaq/reference/normal_quantiles.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN
namespace storage {

/// Boundary and centre tables per bit width, built once on first use (thread-safe).
class normal_tables {
public:
    struct table {
        std::vector<float> upper_bounds;  ///< 2^B float32 boundaries, last = +Inf
        std::vector<float> centres;       ///< 2^B float32 reconstruction points
    };

    static const table& for_bits(int bits) {
        static normal_tables instance;
        std::call_once(instance.built_[bits], [&] {
            table& t = instance.tables_[bits];
            const std::int64_t n = std::int64_t{1} << bits;
            t.upper_bounds.resize(n);
            t.centres.resize(n);
            for (std::int64_t i = 0; i < n; ++i) {
                t.upper_bounds[i] = static_cast<float>(
                    reference::inverse_normal_cdf(static_cast<double>(i + 1) / static_cast<double>(n)));
                t.centres[i] = static_cast<float>(
                    reference::inverse_normal_cdf((static_cast<double>(i) + 0.5) / static_cast<double>(n)));
            }
        });
        return instance.tables_[bits];
    }

private:
    std::array<std::once_flag, max_bits + 1> built_;
    std::array<table, max_bits + 1> tables_;
};

struct normal_quantile {
    bool symmetric = false;
    storage_precision precision = storage_precision::fp16;

    static constexpr bool is_codec = true;
    static constexpr bool needs_std = true;
    /// The original implementation has no bit formula for this codec
    /// (NotImplementedError): it is used with fixed bits only.
    static constexpr bool supports_adaptive_bits = false;
    static constexpr const char* name = "normal";

    int stored_parameter_count() const noexcept { return symmetric ? 1 : 2; }
    float range(const group_statistics& s) const noexcept { return s.range(symmetric); }

    codec_parameters fit(const group_statistics& s, int /*bits*/) const {
        if (s.count == 0) return {};
        codec_parameters p;
        p.centre = symmetric ? 0.0f : round_parameter(precision, s.mean, "mean");
        p.scale = round_parameter(precision, s.std, "std");
        return p;
    }
    void store(const codec_parameters& p, float* stored) const noexcept {
        if (symmetric) {
            stored[0] = p.scale;
        } else {
            stored[0] = p.centre;
            stored[1] = p.scale;
        }
    }
    codec_parameters load(const float* stored, int /*bits*/) const noexcept {
        return symmetric ? codec_parameters{0.0f, stored[0]} : codec_parameters{stored[0], stored[1]};
    }

    std::uint32_t encode(float x, const codec_parameters& p, int bits) const {
        if (bits == 0 || !(p.scale > 0.0f)) return 0;
        const auto& bounds = normal_tables::for_bits(bits).upper_bounds;
        const float z = (x - p.centre) / p.scale;
        const auto it = std::lower_bound(bounds.begin(), bounds.end(), z);
        return static_cast<std::uint32_t>(std::min<std::ptrdiff_t>(it - bounds.begin(), bounds.size() - 1));
    }
    float decode(std::uint32_t code, const codec_parameters& p, int bits) const {
        if (bits == 0 || !(p.scale > 0.0f)) return p.centre;
        return normal_tables::for_bits(bits).centres[code] * p.scale + p.centre;
    }
};

}  // namespace storage
QAQ_NAMESPACE_END
