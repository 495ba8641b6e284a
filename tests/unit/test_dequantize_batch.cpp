// Whole-tensor dequantize (eight groups of one width decoded per kernel call) against
// the group-level building blocks (load_parameters, decode, the stored outliers), bit
// for bit, with the SIMD kernels on and off: widths that vary or not, outliers, fp16
// and fp32 parameters, every uniform codec, and a NaN parameter. And the batch paths of
// quantize and dequantize together against the scalar reference.

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "qaq/backend/cpu/simd.hpp"
#include "qaq/qaq.hpp"
#include "qaq/reference/quantize.hpp"

namespace {

namespace simd = qaq::backend::simd;

template <class Q>
std::vector<float> dequantize_by_groups(const Q& q, const qaq::packed_tensor& packed) {
    const qaq::group_layout& layout = packed.layout;
    const std::int64_t n = layout.group_size();
    std::vector<float> out(static_cast<std::size_t>(layout.shape().element_count()));
    const auto view = qaq::kv_view<float>::contiguous(out.data(), layout.shape());
    std::vector<float> values(static_cast<std::size_t>(n));
    std::vector<std::uint32_t> codes(static_cast<std::size_t>(n));
    std::int64_t offset = 0, cursor = 0;
    const std::int64_t value_bytes = qaq::bytes_per_value(packed.precision);
    for (std::int64_t g = 0; g < layout.group_count(); ++g) {
        const int width = packed.widths[static_cast<std::size_t>(g)];
        const qaq::codec_parameters p = q.load_parameters(packed.parameters.data() + g * q.parameter_bytes(), width);
        q.decode(packed.codes.data() + offset, n, width, p, codes.data(), values.data());
        offset += qaq::packed_code_bytes(n, width);
        if (!packed.outlier_counts.empty())
            for (std::int64_t k = 0; k < packed.outlier_counts[g]; ++k, ++cursor)
                values[packed.outlier_positions[cursor]] = qaq::load_value(
                    packed.precision, &packed.outlier_values[static_cast<std::size_t>(cursor * value_bytes)]);
        layout.scatter(values.data(), g, view);
    }
    return out;
}

// Each SIMD setting against the building blocks under the same setting: with a NaN parameter
// the scalar and the AVX2 decode give NaNs of different signs (operand order), as before.
template <class Q>
void check_dequantize(const Q& q, const qaq::packed_tensor& packed) {
    for (bool on : {false, true}) {
        const simd::scoped_simd setting(on);
        const std::vector<float> expected = dequantize_by_groups(q, packed);
        std::vector<float> out(expected.size(), -7.0f);
        q.dequantize(packed, qaq::kv_view<float>::contiguous(out.data(), packed.layout.shape()));
        REQUIRE(std::memcmp(out.data(), expected.data(), out.size() * sizeof(float)) == 0);
    }
}

// Adaptive widths without attention: from the token (some groups of a batch differ, some 0).
struct token_bits {
    static constexpr bool is_bits_policy = true;
    static constexpr bool needs_attention = false;
    static constexpr bool adaptive = false;
    static constexpr const char* name = "token";
    int bits_min() const noexcept { return 0; }
    int bits_max() const noexcept { return 16; }
    int window() const noexcept { return 1; }
    int operator()(const qaq::bits::context& c) const noexcept { return static_cast<int>((c.token * 5) % 17); }
};

}  // namespace

TEST_CASE("whole-tensor dequantize (eight-group decode) equals the group-level building blocks",
          "[fast_paths][dequantize][batch]") {
    using plain = qaq::quantizer<qaq::bits::fixed, qaq::outliers::none, qaq::storage::uniform_zero_point>;
    using quantile = qaq::quantizer<qaq::bits::fixed, qaq::outliers::quantile, qaq::storage::uniform_zero_point>;
    using centred = qaq::quantizer<qaq::bits::fixed, qaq::outliers::quantile, qaq::storage::uniform_mean_centred>;
    using varied = qaq::quantizer<token_bits, qaq::outliers::quantile, qaq::storage::uniform_zero_point>;
    std::mt19937 rng(73);
    const std::int64_t dims[] = {8, 16, 24, 64, 128, 136, 12, 20};
    for (int trial = 0; trial < 120; ++trial) {
        const std::int64_t D = dims[trial % 8];
        const qaq::kv_shape shape{1, 1, 1 + static_cast<std::int64_t>(rng() % 4), 2 + static_cast<std::int64_t>(rng() % 20), D};
        std::vector<float> data(static_cast<std::size_t>(shape.element_count()));
        std::normal_distribution<float> normal(0.0f, 1.0f);
        for (auto& v : data) v = normal(rng) * (rng() % 50 == 0 ? 40.0f : 1.0f);
        if (trial % 5 == 0) data[rng() % data.size()] = std::numeric_limits<float>::quiet_NaN();
        const bool sub = trial % 4 == 3 && D % 2 == 0;
        const qaq::group_level level = sub ? qaq::group_level::sub_head : qaq::group_level::head;
        const int group_dims = sub ? static_cast<int>(D / 2) : 0;
        const auto precision = trial % 3 == 2 ? qaq::storage_precision::fp32 : qaq::storage_precision::fp16;
        const int bits = 1 + trial % 16;
        const auto view = qaq::kv_view<const float>::contiguous(data.data(), shape);
        INFO("trial " << trial);
        {
            const plain q(qaq::bits::fixed(bits), {}, {trial % 7 == 0, precision}, level, group_dims);
            qaq::packed_tensor packed = q.quantize(view);
            check_dequantize(q, packed);
            if (precision == qaq::storage_precision::fp16 && packed.parameters.size() > 8) {
                const std::uint16_t nan_half = 0x7D01;  // a signalling NaN: its conversions differ in the quiet bit
                std::memcpy(&packed.parameters[4], &nan_half, 2);
                check_dequantize(q, packed);
            }
        }
        {
            const quantile q(qaq::bits::fixed(bits), qaq::outliers::quantile(0.05), {trial % 7 == 1, precision}, level,
                             group_dims);
            check_dequantize(q, q.quantize(view));
        }
        {
            const centred q(qaq::bits::fixed(bits), qaq::outliers::quantile(0.02), {false, precision}, level, group_dims);
            check_dequantize(q, q.quantize(view));
        }
        {
            const varied q(token_bits{}, qaq::outliers::quantile(0.01), {false, precision}, level, group_dims);
            check_dequantize(q, q.quantize(view));
        }
    }
}

TEST_CASE("batched quantize + dequantize agree with the reference on many-group tensors", "[reference][batch]") {
    std::mt19937 rng(79);
    for (int trial = 0; trial < 60; ++trial) {
        qaq::quantizer_config config;
        config.codec = trial % 3 == 2 ? qaq::codec_kind::uniform_mean_centred : qaq::codec_kind::uniform_zero_point;
        config.precision = trial % 4 == 3 ? qaq::storage_precision::fp32 : qaq::storage_precision::fp16;
        config.outlier_ratio = trial % 2 ? 0.01 : 0.0;
        config.level = qaq::group_level::head;
        config.bits = qaq::bits_kind::fixed;
        config.fixed_bits = 1 + trial % 8;
        const std::int64_t D = trial % 5 == 0 ? 128 : 64;
        const qaq::kv_shape shape{1, 1, 4, 8 + static_cast<std::int64_t>(rng() % 9), D};
        std::vector<float> data(static_cast<std::size_t>(shape.element_count()));
        std::normal_distribution<float> normal(0.0f, 1.0f);
        for (auto& v : data) v = normal(rng) * (trial % 7 == 0 ? 100.0f : 1.0f);
        const auto cache = qaq::kv_view<const float>::contiguous(data.data(), shape);
        INFO("trial " << trial);
        const qaq::reference::result expected = qaq::reference::quantize(config, cache, {});
        const qaq::any_quantizer quantizer(config);
        for (bool on : {false, true}) {
            const simd::scoped_simd setting(on);
            const qaq::packed_tensor packed = quantizer.quantize(cache, {});
            REQUIRE(std::vector<int>(packed.widths.begin(), packed.widths.end()) == expected.bits);
            std::vector<float> got(data.size());
            quantizer.dequantize(packed, qaq::kv_view<float>::contiguous(got.data(), shape));
            for (std::size_t i = 0; i < got.size(); ++i) {
                const float tolerance =
                    4 * std::numeric_limits<float>::epsilon() * (std::fabs(expected.dequantized[i]) + 1.0f);
                REQUIRE(std::fabs(got[i] - expected.dequantized[i]) <= tolerance);
            }
        }
    }
}
