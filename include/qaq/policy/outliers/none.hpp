#pragma once
// No quantile outliers. Non-finite values (NaN, +-Inf) are still kept exact:
// quantizing them would poison the group's statistics.

#include <cmath>
#include <cstdint>

#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN
namespace outliers {

struct none {
    static constexpr bool is_outlier_policy = true;
    static constexpr const char* name = "none";

    double ratio() const noexcept { return 0.0; }

    /// Marks outliers of the `n` values at `group` in `is_outlier` (1 = outlier); returns their count.
    std::int64_t mark(const float* group, std::int64_t n, std::uint8_t* is_outlier, float* /*scratch*/) const noexcept {
        std::int64_t count = 0;
        for (std::int64_t i = 0; i < n; ++i) {
            const bool bad = !std::isfinite(group[i]);
            is_outlier[i] = bad;
            count += bad;
        }
        return count;
    }
};

}  // namespace outliers
QAQ_NAMESPACE_END
