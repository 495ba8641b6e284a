#pragma once
// Where the device cache's codes live: one device buffer per cache role (the
// arena) and, on the host, this plan of its bytes. Every group's codes take a
// slot of exactly packed_code_bytes(group_size, width) bytes at a byte offset
// in the arena (the offset the kernels read from code_offsets). A group that
// changes width returns its slot to its width's free list and takes one of the
// new width: O(1), nothing else moves, as the CPU cache's slot pools.
//
// Plain C++ with no CUDA types, so the bookkeeping is unit-tested on the CPU
// (tests/unit/test_code_arena.cpp); the device cache grows the arena to end().

#include <array>
#include <cstdint>
#include <vector>

#include "qaq/bit_packing.hpp"
#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN
namespace cuda {

class code_arena_plan {
public:
    code_arena_plan() = default;
    explicit code_arena_plan(std::int64_t group_size) : group_size_(group_size) {
        QAQ_CHECK(group_size >= 1, "code arena group size is ", group_size, ", expected >= 1");
    }

    std::int64_t group_size() const noexcept { return group_size_; }
    /// Bytes of one slot of `width` (0 for width 0: such groups hold no codes).
    std::int64_t slot_bytes(int width) const noexcept { return packed_code_bytes(group_size_, width); }

    /// A slot for a group of `width` bits: a freed one of that width if there is
    /// one, else new bytes at the end. Width 0 takes no bytes (offset 0).
    std::uint64_t allocate(int width) {
        check_width(width);
        if (width == 0) return 0;
        auto& free = free_[static_cast<std::size_t>(width)];
        used_ += slot_bytes(width);
        if (!free.empty()) {
            const std::uint64_t offset = free.back();
            free.pop_back();
            return offset;
        }
        const std::uint64_t offset = end_;
        end_ += static_cast<std::uint64_t>(slot_bytes(width));
        return offset;
    }

    /// Gives back the slot of a group of `width` bits at `offset`.
    void release(int width, std::uint64_t offset) {
        check_width(width);
        if (width == 0) return;
        QAQ_CHECK(offset + static_cast<std::uint64_t>(slot_bytes(width)) <= end_, "code slot at ", offset, " of width ",
                  width, " lies beyond the arena's ", end_, " bytes");
        free_[static_cast<std::size_t>(width)].push_back(offset);
        used_ -= slot_bytes(width);
    }

    /// Bytes the arena must hold: every slot ever handed out, free ones included.
    std::uint64_t end() const noexcept { return end_; }
    /// Bytes of slots holding codes.
    std::int64_t used_bytes() const noexcept { return used_; }
    /// Free slots, in bytes (part of end(), holding nothing).
    std::int64_t free_bytes() const noexcept { return static_cast<std::int64_t>(end_) - used_; }
    /// Host bytes of the free lists.
    std::int64_t bookkeeping_bytes() const noexcept {
        std::int64_t b = 0;
        for (const auto& f : free_) b += static_cast<std::int64_t>(f.capacity() * sizeof(std::uint64_t));
        return b;
    }

    void clear() {
        for (auto& f : free_) f.clear();
        end_ = 0;
        used_ = 0;
    }

private:
    static void check_width(int width) {
        QAQ_CHECK(width >= 0 && width <= max_bits, "code width ", width, " is out of range; expected 0..", max_bits);
    }

    std::int64_t group_size_ = 1;
    std::array<std::vector<std::uint64_t>, max_bits + 1> free_;
    std::uint64_t end_ = 0;
    std::int64_t used_ = 0;
};

}  // namespace cuda
QAQ_NAMESPACE_END
