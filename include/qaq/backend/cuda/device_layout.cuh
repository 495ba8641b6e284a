#pragma once
// The device-side data layout of the CUDA backend: plain non-owning structs of
// device pointers, passed to kernels by value (FlashInfer style). Nothing here
// allocates; plain C++ (no CUDA types), so host code can fill them in.
//
// A set of `groups` quantization groups of `group_size` elements each (one
// [groups, group_size] float buffer in, group g = row g) is stored as
//
//   widths[g]              uint8    bit width 0..16 of group g
//   parameters[g * P + k]  fp16/fp32 the codec's stored parameters, P = 1 (symmetric)
//                                   or 2 (asymmetric), in the codec's precision; exactly
//                                   the bytes packed_tensor::parameters holds
//                                   (uniform_mean_centred: [mean,] scale;
//                                    uniform_zero_point: min, scale | max|x|)
//   code_offsets[g]        uint64   first byte of group g's codes in `codes`;
//                                   code_offsets[groups] = total code bytes
//   codes[...]             uint8    group g: packed_code_bytes(group_size, widths[g]) bytes
//                                   at code_offsets[g], codes LSB first (bit_packing.hpp);
//                                   the same bytes as packed_tensor::codes
//   outlier_offsets[g]     uint64   CSR row pointer: group g's outliers are entries
//                                   [outlier_offsets[g], outlier_offsets[g + 1])
//   outlier_positions[i]   uint16   position in the group, ascending within a group
//   outlier_values[i]      fp16/fp32 the exact value, in the codec's precision
//
// fp16 values are held as their IEEE binary16 bit patterns (uint16), which is
// what qaq::store_value writes on the host; fp32 as float. The precision and
// P come from the codec object (codec.precision, codec.symmetric), which every
// entry point takes alongside the view.
//
// A decode-time layer (attend) is such a set for the groups of one layer and
// role, addressed by (kv head h, token t, sub-group s):
//   group(h, t, s) = h * head_stride + t * token_stride + s,  s = d / group_size.
// Quantizing a contiguous [kv_heads, tokens, head_dim] buffer with
// quantize_groups gives head_stride = tokens * head_dim / group_size and
// token_stride = head_dim / group_size.

#include <cstdint>

#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN
namespace cuda {

/// Where a group's token index comes from (the bit policies' no-history rule
/// and formulas read T and t): token(g) = (g / token_stride) % tokens.
///   groups in docs/method.md order ([B, T, L, H(, S)]): token_stride = groups per (batch, token)
///   one layer as [kv_heads, tokens, head_dim]:           token_stride = head_dim / group_size
struct group_tokens {
    std::int64_t tokens = 1;
    std::int64_t token_stride = 1;
};

/// Conditions the host path reports as qaq::error, counted on the device
/// instead (kernels cannot throw). Zero them before the call; all zero = success.
struct quantize_diagnostics {
    unsigned int parameter_overflow = 0;      ///< groups whose parameter does not fit fp16 storage
    unsigned int outlier_value_overflow = 0;  ///< finite outliers that do not fit fp16 storage
    unsigned int range_overflow = 0;          ///< groups whose range overflows float32
    unsigned int invalid_width = 0;           ///< widths outside 0..16 from a custom bits policy (clamped)
    unsigned int outliers_dropped = 0;        ///< outliers beyond outlier_capacity (not written)
};

/// What quantize_groups writes (caller-owned device memory). Capacities:
/// codes >= max_code_bytes(groups, group_size, bits_max), code_offsets and
/// outlier_offsets groups + 1 entries, outlier arrays `outlier_capacity`
/// entries. Outliers beyond the capacity are not written; the needed count is
/// outlier_offsets[groups] and diagnostics->outliers_dropped says it happened.
struct packed_groups_out {
    std::uint8_t* widths = nullptr;
    void* parameters = nullptr;
    std::uint64_t* code_offsets = nullptr;
    std::uint8_t* codes = nullptr;
    std::uint64_t* outlier_offsets = nullptr;
    std::uint16_t* outlier_positions = nullptr;
    void* outlier_values = nullptr;
    std::int64_t outlier_capacity = 0;
    /// Optional (may be null): a device quantize_diagnostics the kernels add to.
    quantize_diagnostics* diagnostics = nullptr;
    /// Optional (may be null): [groups] floats, each group's range as the bits
    /// policy read it (what the decode-time cache keeps for rebalancing).
    float* ranges = nullptr;
};

/// Read-only view of a set of packed groups (dequantize_groups, attend).
struct packed_groups_view {
    const std::uint8_t* widths = nullptr;
    const void* parameters = nullptr;
    const std::uint64_t* code_offsets = nullptr;
    const std::uint8_t* codes = nullptr;
    const std::uint64_t* outlier_offsets = nullptr;  ///< null: no group has outliers
    const std::uint16_t* outlier_positions = nullptr;
    const void* outlier_values = nullptr;
    std::int64_t group_size = 0;
};

/// One layer and role of a decode-time cache (see the layout comment above).
struct packed_layer_view {
    packed_groups_view groups;
    std::int64_t head_stride = 0;   ///< groups between consecutive KV heads
    std::int64_t token_stride = 0;  ///< groups between consecutive tokens
};

/// The attention problem of one decode step of one layer.
struct attend_shape {
    std::int64_t tokens = 0;       ///< T cached tokens
    std::int64_t kv_heads = 0;     ///< H
    std::int64_t query_heads = 0;  ///< Hq, a multiple of H; query head q reads KV head q / (Hq / H)
    std::int64_t head_dim = 0;     ///< D
};

}  // namespace cuda
QAQ_NAMESPACE_END
