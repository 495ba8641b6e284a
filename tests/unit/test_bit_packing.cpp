// Bit packing: exact round trips at every width, sizes by arithmetic, and a
// byte layout worked out by hand.

#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <vector>

#include "qaq/bit_packing.hpp"

TEST_CASE("packed_code_bytes is ceil(n * bits / 8)", "[bit_packing]") {
    CHECK(qaq::packed_code_bytes(128, 4) == 64);
    CHECK(qaq::packed_code_bytes(128, 3) == 48);
    CHECK(qaq::packed_code_bytes(5, 3) == 2);    // 15 bits
    CHECK(qaq::packed_code_bytes(3, 3) == 2);    // 9 bits
    CHECK(qaq::packed_code_bytes(100, 0) == 0);  // width 0 stores nothing
    CHECK(qaq::packed_code_bytes(7, 16) == 14);
}

TEST_CASE("3-bit codes are laid out LSB first", "[bit_packing]") {
    // 1 | 2<<3 | 3<<6 | 4<<9 | 5<<12 = 1 + 16 + 192 + 2048 + 20480 = 22737 = 0x58D1.
    const std::uint32_t codes[] = {1, 2, 3, 4, 5};
    std::uint8_t out[2] = {0xAA, 0xAA};
    qaq::pack_codes(codes, 5, 3, out);
    CHECK(out[0] == 0xD1);
    CHECK(out[1] == 0x58);
}

TEST_CASE("4-bit codes put the first code in the low nibble", "[bit_packing]") {
    const std::uint32_t codes[] = {0x3, 0xC, 0xF};
    std::uint8_t out[2] = {};
    qaq::pack_codes(codes, 3, 4, out);
    CHECK(out[0] == 0xC3);
    CHECK(out[1] == 0x0F);
}

TEST_CASE("pack/unpack round-trips every width and length", "[bit_packing]") {
    std::mt19937 rng(7);
    for (int bits = 0; bits <= 16; ++bits) {
        for (std::int64_t n : {1, 2, 3, 7, 8, 9, 31, 64, 127, 1000}) {
            std::vector<std::uint32_t> codes(static_cast<std::size_t>(n));
            const std::uint32_t limit = bits == 0 ? 0u : ((1u << bits) - 1u);
            std::uniform_int_distribution<std::uint32_t> dist(0, limit);
            for (auto& c : codes) c = dist(rng);
            std::vector<std::uint8_t> packed(static_cast<std::size_t>(qaq::packed_code_bytes(n, bits)) + 3, 0x5A);
            qaq::pack_codes(codes.data(), n, bits, packed.data());
            // Bytes past the group are untouched.
            CHECK(packed[packed.size() - 1] == 0x5A);
            std::vector<std::uint32_t> back(static_cast<std::size_t>(n), 12345u);
            qaq::unpack_codes(packed.data(), n, bits, back.data());
            INFO("bits " << bits << " n " << n);
            REQUIRE(back == codes);
            for (std::int64_t i = 0; i < n; ++i) REQUIRE(qaq::read_code(packed.data(), i, bits) == codes[i]);
        }
    }
}
