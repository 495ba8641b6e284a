#pragma once
// UTF-8 decoding and the character classes the pre-tokenizer regexes need.
//
// Text is arbitrary bytes. A well-formed UTF-8 sequence (no overlong forms, no
// surrogates, at most U+10FFFF) decodes to its code point; every other byte is
// a unit of its own with the class "other" (not a letter, number or space), so
// invalid input splits and round-trips byte by byte instead of failing.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "llama/tokenizer/unicode_tables.hpp"

namespace qaq::llama::detail {

/// Character classes as bit flags; a code point has at most one of them.
enum char_class : std::uint8_t {
    cls_other = 0,
    cls_letter = 1,       // \p{L}
    cls_number = 2,       // \p{N}
    cls_punctuation = 4,  // \p{P}
    cls_whitespace = 8,   // \s (Unicode White_Space)
};

/// Marks a unit that is not well-formed UTF-8 (one raw byte).
inline constexpr std::uint32_t invalid_code_point = 0xFFFFFFFFu;

/// Decodes the unit at `text[pos]`: returns its code point (or
/// invalid_code_point for a stray byte) and stores its length in bytes.
inline std::uint32_t decode_utf8(std::string_view text, std::size_t pos, std::size_t& length) {
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
    const unsigned char b0 = byte(pos);
    const std::size_t left = text.size() - pos;
    length = 1;
    if (b0 < 0x80) return b0;
    const auto continuation = [&](std::size_t i) { return (byte(pos + i) & 0xC0) == 0x80; };
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        if (left >= 2 && continuation(1)) {
            length = 2;
            return (std::uint32_t(b0 & 0x1F) << 6) | (byte(pos + 1) & 0x3F);
        }
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        if (left >= 3 && continuation(1) && continuation(2)) {
            const std::uint32_t cp = (std::uint32_t(b0 & 0x0F) << 12) | (std::uint32_t(byte(pos + 1) & 0x3F) << 6) |
                                     (byte(pos + 2) & 0x3F);
            if (cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) {
                length = 3;
                return cp;
            }
        }
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        if (left >= 4 && continuation(1) && continuation(2) && continuation(3)) {
            const std::uint32_t cp = (std::uint32_t(b0 & 0x07) << 18) | (std::uint32_t(byte(pos + 1) & 0x3F) << 12) |
                                     (std::uint32_t(byte(pos + 2) & 0x3F) << 6) | (byte(pos + 3) & 0x3F);
            if (cp >= 0x10000 && cp <= 0x10FFFF) {
                length = 4;
                return cp;
            }
        }
    }
    return invalid_code_point;
}

/// Appends the UTF-8 form of a code point (<= U+10FFFF).
inline void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

/// Unicode White_Space: what \s matches in the Oniguruma (HF tokenizers) and
/// llama.cpp implementations of the pre-tokenizer regexes.
inline constexpr bool is_unicode_whitespace(std::uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

/// Class of a code point from the generated range table (binary search).
inline std::uint8_t table_class(std::uint32_t cp) {
    std::size_t lo = 0, hi = sizeof(unicode_class_ranges) / sizeof(unicode_class_ranges[0]);
    while (lo < hi) {
        const std::size_t mid = (lo + hi) / 2;
        if (unicode_class_ranges[mid].last < cp) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo < sizeof(unicode_class_ranges) / sizeof(unicode_class_ranges[0]) && unicode_class_ranges[lo].first <= cp) {
        return unicode_class_ranges[lo].cls;
    }
    return cls_other;
}

/// Class of every code point below U+0800 (ASCII, Latin, Greek, Cyrillic,
/// Hebrew, Arabic: most text), computed once.
inline const std::array<std::uint8_t, 0x800>& low_class_table() {
    static const std::array<std::uint8_t, 0x800> table = [] {
        std::array<std::uint8_t, 0x800> t{};
        for (std::uint32_t cp = 0; cp < t.size(); ++cp) {
            t[cp] = is_unicode_whitespace(cp) ? std::uint8_t(cls_whitespace) : table_class(cp);
        }
        return t;
    }();
    return table;
}

/// The class of a unit; invalid bytes are "other".
inline std::uint8_t class_of(std::uint32_t cp) {
    if (cp < 0x800) return low_class_table()[cp];
    if (cp == invalid_code_point) return cls_other;
    if (is_unicode_whitespace(cp)) return cls_whitespace;
    return table_class(cp);
}

/// GPT-2's byte -> code point map: printable Latin-1 bytes map to themselves,
/// the other 68 bytes to U+0100.. in byte order (space -> U+0120 'Ġ').
inline const std::array<std::uint32_t, 256>& byte_to_code_point() {
    static const std::array<std::uint32_t, 256> table = [] {
        std::array<std::uint32_t, 256> t{};
        std::uint32_t next = 256;
        for (std::uint32_t b = 0; b < 256; ++b) {
            const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            t[b] = printable ? b : next++;
        }
        return t;
    }();
    return table;
}

/// The byte a GPT-2 code point stands for, or -1 when it stands for none.
inline int code_point_to_byte(std::uint32_t cp) {
    static const std::array<std::int16_t, 324> table = [] {
        std::array<std::int16_t, 324> t{};
        t.fill(-1);
        const auto& forward = byte_to_code_point();
        for (int b = 0; b < 256; ++b) t[forward[static_cast<std::size_t>(b)]] = static_cast<std::int16_t>(b);
        return t;
    }();
    return cp < table.size() ? table[cp] : -1;
}

}  // namespace qaq::llama::detail
