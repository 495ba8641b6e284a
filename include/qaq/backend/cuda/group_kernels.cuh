#pragma once
// CUDA kernels over contiguous groups: a [groups, n] float buffer, group g =
// row g (the head and sub_head levels of a [.., tokens, head_dim] cache, or
// any level once gathered in docs/method.md order).
//
//   analyze_groups_kernel   one block per group: outliers (exact quantile via a
//                           block radix sort), statistics (block reductions),
//                           bit width (the bits policy), codec parameters
//   -- cub::DeviceScan::ExclusiveSum over code bytes and outlier counts --
//   encode_groups_kernel    one block per group: codes packed LSB first at the
//                           group's offset (eight codes per thread = `width`
//                           bytes), outliers written in position order (block scan)
//   decode_groups_kernel    eight elements per thread: unpack, decode, restore outliers
//
// The entry points that launch these (workspace, scans, argument checks) are
// in device_api.cuh; the scalar arithmetic is scalar_core.cuh's.

#include <cuda_runtime.h>

#include <cstdint>
#include <cub/block/block_radix_sort.cuh>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cuda/functional>
#include <cuda/std/functional>

#include "qaq/backend/cuda/device_layout.cuh"
#include "qaq/backend/cuda/scalar_core.cuh"
#include "qaq/bit_packing.hpp"
#include "qaq/config.hpp"
#include "qaq/group_statistics.hpp"
#include "qaq/policy/bits/bits_context.hpp"
#include "qaq/types.hpp"

QAQ_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

/// Elements each thread holds: eight codes of B bits are exactly B bytes.
inline constexpr int group_items_per_thread = 8;
/// The largest group one block handles (256 threads x 8 elements).
inline constexpr std::int64_t max_group_size = 2048;

/// Per-group results of the analysis pass, kept in the workspace for the encode pass.
struct analyze_outputs {
    std::uint8_t* widths = nullptr;
    void* parameters = nullptr;
    std::uint64_t* code_bytes = nullptr;      ///< [groups + 1], last = 0 (scanned into code_offsets)
    std::uint64_t* outlier_counts = nullptr;  ///< [groups + 1], last = 0 (scanned into outlier_offsets)
    float2* thresholds = nullptr;             ///< (lo, hi): outlier <=> non-finite or x <= lo or x > hi
    quantize_diagnostics* diagnostics = nullptr;
    float* ranges = nullptr;  ///< optional
};

__device__ __forceinline__ void count_diagnostic(unsigned int* counter) {
    if (counter != nullptr) atomicAdd(counter, 1u);
}

template <int BlockThreads, bool Quantile, class DeviceBits>
__global__ void __launch_bounds__(BlockThreads)
    analyze_groups_kernel(const float* values, std::int64_t groups, std::int64_t n, DeviceBits bits_policy,
                          double ratio, device_codec codec, group_tokens tokens, const float* predicted_attention,
                          analyze_outputs out) {
    constexpr int items = group_items_per_thread;
    using sort_t = cub::BlockRadixSort<float, BlockThreads, items>;
    using reduce_int_t = cub::BlockReduce<int, BlockThreads>;
    using reduce_float_t = cub::BlockReduce<float, BlockThreads>;
    using reduce_double_t = cub::BlockReduce<double, BlockThreads>;
    __shared__ union {
        typename sort_t::TempStorage sort;
        typename reduce_int_t::TempStorage reduce_int;
        typename reduce_float_t::TempStorage reduce_float;
        typename reduce_double_t::TempStorage reduce_double;
    } temp;
    __shared__ float shared_lo, shared_hi;
    __shared__ int shared_finite;

    const float inf = scalar::infinity();
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        out.code_bytes[groups] = 0;
        out.outlier_counts[groups] = 0;
    }
    for (std::int64_t g = blockIdx.x; g < groups; g += gridDim.x) {
        const float* row = values + g * n;
        float x[items];
        bool valid[items];
        int finite_here = 0;
#pragma unroll
        for (int j = 0; j < items; ++j) {
            const std::int64_t i = static_cast<std::int64_t>(threadIdx.x) * items + j;
            valid[j] = i < n;
            x[j] = valid[j] ? row[i] : 0.0f;
            finite_here += (valid[j] && scalar::is_finite(x[j])) ? 1 : 0;
        }

        // Outliers (docs/method.md): lo = k_lo-th, hi = k_hi-th smallest finite value.
        float lo = -inf, hi = inf;
        if constexpr (Quantile) {
            if (ratio > 0.0) {
                const int block_finite = reduce_int_t(temp.reduce_int).Sum(finite_here);
                if (threadIdx.x == 0) shared_finite = block_finite;
                __syncthreads();
                const int finite = shared_finite;
                if (finite > 0) {
                    // Non-finite values and padding sort after every finite value.
                    float keys[items];
#pragma unroll
                    for (int j = 0; j < items; ++j) keys[j] = (valid[j] && scalar::is_finite(x[j])) ? x[j] : inf;
                    sort_t(temp.sort).Sort(keys);  // blocked: thread t holds ranks 8t .. 8t+7
                    std::int64_t k_lo = 0, k_hi = 0;
                    scalar::quantile_ranks(ratio, finite, k_lo, k_hi);
#pragma unroll
                    for (int j = 0; j < items; ++j) {
                        const std::int64_t rank = static_cast<std::int64_t>(threadIdx.x) * items + j;
                        if (rank == k_lo - 1) shared_lo = keys[j];
                        if (rank == k_hi - 1) shared_hi = keys[j];
                    }
                    __syncthreads();
                    lo = shared_lo;
                    hi = k_hi >= 1 ? shared_hi : -inf;
                }
                __syncthreads();  // temp storage and the shared thresholds are reused below
            }
        }

        // Statistics over the non-outliers.
        float minimum = inf, maximum = -inf;
        double sum = 0.0;
        int count = 0;
#pragma unroll
        for (int j = 0; j < items; ++j) {
            if (!valid[j] || scalar::is_outlier(x[j], lo, hi)) continue;
            minimum = x[j] < minimum ? x[j] : minimum;
            maximum = maximum < x[j] ? x[j] : maximum;
            sum = scalar::add_rn(sum, static_cast<double>(x[j]));
            ++count;
        }
        const float block_min = reduce_float_t(temp.reduce_float).Reduce(minimum, ::cuda::minimum<>{});
        __syncthreads();
        const float block_max = reduce_float_t(temp.reduce_float).Reduce(maximum, ::cuda::maximum<>{});
        __syncthreads();
        const double block_sum = reduce_double_t(temp.reduce_double).Reduce(sum, ::cuda::std::plus<>{});
        __syncthreads();
        const int block_count = reduce_int_t(temp.reduce_int).Sum(count);

        if (threadIdx.x == 0) {
            group_statistics s;
            s.count = block_count;
            if (block_count > 0) {
                s.min = block_min;
                s.max = block_max;
                const float abs_min = fabsf(block_min), abs_max = fabsf(block_max);
                s.absmax = abs_min < abs_max ? abs_max : abs_min;  // std::max(|min|, |max|)
                s.mean = static_cast<float>(scalar::div_rn(block_sum, static_cast<double>(block_count)));
            }
            const float range = scalar::range(codec, s);
            if (out.ranges != nullptr) out.ranges[g] = range;
            if (!scalar::is_finite(range)) count_diagnostic(out.diagnostics ? &out.diagnostics->range_overflow : nullptr);

            bits::context context;
            context.range = range;
            context.predicted_attention = predicted_attention != nullptr ? predicted_attention[g] : 0.0f;
            context.tokens = tokens.tokens;
            context.token = (g / tokens.token_stride) % tokens.tokens;
            int width = bits_policy(context);
            if (width < 0 || width > max_bits) {
                count_diagnostic(out.diagnostics ? &out.diagnostics->invalid_width : nullptr);
                width = width < 0 ? 0 : max_bits;
            }
            bool overflow = false;
            const codec_parameters parameters = codec.fit(s, width, overflow);
            if (overflow) count_diagnostic(out.diagnostics ? &out.diagnostics->parameter_overflow : nullptr);
            codec.store(parameters, out.parameters, g);
            out.widths[g] = static_cast<std::uint8_t>(width);
            out.code_bytes[g] = static_cast<std::uint64_t>(packed_code_bytes(n, width));
            out.outlier_counts[g] = static_cast<std::uint64_t>(n - block_count);
            out.thresholds[g] = make_float2(lo, hi);
        }
        __syncthreads();  // the next group reuses the shared memory
    }
}

template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    encode_groups_kernel(const float* values, std::int64_t groups, std::int64_t n, device_codec codec,
                         const float2* thresholds, packed_groups_out out) {
    constexpr int items = group_items_per_thread;
    using scan_t = cub::BlockScan<int, BlockThreads>;
    __shared__ typename scan_t::TempStorage scan_temp;

    for (std::int64_t g = blockIdx.x; g < groups; g += gridDim.x) {
        const float* row = values + g * n;
        const int width = out.widths[g];
        const float2 bounds = thresholds[g];
        const std::int64_t first = static_cast<std::int64_t>(threadIdx.x) * items;
        float x[items];
        bool outlier[items];
        int outliers_here = 0;
#pragma unroll
        for (int j = 0; j < items; ++j) {
            const bool valid = first + j < n;
            x[j] = valid ? row[first + j] : 0.0f;
            outlier[j] = valid && scalar::is_outlier(x[j], bounds.x, bounds.y);
            outliers_here += outlier[j] ? 1 : 0;
        }

        if (width > 0 && first < n) {
            const affine_code a = codec.affine(codec.load(out.parameters, g, width), width);
            std::uint32_t codes[items];
#pragma unroll
            for (int j = 0; j < items; ++j)  // outliers take the centre's code, as on the CPU
                codes[j] = scalar::affine_encode(a, outlier[j] ? a.centre : x[j]);
            const int count = static_cast<int>(n - first < items ? n - first : items);
            scalar::pack8(codes, count, width, out.codes + out.code_offsets[g] + threadIdx.x * width);
        }

        // Outliers in position order: this thread's first slot is the block's prefix count.
        int rank = 0;
        scan_t(scan_temp).ExclusiveSum(outliers_here, rank);
        std::uint64_t slot = out.outlier_offsets[g] + static_cast<std::uint64_t>(rank);
#pragma unroll
        for (int j = 0; j < items; ++j) {
            if (!outlier[j]) continue;
            if (scalar::is_finite(x[j]) && !scalar::is_finite(scalar::to_storage(codec.precision, x[j])))
                count_diagnostic(out.diagnostics ? &out.diagnostics->outlier_value_overflow : nullptr);
            if (slot < static_cast<std::uint64_t>(out.outlier_capacity)) {
                out.outlier_positions[slot] = static_cast<std::uint16_t>(first + j);
                scalar::write_stored(codec.precision, out.outlier_values, static_cast<std::int64_t>(slot), x[j]);
            } else {
                count_diagnostic(out.diagnostics ? &out.diagnostics->outliers_dropped : nullptr);
            }
            ++slot;
        }
        __syncthreads();  // scan_temp is reused by the next group
    }
}

/// First index in [begin, end) whose position is >= `position` (positions ascend within a group).
__device__ __forceinline__ std::uint64_t lower_bound_position(const std::uint16_t* positions, std::uint64_t begin,
                                                              std::uint64_t end, std::int64_t position) {
    while (begin < end) {
        const std::uint64_t middle = begin + (end - begin) / 2;
        if (static_cast<std::int64_t>(positions[middle]) < position)
            begin = middle + 1;
        else
            end = middle;
    }
    return begin;
}

/// Reconstructs elements [first, first + count) (count <= Items) of group g into `v`,
/// outliers restored. `codec` is the view's codec; shared by dequantize and attend.
template <int Items>
__device__ __forceinline__ void decode_run(const device_codec& codec, const packed_groups_view& view, std::int64_t g,
                                           std::int64_t first, int count, float (&v)[Items]) {
    const int width = view.widths[g];
    const codec_parameters parameters = codec.load(view.parameters, g, width);
    if (width == 0) {
        const float centre = codec.decode_zero_bits(parameters);
#pragma unroll
        for (int j = 0; j < Items; ++j) v[j] = centre;
    } else {
        const affine_code a = codec.affine(parameters, width);
        const std::uint8_t* stream = view.codes + view.code_offsets[g];
#pragma unroll
        for (int j = 0; j < Items; ++j)
            v[j] = j < count ? scalar::affine_decode(a, read_code(stream, first + j, width)) : 0.0f;
    }
    if (view.outlier_offsets != nullptr) {
        const std::uint64_t end = view.outlier_offsets[g + 1];
        for (std::uint64_t i = lower_bound_position(view.outlier_positions, view.outlier_offsets[g], end, first); i < end;
             ++i) {
            const std::int64_t at = static_cast<std::int64_t>(view.outlier_positions[i]) - first;
            if (at >= count) break;
#pragma unroll
            for (int j = 0; j < Items; ++j)  // constant register indices only
                if (j == at) v[j] = scalar::read_stored(codec.precision, view.outlier_values, static_cast<std::int64_t>(i));
        }
    }
}

template <int Items = group_items_per_thread>
__global__ void decode_groups_kernel(device_codec codec, packed_groups_view view, std::int64_t groups, float* out) {
    constexpr int items = Items;
    const std::int64_t n = view.group_size;
    const std::int64_t runs_per_group = (n + items - 1) / items;
    const std::int64_t runs = groups * runs_per_group;
    const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
    for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < runs; r += stride) {
        const std::int64_t g = r / runs_per_group, first = (r % runs_per_group) * items;
        const int count = static_cast<int>(n - first < items ? n - first : items);
        float v[items];
        decode_run(codec, view, g, first, count, v);
        float* target = out + g * n + first;
#pragma unroll
        for (int j = 0; j < items; ++j)
            if (j < count) target[j] = v[j];
    }
}

}  // namespace detail
}  // namespace cuda
QAQ_NAMESPACE_END
