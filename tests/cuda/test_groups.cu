// quantize_groups / dequantize_groups on the device against the scalar
// reference (docs/method.md) and the CPU backend: the same widths, the same
// outliers, the same parameter and code bytes, reconstructions equal to the
// CPU's and within float rounding of the reference.

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "cuda_test_support.hpp"
#include "qaq/any_quantizer.hpp"
#include "qaq/backend/cuda/device_api.cuh"
#include "qaq/reference/quantize.hpp"

namespace {

using namespace qaq_cuda_test;

struct random_case {
    qaq::quantizer_config config;
    qaq::kv_shape shape;
    std::int64_t query_heads = 1, rows = 1;
};

random_case draw_case(std::mt19937& rng) {
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    random_case c;
    const std::int64_t dims[] = {1, 4, 8, 16, 64, 128};
    c.shape = {pick(1, 3), pick(1, 2), pick(1, 3), pick(1, 12), dims[pick(0, 5)]};
    c.query_heads = c.shape.heads * pick(1, 3);
    c.rows = pick(1, static_cast<int>(c.shape.tokens));
    qaq::quantizer_config& q = c.config;
    q.level = static_cast<qaq::group_level>(pick(0, 3));
    if (q.level == qaq::group_level::sub_head) {
        q.group_dims = static_cast<int>(c.shape.head_dim);
        while (q.group_dims > 1 && pick(0, 1)) q.group_dims /= 2;
    }
    q.symmetric = pick(0, 1);
    q.codec = pick(0, 1) ? qaq::codec_kind::uniform_zero_point : qaq::codec_kind::uniform_mean_centred;
    q.precision = pick(0, 1) ? qaq::storage_precision::fp16 : qaq::storage_precision::fp32;
    const double ratios[] = {0.0, 0.01, 0.1, 0.3};
    q.outlier_ratio = ratios[pick(0, 3)];
    q.role = pick(0, 1) ? qaq::cache_role::key : qaq::cache_role::value;
    if (pick(0, 2) > 0) {
        q.bits = q.role == qaq::cache_role::key ? qaq::bits_kind::key_query_norm : qaq::bits_kind::value_attention;
        q.window = pick(1, 4);
        q.target_error = std::pow(10.0, std::uniform_real_distribution<double>(-3, 0)(rng));
        q.bits_min = pick(0, 4);
        q.bits_max = pick(q.bits_min, 16);
        q.q_norm = std::pow(10.0, std::uniform_real_distribution<double>(-1, 2)(rng));
    } else {
        q.bits = qaq::bits_kind::fixed;
        q.fixed_bits = pick(0, 16);
    }
    return c;
}

/// Quantizes `data` on the device and compares everything with the reference and the CPU backend.
/// Returns false when the reference rejects the data (then both backends must throw too).
bool check_against_cpu(const qaq::quantizer_config& config, const qaq::kv_shape& shape, const std::vector<float>& data,
                       const std::vector<float>& attention, std::int64_t query_heads, std::int64_t rows) {
    const auto cache = qaq::kv_view<const float>::contiguous(data.data(), shape);
    const auto att = qaq::attention_view<const float>::contiguous(
        attention.empty() ? nullptr : attention.data(), {shape.layers, shape.batch, query_heads, rows, shape.tokens});
    const qaq::group_layout layout(shape, config.level, config.group_dims);
    const std::int64_t groups = layout.group_count(), n = layout.group_size();
    const std::vector<float> rows_in = gather_groups(layout, cache);
    std::vector<float> predicted;
    if (config.bits == qaq::bits_kind::value_attention) predicted = predicted_per_group(layout, shape, att, config.window);
    const qaq::cuda::group_tokens tokens{shape.tokens, layout.groups_per_token()};
    const qaq::cuda::device_quantizer device(config);

    qaq::reference::result expected;
    try {
        expected = qaq::reference::quantize(config, cache, att);
    } catch (const qaq::error&) {
        CHECK_THROWS_AS(device.quantize(rows_in.data(), groups, n, tokens, predicted.empty() ? nullptr : predicted.data()),
                        qaq::error);
        return false;
    }
    const qaq::any_quantizer cpu_quantizer(config);
    const qaq::packed_tensor cpu = cpu_quantizer.quantize(cache, att);
    const qaq::cuda::device_packed_groups packed =
        device.quantize(rows_in.data(), groups, n, tokens, predicted.empty() ? nullptr : predicted.data());
    const qaq::cuda::host_packed_groups got = packed.to_host();

    // Widths.
    REQUIRE(std::vector<int>(got.widths.begin(), got.widths.end()) == expected.bits);
    REQUIRE(got.widths == cpu.widths);
    for (std::int64_t g = 0; g < groups; ++g)
        REQUIRE(got.code_offsets[static_cast<std::size_t>(g + 1)] - got.code_offsets[static_cast<std::size_t>(g)] ==
                static_cast<std::uint64_t>(qaq::packed_code_bytes(n, got.widths[static_cast<std::size_t>(g)])));

    // Parameters (as values: +0 and -0 are the same parameter) and code bytes.
    const int parameters = config.symmetric ? 1 : 2;
    REQUIRE(cpu.parameters_per_group == parameters);
    for (std::int64_t i = 0; i < groups * parameters; ++i)
        REQUIRE(same_value(stored_value(config.precision, got.parameters, i),
                           stored_value(config.precision, cpu.parameters, i)));
    REQUIRE(got.codes == cpu.codes);

    // Outliers: the CPU's counts, positions and values; the reference mask.
    REQUIRE(packed.outlier_count == cpu.outlier_count());
    for (std::int64_t g = 0; g < groups; ++g) {
        const std::uint64_t count =
            got.outlier_offsets[static_cast<std::size_t>(g + 1)] - got.outlier_offsets[static_cast<std::size_t>(g)];
        REQUIRE(count == (cpu.outlier_counts.empty() ? 0u : cpu.outlier_counts[g]));
    }
    for (std::int64_t i = 0; i < packed.outlier_count; ++i) {
        REQUIRE(got.outlier_positions[static_cast<std::size_t>(i)] == cpu.outlier_positions[i]);
        REQUIRE(same_value(stored_value(config.precision, got.outlier_values, i),
                           stored_value(config.precision, cpu.outlier_values, i)));
    }
    std::vector<float> mask_as_float(expected.outlier_mask.begin(), expected.outlier_mask.end());
    const std::vector<float> expected_mask =
        gather_groups(layout, qaq::kv_view<const float>::contiguous(mask_as_float.data(), shape));
    std::vector<float> device_mask(static_cast<std::size_t>(groups * n), 0.0f);
    for (std::int64_t g = 0; g < groups; ++g)
        for (std::uint64_t i = got.outlier_offsets[static_cast<std::size_t>(g)];
             i < got.outlier_offsets[static_cast<std::size_t>(g + 1)]; ++i)
            device_mask[static_cast<std::size_t>(g * n + got.outlier_positions[i])] = 1.0f;
    REQUIRE(device_mask == expected_mask);

    // Reconstruction: equal to the CPU's, within float rounding of the reference.
    const std::vector<float> reconstructed = device.dequantize(packed);
    std::vector<float> cpu_cache(data.size());
    cpu_quantizer.dequantize(cpu, qaq::kv_view<float>::contiguous(cpu_cache.data(), shape));
    const std::vector<float> cpu_rows = gather_groups(layout, qaq::kv_view<const float>::contiguous(cpu_cache.data(), shape));
    const std::vector<float> reference_rows =
        gather_groups(layout, qaq::kv_view<const float>::contiguous(expected.dequantized.data(), shape));
    for (std::size_t i = 0; i < reconstructed.size(); ++i) {
        INFO("element " << i << " of group " << static_cast<std::int64_t>(i) / n);
        REQUIRE(same_value(reconstructed[i], cpu_rows[i]));
        REQUIRE(close_to_reference(reconstructed[i], reference_rows[i]));
    }
    return true;
}

}  // namespace

TEST_CASE("quantize_groups equals the reference and the CPU backend on random configurations", "[cuda][groups]") {
    std::mt19937 rng(20261);
    int compared = 0;
    for (int iteration = 0; iteration < 300; ++iteration) {
        const random_case c = draw_case(rng);
        const auto data = draw_values(rng, c.shape.element_count());
        const auto attention =
            draw_attention(rng, {c.shape.layers, c.shape.batch, c.query_heads, c.rows, c.shape.tokens});
        INFO("iteration " << iteration << " level " << qaq::to_string(c.config.level) << " codec "
                          << qaq::to_string(c.config.codec) << (c.config.symmetric ? " symmetric" : "") << " bits "
                          << qaq::to_string(c.config.bits) << " ratio " << c.config.outlier_ratio << " shape "
                          << qaq::to_string(c.shape));
        if (check_against_cpu(c.config, c.shape, data, attention, c.query_heads, c.rows)) ++compared;
    }
    CHECK(compared > 250);
}

TEST_CASE("quantize_groups handles edge groups: sizes 1..2048, non-finite, constant, 0 and 16 bits", "[cuda][groups]") {
    std::mt19937 rng(5);
    const std::int64_t sizes[] = {1, 7, 8, 9, 255, 256, 257, 1000, 2048};
    for (std::int64_t n : sizes)
        for (int variant = 0; variant < 6; ++variant) {
            qaq::quantizer_config config;
            config.codec = variant % 2 ? qaq::codec_kind::uniform_zero_point : qaq::codec_kind::uniform_mean_centred;
            config.symmetric = variant == 3;
            config.precision = variant >= 4 ? qaq::storage_precision::fp32 : qaq::storage_precision::fp16;
            config.outlier_ratio = variant == 0 ? 0.0 : (variant == 5 ? 0.9 : 0.05);
            config.fixed_bits = variant == 2 ? 0 : (variant == 4 ? 16 : 3);
            const qaq::kv_shape shape{1, 1, 1, 6, n};
            std::vector<float> data = draw_values(rng, shape.element_count(), false);
            for (auto& v : data) v = std::max(-1000.0f, std::min(1000.0f, v));  // fp16 parameters must fit
            const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
            for (std::int64_t d = 0; d < n; ++d) {
                data[static_cast<std::size_t>(0 * n + d)] = nan;                            // token 0: all NaN
                data[static_cast<std::size_t>(1 * n + d)] = 2.5f;                           // token 1: constant
                data[static_cast<std::size_t>(2 * n + d)] = d % 3 == 0 ? inf : -1.0f * d;  // token 2: Inf mixed in
            }
            data[static_cast<std::size_t>(3 * n)] = -inf;
            INFO("n " << n << " variant " << variant);
            REQUIRE(check_against_cpu(config, shape, data, {}, 1, 1));
        }
}

TEST_CASE("the typed two-phase entry point equals the runtime one and checks its arguments", "[cuda][groups][api]") {
    std::mt19937 rng(17);
    const std::int64_t groups = 300, n = 64, tokens = 300;
    const std::vector<float> values = draw_values(rng, groups * n, false);
    qaq::quantizer_config config;
    config.role = qaq::cache_role::key;
    config.codec = qaq::codec_kind::uniform_zero_point;
    config.bits = qaq::bits_kind::key_query_norm;
    config.bits_min = 2;
    config.bits_max = 8;
    config.window = 3;
    config.q_norm = 4.0;
    config.target_error = 0.05;
    config.outlier_ratio = 0.02;
    const qaq::cuda::device_quantizer device(config);
    const qaq::cuda::host_packed_groups expected = device.quantize(values.data(), groups, n, {tokens, 1}).to_host();

    const qaq::bits::key_query_norm bits(config.q_norm, config.target_error, config.bits_min, config.bits_max, config.window);
    const qaq::outliers::quantile outliers(config.outlier_ratio);
    const qaq::storage::uniform_zero_point codec{false, qaq::storage_precision::fp16};
    using qaq::cuda::device_buffer;
    const device_buffer input = device_buffer::from_host(values.data(), values.size());
    device_buffer widths(groups), parameters(groups * 4), code_offsets(8 * (groups + 1)),
        codes(qaq::cuda::max_code_bytes(groups, n, config.bits_max)), outlier_offsets(8 * (groups + 1)),
        positions(2 * groups * n), outlier_values(2 * groups * n);
    qaq::cuda::packed_groups_out out;
    out.widths = widths.as<std::uint8_t>();
    out.parameters = parameters.data();
    out.code_offsets = code_offsets.as<std::uint64_t>();
    out.codes = codes.as<std::uint8_t>();
    out.outlier_offsets = outlier_offsets.as<std::uint64_t>();
    out.outlier_positions = positions.as<std::uint16_t>();
    out.outlier_values = outlier_values.data();
    out.outlier_capacity = groups * n;

    std::size_t bytes = 0;
    REQUIRE(qaq::cuda::quantize_groups(nullptr, bytes, bits, outliers, codec, input.as<const float>(), groups, n,
                                       {tokens, 1}, nullptr, out) == qaq::status::success);
    REQUIRE(bytes > 0);
    const device_buffer workspace(bytes);
    std::size_t too_small = bytes - 1;
    CHECK(qaq::cuda::quantize_groups(workspace.data(), too_small, bits, outliers, codec, input.as<const float>(),
                                     groups, n, {tokens, 1}, nullptr, out) == qaq::status::invalid_argument);
    qaq::cuda::packed_groups_out missing = out;
    missing.codes = nullptr;
    CHECK(qaq::cuda::quantize_groups(workspace.data(), bytes, bits, outliers, codec, input.as<const float>(), groups,
                                     n, {tokens, 1}, nullptr, missing) == qaq::status::invalid_argument);
    std::size_t ignored = 0;
    CHECK(qaq::cuda::quantize_groups(nullptr, ignored, bits, outliers, codec, input.as<const float>(), groups, 0,
                                     {tokens, 1}, nullptr, out) == qaq::status::invalid_argument);
    CHECK(qaq::cuda::quantize_groups(nullptr, ignored, bits, outliers, codec, input.as<const float>(), groups, 4096,
                                     {tokens, 1}, nullptr, out) == qaq::status::not_supported);
    const qaq::bits::value_attention value_bits(2, 0.1, 2, 8);
    CHECK(qaq::cuda::quantize_groups(workspace.data(), bytes, value_bits, outliers, codec, input.as<const float>(),
                                     groups, n, {tokens, 1}, nullptr, out) == qaq::status::invalid_argument);

    REQUIRE(qaq::cuda::quantize_groups(workspace.data(), bytes, bits, outliers, codec, input.as<const float>(), groups,
                                       n, {tokens, 1}, nullptr, out) == qaq::status::success);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    REQUIRE(widths.to_host<std::uint8_t>(groups) == expected.widths);
    REQUIRE(code_offsets.to_host<std::uint64_t>(groups + 1) == expected.code_offsets);
    REQUIRE(codes.to_host<std::uint8_t>(expected.codes.size()) == expected.codes);
    REQUIRE(outlier_offsets.to_host<std::uint64_t>(groups + 1) == expected.outlier_offsets);
    REQUIRE(positions.to_host<std::uint16_t>(expected.outlier_positions.size()) == expected.outlier_positions);

    // Widths follow key_query_norm: the last window - 1 tokens get bits_max.
    for (std::int64_t t = tokens - (config.window - 1); t < tokens; ++t)
        CHECK(expected.widths[static_cast<std::size_t>(t)] == config.bits_max);
}

TEST_CASE("the host wrapper raises what the CPU path raises", "[cuda][groups][api]") {
    qaq::quantizer_config normal;
    normal.codec = qaq::codec_kind::normal;
    CHECK_THROWS_AS(qaq::cuda::device_quantizer(normal), qaq::error);

    qaq::quantizer_config config;  // fp16 parameters
    const std::vector<float> huge(64, 1.0e6f);
    std::vector<float> spread(64);
    for (std::size_t i = 0; i < spread.size(); ++i) spread[i] = 1.0e6f * static_cast<float>(i);
    const qaq::cuda::device_quantizer device(config);
    CHECK_THROWS_AS(device.quantize(spread.data(), 1, 64, {1, 1}), qaq::error);
    config.precision = qaq::storage_precision::fp32;
    CHECK_NOTHROW(qaq::cuda::device_quantizer(config).quantize(huge.data(), 1, 64, {1, 1}));

    qaq::quantizer_config values;
    values.bits = qaq::bits_kind::value_attention;
    const std::vector<float> data(64, 0.5f);
    CHECK_THROWS_AS(qaq::cuda::device_quantizer(values).quantize(data.data(), 1, 64, {1, 1}), qaq::error);
}
