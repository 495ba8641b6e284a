#pragma once
// Predicted attention from a block of attention rows (QAQ-METHOD section 5):
// for every (batch, token, layer, KV head), the maximum over the last `window`
// rows and over the query heads that read that KV head (grouped-query
// attention: query head q reads KV head q / (query_heads / heads)).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/tensor_view.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN

/// Throws unless `attention` can describe a cache of shape `cache`.
inline void check_attention_shape(const attention_view<const float>& attention, const kv_shape& cache) {
    QAQ_CHECK(!attention.empty(), "attention-aware bits need attention probabilities; none were given");
    const attention_shape& a = attention.shape;
    QAQ_CHECK(a.layers == cache.layers && a.batch == cache.batch && a.tokens == cache.tokens && a.rows >= 1 &&
                  a.query_heads >= 1 && a.query_heads % cache.heads == 0,
              "attention shape ", to_string(a), " does not match cache shape ", to_string(cache),
              "; expected [layers, batch, query_heads, rows >= 1, tokens] with the cache's layers, batch and "
              "tokens and query_heads a multiple of the cache's heads");
}

/// Index of (batch, token, layer, head) in the predicted-attention array.
inline std::int64_t predicted_attention_index(const kv_shape& s, std::int64_t batch, std::int64_t token,
                                              std::int64_t layer, std::int64_t head) noexcept {
    return ((batch * s.tokens + token) * s.layers + layer) * s.heads + head;
}

/// P[b, t, l, h] laid out by predicted_attention_index. Throws on a shape
/// mismatch and on probabilities that are not finite and >= 0.
inline std::vector<float> predicted_attention(const attention_view<const float>& attention, const kv_shape& cache,
                                              int window) {
    check_attention_shape(attention, cache);
    QAQ_CHECK(window >= 1, "attention window is ", window, ", expected >= 1");
    const attention_shape& a = attention.shape;
    const std::int64_t per_kv_head = a.query_heads / cache.heads;
    const std::int64_t first_row = std::max<std::int64_t>(0, a.rows - window);
    std::vector<float> p(static_cast<std::size_t>(cache.batch * cache.tokens * cache.layers * cache.heads), 0.0f);
    for (std::int64_t l = 0; l < a.layers; ++l)
        for (std::int64_t b = 0; b < a.batch; ++b)
            for (std::int64_t q = 0; q < a.query_heads; ++q)
                for (std::int64_t r = first_row; r < a.rows; ++r)
                    for (std::int64_t t = 0; t < a.tokens; ++t) {
                        const float x = attention(l, b, q, r, t);
                        QAQ_CHECK(std::isfinite(x) && x >= 0.0f, "attention probability at [", l, ", ", b, ", ",
                                  q, ", ", r, ", ", t, "] is ", x, "; expected a finite value >= 0");
                        float& slot = p[predicted_attention_index(cache, b, t, l, q / per_kv_head)];
                        slot = std::max(slot, x);
                    }
    return p;
}

QAQ_NAMESPACE_END
