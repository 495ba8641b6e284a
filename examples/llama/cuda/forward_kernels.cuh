#pragma once
// The small kernels of the CUDA forward pass (cuda_model.cu runs the matrix
// products with cuBLAS and everything else through these launchers). Every
// launcher enqueues on `stream`, returns the launch's cudaError_t, and never
// synchronizes. Activations are column-major: column c (one token) of a
// [rows x columns] buffer starts at c * rows, as cuBLAS and the CPU model
// (column_matrix) lay them out.

#include <cuda_runtime_api.h>

#include <cstdint>

namespace qaq::llama::cuda_forward {

/// One new token of a batch: which sequence it continues and where.
struct token_column {
    std::int32_t sequence = 0;       ///< index into the batch's sequence_slot array
    std::int32_t position = 0;       ///< absolute position; it attends to positions 0..position
    std::int32_t attention_row = -1; ///< its row among the sequence's kept attention rows; -1: not kept
};

/// One sequence of a batch: its float32 cache on the device and where its
/// kept attention rows go.
struct sequence_slot {
    float* keys = nullptr;    ///< [layers][kv_heads][capacity][head_dim]
    float* values = nullptr;  ///< the same layout
    std::int64_t capacity = 0;
    std::int64_t tokens = 0;            ///< cached tokens after the batch (width of an attention row)
    std::int64_t attention_rows = 0;    ///< rows kept per (layer, head)
    std::int64_t attention_offset = 0;  ///< its [layers][heads][rows][tokens] block in the rows buffer
};

/// x[:, c] = table[tokens[c], :] for table [vocab][embedding] (row-major).
cudaError_t embed(const float* table, const std::int32_t* tokens, std::int64_t columns, std::int64_t embedding,
                  float* x, cudaStream_t stream);

/// out[:, c] = RMSNorm(x[:, source(c)]) * weight, source(c) = column_map ? column_map[c] : c.
cudaError_t rms_norm(const float* x, const float* weight, const std::int32_t* column_map, std::int64_t columns,
                     std::int64_t rows, float eps, float* out, cudaStream_t stream);

/// Rotates every head of q [heads * head_dim x columns] and k [kv_heads * head_dim x columns]
/// by its column's position (inverse_frequencies: head_dim / 2 doubles).
cudaError_t rope(float* q, float* k, const token_column* columns, const double* inverse_frequencies,
                 std::int64_t column_count, std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim,
                 cudaStream_t stream);

/// query_norms[(layer * heads + h) * column_count + c] = |q_h of column c|^2.
cudaError_t query_norms(const float* q, std::int64_t column_count, std::int64_t heads, std::int64_t head_dim,
                        std::int64_t layer, float* query_norms, cudaStream_t stream);

/// Writes the keys and values of every column into its sequence's cache at its position, layer `layer`.
cudaError_t append_kv(const float* k, const float* v, const token_column* columns, const sequence_slot* sequences,
                      std::int64_t column_count, std::int64_t layer, std::int64_t kv_heads, std::int64_t head_dim,
                      cudaStream_t stream);

/// Causal attention of columns [first, first + count): out[:, c] for every query
/// head over its sequence's cache (query head h reads KV head h / (heads /
/// kv_heads)); kept rows of probabilities go to attention_rows. `scores` is
/// scratch of count * heads * score_stride floats, score_stride >= every
/// sequence's tokens.
cudaError_t attention(const float* q, float* out, const token_column* columns, const sequence_slot* sequences,
                      std::int64_t first, std::int64_t count, std::int64_t layer, std::int64_t heads,
                      std::int64_t kv_heads, std::int64_t head_dim, float* scores, std::int64_t score_stride,
                      float* attention_rows, cudaStream_t stream);

/// gate[i] = silu(gate[i]) * up[i], i < count.
cudaError_t silu_gate(float* gate, const float* up, std::int64_t count, cudaStream_t stream);

/// log_probabilities[c] = log softmax(logits[:, c])[targets[c]] for logits
/// [vocab x columns]: the log-softmax on the device, so that only one value
/// per column travels back.
cudaError_t log_softmax_at(const float* logits, std::int64_t columns, std::int64_t vocab, const std::int32_t* targets,
                           float* log_probabilities, cudaStream_t stream);

/// The largest head dimension the attention kernel takes (its query lives in shared memory).
inline constexpr std::int64_t max_head_dim = 1024;

}  // namespace qaq::llama::cuda_forward
