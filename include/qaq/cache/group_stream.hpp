#pragma once
// The groups of one (layer, KV head) of one cache (keys or values), in token
// order: per group a width tag, a slot in the width's pool, the stored
// parameters and its exact outliers; beside them the host-side full-precision
// copy and each group's range (what rebalancing reads to choose new widths).
//
// Outliers depend only on the data, never on the width, so they are written
// once at append time and read sequentially (group after group) afterwards.

#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "qaq/bit_packing.hpp"
#include "qaq/cache/chunked_store.hpp"
#include "qaq/cache/slot_pool.hpp"
#include "qaq/config.hpp"
#include "qaq/packed_tensor.hpp"
#include "qaq/packed_uint_array.hpp"
#include "qaq/precision.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN
namespace cache {

/// One pool per width 1..16 (width 0 stores no codes), shared by all streams of a cache role.
class width_pools {
public:
    width_pools() = default;
    explicit width_pools(std::int64_t group_size) {
        for (int w = 1; w <= max_bits; ++w) pools_[w] = slot_pool(packed_code_bytes(group_size, w));
    }
    slot_pool& operator[](int width) noexcept { return pools_[width]; }
    const slot_pool& operator[](int width) const noexcept { return pools_[width]; }
    std::int64_t used_bytes() const noexcept {
        std::int64_t b = 0;
        for (int w = 1; w <= max_bits; ++w) b += pools_[w].used_bytes();
        return b;
    }
    std::int64_t allocated_bytes() const noexcept {
        std::int64_t b = 0;
        for (int w = 1; w <= max_bits; ++w) b += pools_[w].allocated_bytes();
        return b;
    }

private:
    std::array<slot_pool, max_bits + 1> pools_;
};

class group_stream {
public:
    group_stream() = default;
    group_stream(std::int64_t group_size, std::int64_t parameter_bytes, storage_precision precision)
        : group_size_(group_size), parameter_bytes_(parameter_bytes), precision_(precision),
          outlier_counts_(static_cast<std::uint64_t>(group_size)),
          outlier_positions_(static_cast<std::uint64_t>(group_size - 1)),
          host_(group_size, 256) {}

    std::int64_t group_count() const noexcept { return static_cast<std::int64_t>(widths_.size()); }
    std::int64_t group_size() const noexcept { return group_size_; }

    /// Appends a group: its full-precision copy, range, first encoding and exact outliers.
    void append(width_pools& pools, const float* full_precision, float range, int width, const std::uint8_t* parameters,
                const std::uint8_t* codes, const std::uint8_t* is_outlier) {
        std::memcpy(host_.append(), full_precision, static_cast<std::size_t>(group_size_) * sizeof(float));
        ranges_.push_back(range);
        widths_.push_back(static_cast<std::uint8_t>(width));
        slots_.push_back(width > 0 ? pools[width].allocate() : 0u);
        parameters_.insert(parameters_.end(), parameters, parameters + parameter_bytes_);
        if (width > 0) std::memcpy(pools[width].data(slots_.back()), codes, static_cast<std::size_t>(code_bytes(width)));
        std::uint32_t count = 0;
        const std::int64_t value_bytes = bytes_per_value(precision_);
        for (std::int64_t i = 0; i < group_size_; ++i) {
            if (!is_outlier[i]) continue;
            ++count;
            outlier_positions_.push_back(static_cast<std::uint32_t>(i));
            const std::size_t at = outlier_values_.size();
            outlier_values_.resize(at + static_cast<std::size_t>(value_bytes));
            store_value(precision_, full_precision[i], &outlier_values_[at]);
        }
        outlier_counts_.push_back(count);
    }

    /// Replaces group g's encoding with one at `width` (moves it between pools).
    void rewrite(width_pools& pools, std::int64_t g, int width, const std::uint8_t* parameters,
                 const std::uint8_t* codes) {
        const int old = widths_[static_cast<std::size_t>(g)];
        if (old != width) {
            if (old > 0) pools[old].release(slots_[static_cast<std::size_t>(g)]);
            slots_[static_cast<std::size_t>(g)] = width > 0 ? pools[width].allocate() : 0u;
            widths_[static_cast<std::size_t>(g)] = static_cast<std::uint8_t>(width);
        }
        if (parameter_bytes_ > 0)  // an FP16 pass-through stores none (and memcpy needs valid pointers)
            std::memcpy(parameters_.data() + g * parameter_bytes_, parameters, static_cast<std::size_t>(parameter_bytes_));
        if (width > 0)
            std::memcpy(pools[width].data(slots_[static_cast<std::size_t>(g)]), codes,
                        static_cast<std::size_t>(code_bytes(width)));
    }

    int width(std::int64_t g) const noexcept { return widths_[static_cast<std::size_t>(g)]; }
    float range(std::int64_t g) const noexcept { return ranges_[static_cast<std::size_t>(g)]; }
    const std::uint8_t* parameters(std::int64_t g) const noexcept {
        return parameters_.data() + g * parameter_bytes_;
    }
    const std::uint8_t* codes(const width_pools& pools, std::int64_t g) const noexcept {
        const int w = width(g);
        return w > 0 ? pools[w].data(slots_[static_cast<std::size_t>(g)]) : nullptr;
    }
    /// True when groups first, first + stride, ... (count of them) all have width w.
    bool all_at_width(std::int64_t first, std::int64_t stride, std::int64_t count, int w) const noexcept {
        const std::uint8_t* widths = widths_.data() + first;
        unsigned differ = 0;
        for (std::int64_t i = 0; i < count; ++i) differ |= widths[i * stride] ^ static_cast<unsigned>(w);
        return differ == 0;
    }
    /// out[i] = codes of group first + i * stride, for `count` groups that all have width w >= 1
    /// (one pool, so no width dispatch per group).
    void codes_at_width(const width_pools& pools, int w, std::int64_t first, std::int64_t stride, std::int64_t count,
                        const std::uint8_t** out) const noexcept {
        const slot_pool& pool = pools[w];
        const std::uint32_t* slots = slots_.data() + first;
        for (std::int64_t i = 0; i < count; ++i) out[i] = pool.data(slots[i * stride]);
    }
    const float* full_precision(std::int64_t g) const noexcept { return host_.record(g); }
    std::int64_t code_bytes(int width) const noexcept { return packed_code_bytes(group_size_, width); }

    // Outliers, read sequentially: `cursor` is the index of group g's first outlier.
    std::int64_t outlier_count(std::int64_t g) const noexcept { return outlier_counts_[g]; }
    /// Outliers of all groups together (0: no group has any).
    std::int64_t outlier_total() const noexcept { return outlier_positions_.size(); }
    std::uint32_t outlier_position(std::int64_t cursor) const noexcept { return outlier_positions_[cursor]; }
    float outlier_value(std::int64_t cursor) const noexcept {
        return load_value(precision_, &outlier_values_[static_cast<std::size_t>(cursor * bytes_per_value(precision_))]);
    }

    /// This stream's bytes, codes excluded (those live in the shared pools).
    byte_report metadata_bytes() const noexcept {
        byte_report r;
        r.parameters = static_cast<std::int64_t>(parameters_.size());
        r.widths = static_cast<std::int64_t>(widths_.size());
        r.slot_indices = static_cast<std::int64_t>(slots_.size() * sizeof(std::uint32_t));
        r.outlier_counts = outlier_counts_.byte_size();
        r.outlier_positions = outlier_positions_.byte_size();
        r.outlier_values = static_cast<std::int64_t>(outlier_values_.size());
        r.slack = static_cast<std::int64_t>(parameters_.capacity() - parameters_.size()) +
                  static_cast<std::int64_t>(widths_.capacity() - widths_.size()) +
                  static_cast<std::int64_t>((slots_.capacity() - slots_.size()) * sizeof(std::uint32_t)) +
                  outlier_counts_.slack_bytes() + outlier_positions_.slack_bytes() +
                  static_cast<std::int64_t>(outlier_values_.capacity() - outlier_values_.size());
        r.elements = group_count() * group_size_;
        return r;
    }
    /// Host-side bytes: the full-precision copy (allocated chunks) and the ranges.
    std::int64_t host_copy_bytes() const noexcept { return host_.allocated_bytes(); }
    std::int64_t host_metadata_bytes() const noexcept {
        return static_cast<std::int64_t>(ranges_.capacity() * sizeof(float));
    }

private:
    std::int64_t group_size_ = 0;
    std::int64_t parameter_bytes_ = 0;
    storage_precision precision_ = storage_precision::fp16;
    std::vector<std::uint8_t> widths_;
    std::vector<std::uint32_t> slots_;
    std::vector<std::uint8_t> parameters_;
    packed_uint_array outlier_counts_;
    packed_uint_array outlier_positions_;
    std::vector<std::uint8_t> outlier_values_;
    std::vector<float> ranges_;
    chunked_store<float> host_;
};

}  // namespace cache
QAQ_NAMESPACE_END
