// The eight-group kernels of quantizer::quantize_batch against their per-group
// definitions: min and max of eight groups against affine::dense_statistics, and
// the vectorised zero-point fit against uniform_zero_point::fit, store and the
// encoder's reciprocal and range test.

#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "qaq/backend/cpu/batch_statistics.hpp"
#include "qaq/backend/cpu/zero_point_fit.hpp"
#include "qaq/qaq.hpp"

namespace {

namespace simd = qaq::backend::simd;
namespace batch = qaq::backend::batch;
constexpr float infinity = std::numeric_limits<float>::infinity();

std::uint32_t bits_of(float x) {
    std::uint32_t b;
    std::memcpy(&b, &x, 4);
    return b;
}

// A group of n values of one of several kinds: normal, duplicates, signed zeros, subnormals,
// huge (lane sums overflow), a NaN or an infinity somewhere, constant.
std::vector<float> group_of(std::mt19937& rng, std::int64_t n) {
    std::vector<float> x(static_cast<std::size_t>(n));
    const int kind = static_cast<int>(rng() % 8);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto& v : x) {
        switch (kind) {
            case 0: v = normal(rng); break;
            case 1: v = static_cast<float>(static_cast<int>(rng() % 4)) - 1.5f; break;
            case 2: v = rng() % 2 ? 0.0f : -0.0f; break;
            case 3: v = normal(rng) * 1e-40f; break;
            case 4: v = normal(rng) * 1e38f; break;
            case 5: v = 0.375f; break;
            default: v = std::ldexp(normal(rng), static_cast<int>(rng() % 60) - 30); break;
        }
    }
    if (rng() % 5 == 0) {
        const float special[] = {std::numeric_limits<float>::quiet_NaN(), infinity, -infinity};
        x[rng() % static_cast<std::size_t>(n)] = special[rng() % 3];
    }
    return x;
}

}  // namespace

TEST_CASE("min and max of eight groups equal dense_statistics of each", "[fast_paths][batch]") {
    if (!simd::avx2_supported()) return;  // no batch path to compare
    std::mt19937 rng(59);
    const std::int64_t sizes[] = {8, 16, 24, 40, 64, 128, 136};
    for (int trial = 0; trial < 4000; ++trial) {
        const std::int64_t n = sizes[trial % 7];
        std::vector<std::vector<float>> groups;
        const float* x[batch::lanes];
        for (int j = 0; j < batch::lanes; ++j) {
            groups.push_back(group_of(rng, n));
            x[j] = groups.back().data();
        }
        float mins[batch::lanes], maxs[batch::lanes];
        unsigned finite = 0;
        {
            const simd::scoped_simd off(false);
            REQUIRE_FALSE(batch::min_max8(x, n, mins, maxs, finite));  // no scalar batch path
        }
        REQUIRE(batch::min_max8(x, n, mins, maxs, finite));
        for (int j = 0; j < batch::lanes; ++j) {
            float mn = 0.0f, mx = 0.0f;
            double sum = 0.0;
            const bool dense = qaq::backend::affine::dense_statistics_scalar(x[j], n, false, mn, mx, sum);
            bool huge = false;
            for (float v : groups[static_cast<std::size_t>(j)]) huge |= std::isfinite(v) && std::fabs(v) > 1e36f;
            INFO("trial " << trial << " group " << j);
            if (finite >> j & 1u) {
                REQUIRE(dense);
                REQUIRE(bits_of(mins[j]) == bits_of(mn));
                REQUIRE(bits_of(maxs[j]) == bits_of(mx));
            } else {
                REQUIRE((!dense || huge));  // left to the general path only for a reason
            }
        }
    }
    const float* none[batch::lanes] = {};
    float mins[batch::lanes], maxs[batch::lanes];
    unsigned finite = 0;
    REQUIRE_FALSE(batch::min_max8(none, 12, mins, maxs, finite));  // n % 8 != 0: no batch path
}

namespace {

// min and max for the fit: ordinary ranges, tiny and subnormal ones, constant groups, values
// at the bound, and maxima right at the top of a candidate grid (where fit() steps s up).
void fit_inputs(std::mt19937& rng, int width, float& mn, float& mx) {
    const float bound = batch::zero_point_fit_bound;
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const int kind = static_cast<int>(rng() % 6);
    if (kind == 0) {
        mn = std::ldexp(u(rng), static_cast<int>(rng() % 40) - 30);
        mx = mn + std::ldexp(std::fabs(u(rng)), static_cast<int>(rng() % 40) - 30);
    } else if (kind == 1) {
        mn = mx = std::ldexp(u(rng), static_cast<int>(rng() % 20) - 10);
    } else if (kind == 2) {
        mn = u(rng) * 1e-6f;
        mx = mn + std::fabs(u(rng)) * 1e-6f;
    } else if (kind == 3) {
        mn = -bound * std::fabs(u(rng));
        mx = bound * (rng() % 2 ? 1.0f : std::fabs(u(rng)));
    } else {
        // z and s fp16 values, max at or around z + steps * s.
        const float z = qaq::round_to(qaq::storage_precision::fp16, std::ldexp(u(rng), static_cast<int>(rng() % 12) - 6));
        const float s = qaq::round_to(qaq::storage_precision::fp16, std::ldexp(std::fabs(u(rng)) + 0.01f, -static_cast<int>(rng() % 12)));
        const float steps = static_cast<float>((1u << width) - 1u);
        mn = z;
        mx = z + steps * s;
        for (int k = static_cast<int>(rng() % 5) - 2; k != 0; k += k > 0 ? -1 : 1)
            mx = std::nextafter(mx, k > 0 ? infinity : -infinity);
        if (!(mx >= mn)) mx = mn;
    }
    if (!(std::fabs(mn) <= bound)) mn = std::copysign(bound, mn);
    if (!(std::fabs(mx) <= bound)) mx = std::copysign(bound, mx);
    if (mx < mn) std::swap(mn, mx);
    mn += 0.0f, mx += 0.0f;
}

}  // namespace

TEST_CASE("vectorised zero-point fit equals fit() per group", "[fast_paths][batch]") {
    if (!simd::avx2_supported()) return;  // F16C: no vector fit to compare
    const qaq::storage::uniform_zero_point codec{false, qaq::storage_precision::fp16};
    std::mt19937 rng(61);
    int fitted_lanes = 0, stepped_lanes = 0;
    for (int trial = 0; trial < 20000; ++trial) {
        alignas(32) float mins[8], maxs[8];
        alignas(32) int widths[8];
        for (int j = 0; j < 8; ++j) {
            widths[j] = static_cast<int>(rng() % 17);
            fit_inputs(rng, widths[j] == 0 ? 1 : widths[j], mins[j], maxs[j]);
        }
        batch::zero_point_fits f;
        {
            const simd::scoped_simd off(false);
            REQUIRE_FALSE(batch::fit_zero_point_fp16(mins, maxs, widths, f));
        }
        REQUIRE(batch::fit_zero_point_fp16(mins, maxs, widths, f));
        for (int j = 0; j < 8; ++j) {
            qaq::group_statistics s;
            s.count = 64;
            s.min = mins[j];
            s.max = maxs[j];
            s.absmax = std::max(std::fabs(s.min), std::fabs(s.max));
            INFO("min " << s.min << " max " << s.max << " width " << widths[j]);
            qaq::codec_parameters expected, expected_off;
            REQUIRE_NOTHROW(expected = codec.fit(s, widths[j]));  // within the bound fit() never throws
            {
                const simd::scoped_simd off(false);  // Eigen::half's rounding: the same values
                expected_off = codec.fit(s, widths[j]);
            }
            REQUIRE(bits_of(expected.centre) == bits_of(expected_off.centre));
            REQUIRE(bits_of(expected.scale) == bits_of(expected_off.scale));
            if (!(f.fitted >> j & 1u)) {
                // Left to fit() only where it steps s up, for width 0, or for s = 0.
                REQUIRE((widths[j] == 0 || !(expected.scale > 0.0f) || bits_of(expected.scale) != bits_of(f.scale[j])));
                stepped_lanes += widths[j] != 0 && expected.scale > 0.0f;
                continue;
            }
            ++fitted_lanes;
            REQUIRE(widths[j] >= 1);
            REQUIRE(bits_of(f.centre[j]) == bits_of(expected.centre));
            REQUIRE(bits_of(f.scale[j]) == bits_of(expected.scale));
            const qaq::affine_code a = codec.affine(expected, widths[j]);
            REQUIRE(bits_of(f.steps[j]) == bits_of(a.highest));
            const float inverse = 1.0f / a.scale;
            REQUIRE(bits_of(f.inverse[j]) == bits_of(inverse));
            const bool in_range = (s.min - a.centre) * inverse >= a.lowest && (s.max - a.centre) * inverse <= a.highest;
            REQUIRE(((f.in_range >> j & 1u) != 0) == in_range);
            float stored[2];
            codec.store(expected, stored);
            std::uint8_t bytes[4];
            qaq::store_value(qaq::storage_precision::fp16, stored[0], bytes);
            qaq::store_value(qaq::storage_precision::fp16, stored[1], bytes + 2);
            REQUIRE(std::memcmp(bytes, f.stored + 2 * j, 4) == 0);
        }
    }
    INFO("fitted " << fitted_lanes << ", stepped up by fit() " << stepped_lanes);
    REQUIRE(fitted_lanes > 50000);
    REQUIRE(stepped_lanes > 0);  // the inputs reach fit()'s steps up
}

TEST_CASE("encode with a given reciprocal equals the scalar definition", "[fast_paths][batch]") {
    namespace affine = qaq::backend::affine;
    std::mt19937 rng(67);
    for (int trial = 0; trial < 3000; ++trial) {
        const int width = 1 + trial % 16;
        const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % 140);
        qaq::affine_code a;
        a.centre = std::normal_distribution<float>(0.0f, 2.0f)(rng);
        a.scale = std::exp(std::uniform_real_distribution<float>(-6.0f, 1.0f)(rng));
        a.highest = static_cast<float>((1u << width) - 1u);
        std::vector<float> x(static_cast<std::size_t>(n));
        std::uniform_real_distribution<float> u(-0.7f, a.highest + 0.7f);  // some beyond the grid: clamped
        for (auto& v : x) v = a.centre + (rng() % 3 ? u(rng) : std::floor(u(rng)) + 0.5f) * a.scale;
        float lo = infinity, hi = -infinity;
        for (float v : x) lo = std::min(lo, v), hi = std::max(hi, v);
        const float inverse = 1.0f / a.scale;
        const bool in_range = (lo - a.centre) * inverse >= a.lowest && (hi - a.centre) * inverse <= a.highest;
        std::vector<std::uint32_t> codes(static_cast<std::size_t>(n)), scratch(codes.size());
        affine::affine_codes_scalar(x.data(), nullptr, n, a, codes.data());
        const std::int64_t bytes = qaq::packed_code_bytes(n, width);
        std::vector<std::uint8_t> expected(static_cast<std::size_t>(bytes) + 8, 0xCD);
        qaq::pack_codes(codes.data(), n, width, expected.data());
        for (bool on : {false, true}) {
            const simd::scoped_simd setting(on);
            std::vector<std::uint8_t> packed(expected.size(), 0xCD);
            affine::encode_with_reciprocal(x.data(), nullptr, n, width, a, inverse, in_range, scratch.data(),
                                           packed.data());
            REQUIRE(packed == expected);
        }
    }
}
