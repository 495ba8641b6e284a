#pragma once
// Where each quantization group lives in a [L, B, H, T, D] cache, and the
// order of groups (the original bit array order: batch, token, layer, head,
// sub-group) and of elements inside a group (layer, head, dim).

#include <cstdint>
#include <vector>

#include "qaq/config.hpp"
#include "qaq/error.hpp"
#include "qaq/tensor_view.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN

/// A group is a box at fixed (batch, token): layers [layer_begin, layer_end)
/// x heads [head_begin, head_end) x dims [dim_begin, dim_end).
struct group_box {
    std::int64_t batch, token;
    std::int64_t layer_begin, layer_end;
    std::int64_t head_begin, head_end;
    std::int64_t dim_begin, dim_end;
};

class group_layout {
public:
    group_layout() = default;

    group_layout(const kv_shape& shape, group_level level, int group_dims = 0) : shape_(shape), level_(level) {
        QAQ_CHECK(shape.layers > 0 && shape.batch > 0 && shape.heads > 0 && shape.tokens > 0 && shape.head_dim > 0,
                  "cache shape ", to_string(shape),
                  " is empty; expected [layers, batch, heads, tokens, head_dim] all >= 1");
        switch (level) {
            case group_level::token:
                group_size_ = shape.layers * shape.heads * shape.head_dim;
                bits_shape_ = {shape.batch, shape.tokens};
                break;
            case group_level::layer:
                group_size_ = shape.heads * shape.head_dim;
                bits_shape_ = {shape.batch, shape.tokens, shape.layers};
                break;
            case group_level::head:
                group_size_ = shape.head_dim;
                bits_shape_ = {shape.batch, shape.tokens, shape.layers, shape.heads};
                break;
            case group_level::sub_head:
                QAQ_CHECK(group_dims >= 1 && shape.head_dim % group_dims == 0, "sub_head group_dims ", group_dims,
                          " must be >= 1 and divide head_dim ", shape.head_dim);
                group_dims_ = group_dims;
                group_size_ = group_dims;
                bits_shape_ = {shape.batch, shape.tokens, shape.layers, shape.heads, shape.head_dim / group_dims};
                break;
        }
        group_count_ = 1;
        for (auto e : bits_shape_) group_count_ *= e;
    }

    const kv_shape& shape() const noexcept { return shape_; }
    group_level level() const noexcept { return level_; }
    int group_dims() const noexcept { return group_dims_; }
    std::int64_t group_count() const noexcept { return group_count_; }
    /// Elements per group.
    std::int64_t group_size() const noexcept { return group_size_; }
    /// Shape of the per-group bit array, as the original implementation returns it.
    const std::vector<std::int64_t>& bits_shape() const noexcept { return bits_shape_; }
    /// Groups that belong to one (batch, token).
    std::int64_t groups_per_token() const noexcept { return group_count_ / (shape_.batch * shape_.tokens); }

    group_box box(std::int64_t group) const noexcept {
        const std::int64_t per_token = groups_per_token();
        const std::int64_t bt = group / per_token;
        std::int64_t inner = group % per_token;
        group_box g{bt / shape_.tokens, bt % shape_.tokens, 0, shape_.layers, 0, shape_.heads, 0, shape_.head_dim};
        switch (level_) {
            case group_level::token: break;
            case group_level::layer: g.layer_begin = inner, g.layer_end = inner + 1; break;
            case group_level::head:
                g.layer_begin = inner / shape_.heads, g.layer_end = g.layer_begin + 1;
                g.head_begin = inner % shape_.heads, g.head_end = g.head_begin + 1;
                break;
            case group_level::sub_head: {
                const std::int64_t subs = shape_.head_dim / group_dims_;
                const std::int64_t s = inner % subs;
                inner /= subs;
                g.layer_begin = inner / shape_.heads, g.layer_end = g.layer_begin + 1;
                g.head_begin = inner % shape_.heads, g.head_end = g.head_begin + 1;
                g.dim_begin = s * group_dims_, g.dim_end = g.dim_begin + group_dims_;
                break;
            }
        }
        return g;
    }

    /// Copies a group's elements into `out` (group_size floats) in group order.
    template <class T>
    void gather(const kv_view<T>& cache, std::int64_t group, float* out) const noexcept {
        const group_box g = box(group);
        for (std::int64_t l = g.layer_begin; l < g.layer_end; ++l)
            for (std::int64_t h = g.head_begin; h < g.head_end; ++h) {
                const T* row = &cache(l, g.batch, h, g.token, 0);
                const std::int64_t step = cache.strides[4];
                for (std::int64_t d = g.dim_begin; d < g.dim_end; ++d) *out++ = static_cast<float>(row[d * step]);
            }
    }

    /// Writes a group's elements from `in` back into the cache (inverse of gather).
    template <class T>
    void scatter(const float* in, std::int64_t group, const kv_view<T>& cache) const noexcept {
        const group_box g = box(group);
        for (std::int64_t l = g.layer_begin; l < g.layer_end; ++l)
            for (std::int64_t h = g.head_begin; h < g.head_end; ++h) {
                T* row = &cache(l, g.batch, h, g.token, 0);
                const std::int64_t step = cache.strides[4];
                for (std::int64_t d = g.dim_begin; d < g.dim_end; ++d) row[d * step] = static_cast<T>(*in++);
            }
    }

private:
    kv_shape shape_{};
    group_level level_ = group_level::head;
    int group_dims_ = 0;
    std::int64_t group_size_ = 0;
    std::int64_t group_count_ = 0;
    std::vector<std::int64_t> bits_shape_;
};

QAQ_NAMESPACE_END
