// quantized_kv_cache: attention over packed codes against attention over the
// dequantized cache, the decode protocol's moves, the prefill path against the
// whole-tensor quantizer, the byte report, a 32k-token cache, and bad input.

#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

#include "qaq/kv_cache.hpp"
#include "qaq/qaq.hpp"

namespace {

using key_quantizer = qaq::quantizer<qaq::bits::key_query_norm, qaq::outliers::quantile, qaq::storage::uniform_zero_point>;
using value_quantizer = qaq::quantizer<qaq::bits::value_attention, qaq::outliers::quantile, qaq::storage::uniform_zero_point>;
using qaq_cache = qaq::quantized_kv_cache<key_quantizer, value_quantizer>;

constexpr int bits_min = 2, bits_max = 8;

key_quantizer make_keys(int window = 3, qaq::group_level level = qaq::group_level::head, int group_dims = 0) {
    return key_quantizer(qaq::bits::key_query_norm(20.0, 0.05, bits_min, bits_max, window), qaq::outliers::quantile(0.05),
                         {false, qaq::storage_precision::fp16}, level, group_dims);
}
value_quantizer make_values(int window = 3, qaq::group_level level = qaq::group_level::head, int group_dims = 0) {
    return value_quantizer(qaq::bits::value_attention(window, 0.02, bits_min, bits_max), qaq::outliers::quantile(0.05),
                           {false, qaq::storage_precision::fp16}, level, group_dims);
}

std::vector<float> random_vector(std::mt19937& rng, std::int64_t n, float sigma = 1.0f) {
    std::normal_distribution<float> dist(0.0f, sigma);
    std::vector<float> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = dist(rng);
    return v;
}

// Plain double-precision attention over explicit K, V [kv_heads][T][D].
void naive_attention(const qaq::kv_cache_shape& s, std::int64_t T, const std::vector<float>& keys,
                     const std::vector<float>& values, const std::vector<float>& q, std::vector<double>& out,
                     std::vector<double>& probabilities) {
    const std::int64_t D = s.head_dim, per = s.query_heads / s.kv_heads;
    out.assign(static_cast<std::size_t>(s.query_heads * D), 0.0);
    probabilities.assign(static_cast<std::size_t>(s.query_heads * T), 0.0);
    for (std::int64_t j = 0; j < s.query_heads; ++j) {
        const std::int64_t h = j / per;
        double m = -1e300;
        std::vector<double> score(static_cast<std::size_t>(T));
        for (std::int64_t t = 0; t < T; ++t) {
            double dot = 0;
            for (std::int64_t d = 0; d < D; ++d) dot += double(q[j * D + d]) * keys[(h * T + t) * D + d];
            score[t] = dot / std::sqrt(double(D));
            m = std::max(m, score[t]);
        }
        double sum = 0;
        for (auto& x : score) sum += (x = std::exp(x - m));
        for (std::int64_t t = 0; t < T; ++t) {
            probabilities[j * T + t] = score[t] / sum;
            for (std::int64_t d = 0; d < D; ++d) out[j * D + d] += score[t] / sum * values[(h * T + t) * D + d];
        }
    }
}

// One decode step on every layer with random K, V, Q; returns the appended K/V (for host-copy checks).
void decode_step(qaq_cache& cache, std::mt19937& rng, std::vector<std::vector<float>>* appended_keys = nullptr,
                 std::vector<std::vector<float>>* appended_values = nullptr) {
    const auto& s = cache.shape();
    for (std::int64_t l = 0; l < s.layers; ++l) {
        auto k = random_vector(rng, s.kv_heads * s.head_dim);
        auto v = random_vector(rng, s.kv_heads * s.head_dim);
        auto q = random_vector(rng, s.query_heads * s.head_dim, 2.0f);
        cache.append(l, k.data(), k.size(), v.data(), v.size());
        if (appended_keys) appended_keys->push_back(k);
        if (appended_values) appended_values->push_back(v);
        std::vector<float> out(q.size()), p(static_cast<std::size_t>(s.query_heads * cache.tokens(l)));
        cache.attend(l, q.data(), q.size(), out.data(), out.size(), p.data(), p.size());
        cache.observe(l, p.data(), p.size());
    }
    cache.rebalance();
}

}  // namespace

TEST_CASE("attend over packed codes equals attention over the dequantized cache", "[kv_cache]") {
    std::mt19937 rng(11);
    for (auto level : {qaq::group_level::head, qaq::group_level::sub_head}) {
        const int dims = level == qaq::group_level::sub_head ? 16 : 0;
        const qaq::kv_cache_shape shape{2, 2, 6, 64, 64};  // 3 query heads per KV head
        qaq_cache cache(shape, make_keys(3, level, dims), make_values(3, level, dims));
        for (int step = 0; step < 40; ++step) decode_step(cache, rng);
        for (std::int64_t l = 0; l < shape.layers; ++l) {
            const std::int64_t T = cache.tokens(l);
            std::vector<float> keys(static_cast<std::size_t>(shape.kv_heads * T * shape.head_dim)), values(keys.size());
            cache.dequantize(l, qaq::cache_role::key, keys.data(), keys.size());
            cache.dequantize(l, qaq::cache_role::value, values.data(), values.size());
            const auto q = random_vector(rng, shape.query_heads * shape.head_dim, 2.0f);
            std::vector<float> out(q.size()), p(static_cast<std::size_t>(shape.query_heads * T));
            cache.attend(l, q.data(), q.size(), out.data(), out.size(), p.data(), p.size());
            std::vector<double> expected_out, expected_p;
            naive_attention(shape, T, keys, values, q, expected_out, expected_p);
            for (std::size_t i = 0; i < p.size(); ++i) REQUIRE(p[i] == Approx(expected_p[i]).margin(1e-6).epsilon(1e-4));
            for (std::size_t i = 0; i < out.size(); ++i)
                REQUIRE(out[i] == Approx(expected_out[i]).margin(1e-5).epsilon(1e-4));
        }
    }
}

TEST_CASE("widths stay in [bits_min, bits_max]; upward moves equal a fresh quantization of the host copy",
          "[kv_cache][rebalance]") {
    std::mt19937 rng(12);
    const qaq::kv_cache_shape shape{1, 2, 2, 32, 200};
    qaq_cache cache(shape, make_keys(), make_values());
    std::vector<std::vector<float>> keys, values;
    std::int64_t checked = 0;
    for (int step = 0; step < 120; ++step) {
        const auto before = cache.widths(0, qaq::cache_role::value);
        decode_step(cache, rng, &keys, &values);
        const auto after = cache.widths(0, qaq::cache_role::value);
        for (auto w : after) REQUIRE((w >= bits_min && w <= bits_max));
        for (auto w : cache.widths(0, qaq::cache_role::key)) REQUIRE((w >= bits_min && w <= bits_max));
        // widths are [kv_head][token]; tokens appended this step are not compared.
        const std::int64_t T = cache.tokens(0);
        std::vector<float> dequantized(static_cast<std::size_t>(shape.kv_heads * T * shape.head_dim));
        cache.dequantize(0, qaq::cache_role::value, dequantized.data(), dequantized.size());
        for (std::int64_t h = 0; h < shape.kv_heads; ++h)
            for (std::int64_t t = 0; t + 1 < T; ++t) {
                const int old_width = before[static_cast<std::size_t>(h * (T - 1) + t)];
                const int new_width = after[static_cast<std::size_t>(h * T + t)];
                if (new_width <= old_width) continue;
                // Fresh quantization of the host copy through the whole-tensor API at the new width.
                qaq::quantizer<qaq::bits::fixed, qaq::outliers::quantile, qaq::storage::uniform_zero_point> fresh(
                    qaq::bits::fixed(new_width), qaq::outliers::quantile(0.05), {false, qaq::storage_precision::fp16},
                    qaq::group_level::head);
                const float* host = &values[static_cast<std::size_t>(t)][static_cast<std::size_t>(h * shape.head_dim)];
                const qaq::kv_shape one{1, 1, 1, 1, shape.head_dim};
                const auto packed = fresh.quantize(qaq::kv_view<const float>::contiguous(host, one));
                std::vector<float> expected(static_cast<std::size_t>(shape.head_dim));
                fresh.dequantize(packed, qaq::kv_view<float>::contiguous(expected.data(), one));
                for (std::int64_t d = 0; d < shape.head_dim; ++d)
                    REQUIRE(dequantized[static_cast<std::size_t>((h * T + t) * shape.head_dim + d)] == expected[d]);
                ++checked;
            }
    }
    CHECK(checked > 0);  // the random attention did move some tokens up
    CHECK(cache.counters().groups_up > 0);
    CHECK(cache.counters().groups_down > 0);
}

TEST_CASE("downgrading from codes reads no host bytes for downward moves", "[kv_cache][rebalance]") {
    std::mt19937 rng(13);
    const qaq::kv_cache_shape shape{1, 1, 1, 32, 100};
    // Fixed-width keys never move; values only move down when attention fades.
    using fixed_keys = qaq::quantizer<qaq::bits::fixed, qaq::outliers::none, qaq::storage::uniform_zero_point>;
    qaq::quantized_kv_cache<fixed_keys, value_quantizer> cache(
        shape, fixed_keys(qaq::bits::fixed(8), {}, {}, qaq::group_level::head), make_values(1),
        {qaq::downgrade_source::codes});
    for (int step = 0; step < 30; ++step) {
        auto k = random_vector(rng, 32), v = random_vector(rng, 32);
        cache.append(0, k.data(), 32, v.data(), 32);
        // Attention concentrated on the newest token: everything older fades and moves down.
        std::vector<float> p(static_cast<std::size_t>(cache.tokens(0)), 0.0f);
        p.back() = 1.0f;
        cache.observe(0, p.data(), p.size());
        const auto step_counters = cache.rebalance();
        CHECK(step_counters.host_bytes_read == step_counters.groups_up * 32 * 4);
    }
    CHECK(cache.counters().groups_down > 0);
    for (auto w : cache.widths(0, qaq::cache_role::value)) CHECK((w >= bits_min && w <= bits_max));
}

TEST_CASE("prefill gives the whole-tensor quantizer's result", "[kv_cache][prefill]") {
    std::mt19937 rng(14);
    const qaq::kv_cache_shape shape{3, 2, 4, 32, 64};
    const std::int64_t T = 40;
    const qaq::kv_shape kv{shape.layers, 1, shape.kv_heads, T, shape.head_dim};
    const auto keys = random_vector(rng, kv.element_count());
    const auto values = random_vector(rng, kv.element_count());
    // Causal softmax attention rows over T tokens.
    std::vector<float> attention(static_cast<std::size_t>(shape.layers * shape.query_heads * T * T), 0.0f);
    for (std::int64_t row = 0; row < shape.layers * shape.query_heads * T; ++row) {
        const std::int64_t r = row % T;
        auto logits = random_vector(rng, r + 1, 2.0f);
        double sum = 0;
        for (auto& x : logits) sum += (x = std::exp(x));
        for (std::int64_t t = 0; t <= r; ++t) attention[static_cast<std::size_t>(row * T + t)] = float(logits[t] / sum);
    }
    const auto keys_view = qaq::kv_view<const float>::contiguous(keys.data(), kv);
    const auto values_view = qaq::kv_view<const float>::contiguous(values.data(), kv);
    const auto attention_view =
        qaq::attention_view<const float>::contiguous(attention.data(), {shape.layers, 1, shape.query_heads, T, T});

    qaq_cache cache(shape, make_keys(), make_values());
    cache.prefill(keys_view, values_view, attention_view);

    auto compare = [&](const auto& quantizer, const qaq::kv_view<const float>& data, qaq::cache_role role) {
        const auto packed = quantizer.quantize(data, attention_view);
        std::vector<float> expected(static_cast<std::size_t>(kv.element_count()));
        quantizer.dequantize(packed, qaq::kv_view<float>::contiguous(expected.data(), kv));
        for (std::int64_t l = 0; l < shape.layers; ++l) {
            std::vector<float> got(static_cast<std::size_t>(shape.kv_heads * T * shape.head_dim));
            cache.dequantize(l, role, got.data(), got.size());
            // Both are [kv_head][token][dim] within a layer.
            for (std::size_t i = 0; i < got.size(); ++i)
                REQUIRE(got[i] == expected[static_cast<std::size_t>(l) * got.size() + i]);
            const auto widths = cache.widths(l, role);  // [kv_head][token]
            for (std::int64_t h = 0; h < shape.kv_heads; ++h)
                for (std::int64_t t = 0; t < T; ++t)  // packed order: (batch, token, layer, head)
                    REQUIRE(widths[static_cast<std::size_t>(h * T + t)] ==
                            packed.widths[static_cast<std::size_t>((t * shape.layers + l) * shape.kv_heads + h)]);
        }
    };
    compare(cache.key_quantizer(), keys_view, qaq::cache_role::key);
    compare(cache.value_quantizer(), values_view, qaq::cache_role::value);
}

TEST_CASE("the byte report adds up to the arithmetic of the stored groups", "[kv_cache][bytes]") {
    std::mt19937 rng(15);
    const qaq::kv_cache_shape shape{2, 2, 4, 64, 300};
    qaq_cache cache(shape, make_keys(), make_values());
    for (int step = 0; step < 150; ++step) decode_step(cache, rng);
    const auto report = cache.bytes();
    for (auto role : {qaq::cache_role::key, qaq::cache_role::value}) {
        const auto& r = role == qaq::cache_role::key ? report.keys : report.values;
        std::int64_t codes = 0, groups = 0;
        for (std::int64_t l = 0; l < shape.layers; ++l)
            for (int w : cache.widths(l, role)) codes += qaq::packed_code_bytes(shape.head_dim, w), ++groups;
        CHECK(r.codes == codes);
        CHECK(r.widths == groups);
        CHECK(r.parameters == 4 * groups);    // two fp16 parameters
        CHECK(r.slot_indices == 4 * groups);  // one uint32 slot per group
        // 5% of 64 dims: k_lo = ceil(1.6) = 2, k_hi = floor(62.4) = 62: 2 + 2 outliers per group.
        CHECK(r.outlier_counts == groups);
        CHECK(r.outlier_positions == 4 * groups);
        CHECK(r.outlier_values == 2 * 4 * groups);
        CHECK(r.elements == groups * shape.head_dim);
        CHECK(r.slack >= 0);
        CHECK(r.total() == r.used() + r.slack);
        CHECK(r.used() == codes + 4 * groups + groups + 4 * groups + groups + 4 * groups + 8 * groups);
    }
    // Host copy: every token of every layer/head in float32, in 256-token chunks.
    CHECK(report.host_copy == 2 * shape.layers * shape.kv_heads * 256 * shape.head_dim * 4);
    CHECK(report.total() ==
          report.keys.total() + report.values.total() + report.host_copy + report.host_metadata + report.attention_window);
}

TEST_CASE("a 32k-token cache appends, attends and rebalances", "[kv_cache][long]") {
    std::mt19937 rng(16);
    const qaq::kv_cache_shape shape{1, 1, 2, 64, 32768};
    qaq_cache cache(shape, make_keys(), make_values());
    auto k = random_vector(rng, 64), v = random_vector(rng, 64), q = random_vector(rng, 128);
    for (std::int64_t t = 0; t < 32768; ++t) {
        k[t % 64] = float(t % 97) / 97.0f;
        cache.append(0, k.data(), 64, v.data(), 64);
    }
    std::vector<float> out(128), p(2 * 32768);
    cache.attend(0, q.data(), 128, out.data(), 128, p.data(), p.size());
    double sum = 0;
    for (std::int64_t t = 0; t < 32768; ++t) sum += p[static_cast<std::size_t>(t)];
    CHECK(sum == Approx(1.0).epsilon(1e-3));
    cache.observe(0, p.data(), p.size());
    const auto moved = cache.rebalance();
    CHECK(moved.groups_down > 0);  // appended at bits_max, most tokens need fewer bits
    CHECK(cache.tokens() == 32768);
    const auto bytes = cache.bytes().quantized();
    CHECK(bytes.compression_ratio() > 1.5);
    // Full: one more token is refused.
    CHECK_THROWS_WITH(cache.append(0, k.data(), 64, v.data(), 64), Catch::Contains("the cache is full"));
}

TEST_CASE("bad input to the cache raises clear errors", "[kv_cache][bad_input]") {
    const qaq::kv_cache_shape shape{2, 2, 4, 8, 4};
    qaq_cache cache(shape, make_keys(), make_values());
    std::vector<float> kv(16, 0.5f), q(32, 0.1f), out(32), p(4);
    CHECK_NOTHROW(cache.rebalance());  // empty: nothing to do
    CHECK_THROWS_WITH(cache.append(2, kv.data(), 16, kv.data(), 16), Catch::Contains("out of range"));
    CHECK_THROWS_WITH(cache.append(1, kv.data(), 16, kv.data(), 16), Catch::Contains("in order"));
    CHECK_THROWS_WITH(cache.append(0, kv.data(), 15, kv.data(), 16), Catch::Contains("expected kv_heads x head_dim"));
    CHECK_THROWS_WITH(cache.attend(0, q.data(), 32, out.data(), 32, p.data(), 4), Catch::Contains("no tokens"));
    auto bad = kv;
    bad[3] = std::nanf("");
    CHECK_THROWS_WITH(cache.append(0, bad.data(), 16, kv.data(), 16), Catch::Contains("non-finite"));
    cache.append(0, kv.data(), 16, kv.data(), 16);
    CHECK_THROWS_WITH(cache.rebalance(), Catch::Contains("different token counts"));
    CHECK_THROWS_WITH(cache.attend(0, q.data(), 31, out.data(), 32, p.data(), 4), Catch::Contains("query_heads x head_dim"));
    CHECK_THROWS_WITH(cache.attend(0, q.data(), 32, out.data(), 32, p.data(), 3), Catch::Contains("query_heads x tokens"));
    CHECK_THROWS_WITH(cache.observe(0, p.data(), 5), Catch::Contains("query_heads x tokens"));
    std::vector<float> negative(4, -0.5f);
    CHECK_THROWS_WITH(cache.observe(0, negative.data(), 4), Catch::Contains("finite value >= 0"));
    // Groups that span what a decode step produces separately are refused up front.
    CHECK_THROWS_WITH(qaq_cache(shape, make_keys(3, qaq::group_level::layer), make_values()),
                      Catch::Contains("head or sub_head groups"));
    CHECK_THROWS_WITH(qaq_cache({2, 2, 3, 8, 4}, make_keys(), make_values()), Catch::Contains("multiple of kv_heads"));
    // Prefill into a non-empty cache.
    std::vector<float> block(2 * 2 * 1 * 8, 0.5f);
    const auto view = qaq::kv_view<const float>::contiguous(block.data(), {2, 1, 2, 1, 8});
    CHECK_THROWS_WITH(cache.prefill(view, view), Catch::Contains("empty cache"));
}

TEST_CASE("a cache of dynamic quantizers behaves exactly like the compiled one", "[kv_cache][dynamic]") {
    const qaq::kv_cache_shape shape{2, 2, 4, 32, 100};
    qaq::quantizer_config keys;
    keys.role = qaq::cache_role::key;
    keys.bits = qaq::bits_kind::key_query_norm;
    keys.q_norm = 20.0, keys.target_error = 0.05, keys.bits_min = bits_min, keys.bits_max = bits_max, keys.window = 3;
    keys.outlier_ratio = 0.05, keys.codec = qaq::codec_kind::uniform_zero_point;
    qaq::quantizer_config values = keys;
    values.role = qaq::cache_role::value;
    values.bits = qaq::bits_kind::value_attention;
    values.target_error = 0.02;
    qaq::quantized_kv_cache<qaq::dynamic_quantizer, qaq::dynamic_quantizer> dynamic(
        shape, qaq::dynamic_quantizer(keys), qaq::dynamic_quantizer(values));
    qaq_cache compiled(shape, make_keys(), make_values());
    std::mt19937 rng_a(21), rng_b(21);
    for (int step = 0; step < 30; ++step) {
        // decode_step takes the compiled type; replay the same random stream by hand for the dynamic one.
        decode_step(compiled, rng_a);
        for (std::int64_t l = 0; l < shape.layers; ++l) {
            auto k = random_vector(rng_b, shape.kv_heads * shape.head_dim);
            auto v = random_vector(rng_b, shape.kv_heads * shape.head_dim);
            auto q = random_vector(rng_b, shape.query_heads * shape.head_dim, 2.0f);
            dynamic.append(l, k.data(), k.size(), v.data(), v.size());
            std::vector<float> out(q.size()), p(static_cast<std::size_t>(shape.query_heads * dynamic.tokens(l)));
            dynamic.attend(l, q.data(), q.size(), out.data(), out.size(), p.data(), p.size());
            dynamic.observe(l, p.data(), p.size());
        }
        dynamic.rebalance();
    }
    for (std::int64_t l = 0; l < shape.layers; ++l)
        for (auto role : {qaq::cache_role::key, qaq::cache_role::value}) {
            CHECK(dynamic.widths(l, role) == compiled.widths(l, role));
            std::vector<float> a(static_cast<std::size_t>(shape.kv_heads * 30 * shape.head_dim)), b(a.size());
            dynamic.dequantize(l, role, a.data(), a.size());
            compiled.dequantize(l, role, b.data(), b.size());
            CHECK(a == b);
        }
    CHECK(dynamic.bytes().quantized().used() == compiled.bytes().quantized().used());
}

TEST_CASE("a disabled config stores an FP16 cache", "[kv_cache][dynamic]") {
    const qaq::kv_cache_shape shape{1, 1, 1, 8, 4};
    qaq::quantizer_config off;
    off.enabled = false;
    qaq::quantized_kv_cache<qaq::dynamic_quantizer, qaq::dynamic_quantizer> cache(shape, qaq::dynamic_quantizer(off),
                                                                                  qaq::dynamic_quantizer(off));
    const std::vector<float> k = {0.1f, -2.5f, 3.3333f, 1e-3f, 7.0f, 8.0f, -9.0f, 0.0f};
    cache.append(0, k.data(), 8, k.data(), 8);
    std::vector<float> out(8);
    cache.dequantize(0, qaq::cache_role::key, out.data(), 8);
    for (int i = 0; i < 8; ++i) CHECK(out[i] == qaq::round_to(qaq::storage_precision::fp16, k[i]));
    CHECK(cache.widths(0, qaq::cache_role::value) == std::vector<int>{16});
    const auto bytes = cache.bytes().quantized();
    CHECK(bytes.codes == 2 * 8 * 2);  // keys and values: 8 values x 2 bytes each
    CHECK(bytes.parameters == 0);
    CHECK(cache.accounting(qaq::cache_role::key).average_bits == 16.0);
    std::vector<float> huge = k;
    huge[0] = 1e6f;
    qaq::quantized_kv_cache<qaq::dynamic_quantizer, qaq::dynamic_quantizer> other(shape, qaq::dynamic_quantizer(off),
                                                                                  qaq::dynamic_quantizer(off));
    CHECK_THROWS_WITH(other.append(0, huge.data(), 8, k.data(), 8), Catch::Contains("do not fit an FP16 cache"));
}

TEST_CASE("a refused token leaves no trace in either cache", "[kv_cache][bad_input]") {
    // Values beyond an FP16 cache are refused after the keys were fine: nothing may be stored.
    const qaq::kv_cache_shape shape{1, 1, 1, 2, 4};
    qaq::quantizer_config off;
    off.enabled = false;
    qaq::quantized_kv_cache<qaq::dynamic_quantizer, qaq::dynamic_quantizer> cache(shape, qaq::dynamic_quantizer(off),
                                                                                  qaq::dynamic_quantizer(off));
    const std::vector<float> ones = {1, 1}, fives = {5, 5}, huge = {1e6f, 1e6f};
    CHECK_THROWS_WITH(cache.append(0, ones.data(), 2, huge.data(), 2), Catch::Contains("do not fit an FP16 cache"));
    CHECK(cache.tokens() == 0);
    cache.append(0, fives.data(), 2, fives.data(), 2);
    std::vector<float> keys(2);
    cache.dequantize(0, qaq::cache_role::key, keys.data(), 2);
    CHECK(keys == fives);
}
