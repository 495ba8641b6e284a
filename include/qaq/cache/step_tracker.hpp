#pragma once
// The decode protocol's bookkeeping that does not depend on where the cache
// lives: the cache shape, how many tokens each layer holds, and the checks of
// every call's arguments against them (layer range, sizes, capacity, the
// order in which layers take a token, prefill shapes). Shared by the host
// cache (kv_cache.hpp) and the device cache (backend/cuda/device_kv_cache.cuh),
// so both refuse the same things with the same messages.

#include <cstdint>
#include <vector>

#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/predicted_attention.hpp"
#include "qaq/tensor_view.hpp"

QAQ_NAMESPACE_BEGIN

struct kv_cache_shape {
    std::int64_t layers = 0;
    std::int64_t kv_heads = 0;
    std::int64_t query_heads = 0;  ///< a multiple of kv_heads (grouped-query attention)
    std::int64_t head_dim = 0;
    std::int64_t max_tokens = 0;   ///< capacity; appending beyond it is an error
};

namespace cache {

class step_tracker {
public:
    step_tracker() = default;
    explicit step_tracker(const kv_cache_shape& shape) : shape_(shape) {
        QAQ_CHECK(shape.layers >= 1 && shape.kv_heads >= 1 && shape.head_dim >= 1 && shape.max_tokens >= 1,
                  "cache shape needs layers, kv_heads, head_dim and max_tokens >= 1; got layers ", shape.layers,
                  ", kv_heads ", shape.kv_heads, ", head_dim ", shape.head_dim, ", max_tokens ", shape.max_tokens);
        QAQ_CHECK(shape.query_heads >= shape.kv_heads && shape.query_heads % shape.kv_heads == 0, "query_heads ",
                  shape.query_heads, " must be a positive multiple of kv_heads ", shape.kv_heads);
        tokens_.assign(static_cast<std::size_t>(shape.layers), 0);
    }

    const kv_cache_shape& shape() const noexcept { return shape_; }
    const std::vector<std::int64_t>& all_tokens() const noexcept { return tokens_; }

    void check_layer(std::int64_t layer) const {
        QAQ_CHECK(layer >= 0 && layer < shape_.layers, "layer ", layer, " is out of range; the cache has ",
                  shape_.layers, " layers");
    }
    /// Tokens held by `layer`.
    std::int64_t tokens(std::int64_t layer) const {
        check_layer(layer);
        return tokens_[static_cast<std::size_t>(layer)];
    }

    /// Checks an append of one token to `layer` ([kv_heads][head_dim] keys and values);
    /// returns the token's index. appended(layer) records it once stored.
    std::int64_t check_append(std::int64_t layer, std::int64_t key_count, std::int64_t value_count) const {
        check_layer(layer);
        const std::int64_t expected = shape_.kv_heads * shape_.head_dim;
        QAQ_CHECK(key_count == expected && value_count == expected, "append got ", key_count, " keys and ",
                  value_count, " values; expected kv_heads x head_dim = ", expected, " each");
        const std::int64_t t = tokens_[static_cast<std::size_t>(layer)];
        QAQ_CHECK(t < shape_.max_tokens, "the cache is full: layer ", layer, " holds max_tokens = ", shape_.max_tokens,
                  " tokens");
        const std::int64_t previous = layer == 0 ? tokens_.back() : tokens_[static_cast<std::size_t>(layer - 1)] - 1;
        QAQ_CHECK(t == previous, "layer ", layer, " already holds ", t, " tokens; a token is appended to layers 0..",
                  shape_.layers - 1, " in order");
        return t;
    }
    void appended(std::int64_t layer) noexcept { ++tokens_[static_cast<std::size_t>(layer)]; }

    /// Checks attend's sizes (queries and output [query_heads][head_dim], probabilities
    /// [query_heads][tokens]); returns the layer's token count.
    std::int64_t check_attend(std::int64_t layer, std::int64_t query_count, std::int64_t output_count,
                              std::int64_t probability_count) const {
        const std::int64_t T = tokens(layer);
        const std::int64_t D = shape_.head_dim, Hq = shape_.query_heads;
        QAQ_CHECK(T >= 1, "attend on layer ", layer, " with no tokens; append first");
        QAQ_CHECK(query_count == Hq * D && output_count == Hq * D, "attend got ", query_count, " query and ",
                  output_count, " output values; expected query_heads x head_dim = ", Hq * D);
        QAQ_CHECK(probability_count == Hq * T, "attend got room for ", probability_count,
                  " probabilities; expected query_heads x tokens = ", Hq * T);
        return T;
    }

    /// Checks observe's size ([query_heads][tokens]); returns the layer's token count.
    std::int64_t check_observe(std::int64_t layer, std::int64_t probability_count) const {
        const std::int64_t T = tokens(layer);
        QAQ_CHECK(probability_count == shape_.query_heads * T, "observe got ", probability_count,
                  " probabilities; expected query_heads x tokens = ", shape_.query_heads * T);
        return T;
    }

    /// The token count of a complete step (every layer holds the same); an error between layers.
    std::int64_t step_tokens() const {
        const std::int64_t T = tokens_.front();
        for (auto t : tokens_)
            QAQ_CHECK(t == T, "rebalance between layers of a step: layers hold different token counts (", T, " and ",
                      t, "); append the token to every layer first");
        return T;
    }

    /// Checks a prefill into this (empty) cache: keys and values [layers, 1, kv_heads,
    /// tokens, head_dim], attention [layers, 1, query_heads, rows, tokens] (needed when a
    /// bits policy reads attention). Returns the keys' shape.
    kv_shape check_prefill(const kv_view<const float>& keys, const kv_view<const float>& values,
                           const attention_view<const float>& attention, bool needs_attention) const {
        for (auto t : tokens_) QAQ_CHECK(t == 0, "prefill needs an empty cache; this one holds ", t, " tokens");
        const kv_shape expected{shape_.layers, 1, shape_.kv_heads, keys.shape.tokens, shape_.head_dim};
        QAQ_CHECK(keys.shape == expected && values.shape == expected, "prefill keys ", to_string(keys.shape),
                  " and values ", to_string(values.shape), " must both be [layers, 1, kv_heads, tokens, head_dim] = ",
                  to_string(expected));
        QAQ_CHECK(expected.tokens >= 1 && expected.tokens <= shape_.max_tokens, "prefill of ", expected.tokens,
                  " tokens; expected 1..max_tokens = ", shape_.max_tokens);
        if (!attention.empty() || needs_attention) {
            check_attention_shape(attention, expected);
            QAQ_CHECK(attention.shape.query_heads == shape_.query_heads, "prefill attention has ",
                      attention.shape.query_heads, " query heads; the cache has ", shape_.query_heads);
        }
        return expected;
    }

    /// Every layer holds `tokens` tokens (after a prefill; 0: empty again).
    void set_all(std::int64_t tokens) {
        for (auto& t : tokens_) t = tokens;
    }

private:
    kv_cache_shape shape_;
    std::vector<std::int64_t> tokens_;
};

}  // namespace cache
QAQ_NAMESPACE_END
