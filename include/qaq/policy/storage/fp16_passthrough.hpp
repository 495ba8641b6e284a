#pragma once
// No quantization: every value stored as its 16-bit half-precision pattern
// (what the reference's "no-quantization" level holds: an FP16 cache).
// Always used with bits::fixed(16).

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/group_statistics.hpp"
#include "qaq/policy/storage/codec_parameters.hpp"
#include "qaq/precision.hpp"

QAQ_NAMESPACE_BEGIN
namespace storage {

struct fp16_passthrough {
    storage_precision precision = storage_precision::fp16;

    static constexpr bool is_codec = true;
    static constexpr bool needs_std = false;
    static constexpr bool supports_adaptive_bits = false;
    static constexpr const char* name = "fp16";

    int stored_parameter_count() const noexcept { return 0; }
    float range(const group_statistics& s) const noexcept { return s.range(false); }
    codec_parameters fit(const group_statistics& s, int) const {
        QAQ_CHECK(s.count == 0 || (std::fabs(s.min) <= 65504.0f && std::fabs(s.max) <= 65504.0f),
                  "values up to ", std::max(std::fabs(s.min), std::fabs(s.max)),
                  " do not fit an FP16 cache (|x| <= 65504)");
        return {};
    }
    void store(const codec_parameters&, float*) const noexcept {}
    codec_parameters load(const float*, int) const noexcept { return {}; }

    std::uint32_t encode(float x, const codec_parameters&, int bits) const noexcept {
        return bits == 16 ? Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(x)) : 0u;
    }
    float decode(std::uint32_t code, const codec_parameters&, int bits) const noexcept {
        return bits == 16 ? static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(static_cast<std::uint16_t>(code)))
                          : 0.0f;
    }
};

}  // namespace storage
QAQ_NAMESPACE_END
