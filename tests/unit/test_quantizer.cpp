// The packed quantizer: byte counts by arithmetic, error budgets per bit
// width, exact outliers, non-finite handling and clear errors.

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "qaq/qaq.hpp"

namespace {

std::vector<float> normal_data(std::int64_t n, unsigned seed, float sigma = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, sigma);
    std::vector<float> x(static_cast<std::size_t>(n));
    for (auto& v : x) v = dist(rng);
    return x;
}

qaq::kv_view<const float> view(const std::vector<float>& x, const qaq::kv_shape& s) {
    return qaq::kv_view<const float>::contiguous(x.data(), s);
}

}  // namespace

TEST_CASE("head level, 4 bits, asymmetric, D = 128 costs 64 + 4 + 1 bytes per group", "[quantizer][bytes]") {
    const qaq::kv_shape shape{2, 1, 3, 5, 128};
    const auto x = normal_data(shape.element_count(), 1);
    qaq::quantizer<qaq::bits::fixed, qaq::outliers::none, qaq::storage::uniform_zero_point> q(
        qaq::bits::fixed(4), {}, {false, qaq::storage_precision::fp16}, qaq::group_level::head);
    const auto packed = q.quantize(view(x, shape));
    const std::int64_t groups = 2 * 3 * 5;
    const auto b = packed.bytes();
    CHECK(b.codes == 64 * groups);       // 128 codes x 4 bits
    CHECK(b.parameters == 4 * groups);   // two fp16 parameters
    CHECK(b.widths == groups);           // one tag byte
    CHECK(b.outlier_counts == 0);        // no outliers: no index held at all
    CHECK(b.outlier_positions == 0);
    CHECK(b.outlier_values == 0);
    CHECK(b.total() == 69 * groups);
    CHECK(b.compression_ratio() == Approx(256.0 / 69.0));
    // What the vectors really hold is what the report says.
    CHECK(packed.codes.capacity() == packed.codes.size());
}

TEST_CASE("1% quantile outliers at D = 128 cost a count, two positions and two fp16 values", "[quantizer][bytes]") {
    // k_lo = ceil(0.005 * 128) = 1, k_hi = floor(0.995 * 128) = 127: the minimum and the maximum.
    const qaq::kv_shape shape{1, 1, 2, 4, 128};
    const auto x = normal_data(shape.element_count(), 2);
    qaq::quantizer<qaq::bits::fixed, qaq::outliers::quantile, qaq::storage::uniform_mean_centred> q(
        qaq::bits::fixed(4), qaq::outliers::quantile(0.01), {false, qaq::storage_precision::fp16},
        qaq::group_level::head);
    const auto packed = q.quantize(view(x, shape));
    const std::int64_t groups = 8;
    const auto b = packed.bytes();
    CHECK(packed.outlier_count() == 2 * groups);
    CHECK(b.outlier_counts == groups);          // 1 byte each (group size 128 < 256)
    CHECK(b.outlier_positions == 2 * groups);   // 1 byte each
    CHECK(b.outlier_values == 2 * 2 * groups);  // fp16
    CHECK(b.total() == (69 + 1 + 2 + 4) * groups);

    // The outliers come back as the nearest fp16 of the original values.
    std::vector<float> y(x.size());
    q.dequantize(packed, qaq::kv_view<float>::contiguous(y.data(), shape));
    for (std::int64_t g = 0; g < groups; ++g) {
        const float* in = &x[static_cast<std::size_t>(g * 128)];
        const float* out = &y[static_cast<std::size_t>(g * 128)];
        const auto lo = std::min_element(in, in + 128) - in;
        const auto hi = std::max_element(in, in + 128) - in;
        CHECK(out[lo] == qaq::round_to(qaq::storage_precision::fp16, in[lo]));
        CHECK(out[hi] == qaq::round_to(qaq::storage_precision::fp16, in[hi]));
    }
}

TEST_CASE("token-level groups larger than 65535 widen positions to 4 bytes", "[quantizer][bytes]") {
    const qaq::kv_shape shape{4, 1, 8, 2, 2048};  // group size 65536
    const auto x = normal_data(shape.element_count(), 3);
    qaq::quantizer<qaq::bits::fixed, qaq::outliers::quantile, qaq::storage::uniform_zero_point> q(
        qaq::bits::fixed(2), qaq::outliers::quantile(0.001), {false, qaq::storage_precision::fp32},
        qaq::group_level::token);
    const auto packed = q.quantize(view(x, shape));
    CHECK(packed.outlier_positions.width() == 2);  // positions 0..65535 fit 2 bytes
    CHECK(packed.outlier_counts.width() == 4);     // a count of 65536 needs 4
    const auto b = packed.bytes();
    CHECK(b.outlier_values == 4 * packed.outlier_count());
    CHECK(b.codes == 2 * 65536 * 2 / 8);
}

TEST_CASE("zero-point codec error stays within half a step at every width", "[quantizer][error_budget]") {
    const qaq::kv_shape shape{1, 1, 1, 64, 64};
    const auto x = normal_data(shape.element_count(), 4, 3.0f);
    for (int bits = 1; bits <= 16; ++bits) {
        qaq::quantizer<qaq::bits::fixed, qaq::outliers::none, qaq::storage::uniform_zero_point> q(
            qaq::bits::fixed(bits), {}, {false, qaq::storage_precision::fp32}, qaq::group_level::head);
        const auto packed = q.quantize(view(x, shape));
        std::vector<float> y(x.size());
        q.dequantize(packed, qaq::kv_view<float>::contiguous(y.data(), shape));
        for (std::int64_t t = 0; t < 64; ++t) {
            const float* in = &x[static_cast<std::size_t>(t * 64)];
            const float* out = &y[static_cast<std::size_t>(t * 64)];
            const float lo = *std::min_element(in, in + 64), hi = *std::max_element(in, in + 64);
            const float step = (hi - lo) / static_cast<float>((1u << bits) - 1u);
            for (int d = 0; d < 64; ++d) {
                INFO("bits " << bits << " token " << t << " dim " << d);
                REQUIRE(std::fabs(out[d] - in[d]) <= step / 2 * (1 + 1e-5f) + 4e-7f * std::fabs(in[d]));
            }
        }
    }
}

TEST_CASE("fixed widths are what the bits array says", "[quantizer]") {
    const qaq::kv_shape shape{3, 2, 2, 4, 16};
    const auto x = normal_data(shape.element_count(), 5);
    for (auto level : {qaq::group_level::token, qaq::group_level::layer, qaq::group_level::head}) {
        qaq::quantizer<qaq::bits::fixed, qaq::outliers::none, qaq::storage::uniform_mean_centred> q(
            qaq::bits::fixed(3), {}, {}, level);
        const auto packed = q.quantize(view(x, shape));
        for (auto w : packed.widths) REQUIRE(w == 3);
        CHECK(packed.bytes().codes == packed.group_count() * qaq::packed_code_bytes(packed.layout.group_size(), 3));
    }
}

TEST_CASE("non-finite cache values are kept exactly as outliers", "[quantizer][bad_input]") {
    const qaq::kv_shape shape{1, 1, 1, 3, 8};
    auto x = normal_data(shape.element_count(), 6);
    x[2] = std::numeric_limits<float>::quiet_NaN();
    x[9] = std::numeric_limits<float>::infinity();
    x[17] = -std::numeric_limits<float>::infinity();
    qaq::quantizer<qaq::bits::fixed, qaq::outliers::none, qaq::storage::uniform_zero_point> q(
        qaq::bits::fixed(4), {}, {}, qaq::group_level::head);
    const auto packed = q.quantize(view(x, shape));
    CHECK(packed.outlier_count() == 3);
    std::vector<float> y(x.size());
    q.dequantize(packed, qaq::kv_view<float>::contiguous(y.data(), shape));
    CHECK(std::isnan(y[2]));
    CHECK(y[9] == std::numeric_limits<float>::infinity());
    CHECK(y[17] == -std::numeric_limits<float>::infinity());
    for (std::size_t i = 0; i < y.size(); ++i)
        if (i != 2 && i != 9 && i != 17) CHECK(std::isfinite(y[i]));
}

TEST_CASE("a constant group reconstructs exactly", "[quantizer]") {
    const qaq::kv_shape shape{1, 1, 1, 2, 16};
    std::vector<float> x(32, 0.75f);
    for (int i = 16; i < 32; ++i) x[i] = -2.5f;
    qaq::quantizer<qaq::bits::fixed, qaq::outliers::none, qaq::storage::uniform_mean_centred> q(
        qaq::bits::fixed(4), {}, {}, qaq::group_level::head);
    const auto packed = q.quantize(view(x, shape));
    std::vector<float> y(x.size());
    q.dequantize(packed, qaq::kv_view<float>::contiguous(y.data(), shape));
    CHECK(y == x);
}

TEST_CASE("bad input raises qaq::error with what was expected", "[quantizer][bad_input]") {
    qaq::quantizer<qaq::bits::value_attention, qaq::outliers::none, qaq::storage::uniform_zero_point> q(
        qaq::bits::value_attention(2, 0.1, 1, 8), {}, {}, qaq::group_level::head);
    const qaq::kv_shape shape{2, 1, 2, 4, 8};
    const auto x = normal_data(shape.element_count(), 7);
    // No attention at all.
    CHECK_THROWS_WITH(q.quantize(view(x, shape)), Catch::Contains("need attention probabilities"));
    // Attention over the wrong number of tokens.
    std::vector<float> attention(2 * 1 * 2 * 4 * 3, 0.25f);
    const auto bad = qaq::attention_view<const float>::contiguous(attention.data(), {2, 1, 2, 4, 3});
    CHECK_THROWS_WITH(q.quantize(view(x, shape), bad), Catch::Contains("does not match cache shape"));
    // Query heads not a multiple of KV heads.
    std::vector<float> attention3(2 * 1 * 3 * 4 * 4, 0.25f);
    CHECK_THROWS_AS(
        q.quantize(view(x, shape), qaq::attention_view<const float>::contiguous(attention3.data(), {2, 1, 3, 4, 4})),
        qaq::error);
    // NaN probability.
    std::vector<float> attention_nan(2 * 1 * 2 * 4 * 4, 0.25f);
    attention_nan.back() = std::nanf("");
    CHECK_THROWS_WITH(
        q.quantize(view(x, shape), qaq::attention_view<const float>::contiguous(attention_nan.data(), {2, 1, 2, 4, 4})),
        Catch::Contains("expected a finite value >= 0"));
    // Empty cache.
    CHECK_THROWS_WITH(q.quantize(view(x, {2, 1, 2, 0, 8})), Catch::Contains("is empty"));
    // Parameters out of range.
    CHECK_THROWS_WITH(qaq::bits::fixed(17), Catch::Contains("expected 0..16"));
    CHECK_THROWS_WITH(qaq::bits::value_attention(0, 0.1, 1, 8), Catch::Contains("expected >= 1"));
    CHECK_THROWS_WITH(qaq::bits::value_attention(1, -0.1, 1, 8), Catch::Contains("positive finite"));
    CHECK_THROWS_WITH(qaq::bits::key_query_norm(1.0, 0.1, 5, 4, 1), Catch::Contains("bits_max is 4"));
    CHECK_THROWS_WITH(qaq::outliers::quantile(1.0), Catch::Contains("[0, 1)"));
    CHECK_THROWS_WITH(qaq::group_layout(shape, qaq::group_level::sub_head, 3), Catch::Contains("divide head_dim"));
}

TEST_CASE("fp16 storage refuses values it cannot hold", "[quantizer][bad_input]") {
    const qaq::kv_shape shape{1, 1, 1, 1, 4};
    const std::vector<float> x = {1e6f, -1e6f, 3.0f, 4.0f};
    qaq::quantizer<qaq::bits::fixed, qaq::outliers::none, qaq::storage::uniform_zero_point> fp16(
        qaq::bits::fixed(4), {}, {false, qaq::storage_precision::fp16}, qaq::group_level::head);
    CHECK_THROWS_WITH(fp16.quantize(view(x, shape)), Catch::Contains("storage_precision::fp32"));
    qaq::quantizer<qaq::bits::fixed, qaq::outliers::none, qaq::storage::uniform_zero_point> fp32(
        qaq::bits::fixed(4), {}, {false, qaq::storage_precision::fp32}, qaq::group_level::head);
    CHECK_NOTHROW(fp32.quantize(view(x, shape)));
}

TEST_CASE("any_quantizer maps a runtime config to the compiled combination", "[any_quantizer]") {
    qaq::quantizer_config c;
    c.role = qaq::cache_role::value;
    c.codec = qaq::codec_kind::normal;
    c.bits = qaq::bits_kind::value_attention;
    CHECK_THROWS_WITH(qaq::any_quantizer(c), Catch::Contains("no error formula"));
    c.bits = qaq::bits_kind::key_query_norm;
    CHECK_THROWS_WITH(qaq::any_quantizer(c), Catch::Contains("key_query_norm bits serve the key cache"));
    c.bits = qaq::bits_kind::fixed;
    c.fixed_bits = 3;
    c.outlier_ratio = 0.05;
    const qaq::any_quantizer q(c);
    const qaq::kv_shape shape{1, 1, 2, 3, 32};
    const auto x = normal_data(shape.element_count(), 8);
    const auto packed = q.quantize(view(x, shape));
    // Same bytes as the statically composed quantizer.
    qaq::quantizer<qaq::bits::fixed, qaq::outliers::quantile, qaq::storage::normal_quantile> direct(
        qaq::bits::fixed(3), qaq::outliers::quantile(0.05), {false, qaq::storage_precision::fp16},
        qaq::group_level::head);
    const auto expected = direct.quantize(view(x, shape));
    CHECK(packed.codes == expected.codes);
    CHECK(packed.parameters == expected.parameters);
    CHECK(packed.outlier_values == expected.outlier_values);
}

namespace {
// An outlier policy that forgets non-finite values, and one that miscounts.
struct forgets_nan {
    static constexpr bool is_outlier_policy = true;
    static constexpr const char* name = "forgets_nan";
    double ratio() const { return 0.0; }
    std::int64_t mark(const float*, std::int64_t n, std::uint8_t* is_outlier, float*) const {
        std::fill(is_outlier, is_outlier + n, std::uint8_t{0});
        return 0;
    }
};
struct miscounts {
    static constexpr bool is_outlier_policy = true;
    static constexpr const char* name = "miscounts";
    double ratio() const { return 0.0; }
    std::int64_t mark(const float*, std::int64_t n, std::uint8_t* is_outlier, float*) const {
        std::fill(is_outlier, is_outlier + n, std::uint8_t{0});
        is_outlier[0] = 1;
        return 0;
    }
};
}  // namespace

TEST_CASE("a faulty outlier policy is caught, not trusted", "[quantizer][bad_input]") {
    const qaq::kv_shape shape{1, 1, 1, 1, 4};
    const std::vector<float> x = {1.0f, 2.0f, std::nanf(""), 4.0f};
    qaq::quantizer<qaq::bits::fixed, forgets_nan, qaq::storage::uniform_zero_point> q(qaq::bits::fixed(4), {}, {},
                                                                                     qaq::group_level::head);
    CHECK_THROWS_WITH(q.quantize(view(x, shape)), Catch::Contains("left a non-finite value unmarked"));
    const std::vector<float> finite = {1.0f, 2.0f, 3.0f, 4.0f};
    qaq::quantizer<qaq::bits::fixed, miscounts, qaq::storage::uniform_zero_point> m(qaq::bits::fixed(4), {}, {},
                                                                                   qaq::group_level::head);
    CHECK_THROWS_WITH(m.quantize(view(finite, shape)), Catch::Contains("marked a different number"));
}
