#pragma once
// Vocabulary types shared by every policy, backend and example.

#include <cstdint>
#include <string>

#include "qaq/config.hpp"
#include "qaq/error.hpp"

QAQ_NAMESPACE_BEGIN

/// Which cache a quantizer serves; keys and values get different bit formulas.
enum class cache_role : std::uint8_t { key, value };

/// The unit that shares one bit width, scale and offset (QAQ-METHOD section 3).
///  token:    all layers x heads x dims of one token
///  layer:    all heads x dims of one token in one layer
///  head:     the head_dim dims of one token in one layer and head
///  sub_head: `group_dims` consecutive dims inside one head (finer than head)
enum class group_level : std::uint8_t { token, layer, head, sub_head };

/// How a group's values become codes (QAQ-METHOD section 6).
///  uniform_mean_centred: the reference min-max codec centred on the mean
///  uniform_zero_point:   min-based zero point, 2^B - 1 steps over [min, max]
///  normal:               standard-normal quantile boundaries around mean/std
enum class codec_kind : std::uint8_t { uniform_mean_centred, uniform_zero_point, normal };

/// How bits are chosen per group (QAQ-METHOD section 5).
enum class bits_kind : std::uint8_t { fixed, value_attention, key_query_norm };

/// Precision of the stored per-group parameters and of exact outlier values.
/// fp16 is what a deployed cache holds; fp32 reproduces float32 results exactly.
enum class storage_precision : std::uint8_t { fp16, fp32 };

/// The largest bit width a group can have.
inline constexpr int max_bits = 16;

/// Shape of one key or value cache, in the original implementation's order
/// [layers, batch, heads, tokens, head_dim].
struct kv_shape {
    std::int64_t layers = 0;
    std::int64_t batch = 0;
    std::int64_t heads = 0;
    std::int64_t tokens = 0;
    std::int64_t head_dim = 0;

    constexpr std::int64_t element_count() const noexcept {
        return layers * batch * heads * tokens * head_dim;
    }
    friend constexpr bool operator==(const kv_shape& a, const kv_shape& b) noexcept {
        return a.layers == b.layers && a.batch == b.batch && a.heads == b.heads &&
               a.tokens == b.tokens && a.head_dim == b.head_dim;
    }
    friend constexpr bool operator!=(const kv_shape& a, const kv_shape& b) noexcept { return !(a == b); }
};

inline std::string to_string(const kv_shape& s) {
    return "[" + std::to_string(s.layers) + ", " + std::to_string(s.batch) + ", " +
           std::to_string(s.heads) + ", " + std::to_string(s.tokens) + ", " +
           std::to_string(s.head_dim) + "]";
}

inline const char* to_string(cache_role r) noexcept { return r == cache_role::key ? "key" : "value"; }

inline const char* to_string(group_level l) noexcept {
    switch (l) {
        case group_level::token: return "token";
        case group_level::layer: return "layer";
        case group_level::head: return "head";
        case group_level::sub_head: return "sub_head";
    }
    return "unknown";
}

inline const char* to_string(codec_kind c) noexcept {
    switch (c) {
        case codec_kind::uniform_mean_centred: return "uniform_mean_centred";
        case codec_kind::uniform_zero_point: return "uniform_zero_point";
        case codec_kind::normal: return "normal";
    }
    return "unknown";
}

inline const char* to_string(bits_kind b) noexcept {
    switch (b) {
        case bits_kind::fixed: return "fixed";
        case bits_kind::value_attention: return "value_attention";
        case bits_kind::key_query_norm: return "key_query_norm";
    }
    return "unknown";
}

QAQ_NAMESPACE_END
