#pragma once
// Fixed-size slots for the codes of one bit width. A group that changes width
// moves to another pool in O(1): its old slot goes on a free list, so the cache
// never repacks neighbours and never copies more than one group. Memory grows
// in chunks, so a 32k-token cache never reallocates what it already holds.

#include <cstdint>
#include <memory>
#include <vector>

#include "qaq/config.hpp"
#include "qaq/error.hpp"

QAQ_NAMESPACE_BEGIN
namespace cache {

class slot_pool {
public:
    static constexpr std::int64_t slots_per_chunk = 128;

    slot_pool() = default;
    explicit slot_pool(std::int64_t slot_bytes) : slot_bytes_(slot_bytes) {}

    std::int64_t slot_bytes() const noexcept { return slot_bytes_; }

    std::uint32_t allocate() {
        if (!free_.empty()) {
            const std::uint32_t s = free_.back();
            free_.pop_back();
            ++used_;
            return s;
        }
        if (next_ == static_cast<std::int64_t>(chunks_.size()) * slots_per_chunk)
            chunks_.emplace_back(new std::uint8_t[static_cast<std::size_t>(slot_bytes_ * slots_per_chunk)]());
        QAQ_CHECK(next_ < std::int64_t{0xFFFFFFFF}, "slot pool exhausted (2^32 slots)");
        ++used_;
        return static_cast<std::uint32_t>(next_++);
    }

    void release(std::uint32_t slot) {
        free_.push_back(slot);
        --used_;
    }

    std::uint8_t* data(std::uint32_t slot) noexcept {
        return chunks_[slot / slots_per_chunk].get() + (slot % slots_per_chunk) * slot_bytes_;
    }
    const std::uint8_t* data(std::uint32_t slot) const noexcept {
        return chunks_[slot / slots_per_chunk].get() + (slot % slots_per_chunk) * slot_bytes_;
    }

    /// Bytes of slots holding codes.
    std::int64_t used_bytes() const noexcept { return used_ * slot_bytes_; }
    /// Everything this pool allocated: chunks plus the free list.
    std::int64_t allocated_bytes() const noexcept {
        return static_cast<std::int64_t>(chunks_.size()) * slots_per_chunk * slot_bytes_ +
               static_cast<std::int64_t>(free_.capacity() * sizeof(std::uint32_t));
    }

private:
    std::int64_t slot_bytes_ = 0;
    std::int64_t used_ = 0;
    std::int64_t next_ = 0;
    std::vector<std::unique_ptr<std::uint8_t[]>> chunks_;
    std::vector<std::uint32_t> free_;
};

}  // namespace cache
QAQ_NAMESPACE_END
