// The CUDA forward's scalar cores (examples/llama/cuda/forward_scalar.cuh),
// compiled as plain C++, against the CPU model's own functions
// (llama/model.hpp) on random data: RMSNorm of a row, RoPE of a head, the
// SwiGLU gate, and the attention softmax assembled from online-softmax states
// the way the attention kernel's warps merge them. Runs on every machine, so
// the kernels' arithmetic is checked without a GPU.

#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "llama/cuda/forward_scalar.cuh"
#include "llama/model.hpp"

namespace {

namespace scalar = qaq::llama::cuda_scalar;

std::vector<float> normal_values(std::mt19937& rng, std::int64_t n, float mean, float deviation) {
    std::normal_distribution<float> d(mean, deviation);
    std::vector<float> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = d(rng);
    return v;
}

// |a - b| within `relative` of the larger of 1 and |b|.
bool close(float a, float b, double relative) {
    return std::abs(double(a) - double(b)) <= relative * std::max(1.0, std::abs(double(b)));
}

}  // namespace

TEST_CASE("cuda scalar: RMSNorm of a row equals the CPU model's", "[llama][cuda_scalar]") {
    std::mt19937 rng(11);
    for (const std::int64_t n : {1, 7, 64, 576, 2048}) {
        for (const double eps : {1e-5, 1e-6}) {
            const std::vector<float> x = normal_values(rng, n, 0.3f, 4.0f), w = normal_values(rng, n, 1.0f, 0.2f);
            std::vector<float> expected(static_cast<std::size_t>(n)), got(expected.size());
            qaq::llama::rms_norm_row(x.data(), w.data(), expected.data(), n, eps);
            scalar::rms_norm_row(x.data(), w.data(), got.data(), n, static_cast<float>(eps));
            for (std::size_t i = 0; i < got.size(); ++i) {
                INFO("n " << n << " eps " << eps << " element " << i);
                REQUIRE(close(got[i], expected[i], 1e-5));
            }
        }
    }
    // A zero row stays zero (the epsilon keeps the scale finite).
    const std::vector<float> zeros(16, 0.0f), ones(16, 1.0f);
    std::vector<float> out(16, 1.0f);
    scalar::rms_norm_row(zeros.data(), ones.data(), out.data(), 16, 1e-5f);
    for (float v : out) REQUIRE(v == 0.0f);
}

TEST_CASE("cuda scalar: RoPE of a head equals the CPU model's rope_table and rotate_pairs", "[llama][cuda_scalar]") {
    std::mt19937 rng(12);
    std::uniform_int_distribution<std::int64_t> position(0, 32768);
    for (const std::int64_t D : {2, 64, 128}) {
        for (const double theta : {10000.0, 500000.0}) {
            const std::vector<double> frequencies = qaq::llama::rope_inverse_frequencies(theta, D);
            for (int trial = 0; trial < 50; ++trial) {
                const std::int64_t p = trial == 0 ? 0 : position(rng);
                std::vector<float> cosines(static_cast<std::size_t>(D / 2)), sines(cosines.size());
                qaq::llama::rope_table(p, frequencies, cosines.data(), sines.data());
                std::vector<float> expected = normal_values(rng, D, 0.0f, 2.0f), got = expected;
                qaq::llama::rotate_pairs(expected.data(), cosines.data(), sines.data(), D / 2);
                for (std::int64_t i = 0; i < D / 2; ++i) {
                    float c = 0.0f, s = 0.0f;
                    scalar::rope_cos_sin(p, frequencies[static_cast<std::size_t>(i)], c, s);
                    // The same double-precision angle and functions: the same floats.
                    REQUIRE(c == cosines[static_cast<std::size_t>(i)]);
                    REQUIRE(s == sines[static_cast<std::size_t>(i)]);
                    scalar::rope_rotate_pair(got[static_cast<std::size_t>(2 * i)], got[static_cast<std::size_t>(2 * i + 1)], c, s);
                }
                for (std::size_t i = 0; i < got.size(); ++i) {
                    INFO("D " << D << " theta " << theta << " position " << p << " element " << i);
                    REQUIRE(close(got[i], expected[i], 1e-6));
                }
            }
        }
    }
}

TEST_CASE("cuda scalar: the SwiGLU gate equals the CPU model's silu_gate", "[llama][cuda_scalar]") {
    std::mt19937 rng(13);
    std::vector<float> gate = normal_values(rng, 4099, 0.0f, 6.0f);
    gate[0] = -88.0f, gate[1] = 40.0f, gate[2] = 0.0f, gate[3] = -1e-30f;
    const std::vector<float> up = normal_values(rng, 4099, 0.0f, 3.0f);
    std::vector<float> expected = gate;
    qaq::llama::silu_gate(expected.data(), up.data(), static_cast<std::int64_t>(expected.size()));
    for (std::size_t i = 0; i < gate.size(); ++i) {
        INFO("gate " << gate[i] << " up " << up[i]);
        REQUIRE(close(scalar::silu_gate(gate[i], up[i]), expected[i], 1e-6));
    }
}

TEST_CASE("cuda scalar: merged online-softmax states give the CPU model's attention softmax", "[llama][cuda_scalar]") {
    std::mt19937 rng(14);
    for (const std::int64_t n : {1, 2, 5, 33, 300, 2049}) {
        for (const int streams : {1, 4, 7}) {
            std::vector<float> raw = normal_values(rng, n, 0.0f, 12.0f);
            const float scale = 1.0f / std::sqrt(64.0f);
            std::vector<float> expected = raw;
            qaq::llama::scaled_softmax(expected.data(), n, scale);
            // Stream w takes scores w, w + streams, ... (a warp's tokens), then all merge.
            std::vector<scalar::online_softmax> states(static_cast<std::size_t>(streams));
            for (std::int64_t t = 0; t < n; ++t) states[static_cast<std::size_t>(t % streams)].add(raw[static_cast<std::size_t>(t)] * scale);
            scalar::online_softmax total;
            for (const auto& s : states) total.merge(s);
            double log_sum = 0.0, maximum = -INFINITY;
            for (float r : raw) maximum = std::max(maximum, double(r * scale));
            for (float r : raw) log_sum += std::exp(double(r * scale) - maximum);
            log_sum = maximum + std::log(log_sum);
            INFO("n " << n << " streams " << streams);
            REQUIRE(std::abs(double(total.log_sum_exp()) - log_sum) <= 1e-5 * std::max(1.0, std::abs(log_sum)));
            for (std::int64_t t = 0; t < n; ++t)
                REQUIRE(std::abs(total.probability(raw[static_cast<std::size_t>(t)] * scale) -
                                 expected[static_cast<std::size_t>(t)]) <= 1e-6);
        }
    }
    // An empty state merges as nothing.
    scalar::online_softmax a, empty;
    a.add(3.0f);
    a.merge(empty);
    empty.merge(a);
    REQUIRE(a.probability(3.0f) == 1.0f);
    REQUIRE(empty.probability(3.0f) == 1.0f);
}
