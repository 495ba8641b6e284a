#pragma once
// Key-cache bits from the squared query norm (QAQ-METHOD section 5):
// E = sqrt(12 / qn * ln(T^3 / (T - 1) * eps^2 + 1)), one value for all tokens.
// A key error passes through the softmax amplified by the query, so the bound
// depends on |Q|^2 (the paper takes the upper 10% quantile of its distribution).

#include <cmath>

#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/policy/bits/bits_context.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN
namespace bits {

struct key_query_norm {
    double q_norm = 1.0;
    double target_error = 0.1;
    int min_bits = 2;
    int max_bits_ = 8;
    int attention_window = 5;

    static constexpr bool is_bits_policy = true;
    static constexpr bool needs_attention = false;
    static constexpr bool adaptive = true;
    static constexpr const char* name = "key_query_norm";

    key_query_norm(double qn, double eps, int bits_min, int bits_max, int window)
        : q_norm(qn), target_error(eps), min_bits(bits_min), max_bits_(bits_max), attention_window(window) {
        QAQ_CHECK(std::isfinite(qn) && qn > 0.0, "q_norm is ", qn, ", expected a positive finite number");
        QAQ_CHECK(std::isfinite(eps) && eps > 0.0, "target error is ", eps, ", expected a positive finite number");
        QAQ_CHECK(bits_min >= 0 && bits_min <= max_bits, "bits_min is ", bits_min, ", expected 0..", max_bits);
        QAQ_CHECK(bits_max >= bits_min && bits_max <= max_bits, "bits_max is ", bits_max, ", expected ", bits_min,
                  "..", max_bits);
        QAQ_CHECK(window >= 1, "attention window (last_n) is ", window, ", expected >= 1");
    }
    int bits_min() const noexcept { return min_bits; }
    int bits_max() const noexcept { return max_bits_; }
    int window() const noexcept { return attention_window; }

    /// The tolerated error for a cache of `tokens` tokens (double, as the reference computes it).
    double tolerated_error(std::int64_t tokens) const noexcept {
        const double t = static_cast<double>(tokens);
        return std::sqrt(12.0 / q_norm * std::log(t * t * t / (t - 1.0) * target_error * target_error + 1.0));
    }

    int operator()(const context& c) const noexcept {
        if (c.tokens <= 1) return max_bits_;  // the formula divides by T - 1
        if (c.token >= c.tokens - (attention_window - 1)) return max_bits_;
        return detail::bits_from_error(c.range, static_cast<float>(2.0 * tolerated_error(c.tokens)), min_bits,
                                       max_bits_);
    }
};

}  // namespace bits
QAQ_NAMESPACE_END
