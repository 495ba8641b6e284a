#pragma once
// Non-owning strided views over caller memory: a key or value cache
// [layers, batch, heads, tokens, head_dim] and attention probabilities
// [layers, batch, query_heads, rows, tokens]. Nothing here allocates.

#include <array>
#include <cstdint>

#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN

/// A strided view of one key or value cache. Strides are in elements, in the
/// order [layer, batch, head, token, dim]; `contiguous` gives the row-major
/// layout of the original implementation's tensors (and of .npy files).
template <class T>
struct kv_view {
    T* data = nullptr;
    kv_shape shape{};
    std::array<std::int64_t, 5> strides{};

    static kv_view contiguous(T* data, const kv_shape& shape) {
        QAQ_CHECK(shape.layers >= 0 && shape.batch >= 0 && shape.heads >= 0 && shape.tokens >= 0 &&
                      shape.head_dim >= 0,
                  "kv shape ", to_string(shape), " has a negative extent");
        const std::int64_t d = 1, t = shape.head_dim, h = t * shape.tokens, b = h * shape.heads,
                           l = b * shape.batch;
        return kv_view{data, shape, {l, b, h, t, d}};
    }

    T& operator()(std::int64_t layer, std::int64_t batch, std::int64_t head, std::int64_t token,
                  std::int64_t dim) const noexcept {
        return data[layer * strides[0] + batch * strides[1] + head * strides[2] + token * strides[3] +
                    dim * strides[4]];
    }

    /// A read-only view of the same memory.
    operator kv_view<const T>() const noexcept { return {data, shape, strides}; }
};

/// Shape of attention probabilities: `rows` query positions (usually the last
/// rows of a prefill, or one row per decode step) over `tokens` cached tokens.
struct attention_shape {
    std::int64_t layers = 0;
    std::int64_t batch = 0;
    std::int64_t query_heads = 0;
    std::int64_t rows = 0;
    std::int64_t tokens = 0;
};

inline std::string to_string(const attention_shape& s) {
    return "[" + std::to_string(s.layers) + ", " + std::to_string(s.batch) + ", " +
           std::to_string(s.query_heads) + ", " + std::to_string(s.rows) + ", " +
           std::to_string(s.tokens) + "]";
}

/// A strided view of attention probabilities, strides in elements in the order
/// [layer, batch, query_head, row, token].
template <class T>
struct attention_view {
    T* data = nullptr;
    attention_shape shape{};
    std::array<std::int64_t, 5> strides{};

    static attention_view contiguous(T* data, const attention_shape& shape) {
        QAQ_CHECK(shape.layers >= 0 && shape.batch >= 0 && shape.query_heads >= 0 && shape.rows >= 0 &&
                      shape.tokens >= 0,
                  "attention shape ", to_string(shape), " has a negative extent");
        const std::int64_t t = 1, r = shape.tokens, q = r * shape.rows, b = q * shape.query_heads,
                           l = b * shape.batch;
        return attention_view{data, shape, {l, b, q, r, t}};
    }

    T& operator()(std::int64_t layer, std::int64_t batch, std::int64_t query_head, std::int64_t row,
                  std::int64_t token) const noexcept {
        return data[layer * strides[0] + batch * strides[1] + query_head * strides[2] + row * strides[3] +
                    token * strides[4]];
    }

    bool empty() const noexcept { return data == nullptr; }
    operator attention_view<const T>() const noexcept { return {data, shape, strides}; }
};

QAQ_NAMESPACE_END
