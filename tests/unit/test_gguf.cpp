// The GGUF reader and the GGML block formats of qaq-llama:
//  * the committed tiny models (written by the Python `gguf` package,
//    tests/oracle/llama_numpy.py make-fixtures) read back: header, metadata
//    of every kind, tensor table, alignment, data offsets;
//  * files from a test-local writer: every metadata value type, nested
//    arrays, version 2, custom alignment;
//  * every dequantized type against values worked out by hand from
//    hand-built blocks, and the dot-product kernels (scalar and AVX2)
//    against dequantize-then-multiply;
//  * truncation at every header offset and many data offsets, corrupted
//    counts, sizes, offsets and types, random byte damage: always qaq::error
//    (naming the file), never a crash.

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "llama/ggml_types.hpp"
#include "llama/gguf.hpp"
#include "llama/model_config.hpp"

#ifndef QAQ_TEST_DATA_DIR
#define QAQ_TEST_DATA_DIR "tests/data"
#endif

namespace {

using namespace qaq::llama;

std::string fixture(const std::string& name) { return std::string(QAQ_TEST_DATA_DIR) + "/llama/" + name; }

std::vector<std::uint8_t> read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in.good());
    return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A minimal GGUF writer for tests: every piece can be written wrong on purpose.
class writer {
public:
    std::vector<std::uint8_t> bytes;

    template <class T>
    writer& raw(T v) {
        const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
        bytes.insert(bytes.end(), p, p + sizeof(T));
        return *this;
    }
    writer& str(const std::string& s) {
        raw<std::uint64_t>(s.size());
        bytes.insert(bytes.end(), s.begin(), s.end());
        return *this;
    }
    writer& header(std::uint64_t tensors, std::uint64_t kvs, std::uint32_t version = 3) {
        bytes.insert(bytes.end(), {'G', 'G', 'U', 'F'});
        return raw<std::uint32_t>(version).raw<std::uint64_t>(tensors).raw<std::uint64_t>(kvs);
    }
    writer& kv_u32(const std::string& key, std::uint32_t v) { return str(key).raw<std::uint32_t>(4).raw(v); }
    writer& kv_f32(const std::string& key, float v) { return str(key).raw<std::uint32_t>(6).raw(v); }
    writer& kv_str(const std::string& key, const std::string& v) { return str(key).raw<std::uint32_t>(8).str(v); }
    writer& tensor_info(const std::string& name, std::vector<std::uint64_t> dims, std::uint32_t type, std::uint64_t offset) {
        str(name).raw<std::uint32_t>(static_cast<std::uint32_t>(dims.size()));
        for (auto d : dims) raw(d);
        return raw(type).raw(offset);
    }
    writer& pad(std::size_t alignment) {
        while (bytes.size() % alignment) bytes.push_back(0);
        return *this;
    }
    writer& data(std::size_t n, std::uint8_t fill = 0) {
        bytes.insert(bytes.end(), n, fill);
        return *this;
    }
};

// A valid file: two tensors (F32 [4], Q8_0 [32, 2]) and a few metadata entries.
std::vector<std::uint8_t> small_file(std::uint32_t version = 3) {
    writer w;
    w.header(2, 3, version);
    w.kv_str("general.architecture", "llama");
    w.kv_u32("llama.block_count", 1);
    w.kv_f32("llama.rope.freq_base", 500.0f);
    w.tensor_info("norm", {4}, 0, 0);
    w.tensor_info("matrix", {32, 2}, 8, 32);
    w.pad(32);
    const float norm[4] = {1.0f, -2.0f, 0.5f, 3.0f};
    for (float f : norm) w.raw(f);
    w.data(16);  // to offset 32
    for (int r = 0; r < 2; ++r) {
        w.raw<std::uint16_t>(0x3C00);  // d = 1
        for (int j = 0; j < 32; ++j) w.raw<std::int8_t>(static_cast<std::int8_t>(j - 16 + r));
    }
    return w.bytes;
}

void expect_error(const std::vector<std::uint8_t>& bytes, const std::string& contains) {
    try {
        gguf_file::parse(bytes, "damaged.gguf");
        FAIL("parsing succeeded; expected an error containing '" << contains << "'");
    } catch (const qaq::error& e) {
        const std::string what = e.what();
        INFO(what);
        CHECK(what.find("damaged.gguf") != std::string::npos);
        CHECK(what.find(contains) != std::string::npos);
    }
}

}  // namespace

TEST_CASE("gguf: the tiny model written by the Python gguf package reads back", "[llama][gguf]") {
    const gguf_file f = gguf_file::open(fixture("tiny-llama.gguf"));
    CHECK(f.version() == 3);
    CHECK(f.alignment() == 32);
    CHECK(f.data_offset() % 32 == 0);
    CHECK(f.get_string("general.architecture") == "llama");
    CHECK(f.get_string("general.name") == "qaq tiny random llama");
    CHECK(f.get_int("llama.block_count") == 2);
    CHECK(f.at("llama.block_count").type == gguf_value_type::uint32);
    CHECK(f.get_float("llama.rope.freq_base") == 10000.0);
    CHECK(f.get_float("llama.attention.layer_norm_rms_epsilon") == Approx(1e-5));
    CHECK_FALSE(*f.find_bool("tokenizer.ggml.add_bos_token"));
    const auto tokens = f.get_string_array("tokenizer.ggml.tokens");
    REQUIRE(tokens.size() == 269);
    CHECK(tokens[0] == "<|endoftext|>");
    CHECK(tokens[259] == "Ġt");
    CHECK(f.get_int32_array("tokenizer.ggml.token_type")[1] == 3);
    CHECK(f.get_string_array("tokenizer.ggml.merges").size() == 10);
    CHECK(f.get_int("tokenizer.ggml.eos_token_id") == 2);

    // 3 + 9 per layer, tied output.
    REQUIRE(f.tensors().size() == 20);
    const gguf_tensor& embd = f.tensor("token_embd.weight");
    CHECK(embd.type == ggml_type::q8_0);
    CHECK(embd.dims == std::vector<std::int64_t>{64, 269});
    CHECK(embd.size == 269u * 2u * 34u);
    CHECK(f.tensor("blk.1.ffn_down.weight").type == ggml_type::q4_1);
    CHECK(f.tensor("blk.1.ffn_down.weight").dims == std::vector<std::int64_t>{96, 64});
    CHECK(f.tensor("output_norm.weight").type == ggml_type::f32);
    CHECK(f.find_tensor("output.weight") == nullptr);
    for (const auto& t : f.tensors()) {
        CHECK(t.offset % 32 == 0);
        CHECK(t.data != nullptr);
        CHECK(f.data_offset() + t.offset + t.size <= f.file_size());
    }

    CHECK_THROWS_WITH(f.get_int("general.name"), Catch::Contains("expected an integer"));
    CHECK_THROWS_WITH(f.get_string("nope"), Catch::Contains("no metadata key 'nope'"));
    CHECK_THROWS_WITH(f.tensor("nope"), Catch::Contains("no tensor 'nope'"));
    CHECK_THROWS_WITH(f.get_string_array("tokenizer.ggml.token_type"), Catch::Contains("array of string"));

    const gguf_file m = gguf_file::open(fixture("tiny-llama-mixed.gguf"));
    CHECK(m.alignment() == 64);
    CHECK(m.data_offset() % 64 == 0);
    CHECK(m.tensor("token_embd.weight").type == ggml_type::f16);
    CHECK(m.tensor("blk.0.attn_q.weight").type == ggml_type::q4_0);
    CHECK(m.tensor("blk.0.attn_k.weight").type == ggml_type::bf16);
    CHECK(m.tensor("blk.0.attn_v.weight").type == ggml_type::q8_0);
    CHECK(m.tensor("blk.0.attn_output.weight").type == ggml_type::f32);
    CHECK(m.tensor("output.weight").type == ggml_type::q8_0);
    for (const auto& t : m.tensors()) CHECK(t.offset % 64 == 0);
}

TEST_CASE("gguf: every metadata type, nested arrays, version 2", "[llama][gguf]") {
    writer w;
    w.header(0, 15, 2);
    w.str("u8").raw<std::uint32_t>(0).raw<std::uint8_t>(200);
    w.str("i8").raw<std::uint32_t>(1).raw<std::int8_t>(-100);
    w.str("u16").raw<std::uint32_t>(2).raw<std::uint16_t>(60000);
    w.str("i16").raw<std::uint32_t>(3).raw<std::int16_t>(-30000);
    w.str("u32").raw<std::uint32_t>(4).raw<std::uint32_t>(4000000000u);
    w.str("i32").raw<std::uint32_t>(5).raw<std::int32_t>(-2000000000);
    w.str("f32").raw<std::uint32_t>(6).raw<float>(1.5f);
    w.str("bool").raw<std::uint32_t>(7).raw<std::uint8_t>(1);
    w.str("str").raw<std::uint32_t>(8).str("héllo\n");
    w.str("u64").raw<std::uint32_t>(10).raw<std::uint64_t>(std::uint64_t{1} << 62);
    w.str("i64").raw<std::uint32_t>(11).raw<std::int64_t>(-(std::int64_t{1} << 62));
    w.str("f64").raw<std::uint32_t>(12).raw<double>(-0.25);
    w.str("floats").raw<std::uint32_t>(9).raw<std::uint32_t>(6).raw<std::uint64_t>(3).raw(1.0f).raw(2.0f).raw(-3.0f);
    w.str("nested").raw<std::uint32_t>(9).raw<std::uint32_t>(9).raw<std::uint64_t>(2);
    w.raw<std::uint32_t>(5).raw<std::uint64_t>(2).raw<std::int32_t>(7).raw<std::int32_t>(-8);
    w.raw<std::uint32_t>(8).raw<std::uint64_t>(1).str("x");
    w.str("empty").raw<std::uint32_t>(9).raw<std::uint32_t>(8).raw<std::uint64_t>(0);
    const gguf_file f = gguf_file::parse(w.bytes, "types.gguf");
    CHECK(f.version() == 2);
    CHECK(f.metadata().size() == 15);
    CHECK(f.get_int("u8") == 200);
    CHECK(f.get_int("i8") == -100);
    CHECK(f.get_int("u16") == 60000);
    CHECK(f.get_int("i16") == -30000);
    CHECK(f.get_int("u32") == 4000000000LL);
    CHECK(f.get_int("i32") == -2000000000);
    CHECK(f.get_float("f32") == 1.5);
    CHECK(*f.find_bool("bool"));
    CHECK(f.get_string("str") == "héllo\n");
    CHECK(f.get_int("u64") == (std::int64_t{1} << 62));
    CHECK(f.get_int("i64") == -(std::int64_t{1} << 62));
    CHECK(f.get_float("f64") == -0.25);
    CHECK(f.get_float_array("floats") == std::vector<float>{1.0f, 2.0f, -3.0f});
    const gguf_value& nested = f.at("nested");
    REQUIRE(nested.array.size() == 2);
    CHECK(nested.type_name() == "array of array");
    CHECK(nested.array[0].array[1].i == -8);
    CHECK(nested.array[1].array[0].s == "x");
    CHECK(f.get_string_array("empty").empty());
    CHECK(f.at("str").to_display() == "\"héllo\\n\"");
    CHECK(f.at("floats").to_display() == "[1, 2, -3] (3 items)");
    CHECK(f.tensors().empty());
    CHECK_THROWS_WITH(f.get_int32_array("u32"), Catch::Contains("expected an array of integer"));
    CHECK_THROWS_WITH(f.find_bool("u8"), Catch::Contains("expected bool"));
}

TEST_CASE("gguf: a hand-written file with tensors, and general.alignment", "[llama][gguf]") {
    for (std::uint32_t version : {2u, 3u}) {
        const gguf_file f = gguf_file::parse(small_file(version), "small.gguf");
        CHECK(f.version() == version);
        REQUIRE(f.tensors().size() == 2);
        const gguf_tensor& norm = f.tensor("norm");
        CHECK(norm.elements() == 4);
        float v[4];
        dequantize_row(norm.type, norm.data, v, 4);
        CHECK(v[1] == -2.0f);
        CHECK(v[3] == 3.0f);
        const gguf_tensor& m = f.tensor("matrix");
        CHECK(m.rows() == 2);
        CHECK(m.row_length() == 32);
        float row[32];
        dequantize_row(m.type, m.data + 34, row, 32);
        CHECK(row[0] == -15.0f);
        CHECK(row[31] == 16.0f);
    }

    writer w;
    w.header(1, 1);
    w.kv_u32("general.alignment", 64);
    w.tensor_info("t", {8}, 0, 0);
    w.pad(64).data(32);  // data at 128
    const gguf_file f = gguf_file::parse(w.bytes, "aligned.gguf");
    CHECK(f.alignment() == 64);
    CHECK(f.data_offset() == 128);  // 24 + 33 (metadata) + 33 (tensor info) = 90, aligned to 64
}

TEST_CASE("gguf: the real model's version-2 twin parses the same", "[llama][gguf]") {
    std::vector<std::uint8_t> bytes = read_bytes(fixture("tiny-llama.gguf"));
    bytes[4] = 2;
    const gguf_file v2 = gguf_file::parse(bytes, "v2.gguf");
    const gguf_file v3 = gguf_file::open(fixture("tiny-llama.gguf"));
    CHECK(v2.version() == 2);
    CHECK(v2.tensors().size() == v3.tensors().size());
    CHECK(v2.metadata().size() == v3.metadata().size());
}

TEST_CASE("ggml types: hand-built blocks dequantize to hand-computed values", "[llama][gguf][dequant]") {
    // fp16 bit patterns: 0x3C00 = 1, 0x3800 = 0.5, 0xC000 = -2, 0x4200 = 3, 0x3400 = 0.25, 0x0001 = 2^-24.
    CHECK(fp16_to_fp32(0x3C00) == 1.0f);
    CHECK(fp16_to_fp32(0xC000) == -2.0f);
    CHECK(fp16_to_fp32(0x0001) == std::ldexp(1.0f, -24));
    CHECK(std::isinf(fp16_to_fp32(0x7C00)));
    CHECK(bf16_to_fp32(0x3F80) == 1.0f);
    CHECK(bf16_to_fp32(0xC040) == -3.0f);

    SECTION("Q4_0: x = (q - 8) * d; low nibbles are elements 0..15, high nibbles 16..31") {
        std::uint8_t b[18];
        b[0] = 0x00, b[1] = 0x38;  // d = 0.5
        for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<std::uint8_t>((15 - j) << 4 | j);
        float out[32];
        dequantize_row(ggml_type::q4_0, b, out, 32);
        for (int j = 0; j < 16; ++j) {
            CHECK(out[j] == (j - 8) * 0.5f);
            CHECK(out[16 + j] == (15 - j - 8) * 0.5f);
        }
        CHECK(out[0] == -4.0f);
        CHECK(out[16] == 3.5f);
    }
    SECTION("Q4_1: x = q * d + m") {
        std::uint8_t b[20];
        b[0] = 0x00, b[1] = 0x34;  // d = 0.25
        b[2] = 0x00, b[3] = 0xC0;  // m = -2
        for (int j = 0; j < 16; ++j) b[4 + j] = static_cast<std::uint8_t>((j % 3) << 4 | (15 - j));
        float out[32];
        dequantize_row(ggml_type::q4_1, b, out, 32);
        for (int j = 0; j < 16; ++j) {
            CHECK(out[j] == (15 - j) * 0.25f - 2.0f);
            CHECK(out[16 + j] == (j % 3) * 0.25f - 2.0f);
        }
        CHECK(out[0] == 1.75f);
        CHECK(out[15] == -2.0f);
    }
    SECTION("Q8_0: x = q * d, two blocks") {
        std::uint8_t b[68];
        b[0] = 0x00, b[1] = 0x42;   // d = 3
        b[34] = 0x00, b[35] = 0xC0; // d = -2
        for (int j = 0; j < 32; ++j) {
            b[2 + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(j * 8 - 128));
            b[36 + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(127 - j));
        }
        float out[64];
        dequantize_row(ggml_type::q8_0, b, out, 64);
        CHECK(out[0] == -384.0f);
        CHECK(out[31] == (31 * 8 - 128) * 3.0f);
        CHECK(out[32] == -254.0f);
        CHECK(out[63] == -(127 - 31) * 2.0f);
    }
    SECTION("F16, BF16, F32") {
        const std::uint8_t h[6] = {0x00, 0x3C, 0x00, 0xB8, 0x00, 0x42};  // 1, -0.5, 3
        float out[3];
        dequantize_row(ggml_type::f16, h, out, 3);
        CHECK(out[0] == 1.0f);
        CHECK(out[1] == -0.5f);
        CHECK(out[2] == 3.0f);
        const std::uint8_t bf[4] = {0x80, 0x3F, 0x40, 0xC0};  // 1, -3
        dequantize_row(ggml_type::bf16, bf, out, 2);
        CHECK(out[0] == 1.0f);
        CHECK(out[1] == -3.0f);
        const float f[2] = {0.125f, -7.0f};
        dequantize_row(ggml_type::f32, reinterpret_cast<const std::uint8_t*>(f), out, 2);
        CHECK(out[1] == -7.0f);
    }
    SECTION("unsupported types are errors that name them") {
        std::uint8_t b[256] = {};
        float out[256];
        CHECK_THROWS_WITH(dequantize_row(ggml_type::q6_k, b, out, 256), Catch::Contains("Q6_K"));
        CHECK_THROWS_WITH(dequantize_row(ggml_type::q4_1, b, out, 31), Catch::Contains("not a whole number"));
        CHECK(ggml_type_name(4) == "unknown type id 4");
        CHECK(ggml_row_bytes(ggml_type::q4_1, 576) == 18 * 20);
        CHECK(ggml_row_bytes(ggml_type::q8_0, 576) == 18 * 34);
    }
}

TEST_CASE("ggml kernels: row . vector equals dequantize-then-dot, scalar and AVX2", "[llama][gguf][dequant]") {
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> byte(0, 255);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const std::int64_t n = 96, rows = 7;
    for (ggml_type type : {ggml_type::f32, ggml_type::f16, ggml_type::bf16, ggml_type::q4_0, ggml_type::q4_1,
                           ggml_type::q8_0}) {
        INFO(ggml_type_name(type));
        const std::int64_t row_bytes = ggml_row_bytes(type, n);
        std::vector<std::uint8_t> data(static_cast<std::size_t>(rows * row_bytes));
        for (auto& b : data) b = static_cast<std::uint8_t>(byte(rng));
        // Keep scales and float values finite and moderate.
        for (std::int64_t r = 0; r < rows; ++r) {
            std::uint8_t* row = data.data() + r * row_bytes;
            if (type == ggml_type::f32 || type == ggml_type::f16 || type == ggml_type::bf16) {
                std::vector<float> v(static_cast<std::size_t>(n));
                for (auto& x : v) x = normal(rng);
                for (std::int64_t i = 0; i < n; ++i) {
                    if (type == ggml_type::f32) std::memcpy(row + 4 * i, &v[static_cast<std::size_t>(i)], 4);
                    else {
                        std::uint16_t h = type == ggml_type::f16 ? fp32_to_fp16(v[static_cast<std::size_t>(i)])
                                                                 : static_cast<std::uint16_t>([&] {
                                                                       std::uint32_t u;
                                                                       std::memcpy(&u, &v[static_cast<std::size_t>(i)], 4);
                                                                       return u >> 16;
                                                                   }());
                        std::memcpy(row + 2 * i, &h, 2);
                    }
                }
            } else {
                const std::int64_t block = ggml_traits(type).type_size;
                for (std::int64_t b = 0; b < n / 32; ++b) {
                    std::uint8_t* blk = row + b * block;
                    const std::uint16_t d = fp32_to_fp16(0.01f + 0.1f * std::abs(normal(rng)));
                    std::memcpy(blk, &d, 2);
                    if (type == ggml_type::q4_1) {
                        const std::uint16_t m = fp32_to_fp16(normal(rng));
                        std::memcpy(blk + 2, &m, 2);
                    }
                }
            }
        }
        std::vector<float> x(static_cast<std::size_t>(n)), sums(static_cast<std::size_t>(n / 32));
        for (auto& v : x) v = normal(rng);
        block_sums(x.data(), n, sums.data());
        const dot_operand op{x.data(), n, sums.data()};

        std::vector<double> expected(static_cast<std::size_t>(rows));
        std::vector<float> w(static_cast<std::size_t>(n));
        double scale = 1.0;
        for (std::int64_t r = 0; r < rows; ++r) {
            dequantize_row(type, data.data() + r * row_bytes, w.data(), n);
            double s = 0.0, a = 0.0;
            for (std::int64_t i = 0; i < n; ++i) {
                s += double(w[static_cast<std::size_t>(i)]) * x[static_cast<std::size_t>(i)];
                a += std::abs(double(w[static_cast<std::size_t>(i)]) * x[static_cast<std::size_t>(i)]);
            }
            expected[static_cast<std::size_t>(r)] = s;
            scale = std::max(scale, a);
        }
        std::vector<simd_level> levels{simd_level::scalar};
        if (cpu_has_avx2()) levels.push_back(simd_level::avx2);
        for (simd_level level : levels) {
            INFO(to_string(level));
            std::vector<float> y(static_cast<std::size_t>(rows), -1.0f);
            dot_rows(type, data.data(), row_bytes, 0, rows, op, y.data(), level);
            for (std::int64_t r = 0; r < rows; ++r)
                CHECK(std::abs(y[static_cast<std::size_t>(r)] - expected[static_cast<std::size_t>(r)]) < 1e-5 * scale);
            // A sub-range of rows.
            std::vector<float> part(3);
            dot_rows(type, data.data(), row_bytes, 2, 3, op, part.data(), level);
            for (int r = 0; r < 3; ++r) CHECK(part[static_cast<std::size_t>(r)] == y[static_cast<std::size_t>(2 + r)]);
        }
    }
}

TEST_CASE("gguf: truncation at every header offset and many data offsets is an error", "[llama][gguf][robust]") {
    for (const std::string name : {"tiny-llama.gguf", "tiny-llama-mixed.gguf"}) {
        const std::vector<std::uint8_t> bytes = read_bytes(fixture(name));
        const gguf_file whole = gguf_file::parse(bytes, name);
        const std::size_t header_end = static_cast<std::size_t>(whole.data_offset());
        std::size_t failures = 0, checked = 0;
        auto try_length = [&](std::size_t n) {
            ++checked;
            try {
                gguf_file::parse(std::vector<std::uint8_t>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n)),
                                 "cut.gguf");
            } catch (const qaq::error& e) {
                ++failures;
                if (std::string(e.what()).find("cut.gguf") == std::string::npos) FAIL("message lacks the file name: " << e.what());
            }
        };
        for (std::size_t n = 0; n < header_end; ++n) try_length(n);
        for (std::size_t n = header_end; n < bytes.size(); n += 97) try_length(n);
        try_length(bytes.size() - 1);
        CHECK(failures == checked);
    }
}

TEST_CASE("gguf: corrupted counts, sizes, offsets and types are errors that say what is wrong", "[llama][gguf][robust]") {
    expect_error({}, "empty");
    expect_error({'G', 'G', 'U'}, "truncated");
    expect_error({'G', 'G', 'M', 'L', 3, 0, 0, 0}, "not a GGUF file");
    {
        writer w;
        w.header(0, 0, 1);
        expect_error(w.bytes, "version 1 is not supported");
    }
    {
        writer w;
        w.header(0, 0, 0x03000000u);
        expect_error(w.bytes, "big-endian");
    }
    {
        writer w;
        w.header(0, 0, 7);
        expect_error(w.bytes, "unsupported GGUF version 7");
    }
    {
        writer w;
        w.header(0, std::uint64_t{1} << 60);
        expect_error(w.bytes, "metadata entries");
    }
    {
        writer w;
        w.header(std::uint64_t{1} << 60, 0);
        expect_error(w.bytes, "tensors");
    }
    {
        writer w;
        w.header(0, 1).raw<std::uint64_t>(std::uint64_t{1} << 62);  // key length
        w.data(16);
        expect_error(w.bytes, "string of");
    }
    {
        writer w;
        w.header(0, 1).str("k").raw<std::uint32_t>(13).data(8);
        expect_error(w.bytes, "unknown value type 13");
    }
    {
        writer w;
        w.header(0, 1).str("k").raw<std::uint32_t>(9).raw<std::uint32_t>(8).raw<std::uint64_t>(std::uint64_t{1} << 40);
        w.data(64);
        expect_error(w.bytes, "claims 1099511627776 items");
    }
    {
        writer w;
        w.header(0, 1).str("k").raw<std::uint32_t>(7).raw<std::uint8_t>(2);
        expect_error(w.bytes, "bool");
    }
    {
        writer w;  // arrays nested 40 deep
        w.header(0, 1).str("k").raw<std::uint32_t>(9);
        for (int d = 0; d < 40; ++d) w.raw<std::uint32_t>(9).raw<std::uint64_t>(1);
        w.raw<std::uint32_t>(4).raw<std::uint64_t>(1).raw<std::uint32_t>(0).data(64);
        expect_error(w.bytes, "nests arrays deeper");
    }
    {
        writer w;
        w.header(0, 2).kv_u32("a", 1).kv_u32("a", 2);
        expect_error(w.bytes, "duplicate metadata key 'a'");
    }
    {
        writer w;
        w.header(0, 1).kv_u32("general.alignment", 48);
        expect_error(w.bytes, "power of two");
    }
    {
        writer w;
        w.header(0, 1).kv_str("general.alignment", "32");
        expect_error(w.bytes, "general.alignment has type string");
    }
    {
        writer w;
        w.header(1, 0).tensor_info("t", {}, 0, 0).pad(32);
        expect_error(w.bytes, "0 dimensions");
    }
    {
        writer w;
        w.header(1, 0).tensor_info("t", {1, 1, 1, 1, 1}, 0, 0).pad(32).data(32);
        expect_error(w.bytes, "5 dimensions");
    }
    {
        writer w;
        w.header(1, 0).tensor_info("t", {32}, 77, 0).pad(32).data(64);
        expect_error(w.bytes, "unknown GGML type id 77");
    }
    {
        writer w;
        w.header(1, 0).tensor_info("t", {33}, 3, 0).pad(32).data(64);
        expect_error(w.bytes, "not a multiple of its block size 32");
    }
    {
        writer w;
        w.header(1, 0).tensor_info("t", {std::uint64_t{1} << 40, std::uint64_t{1} << 40}, 0, 0).pad(32).data(32);
        expect_error(w.bytes, "more elements than int64");
    }
    {
        writer w;
        w.header(1, 0).tensor_info("t", {8}, 0, 16).pad(32).data(64);
        expect_error(w.bytes, "not a multiple of the alignment");
    }
    {
        writer w;
        w.header(1, 0).tensor_info("t", {8}, 0, std::uint64_t{1} << 62).pad(32).data(64);
        expect_error(w.bytes, "spans file offsets");
    }
    {
        writer w;
        w.header(1, 0).tensor_info("t", {64}, 0, 0).pad(32).data(100);
        expect_error(w.bytes, "truncated: tensor 't'");
    }
    {
        writer w;
        w.header(2, 0).tensor_info("t", {8}, 0, 0).tensor_info("t", {8}, 0, 32).pad(32).data(64);
        expect_error(w.bytes, "duplicate tensor name 't'");
    }
    {
        writer w;
        w.header(2, 0).tensor_info("a", {16}, 0, 0).tensor_info("b", {8}, 0, 32).pad(32).data(96);
        expect_error(w.bytes, "overlap");
    }
    CHECK_THROWS_WITH(gguf_file::open("/nonexistent/model.gguf"), Catch::Contains("cannot open GGUF file '/nonexistent/model.gguf'"));
}

TEST_CASE("gguf: random byte damage gives a file or an error, never a crash", "[llama][gguf][robust]") {
    const std::vector<std::uint8_t> original = read_bytes(fixture("tiny-llama.gguf"));
    const std::size_t header_end = static_cast<std::size_t>(gguf_file::parse(original).data_offset());
    std::mt19937 rng(1234);
    std::uniform_int_distribution<std::size_t> where(0, header_end - 1);
    std::uniform_int_distribution<int> value(0, 255);
    int parsed = 0, rejected = 0;
    for (int trial = 0; trial < 400; ++trial) {
        std::vector<std::uint8_t> bytes = original;
        const int hits = 1 + trial % 4;
        for (int k = 0; k < hits; ++k) bytes[where(rng)] = static_cast<std::uint8_t>(value(rng));
        try {
            const gguf_file f = gguf_file::parse(bytes, "fuzz.gguf");
            for (const auto& t : f.tensors()) CHECK(f.data_offset() + t.offset + t.size <= f.file_size());
            ++parsed;
        } catch (const qaq::error&) {
            ++rejected;
        }
    }
    CHECK(parsed + rejected == 400);
    CHECK(rejected > 0);
}

TEST_CASE("model config: missing keys, unsupported architecture and shapes are errors", "[llama][gguf]") {
    {
        writer w;
        w.header(0, 1).kv_str("general.architecture", "qwen2");
        const gguf_file f = gguf_file::parse(w.bytes, "qwen.gguf");
        CHECK_THROWS_WITH(llama_config::from_gguf(f), Catch::Contains("unsupported architecture 'qwen2'"));
    }
    {
        const gguf_file f = gguf_file::parse(small_file(), "small.gguf");
        CHECK_THROWS_WITH(llama_config::from_gguf(f), Catch::Contains("llama.embedding_length"));
    }
    {
        writer w;
        w.header(0, 0);
        const gguf_file f = gguf_file::parse(w.bytes, "bare.gguf");
        CHECK_THROWS_WITH(llama_config::from_gguf(f), Catch::Contains("no general.architecture"));
        CHECK_THROWS_WITH(tokenizer_vocabulary_from_gguf(f), Catch::Contains("no tokenizer metadata"));
    }
}
