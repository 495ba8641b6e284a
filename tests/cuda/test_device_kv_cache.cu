// device_kv_cache against the host cache (quantized_kv_cache with
// dynamic_quantizer) step by step: the same prefill, the same appended tokens
// and the same observed attention rows must give the same widths after every
// rebalance, the same re-quantization counters, the same reconstruction (to
// float rounding) and the same code and parameter bytes; attend over the
// device codes must match the host attend. Then bad input and the deferred checks.

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_support.hpp"
#include "qaq/backend/cuda/device_kv_cache.cuh"
#include "qaq/dynamic_quantizer.hpp"
#include "qaq/kv_cache.hpp"

namespace {

using namespace qaq_cuda_test;
using host_cache = qaq::quantized_kv_cache<qaq::dynamic_quantizer, qaq::dynamic_quantizer>;

/// QAQ's formulas for one role: 2..8 bits, window 3, 2% outliers, zero-point codec.
qaq::quantizer_config qaq_role(qaq::cache_role role) {
    qaq::quantizer_config c;
    c.role = role;
    c.bits = role == qaq::cache_role::key ? qaq::bits_kind::key_query_norm : qaq::bits_kind::value_attention;
    c.q_norm = 30.0;
    c.target_error = 0.2;
    c.bits_min = 2;
    c.bits_max = 8;
    c.window = 3;
    c.outlier_ratio = 0.02;
    c.codec = qaq::codec_kind::uniform_zero_point;
    return c;
}
qaq::quantizer_config qaq_keys() { return qaq_role(qaq::cache_role::key); }
qaq::quantizer_config qaq_values() { return qaq_role(qaq::cache_role::value); }
qaq::quantizer_config sub_head_mean_centred() {
    qaq::quantizer_config c = qaq_values();
    c.codec = qaq::codec_kind::uniform_mean_centred;
    c.precision = qaq::storage_precision::fp32;
    c.level = qaq::group_level::sub_head;
    c.group_dims = 16;
    c.outlier_ratio = 0.0;
    return c;
}

std::vector<float> draw(std::mt19937& rng, std::int64_t n, float scale = 1.0f) {
    std::normal_distribution<float> normal(0.1f, scale);
    std::vector<float> x(static_cast<std::size_t>(n));
    for (auto& v : x) v = normal(rng);
    for (std::size_t i = 0; i < x.size(); i += 53) x[i] *= 12.0f;  // quantile outliers
    return x;
}

/// Device and host reconstructions each lie within 4 float epsilons of the reference's.
bool close_to_host(float got, float expected) {
    return std::fabs(got - expected) <= 8 * std::numeric_limits<float>::epsilon() * (std::fabs(expected) + 1.0f);
}

struct device_vector {
    qaq::cuda::device_buffer buffer;
    explicit device_vector(const std::vector<float>& host)
        : buffer(qaq::cuda::device_buffer::from_host(host.data(), host.size())) {}
    explicit device_vector(std::size_t count) : buffer(sizeof(float) * count) {}
    float* get() const { return buffer.as<float>(); }
};

void check_same_state(host_cache& host, qaq::cuda::device_kv_cache& device) {
    for (std::int64_t l = 0; l < host.shape().layers; ++l)
        for (const auto role : {qaq::cache_role::key, qaq::cache_role::value}) {
            INFO("layer " << l << ", " << qaq::to_string(role));
            REQUIRE(device.widths(l, role) == host.widths(l, role));
            const std::int64_t count = host.shape().kv_heads * host.tokens(l) * host.shape().head_dim;
            std::vector<float> expected(static_cast<std::size_t>(count));
            host.dequantize(l, role, expected.data(), count);
            const std::vector<float> got = device.dequantize(l, role);
            REQUIRE(got.size() == expected.size());
            for (std::size_t i = 0; i < got.size(); ++i) {
                INFO("element " << i);
                REQUIRE(close_to_host(got[i], expected[i]));
            }
        }
    const qaq::kv_cache_byte_report h = host.bytes(), d = device.bytes();
    CHECK(d.keys.codes == h.keys.codes);
    CHECK(d.values.codes == h.values.codes);
    CHECK(d.keys.parameters == h.keys.parameters);
    CHECK(d.values.parameters == h.values.parameters);
    CHECK(d.keys.widths == h.keys.widths);
    CHECK(d.keys.elements == h.keys.elements);
}

void run_protocol(const qaq::quantizer_config& keys, const qaq::quantizer_config& values, std::uint32_t seed) {
    std::mt19937 rng(seed);
    const qaq::kv_cache_shape shape{2, 2, 4, 64, 64};
    const std::int64_t L = shape.layers, H = shape.kv_heads, Hq = shape.query_heads, D = shape.head_dim;
    host_cache host(shape, qaq::dynamic_quantizer(keys), qaq::dynamic_quantizer(values));
    qaq::cuda::device_kv_cache device(shape, keys, values);

    // Prefill of 24 tokens with 4 attention rows.
    const std::int64_t T0 = 24;
    const qaq::kv_shape kv{L, 1, H, T0, D};
    const std::vector<float> k0 = draw(rng, kv.element_count()), v0 = draw(rng, kv.element_count());
    const qaq::attention_shape rows{L, 1, Hq, 4, T0};
    const std::vector<float> attention = draw_attention(rng, rows);
    const auto kview = qaq::kv_view<const float>::contiguous(k0.data(), kv);
    const auto vview = qaq::kv_view<const float>::contiguous(v0.data(), kv);
    const auto aview = qaq::attention_view<const float>::contiguous(attention.data(), rows);
    host.prefill(kview, vview, aview);
    device.prefill(kview, vview, aview);
    check_same_state(host, device);

    // Decode steps: the same tokens, the host's probabilities observed by both.
    std::int64_t ups = 0, downs = 0;
    for (int step = 0; step < 12; ++step) {
        for (std::int64_t l = 0; l < L; ++l) {
            const std::vector<float> k = draw(rng, H * D), v = draw(rng, H * D), q = draw(rng, Hq * D, 0.5f);
            host.append(l, k.data(), H * D, v.data(), H * D);
            const device_vector dk(k), dv(v), dq(q);
            device.append(l, dk.get(), H * D, dv.get(), H * D);
            const std::int64_t T = host.tokens(l);
            REQUIRE(device.tokens(l) == T);

            std::vector<float> out(static_cast<std::size_t>(Hq * D)), p(static_cast<std::size_t>(Hq * T));
            host.attend(l, q.data(), Hq * D, out.data(), Hq * D, p.data(), Hq * T);
            const device_vector dout(static_cast<std::size_t>(Hq * D)), dp(static_cast<std::size_t>(Hq * T));
            device.attend(l, dq.get(), Hq * D, dout.get(), Hq * D, dp.get(), Hq * T);
            const std::vector<float> got_out = dout.buffer.to_host<float>(out.size());
            const std::vector<float> got_p = dp.buffer.to_host<float>(p.size());
            for (std::size_t i = 0; i < out.size(); ++i)
                REQUIRE(std::fabs(got_out[i] - out[i]) <= 1e-4f * (1.0f + std::fabs(out[i])));
            for (std::size_t i = 0; i < p.size(); ++i) REQUIRE(std::fabs(got_p[i] - p[i]) <= 2e-6f + 1e-4f * p[i]);

            // A sharper row than attend's, so that widths change in both directions.
            const std::vector<float> row = softmax_rows(rng, Hq, T, 2.5f);
            host.observe(l, row.data(), Hq * T);
            const device_vector drow(row);
            device.observe(l, drow.get(), Hq * T);
        }
        const qaq::rebalance_counters h = host.rebalance(), d = device.rebalance();
        INFO("step " << step);
        REQUIRE(d.groups_up == h.groups_up);
        REQUIRE(d.groups_down == h.groups_down);
        REQUIRE(d.host_bytes_read == h.host_bytes_read);
        ups += h.groups_up, downs += h.groups_down;
        if (step % 4 == 3) check_same_state(host, device);
    }
    CHECK(ups > 0);  // the protocol really moved groups
    CHECK(downs > 0);
    check_same_state(host, device);
}

}  // namespace

TEST_CASE("device cache: QAQ keys and values follow the host cache step by step", "[device_kv_cache]") {
    run_protocol(qaq_keys(), qaq_values(), 11);
}

TEST_CASE("device cache: sub_head mean-centred fp32 groups without outliers follow the host cache",
          "[device_kv_cache]") {
    run_protocol(qaq_keys(), sub_head_mean_centred(), 12);
}

TEST_CASE("device cache: fixed widths, 0-bit values included, attend as the host cache", "[device_kv_cache]") {
    qaq::quantizer_config keys, values;
    keys.fixed_bits = 4;
    values.fixed_bits = 0;  // every value group holds no codes: the arena holds nothing
    const qaq::kv_cache_shape shape{2, 1, 2, 32, 8};
    const std::int64_t H = shape.kv_heads, Hq = shape.query_heads, D = shape.head_dim;
    host_cache host(shape, qaq::dynamic_quantizer(keys), qaq::dynamic_quantizer(values));
    qaq::cuda::device_kv_cache device(shape, keys, values);
    std::mt19937 rng(21);
    for (int step = 0; step < 3; ++step) {
        for (std::int64_t l = 0; l < shape.layers; ++l) {
            const std::vector<float> k = draw(rng, H * D), v = draw(rng, H * D), q = draw(rng, Hq * D, 0.5f);
            host.append(l, k.data(), H * D, v.data(), H * D);
            const device_vector dk(k), dv(v), dq(q);
            device.append(l, dk.get(), H * D, dv.get(), H * D);
            const std::int64_t T = host.tokens(l);
            std::vector<float> out(static_cast<std::size_t>(Hq * D)), p(static_cast<std::size_t>(Hq * T));
            host.attend(l, q.data(), Hq * D, out.data(), Hq * D, p.data(), Hq * T);
            const device_vector dout(static_cast<std::size_t>(Hq * D)), dp(static_cast<std::size_t>(Hq * T));
            device.attend(l, dq.get(), Hq * D, dout.get(), Hq * D, dp.get(), Hq * T);
            const std::vector<float> got = dout.buffer.to_host<float>(out.size());
            for (std::size_t i = 0; i < out.size(); ++i) REQUIRE(std::fabs(got[i] - out[i]) <= 1e-4f * (1.0f + std::fabs(out[i])));
            device.observe(l, dp.get(), Hq * T);
        }
        const qaq::rebalance_counters c = device.rebalance();
        CHECK(c.groups_up + c.groups_down == 0);  // fixed widths never move
    }
    check_same_state(host, device);
    CHECK(device.bytes().values.codes == 0);
}

TEST_CASE("device cache: bad input is refused, device-side conditions surface at the next wait", "[device_kv_cache]") {
    const qaq::kv_cache_shape shape{2, 2, 4, 32, 8};
    const std::int64_t H = shape.kv_heads, D = shape.head_dim, Hq = shape.query_heads;
    std::mt19937 rng(3);
    const device_vector k(draw(rng, H * D)), v(draw(rng, H * D)), q(draw(rng, Hq * D));
    const device_vector out(static_cast<std::size_t>(Hq * D)), p(static_cast<std::size_t>(Hq * 8));

    SECTION("shapes, order and capacity") {
        qaq::cuda::device_kv_cache cache(shape, qaq_keys(), qaq_values());
        CHECK_THROWS_WITH(cache.append(0, k.get(), H * D - 1, v.get(), H * D), Catch::Contains("kv_heads x head_dim"));
        CHECK_THROWS_WITH(cache.append(1, k.get(), H * D, v.get(), H * D), Catch::Contains("in order"));
        CHECK_THROWS_WITH(cache.append(2, k.get(), H * D, v.get(), H * D), Catch::Contains("out of range"));
        CHECK_THROWS_WITH(cache.attend(0, q.get(), Hq * D, out.get(), Hq * D, p.get(), Hq),
                          Catch::Contains("no tokens"));
        cache.append(0, k.get(), H * D, v.get(), H * D);
        CHECK_THROWS_WITH(cache.rebalance(), Catch::Contains("between layers"));
        CHECK_THROWS_WITH(cache.attend(0, q.get(), Hq * D, out.get(), Hq * D, p.get(), Hq * 2),
                          Catch::Contains("query_heads x tokens"));
        cache.append(1, k.get(), H * D, v.get(), H * D);
        for (int t = 1; t < 8; ++t)
            for (int l = 0; l < 2; ++l) cache.append(l, k.get(), H * D, v.get(), H * D);
        CHECK_THROWS_WITH(cache.append(0, k.get(), H * D, v.get(), H * D), Catch::Contains("full"));
        CHECK_NOTHROW(cache.rebalance());
    }
    SECTION("unsupported configurations") {
        qaq::quantizer_config normal = qaq_keys();
        normal.codec = qaq::codec_kind::normal;
        CHECK_THROWS_WITH(qaq::cuda::device_kv_cache(shape, normal, qaq_values()), Catch::Contains("not supported"));
        qaq::quantizer_config token = qaq_keys();
        token.level = qaq::group_level::token;
        CHECK_THROWS_WITH(qaq::cuda::device_kv_cache(shape, token, qaq_values()), Catch::Contains("head or sub_head"));
        CHECK_THROWS_WITH(qaq::cuda::device_kv_cache(shape, qaq_keys(), qaq_values(), {qaq::downgrade_source::codes}),
                          Catch::Contains("host_copy"));
    }
    SECTION("a NaN key is reported at the next rebalance, then the cache refuses every call") {
        qaq::cuda::device_kv_cache cache(shape, qaq_keys(), qaq_values());
        std::vector<float> bad = draw(rng, H * D);
        bad[5] = std::nanf("");
        const device_vector dbad(bad);
        cache.append(0, dbad.get(), H * D, v.get(), H * D);
        cache.append(1, k.get(), H * D, v.get(), H * D);
        CHECK_THROWS_WITH(cache.rebalance(), Catch::Contains("non-finite"));
        CHECK_THROWS_WITH(cache.append(0, k.get(), H * D, v.get(), H * D), Catch::Contains("earlier failure"));
    }
    SECTION("negative probabilities are reported at synchronize()") {
        qaq::cuda::device_kv_cache cache(shape, qaq_keys(), qaq_values());
        cache.append(0, k.get(), H * D, v.get(), H * D);
        std::vector<float> row(static_cast<std::size_t>(Hq), 0.25f);
        row[1] = -0.5f;
        const device_vector drow(row);
        cache.observe(0, drow.get(), Hq);
        CHECK_THROWS_WITH(cache.synchronize(), Catch::Contains("probabilities"));
    }
    SECTION("a refused prefill leaves the cache empty and usable") {
        qaq::cuda::device_kv_cache cache(shape, qaq_keys(), qaq_values());
        const qaq::kv_shape kv{2, 1, H, 4, D};
        std::vector<float> big = draw(rng, kv.element_count());
        big[3] = 1e6f;  // an outlier beyond fp16
        const std::vector<float> fine = draw(rng, kv.element_count());
        const qaq::attention_shape rows{2, 1, Hq, 2, 4};
        const std::vector<float> attention = draw_attention(rng, rows);
        const auto aview = qaq::attention_view<const float>::contiguous(attention.data(), rows);
        CHECK_THROWS_WITH(cache.prefill(qaq::kv_view<const float>::contiguous(big.data(), kv),
                                        qaq::kv_view<const float>::contiguous(fine.data(), kv), aview),
                          Catch::Contains("fp16"));
        CHECK(cache.tokens(0) == 0);
        CHECK_NOTHROW(cache.prefill(qaq::kv_view<const float>::contiguous(fine.data(), kv),
                                    qaq::kv_view<const float>::contiguous(fine.data(), kv), aview));
        CHECK(cache.tokens(1) == 4);
    }
}
