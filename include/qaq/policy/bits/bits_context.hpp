#pragma once
// What a bit-allocation policy may read about one group, and the float32 tail
// that both QAQ formulas share.

#include <cmath>
#include <cstdint>

#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN
namespace bits {

struct context {
    float range = 0.0f;                ///< R over non-outliers (codec-defined, QAQ-METHOD section 5)
    float predicted_attention = 0.0f;  ///< A_t: window maximum over the group's (layer, head) pairs
    std::int64_t tokens = 0;           ///< T, tokens in the cache
    std::int64_t token = 0;            ///< this group's token index
};

namespace detail {
/// clamp(ceil(log2(R / (2E) + 1)), bits_min, bits_max), in float32 like the reference.
/// A NaN quotient (R = 0 with a tolerated error 2E that underflowed to 0, or
/// Inf / Inf) gives bits_max, the safe side: no error budget, the most bits
/// (docs/method.md, "Bit allocation"; the reference and the original agree).
inline int bits_from_error(float range, float twice_error, int bits_min, int bits_max) noexcept {
    const float b = std::ceil(std::log2(range / twice_error + 1.0f));
    if (std::isnan(b)) return bits_max;
    if (b <= static_cast<float>(bits_min)) return bits_min;
    if (b >= static_cast<float>(bits_max)) return bits_max;
    return static_cast<int>(b);
}
}  // namespace detail

}  // namespace bits
QAQ_NAMESPACE_END
