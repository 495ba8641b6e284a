#pragma once
// Statistics of a group's non-outlier values: what bit formulas and codecs read.

#include <cstdint>

#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN

struct group_statistics {
    std::int64_t count = 0;  ///< non-outliers
    float min = 0.0f, max = 0.0f, absmax = 0.0f;
    float mean = 0.0f;  ///< double-accumulated, rounded to float
    float std = 0.0f;   ///< sample std (count - 1), 0 when count < 2 or not requested

    /// The range R of the bit formulas: max - min, or 2 * max|x| when symmetric; 0 when empty.
    QAQ_HOST_DEVICE float range(bool symmetric) const noexcept {
        if (count == 0) return 0.0f;
        return symmetric ? 2.0f * absmax : max - min;
    }
};

QAQ_NAMESPACE_END
