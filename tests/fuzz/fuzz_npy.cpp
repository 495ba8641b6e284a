// libFuzzer target: qaq::io::parse_npy on arbitrary bytes.
//
// Every input must either parse or raise qaq::error. A parsed array must then
// be self-consistent: its typed accessors work exactly where the dtype allows
// them (and raise qaq::error elsewhere), and writing it with write_npy and
// reading it back with read_npy reproduces dtype, shape and bytes, in the
// bytes numpy.save would write. Anything else aborts.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include "qaq/error.hpp"
#include "qaq/io/npy.hpp"

namespace {

using qaq::io::npy_array;
using qaq::io::npy_dtype;

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "fuzz_npy: invariant violated: %s\n", what);
    std::abort();
}
#define FUZZ_REQUIRE(condition) \
    do {                        \
        if (!(condition)) fail(#condition); \
    } while (0)

bool is_float(npy_dtype d) {
    return d == npy_dtype::float16 || d == npy_dtype::float32 || d == npy_dtype::float64;
}

// Calls f(); returns true if it completed, false if it raised qaq::error.
template <class F>
bool completes(F&& f) {
    try {
        f();
        return true;
    } catch (const qaq::error&) {
        return false;
    }
}

const std::string& temporary_path() {
    static const std::string path = (std::filesystem::temp_directory_path() /
                                     ("qaq-fuzz-npy-" + std::to_string(static_cast<long>(getpid())) + ".npy"))
                                        .string();
    return path;
}

void check_accessors(const npy_array& a) {
    const std::int64_t count = a.element_count();
    FUZZ_REQUIRE(count >= 0);
    FUZZ_REQUIRE(a.bytes.size() == static_cast<std::size_t>(count) * a.item_size());

    // to_float32: every dtype but bool.
    std::vector<float> floats;
    const bool float_ok = completes([&] { floats = a.to_float32(); });
    FUZZ_REQUIRE(float_ok == (a.dtype != npy_dtype::boolean));
    if (float_ok) {
        FUZZ_REQUIRE(floats.size() == static_cast<std::size_t>(count));
        for (std::size_t i = 0; i < floats.size(); ++i) {
            const double v = a.value_as_double(i);
            // float32 of the double value (float64 and wide integers round): same NaN-ness,
            // and the same value wherever the double is a float32.
            FUZZ_REQUIRE(std::isnan(v) == std::isnan(floats[i]));
            if (!std::isnan(v) && static_cast<double>(static_cast<float>(v)) == v &&
                a.dtype != npy_dtype::int64 && a.dtype != npy_dtype::uint64)
                FUZZ_REQUIRE(static_cast<double>(floats[i]) == v);
        }
    }

    // to_int64: integers and bool; uint64 beyond INT64_MAX raises.
    std::vector<std::int64_t> integers;
    const bool int_ok = completes([&] { integers = a.to_int64(); });
    if (is_float(a.dtype)) {
        FUZZ_REQUIRE(!int_ok);
    } else if (a.dtype != npy_dtype::uint64) {
        FUZZ_REQUIRE(int_ok);
    } else {
        bool any_big = false;
        for (std::size_t i = 0; i < static_cast<std::size_t>(count); ++i) {
            std::uint64_t v;
            std::memcpy(&v, a.bytes.data() + 8 * i, 8);  // bytes are little-endian; the fuzz hosts are too
            any_big = any_big || v > static_cast<std::uint64_t>(INT64_MAX);
        }
        FUZZ_REQUIRE(int_ok == !any_big);
    }
    if (int_ok) FUZZ_REQUIRE(integers.size() == static_cast<std::size_t>(count));

    // to_bool: bool only, values 0/1 exactly as stored (parse refuses other bytes).
    std::vector<std::uint8_t> flags;
    const bool bool_ok = completes([&] { flags = a.to_bool(); });
    FUZZ_REQUIRE(bool_ok == (a.dtype == npy_dtype::boolean));
    if (bool_ok) {
        FUZZ_REQUIRE(flags.size() == static_cast<std::size_t>(count));
        FUZZ_REQUIRE(flags == a.bytes);
    }
}

void check_round_trip(const npy_array& a) {
    const std::string& path = temporary_path();
    // A write may only fail for a reason outside the array (disk full); nothing here should.
    qaq::io::write_npy(path, a);
    const npy_array b = qaq::io::read_npy(path);
    FUZZ_REQUIRE(b.dtype == a.dtype);
    FUZZ_REQUIRE(b.shape == a.shape);
    FUZZ_REQUIRE(b.bytes == a.bytes);

    // The file holds numpy's header followed by the little-endian data, nothing else.
    const std::string header = qaq::io::npy_header(a.dtype, a.shape);
    FUZZ_REQUIRE(header.size() % 64 == 0);
    FUZZ_REQUIRE(std::filesystem::file_size(path) == header.size() + a.bytes.size());

    // Parsing the exact written bytes from memory agrees with read_npy.
    std::vector<std::uint8_t> image(header.begin(), header.end());
    image.insert(image.end(), a.bytes.begin(), a.bytes.end());
    const npy_array c = qaq::io::parse_npy(image.data(), image.size(), "round trip");
    FUZZ_REQUIRE(c.dtype == a.dtype && c.shape == a.shape && c.bytes == a.bytes);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    npy_array array;
    try {
        array = qaq::io::parse_npy(data, size, "fuzz input");
    } catch (const qaq::error&) {
        return 0;  // malformed input, reported the documented way
    }
    check_accessors(array);
    check_round_trip(array);
    return 0;
}
