#pragma once
// NumPy .npy files: a strict reader and an atomic writer.
//
// The reader accepts format versions 1.0, 2.0 and 3.0, C-order arrays of
// float16/32/64, signed and unsigned 8..64-bit integers and bool, in either
// byte order (big-endian data is swapped to little-endian on read). Every
// malformed input raises qaq::error saying what was wrong and what was
// expected; the parser never reads outside the buffer it is given, so it is
// safe on untrusted files. Files are written like numpy.save writes them
// (version 1.0, or 2.0 when the header needs it), byte for byte.
//
// Array bytes are always held little-endian in C (row-major) order, whatever
// the host; the typed accessors convert.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <system_error>
#include <vector>

#if defined(_WIN32)
#include <process.h>
#else
#include <unistd.h>
#endif

#include "qaq/config.hpp"
#include "qaq/error.hpp"

QAQ_NAMESPACE_BEGIN
namespace io {

enum class npy_dtype {
    float16,
    float32,
    float64,
    int8,
    int16,
    int32,
    int64,
    uint8,
    uint16,
    uint32,
    uint64,
    boolean
};

/// Bytes per element.
inline std::size_t npy_dtype_size(npy_dtype dtype) noexcept {
    switch (dtype) {
        case npy_dtype::int8:
        case npy_dtype::uint8:
        case npy_dtype::boolean: return 1;
        case npy_dtype::float16:
        case npy_dtype::int16:
        case npy_dtype::uint16: return 2;
        case npy_dtype::float32:
        case npy_dtype::int32:
        case npy_dtype::uint32: return 4;
        case npy_dtype::float64:
        case npy_dtype::int64:
        case npy_dtype::uint64: return 8;
    }
    return 0;
}

/// numpy's name of the dtype ("float32", "bool", ...).
inline const char* to_string(npy_dtype dtype) noexcept {
    switch (dtype) {
        case npy_dtype::float16: return "float16";
        case npy_dtype::float32: return "float32";
        case npy_dtype::float64: return "float64";
        case npy_dtype::int8: return "int8";
        case npy_dtype::int16: return "int16";
        case npy_dtype::int32: return "int32";
        case npy_dtype::int64: return "int64";
        case npy_dtype::uint8: return "uint8";
        case npy_dtype::uint16: return "uint16";
        case npy_dtype::uint32: return "uint32";
        case npy_dtype::uint64: return "uint64";
        case npy_dtype::boolean: return "bool";
    }
    return "unknown";
}

/// The little-endian descr string numpy writes for the dtype ('<f4', '|b1', ...).
inline std::string npy_descr(npy_dtype dtype) {
    switch (dtype) {
        case npy_dtype::float16: return "<f2";
        case npy_dtype::float32: return "<f4";
        case npy_dtype::float64: return "<f8";
        case npy_dtype::int8: return "|i1";
        case npy_dtype::int16: return "<i2";
        case npy_dtype::int32: return "<i4";
        case npy_dtype::int64: return "<i8";
        case npy_dtype::uint8: return "|u1";
        case npy_dtype::uint16: return "<u2";
        case npy_dtype::uint32: return "<u4";
        case npy_dtype::uint64: return "<u8";
        case npy_dtype::boolean: return "|b1";
    }
    return "";
}

/// IEEE binary16 bits -> float (exact).
inline float half_bits_to_float(std::uint16_t h) noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t exponent = (h >> 10) & 0x1fu;
    std::uint32_t mantissa = h & 0x3ffu;
    std::uint32_t bits;
    if (exponent == 0x1fu) {
        bits = sign | 0x7f800000u | (mantissa << 13);  // Inf, or NaN keeping its payload
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);  // rebias 15 -> 127
    } else if (mantissa == 0) {
        bits = sign;  // signed zero
    } else {
        // Subnormal half: normalise (value = mantissa * 2^-24).
        std::uint32_t e = 113;  // exponent of 2^-14 in float bias, decremented per shift
        while ((mantissa & 0x400u) == 0) {
            mantissa <<= 1;
            --e;
        }
        bits = sign | (e << 23) | ((mantissa & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

/// float -> IEEE binary16 bits, round to nearest, ties to even; overflow gives
/// Inf, NaN stays NaN (quiet).
inline std::uint16_t float_to_half_bits(float f) noexcept {
    std::uint32_t x;
    std::memcpy(&x, &f, sizeof x);
    const std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
    const std::uint32_t exponent = (x >> 23) & 0xffu;
    const std::uint32_t mantissa = x & 0x7fffffu;
    if (exponent == 0xffu) {
        if (mantissa == 0) return static_cast<std::uint16_t>(sign | 0x7c00u);
        return static_cast<std::uint16_t>(sign | 0x7e00u | (mantissa >> 13));
    }
    const int e = static_cast<int>(exponent) - 127;  // unbiased
    if (e > 15) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 2^16: overflow
    if (e >= -14) {
        // Normal half range: keep 10 mantissa bits, round the 13 dropped ones.
        std::uint32_t h = (static_cast<std::uint32_t>(e + 15) << 10) | (mantissa >> 13);
        const std::uint32_t dropped = mantissa & 0x1fffu;
        if (dropped > 0x1000u || (dropped == 0x1000u && (h & 1u))) ++h;  // may carry into Inf: correct
        return static_cast<std::uint16_t>(sign | h);
    }
    if (e < -25) return sign;  // below half the smallest subnormal: rounds to zero
    // Subnormal half: value = m * 2^-24 with m = significand * 2^(e + 24 - 23).
    const std::uint32_t significand = mantissa | 0x800000u;
    const int shift = -e - 1;  // 14 .. 24: bits dropped from the 24-bit significand
    std::uint32_t h = significand >> shift;
    const std::uint32_t dropped = significand & ((1u << shift) - 1u);
    const std::uint32_t halfway = 1u << (shift - 1);
    if (dropped > halfway || (dropped == halfway && (h & 1u))) ++h;  // may become the smallest normal
    return static_cast<std::uint16_t>(sign | h);
}

namespace detail {

inline bool host_is_little_endian() noexcept {
    const std::uint16_t probe = 1;
    unsigned char first;
    std::memcpy(&first, &probe, 1);
    return first == 1;
}

/// Reverses each `item_size`-byte element of `bytes` in place.
inline void swap_elements(std::uint8_t* bytes, std::size_t count, std::size_t item_size) noexcept {
    if (item_size < 2) return;
    for (std::size_t i = 0; i < count; ++i) {
        std::uint8_t* p = bytes + i * item_size;
        for (std::size_t a = 0, b = item_size - 1; a < b; ++a, --b) {
            const std::uint8_t t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
    }
}

template <class T>
T load_le(const std::uint8_t* p) noexcept {
    std::uint8_t buffer[sizeof(T)];
    std::memcpy(buffer, p, sizeof(T));
    if (!host_is_little_endian()) swap_elements(buffer, 1, sizeof(T));
    T value;
    std::memcpy(&value, buffer, sizeof(T));
    return value;
}

/// Printable excerpt of header text for error messages.
inline std::string excerpt(const char* text, std::size_t size) {
    std::string out;
    const std::size_t limit = size < 80 ? size : 80;
    for (std::size_t i = 0; i < limit; ++i) {
        const unsigned char c = static_cast<unsigned char>(text[i]);
        if (c >= 0x20 && c < 0x7f) {
            out += static_cast<char>(c);
        } else {
            static const char digits[] = "0123456789abcdef";
            out += "\\x";
            out += digits[c >> 4];
            out += digits[c & 15];
        }
    }
    if (size > limit) out += "...";
    return out;
}

/// Recursive-descent parser for the Python dict literal of an .npy header:
/// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
/// Only what numpy writes is accepted: string keys; string, True/False and
/// tuple-of-integers values (a trailing 'L' of Python 2 longs is allowed).
class header_parser {
public:
    header_parser(const char* text, std::size_t size, const std::string& name)
        : text_(text), size_(size), name_(name) {}

    struct result {
        std::string descr;
        bool fortran_order = false;
        std::vector<std::int64_t> shape;
    };

    result parse() {
        result out;
        bool have_descr = false, have_fortran = false, have_shape = false;
        skip_space();
        expect('{', "the header dictionary to start with '{'");
        for (;;) {
            skip_space();
            if (peek() == '}') {
                ++pos_;
                break;
            }
            const std::string key = parse_string("a quoted key");
            skip_space();
            expect(':', "':' after key '" + key + "'");
            skip_space();
            if (key == "descr") {
                QAQ_CHECK(!have_descr, name_, ": npy header has key 'descr' twice");
                if (peek() == '[')
                    fail("'descr' is a list (a structured dtype); expected a simple dtype string such as '<f4'");
                out.descr = parse_string("'descr' to be a dtype string such as '<f4'");
                have_descr = true;
            } else if (key == "fortran_order") {
                QAQ_CHECK(!have_fortran, name_, ": npy header has key 'fortran_order' twice");
                out.fortran_order = parse_bool();
                have_fortran = true;
            } else if (key == "shape") {
                QAQ_CHECK(!have_shape, name_, ": npy header has key 'shape' twice");
                out.shape = parse_shape();
                have_shape = true;
            } else {
                fail("unexpected key '" + key + "'; expected only 'descr', 'fortran_order' and 'shape'");
            }
            skip_space();
            if (peek() == ',') {
                ++pos_;
                continue;
            }
            skip_space();
            expect('}', "',' or '}' after the value of '" + key + "'");
            break;
        }
        skip_space();
        if (pos_ != size_) fail("unexpected text after the header dictionary");
        QAQ_CHECK(have_descr, name_, ": npy header lacks the key 'descr'; expected 'descr', 'fortran_order' and 'shape'");
        QAQ_CHECK(have_fortran, name_,
                  ": npy header lacks the key 'fortran_order'; expected 'descr', 'fortran_order' and 'shape'");
        QAQ_CHECK(have_shape, name_, ": npy header lacks the key 'shape'; expected 'descr', 'fortran_order' and 'shape'");
        return out;
    }

private:
    [[noreturn]] void fail(const std::string& what) const {
        throw error(name_ + ": unparsable npy header at character " + std::to_string(pos_) + ": " + what +
                    " (header: \"" + excerpt(text_, size_) + "\")");
    }
    char peek() const noexcept { return pos_ < size_ ? text_[pos_] : '\0'; }
    bool at_end() const noexcept { return pos_ >= size_; }
    void skip_space() noexcept {
        while (pos_ < size_ && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' ||
                                text_[pos_] == '\r'))
            ++pos_;
    }
    void expect(char c, const std::string& what) {
        if (at_end() || text_[pos_] != c) fail("expected " + what);
        ++pos_;
    }
    std::string parse_string(const std::string& what) {
        if (at_end() || (peek() != '\'' && peek() != '"')) fail("expected " + what);
        const char quote = text_[pos_++];
        std::string out;
        while (!at_end() && text_[pos_] != quote) {
            if (text_[pos_] == '\\') fail("escape sequences are not supported in header strings");
            out += text_[pos_++];
            if (out.size() > 64) fail("string longer than 64 characters; expected " + what);
        }
        if (at_end()) fail("unterminated string; expected " + what);
        ++pos_;
        return out;
    }
    bool parse_bool() {
        if (size_ - pos_ >= 4 && std::memcmp(text_ + pos_, "True", 4) == 0) {
            pos_ += 4;
            return true;
        }
        if (size_ - pos_ >= 5 && std::memcmp(text_ + pos_, "False", 5) == 0) {
            pos_ += 5;
            return false;
        }
        fail("expected True or False for 'fortran_order'");
    }
    std::int64_t parse_extent(std::size_t axis) {
        if (peek() == '-') fail("shape extent " + std::to_string(axis) + " is negative; expected >= 0");
        if (peek() == '+') ++pos_;
        if (at_end() || peek() < '0' || peek() > '9')
            fail("expected a non-negative integer as shape extent " + std::to_string(axis));
        std::int64_t value = 0;
        while (!at_end() && peek() >= '0' && peek() <= '9') {
            const int digit = peek() - '0';
            if (value > (std::numeric_limits<std::int64_t>::max() - digit) / 10)
                fail("shape extent " + std::to_string(axis) + " does not fit in 64 bits");
            value = value * 10 + digit;
            ++pos_;
        }
        if (peek() == 'L' || peek() == 'l') ++pos_;  // Python 2 long
        return value;
    }
    std::vector<std::int64_t> parse_shape() {
        std::vector<std::int64_t> shape;
        expect('(', "'shape' to be a tuple such as (2, 3), (5,) or ()");
        for (;;) {
            skip_space();
            if (peek() == ')') {
                ++pos_;
                break;
            }
            if (shape.size() >= 64) fail("shape has more than 64 dimensions");
            shape.push_back(parse_extent(shape.size()));
            skip_space();
            if (peek() == ',') {
                ++pos_;
                continue;
            }
            expect(')', "',' or ')' in the shape tuple");
            if (shape.size() == 1) fail("a one-element shape tuple needs a trailing comma, as in (5,)");
            break;
        }
        return shape;
    }

    const char* text_;
    std::size_t size_;
    const std::string& name_;
    std::size_t pos_ = 0;
};

struct parsed_descr {
    npy_dtype dtype;
    bool big_endian;
};

inline parsed_descr parse_descr(const std::string& descr, const std::string& name) {
    const auto unknown = [&](const std::string& why) -> error {
        return error(name + ": unsupported npy dtype '" + descr + "'" + why +
                     "; expected one of <f2 <f4 <f8 |i1 <i2 <i4 <i8 |u1 <u2 <u4 <u8 |b1 (or big-endian '>' forms)");
    };
    if (descr.size() != 3) throw unknown("");
    const char order = descr[0];
    if (order != '<' && order != '>' && order != '|' && order != '=')
        throw unknown(" (byte order must be '<', '>', '|' or '=')");
    const std::string type = descr.substr(1);
    parsed_descr out{npy_dtype::float32, false};
    if (type == "f2") out.dtype = npy_dtype::float16;
    else if (type == "f4") out.dtype = npy_dtype::float32;
    else if (type == "f8") out.dtype = npy_dtype::float64;
    else if (type == "i1") out.dtype = npy_dtype::int8;
    else if (type == "i2") out.dtype = npy_dtype::int16;
    else if (type == "i4") out.dtype = npy_dtype::int32;
    else if (type == "i8") out.dtype = npy_dtype::int64;
    else if (type == "u1") out.dtype = npy_dtype::uint8;
    else if (type == "u2") out.dtype = npy_dtype::uint16;
    else if (type == "u4") out.dtype = npy_dtype::uint32;
    else if (type == "u8") out.dtype = npy_dtype::uint64;
    else if (type == "b1") out.dtype = npy_dtype::boolean;
    else throw unknown("");
    const std::size_t size = npy_dtype_size(out.dtype);
    if (order == '|' && size > 1) throw unknown(" ('|' (no byte order) is only valid for 1-byte types)");
    if (order == '=') out.big_endian = !host_is_little_endian();
    else out.big_endian = order == '>' && size > 1;
    return out;
}

inline std::size_t checked_element_count(const std::vector<std::int64_t>& shape, const std::string& name) {
    std::size_t count = 1;
    for (std::size_t i = 0; i < shape.size(); ++i) {
        QAQ_CHECK(shape[i] >= 0, name, ": npy shape extent ", i, " is ", shape[i], "; expected >= 0");
        const auto extent = static_cast<std::uint64_t>(shape[i]);
        if (extent != 0 && count > static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max()) / extent)
            throw error(name + ": npy shape overflows 64-bit element count at extent " + std::to_string(i));
        count *= static_cast<std::size_t>(extent);
    }
    // A zero extent anywhere makes the array empty, even if other extents are huge.
    return count;
}

inline std::string shape_string(const std::vector<std::int64_t>& shape) {
    std::string s = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        if (i) s += ", ";
        s += std::to_string(shape[i]);
    }
    if (shape.size() == 1) s += ",";
    return s + ")";
}

}  // namespace detail

/// An array read from, or about to be written to, an .npy file.
struct npy_array {
    npy_dtype dtype = npy_dtype::float32;
    std::vector<std::int64_t> shape;  ///< () for a scalar
    std::vector<std::uint8_t> bytes;  ///< little-endian, C order, element_count() * item size bytes

    std::int64_t element_count() const noexcept {
        std::int64_t n = 1;
        for (std::int64_t e : shape) n *= e;
        return n;
    }

    std::size_t item_size() const noexcept { return npy_dtype_size(dtype); }

    /// Element i as double (exact for every dtype but the 64-bit integers beyond 2^53).
    double value_as_double(std::size_t i) const noexcept {
        const std::uint8_t* p = bytes.data() + i * item_size();
        switch (dtype) {
            case npy_dtype::float16: return half_bits_to_float(detail::load_le<std::uint16_t>(p));
            case npy_dtype::float32: return detail::load_le<float>(p);
            case npy_dtype::float64: return detail::load_le<double>(p);
            case npy_dtype::int8: return static_cast<std::int8_t>(*p);
            case npy_dtype::int16: return detail::load_le<std::int16_t>(p);
            case npy_dtype::int32: return detail::load_le<std::int32_t>(p);
            case npy_dtype::int64: return static_cast<double>(detail::load_le<std::int64_t>(p));
            case npy_dtype::uint8: return *p;
            case npy_dtype::uint16: return detail::load_le<std::uint16_t>(p);
            case npy_dtype::uint32: return detail::load_le<std::uint32_t>(p);
            case npy_dtype::uint64: return static_cast<double>(detail::load_le<std::uint64_t>(p));
            case npy_dtype::boolean: return *p != 0 ? 1.0 : 0.0;
        }
        return 0.0;
    }

    /// The elements as float32, from any float or integer dtype: float16 is
    /// exact, float64 and wide integers round to nearest. Booleans are refused
    /// (a mask where numbers were expected is a mistake worth reporting); use
    /// to_bool() for them.
    std::vector<float> to_float32() const {
        QAQ_CHECK(dtype != npy_dtype::boolean,
                  "to_float32: the array has dtype bool; expected a float or integer dtype (use to_bool())");
        check_size();
        const std::size_t n = bytes.size() / item_size();
        std::vector<float> out(n);
        for (std::size_t i = 0; i < n; ++i) {
            if (dtype == npy_dtype::float32) out[i] = detail::load_le<float>(bytes.data() + 4 * i);
            else if (dtype == npy_dtype::int64) out[i] = static_cast<float>(detail::load_le<std::int64_t>(bytes.data() + 8 * i));
            else if (dtype == npy_dtype::uint64) out[i] = static_cast<float>(detail::load_le<std::uint64_t>(bytes.data() + 8 * i));
            else out[i] = static_cast<float>(value_as_double(i));
        }
        return out;
    }

    /// The elements as int64, from an integer or bool dtype (uint64 values above
    /// INT64_MAX are refused). Float dtypes are refused: no silent truncation.
    std::vector<std::int64_t> to_int64() const {
        QAQ_CHECK(dtype != npy_dtype::float16 && dtype != npy_dtype::float32 && dtype != npy_dtype::float64,
                  "to_int64: the array has dtype ", to_string(dtype), "; expected an integer or bool dtype");
        check_size();
        const std::size_t n = bytes.size() / item_size();
        std::vector<std::int64_t> out(n);
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint8_t* p = bytes.data() + i * item_size();
            if (dtype == npy_dtype::int64) {
                out[i] = detail::load_le<std::int64_t>(p);
            } else if (dtype == npy_dtype::uint64) {
                const std::uint64_t v = detail::load_le<std::uint64_t>(p);
                QAQ_CHECK(v <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()),
                          "to_int64: element ", i, " is ", v, ", beyond the int64 range");
                out[i] = static_cast<std::int64_t>(v);
            } else {
                out[i] = static_cast<std::int64_t>(value_as_double(i));  // exact below 2^53
            }
        }
        return out;
    }

    /// The elements of a bool array (any nonzero byte is true).
    std::vector<std::uint8_t> to_bool() const {
        QAQ_CHECK(dtype == npy_dtype::boolean, "to_bool: the array has dtype ", to_string(dtype),
                  "; expected bool");
        check_size();
        std::vector<std::uint8_t> out(bytes.size());
        for (std::size_t i = 0; i < bytes.size(); ++i) out[i] = bytes[i] != 0 ? 1 : 0;
        return out;
    }

private:
    void check_size() const {
        const std::size_t count = detail::checked_element_count(shape, "npy_array");
        QAQ_CHECK(bytes.size() / item_size() == count && bytes.size() % item_size() == 0, "npy_array holds ",
                  bytes.size(), " bytes; expected ", count, " elements of ", item_size(), " bytes for shape ",
                  detail::shape_string(shape));
    }
};

/// Parses a whole .npy file held in memory. `name_for_errors` (usually the
/// path) starts every error message.
inline npy_array parse_npy(const std::uint8_t* data, std::size_t size, const std::string& name_for_errors) {
    const std::string& name = name_for_errors;
    static const std::uint8_t magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    QAQ_CHECK(data != nullptr || size == 0, name, ": no data");
    if (size < 6 || std::memcmp(data, magic, 6) != 0)
        throw error(name + ": not an npy file (bad magic); expected the bytes \\x93NUMPY at the start" +
                    (size < 6 ? " (the file has only " + std::to_string(size) + " bytes)" : std::string()));
    QAQ_CHECK(size >= 8, name, ": npy file truncated after the magic; expected 2 version bytes");
    const unsigned major = data[6], minor = data[7];
    QAQ_CHECK((major == 1 || major == 2 || major == 3) && minor == 0, name, ": unknown npy format version ", major,
              ".", minor, "; expected 1.0, 2.0 or 3.0");
    const std::size_t length_bytes = major == 1 ? 2 : 4;
    QAQ_CHECK(size >= 8 + length_bytes, name, ": npy file truncated in the header length field; expected ",
              length_bytes, " bytes after the version");
    std::uint64_t header_length = 0;
    for (std::size_t i = 0; i < length_bytes; ++i)
        header_length |= static_cast<std::uint64_t>(data[8 + i]) << (8 * i);
    const std::size_t header_start = 8 + length_bytes;
    QAQ_CHECK(header_length <= size - header_start, name, ": npy header length ", header_length,
              " goes beyond the end of the file (", size - header_start, " bytes follow the length field)");
    const char* header_text = reinterpret_cast<const char*>(data + header_start);
    const auto header = detail::header_parser(header_text, static_cast<std::size_t>(header_length), name).parse();

    const detail::parsed_descr descr = detail::parse_descr(header.descr, name);
    QAQ_CHECK(!header.fortran_order, name,
              ": npy array is in Fortran order, which is not supported; expected C order "
              "(save np.ascontiguousarray(a) instead)");
    const std::size_t count = detail::checked_element_count(header.shape, name);
    const std::size_t item = npy_dtype_size(descr.dtype);
    QAQ_CHECK(count <= std::numeric_limits<std::size_t>::max() / item, name, ": npy shape ",
              detail::shape_string(header.shape), " is too large to address");
    const std::size_t data_bytes = count * item;
    const std::size_t data_start = header_start + static_cast<std::size_t>(header_length);
    const std::size_t available = size - data_start;
    QAQ_CHECK(available >= data_bytes, name, ": npy data truncated: shape ", detail::shape_string(header.shape),
              " of ", to_string(descr.dtype), " needs ", data_bytes, " bytes, the file has ", available);
    QAQ_CHECK(available == data_bytes, name, ": npy file has ", available - data_bytes,
              " trailing bytes after the data; expected exactly ", data_bytes, " bytes for shape ",
              detail::shape_string(header.shape), " of ", to_string(descr.dtype));

    npy_array out;
    out.dtype = descr.dtype;
    out.shape = header.shape;
    out.bytes.assign(data + data_start, data + data_start + data_bytes);
    if (descr.big_endian) detail::swap_elements(out.bytes.data(), count, item);
    if (descr.dtype == npy_dtype::boolean) {
        for (std::size_t i = 0; i < count; ++i)
            QAQ_CHECK(out.bytes[i] <= 1, name, ": npy bool element ", i, " has byte value ",
                      static_cast<unsigned>(out.bytes[i]), "; expected 0 or 1");
    }
    return out;
}

/// Reads a whole .npy file; errors name the path.
inline npy_array read_npy(const std::string& path) {
    std::error_code ec;
    QAQ_CHECK(!std::filesystem::is_directory(path, ec), path, ": is a directory; expected an .npy file");
    std::ifstream in(path, std::ios::binary);
    QAQ_CHECK(in.is_open(), path, ": cannot open for reading; expected an existing readable .npy file");
    std::vector<std::uint8_t> content;
    char buffer[1 << 16];
    while (in) {
        in.read(buffer, sizeof buffer);
        const std::streamsize got = in.gcount();
        if (got > 0) content.insert(content.end(), buffer, buffer + got);
    }
    QAQ_CHECK(in.eof() && !in.bad(), path, ": read error");
    return parse_npy(content.data(), content.size(), path);
}

/// The exact bytes numpy.save writes for an array header (magic, version,
/// length, dict, padding to a multiple of 64 bytes, newline).
inline std::string npy_header(npy_dtype dtype, const std::vector<std::int64_t>& shape) {
    std::string dict = "{'descr': '" + npy_descr(dtype) + "', 'fortran_order': False, 'shape': " +
                       detail::shape_string(shape) + ", }";
    // numpy leaves room for the first axis to grow in place (GROWTH_AXIS_MAX_DIGITS = 21).
    if (!shape.empty()) {
        const std::size_t digits = std::to_string(shape[0]).size();
        if (digits < 21) dict.append(21 - digits, ' ');
    }
    const std::size_t with_newline = dict.size() + 1;
    // Version 1.0 (16-bit header length) unless the padded header needs more, as numpy does.
    std::size_t length_bytes = 2;
    std::size_t padding = 64 - (8 + length_bytes + with_newline) % 64;
    if (with_newline + padding > 65535) {
        length_bytes = 4;
        padding = 64 - (8 + length_bytes + with_newline) % 64;
    }
    const std::size_t header_length = with_newline + padding;
    std::string prefix = "\x93NUMPY";
    prefix += length_bytes == 2 ? '\x01' : '\x02';
    prefix += '\x00';
    for (std::size_t i = 0; i < length_bytes; ++i) prefix += static_cast<char>((header_length >> (8 * i)) & 0xff);
    return prefix + dict + std::string(padding, ' ') + "\n";
}

/// Writes `data` (element_count(shape) host-order elements of `dtype`, C
/// order) as an .npy file. Atomic: the bytes go to "<path>.tmp-<pid>", which
/// is then renamed over `path`, so readers never see a partial file.
inline void write_npy(const std::string& path, npy_dtype dtype, const std::vector<std::int64_t>& shape,
                      const void* data) {
    const std::size_t count = detail::checked_element_count(shape, path);
    const std::size_t item = npy_dtype_size(dtype);
    QAQ_CHECK(count <= std::numeric_limits<std::size_t>::max() / item, path, ": shape ",
              detail::shape_string(shape), " is too large to write");
    QAQ_CHECK(data != nullptr || count == 0, path, ": write_npy got no data for ", count, " elements");
    const std::string header = npy_header(dtype, shape);
    std::vector<std::uint8_t> body(count * item);
    if (count) std::memcpy(body.data(), data, body.size());
    if (!detail::host_is_little_endian()) detail::swap_elements(body.data(), count, item);
    if (dtype == npy_dtype::boolean)
        for (auto& b : body) b = b != 0 ? 1 : 0;

#if defined(_WIN32)
    const long pid = static_cast<long>(_getpid());
#else
    const long pid = static_cast<long>(getpid());
#endif
    const std::string temporary = path + ".tmp-" + std::to_string(pid);
    {
        std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
        QAQ_CHECK(out.is_open(), path, ": cannot open ", temporary, " for writing; expected a writable directory");
        out.write(header.data(), static_cast<std::streamsize>(header.size()));
        if (!body.empty()) out.write(reinterpret_cast<const char*>(body.data()), static_cast<std::streamsize>(body.size()));
        out.close();
        if (!out) {
            std::remove(temporary.c_str());
            throw error(path + ": writing " + temporary + " failed (disk full?)");
        }
    }
    std::error_code ec;
    std::filesystem::rename(temporary, path, ec);
    if (ec) {
        std::remove(temporary.c_str());
        throw error(path + ": cannot rename " + temporary + " to it: " + ec.message());
    }
}

inline void write_npy(const std::string& path, const npy_array& array) {
    const std::size_t count = detail::checked_element_count(array.shape, path);
    QAQ_CHECK(array.bytes.size() == count * array.item_size(), path, ": npy_array holds ", array.bytes.size(),
              " bytes; expected ", count * array.item_size(), " for shape ", detail::shape_string(array.shape));
    // bytes are little-endian; write_npy takes host order.
    std::vector<std::uint8_t> host(array.bytes);
    if (!detail::host_is_little_endian()) detail::swap_elements(host.data(), count, array.item_size());
    write_npy(path, array.dtype, array.shape, host.data());
}

namespace detail {
inline void check_vector_size(const std::string& path, std::size_t size, const std::vector<std::int64_t>& shape) {
    const std::size_t count = checked_element_count(shape, path);
    QAQ_CHECK(size == count, path, ": ", size, " values given for shape ", shape_string(shape), "; expected ",
              count);
}
}  // namespace detail

/// float32 array.
inline void write_npy(const std::string& path, const std::vector<std::int64_t>& shape, const std::vector<float>& values) {
    detail::check_vector_size(path, values.size(), shape);
    write_npy(path, npy_dtype::float32, shape, values.data());
}

/// int64 array.
inline void write_npy(const std::string& path, const std::vector<std::int64_t>& shape,
                      const std::vector<std::int64_t>& values) {
    detail::check_vector_size(path, values.size(), shape);
    write_npy(path, npy_dtype::int64, shape, values.data());
}

/// bool array from bytes (any nonzero byte is written as true).
inline void write_npy_bool(const std::string& path, const std::vector<std::int64_t>& shape,
                           const std::vector<std::uint8_t>& values);

/// A std::vector<std::uint8_t> is written as a numpy bool array (masks are
/// what this library stores in bytes); use the dtype overload for uint8 data.
inline void write_npy(const std::string& path, const std::vector<std::int64_t>& shape,
                      const std::vector<std::uint8_t>& values) {
    write_npy_bool(path, shape, values);
}

inline void write_npy_bool(const std::string& path, const std::vector<std::int64_t>& shape,
                           const std::vector<std::uint8_t>& values) {
    detail::check_vector_size(path, values.size(), shape);
    write_npy(path, npy_dtype::boolean, shape, values.data());
}

/// float16 array from float data, each value rounded to nearest even.
inline void write_npy_float16(const std::string& path, const std::vector<std::int64_t>& shape,
                              const std::vector<float>& values) {
    detail::check_vector_size(path, values.size(), shape);
    std::vector<std::uint16_t> halves(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) halves[i] = float_to_half_bits(values[i]);
    write_npy(path, npy_dtype::float16, shape, halves.data());
}

}  // namespace io
QAQ_NAMESPACE_END
