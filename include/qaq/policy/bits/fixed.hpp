#pragma once
// Fixed allocation: every group gets the same width (the "uniform" baseline).

#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/policy/bits/bits_context.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN
namespace bits {

struct fixed {
    int width = 4;

    static constexpr bool is_bits_policy = true;
    static constexpr bool needs_attention = false;
    static constexpr bool adaptive = false;
    static constexpr const char* name = "fixed";

    explicit fixed(int bits = 4) : width(bits) {
        QAQ_CHECK(bits >= 0 && bits <= max_bits, "bits is ", bits, ", expected 0..", max_bits);
    }
    int bits_min() const noexcept { return width; }
    int bits_max() const noexcept { return width; }
    int window() const noexcept { return 1; }
    int operator()(const context&) const noexcept { return width; }
};

}  // namespace bits
QAQ_NAMESPACE_END
