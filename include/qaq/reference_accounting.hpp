#pragma once
// The original implementation's cost accounting (QAQ-METHOD section 7): it
// counts 16 bits per outlier and 16 bits per group parameter but no outlier
// positions. Reported next to the real packed bytes, never instead of them.

#include <cstdint>
#include <vector>

#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN

struct reference_accounting {
    double average_bits = 16.0;      ///< mean(bits) * (1 - a) + 16 a
    double bits_per_element = 16.0;  ///< plus 16 * parameters / group_size
    double compression_ratio = 1.0;  ///< 16 / bits_per_element

    static reference_accounting of(const std::vector<std::uint8_t>& widths, double outlier_ratio,
                                   int parameters_per_group, std::int64_t group_size) {
        reference_accounting r;
        if (widths.empty() || group_size <= 0) return r;
        double sum = 0.0;
        for (auto w : widths) sum += w;
        r.average_bits = sum / static_cast<double>(widths.size()) * (1.0 - outlier_ratio) + 16.0 * outlier_ratio;
        r.bits_per_element = r.average_bits + 16.0 * parameters_per_group / static_cast<double>(group_size);
        r.compression_ratio = 16.0 / r.bits_per_element;
        return r;
    }
};

QAQ_NAMESPACE_END
