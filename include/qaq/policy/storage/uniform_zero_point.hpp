#pragma once
// Min-based zero-point uniform codec: 2^B - 1 equal steps over [min, max]
// (symmetric: over [-max|x|, max|x|]), q = clamp(rint((x - z) / s), 0, 2^B - 1),
// x' = q * s + z. Every non-outlier is within s / 2 of its reconstruction; no
// clipping. B = 0 reconstructs at the midpoint.
//
// fp16 parameters: z (or max|x|) is rounded away from the data and s up, so the
// stored grid still covers [min, max]; fp32 parameters are the exact statistics.

#include <cmath>
#include <cstdint>

#include "qaq/config.hpp"
#include "qaq/group_statistics.hpp"
#include "qaq/policy/storage/codec_parameters.hpp"
#include "qaq/precision.hpp"

QAQ_NAMESPACE_BEGIN
namespace storage {

struct uniform_zero_point {
    bool symmetric = false;
    storage_precision precision = storage_precision::fp16;

    static constexpr bool is_codec = true;
    static constexpr bool needs_std = false;
    static constexpr bool supports_adaptive_bits = true;
    static constexpr const char* name = "uniform_zero_point";

    int stored_parameter_count() const noexcept { return symmetric ? 1 : 2; }
    float range(const group_statistics& s) const noexcept { return s.range(symmetric); }

    codec_parameters fit(const group_statistics& s, int bits) const {
        if (s.count == 0) return {};
        float stored[2] = {0.0f, 0.0f};
        if (symmetric) {
            stored[0] = round_parameter_directed(precision, s.absmax, true, "max|x|");
        } else if (bits == 0) {
            stored[0] = round_parameter(precision, s.min + (s.max - s.min) / 2.0f, "midpoint");
            stored[1] = 0.0f;
        } else if (precision == storage_precision::fp16) {
            // z rounded down, s up from max - z, and up again (one fp16 step at a time) until
            // z + (2^B - 1) s >= max (evaluated in double; the reference and the CUDA mirror do the same).
            const float z = round_parameter_directed(precision, s.min, false, "min");
            float step = round_parameter_directed(precision, (s.max - z) / steps(bits), true, "scale");
            while (static_cast<double>(z) + static_cast<double>(steps(bits)) * static_cast<double>(step) <
                   static_cast<double>(s.max))
                step = round_parameter_directed(precision, std::nextafter(step, HUGE_VALF), true, "scale");
            stored[0] = z;
            stored[1] = step;
        } else {
            stored[0] = round_parameter(precision, s.min, "min");
            stored[1] = round_parameter(precision, (s.max - s.min) / steps(bits), "scale");
        }
        return load(stored, bits);
    }
    void store(const codec_parameters& p, float* stored) const noexcept {
        if (symmetric) {
            stored[0] = -p.centre;  // the zero point is -max|x|
        } else {
            stored[0] = p.centre;
            stored[1] = p.scale;
        }
    }
    codec_parameters load(const float* stored, int bits) const noexcept {
        if (!symmetric) return {stored[0], stored[1]};
        if (bits == 0) return {0.0f, 0.0f};
        const float absmax = stored[0];
        return {-absmax, 2.0f * absmax / steps(bits)};
    }

    /// code = q in [0, 2^B - 1]; width >= 1.
    QAQ_HOST_DEVICE affine_code affine(const codec_parameters& p, int bits) const noexcept {
        return {p.centre, p.scale, 0.0f, steps(bits), 0.0f};
    }
    /// Optional batch form used by attention: scale and offset = centre - bias * scale of `count`
    /// groups of width `bits` >= 1 from their stored parameters (stored_parameter_count() floats
    /// each), equal to affine(load(...)) group by group, in straight loops the compiler vectorizes.
    void affine_forms(const float* stored, int bits, std::int64_t count, float* scales, float* offsets) const noexcept {
        // offset = centre - bias * scale with bias 0, written out so that it matches affine()
        // bit for bit (0 * scale is NaN for an infinite fp32 scale).
        const float top = steps(bits);
        if (symmetric) {
            for (std::int64_t i = 0; i < count; ++i) {
                scales[i] = 2.0f * stored[i] / top;  // the same operations as load()
                offsets[i] = -stored[i] - 0.0f * scales[i];
            }
        } else {
            for (std::int64_t i = 0; i < count; ++i) {
                scales[i] = stored[2 * i + 1];
                offsets[i] = stored[2 * i] - 0.0f * scales[i];
            }
        }
    }

    QAQ_HOST_DEVICE std::uint32_t encode(float x, const codec_parameters& p, int bits) const noexcept {
        if (bits == 0 || !(p.scale > 0.0f)) return 0;
        const float top = steps(bits);
        float q = std::nearbyint((x - p.centre) / p.scale);
        q = q < 0.0f ? 0.0f : (q > top ? top : q);
        return static_cast<std::uint32_t>(q);
    }
    QAQ_HOST_DEVICE float decode(std::uint32_t code, const codec_parameters& p, int bits) const noexcept {
        if (bits == 0) return p.centre;
        return static_cast<float>(code) * p.scale + p.centre;
    }

private:
    QAQ_HOST_DEVICE static float steps(int bits) noexcept { return static_cast<float>((1u << bits) - 1u); }
};

}  // namespace storage
QAQ_NAMESPACE_END
