#pragma once
// Quantile outliers (QAQ-METHOD section 4): with ratio a over the group's N
// finite values, lo = the ceil(a/2 * N)-th smallest, hi = the
// floor((1 - a/2) * N)-th smallest; x is an outlier iff x <= lo or x > hi.
// Outliers are excluded from every statistic and stored exactly.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>

#include "qaq/backend/cpu/tail_kernels.hpp"
#include "qaq/config.hpp"
#include "qaq/error.hpp"

QAQ_NAMESPACE_BEGIN
namespace outliers {

struct quantile {
    double outlier_ratio = 0.01;

    static constexpr bool is_outlier_policy = true;
    static constexpr const char* name = "quantile";

    explicit quantile(double ratio = 0.01) : outlier_ratio(ratio) {
        QAQ_CHECK(ratio >= 0.0 && ratio < 1.0, "outlier ratio is ", ratio, ", expected a value in [0, 1)");
    }
    double ratio() const noexcept { return outlier_ratio; }

    /// Marks outliers; `scratch` must hold `n` floats. Returns the outlier count.
    std::int64_t mark(const float* group, std::int64_t n, std::uint8_t* is_outlier, float* scratch) const {
        backend::tails::finite_tails t;
        if (!backend::tails::find_finite_tails(group, n, t)) return mark_scalar(group, n, is_outlier, scratch);
        // The AVX2 path: one pass gives the finite count and both tails up to k = 2 (a ratio of
        // 1% or 2% on groups of up to 200 values); deeper tails are selected as below.
        float lo = -std::numeric_limits<float>::infinity();
        float hi = std::numeric_limits<float>::infinity();
        if (outlier_ratio > 0.0 && t.count > 0) {
            const auto [k_lo, k_hi] = ranks(t.count);
            const std::int64_t k_large = t.count - k_hi + 1;
            if (k_hi >= 1 && k_lo <= 2 && k_large <= 2) {
                lo = t.smallest[k_lo - 1];
                hi = t.largest[k_large - 1];
            } else {
                std::int64_t finite = 0;
                for (std::int64_t i = 0; i < n; ++i)
                    if (std::isfinite(group[i])) scratch[finite++] = group[i];
                select(scratch, finite, lo, hi);
            }
        }
        std::int64_t count = 0;
        if (backend::tails::mark_outside(group, n, lo, hi, is_outlier, count)) return count;
        return mark_with(group, n, lo, hi, is_outlier);
    }

    /// The scalar path (also the definition the AVX2 path is tested against).
    std::int64_t mark_scalar(const float* group, std::int64_t n, std::uint8_t* is_outlier, float* scratch) const {
        std::int64_t finite = 0;
        for (std::int64_t i = 0; i < n; ++i)
            if (std::isfinite(group[i])) scratch[finite++] = group[i];
        float lo = -std::numeric_limits<float>::infinity();
        float hi = std::numeric_limits<float>::infinity();
        if (outlier_ratio > 0.0 && finite > 0) select(scratch, finite, lo, hi);
        return mark_with(group, n, lo, hi, is_outlier);
    }

private:
    // k_lo and k_hi of the method for `finite` values; the products are evaluated in double
    // exactly as the reference does.
    std::pair<std::int64_t, std::int64_t> ranks(std::int64_t finite) const noexcept {
        const auto k_lo = static_cast<std::int64_t>(std::ceil(outlier_ratio / 2.0 * static_cast<double>(finite)));
        const auto k_hi =
            static_cast<std::int64_t>(std::floor((1.0 - outlier_ratio / 2.0) * static_cast<double>(finite)));
        return {k_lo, k_hi};
    }

    // lo and hi of the `finite` (> 0) values at x (reordered); ratio > 0.
    void select(float* x, std::int64_t finite, float& lo, float& hi) const {
        const auto [k_lo, k_hi] = ranks(finite);
        const std::int64_t k_large = finite - k_hi + 1;  // hi is the k_large-th largest
        if (k_hi >= 1 && k_lo <= small_k && k_large <= small_k) {
            // Small tails (the usual 1%): one pass keeping the k smallest and k largest.
            lo = kth_smallest_and_largest(x, finite, k_lo, k_large, hi);
        } else {
            std::nth_element(x, x + (k_lo - 1), x + finite);
            lo = x[k_lo - 1];
            if (k_hi >= 1) {
                std::nth_element(x, x + (k_hi - 1), x + finite);
                hi = x[k_hi - 1];
            } else {
                hi = -std::numeric_limits<float>::infinity();
            }
        }
    }

    std::int64_t mark_with(const float* group, std::int64_t n, float lo, float hi, std::uint8_t* is_outlier) const {
        std::int64_t count = 0;
        for (std::int64_t i = 0; i < n; ++i) {
            const float x = group[i];
            const bool out = !std::isfinite(x) || (outlier_ratio > 0.0 && (x <= lo || x > hi));
            is_outlier[i] = out;
            count += out;
        }
        return count;
    }

    static constexpr std::int64_t small_k = 16;

    // Returns the k_small-th smallest of x[0..n) and sets `largest` to the
    // k_large-th largest, both counted with multiplicity (as nth_element would).
    static float kth_smallest_and_largest(const float* x, std::int64_t n, std::int64_t k_small, std::int64_t k_large,
                                          float& largest) noexcept {
        float low[small_k], high[small_k];  // low ascending, high descending
        std::int64_t nl = 0, nh = 0;
        for (std::int64_t i = 0; i < n; ++i) {
            const float v = x[i];
            if (nl < k_small || v < low[nl - 1]) {
                std::int64_t j = nl < k_small ? nl++ : nl - 1;
                while (j > 0 && low[j - 1] > v) low[j] = low[j - 1], --j;
                low[j] = v;
            }
            if (nh < k_large || v > high[nh - 1]) {
                std::int64_t j = nh < k_large ? nh++ : nh - 1;
                while (j > 0 && high[j - 1] < v) high[j] = high[j - 1], --j;
                high[j] = v;
            }
        }
        largest = high[k_large - 1];
        return low[k_small - 1];
    }
};

}  // namespace outliers
QAQ_NAMESPACE_END
