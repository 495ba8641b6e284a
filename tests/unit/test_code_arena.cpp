// The device cache's slot plan (backend/cuda/code_arena.hpp), on the CPU:
// slots never overlap while held, freed slots are reused by their width only,
// and the byte counts add up — checked against a brute-force byte map.

#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <vector>

#include "qaq/backend/cuda/code_arena.hpp"
#include "qaq/bit_packing.hpp"
#include "qaq/error.hpp"

TEST_CASE("code arena: slot sizes are the packed code bytes of each width", "[code_arena]") {
    const qaq::cuda::code_arena_plan plan(128);
    for (int w = 0; w <= qaq::max_bits; ++w) CHECK(plan.slot_bytes(w) == (128 * w + 7) / 8);
    const qaq::cuda::code_arena_plan odd(5);
    CHECK(odd.slot_bytes(3) == 2);  // 15 bits
    CHECK(odd.slot_bytes(0) == 0);
}

TEST_CASE("code arena: held slots never overlap, freed slots are reused by the same width", "[code_arena]") {
    std::mt19937 rng(7);
    for (const std::int64_t n : {1, 7, 64, 128}) {
        qaq::cuda::code_arena_plan plan(n);
        struct held {
            int width;
            std::uint64_t offset;
        };
        std::vector<held> slots;
        std::int64_t expected_used = 0;
        for (int step = 0; step < 4000; ++step) {
            const bool release = !slots.empty() && std::uniform_int_distribution<int>(0, 2)(rng) == 0;
            if (release) {
                const std::size_t i = std::uniform_int_distribution<std::size_t>(0, slots.size() - 1)(rng);
                plan.release(slots[i].width, slots[i].offset);
                expected_used -= plan.slot_bytes(slots[i].width);
                slots.erase(slots.begin() + static_cast<std::ptrdiff_t>(i));
            } else {
                const int width = std::uniform_int_distribution<int>(0, qaq::max_bits)(rng);
                const std::uint64_t end_before = plan.end();
                const std::uint64_t offset = plan.allocate(width);
                slots.push_back({width, offset});
                expected_used += plan.slot_bytes(width);
                // A new slot either extends the arena by exactly its size or reuses bytes inside it.
                CHECK((plan.end() == end_before || plan.end() == end_before + plan.slot_bytes(width)));
            }
            REQUIRE(plan.used_bytes() == expected_used);
            REQUIRE(plan.free_bytes() == static_cast<std::int64_t>(plan.end()) - expected_used);
        }
        // Brute force: mark every byte of every held slot; none twice, none beyond end().
        std::vector<int> owner(static_cast<std::size_t>(plan.end()), -1);
        for (std::size_t i = 0; i < slots.size(); ++i)
            for (std::int64_t b = 0; b < plan.slot_bytes(slots[i].width); ++b) {
                const std::uint64_t at = slots[i].offset + static_cast<std::uint64_t>(b);
                REQUIRE(at < plan.end());
                REQUIRE(owner[static_cast<std::size_t>(at)] == -1);
                owner[static_cast<std::size_t>(at)] = static_cast<int>(i);
            }
    }
}

TEST_CASE("code arena: a released slot comes back for its width, not for another", "[code_arena]") {
    qaq::cuda::code_arena_plan plan(64);
    const std::uint64_t a = plan.allocate(4);  // 32 bytes at 0
    const std::uint64_t b = plan.allocate(2);  // 16 bytes at 32
    CHECK(a == 0);
    CHECK(b == 32);
    plan.release(4, a);
    CHECK(plan.allocate(3) == 48);  // a 3-bit group does not take the 4-bit hole
    CHECK(plan.allocate(4) == a);   // a 4-bit one does
    CHECK(plan.end() == 48 + 24);
    CHECK(plan.used_bytes() == 32 + 16 + 24);
    CHECK(plan.allocate(0) == 0);  // width 0 holds no codes
    CHECK(plan.used_bytes() == 32 + 16 + 24);
    plan.clear();
    CHECK(plan.end() == 0);
    CHECK(plan.used_bytes() == 0);
}

TEST_CASE("code arena: bad widths and foreign offsets are refused", "[code_arena]") {
    qaq::cuda::code_arena_plan plan(16);
    CHECK_THROWS_AS(plan.allocate(-1), qaq::error);
    CHECK_THROWS_AS(plan.allocate(qaq::max_bits + 1), qaq::error);
    (void)plan.allocate(8);
    CHECK_THROWS_WITH(plan.release(8, 1000), Catch::Contains("beyond the arena"));
    CHECK_THROWS_AS(qaq::cuda::code_arena_plan(0), qaq::error);
}
