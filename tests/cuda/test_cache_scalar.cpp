// The device cache's per-element arithmetic (backend/cuda/cache_scalar.cuh),
// compiled as plain C++ and checked against the host cache's own code: window
// rows and predicted attention against qaq::attention_window, new widths
// against the bits policies' operator(). Exact equality; no GPU needed.

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "cuda_test_support.hpp"
#include "qaq/attention_window.hpp"
#include "qaq/backend/cuda/cache_scalar.cuh"
#include "qaq/backend/cuda/scalar_core.cuh"
#include "qaq/policy/bits/key_query_norm.hpp"
#include "qaq/policy/bits/value_attention.hpp"

namespace {

namespace qd = qaq::cuda::detail;
using qaq_cuda_test::softmax_rows;

/// The device window of `layers` layers as cache_kernels.cuh keeps it, filled through window_entry.
struct device_window {
    std::int64_t layers, kv_heads, query_heads, max_tokens;
    int window;
    std::vector<float> rows;
    std::vector<std::int64_t> lengths;
    std::vector<std::int64_t> observed;

    device_window(std::int64_t l, std::int64_t h, std::int64_t hq, std::int64_t max_t, int w)
        : layers(l), kv_heads(h), query_heads(hq), max_tokens(max_t), window(w),
          rows(static_cast<std::size_t>(l * w * max_t * h), -1.0f),  // stale garbage beyond each row's length
          lengths(static_cast<std::size_t>(l * w), 0),
          observed(static_cast<std::size_t>(l), 0) {}

    unsigned int observe(std::int64_t layer, const std::vector<float>& p, std::int64_t tokens) {
        const std::int64_t slot = layer * window + observed[static_cast<std::size_t>(layer)]++ % window;
        unsigned int invalid = 0;
        for (std::int64_t i = 0; i < tokens * kv_heads; ++i)
            rows[static_cast<std::size_t>(slot * max_tokens * kv_heads + i)] =
                qd::window_entry(p.data(), query_heads, kv_heads, tokens, i, invalid);
        lengths[static_cast<std::size_t>(slot)] = tokens;
        return invalid;
    }
    qd::width_scan scan() const {
        qd::width_scan s;
        s.window_rows = rows.data();
        s.row_lengths = lengths.data();
        s.window = window;
        s.max_tokens = max_tokens;
        s.kv_heads = kv_heads;
        s.layers = layers;
        return s;
    }
};

}  // namespace

TEST_CASE("cache scalar: window rows and predicted attention equal attention_window's", "[cache_scalar]") {
    std::mt19937 rng(5);
    for (const int window : {1, 3, 5}) {
        for (const std::int64_t per_kv : {1, 4}) {
            const std::int64_t layers = 2, H = 3, Hq = H * per_kv, max_tokens = 24;
            qaq::attention_window host(layers, H, Hq, window);
            device_window device(layers, H, Hq, max_tokens, window);
            // Rows of growing length, as decode steps make them: each must be covered only where it reaches.
            for (std::int64_t T = 1; T <= 12; ++T)
                for (std::int64_t l = 0; l < layers; ++l) {
                    const std::vector<float> p = softmax_rows(rng, Hq, T, 2.0f);
                    host.observe(l, p.data(), T);
                    REQUIRE(device.observe(l, p, T) == 0);
                    const qd::width_scan scan = device.scan();
                    for (std::int64_t t = 0; t < max_tokens; ++t)
                        for (std::int64_t h = 0; h < H; ++h) {
                            INFO("window " << window << ", T " << T << ", layer " << l << ", token " << t << ", head " << h);
                            REQUIRE(qd::window_predicted(scan, l, t, h) == host.predicted(l, t, h));
                        }
                }
        }
    }
}

TEST_CASE("cache scalar: invalid probabilities are counted and skipped", "[cache_scalar]") {
    const std::vector<float> p = {0.25f, -0.5f, std::numeric_limits<float>::quiet_NaN(), 0.75f,  // query head 0
                                  0.5f,  0.1f,  std::numeric_limits<float>::infinity(), 0.125f};  // query head 1
    unsigned int invalid = 0;
    // One KV head read by two query heads, four tokens.
    CHECK(qd::window_entry(p.data(), 2, 1, 4, 0, invalid) == 0.5f);
    CHECK(qd::window_entry(p.data(), 2, 1, 4, 1, invalid) == 0.1f);
    CHECK(qd::window_entry(p.data(), 2, 1, 4, 2, invalid) == 0.0f);
    CHECK(qd::window_entry(p.data(), 2, 1, 4, 3, invalid) == 0.75f);
    CHECK(invalid == 3);
}

TEST_CASE("cache scalar: new widths equal the bits policies' and carry their group index", "[cache_scalar]") {
    std::mt19937 rng(9);
    std::lognormal_distribution<float> range(0.0f, 1.5f);
    const std::int64_t layers = 2, H = 2, Hq = 4, S = 2, max_tokens = 40, T = 30, window = 5;
    const std::int64_t per_token = H * S, layer_groups = max_tokens * per_token;
    device_window device(layers, H, Hq, max_tokens, window);
    qaq::attention_window host(layers, H, Hq, window);
    for (std::int64_t step = 0; step < 7; ++step)  // more rows than the window holds
        for (std::int64_t l = 0; l < layers; ++l) {
            const std::int64_t tokens = T - 6 + step < T ? T - 6 + step : T;
            const std::vector<float> p = softmax_rows(rng, Hq, tokens, 2.0f);
            host.observe(l, p.data(), tokens);
            device.observe(l, p, tokens);
        }
    std::vector<float> ranges(static_cast<std::size_t>(layers * layer_groups));
    for (auto& r : ranges) r = range(rng);
    ranges[3] = 0.0f;
    ranges[7] = std::numeric_limits<float>::infinity();
    std::vector<std::uint8_t> stored(ranges.size());
    for (auto& w : stored) w = static_cast<std::uint8_t>(std::uniform_int_distribution<int>(2, 8)(rng));

    const qaq::bits::value_attention values(window, 0.1, 2, 8);
    const qaq::bits::key_query_norm keys(40.0, 0.01, 2, 8, window);
    qd::width_scan scan = device.scan();
    scan.widths = stored.data();
    scan.ranges = ranges.data();
    scan.tokens = T;
    scan.groups_per_head = S;
    scan.layer_groups = layer_groups;
    auto check = [&](const auto& policy, bool reads_attention) {
        qd::width_scan s = scan;
        if (!reads_attention) s.window_rows = nullptr;
        const auto device_bits = qaq::cuda::to_device_bits(policy, T);
        std::int64_t changed_count = 0;
        for (std::int64_t j = 0; j < layers * T * per_token; ++j) {
            const std::int64_t l = j / (T * per_token), within = j % (T * per_token);
            const std::int64_t t = within / per_token, h = (within % per_token) / S, g = l * layer_groups + within;
            qaq::bits::context c;
            c.range = ranges[static_cast<std::size_t>(g)];
            c.predicted_attention = reads_attention ? host.predicted(l, t, h) : 0.0f;
            c.tokens = T;
            c.token = t;
            const int expected = policy(c);
            bool changed = false;
            const std::uint64_t item = qd::width_item(device_bits, s, j, changed);
            INFO("group " << g);
            REQUIRE(static_cast<std::int64_t>(item >> 8) == g);
            REQUIRE(static_cast<int>(item & 0xFF) == expected);
            REQUIRE(changed == (expected != stored[static_cast<std::size_t>(g)]));
            changed_count += changed ? 1 : 0;
        }
        CHECK(changed_count > 0);
    };
    check(values, true);
    check(keys, false);
}
