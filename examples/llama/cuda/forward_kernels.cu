// The small kernels of the CUDA forward pass (declared in forward_kernels.cuh).
// Their per-element arithmetic is forward_scalar.cuh, tested on the host
// against the CPU model; what is left here is indexing and reductions.

#include "llama/cuda/forward_kernels.cuh"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "llama/cuda/forward_scalar.cuh"

namespace qaq::llama::cuda_forward {
namespace {

namespace scalar = cuda_scalar;

constexpr int elementwise_threads = 256;
constexpr int reduction_threads = 256;
constexpr int attention_warps = 4;
constexpr unsigned int full_warp = 0xffffffffu;

// Grid-stride kernels take at most this many blocks and loop over the rest.
unsigned int blocks_for(std::int64_t items, int threads) {
    const std::int64_t blocks = (items + threads - 1) / threads;
    return static_cast<unsigned int>(std::clamp<std::int64_t>(blocks, 1, std::int64_t{1} << 20));
}

__device__ std::int64_t global_thread() { return static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ std::int64_t grid_threads() { return static_cast<std::int64_t>(gridDim.x) * blockDim.x; }

__device__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(full_warp, v, offset);
    return v;
}

// The sum over a block whose size is a multiple of 32; every thread gets it.
__device__ float block_sum(float v, float* partial /* 32 floats of shared memory */) {
    v = warp_sum(v);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    float total = lane < warps ? partial[lane] : 0.0f;
    total = warp_sum(total);
    __syncthreads();
    return total;
}

// ---- kernels ------------------------------------------------------------------

__global__ void embed_kernel(const float* table, const std::int32_t* tokens, std::int64_t columns,
                             std::int64_t embedding, float* x) {
    for (std::int64_t i = global_thread(); i < columns * embedding; i += grid_threads()) {
        const std::int64_t c = i / embedding, e = i % embedding;
        x[i] = table[static_cast<std::int64_t>(tokens[c]) * embedding + e];
    }
}

__global__ void rms_norm_kernel(const float* x, const float* weight, const std::int32_t* column_map, std::int64_t rows,
                                float eps, float* out) {
    __shared__ float partial[32];
    const std::int64_t c = blockIdx.x;
    const float* in = x + (column_map ? static_cast<std::int64_t>(column_map[c]) : c) * rows;
    float* o = out + c * rows;
    float squares = 0.0f;
    for (std::int64_t i = threadIdx.x; i < rows; i += blockDim.x) squares += in[i] * in[i];
    const float inverse = scalar::rms_inverse(block_sum(squares, partial), rows, eps);
    for (std::int64_t i = threadIdx.x; i < rows; i += blockDim.x) o[i] = scalar::rms_normalized(in[i], weight[i], inverse);
}

__global__ void rope_kernel(float* q, float* k, const token_column* columns, const double* inverse_frequencies,
                            std::int64_t column_count, std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim) {
    const std::int64_t pairs = head_dim / 2;
    for (std::int64_t i = global_thread(); i < column_count * pairs; i += grid_threads()) {
        const std::int64_t c = i / pairs, pair = i % pairs;
        float cosine = 0.0f, sine = 0.0f;
        scalar::rope_cos_sin(columns[c].position, inverse_frequencies[pair], cosine, sine);
        float* qc = q + c * heads * head_dim + 2 * pair;
        for (std::int64_t h = 0; h < heads; ++h) scalar::rope_rotate_pair(qc[h * head_dim], qc[h * head_dim + 1], cosine, sine);
        float* kc = k + c * kv_heads * head_dim + 2 * pair;
        for (std::int64_t h = 0; h < kv_heads; ++h)
            scalar::rope_rotate_pair(kc[h * head_dim], kc[h * head_dim + 1], cosine, sine);
    }
}

__global__ void query_norms_kernel(const float* q, std::int64_t column_count, std::int64_t heads, std::int64_t head_dim,
                                   std::int64_t layer, float* norms) {
    for (std::int64_t i = global_thread(); i < column_count * heads; i += grid_threads()) {
        const std::int64_t c = i / heads, h = i % heads;
        const float* x = q + c * heads * head_dim + h * head_dim;
        float sum = 0.0f;
        for (std::int64_t d = 0; d < head_dim; ++d) sum += x[d] * x[d];
        norms[(layer * heads + h) * column_count + c] = sum;
    }
}

__global__ void append_kv_kernel(const float* k, const float* v, const token_column* columns,
                                 const sequence_slot* sequences, std::int64_t column_count, std::int64_t layer,
                                 std::int64_t kv_heads, std::int64_t head_dim) {
    const std::int64_t kv_dim = kv_heads * head_dim;
    for (std::int64_t i = global_thread(); i < column_count * kv_dim; i += grid_threads()) {
        const std::int64_t c = i / kv_dim, e = i % kv_dim, g = e / head_dim, d = e % head_dim;
        const token_column column = columns[c];
        const sequence_slot& s = sequences[column.sequence];
        const std::int64_t at = ((layer * kv_heads + g) * s.capacity + column.position) * head_dim + d;
        s.keys[at] = k[i];
        s.values[at] = v[i];
    }
}

// One block per (column, query head). Each warp takes every Warps-th cached
// token: the lanes split the dot product, and the warp keeps an online
// softmax over its tokens; the warps' states merge into the row's maximum
// and sum. Scores go through `scores` (global scratch) so that the
// probabilities can be normalized, multiplied with V and kept as rows.
template <int Warps>
__global__ void attention_kernel(const float* q, float* out, const token_column* columns,
                                 const sequence_slot* sequences, std::int64_t first, std::int64_t layer,
                                 std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim, float scale,
                                 float* scores, std::int64_t score_stride, float* attention_rows) {
    extern __shared__ float query[];  // head_dim floats
    __shared__ float warp_maximum[Warps], warp_total[Warps];
    const std::int64_t local = blockIdx.x, c = first + local, h = blockIdx.y;
    const token_column column = columns[c];
    const sequence_slot& sequence = sequences[column.sequence];
    const std::int64_t g = h / (heads / kv_heads), visible = static_cast<std::int64_t>(column.position) + 1;
    const std::int64_t q_dim = heads * head_dim;
    const float* keys = sequence.keys + (layer * kv_heads + g) * sequence.capacity * head_dim;
    const float* values = sequence.values + (layer * kv_heads + g) * sequence.capacity * head_dim;
    for (std::int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) query[d] = q[c * q_dim + h * head_dim + d];
    __syncthreads();

    float* s = scores + (local * heads + h) * score_stride;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    scalar::online_softmax state;
    for (std::int64_t t = warp; t < visible; t += Warps) {
        const float* key = keys + t * head_dim;
        float dot = 0.0f;
        for (std::int64_t d = lane; d < head_dim; d += 32) dot += query[d] * key[d];
        const float score = warp_sum(dot) * scale;  // every lane holds the same score
        if (lane == 0) s[t] = score;
        state.add(score);
    }
    if (lane == 0) {
        warp_maximum[warp] = state.maximum;
        warp_total[warp] = state.sum;
    }
    __syncthreads();
    scalar::online_softmax total;
    for (int w = 0; w < Warps; ++w) {
        scalar::online_softmax other;
        other.maximum = warp_maximum[w];
        other.sum = warp_total[w];
        total.merge(other);
    }
    for (std::int64_t t = threadIdx.x; t < visible; t += blockDim.x) s[t] = total.probability(s[t]);
    __syncthreads();

    for (std::int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float sum = 0.0f;
        for (std::int64_t t = 0; t < visible; ++t) sum += s[t] * values[t * head_dim + d];
        out[c * q_dim + h * head_dim + d] = sum;
    }
    if (column.attention_row >= 0) {
        float* row = attention_rows + sequence.attention_offset +
                     ((layer * heads + h) * sequence.attention_rows + column.attention_row) * sequence.tokens;
        for (std::int64_t t = threadIdx.x; t < sequence.tokens; t += blockDim.x) row[t] = t < visible ? s[t] : 0.0f;
    }
}

__global__ void silu_gate_kernel(float* gate, const float* up, std::int64_t count) {
    for (std::int64_t i = global_thread(); i < count; i += grid_threads()) gate[i] = scalar::silu_gate(gate[i], up[i]);
}

__device__ scalar::online_softmax warp_merge(scalar::online_softmax s) {
    for (int offset = 16; offset > 0; offset /= 2) {
        scalar::online_softmax other;
        other.maximum = __shfl_xor_sync(full_warp, s.maximum, offset);
        other.sum = __shfl_xor_sync(full_warp, s.sum, offset);
        s.merge(other);
    }
    return s;
}

__global__ void log_softmax_at_kernel(const float* logits, std::int64_t vocab, const std::int32_t* targets,
                                      float* log_probabilities) {
    __shared__ float warp_maximum[32], warp_total[32];
    const float* column = logits + static_cast<std::int64_t>(blockIdx.x) * vocab;
    scalar::online_softmax state;
    for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x) state.add(column[i]);
    state = warp_merge(state);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
        warp_maximum[warp] = state.maximum;
        warp_total[warp] = state.sum;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        scalar::online_softmax total;
        for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) {
            scalar::online_softmax other;
            other.maximum = warp_maximum[w];
            other.sum = warp_total[w];
            total.merge(other);
        }
        log_probabilities[blockIdx.x] = column[targets[blockIdx.x]] - total.log_sum_exp();
    }
}

}  // namespace

// ---- launchers -------------------------------------------------------------------

cudaError_t embed(const float* table, const std::int32_t* tokens, std::int64_t columns, std::int64_t embedding,
                  float* x, cudaStream_t stream) {
    embed_kernel<<<blocks_for(columns * embedding, elementwise_threads), elementwise_threads, 0, stream>>>(
        table, tokens, columns, embedding, x);
    return cudaGetLastError();
}

cudaError_t rms_norm(const float* x, const float* weight, const std::int32_t* column_map, std::int64_t columns,
                     std::int64_t rows, float eps, float* out, cudaStream_t stream) {
    if (columns == 0) return cudaSuccess;
    rms_norm_kernel<<<static_cast<unsigned int>(columns), reduction_threads, 0, stream>>>(x, weight, column_map, rows,
                                                                                           eps, out);
    return cudaGetLastError();
}

cudaError_t rope(float* q, float* k, const token_column* columns, const double* inverse_frequencies,
                 std::int64_t column_count, std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim,
                 cudaStream_t stream) {
    rope_kernel<<<blocks_for(column_count * (head_dim / 2), elementwise_threads), elementwise_threads, 0, stream>>>(
        q, k, columns, inverse_frequencies, column_count, heads, kv_heads, head_dim);
    return cudaGetLastError();
}

cudaError_t query_norms(const float* q, std::int64_t column_count, std::int64_t heads, std::int64_t head_dim,
                        std::int64_t layer, float* norms, cudaStream_t stream) {
    query_norms_kernel<<<blocks_for(column_count * heads, elementwise_threads), elementwise_threads, 0, stream>>>(
        q, column_count, heads, head_dim, layer, norms);
    return cudaGetLastError();
}

cudaError_t append_kv(const float* k, const float* v, const token_column* columns, const sequence_slot* sequences,
                      std::int64_t column_count, std::int64_t layer, std::int64_t kv_heads, std::int64_t head_dim,
                      cudaStream_t stream) {
    append_kv_kernel<<<blocks_for(column_count * kv_heads * head_dim, elementwise_threads), elementwise_threads, 0,
                       stream>>>(k, v, columns, sequences, column_count, layer, kv_heads, head_dim);
    return cudaGetLastError();
}

cudaError_t attention(const float* q, float* out, const token_column* columns, const sequence_slot* sequences,
                      std::int64_t first, std::int64_t count, std::int64_t layer, std::int64_t heads,
                      std::int64_t kv_heads, std::int64_t head_dim, float* scores, std::int64_t score_stride,
                      float* attention_rows, cudaStream_t stream) {
    if (count == 0) return cudaSuccess;
    if (head_dim > max_head_dim || heads % kv_heads != 0) return cudaErrorInvalidValue;
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));  // as the CPU model
    const dim3 grid(static_cast<unsigned int>(count), static_cast<unsigned int>(heads));
    attention_kernel<attention_warps><<<grid, attention_warps * 32, sizeof(float) * head_dim, stream>>>(
        q, out, columns, sequences, first, layer, heads, kv_heads, head_dim, scale, scores, score_stride,
        attention_rows);
    return cudaGetLastError();
}

cudaError_t silu_gate(float* gate, const float* up, std::int64_t count, cudaStream_t stream) {
    silu_gate_kernel<<<blocks_for(count, elementwise_threads), elementwise_threads, 0, stream>>>(gate, up, count);
    return cudaGetLastError();
}

cudaError_t log_softmax_at(const float* logits, std::int64_t columns, std::int64_t vocab, const std::int32_t* targets,
                           float* log_probabilities, cudaStream_t stream) {
    if (columns == 0) return cudaSuccess;
    log_softmax_at_kernel<<<static_cast<unsigned int>(columns), reduction_threads, 0, stream>>>(logits, vocab, targets,
                                                                                                log_probabilities);
    return cudaGetLastError();
}

}  // namespace qaq::llama::cuda_forward
