#pragma once
// The stored form of a quantized key or value cache: real bytes, every one
// counted. Groups are stored in group order (see group_layout); each group's
// codes start on a byte boundary, so group g's code offset is the sum of
// packed_code_bytes(group_size, width) of the groups before it — computed,
// not stored.

#include <cstdint>
#include <vector>

#include "qaq/config.hpp"
#include "qaq/group_layout.hpp"
#include "qaq/packed_uint_array.hpp"
#include "qaq/precision.hpp"

QAQ_NAMESPACE_BEGIN

/// Every byte a packed cache holds, by kind.
struct byte_report {
    std::int64_t codes = 0;              ///< bit-packed codes
    std::int64_t parameters = 0;         ///< per-group centre/scale values
    std::int64_t widths = 0;             ///< one width tag byte per group
    std::int64_t outlier_counts = 0;     ///< per-group outlier counts (none held if no group has outliers)
    std::int64_t outlier_positions = 0;  ///< in-group positions
    std::int64_t outlier_values = 0;     ///< exact values
    std::int64_t slot_indices = 0;       ///< where each group's codes live (decode-time cache only)
    std::int64_t slack = 0;              ///< allocated but holding nothing yet (growth room, free slots)
    std::int64_t elements = 0;           ///< values represented

    /// Bytes that hold data.
    std::int64_t used() const noexcept {
        return codes + parameters + widths + outlier_counts + outlier_positions + outlier_values + slot_indices;
    }
    /// Everything allocated: used() + slack.
    std::int64_t total() const noexcept { return used() + slack; }
    /// Compression against an FP16 cache of the same elements, by the bytes that hold data.
    double compression_ratio() const noexcept {
        return used() > 0 ? 2.0 * static_cast<double>(elements) / static_cast<double>(used()) : 0.0;
    }
    /// Compression counting every allocated byte, growth room included.
    double allocated_compression_ratio() const noexcept {
        return total() > 0 ? 2.0 * static_cast<double>(elements) / static_cast<double>(total()) : 0.0;
    }
    /// Real bits per element, every data byte included.
    double bits_per_element() const noexcept {
        return elements > 0 ? 8.0 * static_cast<double>(used()) / static_cast<double>(elements) : 0.0;
    }
    byte_report& operator+=(const byte_report& o) noexcept {
        codes += o.codes, parameters += o.parameters, widths += o.widths, outlier_counts += o.outlier_counts;
        outlier_positions += o.outlier_positions, outlier_values += o.outlier_values;
        slot_indices += o.slot_indices, slack += o.slack, elements += o.elements;
        return *this;
    }
};

struct packed_tensor {
    group_layout layout;
    storage_precision precision = storage_precision::fp16;
    int parameters_per_group = 0;

    std::vector<std::uint8_t> widths;      ///< bit width of each group, 0..16
    std::vector<std::uint8_t> parameters;  ///< parameters_per_group values per group, in `precision`
    std::vector<std::uint8_t> codes;       ///< per-group bit streams, concatenated
    packed_uint_array outlier_counts;      ///< per group; empty when no group has outliers
    packed_uint_array outlier_positions;   ///< in-group positions, group after group
    std::vector<std::uint8_t> outlier_values;  ///< exact values in `precision`

    std::int64_t group_count() const noexcept { return layout.group_count(); }
    std::int64_t outlier_count() const noexcept { return outlier_positions.size(); }

    byte_report bytes() const noexcept {
        byte_report r;
        r.codes = static_cast<std::int64_t>(codes.size());
        r.parameters = static_cast<std::int64_t>(parameters.size());
        r.widths = static_cast<std::int64_t>(widths.size());
        r.outlier_counts = outlier_counts.byte_size();
        r.outlier_positions = outlier_positions.byte_size();
        r.outlier_values = static_cast<std::int64_t>(outlier_values.size());
        r.slack = static_cast<std::int64_t>(codes.capacity() - codes.size()) +
                  static_cast<std::int64_t>(outlier_values.capacity() - outlier_values.size()) +
                  static_cast<std::int64_t>(widths.capacity() - widths.size()) +
                  static_cast<std::int64_t>(parameters.capacity() - parameters.size()) +
                  outlier_counts.slack_bytes() + outlier_positions.slack_bytes();
        r.elements = layout.shape().element_count();
        return r;
    }
};

QAQ_NAMESPACE_END
