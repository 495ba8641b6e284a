// The fast paths of quantize against their general forms: F16C parameter
// rounding against Eigen::half, the encoder without clamping against the
// scalar definition, the AVX2 quantile selection against the scalar one and
// against a sort, min/max of the non-outliers against the backend's
// statistics, and whole tensors (the batched group loop) against the
// group-level building blocks, with the SIMD kernels on and off.

#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "qaq/backend/cpu/simd.hpp"
#include "qaq/qaq.hpp"

namespace {

namespace simd = qaq::backend::simd;
constexpr float infinity = std::numeric_limits<float>::infinity();
constexpr float quiet_nan = std::numeric_limits<float>::quiet_NaN();

std::vector<bool> simd_settings() {
    std::vector<bool> s{false};
    if (simd::avx2_supported()) s.push_back(true);
    return s;
}

std::uint32_t bits_of(float x) {
    std::uint32_t b;
    std::memcpy(&b, &x, 4);
    return b;
}

// Either both throw, or both return the same bits.
template <class F>
void same_result(F&& f, float x) {
    float on = 0.0f, off = 0.0f;
    bool threw_on = false, threw_off = false;
    {
        const simd::scoped_simd s(true);
        try {
            on = f(x);
        } catch (const qaq::error&) {
            threw_on = true;
        }
    }
    {
        const simd::scoped_simd s(false);
        try {
            off = f(x);
        } catch (const qaq::error&) {
            threw_off = true;
        }
    }
    INFO("x = " << x);
    REQUIRE(threw_on == threw_off);
    if (!threw_on) REQUIRE(bits_of(on) == bits_of(off));
}

// Floats around every fp16 value (the value, its float neighbours, the midpoints), random
// bit patterns, and the special values.
std::vector<float> fp16_probe_values() {
    std::vector<float> v;
    for (std::uint32_t h = 0; h < 0x10000u; h += 1) {
        const float f = simd::half_to_float(static_cast<std::uint16_t>(h));
        if (!std::isfinite(f)) continue;
        v.push_back(f);
        v.push_back(std::nextafter(f, infinity));
        v.push_back(std::nextafter(f, -infinity));
        const float next = simd::half_to_float(static_cast<std::uint16_t>(h + 1));
        if ((h & 0x7FFFu) < 0x7BFFu) v.push_back(f + (next - f) / 2.0f);  // a tie of the nearest rounding
    }
    std::mt19937 rng(5);
    for (int i = 0; i < 200000; ++i) {
        const std::uint32_t b = rng();
        float f;
        std::memcpy(&f, &b, 4);
        v.push_back(f);
    }
    for (float f : {65504.0f, 65519.0f, 65519.996f, 65520.0f, 65536.0f, 1e10f, infinity, -infinity, quiet_nan, 0.0f, -0.0f, 1e-8f,
                    -1e-8f, 5.9604644775390625e-8f, 1e-45f})
        v.push_back(f), v.push_back(-f);
    return v;
}

}  // namespace

TEST_CASE("fp16 parameter rounding: F16C and Eigen::half give the same values and errors", "[fast_paths][fp16]") {
    if (!simd::avx2_supported()) return;  // nothing to compare: the Eigen path is the only one
    for (float x : fp16_probe_values()) {
        same_result([](float v) { return qaq::round_to(qaq::storage_precision::fp16, v); }, x);
        same_result([](float v) { return qaq::round_parameter(qaq::storage_precision::fp16, v, "x"); }, x);
        same_result([](float v) { return qaq::round_parameter_directed(qaq::storage_precision::fp16, v, true, "x"); }, x);
        same_result([](float v) { return qaq::round_parameter_directed(qaq::storage_precision::fp16, v, false, "x"); }, x);
        if (std::isfinite(x) && std::fabs(x) <= 65504.0f) {
            std::uint8_t on[2], off[2];
            {
                const simd::scoped_simd s(true);
                qaq::store_value(qaq::storage_precision::fp16, x, on);
            }
            {
                const simd::scoped_simd s(false);
                qaq::store_value(qaq::storage_precision::fp16, x, off);
            }
            REQUIRE(std::memcmp(on, off, 2) == 0);
        }
    }
}

TEST_CASE("affine encode given the value range (no clamping) equals the scalar definition", "[fast_paths][kernels]") {
    namespace affine = qaq::backend::affine;
    std::mt19937 rng(41);
    for (int trial = 0; trial < 3000; ++trial) {
        const int width = 1 + trial % 16;
        const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % 150);
        const bool mean_centred = rng() % 2;
        const float half = static_cast<float>(1u << (width - 1));
        qaq::affine_code a;
        a.centre = std::normal_distribution<float>(0.0f, 3.0f)(rng);
        a.scale = std::exp(std::uniform_real_distribution<float>(-8.0f, 2.0f)(rng));
        a.lowest = mean_centred ? -half : 0.0f;
        a.highest = mean_centred ? half - 1.0f : static_cast<float>((1u << width) - 1u);
        a.bias = mean_centred ? half : 0.0f;
        // Values inside the grid, many of them at or next to a rounding tie, some at the ends.
        std::uniform_real_distribution<float> u(a.lowest, a.highest);
        std::vector<float> x(static_cast<std::size_t>(n));
        for (auto& v : x) {
            const int kind = static_cast<int>(rng() % 5);
            const float q = kind == 0 ? u(rng) : (kind == 4 ? (rng() % 2 ? a.lowest : a.highest)
                                                            : std::floor(u(rng)) + 0.5f);
            v = a.centre + q * a.scale;
            if (kind == 2) v = std::nextafter(v, HUGE_VALF);
            if (kind == 3) v = std::nextafter(v, -HUGE_VALF);
        }
        std::vector<std::uint8_t> mask(static_cast<std::size_t>(n), 0);
        const bool outliers = rng() % 3 == 0;
        if (outliers)
            for (std::int64_t i = 0; i < n; i += 1 + static_cast<std::int64_t>(rng() % 7)) {
                mask[static_cast<std::size_t>(i)] = 1;
                x[static_cast<std::size_t>(i)] = rng() % 2 ? quiet_nan : 1e30f;  // never read: replaced by the centre
            }
        float lo = infinity, hi = -infinity;
        for (std::int64_t i = 0; i < n; ++i)
            if (!mask[static_cast<std::size_t>(i)]) lo = std::min(lo, x[static_cast<std::size_t>(i)]), hi = std::max(hi, x[static_cast<std::size_t>(i)]);
        if (rng() % 4 == 0) lo -= a.scale, hi += a.scale;  // a looser (still true) range
        std::vector<std::uint32_t> expected(static_cast<std::size_t>(n)), scratch(static_cast<std::size_t>(n));
        affine::affine_codes_scalar(x.data(), outliers ? mask.data() : nullptr, n, a, expected.data());
        const std::int64_t bytes = qaq::packed_code_bytes(n, width);
        std::vector<std::uint8_t> packed_expected(static_cast<std::size_t>(bytes) + 8, 0xAB);
        qaq::pack_codes(expected.data(), n, width, packed_expected.data());
        for (bool on : simd_settings()) {
            const simd::scoped_simd setting(on);
            std::vector<std::uint8_t> packed(static_cast<std::size_t>(bytes) + 8, 0xAB);
            if (!affine::encode(x.data(), outliers ? mask.data() : nullptr, n, width, a, scratch.data(), packed.data(),
                                lo, hi))
                continue;  // no SIMD path: the caller encodes with the scalar definition
            REQUIRE(packed == packed_expected);
        }
    }
}

namespace {

// QAQ-METHOD section 4 by sorting: lo = the ceil(a/2 N)-th smallest finite value, hi = the
// floor((1 - a/2) N)-th; outliers: non-finite, <= lo, > hi.
std::vector<std::uint8_t> sorted_definition(const std::vector<float>& x, double ratio) {
    std::vector<float> finite;
    for (float v : x)
        if (std::isfinite(v)) finite.push_back(v);
    std::sort(finite.begin(), finite.end());
    const auto n = static_cast<double>(finite.size());
    float lo = -infinity, hi = infinity;
    if (ratio > 0.0 && !finite.empty()) {
        const auto k_lo = static_cast<std::int64_t>(std::ceil(ratio / 2.0 * n));
        const auto k_hi = static_cast<std::int64_t>(std::floor((1.0 - ratio / 2.0) * n));
        lo = finite[static_cast<std::size_t>(k_lo - 1)];
        hi = k_hi >= 1 ? finite[static_cast<std::size_t>(k_hi - 1)] : -infinity;
    }
    std::vector<std::uint8_t> out(x.size());
    for (std::size_t i = 0; i < x.size(); ++i)
        out[i] = !std::isfinite(x[i]) || (ratio > 0.0 && (x[i] <= lo || x[i] > hi));
    return out;
}

std::vector<float> quantile_group(std::mt19937& rng, std::int64_t n) {
    std::vector<float> x(static_cast<std::size_t>(n));
    const int kind = static_cast<int>(rng() % 5);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    for (auto& v : x) {
        switch (kind) {
            case 0: v = normal(rng); break;
            case 1: v = static_cast<float>(static_cast<int>(rng() % 4)) - 1.5f; break;  // heavy duplicates
            case 2: v = rng() % 2 ? 0.0f : -0.0f; break;                                 // signed zeros only
            case 3: v = rng() % 3 == 0 ? normal(rng) : 0.25f; break;                     // one value mostly
            default: v = std::ldexp(normal(rng), static_cast<int>(rng() % 200) - 100); break;
        }
        if (rng() % 16 == 0) v = rng() % 3 == 0 ? quiet_nan : (rng() % 2 ? infinity : -infinity);
    }
    return x;
}

}  // namespace

TEST_CASE("quantile outliers: the AVX2 selection equals the scalar path and the sorted definition",
          "[fast_paths][outliers]") {
    std::mt19937 rng(43);
    const double ratios[] = {0.0, 0.001, 0.01, 0.02, 0.03, 0.05, 0.1, 0.3, 0.9, 0.999};
    for (int trial = 0; trial < 20000; ++trial) {
        const std::int64_t n = trial % 7 == 0 ? 1 + static_cast<std::int64_t>(rng() % 9)
                                              : 1 + static_cast<std::int64_t>(rng() % 300);
        const qaq::outliers::quantile policy(ratios[rng() % 10]);
        const std::vector<float> x = quantile_group(rng, n);
        const std::vector<std::uint8_t> expected = sorted_definition(x, policy.ratio());
        std::int64_t expected_count = 0;
        for (auto b : expected) expected_count += b;
        std::vector<float> scratch(static_cast<std::size_t>(n));
        std::vector<std::uint8_t> scalar(static_cast<std::size_t>(n), 7);
        REQUIRE(policy.mark_scalar(x.data(), n, scalar.data(), scratch.data()) == expected_count);
        REQUIRE(scalar == expected);
        for (bool on : simd_settings()) {
            const simd::scoped_simd setting(on);
            std::vector<std::uint8_t> mask(static_cast<std::size_t>(n) + 1, 7);
            REQUIRE(policy.mark(x.data(), n, mask.data(), scratch.data()) == expected_count);
            REQUIRE(mask[static_cast<std::size_t>(n)] == 7);  // nothing written past the group
            mask.pop_back();
            REQUIRE(mask == expected);
        }
    }
}

TEST_CASE("min and max of the non-outliers equal the backend's statistics", "[fast_paths][kernels]") {
    std::mt19937 rng(47);
    for (int trial = 0; trial < 5000; ++trial) {
        const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % 200);
        std::vector<float> x = quantile_group(rng, n);
        std::vector<std::uint8_t> mask(static_cast<std::size_t>(n));
        std::int64_t outliers = 0;
        for (std::int64_t i = 0; i < n; ++i) {
            const std::size_t k = static_cast<std::size_t>(i);
            mask[k] = !std::isfinite(x[k]) || rng() % 10 == 0 ? static_cast<std::uint8_t>(1 + rng() % 255) : 0;
            outliers += mask[k] != 0;
        }
        if (outliers == n) continue;
        float mn = 0.0f, mx = 0.0f;
        if (!qaq::backend::affine::kept_min_max(x.data(), mask.data(), n, mn, mx)) continue;  // general path decides
        const qaq::group_statistics s = qaq::backend::cpu::statistics(x.data(), mask.data(), n, outliers, false);
        REQUIRE(bits_of(mn) == bits_of(s.min));
        REQUIRE(bits_of(mx) == bits_of(s.max));
    }
}

namespace {

// Quantizes `data` group by group with the public building blocks (analyze, choose_bits,
// encode, store_parameters), as quantize() did before its batch path, and compares.
template <class Q>
void check_against_group_blocks(const Q& q, const qaq::kv_shape& shape, const std::vector<float>& data) {
    const auto view = qaq::kv_view<const float>::contiguous(data.data(), shape);
    const qaq::group_layout layout(shape, q.level(), q.group_dims());
    const std::int64_t n = layout.group_size();
    std::vector<float> values(static_cast<std::size_t>(n)), scratch(static_cast<std::size_t>(n));
    std::vector<std::uint8_t> mask(static_cast<std::size_t>(n));
    std::vector<std::uint32_t> codes(static_cast<std::size_t>(n));
    std::vector<std::uint8_t> expected_codes, expected_parameters, expected_widths, expected_values;
    std::vector<std::uint32_t> expected_positions;
    bool threw = false;
    std::string message;
    try {
        for (std::int64_t g = 0; g < layout.group_count(); ++g) {
            layout.gather(view, g, values.data());
            const qaq::group_statistics stats = q.analyze(values.data(), n, mask.data(), scratch.data());
            const int width = q.choose_bits(q.range(stats), 0.0f, shape.tokens, layout.box(g).token);
            expected_widths.push_back(static_cast<std::uint8_t>(width));
            std::vector<std::uint8_t> packed(static_cast<std::size_t>(qaq::packed_code_bytes(n, width)));
            const qaq::codec_parameters p =
                q.encode(values.data(), mask.data(), n, stats, width, codes.data(), packed.data());
            expected_codes.insert(expected_codes.end(), packed.begin(), packed.end());
            std::vector<std::uint8_t> stored(static_cast<std::size_t>(q.parameter_bytes()));
            q.store_parameters(p, stored.data());
            expected_parameters.insert(expected_parameters.end(), stored.begin(), stored.end());
            for (std::int64_t i = 0; i < n; ++i) {
                if (!mask[static_cast<std::size_t>(i)]) continue;
                q.check_outlier_value(values[static_cast<std::size_t>(i)]);
                expected_positions.push_back(static_cast<std::uint32_t>(i));
                std::uint8_t b[4];
                qaq::store_value(q.precision(), values[static_cast<std::size_t>(i)], b);
                expected_values.insert(expected_values.end(), b, b + qaq::bytes_per_value(q.precision()));
            }
        }
    } catch (const qaq::error& e) {
        threw = true;
        message = e.what();
    }
    if (threw) {  // the same error first, as in group order
        std::string got;
        try {
            (void)q.quantize(view);
        } catch (const qaq::error& e) {
            got = e.what();
        }
        REQUIRE(got == message);
        return;
    }
    const qaq::packed_tensor packed = q.quantize(view);
    REQUIRE(packed.widths == expected_widths);
    REQUIRE(packed.parameters == expected_parameters);
    REQUIRE(packed.codes == expected_codes);
    REQUIRE(packed.outlier_values == expected_values);
    REQUIRE(static_cast<std::size_t>(packed.outlier_positions.size()) == expected_positions.size());
    for (std::size_t i = 0; i < expected_positions.size(); ++i)
        REQUIRE(packed.outlier_positions[static_cast<std::int64_t>(i)] == expected_positions[i]);
}

}  // namespace

TEST_CASE("whole-tensor quantize (batched groups) equals the group-level building blocks", "[fast_paths][quantizer]") {
    using plain = qaq::quantizer<qaq::bits::fixed, qaq::outliers::none, qaq::storage::uniform_zero_point>;
    using quantile = qaq::quantizer<qaq::bits::fixed, qaq::outliers::quantile, qaq::storage::uniform_zero_point>;
    using centred = qaq::quantizer<qaq::bits::fixed, qaq::outliers::quantile, qaq::storage::uniform_mean_centred>;
    std::mt19937 rng(53);
    for (int trial = 0; trial < 120; ++trial) {
        const std::int64_t dims[] = {12, 20, 36, 64, 128};
        const std::int64_t D = dims[trial % 5];
        const qaq::kv_shape shape{1, 1, 1 + static_cast<std::int64_t>(rng() % 3), 1 + static_cast<std::int64_t>(rng() % 9), D};
        std::vector<float> data = quantile_group(rng, shape.element_count());
        if (trial % 3 == 0)  // mostly finite, one constant group
            for (auto& v : data) v = std::isfinite(v) ? v : 0.5f;
        for (std::int64_t i = 0; i < D; ++i) data[static_cast<std::size_t>(i)] = 0.75f;
        const int bits = trial % 17;
        const auto precision = trial % 2 ? qaq::storage_precision::fp16 : qaq::storage_precision::fp32;
        const bool sub = trial % 4 == 1 && D % 4 == 0;
        const qaq::group_level level = sub ? qaq::group_level::sub_head : qaq::group_level::head;
        const int group_dims = sub ? static_cast<int>(D / 4) : 0;  // 3, 5, 9, 16, 32 values per group
        for (bool on : simd_settings()) {
            const simd::scoped_simd setting(on);
            check_against_group_blocks(plain(qaq::bits::fixed(bits), {}, {trial % 5 == 0, precision}, level, group_dims),
                                       shape, data);
            check_against_group_blocks(quantile(qaq::bits::fixed(bits), qaq::outliers::quantile(trial % 3 ? 0.01 : 0.1),
                                                {trial % 5 == 0, precision}, level, group_dims),
                                       shape, data);
            check_against_group_blocks(centred(qaq::bits::fixed(bits), qaq::outliers::quantile(0.02),
                                               {false, precision}, level, group_dims),
                                       shape, data);
        }
    }
}

namespace {

// Widths that vary from group to group (from the range's bits and the token), 0 included; an
// invalid width (an error of choose_bits) for one token when asked.
struct varied_bits {
    int throw_token = -1;

    static constexpr bool is_bits_policy = true;
    static constexpr bool needs_attention = false;
    static constexpr bool adaptive = false;
    static constexpr const char* name = "varied";

    int bits_min() const noexcept { return 0; }
    int bits_max() const noexcept { return 16; }
    int window() const noexcept { return 1; }
    int operator()(const qaq::bits::context& c) const noexcept {
        if (c.token == throw_token) return 99;
        const std::uint32_t r = bits_of(c.range);
        return static_cast<int>((r ^ (r >> 11) ^ static_cast<std::uint32_t>(c.token) * 7u) % 17u);
    }
};

// Whole tensors for the eight-group batch: groups of many scales (beyond the vector fit's
// bound, and beyond fp16 when `overflow`), constant groups, a non-finite value, values on
// rounding ties of their grid.
std::vector<float> batch_tensor(std::mt19937& rng, const qaq::kv_shape& shape, std::int64_t n, bool overflow) {
    std::vector<float> data(static_cast<std::size_t>(shape.element_count()));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (std::size_t g0 = 0; g0 < data.size(); g0 += static_cast<std::size_t>(n)) {
        const int kind = static_cast<int>(rng() % 12);
        const float scale = kind == 0 ? (overflow ? 1e5f : 3e4f) : std::ldexp(1.0f, static_cast<int>(rng() % 30) - 20);
        for (std::size_t i = g0; i < g0 + static_cast<std::size_t>(n) && i < data.size(); ++i) {
            if (kind == 1) data[i] = 0.25f;
            else if (kind == 2) data[i] = static_cast<float>(rng() % 31) * 0.0625f;  // 4 bits: s = 1/8, ties at odd k
            else data[i] = normal(rng) * scale;
        }
        if (kind == 2) data[g0] = 0.0f, data[g0 + static_cast<std::size_t>(n) - 1] = 1.875f;
        if (kind == 3) data[g0 + rng() % static_cast<std::size_t>(n)] = rng() % 2 ? infinity : quiet_nan;
    }
    return data;
}

}  // namespace

TEST_CASE("whole-tensor quantize (eight-group vector fit) equals the group-level building blocks",
          "[fast_paths][quantizer][batch]") {
    using plain = qaq::quantizer<qaq::bits::fixed, qaq::outliers::none, qaq::storage::uniform_zero_point>;
    using varied = qaq::quantizer<varied_bits, qaq::outliers::none, qaq::storage::uniform_zero_point>;
    std::mt19937 rng(71);
    const std::int64_t dims[] = {8, 16, 24, 64, 128, 136, 12};
    for (int trial = 0; trial < 160; ++trial) {
        const std::int64_t D = dims[trial % 7];
        const qaq::kv_shape shape{1, 1, 1 + static_cast<std::int64_t>(rng() % 4), 4 + static_cast<std::int64_t>(rng() % 20), D};
        const bool sub = trial % 5 == 4 && D % 2 == 0;
        const qaq::group_level level = sub ? qaq::group_level::sub_head : qaq::group_level::head;
        const int group_dims = sub ? static_cast<int>(D / 2) : 0;
        const std::int64_t n = sub ? D / 2 : D;
        const bool overflow = trial % 4 == 0;
        const std::vector<float> data = batch_tensor(rng, shape, n, overflow);
        const auto precision = trial % 8 == 7 ? qaq::storage_precision::fp32 : qaq::storage_precision::fp16;
        varied_bits policy;
        if (trial % 3 == 0) policy.throw_token = static_cast<int>(rng() % static_cast<std::uint32_t>(shape.tokens));
        for (bool on : simd_settings()) {
            const simd::scoped_simd setting(on);
            INFO("trial " << trial << " simd " << on);
            check_against_group_blocks(plain(qaq::bits::fixed(trial % 17), {}, {trial % 9 == 8, precision}, level, group_dims),
                                       shape, data);
            check_against_group_blocks(varied(policy, {}, {false, precision}, level, group_dims), shape, data);
        }
    }
}
