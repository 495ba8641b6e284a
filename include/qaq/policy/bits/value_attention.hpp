#pragma once
// Value-cache bits from predicted attention (QAQ-METHOD section 5):
// E_t = sqrt(12 / T) * eps / A_t, B_t = clamp(ceil(log2(R_t / (2 E_t) + 1))).
// A value error moves the attention output linearly, weighted by S_t, so a
// token that is predicted to get more attention gets a smaller tolerated error.

#include <cmath>

#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/policy/bits/bits_context.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN
namespace bits {

struct value_attention {
    int attention_window = 5;
    double target_error = 0.1;
    int min_bits = 2;
    int max_bits_ = 8;

    static constexpr bool is_bits_policy = true;
    static constexpr bool needs_attention = true;
    static constexpr bool adaptive = true;
    static constexpr const char* name = "value_attention";

    value_attention(int window, double eps, int bits_min, int bits_max)
        : attention_window(window), target_error(eps), min_bits(bits_min), max_bits_(bits_max) {
        QAQ_CHECK(window >= 1, "attention window (last_n) is ", window, ", expected >= 1");
        QAQ_CHECK(std::isfinite(eps) && eps > 0.0, "target error is ", eps, ", expected a positive finite number");
        QAQ_CHECK(bits_min >= 0 && bits_min <= max_bits, "bits_min is ", bits_min, ", expected 0..", max_bits);
        QAQ_CHECK(bits_max >= bits_min && bits_max <= max_bits, "bits_max is ", bits_max, ", expected ", bits_min,
                  "..", max_bits);
    }
    int bits_min() const noexcept { return min_bits; }
    int bits_max() const noexcept { return max_bits_; }
    int window() const noexcept { return attention_window; }

    int operator()(const context& c) const noexcept {
        // The last n - 1 tokens have no full window of history yet.
        if (c.token >= c.tokens - (attention_window - 1)) return max_bits_;
        const float numerator = static_cast<float>(std::sqrt(12.0 / static_cast<double>(c.tokens)) * target_error);
        // (1 / A) * c, as PyTorch evaluates the reference's `c / A`; A = 0 gives +Inf: no bits needed.
        const float error = (1.0f / c.predicted_attention) * numerator;
        return detail::bits_from_error(c.range, 2.0f * error, min_bits, max_bits_);
    }
};

}  // namespace bits
QAQ_NAMESPACE_END
