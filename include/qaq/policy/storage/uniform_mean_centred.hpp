#pragma once
// The reference "uniform" codec of the original QAQ implementation:
// centre c = mean (0 if symmetric), step s = range / 2^B,
// q = clamp(rint((x - c) / s), -2^(B-1), 2^(B-1) - 1), x' = q * s + c.
// Centring on the mean while clamping to a symmetric code range can clip a
// skewed group at its top code: that is the reference behaviour, kept on
// purpose. `uniform_zero_point` is the codec without that flaw. B = 0
// reconstructs at c - R / 2, as the reference does under PyTorch >= 2.0
// (docs/method.md).

#include <cmath>
#include <cstdint>

#include "qaq/config.hpp"
#include "qaq/group_statistics.hpp"
#include "qaq/policy/storage/codec_parameters.hpp"
#include "qaq/precision.hpp"

QAQ_NAMESPACE_BEGIN
namespace storage {

struct uniform_mean_centred {
    bool symmetric = false;
    storage_precision precision = storage_precision::fp16;

    static constexpr bool is_codec = true;
    static constexpr bool needs_std = false;
    /// The uniform range formula of QAQ-METHOD section 5 applies, so adaptive bits work.
    static constexpr bool supports_adaptive_bits = true;
    static constexpr const char* name = "uniform_mean_centred";

    int stored_parameter_count() const noexcept { return symmetric ? 1 : 2; }
    float range(const group_statistics& s) const noexcept { return s.range(symmetric); }

    codec_parameters fit(const group_statistics& s, int bits) const {
        const float steps = std::ldexp(1.0f, bits);
        codec_parameters p;
        if (s.count == 0) return p;
        if (symmetric) {
            p.scale = round_parameter(precision, 2.0f * s.absmax / steps, "scale");
        } else {
            p.centre = round_parameter(precision, s.mean, "mean");
            p.scale = round_parameter(precision, (s.max - s.min) / steps, "scale");
        }
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

    /// code = q + 2^(B-1) with q in [-2^(B-1), 2^(B-1) - 1]; width >= 1.
    QAQ_HOST_DEVICE affine_code affine(const codec_parameters& p, int bits) const noexcept {
        const float half_steps = static_cast<float>(1u << (bits - 1));
        return {p.centre, p.scale, -half_steps, half_steps - 1.0f, half_steps};
    }

    QAQ_HOST_DEVICE std::uint32_t encode(float x, const codec_parameters& p, int bits) const noexcept {
        if (bits == 0) return 0;
        const float half_steps = static_cast<float>(1u << (bits - 1));
        if (!(p.scale > 0.0f)) return static_cast<std::uint32_t>(half_steps);  // constant group: q = 0
        float q = std::nearbyint((x - p.centre) / p.scale);
        q = q < -half_steps ? -half_steps : (q > half_steps - 1.0f ? half_steps - 1.0f : q);
        return static_cast<std::uint32_t>(q + half_steps);
    }
    QAQ_HOST_DEVICE float decode(std::uint32_t code, const codec_parameters& p, int bits) const noexcept {
        // B = 0: the reference's codes are clamped to [-0.5, -0.5] and promoted to
        // float (torch.clamp), so x' = -0.5 * s + c with s = R (docs/method.md).
        if (bits == 0) return -0.5f * p.scale + p.centre;
        const float q = static_cast<float>(static_cast<std::int32_t>(code) - (std::int32_t{1} << (bits - 1)));
        return q * p.scale + p.centre;
    }
};

}  // namespace storage
QAQ_NAMESPACE_END
