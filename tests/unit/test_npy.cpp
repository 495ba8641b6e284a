// qaq::io .npy reader/writer: numpy-made fixtures read back exactly and are
// rewritten byte for byte; every dtype round-trips; every malformed or
// truncated input raises qaq::error (never another exception, never a crash).
//
// The fixtures in tests/data/npy/ were made by numpy 2.4 with, from that directory:
// python3 -c "
// import numpy as np, numpy.lib.format as F
// S=lambda n,a: np.save(n+'.npy',a)
// S('f2',np.array([0,1.5,-2,65504,2**-24,np.inf],'<f2')); S('f4',(np.arange(6,dtype='<f4')*0.5-1).reshape(2,3)); S('f8',np.array(3.25,'<f8'))
// S('i1',np.array([-128,0,127],'|i1')); S('i2',np.array([-32768,1,32767],'<i2')); S('i4',np.array([[-2**31],[7]],'<i4')); S('i8',np.array([-2**63,42,2**63-1],'<i8'))
// S('u1',np.array([0,128,255],'|u1')); S('u2',np.array([0,65535],'<u2')); S('u4',np.array([2**32-1,1],'<u4')); S('u8',np.array([2**64-1,0],'<u8'))
// S('b1',np.array([[True,False],[False,True]])); S('f4_big',np.array([1,-2.5,3e38],'>f4')); S('i8_big',np.array([1,-2],'>i8')); S('f4_empty',np.zeros((0,3),'<f4'))
// [F.write_array(open('f4_v%d.npy'%v,'wb'),np.arange(3,dtype='<f4'),version=(v,0)) for v in (2,3)]; S('f8_fortran',np.asfortranarray(np.arange(6.).reshape(2,3)))
// "

#include <catch2/catch.hpp>

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "qaq/io/npy.hpp"

#ifndef QAQ_TEST_DATA_DIR
#define QAQ_TEST_DATA_DIR "tests/data"
#endif

namespace {

using qaq::io::npy_array;
using qaq::io::npy_dtype;
using shape_t = std::vector<std::int64_t>;

std::string fixture(const std::string& name) { return std::string(QAQ_TEST_DATA_DIR) + "/npy/" + name + ".npy"; }

std::vector<std::uint8_t> read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in.is_open());
    return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// A fresh path in the temporary directory, removed on destruction.
struct temp_path {
    std::string path;
    explicit temp_path(const std::string& stem) {
        static int counter = 0;
        path = (std::filesystem::temp_directory_path() /
                ("qaq_npy_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + stem + ".npy"))
                   .string();
    }
    ~temp_path() {
        std::error_code ec;
        std::filesystem::remove(path, ec);
    }
};

/// Parses `data` from an exactly sized heap copy (so a sanitizer sees any overread);
/// returns the qaq::error message, or "" when the parse succeeded. Any other
/// exception fails the test.
std::string parse_error(const std::vector<std::uint8_t>& data) {
    std::vector<std::uint8_t> copy(data);
    try {
        (void)qaq::io::parse_npy(copy.empty() ? nullptr : copy.data(), copy.size(), "buffer");
    } catch (const qaq::error& e) {
        return e.what();
    }
    return "";
}

/// An .npy file with a hand-written header dict (padded like numpy's) and raw data.
std::vector<std::uint8_t> make_file(const std::string& dict, const std::vector<std::uint8_t>& data,
                                    int major = 1) {
    std::string header = dict;
    const std::size_t length_bytes = major == 1 ? 2 : 4;
    while ((8 + length_bytes + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
    std::vector<std::uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<std::uint8_t>(major), 0};
    for (std::size_t i = 0; i < length_bytes; ++i) out.push_back(static_cast<std::uint8_t>(header.size() >> (8 * i)));
    out.insert(out.end(), header.begin(), header.end());
    out.insert(out.end(), data.begin(), data.end());
    return out;
}

std::vector<std::uint8_t> f4_data(std::initializer_list<float> values) {
    std::vector<std::uint8_t> out(values.size() * 4);
    std::memcpy(out.data(), values.begin(), out.size());
    return out;
}

const char* const all_fixtures[] = {"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4",
                                    "u8", "b1", "f4_big", "i8_big", "f4_empty", "f4_v2", "f4_v3", "f8_fortran"};

template <class T>
std::vector<T> typed(const npy_array& a) {
    REQUIRE(a.bytes.size() == static_cast<std::size_t>(a.element_count()) * sizeof(T));
    std::vector<T> out(a.bytes.size() / sizeof(T));
    if (!out.empty()) std::memcpy(out.data(), a.bytes.data(), a.bytes.size());  // test host is little-endian
    return out;
}

}  // namespace

TEST_CASE("npy: float16 conversion agrees with Eigen::half", "[npy]") {
    // Every half converts to the float Eigen gives, and back to the same bits.
    for (std::uint32_t h = 0; h < 65536; ++h) {
        const float f = qaq::io::half_bits_to_float(static_cast<std::uint16_t>(h));
        const float expected = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(static_cast<std::uint16_t>(h)));
        if (std::isnan(expected)) {
            REQUIRE(std::isnan(f));
            REQUIRE(std::isnan(qaq::io::half_bits_to_float(qaq::io::float_to_half_bits(f))));
            continue;
        }
        REQUIRE(std::memcmp(&f, &expected, sizeof f) == 0);
        REQUIRE(qaq::io::float_to_half_bits(f) == h);
    }
    // Midpoints between neighbouring halves round to even; just above/below round to nearest.
    for (std::uint32_t h = 0; h < 0x7bff; ++h) {
        const double lo = qaq::io::half_bits_to_float(static_cast<std::uint16_t>(h));
        const double hi = qaq::io::half_bits_to_float(static_cast<std::uint16_t>(h + 1));
        const float mid = static_cast<float>((lo + hi) / 2);  // exact in float
        const std::uint16_t even = (h & 1u) ? static_cast<std::uint16_t>(h + 1) : static_cast<std::uint16_t>(h);
        REQUIRE(qaq::io::float_to_half_bits(mid) == even);
        REQUIRE(qaq::io::float_to_half_bits(-mid) == (even | 0x8000u));
        REQUIRE(qaq::io::float_to_half_bits(std::nextafter(mid, 0.0f)) == h);
        REQUIRE(qaq::io::float_to_half_bits(std::nextafter(mid, 1e9f)) == h + 1);
    }
    // Random float bit patterns.
    std::mt19937 rng(7);
    long mismatches = 0;
    for (int i = 0; i < 2000000; ++i) {
        const std::uint32_t bits = rng();
        float f;
        std::memcpy(&f, &bits, sizeof f);
        if (std::isnan(f)) continue;
        const auto expected = Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(f));
        if (qaq::io::float_to_half_bits(f) != expected) ++mismatches;
    }
    REQUIRE(mismatches == 0);
    REQUIRE(qaq::io::float_to_half_bits(65520.0f) == 0x7c00);  // halfway to 2^16 rounds up to Inf
    REQUIRE(qaq::io::float_to_half_bits(65519.996f) == 0x7bff);
    REQUIRE(qaq::io::float_to_half_bits(std::numeric_limits<float>::infinity()) == 0x7c00);
    REQUIRE(qaq::io::float_to_half_bits(std::ldexp(1.0f, -25)) == 0);       // tie to even (zero)
    REQUIRE(qaq::io::float_to_half_bits(std::ldexp(1.5f, -25)) == 1);       // above the tie
    REQUIRE(qaq::io::float_to_half_bits(std::nanf("")) >= 0x7c01);
}

TEST_CASE("npy: numpy fixtures read back exactly", "[npy]") {
    {
        const npy_array a = qaq::io::read_npy(fixture("f2"));
        REQUIRE(a.dtype == npy_dtype::float16);
        REQUIRE(a.shape == shape_t{6});
        const std::vector<float> v = a.to_float32();
        REQUIRE(v[0] == 0.0f);
        REQUIRE(v[1] == 1.5f);
        REQUIRE(v[2] == -2.0f);
        REQUIRE(v[3] == 65504.0f);
        REQUIRE(v[4] == std::ldexp(1.0f, -24));
        REQUIRE(std::isinf(v[5]));
    }
    {
        const npy_array a = qaq::io::read_npy(fixture("f4"));
        REQUIRE(a.dtype == npy_dtype::float32);
        REQUIRE(a.shape == shape_t{2, 3});
        REQUIRE(a.element_count() == 6);
        REQUIRE(a.to_float32() == std::vector<float>{-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f});
    }
    {
        const npy_array a = qaq::io::read_npy(fixture("f8"));
        REQUIRE(a.dtype == npy_dtype::float64);
        REQUIRE(a.shape.empty());
        REQUIRE(a.element_count() == 1);
        REQUIRE(typed<double>(a) == std::vector<double>{3.25});
        REQUIRE(a.to_float32() == std::vector<float>{3.25f});
    }
    {
        const npy_array a = qaq::io::read_npy(fixture("i1"));
        REQUIRE(a.dtype == npy_dtype::int8);
        REQUIRE(typed<std::int8_t>(a) == std::vector<std::int8_t>{-128, 0, 127});
        REQUIRE(a.to_float32() == std::vector<float>{-128.0f, 0.0f, 127.0f});
    }
    {
        const npy_array a = qaq::io::read_npy(fixture("i2"));
        REQUIRE(a.dtype == npy_dtype::int16);
        REQUIRE(typed<std::int16_t>(a) == std::vector<std::int16_t>{-32768, 1, 32767});
    }
    {
        const npy_array a = qaq::io::read_npy(fixture("i4"));
        REQUIRE(a.dtype == npy_dtype::int32);
        REQUIRE(a.shape == shape_t{2, 1});
        REQUIRE(typed<std::int32_t>(a) == std::vector<std::int32_t>{std::numeric_limits<std::int32_t>::min(), 7});
    }
    {
        const npy_array a = qaq::io::read_npy(fixture("i8"));
        REQUIRE(a.dtype == npy_dtype::int64);
        const std::vector<std::int64_t> expected{std::numeric_limits<std::int64_t>::min(), 42,
                                                 std::numeric_limits<std::int64_t>::max()};
        REQUIRE(typed<std::int64_t>(a) == expected);
        REQUIRE(a.to_int64() == expected);
    }
    {
        const npy_array a = qaq::io::read_npy(fixture("u1"));
        REQUIRE(a.dtype == npy_dtype::uint8);
        REQUIRE(a.bytes == std::vector<std::uint8_t>{0, 128, 255});
        REQUIRE(a.to_int64() == std::vector<std::int64_t>{0, 128, 255});
    }
    {
        const npy_array a = qaq::io::read_npy(fixture("u2"));
        REQUIRE(a.dtype == npy_dtype::uint16);
        REQUIRE(typed<std::uint16_t>(a) == std::vector<std::uint16_t>{0, 65535});
    }
    {
        const npy_array a = qaq::io::read_npy(fixture("u4"));
        REQUIRE(a.dtype == npy_dtype::uint32);
        REQUIRE(typed<std::uint32_t>(a) == std::vector<std::uint32_t>{4294967295u, 1});
        REQUIRE(a.to_float32() == std::vector<float>{4294967296.0f, 1.0f});
    }
    {
        const npy_array a = qaq::io::read_npy(fixture("u8"));
        REQUIRE(a.dtype == npy_dtype::uint64);
        REQUIRE(typed<std::uint64_t>(a) == std::vector<std::uint64_t>{18446744073709551615ull, 0});
        REQUIRE_THROWS_AS(a.to_int64(), qaq::error);  // beyond int64
    }
    {
        const npy_array a = qaq::io::read_npy(fixture("b1"));
        REQUIRE(a.dtype == npy_dtype::boolean);
        REQUIRE(a.shape == shape_t{2, 2});
        REQUIRE(a.to_bool() == std::vector<std::uint8_t>{1, 0, 0, 1});
        REQUIRE(a.to_int64() == std::vector<std::int64_t>{1, 0, 0, 1});
        // Documented: a bool array is not silently turned into numbers.
        REQUIRE_THROWS_WITH(a.to_float32(), Catch::Contains("dtype bool"));
    }
    {
        const npy_array a = qaq::io::read_npy(fixture("f4_empty"));
        REQUIRE(a.dtype == npy_dtype::float32);
        REQUIRE(a.shape == shape_t{0, 3});
        REQUIRE(a.element_count() == 0);
        REQUIRE(a.bytes.empty());
        REQUIRE(a.to_float32().empty());
    }
    for (const char* name : {"f4_v2", "f4_v3"}) {
        const npy_array a = qaq::io::read_npy(fixture(name));
        REQUIRE(a.dtype == npy_dtype::float32);
        REQUIRE(a.shape == shape_t{3});
        REQUIRE(a.to_float32() == std::vector<float>{0.0f, 1.0f, 2.0f});
    }
    REQUIRE_THROWS_AS(qaq::io::read_npy(fixture("f4")).to_int64(), qaq::error);
}

TEST_CASE("npy: big-endian data is swapped to little-endian", "[npy]") {
    const npy_array f = qaq::io::read_npy(fixture("f4_big"));
    REQUIRE(f.dtype == npy_dtype::float32);
    REQUIRE(f.to_float32() == std::vector<float>{1.0f, -2.5f, 3e38f});
    const npy_array i = qaq::io::read_npy(fixture("i8_big"));
    REQUIRE(i.dtype == npy_dtype::int64);
    REQUIRE(i.to_int64() == std::vector<std::int64_t>{1, -2});
    // Written back, it is little-endian and reads the same.
    temp_path out("big");
    qaq::io::write_npy(out.path, f);
    const npy_array again = qaq::io::read_npy(out.path);
    REQUIRE(again.bytes == f.bytes);
    REQUIRE(read_bytes(out.path)[21] == '<');  // "{'descr': '<f4'" starts at offset 10
}

TEST_CASE("npy: writing numpy's values reproduces numpy's files byte for byte", "[npy]") {
    for (const char* name : {"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1", "f4_empty"}) {
        INFO(name);
        const npy_array a = qaq::io::read_npy(fixture(name));
        temp_path out(name);
        qaq::io::write_npy(out.path, a);
        REQUIRE(read_bytes(out.path) == read_bytes(fixture(name)));
    }
    // The convenience overloads produce the same bytes.
    temp_path out("convenience");
    qaq::io::write_npy(out.path, {2, 3}, std::vector<float>{-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f});
    REQUIRE(read_bytes(out.path) == read_bytes(fixture("f4")));
    qaq::io::write_npy(out.path, {3},
                       std::vector<std::int64_t>{std::numeric_limits<std::int64_t>::min(), 42,
                                                 std::numeric_limits<std::int64_t>::max()});
    REQUIRE(read_bytes(out.path) == read_bytes(fixture("i8")));
    qaq::io::write_npy(out.path, {2, 2}, std::vector<std::uint8_t>{1, 0, 0, 7});  // uint8 vector: bool
    REQUIRE(read_bytes(out.path) == read_bytes(fixture("b1")));
    qaq::io::write_npy_bool(out.path, {2, 2}, std::vector<std::uint8_t>{1, 0, 0, 1});
    REQUIRE(read_bytes(out.path) == read_bytes(fixture("b1")));
    qaq::io::write_npy_float16(out.path, {6}, {0.0f, 1.5f, -2.0f, 65504.0f, std::ldexp(1.0f, -24), 1e6f});
    REQUIRE(read_bytes(out.path) == read_bytes(fixture("f2")));  // 1e6 overflows to Inf, as in numpy
}

TEST_CASE("npy: every dtype round-trips, including scalars and empty arrays", "[npy]") {
    const npy_dtype dtypes[] = {npy_dtype::float16, npy_dtype::float32, npy_dtype::float64, npy_dtype::int8,
                                npy_dtype::int16,   npy_dtype::int32,   npy_dtype::int64,   npy_dtype::uint8,
                                npy_dtype::uint16,  npy_dtype::uint32,  npy_dtype::uint64,  npy_dtype::boolean};
    const shape_t shapes[] = {{}, {0}, {1}, {7}, {2, 3}, {3, 0, 2}, {2, 1, 3, 1, 2}, {1000}};
    std::mt19937 rng(11);
    for (npy_dtype dtype : dtypes) {
        for (const shape_t& shape : shapes) {
            INFO(qaq::io::to_string(dtype) << " shape size " << shape.size());
            std::int64_t count = 1;
            for (auto e : shape) count *= e;
            std::vector<std::uint8_t> data(static_cast<std::size_t>(count) * qaq::io::npy_dtype_size(dtype));
            for (auto& b : data) b = static_cast<std::uint8_t>(rng());
            if (dtype == npy_dtype::boolean)
                for (auto& b : data) b &= 1;
            temp_path out("roundtrip");
            qaq::io::write_npy(out.path, dtype, shape, data.data());
            const npy_array a = qaq::io::read_npy(out.path);
            REQUIRE(a.dtype == dtype);
            REQUIRE(a.shape == shape);
            REQUIRE(a.bytes == data);
            // numpy's own header layout: a multiple of 64 bytes, ending in a newline.
            const auto file = read_bytes(out.path);
            REQUIRE((file.size() - data.size()) % 64 == 0);
            REQUIRE(file[file.size() - data.size() - 1] == '\n');
            REQUIRE(!std::filesystem::exists(out.path + ".tmp-" + std::to_string(::getpid())));
        }
    }
}

TEST_CASE("npy: write is atomic and reports failures", "[npy]") {
    temp_path out("atomic");
    qaq::io::write_npy(out.path, {3}, std::vector<float>{1, 2, 3});
    qaq::io::write_npy(out.path, {2}, std::vector<float>{4, 5});  // replaces the old file
    REQUIRE(qaq::io::read_npy(out.path).to_float32() == std::vector<float>{4, 5});
    REQUIRE(!std::filesystem::exists(out.path + ".tmp-" + std::to_string(::getpid())));

    const std::string missing_dir = (std::filesystem::temp_directory_path() / "qaq_no_such_dir_x9" / "a.npy").string();
    REQUIRE_THROWS_WITH(qaq::io::write_npy(missing_dir, {1}, std::vector<float>{1}), Catch::Contains(missing_dir));
    REQUIRE_THROWS_WITH(qaq::io::write_npy(out.path, {2, 2}, std::vector<float>{1, 2, 3}),
                        Catch::Contains("3 values given") && Catch::Contains("expected 4"));
    REQUIRE_THROWS_AS(qaq::io::write_npy(out.path, npy_dtype::float32, {-1}, nullptr), qaq::error);
    const std::string nowhere = (std::filesystem::temp_directory_path() / "qaq_no_such_file_x9.npy").string();
    REQUIRE_THROWS_WITH(qaq::io::read_npy(nowhere), Catch::Contains(nowhere) && Catch::Contains("cannot open"));
    REQUIRE_THROWS_WITH(qaq::io::read_npy(std::filesystem::temp_directory_path().string()),
                        Catch::Contains("directory"));
}

TEST_CASE("npy: Fortran order is refused with advice", "[npy]") {
    REQUIRE_THROWS_WITH(qaq::io::read_npy(fixture("f8_fortran")),
                        Catch::Contains("Fortran order") && Catch::Contains("np.ascontiguousarray") &&
                            Catch::Contains("f8_fortran.npy"));
}

TEST_CASE("npy: every truncation of every fixture is an error", "[npy]") {
    for (const char* name : all_fixtures) {
        const std::vector<std::uint8_t> full = read_bytes(fixture(name));
        for (std::size_t size = 0; size < full.size(); ++size) {
            INFO(name << " truncated to " << size << " bytes");
            const std::vector<std::uint8_t> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(size));
            REQUIRE(!parse_error(cut).empty());
        }
        // One byte too many is an error as well.
        std::vector<std::uint8_t> longer = full;
        longer.push_back(0);
        INFO(name << " with a trailing byte");
        if (std::string(name) != "f8_fortran") REQUIRE_THAT(parse_error(longer), Catch::Contains("trailing"));
    }
    // The messages say what was wrong.
    const std::vector<std::uint8_t> f4 = read_bytes(fixture("f4"));
    REQUIRE_THAT(parse_error({f4.begin(), f4.begin() + 3}), Catch::Contains("bad magic"));
    REQUIRE_THAT(parse_error({f4.begin(), f4.begin() + 7}), Catch::Contains("version"));
    REQUIRE_THAT(parse_error({f4.begin(), f4.begin() + 9}), Catch::Contains("header length"));
    REQUIRE_THAT(parse_error({f4.begin(), f4.begin() + 100}), Catch::Contains("beyond the end of the file"));
    REQUIRE_THAT(parse_error({f4.begin(), f4.end() - 1}),
                 Catch::Contains("truncated") && Catch::Contains("needs 24 bytes") && Catch::Contains("has 23"));
}

TEST_CASE("npy: malformed headers are errors that say what was expected", "[npy]") {
    const auto one = f4_data({1.0f});
    const auto ok = [&](const std::string& dict, const std::vector<std::uint8_t>& data) {
        const std::string message = parse_error(make_file(dict, data));
        INFO(dict << " -> " << message);
        REQUIRE(message.empty());
    };
    const auto bad = [&](const std::string& dict, const std::vector<std::uint8_t>& data, const std::string& expected) {
        const std::string message = parse_error(make_file(dict, data));
        INFO(dict << " -> " << message);
        REQUIRE_THAT(message, Catch::Contains(expected));
        REQUIRE_THAT(message, Catch::StartsWith("qaq: buffer:"));
    };

    // Accepted variations: key order, double quotes, spacing, no trailing comma, Python 2 longs.
    ok("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", one);
    ok("{'shape': (1,), 'fortran_order': False, 'descr': '<f4'}", one);
    ok("{\"descr\":\"<f4\",\"fortran_order\":False,\"shape\":(1,)}", one);
    ok("  {  'descr' : '<f4' ,\t'fortran_order' : False , 'shape' : ( 1 , ) , }  ", one);
    ok("{'descr': '<f4', 'fortran_order': False, 'shape': (1L,), }", one);
    ok("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1), }", one);
    ok("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", one);
    ok("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 123456789012345), }", {});
    ok("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", one);

    // Magic and version.
    {
        auto file = make_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", one);
        file[1] = 'n';
        REQUIRE_THAT(parse_error(file), Catch::Contains("bad magic") && Catch::Contains("\\x93NUMPY"));
        file[1] = 'N';
        file[6] = 4;
        REQUIRE_THAT(parse_error(file), Catch::Contains("unknown npy format version 4.0") &&
                                            Catch::Contains("expected 1.0, 2.0 or 3.0"));
        file[6] = 1;
        file[7] = 1;
        REQUIRE_THAT(parse_error(file), Catch::Contains("version 1.1"));
        file[7] = 0;
        file[8] = 0xff;  // header length 0x..ff: beyond the file
        REQUIRE_THAT(parse_error(file), Catch::Contains("header length") && Catch::Contains("beyond the end"));
        auto v2 = make_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", one, 2);
        REQUIRE(parse_error(v2).empty());
        v2[11] = 0x80;  // a 2 GiB header length
        REQUIRE_THAT(parse_error(v2), Catch::Contains("beyond the end"));
    }

    // Unparsable dictionaries.
    bad("", one, "expected the header dictionary to start with '{'");
    bad("descr", one, "unparsable npy header");
    bad("{", one, "expected a quoted key");
    bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", one, "expected ',' or '}'");
    bad("{'descr: '<f4', 'fortran_order': False, 'shape': (1,), }", one, "unparsable");
    bad("{'descr': <f4, 'fortran_order': False, 'shape': (1,), }", one, "dtype string");
    bad("{'descr': '<f4', 'fortran_order': false, 'shape': (1,), }", one, "True or False");
    bad("{'descr': '<f4', 'fortran_order': False, 'shape': [1], }", one, "tuple");
    bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1), }", one, "trailing comma");
    bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1,,), }", one, "non-negative integer");
    bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1.0,), }", one, "',' or ')'");
    bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } x", one, "after the header dictionary");
    bad("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}", one, "unexpected key 'extra'");
    bad("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", one, "'descr' twice");
    bad("{'descr': '<\\x66', 'fortran_order': False, 'shape': (1,)}", one, "escape");
    {
        std::string with_nul = "{'descr': '<f4'";
        with_nul += '\0';
        with_nul += ", 'fortran_order': False, 'shape': (1,)}";
        bad(with_nul, one, "\\x00");
    }

    // Missing keys.
    bad("{'fortran_order': False, 'shape': (1,), }", one, "lacks the key 'descr'");
    bad("{'descr': '<f4', 'shape': (1,), }", one, "lacks the key 'fortran_order'");
    bad("{'descr': '<f4', 'fortran_order': False, }", one, "lacks the key 'shape'");
    bad("{}", one, "lacks the key");

    // Unknown dtypes.
    for (const char* descr : {"<c8", "<f16", "|O", "<U3", "<M8[s]", "f4", "<f3", "^f4", "|f4", "<b2", "<V4"}) {
        bad(std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (1,), }", one,
            "unsupported npy dtype");
    }
    bad("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", one, "structured dtype");

    // Shapes: negative, overflowing, too many dimensions.
    bad("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", one, "negative");
    bad("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", one, "64 bits");
    bad("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", one, "overflows");
    bad("{'descr': '<f4', 'fortran_order': False, 'shape': (3037000500, 3037000500), }", one, "overflows");
    bad("{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904,), }", one, "too large");
    bad("{'descr': '<f4', 'fortran_order': False, 'shape': (2305843009213693951,), }", one, "truncated");
    {
        std::string many = "(";
        for (int i = 0; i < 65; ++i) many += "1,";
        bad("{'descr': '<f4', 'fortran_order': False, 'shape': " + many + "), }", one, "more than 64 dimensions");
    }

    // Data length.
    bad("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", one, "truncated");
    bad("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", f4_data({1.0f, 2.0f}), "4 trailing bytes");
    bad("{'descr': '<f4', 'fortran_order': False, 'shape': (0,), }", one, "trailing bytes");
    bad("{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", {1, 2}, "expected 0 or 1");
}

TEST_CASE("npy: random corruption never crashes", "[npy]") {
    // Every byte of each fixture's header replaced by a few values, plus random
    // multi-byte mutations: the parser returns or throws qaq::error, nothing else.
    std::mt19937 rng(3);
    const std::uint8_t replacements[] = {0x00, 0xff, '0', '9', '-', ',', ')', '(', '\'', '}', ' ', 'L', 0x80};
    for (const char* name : all_fixtures) {
        const std::vector<std::uint8_t> full = read_bytes(fixture(name));
        for (std::size_t i = 0; i < full.size(); ++i) {
            for (std::uint8_t r : replacements) {
                std::vector<std::uint8_t> mutated = full;
                mutated[i] = r;
                (void)parse_error(mutated);
            }
        }
        for (int trial = 0; trial < 2000; ++trial) {
            std::vector<std::uint8_t> mutated = full;
            const int edits = 1 + static_cast<int>(rng() % 4);
            for (int e = 0; e < edits; ++e) mutated[rng() % mutated.size()] = static_cast<std::uint8_t>(rng());
            if (rng() % 3 == 0) mutated.resize(rng() % (mutated.size() + 1));
            (void)parse_error(mutated);
        }
    }
    REQUIRE(parse_error({}).find("bad magic") != std::string::npos);
    const std::string header = qaq::io::npy_header(npy_dtype::float32, {2, 3});
    REQUIRE(header.size() == 128);
    REQUIRE(header.substr(0, 10) == std::string("\x93NUMPY\x01\x00\x76\x00", 10));
    REQUIRE_THAT(header.substr(10), Catch::StartsWith("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
}
