#pragma once
// Decode-time attention of one query token over the T cached tokens of one
// layer, straight over packed codes and exact outliers (or, for comparison,
// over a dense fp16/fp32 cache), with grouped-query attention:
//
//   s[q, t] = (q_q . k_t) / sqrt(D)        query head q reads KV head q / (Hq / H)
//   p[q, t] = softmax_t(s[q, t])
//   o[q]    = sum_t p[q, t] v_t
//
// Split-K ("flash decoding"): block (split, h) owns a range of tokens of KV
// head h and all Hq / H query heads reading it, so every key and value is
// decoded once per step. Inside a block, warps take tokens round-robin, four
// at a time so that their loads overlap; a lane owns `Elems` consecutive dims
// of a token (one group read when the group size is a multiple of Elems).
// Tokens are processed in chunks of 128: scores go to
// shared memory, then a running (max, sum) rescale per query head, then the
// value pass. A second kernel merges the splits' (max, sum, partial output)
// and, when asked, turns the raw scores it was given into probabilities.
//
// The public entry points (workspace query, argument checks) are attend() and
// attend_dense() in device_api.cuh.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cub/block/block_reduce.cuh>
#include <type_traits>
#include <cuda/functional>
#include <cuda/std/functional>

#include "qaq/backend/cuda/cuda_check.cuh"
#include "qaq/backend/cuda/device_layout.cuh"
#include "qaq/backend/cuda/group_kernels.cuh"
#include "qaq/backend/cuda/scalar_core.cuh"
#include "qaq/config.hpp"
#include "qaq/error.hpp"

QAQ_NAMESPACE_BEGIN
namespace cuda {
namespace detail {

inline constexpr int attend_warps = 4;
inline constexpr int attend_threads = attend_warps * 32;
/// Tokens whose scores a block holds in shared memory at once.
inline constexpr int attend_chunk = 128;
/// Query heads per KV head a block serves (grouped-query attention).
inline constexpr int attend_max_queries_per_kv = 8;
/// Tokens a warp reads before it reduces any (memory-level parallelism).
inline constexpr int attend_tokens_in_flight = 4;
/// The largest head_dim (32 lanes x 8 dims).
inline constexpr std::int64_t attend_max_head_dim = 256;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

/// Token t of KV head h from packed groups: dims lane * Elems .. + Elems - 1.
template <int Elems>
struct packed_token_reader {
    device_codec codec;
    packed_layer_view layer;
    std::int64_t head_dim = 0;

    __device__ __forceinline__ void read(std::int64_t h, std::int64_t t, int lane, float (&out)[Elems]) const {
        const std::int64_t group_size = layer.groups.group_size;
        const std::int64_t d0 = static_cast<std::int64_t>(lane) * Elems;
        if (d0 >= head_dim) {
#pragma unroll
            for (int e = 0; e < Elems; ++e) out[e] = 0.0f;
            return;
        }
        const std::int64_t base = h * layer.head_stride + t * layer.token_stride;
        if (group_size % Elems == 0) {
            // All of this lane's dims lie in one group (group_size divides head_dim).
            const std::int64_t s = d0 / group_size;
            decode_run<Elems>(codec, layer.groups, base + s, d0 - s * group_size, Elems, out);
        } else {
#pragma unroll
            for (int e = 0; e < Elems; ++e) {
                const std::int64_t d = d0 + e;
                if (d >= head_dim) {
                    out[e] = 0.0f;
                    continue;
                }
                const std::int64_t s = d / group_size;
                float one[1];
                decode_run<1>(codec, layer.groups, base + s, d - s * group_size, 1, one);
                out[e] = one[0];
            }
        }
    }
};

/// Token t of KV head h from a dense [kv_heads, tokens, head_dim] cache of T (__half or float).
template <class T, int Elems>
struct dense_token_reader {
    const T* data = nullptr;
    std::int64_t tokens = 0;
    std::int64_t head_dim = 0;

    __device__ __forceinline__ void read(std::int64_t h, std::int64_t t, int lane, float (&out)[Elems]) const {
        const T* row = data + (h * tokens + t) * head_dim;
        const std::int64_t d0 = static_cast<std::int64_t>(lane) * Elems;
        if constexpr (std::is_same<T, __half>::value && Elems % 2 == 0) {
            if (head_dim % 2 == 0 && d0 + Elems <= head_dim) {
                const __half2* pairs = reinterpret_cast<const __half2*>(row + d0);  // 4-byte aligned: D even
#pragma unroll
                for (int e = 0; e < Elems / 2; ++e) {
                    const float2 f = __half22float2(pairs[e]);
                    out[2 * e] = f.x;
                    out[2 * e + 1] = f.y;
                }
                return;
            }
        }
#pragma unroll
        for (int e = 0; e < Elems; ++e) out[e] = d0 + e < head_dim ? static_cast<float>(row[d0 + e]) : 0.0f;
    }
};

/// How the tokens are split between blocks.
struct attend_plan {
    int splits = 1;
    std::int64_t tokens_per_split = 0;
    int elems = 4;  ///< dims per lane: 2, 4 or 8
    std::size_t shared_bytes = 0;
    std::size_t workspace_bytes = 0;  ///< partial outputs and (max, sum) of every split
};

/// About four blocks per SM in total, whole chunks per split.
inline attend_plan plan_attend(const attend_shape& shape, int sm_count) {
    attend_plan plan;
    const std::int64_t per_kv = shape.query_heads / shape.kv_heads;
    const std::int64_t chunks = (shape.tokens + attend_chunk - 1) / attend_chunk;
    std::int64_t splits = (4 * static_cast<std::int64_t>(sm_count) + shape.kv_heads - 1) / shape.kv_heads;
    splits = splits < 1 ? 1 : (splits > chunks ? chunks : splits);
    const std::int64_t chunks_per_split = (chunks + splits - 1) / splits;
    plan.tokens_per_split = chunks_per_split * attend_chunk;
    plan.splits = static_cast<int>((shape.tokens + plan.tokens_per_split - 1) / plan.tokens_per_split);
    plan.elems = shape.head_dim <= 64 ? 2 : (shape.head_dim <= 128 ? 4 : 8);
    plan.shared_bytes = sizeof(float) * static_cast<std::size_t>(per_kv * attend_chunk +
                                                                 attend_warps * per_kv * 32 * plan.elems);
    const std::size_t partials = static_cast<std::size_t>(shape.kv_heads) * plan.splits * per_kv;
    plan.workspace_bytes = sizeof(float) * partials * static_cast<std::size_t>(shape.head_dim + 2);
    return plan;
}

template <int Elems, int MaxQueries, class KeyReader, class ValueReader>
__global__ void __launch_bounds__(attend_threads)
    attend_split_kernel(KeyReader keys, ValueReader values, attend_shape shape, std::int64_t tokens_per_split,
                        float scale, const float* queries, float* raw_scores, float* partial_output,
                        float* partial_max_sum) {
    constexpr int max_q = MaxQueries;
    constexpr int in_flight = attend_tokens_in_flight;
    extern __shared__ float shared[];
    __shared__ float running_max[max_q], running_sum[max_q], rescale[max_q];

    const int splits = static_cast<int>(gridDim.x);
    const int split = static_cast<int>(blockIdx.x);
    const std::int64_t h = blockIdx.y;
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
    const std::int64_t T = shape.tokens, D = shape.head_dim;
    const int per_kv = static_cast<int>(shape.query_heads / shape.kv_heads);
    float* scores = shared;                               // [per_kv][attend_chunk]
    float* warp_output = shared + per_kv * attend_chunk;  // [warps][per_kv][32 * Elems]

    float q[max_q][Elems], o[max_q][Elems];
#pragma unroll
    for (int j = 0; j < max_q; ++j)
#pragma unroll
        for (int e = 0; e < Elems; ++e) {
            const std::int64_t d = static_cast<std::int64_t>(lane) * Elems + e;
            q[j][e] = (j < per_kv && d < D) ? queries[(h * per_kv + j) * D + d] : 0.0f;
            o[j][e] = 0.0f;
        }
    if (threadIdx.x < max_q) {
        running_max[threadIdx.x] = -scalar::infinity();
        running_sum[threadIdx.x] = 0.0f;
    }
    __syncthreads();

    const std::int64_t begin = split * tokens_per_split;
    const std::int64_t end = begin + tokens_per_split < T ? begin + tokens_per_split : T;
    for (std::int64_t chunk = begin; chunk < end; chunk += attend_chunk) {
        const int length = static_cast<int>(end - chunk < attend_chunk ? end - chunk : attend_chunk);
        // Scores of this chunk; a warp reads `in_flight` tokens before it reduces any,
        // so their (dependent) metadata and code loads overlap.
        for (int first = warp * in_flight; first < length; first += attend_warps * in_flight) {
            float k[in_flight][Elems];
#pragma unroll
            for (int u = 0; u < in_flight; ++u)
                if (first + u < length) keys.read(h, chunk + first + u, lane, k[u]);
#pragma unroll
            for (int u = 0; u < in_flight; ++u) {
                const int i = first + u;
                if (i >= length) break;  // uniform across the warp
#pragma unroll
                for (int j = 0; j < max_q; ++j) {
                    if (j >= per_kv) break;
                    float partial = 0.0f;
#pragma unroll
                    for (int e = 0; e < Elems; ++e) partial += q[j][e] * k[u][e];
                    const float s = warp_sum(partial) * scale;
                    if (lane == 0) {
                        scores[j * attend_chunk + i] = s;
                        if (raw_scores != nullptr) raw_scores[(h * per_kv + j) * T + chunk + i] = s;
                    }
                }
            }
        }
        __syncthreads();
        // Running softmax: new maximum, probabilities relative to it, rescale of what came before.
        for (int j = warp; j < per_kv; j += attend_warps) {
            float chunk_max = -scalar::infinity();
            for (int i = lane; i < length; i += 32) chunk_max = fmaxf(chunk_max, scores[j * attend_chunk + i]);
            chunk_max = warp_max(chunk_max);
            const float previous = running_max[j];
            const float maximum = fmaxf(previous, chunk_max);
            float sum = 0.0f;
            for (int i = lane; i < length; i += 32) {
                const float p = expf(scores[j * attend_chunk + i] - maximum);
                scores[j * attend_chunk + i] = p;
                sum += p;
            }
            sum = warp_sum(sum);
            if (lane == 0) {
                const float factor = previous == -scalar::infinity() ? 0.0f : expf(previous - maximum);
                rescale[j] = factor;
                running_sum[j] = running_sum[j] * factor + sum;
                running_max[j] = maximum;
            }
        }
        __syncthreads();
        // Values of this chunk.
#pragma unroll
        for (int j = 0; j < max_q; ++j) {
            if (j >= per_kv) break;
            const float factor = rescale[j];
#pragma unroll
            for (int e = 0; e < Elems; ++e) o[j][e] *= factor;
        }
        for (int first = warp * in_flight; first < length; first += attend_warps * in_flight) {
            float v[in_flight][Elems];
#pragma unroll
            for (int u = 0; u < in_flight; ++u)
                if (first + u < length) values.read(h, chunk + first + u, lane, v[u]);
#pragma unroll
            for (int u = 0; u < in_flight; ++u) {
                const int i = first + u;
                if (i >= length) break;
#pragma unroll
                for (int j = 0; j < max_q; ++j) {
                    if (j >= per_kv) break;
                    const float p = scores[j * attend_chunk + i];
#pragma unroll
                    for (int e = 0; e < Elems; ++e) o[j][e] += p * v[u][e];
                }
            }
        }
        __syncthreads();  // the next chunk overwrites the scores
    }

    // Sum the warps' partial outputs; write this split's (output, max, sum).
#pragma unroll
    for (int j = 0; j < max_q; ++j) {
        if (j >= per_kv) break;
#pragma unroll
        for (int e = 0; e < Elems; ++e) warp_output[(warp * per_kv + j) * 32 * Elems + lane * Elems + e] = o[j][e];
    }
    __syncthreads();
    const std::int64_t first_partial = (h * splits + split) * per_kv;
    for (int index = static_cast<int>(threadIdx.x); index < per_kv * D; index += attend_threads) {
        const int j = index / static_cast<int>(D), d = index % static_cast<int>(D);
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < attend_warps; ++w) sum += warp_output[(w * per_kv + j) * 32 * Elems + d];
        partial_output[(first_partial + j) * D + d] = sum;
    }
    if (threadIdx.x < per_kv) {
        partial_max_sum[(first_partial + threadIdx.x) * 2] = running_max[threadIdx.x];
        partial_max_sum[(first_partial + threadIdx.x) * 2 + 1] = running_sum[threadIdx.x];
    }
}

/// One block per query head: merges the splits, normalizes the output and,
/// when `scores` is given, turns its raw scores into probabilities in place.
template <int Threads>
__global__ void __launch_bounds__(Threads)
    attend_combine_kernel(attend_shape shape, int splits, const float* partial_output, const float* partial_max_sum,
                          float* output, float* scores) {
    using reduce_t = cub::BlockReduce<float, Threads>;
    __shared__ typename reduce_t::TempStorage temp;
    __shared__ float shared_max, shared_sum;

    const std::int64_t qh = blockIdx.x;
    const std::int64_t per_kv = shape.query_heads / shape.kv_heads;
    const std::int64_t h = qh / per_kv, j = qh % per_kv;
    const std::int64_t D = shape.head_dim, T = shape.tokens;
    auto partial = [&](int split) { return (h * splits + split) * per_kv + j; };

    float local_max = -scalar::infinity();
    for (int sp = static_cast<int>(threadIdx.x); sp < splits; sp += Threads)
        local_max = fmaxf(local_max, partial_max_sum[partial(sp) * 2]);
    const float maximum = reduce_t(temp).Reduce(local_max, ::cuda::maximum<>{});
    if (threadIdx.x == 0) shared_max = maximum;
    __syncthreads();
    const float global_max = shared_max;

    float local_sum = 0.0f;
    for (int sp = static_cast<int>(threadIdx.x); sp < splits; sp += Threads)
        local_sum += partial_max_sum[partial(sp) * 2 + 1] * expf(partial_max_sum[partial(sp) * 2] - global_max);
    const float sum = reduce_t(temp).Reduce(local_sum, ::cuda::std::plus<>{});
    if (threadIdx.x == 0) shared_sum = sum;
    __syncthreads();
    const float global_sum = shared_sum;

    for (std::int64_t d = threadIdx.x; d < D; d += Threads) {
        float acc = 0.0f;
        for (int sp = 0; sp < splits; ++sp)
            acc += partial_output[partial(sp) * D + d] * expf(partial_max_sum[partial(sp) * 2] - global_max);
        output[qh * D + d] = acc / global_sum;
    }
    if (scores != nullptr)
        for (std::int64_t t = threadIdx.x; t < T; t += Threads)
            scores[qh * T + t] = expf(scores[qh * T + t] - global_max) / global_sum;
}

inline constexpr int attend_combine_threads = 128;

/// Launches both kernels with the given readers; `workspace` holds plan.workspace_bytes.
template <int Elems, class KeyReader, class ValueReader>
status launch_attend(const attend_plan& plan, const KeyReader& keys, const ValueReader& values,
                     const attend_shape& shape, const float* queries, float* output, float* probabilities,
                     void* workspace, cudaStream_t stream) {
    const std::int64_t per_kv = shape.query_heads / shape.kv_heads;
    float* partial_output = static_cast<float*>(workspace);
    float* partial_max_sum =
        partial_output + static_cast<std::size_t>(shape.kv_heads) * plan.splits * per_kv * shape.head_dim;
    const float scale = 1.0f / std::sqrt(static_cast<float>(shape.head_dim));
    const dim3 grid(static_cast<unsigned>(plan.splits), static_cast<unsigned>(shape.kv_heads));
    // Registers hold the queries and outputs of up to 4 or 8 query heads.
    if (per_kv <= 4)
        attend_split_kernel<Elems, 4><<<grid, attend_threads, plan.shared_bytes, stream>>>(
            keys, values, shape, plan.tokens_per_split, scale, queries, probabilities, partial_output, partial_max_sum);
    else
        attend_split_kernel<Elems, attend_max_queries_per_kv><<<grid, attend_threads, plan.shared_bytes, stream>>>(
            keys, values, shape, plan.tokens_per_split, scale, queries, probabilities, partial_output, partial_max_sum);
    QAQ_CUDA_TRY(cudaGetLastError());
    attend_combine_kernel<attend_combine_threads><<<static_cast<unsigned>(shape.query_heads), attend_combine_threads, 0,
                                                    stream>>>(shape, plan.splits, partial_output, partial_max_sum,
                                                              output, probabilities);
    QAQ_CUDA_TRY(cudaGetLastError());
    return status::success;
}

}  // namespace detail
}  // namespace cuda
QAQ_NAMESPACE_END
