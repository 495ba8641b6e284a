// The CUDA backend's scalar core (include/qaq/backend/cuda/scalar_core.cuh),
// compiled as plain C++ and checked against the shared host code it mirrors:
// fp16 conversion vs Eigen::half, bit allocation vs the bits policies, codec
// fit/store/load vs the codecs, affine encode/decode and packing vs the CPU
// backend, quantile ranks vs outliers::quantile. Equality is exact; these run
// on every machine (no GPU needed), so the device arithmetic is covered here.

#define CATCH_CONFIG_MAIN
#include <Eigen/Core>
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "qaq/backend/cpu/cpu_backend.hpp"
#include "qaq/backend/cuda/scalar_core.cuh"
#include "qaq/bit_packing.hpp"
#include "qaq/policy/bits/fixed.hpp"
#include "qaq/policy/bits/key_query_norm.hpp"
#include "qaq/policy/bits/value_attention.hpp"
#include "qaq/policy/outliers/quantile.hpp"
#include "qaq/policy/storage/uniform_mean_centred.hpp"
#include "qaq/policy/storage/uniform_zero_point.hpp"
#include "qaq/precision.hpp"

namespace {

namespace scalar = qaq::cuda::scalar;

std::uint32_t bits_of(float x) {
    std::uint32_t u;
    std::memcpy(&u, &x, 4);
    return u;
}
float float_of(std::uint32_t u) {
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}
std::uint16_t eigen_half_bits(float x) { return Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(x)); }

bool same_float(float a, float b) { return (std::isnan(a) && std::isnan(b)) || bits_of(a) == bits_of(b); }

}  // namespace

TEST_CASE("fp16 conversion equals Eigen::half bit for bit", "[cuda_scalar]") {
    // Every 7th bit pattern (all exponents, all rounding cases) plus the neighbourhood of every boundary.
    for (std::uint64_t u = 0; u <= 0xffffffffu; u += 7) {
        const float x = float_of(static_cast<std::uint32_t>(u));
        const std::uint16_t expected = eigen_half_bits(x);
        const std::uint16_t got = scalar::float_to_half_bits(x);
        if (expected != got) {
            INFO("x = " << x << " bits " << std::hex << u);
            REQUIRE(got == expected);
        }
    }
    const std::uint32_t boundaries[] = {0x33000000u, 0x38800000u, 0x477fe000u, 0x47800000u, 0x7f800000u, 0x00000001u};
    for (std::uint32_t b : boundaries)
        for (std::int64_t d = -4096; d <= 4096; ++d)
            for (std::uint32_t sign : {0u, 0x80000000u}) {
                const float x = float_of((static_cast<std::uint32_t>(b + d) & 0x7fffffffu) | sign);
                REQUIRE(scalar::float_to_half_bits(x) == eigen_half_bits(x));
            }
    for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
        const float expected = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(static_cast<std::uint16_t>(h)));
        REQUIRE(same_float(scalar::half_bits_to_float(static_cast<std::uint16_t>(h)), expected));
    }
    REQUIRE(scalar::to_storage(qaq::storage_precision::fp16, 0.1f) == qaq::round_to(qaq::storage_precision::fp16, 0.1f));
    REQUIRE(scalar::to_storage(qaq::storage_precision::fp32, 0.1f) == 0.1f);
}

TEST_CASE("ceil_log2 in double equals ceil(log2f) wherever a width can depend on it", "[cuda_scalar]") {
    // ceil(log2(y)) only depends on the rounding of log2 just above a power of
    // two; check every float within 2^20 ulps of 2^k, k = 0..18, and a random sample.
    for (int k = 0; k <= 18; ++k) {
        const std::uint32_t power = bits_of(std::ldexp(1.0f, k));
        for (std::uint32_t d = 0; d < (1u << 20); ++d)
            for (std::uint32_t u : {power + d, power - d}) {
                const float y = float_of(u);
                if (!(y >= 1.0f)) continue;
                const float expected = std::ceil(std::log2(y));
                if (scalar::ceil_log2(y) != expected) {
                    INFO("y = " << y);
                    REQUIRE(scalar::ceil_log2(y) == expected);
                }
            }
    }
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> exponent(0.0f, 30.0f);
    for (int i = 0; i < 1000000; ++i) {
        const float y = std::exp2(exponent(rng));
        REQUIRE(scalar::ceil_log2(y) == std::ceil(std::log2(y)));
    }
    REQUIRE(std::isnan(scalar::ceil_log2(std::numeric_limits<float>::quiet_NaN())));
    REQUIRE(scalar::ceil_log2(std::numeric_limits<float>::infinity()) == std::numeric_limits<float>::infinity());
}

TEST_CASE("device_bits equals the library bits policies", "[cuda_scalar]") {
    std::mt19937 rng(11);
    auto uniform = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    int checked = 0;
    for (int policy_index = 0; policy_index < 400; ++policy_index) {
        const std::int64_t tokens = pick(1, 4) == 1 ? pick(1, 3) : pick(1, 200000);
        const int bits_min = pick(0, 6), bits_max = pick(bits_min, 16), window = pick(1, 8);
        const double eps = std::pow(10.0, uniform(-4, 0)), q_norm = std::pow(10.0, uniform(-2, 3));
        const qaq::bits::fixed fixed(pick(0, 16));
        const qaq::bits::value_attention values(window, eps, bits_min, bits_max);
        const qaq::bits::key_query_norm keys(q_norm, eps, bits_min, bits_max, window);
        const auto fixed_device = qaq::cuda::to_device_bits(fixed, tokens);
        const auto values_device = qaq::cuda::to_device_bits(values, tokens);
        const auto keys_device = qaq::cuda::to_device_bits(keys, tokens);
        for (int i = 0; i < 500; ++i) {
            qaq::bits::context c;
            c.tokens = tokens;
            c.token = pick(0, static_cast<int>(std::min<std::int64_t>(tokens - 1, 1 << 30)));
            if (pick(0, 3) == 0) c.token = std::max<std::int64_t>(0, tokens - pick(1, window + 1));
            c.predicted_attention = pick(0, 9) == 0 ? 0.0f : static_cast<float>(std::pow(10.0, uniform(-6, 0)));
            c.range = pick(0, 9) == 0 ? 0.0f : static_cast<float>(std::pow(10.0, uniform(-4, 3)));
            if (pick(0, 3) == 0) {
                // Put R / (2E) + 1 right at a power of two, where ceil(log2) is most fragile.
                const float twice = keys_device.twice_error > 0.0f ? keys_device.twice_error : 1.0f;
                c.range = (std::ldexp(1.0f, pick(0, 16)) - 1.0f) * twice;
                c.range = float_of(bits_of(c.range) + static_cast<std::uint32_t>(pick(-3, 3)));
            }
            REQUIRE(fixed_device(c) == fixed(c));
            REQUIRE(values_device(c) == values(c));
            REQUIRE(keys_device(c) == keys(c));
            ++checked;
        }
    }
    CHECK(checked == 200000);
}

namespace {

qaq::group_statistics random_statistics(std::mt19937& rng) {
    auto uniform = [&](float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng); };
    const int kind = std::uniform_int_distribution<int>(0, 5)(rng);
    qaq::group_statistics s;
    s.count = kind == 0 ? 0 : std::uniform_int_distribution<int>(1, 300)(rng);
    if (s.count == 0) return s;
    const float magnitude = kind == 1 ? 70000.0f : (kind == 2 ? 1e-6f : std::pow(10.0f, uniform(-3, 3)));
    s.min = uniform(-1, 1) * magnitude;
    s.max = kind == 3 ? s.min : s.min + uniform(0, 2) * magnitude;  // kind 3: a constant group
    s.absmax = std::max(std::fabs(s.min), std::fabs(s.max));
    s.mean = s.min + (s.max - s.min) * uniform(0, 1);
    return s;
}

template <class Codec>
void check_codec_mirror(const Codec& codec, std::mt19937& rng) {
    for (int i = 0; i < 20000; ++i) {
        const qaq::group_statistics s = random_statistics(rng);
        const int bits = std::uniform_int_distribution<int>(0, 16)(rng);
        qaq::codec_parameters expected;
        bool host_threw = false;
        try {
            expected = codec.fit(s, bits);
        } catch (const qaq::error&) {
            host_threw = true;
        }
        bool overflow = false;
        const qaq::codec_parameters got = scalar::fit(codec, s, bits, overflow);
        REQUIRE(overflow == host_threw);
        if (host_threw) continue;
        REQUIRE(same_float(got.centre, expected.centre));
        REQUIRE(same_float(got.scale, expected.scale));

        float stored_host[2] = {0.0f, 0.0f}, stored_device[2] = {0.0f, 0.0f};
        codec.store(expected, stored_host);
        scalar::store(codec, got, stored_device);
        REQUIRE(same_float(stored_host[0], stored_device[0]));
        REQUIRE(same_float(stored_host[1], stored_device[1]));
        const qaq::codec_parameters loaded_host = codec.load(stored_host, bits);
        const qaq::codec_parameters loaded_device = scalar::load(codec, stored_device, bits);
        REQUIRE(same_float(loaded_host.centre, loaded_device.centre));
        REQUIRE(same_float(loaded_host.scale, loaded_device.scale));
        REQUIRE(scalar::range(codec, s) == codec.range(s));
        REQUIRE(scalar::parameter_count(codec) == codec.stored_parameter_count());

        // device_codec: the parameter bytes are exactly what quantizer::store_parameters writes.
        const qaq::cuda::device_codec dc = qaq::cuda::device_codec::of(codec);
        std::uint8_t bytes_device[8] = {}, bytes_host[8] = {};
        dc.store(got, bytes_device, 0);
        const std::int64_t value_bytes = qaq::bytes_per_value(codec.precision);
        for (int k = 0; k < codec.stored_parameter_count(); ++k)
            qaq::store_value(codec.precision, stored_host[k], bytes_host + k * value_bytes);
        REQUIRE(std::memcmp(bytes_device, bytes_host, 8) == 0);
        const qaq::codec_parameters reloaded = dc.load(bytes_device, 0, bits);
        REQUIRE(same_float(reloaded.centre, loaded_host.centre));
        REQUIRE(same_float(reloaded.scale, loaded_host.scale));
        if (bits == 0) REQUIRE(same_float(dc.decode(reloaded, 0, 0u), codec.decode(0u, loaded_host, 0)));
    }
}

}  // namespace

TEST_CASE("codec fit/store/load mirrors equal the codecs", "[cuda_scalar]") {
    std::mt19937 rng(3);
    for (bool symmetric : {false, true})
        for (auto precision : {qaq::storage_precision::fp16, qaq::storage_precision::fp32}) {
            check_codec_mirror(qaq::storage::uniform_mean_centred{symmetric, precision}, rng);
            check_codec_mirror(qaq::storage::uniform_zero_point{symmetric, precision}, rng);
        }
}

TEST_CASE("affine encode, pack8 and decode equal the CPU backend", "[cuda_scalar]") {
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.3f, 2.0f);
    for (int iteration = 0; iteration < 3000; ++iteration) {
        const int n = std::uniform_int_distribution<int>(1, 300)(rng);
        const int bits = std::uniform_int_distribution<int>(1, 16)(rng);
        const bool symmetric = iteration % 2 == 0;
        const auto precision = iteration % 3 == 0 ? qaq::storage_precision::fp32 : qaq::storage_precision::fp16;
        std::vector<float> x(static_cast<std::size_t>(n));
        for (auto& v : x) v = normal(rng);
        if (iteration % 17 == 0) std::fill(x.begin(), x.end(), 0.75f);  // constant: scale 0
        std::vector<std::uint8_t> is_outlier(x.size(), 0);
        for (std::size_t i = 0; i < x.size(); i += 13) is_outlier[i] = 1;
        const qaq::group_statistics s = qaq::backend::cpu::statistics(x.data(), is_outlier.data(), n,
                                                                      qaq::backend::cpu::count_marked(is_outlier.data(), n), false);
        auto check = [&](const auto& codec) {
            const qaq::codec_parameters p = codec.fit(s, bits);
            std::vector<std::uint32_t> scratch(x.size());
            std::vector<std::uint8_t> expected(static_cast<std::size_t>(qaq::packed_code_bytes(n, bits)));
            qaq::backend::cpu::encode(codec, p, bits, x.data(), is_outlier.data(), n, scratch.data(), expected.data());

            const qaq::affine_code a = codec.affine(p, bits);
            std::vector<std::uint8_t> got(expected.size() + 16, 0xa5);
            for (int first = 0; first < n; first += 8) {
                std::uint32_t codes[8] = {};
                const int count = std::min(8, n - first);
                for (int j = 0; j < count; ++j)
                    codes[j] = scalar::affine_encode(a, is_outlier[first + j] ? a.centre : x[first + j]);
                // Each run of eight codes owns `bits` bytes; clear them as cudaMalloc'd memory is not.
                std::fill(got.begin() + first / 8 * bits, got.begin() + first / 8 * bits + bits, 0);
                scalar::pack8(codes, count, bits, got.data() + first / 8 * bits);
            }
            REQUIRE(std::equal(expected.begin(), expected.end(), got.begin()));

            std::vector<float> decoded_host(x.size());
            qaq::backend::cpu::decode(codec, p, bits, expected.data(), n, scratch.data(), decoded_host.data());
            const qaq::cuda::device_codec dc = qaq::cuda::device_codec::of(codec);
            for (int i = 0; i < n; ++i) {
                const float decoded = dc.decode(p, bits, qaq::read_code(expected.data(), i, bits));
                REQUIRE(same_float(decoded, decoded_host[static_cast<std::size_t>(i)]));
            }
        };
        check(qaq::storage::uniform_mean_centred{symmetric, precision});
        check(qaq::storage::uniform_zero_point{symmetric, precision});
    }
}

TEST_CASE("pack8 writes the bytes of pack_codes for every width and count", "[cuda_scalar]") {
    std::mt19937 rng(9);
    for (int bits = 1; bits <= 16; ++bits)
        for (int count = 1; count <= 8; ++count)
            for (int trial = 0; trial < 50; ++trial) {
                std::uint32_t codes[8] = {};
                for (int k = 0; k < count; ++k) codes[k] = rng() & ((1u << bits) - 1u);
                std::uint8_t expected[16] = {}, got[16] = {};
                qaq::pack_codes(codes, count, bits, expected);
                scalar::pack8(codes, count, bits, got);
                REQUIRE(std::memcmp(expected, got, 16) == 0);
            }
}

TEST_CASE("quantile ranks and thresholds reproduce outliers::quantile", "[cuda_scalar]") {
    std::mt19937 rng(13);
    std::student_t_distribution<float> heavy(3.0f);
    for (int iteration = 0; iteration < 5000; ++iteration) {
        const int n = std::uniform_int_distribution<int>(1, 260)(rng);
        const double ratios[] = {0.0, 0.001, 0.01, 0.05, 0.1, 0.3, 0.9};
        const double ratio = ratios[iteration % 7];
        std::vector<float> x(static_cast<std::size_t>(n));
        for (auto& v : x) v = std::round(heavy(rng) * 8.0f) / 8.0f;  // many ties
        if (iteration % 5 == 0) x[static_cast<std::size_t>(n / 2)] = std::numeric_limits<float>::quiet_NaN();
        if (iteration % 11 == 0) x[0] = -std::numeric_limits<float>::infinity();

        std::vector<std::uint8_t> expected(x.size());
        std::vector<float> scratch(x.size());
        qaq::outliers::quantile(ratio).mark(x.data(), n, expected.data(), scratch.data());

        // The kernel's procedure: non-finite sorted last, ranks from the finite count.
        std::vector<float> keys;
        for (float v : x)
            if (scalar::is_finite(v)) keys.push_back(v);
        const auto finite = static_cast<std::int64_t>(keys.size());
        std::sort(keys.begin(), keys.end());
        float lo = -scalar::infinity(), hi = scalar::infinity();
        if (ratio > 0.0 && finite > 0) {
            std::int64_t k_lo = 0, k_hi = 0;
            scalar::quantile_ranks(ratio, finite, k_lo, k_hi);
            lo = keys[static_cast<std::size_t>(k_lo - 1)];
            hi = k_hi >= 1 ? keys[static_cast<std::size_t>(k_hi - 1)] : -scalar::infinity();
        }
        for (int i = 0; i < n; ++i)
            REQUIRE(scalar::is_outlier(x[static_cast<std::size_t>(i)], lo, hi) == (expected[static_cast<std::size_t>(i)] != 0));
    }
}
