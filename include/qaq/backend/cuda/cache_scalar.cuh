#pragma once
// The per-element arithmetic of the device cache's kernels (cache_kernels.cuh)
// as QAQ_HOST_DEVICE functions over plain pointers, so that the CPU tests
// check them against the host cache's own code (attention_window, the bits
// policies) without a GPU: tests/cuda/test_cache_scalar.cpp.

#include <cstdint>

#include "qaq/backend/cuda/scalar_core.cuh"
#include "qaq/config.hpp"
#include "qaq/policy/bits/bits_context.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

/// The inputs of choose_widths_kernel: one role, every layer, T tokens each.
struct width_scan {
    const std::uint8_t* widths = nullptr;
    const float* ranges = nullptr;
    std::int64_t layers = 0, tokens = 0, kv_heads = 0, groups_per_head = 0, layer_groups = 0;
    /// The attention window, or null rows when the bits policy reads no attention:
    /// rows [layers][window][max_tokens * kv_heads], lengths [layers][window] (0: never observed).
    const float* window_rows = nullptr;
    const std::int64_t* row_lengths = nullptr;
    int window = 1;
    std::int64_t max_tokens = 0;
};

/// Entry i = t * kv_heads + h of a window row: the maximum of the probabilities
/// [query_heads, tokens] over KV head h's query heads (attention_window::observe).
/// Invalid probabilities (not finite, < 0) are skipped and counted in `invalid`.
QAQ_HOST_DEVICE float window_entry(const float* probabilities, std::int64_t query_heads, std::int64_t kv_heads,
                                   std::int64_t tokens, std::int64_t i, unsigned int& invalid) noexcept {
    const std::int64_t per_kv = query_heads / kv_heads;
    const std::int64_t t = i / kv_heads, h = i % kv_heads;
    float m = 0.0f;
    for (std::int64_t q = h * per_kv; q < (h + 1) * per_kv; ++q) {
        const float p = probabilities[q * tokens + t];
        if (!(scalar::is_finite(p) && p >= 0.0f)) {
            ++invalid;
            continue;
        }
        m = m < p ? p : m;  // std::max(m, p)
    }
    return m;
}

/// attention_window::predicted(l, t, h): the maximum over the rows that cover t (0 if none).
QAQ_HOST_DEVICE float window_predicted(const width_scan& scan, std::int64_t l, std::int64_t t,
                                       std::int64_t h) noexcept {
    float predicted = 0.0f;
    for (int r = 0; r < scan.window; ++r) {
        const std::int64_t slot = l * scan.window + r;
        if (t < scan.row_lengths[slot]) {
            const float a = scan.window_rows[(slot * scan.max_tokens + t) * scan.kv_heads + h];
            predicted = predicted < a ? a : predicted;
        }
    }
    return predicted;
}

/// Group j of layers x tokens x kv_heads x groups_per_head: its new width from the
/// bits policy, as (group index << 8 | width); `changed` when it differs from the stored one.
template <class DeviceBits>
QAQ_HOST_DEVICE std::uint64_t width_item(const DeviceBits& bits, const width_scan& scan, std::int64_t j,
                                         bool& changed) noexcept {
    const std::int64_t per_token = scan.kv_heads * scan.groups_per_head;
    const std::int64_t per_layer = scan.tokens * per_token;
    const std::int64_t l = j / per_layer, within = j % per_layer;
    const std::int64_t t = within / per_token, h = (within % per_token) / scan.groups_per_head;
    const std::int64_t g = l * scan.layer_groups + within;
    bits::context c;
    c.range = scan.ranges[g];
    c.predicted_attention = scan.window_rows != nullptr ? window_predicted(scan, l, t, h) : 0.0f;
    c.tokens = scan.tokens;
    c.token = t;
    int width = bits(c);
    width = width < 0 ? 0 : (width > max_bits ? max_bits : width);
    changed = width != scan.widths[g];
    return (static_cast<std::uint64_t>(g) << 8) | static_cast<std::uint64_t>(width);
}

}  // namespace detail
}  // namespace cuda
QAQ_NAMESPACE_END
