// attend() over packed codes and exact outliers against a double-precision
// attention over the reference-dequantized cache (docs/method.md), with
// grouped-query attention, head and sub_head groups, and enough tokens to be
// split across blocks. attend_dense() against the same double attention.

#include <cuda_fp16.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "cuda_test_support.hpp"
#include "qaq/backend/cuda/device_api.cuh"
#include "qaq/reference/quantize.hpp"

namespace {

using namespace qaq_cuda_test;

struct attend_case {
    std::int64_t kv_heads, query_heads, tokens, head_dim;
    qaq::quantizer_config keys, values;
};

/// Normal values with a few large ones, so that quantile outliers exist.
std::vector<float> draw_cache(std::mt19937& rng, std::int64_t n) {
    std::normal_distribution<float> normal(0.2f, 1.0f);
    std::vector<float> x(static_cast<std::size_t>(n));
    for (auto& v : x) v = normal(rng);
    for (std::size_t i = 0; i < x.size(); i += 97) x[i] *= 20.0f;
    return x;
}

void check_attend(const attend_case& c, std::mt19937& rng) {
    const std::int64_t H = c.kv_heads, Hq = c.query_heads, T = c.tokens, D = c.head_dim;
    const qaq::kv_shape shape{1, 1, H, T, D};
    const std::vector<float> keys = draw_cache(rng, shape.element_count());
    const std::vector<float> values = draw_cache(rng, shape.element_count());
    std::vector<float> queries(static_cast<std::size_t>(Hq * D));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto& q : queries) q = normal(rng);
    const qaq::attention_shape attention_shape{1, 1, Hq, 4, T};
    const std::vector<float> attention = draw_attention(rng, attention_shape);
    const auto att = qaq::attention_view<const float>::contiguous(attention.data(), attention_shape);

    // The oracle: the reference's reconstruction, attention in double.
    const auto key_view = qaq::kv_view<const float>::contiguous(keys.data(), shape);
    const auto value_view = qaq::kv_view<const float>::contiguous(values.data(), shape);
    const qaq::reference::result expected_keys = qaq::reference::quantize(c.keys, key_view, att);
    const qaq::reference::result expected_values = qaq::reference::quantize(c.values, value_view, att);
    std::vector<double> expected_output, expected_probabilities;
    reference_attention(expected_keys.dequantized, expected_values.dequantized, queries, H, Hq, T, D, expected_output,
                        expected_probabilities);

    // The device: one layer [H, T, D] per role, group (h, t, s) = row (h * T + t) * S + s.
    auto quantize = [&](const qaq::quantizer_config& config, const std::vector<float>& data) {
        const std::int64_t group_size = config.level == qaq::group_level::sub_head ? config.group_dims : D;
        const std::int64_t per_token = D / group_size, groups = H * T * per_token;
        std::vector<float> predicted;
        if (config.bits == qaq::bits_kind::value_attention) {
            const std::vector<float> p = qaq::predicted_attention(att, shape, config.window);
            predicted.resize(static_cast<std::size_t>(groups));
            for (std::int64_t h = 0; h < H; ++h)
                for (std::int64_t t = 0; t < T; ++t)
                    for (std::int64_t s = 0; s < per_token; ++s)
                        predicted[static_cast<std::size_t>((h * T + t) * per_token + s)] =
                            p[static_cast<std::size_t>(qaq::predicted_attention_index(shape, 0, t, 0, h))];
        }
        const qaq::cuda::device_quantizer device(config);
        auto packed = device.quantize(data.data(), groups, group_size, {T, per_token},
                                      predicted.empty() ? nullptr : predicted.data());
        return packed;
    };
    const qaq::cuda::device_packed_groups packed_keys = quantize(c.keys, keys);
    const qaq::cuda::device_packed_groups packed_values = quantize(c.values, values);

    // Same widths as the reference (whose group order is (t, h, s)), same reconstruction.
    auto check_role = [&](const qaq::quantizer_config& config, const qaq::cuda::device_packed_groups& packed,
                          const qaq::reference::result& expected) {
        const std::int64_t per_token = D / packed.group_size;
        const auto widths = packed.widths.to_host<std::uint8_t>(static_cast<std::size_t>(packed.groups));
        for (std::int64_t h = 0; h < H; ++h)
            for (std::int64_t t = 0; t < T; ++t)
                for (std::int64_t s = 0; s < per_token; ++s)
                    REQUIRE(widths[static_cast<std::size_t>((h * T + t) * per_token + s)] ==
                            expected.bits[static_cast<std::size_t>((t * H + h) * per_token + s)]);
        const std::vector<float> reconstructed = qaq::cuda::device_quantizer(config).dequantize(packed);
        for (std::size_t i = 0; i < reconstructed.size(); ++i)
            REQUIRE(close_to_reference(reconstructed[i], expected.dequantized[i]));
    };
    check_role(c.keys, packed_keys, expected_keys);
    check_role(c.values, packed_values, expected_values);

    const qaq::cuda::attend_shape attend{T, H, Hq, D};
    std::vector<float> output(static_cast<std::size_t>(Hq * D)), probabilities(static_cast<std::size_t>(Hq * T));
    qaq::cuda::attend_layer(packed_keys, packed_values, attend, queries.data(), output.data(), probabilities.data());

    double value_scale = 1.0;
    for (float v : expected_values.dequantized) value_scale = std::max(value_scale, std::fabs(static_cast<double>(v)));
    for (std::size_t i = 0; i < output.size(); ++i) {
        INFO("output " << i);
        REQUIRE(std::fabs(output[i] - expected_output[i]) <= 1e-4 * value_scale);
    }
    for (std::size_t i = 0; i < probabilities.size(); ++i) {
        INFO("probability " << i);
        REQUIRE(std::fabs(probabilities[i] - expected_probabilities[i]) <= 2e-6 + 1e-4 * expected_probabilities[i]);
    }
    // Without probabilities the output is the same.
    std::vector<float> output_only(output.size());
    qaq::cuda::attend_layer(packed_keys, packed_values, attend, queries.data(), output_only.data());
    REQUIRE(output_only == output);
}

qaq::quantizer_config fixed_config(int bits, qaq::codec_kind codec, bool symmetric, qaq::storage_precision precision,
                                   double outlier_ratio) {
    qaq::quantizer_config c;
    c.codec = codec;
    c.symmetric = symmetric;
    c.precision = precision;
    c.outlier_ratio = outlier_ratio;
    c.fixed_bits = bits;
    return c;
}

}  // namespace

TEST_CASE("attend over packed codes equals double attention over the reference reconstruction", "[cuda][attend]") {
    std::mt19937 rng(42);
    using qaq::codec_kind;
    using qaq::storage_precision;

    SECTION("head groups, adaptive bits, quantile outliers, GQA 4") {
        attend_case c{2, 8, 300, 128, {}, {}};
        c.keys.role = qaq::cache_role::key;
        c.keys.bits = qaq::bits_kind::key_query_norm;
        c.keys.codec = codec_kind::uniform_zero_point;
        c.keys.outlier_ratio = 0.02;
        c.keys.bits_min = 2;
        c.keys.bits_max = 8;
        c.keys.window = 3;
        c.keys.q_norm = 3.0;
        c.keys.target_error = 0.05;
        c.values.role = qaq::cache_role::value;
        c.values.bits = qaq::bits_kind::value_attention;
        c.values.codec = codec_kind::uniform_mean_centred;
        c.values.symmetric = true;
        c.values.precision = storage_precision::fp32;
        c.values.outlier_ratio = 0.01;
        c.values.bits_min = 1;
        c.values.bits_max = 6;
        c.values.window = 3;
        c.values.target_error = 0.02;
        check_attend(c, rng);
    }
    SECTION("sub_head groups of 32, fixed 4 bits, one head") {
        attend_case c{1, 1, 1000, 64, fixed_config(4, codec_kind::uniform_zero_point, false, storage_precision::fp16, 0.0),
                      fixed_config(4, codec_kind::uniform_mean_centred, false, storage_precision::fp16, 0.0)};
        c.keys.level = c.values.level = qaq::group_level::sub_head;
        c.keys.group_dims = c.values.group_dims = 32;
        check_attend(c, rng);
    }
    SECTION("head_dim 256, 8 query heads per KV head, 16-bit keys and 0-bit values") {
        attend_case c{2, 16, 40, 256, fixed_config(16, codec_kind::uniform_zero_point, false, storage_precision::fp32, 0.05),
                      fixed_config(0, codec_kind::uniform_mean_centred, false, storage_precision::fp16, 0.05)};
        check_attend(c, rng);
    }
    SECTION("many tokens: the split-K merge") {
        attend_case c{1, 4, 20000, 128, fixed_config(4, codec_kind::uniform_zero_point, false, storage_precision::fp16, 0.01),
                      fixed_config(4, codec_kind::uniform_zero_point, true, storage_precision::fp16, 0.01)};
        check_attend(c, rng);
    }
    SECTION("head_dim 96 (idle lanes) and groups of 3 dims (a lane spans groups)") {
        attend_case c{3, 6, 77, 96, fixed_config(5, codec_kind::uniform_zero_point, false, storage_precision::fp16, 0.1),
                      fixed_config(3, codec_kind::uniform_mean_centred, false, storage_precision::fp16, 0.0)};
        c.keys.level = qaq::group_level::sub_head;
        c.keys.group_dims = 3;
        c.values.level = qaq::group_level::sub_head;
        c.values.group_dims = 16;
        check_attend(c, rng);
    }
}

TEST_CASE("attend_dense over an fp16 cache equals double attention", "[cuda][attend]") {
    std::mt19937 rng(8);
    const std::int64_t H = 2, Hq = 4, T = 3000, D = 128;
    std::vector<float> keys = draw_cache(rng, H * T * D), values = draw_cache(rng, H * T * D);
    std::vector<__half> keys_half(keys.size()), values_half(values.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
        keys_half[i] = __float2half_rn(keys[i]);
        keys[i] = __half2float(keys_half[i]);
        values_half[i] = __float2half_rn(values[i]);
        values[i] = __half2float(values_half[i]);
    }
    std::vector<float> queries(static_cast<std::size_t>(Hq * D));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto& q : queries) q = normal(rng);
    std::vector<double> expected_output, expected_probabilities;
    reference_attention(keys, values, queries, H, Hq, T, D, expected_output, expected_probabilities);

    using qaq::cuda::device_buffer;
    const device_buffer k = device_buffer::from_host(keys_half.data(), keys_half.size());
    const device_buffer v = device_buffer::from_host(values_half.data(), values_half.size());
    const device_buffer q = device_buffer::from_host(queries.data(), queries.size());
    const device_buffer out(sizeof(float) * Hq * D), p(sizeof(float) * Hq * T);
    const qaq::cuda::attend_shape shape{T, H, Hq, D};
    std::size_t bytes = 0;
    REQUIRE(qaq::cuda::attend_dense(nullptr, bytes, k.as<const __half>(), v.as<const __half>(), shape,
                                    q.as<const float>(), out.as<float>(), p.as<float>()) == qaq::status::success);
    const device_buffer workspace(bytes);
    REQUIRE(qaq::cuda::attend_dense(workspace.data(), bytes, k.as<const __half>(), v.as<const __half>(), shape,
                                    q.as<const float>(), out.as<float>(), p.as<float>()) == qaq::status::success);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    const auto output = out.to_host<float>(static_cast<std::size_t>(Hq * D));
    const auto probabilities = p.to_host<float>(static_cast<std::size_t>(Hq * T));
    double value_scale = 1.0;
    for (float x : values) value_scale = std::max(value_scale, std::fabs(static_cast<double>(x)));
    for (std::size_t i = 0; i < output.size(); ++i) REQUIRE(std::fabs(output[i] - expected_output[i]) <= 1e-4 * value_scale);
    for (std::size_t i = 0; i < probabilities.size(); ++i)
        REQUIRE(std::fabs(probabilities[i] - expected_probabilities[i]) <= 2e-6 + 1e-4 * expected_probabilities[i]);

    // Shapes the kernels do not serve are refused, not run.
    std::size_t ignored = 0;
    CHECK(qaq::cuda::attend_dense(nullptr, ignored, k.as<const __half>(), v.as<const __half>(),
                                  qaq::cuda::attend_shape{T, 1, 16, D}, q.as<const float>(), out.as<float>(),
                                  nullptr) == qaq::status::not_supported);
    CHECK(qaq::cuda::attend_dense(nullptr, ignored, k.as<const __half>(), v.as<const __half>(),
                                  qaq::cuda::attend_shape{T, 1, 1, 512}, q.as<const float>(), out.as<float>(),
                                  nullptr) == qaq::status::not_supported);
    CHECK(qaq::cuda::attend_dense(nullptr, ignored, k.as<const __half>(), v.as<const __half>(),
                                  qaq::cuda::attend_shape{T, 2, 3, D}, q.as<const float>(), out.as<float>(),
                                  nullptr) == qaq::status::invalid_argument);
}
