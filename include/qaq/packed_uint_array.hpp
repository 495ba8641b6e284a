#pragma once
// Unsigned integers stored at the narrowest byte width (1, 2 or 4) that holds
// a known maximum: outlier counts and in-group positions cost 1 byte for a
// head of 128 dims and grow only when groups do.

#include <cstdint>
#include <cstring>
#include <vector>

#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN

class packed_uint_array {
public:
    packed_uint_array() = default;
    explicit packed_uint_array(std::uint64_t max_value) : width_(width_for(max_value)) {}

    static int width_for(std::uint64_t max_value) noexcept {
        return max_value <= 0xFFu ? 1 : (max_value <= 0xFFFFu ? 2 : 4);
    }

    int width() const noexcept { return width_; }
    std::int64_t size() const noexcept { return static_cast<std::int64_t>(bytes_.size()) / width_; }
    bool empty() const noexcept { return bytes_.empty(); }
    /// Bytes actually held.
    std::int64_t byte_size() const noexcept { return static_cast<std::int64_t>(bytes_.size()); }

    void push_back(std::uint32_t v) {
        const std::size_t at = bytes_.size();
        bytes_.resize(at + static_cast<std::size_t>(width_));
        std::memcpy(&bytes_[at], &v, static_cast<std::size_t>(width_));  // little-endian hosts
    }
    /// push_back of `count` values with one resize (a resize per value was a tenth of quantize
    /// with quantile outliers).
    void append(const std::uint32_t* v, std::int64_t count) {
        const std::size_t at = bytes_.size();
        bytes_.resize(at + static_cast<std::size_t>(count * width_));
        std::uint8_t* p = &bytes_[at];
        switch (width_) {
            case 1: for (std::int64_t k = 0; k < count; ++k) p[k] = static_cast<std::uint8_t>(v[k]); break;
            case 2: for (std::int64_t k = 0; k < count; ++k) std::memcpy(p + 2 * k, &v[k], 2); break;
            default: std::memcpy(p, v, static_cast<std::size_t>(count) * 4); break;
        }
    }
    std::uint32_t operator[](std::int64_t i) const noexcept {
        // Assembled in registers: a variable-length memcpy here costs a call and a store-forwarding stall.
        const std::uint8_t* p = &bytes_[static_cast<std::size_t>(i * width_)];
        switch (width_) {
            case 1: return p[0];
            case 2: return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8);
            default:
                return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
                       (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
        }
    }
    /// Bytes allocated beyond byte_size().
    std::int64_t slack_bytes() const noexcept { return static_cast<std::int64_t>(bytes_.capacity() - bytes_.size()); }
    void clear() noexcept { bytes_.clear(); }
    void shrink_to_fit() { bytes_.shrink_to_fit(); }
    void reserve(std::int64_t n) { bytes_.reserve(static_cast<std::size_t>(n * width_)); }

private:
    int width_ = 4;
    std::vector<std::uint8_t> bytes_;
};

QAQ_NAMESPACE_END
