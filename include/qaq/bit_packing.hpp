#pragma once
// Packing of unsigned codes of any width 0..16 into a byte stream, LSB first:
// code i occupies bits [i*B, i*B + B) of the stream, bit k of the stream is
// bit (k % 8) of byte k / 8. A group of n codes at B bits takes
// ceil(n * B / 8) bytes; B = 0 takes none.
//
// Eight codes of B bits are exactly B bytes, so the fast paths move blocks of
// eight codes with the width as a compile-time constant; the tail (n % 8
// codes) goes through the bit-serial path.

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN

/// Bytes that `n` codes of `bits` bits occupy.
QAQ_HOST_DEVICE constexpr std::int64_t packed_code_bytes(std::int64_t n, int bits) noexcept {
    return (n * bits + 7) / 8;
}

/// Reads code `i` of a `bits`-wide stream (random access; used by device code).
QAQ_HOST_DEVICE std::uint32_t read_code(const std::uint8_t* stream, std::int64_t i, int bits) noexcept {
    if (bits == 0) return 0;
    const std::int64_t first_bit = i * bits;
    const std::int64_t byte = first_bit >> 3;
    const int shift = static_cast<int>(first_bit & 7);
    // A code spans at most 3 bytes (16 bits starting at bit offset 7).
    std::uint32_t window = stream[byte];
    const int span = (shift + bits + 7) >> 3;
    if (span > 1) window |= static_cast<std::uint32_t>(stream[byte + 1]) << 8;
    if (span > 2) window |= static_cast<std::uint32_t>(stream[byte + 2]) << 16;
    return (window >> shift) & ((1u << bits) - 1u);
}

namespace detail {

// Bit-serial packing of a tail that starts on a byte boundary.
inline void pack_serial(const std::uint32_t* codes, std::int64_t n, int bits, std::uint8_t* out) noexcept {
    std::uint64_t acc = 0;
    int filled = 0;
    std::int64_t o = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        acc |= static_cast<std::uint64_t>(codes[i]) << filled;
        filled += bits;
        while (filled >= 8) {
            out[o++] = static_cast<std::uint8_t>(acc);
            acc >>= 8;
            filled -= 8;
        }
    }
    if (filled > 0) out[o] = static_cast<std::uint8_t>(acc);
}

inline void unpack_serial(const std::uint8_t* in, std::int64_t n, int bits, std::uint32_t* codes) noexcept {
    const std::uint32_t mask = (1u << bits) - 1u;
    std::uint64_t acc = 0;
    int filled = 0;
    std::int64_t byte = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        while (filled < bits) {
            acc |= static_cast<std::uint64_t>(in[byte++]) << filled;
            filled += 8;
        }
        codes[i] = static_cast<std::uint32_t>(acc) & mask;
        acc >>= bits;
        filled -= bits;
    }
}

// Eight codes of Bits bits <-> Bits bytes, via one or two 64-bit words.
template <int Bits>
inline void pack_block8(const std::uint32_t* codes, std::uint8_t* out) noexcept {
    if constexpr (Bits <= 8) {
        std::uint64_t word = 0;
        for (int k = 0; k < 8; ++k) word |= static_cast<std::uint64_t>(codes[k]) << (k * Bits);
        std::memcpy(out, &word, Bits);  // little-endian hosts
    } else {
        std::uint64_t lo = 0, hi = 0;
        for (int k = 0; k < 4; ++k) lo |= static_cast<std::uint64_t>(codes[k]) << (k * Bits);
        for (int k = 0; k < 4; ++k) hi |= static_cast<std::uint64_t>(codes[4 + k]) << (k * Bits);
        // The last four codes start at bit 4 * Bits: byte aligned for even widths,
        // half-way into a byte for odd ones.
        std::uint8_t buffer[16] = {};
        std::memcpy(buffer, &lo, 8);
        const int byte = 4 * Bits / 8, shift = 4 * Bits % 8;
        std::uint64_t part0 = hi << shift;
        std::uint64_t part1 = shift ? (hi >> (64 - shift)) : 0;
        for (int b = 0; b < 8 && byte + b < 16; ++b) buffer[byte + b] |= static_cast<std::uint8_t>(part0 >> (8 * b));
        if (byte + 8 < 16) buffer[byte + 8] |= static_cast<std::uint8_t>(part1);
        std::memcpy(out, buffer, Bits);
    }
}

template <int Bits>
inline void unpack_block8(const std::uint8_t* in, std::uint32_t* codes) noexcept {
    constexpr std::uint64_t mask = (std::uint64_t{1} << Bits) - 1u;
    if constexpr (Bits <= 8) {
        // Assembled in a register: a partial memcpy into a stack word stalls store forwarding.
        std::uint64_t word = 0;
        for (int b = 0; b < Bits; ++b) word |= static_cast<std::uint64_t>(in[b]) << (8 * b);
        for (int k = 0; k < 8; ++k) codes[k] = static_cast<std::uint32_t>((word >> (k * Bits)) & mask);
    } else {
        std::uint8_t buffer[24] = {};
        std::memcpy(buffer, in, Bits);
        for (int k = 0; k < 8; ++k) {
            const int bit = k * Bits, byte = bit / 8, shift = bit % 8;
            std::uint32_t window;
            std::memcpy(&window, buffer + byte, 4);
            codes[k] = static_cast<std::uint32_t>((window >> shift) & mask);
        }
    }
}

template <int Bits>
inline void pack_width(const std::uint32_t* codes, std::int64_t n, std::uint8_t* out) noexcept {
    const std::int64_t blocks = n / 8;
    for (std::int64_t b = 0; b < blocks; ++b) pack_block8<Bits>(codes + 8 * b, out + Bits * b);
    if (blocks * 8 < n) pack_serial(codes + 8 * blocks, n - 8 * blocks, Bits, out + Bits * blocks);
}

template <int Bits>
inline void unpack_width(const std::uint8_t* in, std::int64_t n, std::uint32_t* codes) noexcept {
    const std::int64_t blocks = n / 8;
    for (std::int64_t b = 0; b < blocks; ++b) unpack_block8<Bits>(in + Bits * b, codes + 8 * b);
    if (blocks * 8 < n) unpack_serial(in + Bits * blocks, n - 8 * blocks, Bits, codes + 8 * blocks);
}

}  // namespace detail

/// Calls f(std::integral_constant<int, W>{}) for the runtime width 1..16:
/// the one place a runtime width becomes a compile-time constant.
template <class F>
inline decltype(auto) dispatch_width(int bits, F&& f) {
    switch (bits) {
        case 1: return f(std::integral_constant<int, 1>{});
        case 2: return f(std::integral_constant<int, 2>{});
        case 3: return f(std::integral_constant<int, 3>{});
        case 4: return f(std::integral_constant<int, 4>{});
        case 5: return f(std::integral_constant<int, 5>{});
        case 6: return f(std::integral_constant<int, 6>{});
        case 7: return f(std::integral_constant<int, 7>{});
        case 8: return f(std::integral_constant<int, 8>{});
        case 9: return f(std::integral_constant<int, 9>{});
        case 10: return f(std::integral_constant<int, 10>{});
        case 11: return f(std::integral_constant<int, 11>{});
        case 12: return f(std::integral_constant<int, 12>{});
        case 13: return f(std::integral_constant<int, 13>{});
        case 14: return f(std::integral_constant<int, 14>{});
        case 15: return f(std::integral_constant<int, 15>{});
        default: return f(std::integral_constant<int, 16>{});
    }
}

/// Packs `n` codes (each < 2^bits) into `packed_code_bytes(n, bits)` bytes at `out`.
inline void pack_codes(const std::uint32_t* codes, std::int64_t n, int bits, std::uint8_t* out) noexcept {
    if (bits == 0) return;
    dispatch_width(bits, [&](auto w) { detail::pack_width<decltype(w)::value>(codes, n, out); });
}

/// Unpacks `n` codes of `bits` bits from `in` (the inverse of pack_codes).
inline void unpack_codes(const std::uint8_t* in, std::int64_t n, int bits, std::uint32_t* codes) noexcept {
    if (bits == 0) {
        for (std::int64_t i = 0; i < n; ++i) codes[i] = 0;
        return;
    }
    dispatch_width(bits, [&](auto w) { detail::unpack_width<decltype(w)::value>(in, n, codes); });
}

QAQ_NAMESPACE_END
