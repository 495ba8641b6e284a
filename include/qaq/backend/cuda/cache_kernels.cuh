#pragma once
// The kernels of the device decode-time cache (device_kv_cache.cuh) around
// quantize_groups and attend:
//
//   commit_groups_kernel   groups quantize_groups staged in scratch -> the cache:
//                          width, parameters, range, codes into their arena slot,
//                          outliers appended to the layer's CSR (append, prefill)
//   observe_kernel         one attention row [query_heads, T] -> one window row
//                          [T, kv_heads]: the maximum over the query heads of a KV head
//   choose_widths_kernel   every group's width from its range, the window maximum
//                          and T (the bits policy), as (group << 8 | width) items
//                          flagged where the width changes (then cub::DeviceSelect)
//   count_non_finite_kernel, outlier_totals_kernel  checks and bookkeeping
//
// A role (keys or values) of the cache holds its per-group arrays for all
// layers in one allocation each, layer l's groups at l * layer_groups; within
// a layer the groups are token-major: group (t, h, s) = t * H * S + h * S + s,
// so appending a token appends groups (and CSR rows) at the end. Kernels are
// templates on their block size (launch bounds), which also keeps them inline
// for the linker when several translation units include this header.

#include <cuda_runtime.h>

#include <cstdint>

#include "qaq/backend/cuda/cache_scalar.cuh"
#include "qaq/backend/cuda/device_layout.cuh"
#include "qaq/backend/cuda/scalar_core.cuh"
#include "qaq/config.hpp"
#include "qaq/policy/bits/bits_context.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN
namespace cuda {

/// Conditions the host cache raises as qaq::error, counted on the device and
/// checked at rebalance() and synchronize().
struct cache_diagnostics {
    quantize_diagnostics quantize;           ///< from every quantize_groups of the cache
    unsigned int non_finite_inputs = 0;      ///< NaN or Inf in appended keys or values
    unsigned int invalid_probabilities = 0;  ///< observed probabilities that are not finite or < 0
};

namespace detail {

/// One role's per-group arrays (layer 0's base; a layer adds l * layer_groups).
struct cache_role_arrays {
    std::uint8_t* widths = nullptr;
    std::uint8_t* parameters = nullptr;  ///< parameter_bytes per group
    std::uint64_t* code_offsets = nullptr;
    float* ranges = nullptr;
    std::uint8_t* codes = nullptr;  ///< the role's code arena
};

/// One layer's outliers: CSR rows over the layer's groups.
struct cache_layer_outliers {
    std::uint64_t* offsets = nullptr;  ///< [layer_groups + 1]
    std::uint16_t* positions = nullptr;
    std::uint8_t* values = nullptr;  ///< value_bytes per entry
};

/// What quantize_groups wrote for `count` groups (scratch), read by commit_groups_kernel.
struct staged_groups {
    const std::uint8_t* widths = nullptr;
    const std::uint8_t* parameters = nullptr;
    const std::uint64_t* code_offsets = nullptr;
    const std::uint8_t* codes = nullptr;
    const float* ranges = nullptr;  ///< null: ranges stay as they are (rebalance)
    const std::uint64_t* outlier_offsets = nullptr;
    const std::uint16_t* outlier_positions = nullptr;
    const std::uint8_t* outlier_values = nullptr;
};

/// Where staged group i goes: group targets[i] (or first_group + i when targets
/// is null), its codes at slot_offsets[i] in the arena. When `outliers.offsets`
/// is set, the staged outliers are appended as CSR rows first_outlier_row + i
/// of the layer (rows before them are complete; the row pointer at
/// first_outlier_row is the layer's running total).
struct commit_plan {
    std::int64_t count = 0;
    std::int64_t first_group = 0;
    const std::int64_t* targets = nullptr;
    const std::uint64_t* slot_offsets = nullptr;
    std::int64_t group_size = 0;
    int parameter_bytes = 0;
    int value_bytes = 0;
    cache_layer_outliers outliers;
    std::int64_t first_outlier_row = 0;
};

/// One block per staged group.
template <int Threads>
__global__ void __launch_bounds__(Threads)
    commit_groups_kernel(staged_groups in, commit_plan plan, cache_role_arrays out) {
    for (std::int64_t i = blockIdx.x; i < plan.count; i += gridDim.x) {
        const std::int64_t g = plan.targets != nullptr ? plan.targets[i] : plan.first_group + i;
        const int width = in.widths[i];
        const std::int64_t code_bytes = packed_code_bytes(plan.group_size, width);
        const std::uint8_t* source = in.codes + in.code_offsets[i];
        std::uint8_t* target = out.codes + plan.slot_offsets[i];
        for (std::int64_t b = threadIdx.x; b < code_bytes; b += blockDim.x) target[b] = source[b];
        for (int b = threadIdx.x; b < plan.parameter_bytes; b += blockDim.x)
            out.parameters[g * plan.parameter_bytes + b] = in.parameters[i * plan.parameter_bytes + b];
        if (threadIdx.x == 0) {
            out.widths[g] = static_cast<std::uint8_t>(width);
            out.code_offsets[g] = plan.slot_offsets[i];
            if (in.ranges != nullptr) out.ranges[g] = in.ranges[i];
        }
        if (plan.outliers.offsets != nullptr) {
            const std::uint64_t base = plan.outliers.offsets[plan.first_outlier_row];  // never written here
            const std::uint64_t begin = in.outlier_offsets[i], end = in.outlier_offsets[i + 1];
            if (threadIdx.x == 0) plan.outliers.offsets[plan.first_outlier_row + i + 1] = base + end;
            for (std::uint64_t k = begin + threadIdx.x; k < end; k += blockDim.x) {
                plan.outliers.positions[base + k] = in.outlier_positions[k];
                for (int b = 0; b < plan.value_bytes; ++b)
                    plan.outliers.values[(base + k) * plan.value_bytes + b] =
                        in.outlier_values[k * plan.value_bytes + b];
            }
        }
    }
}

/// probabilities [query_heads, tokens] -> row [tokens, kv_heads] (max over each
/// KV head's query heads, as attention_window::observe), *row_length = tokens.
template <int Threads>
__global__ void __launch_bounds__(Threads)
    observe_kernel(const float* probabilities, std::int64_t query_heads, std::int64_t kv_heads, std::int64_t tokens,
                   float* row, std::int64_t* row_length, unsigned int* invalid) {
    const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
    unsigned int bad = 0;
    for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < tokens * kv_heads;
         i += stride)
        row[i] = window_entry(probabilities, query_heads, kv_heads, tokens, i, bad);
    if (bad > 0) atomicAdd(invalid, bad);
    if (blockIdx.x == 0 && threadIdx.x == 0) *row_length = tokens;
}

/// Item j = (group, new width) of group j of layers x tokens x kv_heads x groups_per_head;
/// changed[j] = 1 where the width differs from the stored one.
template <int Threads, class DeviceBits>
__global__ void __launch_bounds__(Threads)
    choose_widths_kernel(DeviceBits bits, width_scan scan, std::uint64_t* items, std::uint8_t* changed) {
    const std::int64_t total = scan.layers * scan.tokens * scan.kv_heads * scan.groups_per_head;
    const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
    for (std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < total; j += stride) {
        bool differs = false;
        items[j] = width_item(bits, scan, j, differs);
        changed[j] = differs ? 1 : 0;
    }
}

template <int Threads>
__global__ void __launch_bounds__(Threads)
    count_non_finite_kernel(const float* x, std::int64_t count, unsigned int* counter) {
    const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
    for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride)
        if (!scalar::is_finite(x[i])) atomicAdd(counter, 1u);
}

/// totals[l] = the outlier count of layer l's first `rows` CSR rows.
template <int Threads>
__global__ void __launch_bounds__(Threads)
    outlier_totals_kernel(const std::uint64_t* offsets, std::int64_t layers, std::int64_t layer_stride,
                          std::int64_t rows, std::uint64_t* totals) {
    const std::int64_t l = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (l < layers) totals[l] = offsets[l * layer_stride + rows];
}

/// The bits "policy" of a rebalance: group g of the staged batch takes widths[g]
/// (quantize_groups passes the batch index as the token when token_stride = 1
/// and tokens = the batch size).
struct listed_widths {
    const std::uint8_t* widths = nullptr;
    static constexpr bool is_bits_policy = true;
    static constexpr bool needs_attention = false;
    QAQ_HOST_DEVICE int operator()(const bits::context& c) const noexcept {
#ifdef __CUDA_ARCH__
        return widths[c.token];
#else
        (void)c;
        return 0;  // device memory: never evaluated on the host
#endif
    }
};

}  // namespace detail
}  // namespace cuda
QAQ_NAMESPACE_END
