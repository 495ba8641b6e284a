#pragma once
// Packing of unsigned codes of any width 0..16 into a byte stream, LSB first:
// code i occupies bits [i*B, i*B + B) of the stream, bit k of the stream is
// bit (k % 8) of byte k / 8. A group of n codes at B bits takes
// ceil(n * B / 8) bytes; B = 0 takes none.

#include <cstdint>
#include <cstring>

#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN

/// Bytes that `n` codes of `bits` bits occupy.
QAQ_HOST_DEVICE constexpr std::int64_t packed_code_bytes(std::int64_t n, int bits) noexcept {
    return (n * bits + 7) / 8;
}

/// Reads code `i` of a `bits`-wide stream (random access; used by attend and by device code).
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
// Fixed-width fast paths: the width is a compile-time constant so shifts fold.
template <int Bits>
inline void pack_fixed(const std::uint32_t* codes, std::int64_t n, std::uint8_t* out) noexcept {
    if constexpr (Bits == 8) {
        for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(codes[i]);
    } else if constexpr (Bits == 16) {
        for (std::int64_t i = 0; i < n; ++i) {
            out[2 * i] = static_cast<std::uint8_t>(codes[i]);
            out[2 * i + 1] = static_cast<std::uint8_t>(codes[i] >> 8);
        }
    } else {
        static_assert(8 % Bits == 0, "pack_fixed handles widths that divide a byte");
        constexpr int per_byte = 8 / Bits;
        const std::int64_t full = n / per_byte;
        for (std::int64_t b = 0; b < full; ++b) {
            std::uint32_t byte = 0;
            for (int k = 0; k < per_byte; ++k) byte |= codes[b * per_byte + k] << (k * Bits);
            out[b] = static_cast<std::uint8_t>(byte);
        }
        if (full * per_byte < n) {
            std::uint32_t byte = 0;
            for (std::int64_t i = full * per_byte; i < n; ++i) byte |= codes[i] << ((i - full * per_byte) * Bits);
            out[full] = static_cast<std::uint8_t>(byte);
        }
    }
}

template <int Bits>
inline void unpack_fixed(const std::uint8_t* in, std::int64_t n, std::uint32_t* codes) noexcept {
    if constexpr (Bits == 8) {
        for (std::int64_t i = 0; i < n; ++i) codes[i] = in[i];
    } else if constexpr (Bits == 16) {
        for (std::int64_t i = 0; i < n; ++i)
            codes[i] = static_cast<std::uint32_t>(in[2 * i]) | (static_cast<std::uint32_t>(in[2 * i + 1]) << 8);
    } else {
        constexpr int per_byte = 8 / Bits;
        constexpr std::uint32_t mask = (1u << Bits) - 1u;
        for (std::int64_t i = 0; i < n; ++i)
            codes[i] = (static_cast<std::uint32_t>(in[i / per_byte]) >> ((i % per_byte) * Bits)) & mask;
    }
}
}  // namespace detail

/// Packs `n` codes (each < 2^bits) into `packed_code_bytes(n, bits)` bytes at `out`.
inline void pack_codes(const std::uint32_t* codes, std::int64_t n, int bits, std::uint8_t* out) noexcept {
    switch (bits) {
        case 0: return;
        case 1: return detail::pack_fixed<1>(codes, n, out);
        case 2: return detail::pack_fixed<2>(codes, n, out);
        case 4: return detail::pack_fixed<4>(codes, n, out);
        case 8: return detail::pack_fixed<8>(codes, n, out);
        case 16: return detail::pack_fixed<16>(codes, n, out);
        default: break;
    }
    // Any other width: a 64-bit accumulator flushed a byte at a time.
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

/// Unpacks `n` codes of `bits` bits from `in` (the inverse of pack_codes).
inline void unpack_codes(const std::uint8_t* in, std::int64_t n, int bits, std::uint32_t* codes) noexcept {
    switch (bits) {
        case 0:
            for (std::int64_t i = 0; i < n; ++i) codes[i] = 0;
            return;
        case 1: return detail::unpack_fixed<1>(in, n, codes);
        case 2: return detail::unpack_fixed<2>(in, n, codes);
        case 4: return detail::unpack_fixed<4>(in, n, codes);
        case 8: return detail::unpack_fixed<8>(in, n, codes);
        case 16: return detail::unpack_fixed<16>(in, n, codes);
        default: break;
    }
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

QAQ_NAMESPACE_END
