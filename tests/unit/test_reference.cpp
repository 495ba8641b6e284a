// The scalar reference (include/qaq/reference/) against expectations worked
// out by hand from docs/method.md: the arithmetic is written in the comments,
// so a test failure points at either the spec reading or the code.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "qaq/reference/normal_quantiles.hpp"
#include "qaq/reference/quantize.hpp"

namespace {

using qaq::attention_shape;
using qaq::attention_view;
using qaq::bits_kind;
using qaq::cache_role;
using qaq::codec_kind;
using qaq::group_level;
using qaq::kv_shape;
using qaq::kv_view;
using qaq::quantizer_config;
using qaq::storage_precision;
namespace ref = qaq::reference;

constexpr float inf = std::numeric_limits<float>::infinity();
constexpr float nan_value = std::numeric_limits<float>::quiet_NaN();

quantizer_config codec_config(codec_kind codec, bool symmetric,
                              storage_precision precision = storage_precision::fp32) {
    quantizer_config c;
    c.codec = codec;
    c.symmetric = symmetric;
    c.precision = precision;
    c.outlier_ratio = 0.0;
    return c;
}

std::vector<float> reconstruct(const quantizer_config& config, int bits, const std::vector<float>& group,
                               const std::vector<std::uint8_t>& mask = {}) {
    std::vector<float> out(group.size(), -12345.0f);
    ref::reconstruct_group(config, bits, group.data(), mask.empty() ? nullptr : mask.data(),
                           static_cast<std::int64_t>(group.size()), out.data());
    return out;
}

ref::result run(const quantizer_config& config, const std::vector<float>& cache, const kv_shape& shape) {
    return ref::quantize(config, kv_view<const float>::contiguous(cache.data(), shape), {});
}

ref::result run(const quantizer_config& config, const std::vector<float>& cache, const kv_shape& shape,
                const std::vector<float>& attention, const attention_shape& a_shape) {
    return ref::quantize(config, kv_view<const float>::contiguous(cache.data(), shape),
                         attention_view<const float>::contiguous(attention.data(), a_shape));
}

std::vector<std::uint8_t> mask_of(std::vector<float> group, double ratio) {
    return ref::outlier_mask(group.data(), static_cast<std::int64_t>(group.size()), ratio);
}

using mask_t = std::vector<std::uint8_t>;

}  // namespace

// ---------------------------------------------------------------------------
// normal_quantiles.hpp
// ---------------------------------------------------------------------------

TEST_CASE("inverse_normal_cdf matches high-precision quantiles", "[reference][normal]") {
    // Reference values: Phi^-1 computed to 20 digits with mpmath.
    struct known {
        double p, x;
    };
    const known table[] = {
        {0.975, 1.9599639845400542355},  {0.25, -0.6744897501960817432}, {1e-10, -6.3613409024040562047},
        {1e-20, -9.2623400897984075737}, {0.001, -3.0902323061678135415}, {0.3, -0.52440051270804078404},
        {1e-5, -4.2648907939228246285},
    };
    for (const known& k : table) {
        INFO("p = " << k.p);
        CHECK(std::fabs(ref::inverse_normal_cdf(k.p) - k.x) <= 1e-15 * std::fabs(k.x));
    }
    CHECK(ref::inverse_normal_cdf(0.5) == 0.0);
    CHECK(ref::inverse_normal_cdf(0.0) == -std::numeric_limits<double>::infinity());
    CHECK(ref::inverse_normal_cdf(1.0) == std::numeric_limits<double>::infinity());
    CHECK(std::isnan(ref::inverse_normal_cdf(-0.1)));
    CHECK(std::isnan(ref::inverse_normal_cdf(1.5)));
    CHECK(std::isnan(ref::inverse_normal_cdf(std::numeric_limits<double>::quiet_NaN())));
}

TEST_CASE("inverse_normal_cdf inverts the normal cdf across its regions", "[reference][normal]") {
    // Phi(x) = erfc(-x / sqrt 2) / 2; the lower half covers the central
    // (|p - 0.5| <= 0.425), intermediate (r <= 5) and far-tail regions of AS 241.
    // A relative error e in x moves Phi by about x^2 e relative (d ln Phi / dx ~ |x|
    // in the tail), so the tolerance grows with x^2.
    for (double p : {1e-300, 1e-100, 1e-30, 1e-12, 1e-11, 1e-6, 1e-3, 0.02, 0.07, 0.075, 0.1, 0.2, 0.3, 0.4, 0.49}) {
        const double x = ref::inverse_normal_cdf(p);
        const double back = 0.5 * std::erfc(-x / std::sqrt(2.0));
        INFO("p = " << p << ", x = " << x);
        CHECK(std::fabs(back - p) <= 1e-14 * (1.0 + x * x) * p);
        // Symmetry: Phi^-1(1 - p) = -Phi^-1(p) where 1 - p is exact enough.
        if (p >= 1e-3) CHECK(ref::inverse_normal_cdf(1.0 - p) == Approx(-x).epsilon(1e-13));
    }
}

TEST_CASE("normal codec tables", "[reference][normal]") {
    // B = 2: boundaries Phi^-1(1/4), Phi^-1(2/4), Phi^-1(3/4), Phi^-1(1) = +Inf;
    // centres Phi^-1(1/8), Phi^-1(3/8), Phi^-1(5/8), Phi^-1(7/8).
    const std::vector<float> expected_boundaries{-0.6744897501960817f, 0.0f, 0.6744897501960817f, inf};
    const std::vector<float> expected_centres{-1.1503493803760079f, -0.3186393639643752f, 0.3186393639643752f,
                                              1.1503493803760079f};
    CHECK(ref::normal_boundaries(2) == expected_boundaries);
    CHECK(ref::normal_centres(2) == expected_centres);

    // B = 0: one bin, boundary +Inf, centre Phi^-1(0.5) = 0.
    CHECK(ref::normal_boundaries(0) == std::vector<float>{inf});
    CHECK(ref::normal_centres(0) == std::vector<float>{0.0f});

    const std::vector<float> b16 = ref::normal_boundaries(16);
    const std::vector<float> c16 = ref::normal_centres(16);
    REQUIRE(b16.size() == 65536);
    REQUIRE(c16.size() == 65536);
    CHECK(b16.back() == inf);
    for (std::size_t i = 1; i < b16.size(); ++i) REQUIRE(b16[i - 1] <= b16[i]);
    for (std::size_t i = 0; i + 1 < c16.size(); ++i) {
        REQUIRE(c16[i] <= b16[i]);  // each centre lies inside its bin
        REQUIRE(b16[i] <= c16[i + 1]);
    }

    CHECK_THROWS_AS(ref::normal_boundaries(17), qaq::error);
    CHECK_THROWS_AS(ref::normal_centres(-1), qaq::error);
}

// ---------------------------------------------------------------------------
// Outliers
// ---------------------------------------------------------------------------

TEST_CASE("outlier thresholds for N = 10, a = 0.2", "[reference][outliers]") {
    // k_lo = ceil(0.1 * 10) = 1, k_hi = floor(0.9 * 10) = 9.
    // Sorted 1..10: lo = 1, hi = 9 -> outliers are 1 (x <= 1) and 10 (x > 9).
    const std::vector<float> group{5, 3, 9, 1, 7, 2, 8, 6, 4, 10};
    CHECK(mask_of(group, 0.2) == mask_t{0, 0, 0, 1, 0, 0, 0, 0, 0, 1});

    // a = 0.3: k_lo = ceil(0.15 * 10) = ceil(1.5) = 2 -> lo = 2;
    // k_hi = floor(0.85 * 10) = floor(8.5) = 8 -> hi = 8 -> outliers 1, 2, 9, 10.
    CHECK(mask_of(group, 0.3) == mask_t{0, 0, 1, 1, 0, 1, 0, 0, 0, 1});

    // a = 0: nothing.
    CHECK(mask_of(group, 0.0) == mask_t(10, 0));
}

TEST_CASE("outlier thresholds with duplicates and small groups", "[reference][outliers]") {
    // N = 10, a = 0.2: lo = 1st smallest = 1, so all three 1s are outliers;
    // hi = 9th smallest = 7, and no value is > 7, so there is no upper outlier.
    CHECK(mask_of({1, 1, 1, 2, 3, 4, 5, 6, 7, 7}, 0.2) == mask_t{1, 1, 1, 0, 0, 0, 0, 0, 0, 0});

    // N = 4, a = 0.5: k_lo = ceil(1) = 1 -> lo = 1; k_hi = floor(3) = 3 -> hi = 3.
    CHECK(mask_of({4, 1, 3, 2}, 0.5) == mask_t{1, 1, 0, 0});

    // N = 1, a = 0.5: k_lo = ceil(0.25) = 1 -> lo = x; k_hi = floor(0.75) = 0 -> hi = -Inf.
    CHECK(mask_of({42}, 0.5) == mask_t{1});

    // Constant group, a > 0: lo = the value, every x <= lo -> all outliers.
    CHECK(mask_of({2, 2, 2, 2}, 0.01) == mask_t{1, 1, 1, 1});

    // Empty group.
    CHECK(mask_of({}, 0.2).empty());
}

TEST_CASE("non-finite values are always outliers", "[reference][outliers]") {
    // a = 0: exactly the non-finite ones.
    CHECK(mask_of({nan_value, 1, 2, inf, -inf, 3}, 0.0) == mask_t{1, 0, 0, 1, 1, 0});
    // a = 0.5 over the N = 3 finite values {1, 2, 3}: k_lo = ceil(0.75) = 1 -> lo = 1;
    // k_hi = floor(0.75 * 3) = floor(2.25) = 2 -> hi = 2: 1 and 3 are outliers too.
    CHECK(mask_of({nan_value, 1, 2, inf, -inf, 3}, 0.5) == mask_t{1, 1, 0, 1, 1, 1});
    // Only non-finite values.
    CHECK(mask_of({nan_value, inf}, 0.1) == mask_t{1, 1});
}

// ---------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------

TEST_CASE("statistics over non-outliers", "[reference][statistics]") {
    // Non-outliers {1, 2, 3}: mean 2, sample std sqrt((1 + 0 + 1) / 2) = 1.
    const std::vector<float> group{1, 2, 3, 100};
    const mask_t mask{0, 0, 0, 1};
    const ref::group_statistics s = ref::statistics(group.data(), mask.data(), 4);
    CHECK(s.count == 3);
    CHECK(s.min == 1.0f);
    CHECK(s.max == 3.0f);
    CHECK(s.absmax == 3.0f);
    CHECK(s.mean == 2.0f);
    CHECK(s.std == 1.0f);
    CHECK(s.range(false) == 2.0f);  // max - min
    CHECK(s.range(true) == 6.0f);   // 2 * absmax

    // absmax of a negative value; null mask = no outliers.
    const std::vector<float> negative{-5, 1, 2};
    const ref::group_statistics n = ref::statistics(negative.data(), nullptr, 3);
    CHECK(n.absmax == 5.0f);
    CHECK(n.range(true) == 10.0f);
    CHECK(n.range(false) == 7.0f);

    // One non-outlier: std 0. None: everything 0, range 0.
    const mask_t one{1, 0, 1};
    CHECK(ref::statistics(negative.data(), one.data(), 3).std == 0.0f);
    const mask_t all{1, 1, 1};
    const ref::group_statistics empty = ref::statistics(negative.data(), all.data(), 3);
    CHECK(empty.count == 0);
    CHECK(empty.range(false) == 0.0f);
    CHECK(empty.range(true) == 0.0f);
    CHECK(empty.mean == 0.0f);
}

TEST_CASE("statistics accumulate in double", "[reference][statistics]") {
    // 2^24 + 1 + 1 + 1 + 1: a float32 running sum stays at 2^24 (each +1 rounds
    // back to even) and would give 3355443.2; in double the sum is 16777220 and
    // the mean 3355444 exactly.
    const std::vector<float> group{16777216.0f, 1, 1, 1, 1};
    CHECK(ref::statistics(group.data(), nullptr, 5).mean == 3355444.0f);
}

// ---------------------------------------------------------------------------
// Codecs, one 4-element group at 2 bits: x = {-1, 0, 1, 4}
// min -1, max 4, mean 1, range 5, sample std sqrt((4 + 1 + 0 + 9) / 3) = 2.1602469
// ---------------------------------------------------------------------------

TEST_CASE("uniform_mean_centred codec by hand", "[reference][codec]") {
    const std::vector<float> x{-1, 0, 1, 4};
    SECTION("asymmetric, 2 bits: c = 1, s = 5 / 4 = 1.25, q in [-2, 1]") {
        // (x - 1) / 1.25 = -1.6, -0.8, 0, 2.4 -> rint -2, -1, 0, 2 -> clamp -2, -1, 0, 1 (top clips)
        // x' = q * 1.25 + 1 = -1.5, -0.25, 1, 2.25
        CHECK(reconstruct(codec_config(codec_kind::uniform_mean_centred, false), 2, x) ==
              std::vector<float>{-1.5f, -0.25f, 1.0f, 2.25f});
    }
    SECTION("symmetric, 2 bits: c = 0, s = 2 * 4 / 4 = 2") {
        // x / 2 = -0.5, 0, 0.5, 2 -> rint (half to even) -0, 0, 0, 2 -> clamp to 1 -> x' = 0, 0, 0, 2
        CHECK(reconstruct(codec_config(codec_kind::uniform_mean_centred, true), 2, x) ==
              std::vector<float>{0.0f, 0.0f, 0.0f, 2.0f});
    }
    SECTION("0 bits: c - R / 2, as the original under torch.clamp's float promotion") {
        // asymmetric: s = 5 / 2^0 = 5, x' = -0.5 * 5 + 1 = -1.5; symmetric: s = 8, x' = -4
        CHECK(reconstruct(codec_config(codec_kind::uniform_mean_centred, false), 0, x) ==
              std::vector<float>{-1.5f, -1.5f, -1.5f, -1.5f});
        CHECK(reconstruct(codec_config(codec_kind::uniform_mean_centred, true), 0, x) ==
              std::vector<float>{-4, -4, -4, -4});
    }
}

TEST_CASE("uniform_zero_point codec by hand", "[reference][codec]") {
    SECTION("asymmetric, 2 bits: z = -1, s = 5 / 3") {
        // (x + 1) / (5/3) = 0, 0.6, 1.2, 3 -> q = 0, 1, 1, 3 -> x' = -1, 2/3, 2/3, 4
        const auto out = reconstruct(codec_config(codec_kind::uniform_zero_point, false), 2, {-1, 0, 1, 4});
        CHECK(out[0] == -1.0f);
        CHECK(out[1] == Approx(2.0 / 3.0).epsilon(1e-6));
        CHECK(out[2] == Approx(2.0 / 3.0).epsilon(1e-6));
        CHECK(out[3] == Approx(4.0).epsilon(1e-6));
    }
    SECTION("symmetric, 2 bits: absmax 3, z = -3, s = 6 / 3 = 2") {
        // (x + 3) / 2 = 0, 1, 1.75, 2.5 -> rint 0, 1, 2, 2 (2.5 -> 2, half to even) -> x' = -3, -1, 1, 1
        CHECK(reconstruct(codec_config(codec_kind::uniform_zero_point, true), 2, {-3, -1, 0.5f, 2}) ==
              std::vector<float>{-3, -1, 1, 1});
    }
    SECTION("0 bits: the midpoint (0 if symmetric)") {
        // min -1, max 4: -1 + 5 / 2 = 1.5
        CHECK(reconstruct(codec_config(codec_kind::uniform_zero_point, false), 0, {-1, 0, 1, 4}) ==
              std::vector<float>{1.5f, 1.5f, 1.5f, 1.5f});
        CHECK(reconstruct(codec_config(codec_kind::uniform_zero_point, true), 0, {-1, 0, 1, 4}) ==
              std::vector<float>{0, 0, 0, 0});
    }
}

TEST_CASE("normal codec by hand", "[reference][codec]") {
    const std::vector<float> x{-1, 0, 1, 4};
    // Boundaries (B = 2): -0.6744898, 0, 0.6744898, +Inf.
    // Centres: -1.1503494, -0.3186394, 0.3186394, 1.1503494.
    SECTION("asymmetric, 2 bits: c = 1, s = 2.1602469") {
        // z = (x - 1) / s = -0.9258, -0.4629, 0, 1.3887
        // first boundary >= z: index 0, 1, 1 (z = 0 equals boundary 1), 3
        // x' = centre * s + 1 = -1.4850385, 0.3116603, 0.3116603, 3.4850385
        const auto out = reconstruct(codec_config(codec_kind::normal, false), 2, x);
        CHECK(out[0] == Approx(-1.4850385).epsilon(1e-6));
        CHECK(out[1] == Approx(0.3116603).epsilon(1e-6));
        CHECK(out[2] == Approx(0.3116603).epsilon(1e-6));
        CHECK(out[3] == Approx(3.4850385).epsilon(1e-6));
    }
    SECTION("symmetric, 2 bits: c = 0, s = std around the mean = 2.1602469") {
        // z = x / s = -0.4629, 0, 0.4629, 1.8516 -> index 1, 1, 2, 3
        // x' = -0.3186394 s, -0.3186394 s, 0.3186394 s, 1.1503494 s
        const auto out = reconstruct(codec_config(codec_kind::normal, true), 2, x);
        CHECK(out[0] == Approx(-0.6883397).epsilon(1e-6));
        CHECK(out[1] == Approx(-0.6883397).epsilon(1e-6));
        CHECK(out[2] == Approx(0.6883397).epsilon(1e-6));
        CHECK(out[3] == Approx(2.4850385).epsilon(1e-6));
    }
    SECTION("0 bits: the centre") {
        CHECK(reconstruct(codec_config(codec_kind::normal, false), 0, x) == std::vector<float>{1, 1, 1, 1});
        CHECK(reconstruct(codec_config(codec_kind::normal, true), 0, x) == std::vector<float>{0, 0, 0, 0});
    }
}

TEST_CASE("constant group reconstructs at its centre, in storage precision", "[reference][codec]") {
    // {0.1, 0.1, 0.1, 0.1}, a = 0: range 0 -> s = 0 -> x' = c (mean, or z = min).
    // fp32 keeps 0.1f; fp16 stores the mean as fp16(0.1) = 1638 / 1024 * 2^-4 = 0.0999755859375.
    const std::vector<float> group(4, 0.1f);
    for (codec_kind codec : {codec_kind::uniform_mean_centred, codec_kind::uniform_zero_point, codec_kind::normal}) {
        INFO("codec " << qaq::to_string(codec));
        CHECK(reconstruct(codec_config(codec, false, storage_precision::fp32), 3, group) ==
              std::vector<float>(4, 0.1f));
        if (codec == codec_kind::uniform_zero_point) continue;  // fp16: below
        CHECK(reconstruct(codec_config(codec, false, storage_precision::fp16), 3, group) ==
              std::vector<float>(4, 0.0999755859375f));
    }
    // Zero point with fp16 parameters: z = 0.1 rounded down = 0.0999755859375, below max = 0.1,
    // so s = (0.1f - z) / 7 = 3.4879e-6 rounded up to fp16 (a subnormal) = 59 * 2^-24, and
    // q = rint(6.94) = 7: x' = 7 s + z = 0.10000020265579224, within s/2 of 0.1 (finding 5).
    CHECK(reconstruct(codec_config(codec_kind::uniform_zero_point, false, storage_precision::fp16), 3, group) ==
          std::vector<float>(4, 0.10000020265579224f));
}

TEST_CASE("fp16 storage rounds parameters before encoding", "[reference][codec][fp16]") {
    // {0, 0.3}, 1 bit, mean-centred: mean = 0.15, s = 0.3 / 2 = 0.15.
    // fp16(0.15) = round(1.2 * 1024) / 1024 / 8 = 1229 / 8192 = 0.1500244140625 for both c and s.
    // x = 0: q = rint((0 - c) / s) = -1 -> x' = -s + c = 0.
    // x = 0.3: q = rint(0.99967) = 1 -> clamp to 0 -> x' = c.
    const std::vector<float> group{0.0f, 0.3f};
    CHECK(reconstruct(codec_config(codec_kind::uniform_mean_centred, false, storage_precision::fp16), 1, group) ==
          std::vector<float>{0.0f, 0.1500244140625f});
    CHECK(reconstruct(codec_config(codec_kind::uniform_mean_centred, false, storage_precision::fp32), 1, group) ==
          std::vector<float>{0.0f, 0.15f});

    // Zero point, 1 bit, {0.1, 1.1}: z = 0.1 rounded down to fp16 = 0.0999755859375 (the nearest is
    // below 0.1 already), s = (1.1 - z) / 1 = 1.0000244 rounded up to fp16 = 1 + 2^-10 = 1.0009765625.
    // x = 0.1: q = rint(0.0000244 / s) = 0 -> z; x = 1.1: q = 1 -> s + z = 1.1009521484375.
    CHECK(reconstruct(codec_config(codec_kind::uniform_zero_point, false, storage_precision::fp16), 1,
                      {0.1f, 1.1f}) == std::vector<float>{0.0999755859375f, 1.1009521484375f});
}

TEST_CASE("outliers are written back exact (fp32) or as the nearest fp16", "[reference][codec][fp16]") {
    // {0.1, 1, 2, 3}, a = 0.5: lo = 1st smallest = 0.1, hi = 3rd smallest = 2 -> outliers 0.1 and 3.
    const std::vector<float> group{0.1f, 1, 2, 3};
    const mask_t mask = mask_of(group, 0.5);
    REQUIRE(mask == mask_t{1, 0, 0, 1});
    // Non-outliers {1, 2}, mean-centred 1 bit: c = 1.5, s = 0.5: 1 -> q = -1 -> 1; 2 -> q = 1 -> 0 -> 1.5.
    CHECK(reconstruct(codec_config(codec_kind::uniform_mean_centred, false, storage_precision::fp32), 1, group,
                      mask) == std::vector<float>{0.1f, 1.0f, 1.5f, 3.0f});
    // fp16: 0.1 -> 0.0999755859375; 1, 1.5, 3 are exact in fp16.
    CHECK(reconstruct(codec_config(codec_kind::uniform_mean_centred, false, storage_precision::fp16), 1, group,
                      mask) == std::vector<float>{0.0999755859375f, 1.0f, 1.5f, 3.0f});
}

TEST_CASE("all-outlier group is stored exactly", "[reference][codec]") {
    // {2.1 x 4}, a = 0.1: k_lo = ceil(0.2) = 1 -> lo = 2.1, every x <= lo -> all outliers.
    // fp16(2.1) = (1 + 51 / 1024) * 2 = 2.099609375.
    const std::vector<float> group(4, 2.1f);
    const mask_t mask = mask_of(group, 0.1);
    REQUIRE(mask == mask_t(4, 1));
    CHECK(ref::statistics(group.data(), mask.data(), 4).range(false) == 0.0f);
    for (codec_kind codec : {codec_kind::uniform_mean_centred, codec_kind::uniform_zero_point, codec_kind::normal}) {
        CHECK(reconstruct(codec_config(codec, false, storage_precision::fp32), 4, group, mask) ==
              std::vector<float>(4, 2.1f));
        CHECK(reconstruct(codec_config(codec, true, storage_precision::fp16), 4, group, mask) ==
              std::vector<float>(4, 2.099609375f));
    }

    // Through quantize: one head group, every element an outlier.
    quantizer_config config = codec_config(codec_kind::uniform_mean_centred, false);
    config.outlier_ratio = 0.1;
    const ref::result r = run(config, group, {1, 1, 1, 1, 4});
    CHECK(r.dequantized == group);
    CHECK(r.outlier_mask == mask_t(4, 1));
}

TEST_CASE("fp16 parameter overflow is an error, fp32 is not", "[reference][codec][fp16]") {
    // mean-centred asymmetric 2 bits over {0, 600000}: s = 150000 > 65504 (largest fp16).
    const std::vector<float> group{0.0f, 600000.0f};
    CHECK_THROWS_WITH(
        reconstruct(codec_config(codec_kind::uniform_mean_centred, false, storage_precision::fp16), 2, group),
        Catch::Contains("fp16"));
    CHECK_NOTHROW(
        reconstruct(codec_config(codec_kind::uniform_mean_centred, false, storage_precision::fp32), 2, group));
}

// ---------------------------------------------------------------------------
// Bit allocation
// ---------------------------------------------------------------------------

TEST_CASE("value_attention bit width by hand", "[reference][bits]") {
    quantizer_config config;
    config.role = cache_role::value;
    config.bits = bits_kind::value_attention;
    config.bits_min = 0;
    config.bits_max = 8;
    config.target_error = 0.1;
    // R = 2, A = 0.5, T = 12: E = sqrt(12 / 12) * 0.1 / 0.5 = 0.2; R / (2E) = 5; log2(6) = 2.585 -> 3.
    CHECK(ref::value_attention_bits(2.0f, 0.5f, 12, config) == 3);
    // Clamped to bits_max = 2.
    config.bits_max = 2;
    CHECK(ref::value_attention_bits(2.0f, 0.5f, 12, config) == 2);
    // A = 0: E = Inf -> log2(1) = 0 -> bits_min (1).
    config.bits_max = 8;
    config.bits_min = 1;
    CHECK(ref::value_attention_bits(2.0f, 0.0f, 12, config) == 1);
    // R = 0 -> bits_min.
    CHECK(ref::value_attention_bits(0.0f, 0.5f, 12, config) == 1);
    // R = 1, A = 1, T = 3, eps = 0.5: E = sqrt(4) * 0.5 = 1; R / 2E = 0.5; log2(1.5) = 0.585 -> 1.
    config.bits_min = 0;
    config.target_error = 0.5;
    CHECK(ref::value_attention_bits(1.0f, 1.0f, 3, config) == 1);
    // Same E, R = 60, A = 0.9: 60 * 0.9 / 2 = 27; log2(28) = 4.807 -> 5.
    CHECK(ref::value_attention_bits(60.0f, 0.9f, 3, config) == 5);

    CHECK_THROWS_AS(ref::value_attention_bits(1.0f, -0.5f, 3, config), qaq::error);
    CHECK_THROWS_AS(ref::value_attention_bits(1.0f, 0.5f, 0, config), qaq::error);
}

TEST_CASE("key_query_norm bit width by hand", "[reference][bits]") {
    quantizer_config config;
    config.role = cache_role::key;
    config.bits = bits_kind::key_query_norm;
    config.bits_min = 0;
    config.bits_max = 8;
    config.target_error = 1.0;
    config.q_norm = 12.0;
    // T = 2: E = sqrt(12 / 12 * ln(8 / 1 * 1 + 1)) = sqrt(ln 9) = 1.4823038; 2E = 2.9646076;
    // R = 10: 10 / 2.9646076 + 1 = 4.3731277; log2 = 2.1287 -> 3.
    CHECK(ref::key_query_norm_bits(10.0f, 2, config) == 3);
    // R = 0 -> log2(1) = 0 -> bits_min.
    CHECK(ref::key_query_norm_bits(0.0f, 2, config) == 0);
    // Clamp: bits_min = 4 lifts the 3 above.
    config.bits_min = 4;
    CHECK(ref::key_query_norm_bits(10.0f, 2, config) == 4);
    // T = 1: the formula divides by T - 1 = 0 -> bits_max.
    CHECK(ref::key_query_norm_bits(10.0f, 1, config) == 8);
    CHECK(ref::key_query_norm_bits(0.0f, 1, config) == 8);
}

namespace {

// A value cache where every head holds {0, 60, 0, 60} (range 60), with
// eps = 0.5 and T = 3: E = sqrt(12 / 3) * 0.5 / A = 1 / A, so
// bits = ceil(log2(60 A / 2 + 1)) = ceil(log2(30 A + 1)):
//   A = 0    -> 0 (bits_min)
//   A = 0.02 -> log2(1.6) = 0.68 -> 1
//   A = 0.05 -> log2(2.5) = 1.32 -> 2
//   A = 0.2  -> log2(7)   = 2.81 -> 3
//   A = 0.4  -> log2(13)  = 3.70 -> 4
//   A = 0.9  -> log2(28)  = 4.81 -> 5
quantizer_config value_attention_config(group_level level, int window) {
    quantizer_config config;
    config.role = cache_role::value;
    config.level = level;
    config.group_dims = 2;
    config.codec = codec_kind::uniform_mean_centred;
    config.bits = bits_kind::value_attention;
    config.window = window;
    config.target_error = 0.5;
    config.bits_min = 0;
    config.bits_max = 8;
    config.precision = storage_precision::fp32;
    return config;
}

std::vector<float> heads_of_0_60(const kv_shape& shape) {
    std::vector<float> cache(static_cast<std::size_t>(shape.element_count()));
    for (std::size_t i = 0; i < cache.size(); ++i) cache[i] = (i % 2 == 0) ? 0.0f : 60.0f;
    return cache;
}

}  // namespace

TEST_CASE("value_attention: GQA max over query heads, the window, and no history", "[reference][bits]") {
    // L = 1, B = 1, H = 2 KV heads, T = 3, D = 4; Hq = 4 (q0, q1 -> head 0; q2, q3 -> head 1);
    // 3 attention rows, window n = 2 (rows 1 and 2 count; row 0 does not).
    const kv_shape shape{1, 1, 2, 3, 4};
    const std::vector<float> cache = heads_of_0_60(shape);
    const attention_shape a_shape{1, 1, 4, 3, 3};
    std::vector<float> attention(4 * 3 * 3, 0.0f);
    auto at = [&](int q, int row, int t) -> float& { return attention[static_cast<std::size_t>((q * 3 + row) * 3 + t)]; };
    // token 0, head 0: q0 row 0 = 0.9 (outside the window), q1 row 1 = 0.2, q0 row 2 = 0.05 -> P = 0.2 -> 3 bits
    at(0, 0, 0) = 0.9f;
    at(1, 1, 0) = 0.2f;
    at(0, 2, 0) = 0.05f;
    // token 0, head 1: q2 row 1 = 0.02, q3 row 2 = 0.4 -> P = 0.4 -> 4 bits
    at(2, 1, 0) = 0.02f;
    at(3, 2, 0) = 0.4f;
    // token 1, head 0: only q1 row 0 = 0.9, outside the window -> P = 0 -> 0 bits
    at(1, 0, 1) = 0.9f;
    // token 1, head 1: q2 row 2 = 0.9 -> 5 bits
    at(2, 2, 1) = 0.9f;
    // token 2 is one of the last n - 1 = 1 tokens: no history -> bits_max = 8, whatever its attention.

    SECTION("head level: bits [B, T, L, H]") {
        const ref::result r = run(value_attention_config(group_level::head, 2), cache, shape, attention, a_shape);
        CHECK(r.bits_shape == std::vector<std::int64_t>{1, 3, 1, 2});
        CHECK(r.bits == std::vector<int>{3, 4, 0, 5, 8, 8});
    }
    SECTION("layer level: A = max over the heads of the layer") {
        // token 0: max(0.2, 0.4) = 0.4 -> 4; token 1: max(0, 0.9) -> 5; token 2: 8.
        const ref::result r = run(value_attention_config(group_level::layer, 2), cache, shape, attention, a_shape);
        CHECK(r.bits_shape == std::vector<std::int64_t>{1, 3, 1});
        CHECK(r.bits == std::vector<int>{4, 5, 8});
    }
    SECTION("token level") {
        const ref::result r = run(value_attention_config(group_level::token, 2), cache, shape, attention, a_shape);
        CHECK(r.bits_shape == std::vector<std::int64_t>{1, 3});
        CHECK(r.bits == std::vector<int>{4, 5, 8});
    }
    SECTION("sub_head level, G = 2: each half-head has range 60 and its head's P") {
        const ref::result r = run(value_attention_config(group_level::sub_head, 2), cache, shape, attention, a_shape);
        CHECK(r.bits_shape == std::vector<std::int64_t>{1, 3, 1, 2, 2});
        CHECK(r.bits == std::vector<int>{3, 3, 4, 4, 0, 0, 5, 5, 8, 8, 8, 8});
    }
}

TEST_CASE("value_attention: a window longer than the rows uses every row", "[reference][bits]") {
    // H = Hq = 1, T = 3, 2 rows, window 3: both rows count for token 0 (max(0.9, 0.02) = 0.9 -> 5);
    // no history: tokens t >= 3 - (3 - 1) = 1 get bits_max.
    const kv_shape shape{1, 1, 1, 3, 4};
    const std::vector<float> attention{0.9f, 0.0f, 0.0f,   // row 0
                                       0.02f, 0.0f, 0.0f};  // row 1
    const ref::result r = run(value_attention_config(group_level::head, 3), heads_of_0_60(shape), shape, attention,
                              {1, 1, 1, 2, 3});
    CHECK(r.bits == std::vector<int>{5, 8, 8});
}

TEST_CASE("groups are enumerated in the order (b, t, l, h)", "[reference][bits]") {
    // L = 2, B = 2, H = 1, T = 3, D = 4, window 1 (no token lacks history), one row.
    // P(l, b, t) is chosen from the table above; bits must come out indexed (b, t, l).
    const kv_shape shape{2, 2, 1, 3, 4};
    const float a_values[6] = {0.0f, 0.02f, 0.05f, 0.2f, 0.4f, 0.9f};  // -> 0, 1, 2, 3, 4, 5 bits
    auto pick = [](int l, int b, int t) { return (l * 4 + b * 2 + t * 5) % 6; };
    std::vector<float> attention(2 * 2 * 1 * 1 * 3);
    for (int l = 0; l < 2; ++l)
        for (int b = 0; b < 2; ++b)
            for (int t = 0; t < 3; ++t) attention[static_cast<std::size_t>((l * 2 + b) * 3 + t)] = a_values[pick(l, b, t)];
    const attention_shape a_shape{2, 2, 1, 1, 3};

    std::vector<int> expected_head, expected_token;
    for (int b = 0; b < 2; ++b)
        for (int t = 0; t < 3; ++t) {
            for (int l = 0; l < 2; ++l) expected_head.push_back(pick(l, b, t));
            expected_token.push_back(std::max(pick(0, b, t), pick(1, b, t)));  // bits grow with A
        }
    const ref::result head = run(value_attention_config(group_level::head, 1), heads_of_0_60(shape), shape,
                                 attention, a_shape);
    CHECK(head.bits_shape == std::vector<std::int64_t>{2, 3, 2, 1});
    CHECK(head.bits == expected_head);
    const ref::result layer = run(value_attention_config(group_level::layer, 1), heads_of_0_60(shape), shape,
                                  attention, a_shape);
    CHECK(layer.bits_shape == std::vector<std::int64_t>{2, 3, 2});
    CHECK(layer.bits == expected_head);  // H = 1: a layer group is a head group
    const ref::result token = run(value_attention_config(group_level::token, 1), heads_of_0_60(shape), shape,
                                  attention, a_shape);
    CHECK(token.bits_shape == std::vector<std::int64_t>{2, 3});
    CHECK(token.bits == expected_token);
}

TEST_CASE("key_query_norm through quantize: no history and T = 1", "[reference][bits]") {
    quantizer_config config;
    config.role = cache_role::key;
    config.bits = bits_kind::key_query_norm;
    config.bits_min = 2;
    config.bits_max = 7;
    config.window = 2;
    config.precision = storage_precision::fp32;
    SECTION("constant heads: R = 0 -> bits_min, except the last n - 1 = 1 token") {
        const kv_shape shape{1, 1, 1, 5, 2};
        const ref::result r = run(config, std::vector<float>(10, 1.0f), shape);
        CHECK(r.bits == std::vector<int>{2, 2, 2, 2, 7});
    }
    SECTION("T = 1 with window 1 gets bits_max through the T = 1 rule") {
        config.window = 1;
        const ref::result r = run(config, {0.0f, 1.0f, 2.0f, 3.0f}, {1, 1, 1, 1, 4});
        CHECK(r.bits == std::vector<int>{7});
    }
}

// ---------------------------------------------------------------------------
// quantize(): shapes, grouping, non-finite values, accounting
// ---------------------------------------------------------------------------

TEST_CASE("bits array shape per level", "[reference][quantize]") {
    const kv_shape shape{2, 1, 2, 3, 4};
    std::vector<float> cache(static_cast<std::size_t>(shape.element_count()));
    for (std::size_t i = 0; i < cache.size(); ++i) cache[i] = static_cast<float>(i % 7);
    quantizer_config config;
    config.fixed_bits = 3;
    config.group_dims = 2;
    const std::pair<group_level, std::vector<std::int64_t>> cases[] = {
        {group_level::token, {1, 3}},
        {group_level::layer, {1, 3, 2}},
        {group_level::head, {1, 3, 2, 2}},
        {group_level::sub_head, {1, 3, 2, 2, 2}},
    };
    for (const auto& c : cases) {
        config.level = c.first;
        const ref::result r = run(config, cache, shape);
        CHECK(r.bits_shape == c.second);
        std::int64_t groups = 1;
        for (std::int64_t e : c.second) groups *= e;
        CHECK(r.bits == std::vector<int>(static_cast<std::size_t>(groups), 3));
        CHECK(r.dequantized.size() == cache.size());
        CHECK(r.outlier_mask.size() == cache.size());
    }
}

TEST_CASE("sub_head groups split a head into G-dim groups", "[reference][quantize]") {
    // One head {0, 1, 100, 101}, mean-centred asymmetric, 1 bit, fp32.
    quantizer_config config = codec_config(codec_kind::uniform_mean_centred, false);
    config.fixed_bits = 1;
    const std::vector<float> cache{0, 1, 100, 101};
    const kv_shape shape{1, 1, 1, 1, 4};
    // sub_head G = 2: {0, 1}: c = 0.5, s = 0.5: 0 -> q -1 -> 0; 1 -> q 1 -> clamp 0 -> 0.5.
    //                 {100, 101}: c = 100.5, s = 0.5 -> 100, 100.5.
    config.level = group_level::sub_head;
    config.group_dims = 2;
    CHECK(run(config, cache, shape).dequantized == std::vector<float>{0, 0.5f, 100, 100.5f});
    // head: c = 50.5, s = 101 / 2 = 50.5: (x - c) / s = -1, -0.98, 0.98, 1 -> q = -1, -1, 0, 0
    //       -> x' = 0, 0, 50.5, 50.5.
    config.level = group_level::head;
    CHECK(run(config, cache, shape).dequantized == std::vector<float>{0, 0, 50.5f, 50.5f});
}

TEST_CASE("non-finite cache values are kept exactly and excluded from statistics", "[reference][quantize]") {
    // Token 0's head {NaN, 0, 1, +Inf}: finite non-outliers {0, 1}, mean-centred 1 bit:
    // c = 0.5, s = 0.5 -> 0 -> q = -1 -> 0; 1 -> q = 1 -> clamp 0 -> 0.5.
    float payload_nan;
    const std::uint32_t payload_bits = 0x7fc01234u;  // a quiet NaN with a payload
    std::memcpy(&payload_nan, &payload_bits, 4);
    const std::vector<float> cache{payload_nan, 0.0f, 1.0f, inf, -inf, 0.0f, 1.0f, 1.0f};
    quantizer_config config = codec_config(codec_kind::uniform_mean_centred, false);
    config.fixed_bits = 1;
    const ref::result r = run(config, cache, {1, 1, 1, 2, 4});
    std::uint32_t out_bits;
    std::memcpy(&out_bits, &r.dequantized[0], 4);
    CHECK(out_bits == payload_bits);  // fp32: the NaN is kept bit for bit
    CHECK(r.dequantized[1] == 0.0f);
    CHECK(r.dequantized[2] == 0.5f);
    CHECK(r.dequantized[3] == inf);
    // Second token {-Inf, 0, 1, 1}: non-outliers {0, 1, 1}: c = 2/3, s = 0.5:
    // 0 -> rint(-1.33) = -1 -> 0.1666667; 1 -> rint(0.67) = 1 -> clamp 0 -> 0.6666667.
    CHECK(r.dequantized[4] == -inf);
    CHECK(r.dequantized[5] == Approx(1.0 / 6.0).epsilon(1e-6));
    CHECK(r.dequantized[6] == Approx(2.0 / 3.0).epsilon(1e-6));
    CHECK(r.outlier_mask == mask_t{1, 0, 0, 1, 1, 0, 0, 0});

    // fp16: NaN stays NaN, infinities stay infinite.
    config.precision = storage_precision::fp16;
    const ref::result h = run(config, cache, {1, 1, 1, 2, 4});
    CHECK(std::isnan(h.dequantized[0]));
    CHECK(h.dequantized[3] == inf);
    CHECK(h.dequantized[4] == -inf);
}

TEST_CASE("bits 0 reconstructs every non-outlier at one value", "[reference][quantize]") {
    quantizer_config config = codec_config(codec_kind::uniform_mean_centred, false);
    config.fixed_bits = 0;
    // Heads {1, 2, 3, 6} (mean 3, range 5) and {-2, 0, 2, 4} (mean 1, range 6):
    // mean-centred gives mean - range / 2 = 0.5 and -2.
    const ref::result r = run(config, {1, 2, 3, 6, -2, 0, 2, 4}, {1, 1, 1, 2, 4});
    CHECK(r.dequantized == std::vector<float>{0.5f, 0.5f, 0.5f, 0.5f, -2, -2, -2, -2});
    CHECK(r.bits == std::vector<int>{0, 0});
    config.codec = codec_kind::uniform_zero_point;  // midpoints: 1 + 5 / 2 = 3.5, -2 + 6 / 2 = 1
    CHECK(run(config, {1, 2, 3, 6, -2, 0, 2, 4}, {1, 1, 1, 2, 4}).dequantized ==
          std::vector<float>{3.5f, 3.5f, 3.5f, 3.5f, 1, 1, 1, 1});
}

TEST_CASE("strided cache views are read through their strides", "[reference][quantize]") {
    // The same cache [L=1, B=1, H=2, T=2, D=2] stored token-major ([L, B, T, H, D] in memory).
    const kv_shape shape{1, 1, 2, 2, 2};
    const std::vector<float> contiguous{1, 5, 2, 7, -3, 4, 0, 9};  // [h][t][d]
    std::vector<float> token_major(8);
    for (int h = 0; h < 2; ++h)
        for (int t = 0; t < 2; ++t)
            for (int d = 0; d < 2; ++d)
                token_major[static_cast<std::size_t>((t * 2 + h) * 2 + d)] =
                    contiguous[static_cast<std::size_t>((h * 2 + t) * 2 + d)];
    kv_view<const float> strided{token_major.data(), shape, {8, 8, 2, 4, 1}};
    quantizer_config config = codec_config(codec_kind::uniform_zero_point, false);
    config.fixed_bits = 1;
    const ref::result a = ref::quantize(config, kv_view<const float>::contiguous(contiguous.data(), shape), {});
    const ref::result b = ref::quantize(config, strided, {});
    CHECK(a.dequantized == b.dequantized);
    // 1 bit zero point on a 2-element group reproduces it: z = min, s = max - min.
    CHECK(a.dequantized == contiguous);
}

TEST_CASE("reference accounting", "[reference][quantize]") {
    quantizer_config config;
    config.fixed_bits = 4;
    config.outlier_ratio = 0.1;
    const kv_shape shape{2, 1, 2, 3, 8};
    std::vector<float> cache(static_cast<std::size_t>(shape.element_count()));
    for (std::size_t i = 0; i < cache.size(); ++i) cache[i] = static_cast<float>((i * 37) % 11);

    // head, asymmetric: 4 * 0.9 + 16 * 0.1 = 5.2; + 16 * 2 / 8 = 9.2; ratio 16 / 9.2.
    ref::result r = run(config, cache, shape);
    CHECK(r.average_bits_reference == Approx(5.2));
    CHECK(r.bits_per_element_reference == Approx(9.2));
    CHECK(r.compression_ratio_reference == Approx(16.0 / 9.2));
    // symmetric: one parameter: 5.2 + 16 / 8 = 7.2.
    config.symmetric = true;
    r = run(config, cache, shape);
    CHECK(r.bits_per_element_reference == Approx(7.2));
    // token level, asymmetric: group = L * H * D = 32 elements: 5.2 + 32 / 32 = 6.2.
    config.symmetric = false;
    config.level = group_level::token;
    r = run(config, cache, shape);
    CHECK(r.bits_per_element_reference == Approx(6.2));

    // Disabled: pass-through at 16 bits.
    config.enabled = false;
    config.outlier_ratio = 5.0;  // not validated when disabled
    r = run(config, cache, shape);
    CHECK(r.dequantized == cache);
    CHECK(r.bits.empty());
    CHECK(r.bits_shape.empty());
    CHECK(r.outlier_mask == mask_t(cache.size(), 0));
    CHECK(r.average_bits_reference == 16.0);
    CHECK(r.bits_per_element_reference == 16.0);
    CHECK(r.compression_ratio_reference == 1.0);
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

TEST_CASE("quantize rejects invalid input with a message", "[reference][errors]") {
    const kv_shape shape{1, 1, 2, 3, 4};
    const std::vector<float> cache(24, 1.0f);
    quantizer_config fixed;

    SECTION("invalid config") {
        quantizer_config bad;
        bad.outlier_ratio = 1.0;
        CHECK_THROWS_WITH(run(bad, cache, shape), Catch::Contains("outlier ratio"));
    }
    SECTION("empty cache") {
        CHECK_THROWS_WITH(run(fixed, {}, {1, 1, 2, 0, 4}), Catch::Contains("empty"));
        CHECK_THROWS_WITH(run(fixed, {}, {0, 1, 2, 3, 4}), Catch::Contains("empty"));
    }
    SECTION("null cache data") {
        CHECK_THROWS_WITH(ref::quantize(fixed, kv_view<const float>::contiguous(nullptr, shape), {}),
                          Catch::Contains("null"));
    }
    SECTION("group_dims not dividing head_dim") {
        quantizer_config sub;
        sub.level = group_level::sub_head;
        sub.group_dims = 3;
        CHECK_THROWS_WITH(run(sub, cache, shape), Catch::Contains("does not divide head_dim 4"));
    }

    const quantizer_config va = value_attention_config(group_level::head, 1);
    std::vector<float> attention(1 * 1 * 2 * 1 * 3, 0.1f);
    const attention_shape good{1, 1, 2, 1, 3};
    SECTION("value_attention without attention") {
        CHECK_THROWS_WITH(run(va, cache, shape), Catch::Contains("need attention"));
    }
    SECTION("attention shape mismatch") {
        std::vector<float> big(64, 0.1f);
        CHECK_THROWS_WITH(run(va, cache, shape, big, {2, 1, 2, 1, 3}), Catch::Contains("layers"));
        CHECK_THROWS_WITH(run(va, cache, shape, big, {1, 2, 2, 1, 3}), Catch::Contains("batch"));
        CHECK_THROWS_WITH(run(va, cache, shape, big, {1, 1, 2, 1, 4}), Catch::Contains("tokens"));
        CHECK_THROWS_WITH(run(va, cache, shape, big, {1, 1, 3, 1, 3}), Catch::Contains("positive multiple"));
        CHECK_THROWS_WITH(run(va, cache, shape, big, {1, 1, 0, 1, 3}), Catch::Contains("positive multiple"));
        CHECK_THROWS_WITH(run(va, cache, shape, big, {1, 1, 2, 0, 3}), Catch::Contains("rows"));
        CHECK_NOTHROW(run(va, cache, shape, attention, good));
        CHECK_NOTHROW(run(va, cache, shape, big, {1, 1, 4, 2, 3}));  // GQA: 4 query heads over 2 KV heads
    }
    SECTION("non-finite or negative attention") {
        for (float bad : {nan_value, inf, -inf, -0.01f}) {
            attention[4] = bad;
            CHECK_THROWS_WITH(run(va, cache, shape, attention, good), Catch::Contains("expected a finite value >= 0"));
        }
    }
    SECTION("attention is ignored when the bits do not need it") {
        quantizer_config key;
        key.role = cache_role::key;
        key.bits = bits_kind::key_query_norm;
        CHECK_NOTHROW(run(key, cache, shape));
        CHECK_NOTHROW(run(fixed, cache, shape));
    }
    SECTION("building blocks check their arguments") {
        float out[4];
        CHECK_THROWS_AS(ref::reconstruct_group(fixed, 17, cache.data(), nullptr, 4, out), qaq::error);
        CHECK_THROWS_AS(ref::reconstruct_group(fixed, -1, cache.data(), nullptr, 4, out), qaq::error);
        CHECK_THROWS_AS(ref::outlier_mask(cache.data(), 4, 1.0), qaq::error);
        CHECK_THROWS_AS(ref::outlier_mask(cache.data(), 4, -0.1), qaq::error);
    }
}

// ---------------------------------------------------------------------------
// Error budget per bit width
// ---------------------------------------------------------------------------

namespace {

std::vector<float> normal_cache(const kv_shape& shape, unsigned seed) {
    std::mt19937 generator(seed);
    std::normal_distribution<float> normal(0.5f, 2.0f);
    std::vector<float> cache(static_cast<std::size_t>(shape.element_count()));
    for (float& x : cache) x = normal(generator);
    return cache;
}

/// Normal samples drawn in antithetic pairs m + z, m - z, so each group's mean
/// equals its midpoint (up to float rounding).
std::vector<float> antithetic_normal_cache(const kv_shape& shape, unsigned seed) {
    std::mt19937 generator(seed);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    std::vector<float> cache(static_cast<std::size_t>(shape.element_count()));
    for (std::size_t i = 0; i + 1 < cache.size(); i += 2) {
        const float z = normal(generator);
        cache[i] = 0.5f + z;
        cache[i + 1] = 0.5f - z;
    }
    return cache;
}

}  // namespace

TEST_CASE("zero-point codec error is at most s / 2 for 1..16 bits", "[reference][budget]") {
    // Head groups of 64 normal values, fp32 storage: every non-outlier is within
    // s / 2 of its reconstruction, s = (max - min) / (2^B - 1) or 2 absmax / (2^B - 1).
    const kv_shape shape{1, 1, 2, 16, 64};
    const std::vector<float> cache = normal_cache(shape, 1234u);
    for (bool symmetric : {false, true}) {
        quantizer_config config = codec_config(codec_kind::uniform_zero_point, symmetric);
        for (int bits = 1; bits <= 16; ++bits) {
            config.fixed_bits = bits;
            const ref::result r = run(config, cache, shape);
            double worst_excess = 0.0;
            for (std::size_t g = 0; g < cache.size(); g += 64) {
                float lo = cache[g], hi = cache[g], absmax = 0.0f;
                for (std::size_t i = g; i < g + 64; ++i) {
                    lo = std::min(lo, cache[i]);
                    hi = std::max(hi, cache[i]);
                    absmax = std::max(absmax, std::fabs(cache[i]));
                }
                const double steps = std::ldexp(1.0, bits) - 1.0;
                const double s = symmetric ? 2.0 * absmax / steps : (static_cast<double>(hi) - lo) / steps;
                const double slack = 4.0 * std::numeric_limits<float>::epsilon() * absmax;
                for (std::size_t i = g; i < g + 64; ++i) {
                    const double error = std::fabs(static_cast<double>(r.dequantized[i]) - cache[i]);
                    worst_excess = std::max(worst_excess, error - (s / 2.0 + slack));
                }
            }
            INFO("bits " << bits << (symmetric ? " symmetric" : " asymmetric"));
            CHECK(worst_excess <= 0.0);
        }
    }
}

TEST_CASE("mean-centred codec mean squared error shrinks about 4x per bit", "[reference][budget]") {
    // Uniform quantization error has variance s^2 / 12 and s halves per extra
    // bit; the top half-step clips to the top code, which also scales with s,
    // so accept a ratio in [3, 5]. The data are antithetic normal pairs: when a
    // group's mean is off its midpoint by d, the reference codec clips the far
    // tail by about d whatever B is (docs/method.md: "a skewed group can clip at
    // the top code"), an error floor that would hide the 4x law.
    const kv_shape shape{1, 1, 1, 32, 1024};
    for (bool symmetric : {false, true}) {
        const std::vector<float> cache = antithetic_normal_cache(shape, 99u);
        quantizer_config config = codec_config(codec_kind::uniform_mean_centred, symmetric);
        double previous = 0.0;
        for (int bits = 2; bits <= 8; ++bits) {
            config.fixed_bits = bits;
            const ref::result r = run(config, cache, shape);
            double squared = 0.0;
            for (std::size_t i = 0; i < cache.size(); ++i) {
                const double e = static_cast<double>(r.dequantized[i]) - cache[i];
                squared += e * e;
            }
            const double mse = squared / static_cast<double>(cache.size());
            if (bits > 2) {
                INFO("bits " << bits << (symmetric ? " symmetric" : " asymmetric") << ": MSE " << mse
                             << ", previous " << previous);
                CHECK(previous / mse >= 3.0);
                CHECK(previous / mse <= 5.0);
            }
            previous = mse;
        }
    }
}
