#pragma once
// Shared by the CUDA test files: random caches and configurations, the
// per-group inputs the device entry points take, and comparisons.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "qaq/group_layout.hpp"
#include "qaq/precision.hpp"
#include "qaq/predicted_attention.hpp"
#include "qaq/quantizer_config.hpp"
#include "qaq/tensor_view.hpp"
#include "qaq/types.hpp"

namespace qaq_cuda_test {

/// Values like the CPU backend tests draw: normal, heavy-tailed or log-normal,
/// with duplicates, a constant stretch and (optionally) a rare NaN.
inline std::vector<float> draw_values(std::mt19937& rng, std::int64_t n, bool allow_non_finite = true) {
    std::student_t_distribution<float> heavy(3.0f);
    std::normal_distribution<float> normal(0.5f, 2.0f);
    const int kind = std::uniform_int_distribution<int>(0, 2)(rng);
    std::vector<float> x(static_cast<std::size_t>(n));
    for (auto& v : x) v = kind == 0 ? normal(rng) : (kind == 1 ? heavy(rng) : std::exp(normal(rng) * 0.5f));
    for (std::size_t i = 0; i + 1 < x.size(); i += 7) x[i + 1] = x[i];
    if (x.size() > 40 && kind == 2) std::fill(x.begin(), x.begin() + 20, 1.25f);
    if (allow_non_finite && std::uniform_int_distribution<int>(0, 9)(rng) == 0)
        x[x.size() / 2] = std::numeric_limits<float>::quiet_NaN();
    return x;
}

/// Softmax rows [layers, batch, query_heads, rows, tokens] (causal over the last rows).
inline std::vector<float> draw_attention(std::mt19937& rng, const qaq::attention_shape& a) {
    const std::int64_t T = a.tokens;
    std::vector<float> p(static_cast<std::size_t>(a.layers * a.batch * a.query_heads * a.rows * T), 0.0f);
    std::normal_distribution<float> logit(0.0f, 2.0f);
    for (std::size_t row = 0; row < p.size() / static_cast<std::size_t>(T); ++row) {
        const std::int64_t r = static_cast<std::int64_t>(row) % a.rows, visible = T - a.rows + r + 1;
        double sum = 0;
        for (std::int64_t t = 0; t < visible; ++t) sum += (p[row * T + t] = std::exp(logit(rng)));
        for (std::int64_t t = 0; t < visible; ++t) p[row * T + t] = static_cast<float>(p[row * T + t] / sum);
    }
    return p;
}

/// One attention row per query head over `tokens` tokens: softmax of normal
/// logits with standard deviation `spread` (larger: peaked on fewer tokens).
inline std::vector<float> softmax_rows(std::mt19937& rng, std::int64_t query_heads, std::int64_t tokens,
                                       float spread) {
    std::normal_distribution<float> logit(0.0f, spread);
    std::vector<float> p(static_cast<std::size_t>(query_heads * tokens));
    for (std::int64_t q = 0; q < query_heads; ++q) {
        double sum = 0;
        for (std::int64_t t = 0; t < tokens; ++t) sum += (p[static_cast<std::size_t>(q * tokens + t)] = std::exp(logit(rng)));
        for (std::int64_t t = 0; t < tokens; ++t) p[static_cast<std::size_t>(q * tokens + t)] /= static_cast<float>(sum);
    }
    return p;
}

/// The cache's groups in docs/method.md order, as the [groups, n] buffer quantize_groups reads.
inline std::vector<float> gather_groups(const qaq::group_layout& layout, const qaq::kv_view<const float>& cache) {
    std::vector<float> rows(static_cast<std::size_t>(layout.group_count() * layout.group_size()));
    for (std::int64_t g = 0; g < layout.group_count(); ++g) layout.gather(cache, g, rows.data() + g * layout.group_size());
    return rows;
}

/// A group's predicted attention: the maximum of P over its (layer, head) pairs (what quantizer::quantize passes).
inline std::vector<float> predicted_per_group(const qaq::group_layout& layout, const qaq::kv_shape& shape,
                                              const qaq::attention_view<const float>& attention, int window) {
    const std::vector<float> predicted = qaq::predicted_attention(attention, shape, window);
    std::vector<float> per_group(static_cast<std::size_t>(layout.group_count()), 0.0f);
    for (std::int64_t g = 0; g < layout.group_count(); ++g) {
        const qaq::group_box box = layout.box(g);
        float a = 0.0f;
        for (std::int64_t l = box.layer_begin; l < box.layer_end; ++l)
            for (std::int64_t h = box.head_begin; h < box.head_end; ++h)
                a = std::max(a, predicted[static_cast<std::size_t>(
                                    qaq::predicted_attention_index(shape, box.batch, box.token, l, h))]);
        per_group[static_cast<std::size_t>(g)] = a;
    }
    return per_group;
}

inline bool same_value(float a, float b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

/// Within 4 float epsilons (relative, plus 1), as the CPU-vs-reference tests allow.
inline bool close_to_reference(float got, float expected) {
    if (std::isnan(expected)) return std::isnan(got);
    return std::fabs(got - expected) <= 4 * std::numeric_limits<float>::epsilon() * (std::fabs(expected) + 1.0f);
}

/// Double-precision attention of queries [Hq, D] over keys/values [H, T, D]:
/// output [Hq, D], probabilities [Hq, T].
inline void reference_attention(const std::vector<float>& keys, const std::vector<float>& values,
                                const std::vector<float>& queries, std::int64_t kv_heads, std::int64_t query_heads,
                                std::int64_t tokens, std::int64_t head_dim, std::vector<double>& output,
                                std::vector<double>& probabilities) {
    const std::int64_t per_kv = query_heads / kv_heads;
    output.assign(static_cast<std::size_t>(query_heads * head_dim), 0.0);
    probabilities.assign(static_cast<std::size_t>(query_heads * tokens), 0.0);
    for (std::int64_t q = 0; q < query_heads; ++q) {
        const std::int64_t h = q / per_kv;
        std::vector<double> s(static_cast<std::size_t>(tokens));
        double maximum = -std::numeric_limits<double>::infinity();
        for (std::int64_t t = 0; t < tokens; ++t) {
            double dot = 0;
            for (std::int64_t d = 0; d < head_dim; ++d)
                dot += static_cast<double>(queries[static_cast<std::size_t>(q * head_dim + d)]) *
                       keys[static_cast<std::size_t>((h * tokens + t) * head_dim + d)];
            s[static_cast<std::size_t>(t)] = dot / std::sqrt(static_cast<double>(head_dim));
            maximum = std::max(maximum, s[static_cast<std::size_t>(t)]);
        }
        double sum = 0;
        for (auto& v : s) sum += (v = std::exp(v - maximum));
        for (std::int64_t t = 0; t < tokens; ++t) {
            const double p = s[static_cast<std::size_t>(t)] / sum;
            probabilities[static_cast<std::size_t>(q * tokens + t)] = p;
            for (std::int64_t d = 0; d < head_dim; ++d)
                output[static_cast<std::size_t>(q * head_dim + d)] +=
                    p * values[static_cast<std::size_t>((h * tokens + t) * head_dim + d)];
        }
    }
}

/// Reads value i of raw bytes stored in `precision`.
inline float stored_value(qaq::storage_precision precision, const std::vector<std::uint8_t>& bytes, std::int64_t i) {
    return qaq::load_value(precision, bytes.data() + i * qaq::bytes_per_value(precision));
}

}  // namespace qaq_cuda_test
