#pragma once
// The LLaMA forward pass on one CUDA device, with the CPU llama_model's
// results contract (llama/model.hpp): prefill, extend and extend_batch over
// float32 key/value caches held on the device.
//
//   llama_model host(file);                        // reads the GGUF weights
//   cuda_llama_model gpu(host, {0, 40ll << 30});    // cuda:0, at most 40 GiB
//   prefill_result r = gpu.prefill(tokens, o);      // as host.prefill(tokens, o)
//   cuda_kv_cache cache(gpu, max_tokens);
//   gpu.extend(question, cache);                    // as host.extend(question, float_kv_cache)
//
//   cuda_quantized_cache packed(gpu, max_tokens, key_config, value_config);
//   gpu.decode(token, packed, logits);              // as host.decode(token, quantized_decode_cache)
//
// Weights are uploaded once as float32 (dequantized from the GGUF blocks),
// every matrix product (the logits too) is a cuBLAS SGEMM in float32, and the
// rest are the kernels of forward_kernels.cu. float32 rather than fp16/bf16:
// the evaluator measures logit and attention differences of a few 1e-3
// caused by cache quantization, and half-precision weights would add errors
// of that size; the models this runner targets are small next to a GPU's
// memory (SmolLM2-135M: 0.6 GB).
//
// This header has no CUDA types (the implementation is cuda_model.cu), so
// host code compiled by an ordinary C++ compiler can use it; it exists only
// in builds with CUDA (QAQ_HAS_CUDA_BUILD). Errors from the CUDA runtime or
// cuBLAS are qaq::error naming the call and the library's message. A model
// and its caches are used by one thread at a time; caches must not outlive
// their model.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "llama/model.hpp"
#include "qaq/kv_cache.hpp"
#include "qaq/quantizer_config.hpp"
#include "qaq/tensor_view.hpp"

namespace qaq::llama {

/// Usable CUDA devices; 0 (never an exception) when there is no device or no
/// driver, with the runtime's reason in `reason`.
int cuda_device_count(std::string* reason = nullptr);

struct cuda_model_options {
    int device = 0;
    /// Bytes this model may hold on the device (weights, buffers, caches);
    /// 0: the device's free memory when the model is built.
    std::int64_t memory_budget = 0;
};

class cuda_llama_model;

/// The exact float32 cache of one sequence, on the model's device:
/// [layers][kv_heads][capacity][head_dim] keys and values.
class cuda_kv_cache {
public:
    cuda_kv_cache(cuda_llama_model& model, std::int64_t max_tokens);
    ~cuda_kv_cache();
    cuda_kv_cache(cuda_kv_cache&&) noexcept;
    cuda_kv_cache& operator=(cuda_kv_cache&&) noexcept;
    cuda_kv_cache(const cuda_kv_cache&) = delete;
    cuda_kv_cache& operator=(const cuda_kv_cache&) = delete;

    std::int64_t tokens() const noexcept;
    std::int64_t capacity() const noexcept;
    /// Device bytes held (both tensors at full capacity).
    std::int64_t bytes() const noexcept;

    /// Replaces the contents by host keys and values [layers, 1, kv_heads, T, head_dim].
    void assign(const kv_view<const float>& keys, const kv_view<const float>& values);
    template <class Result>
    void assign(const Result& r) {
        assign(r.key_view(), r.value_view());
    }
    /// Drops every token from position `tokens` on.
    void truncate(std::int64_t tokens);

private:
    friend class cuda_llama_model;
    struct state;
    std::unique_ptr<state> state_;
};

/// qaq's packed cache of one sequence on the model's device
/// (qaq::cuda::device_kv_cache): decode appends each token's keys and values,
/// attends straight over the codes, observes the attention rows on the
/// device and rebalances after every `rebalance_interval` steps, as the CPU
/// runner's quantized_decode_cache. The model's memory budget is charged the
/// cache's worst case (every group at bits_max) when it is made.
class cuda_quantized_cache {
public:
    cuda_quantized_cache(cuda_llama_model& model, std::int64_t max_tokens, qaq::quantizer_config keys,
                         qaq::quantizer_config values, std::int64_t rebalance_interval = 1);
    ~cuda_quantized_cache();
    cuda_quantized_cache(cuda_quantized_cache&&) noexcept;
    cuda_quantized_cache& operator=(cuda_quantized_cache&&) noexcept;
    cuda_quantized_cache(const cuda_quantized_cache&) = delete;
    cuda_quantized_cache& operator=(const cuda_quantized_cache&) = delete;

    std::int64_t tokens() const;
    std::int64_t capacity() const noexcept;
    /// Quantizes a prefill (prefill_options keep_kv and attention_rows >= the
    /// largest window) into the empty cache, as quantized_decode_cache::prefill.
    void prefill(const prefill_result& r);
    /// Every byte the cache holds (waits for the device).
    qaq::kv_cache_byte_report bytes();
    /// The original implementation's accounting of one role (waits for the device).
    qaq::reference_accounting accounting(qaq::cache_role role);
    /// Layer `layer`'s keys or values as reconstructed from the codes, [kv_heads][tokens][head_dim].
    std::vector<float> dequantize(std::int64_t layer, qaq::cache_role role);
    const qaq::rebalance_counters& last_rebalance() const noexcept;
    const qaq::rebalance_counters& counters() const noexcept;

private:
    friend class cuda_llama_model;
    struct state;
    std::unique_ptr<state> state_;
};

/// One sequence of cuda_llama_model::extend_batch (as extend_job for the CPU model).
struct cuda_extend_job {
    const std::vector<std::int32_t>* tokens = nullptr;
    cuda_kv_cache* cache = nullptr;
    prefill_options options;
};

class cuda_llama_model {
public:
    /// Uploads `host`'s weights to options.device. Throws when there is no such
    /// device, when the budget exceeds the device's free memory, or when the
    /// weights and the base buffers do not fit the budget.
    cuda_llama_model(const llama_model& host, const cuda_model_options& options = {});
    ~cuda_llama_model();
    cuda_llama_model(const cuda_llama_model&) = delete;
    cuda_llama_model& operator=(const cuda_llama_model&) = delete;

    const llama_config& config() const noexcept;
    int device() const noexcept;
    /// e.g. "cuda:0 (NVIDIA H200, sm_90)".
    const std::string& device_name() const noexcept;
    std::int64_t weight_bytes() const noexcept;
    std::int64_t memory_budget() const noexcept;
    /// Device bytes held now: weights, buffers and live caches.
    std::int64_t bytes_in_use() const noexcept;

    /// As llama_model::prefill.
    prefill_result prefill(const std::vector<std::int32_t>& tokens, const prefill_options& o = {});
    /// As llama_model::extend, over a device cache.
    prefill_result extend(const std::vector<std::int32_t>& tokens, cuda_kv_cache& cache, const prefill_options& o = {});
    /// As llama_model::extend_batch: one GEMM per weight over the columns of every job.
    std::vector<prefill_result> extend_batch(const std::vector<cuda_extend_job>& jobs);

    /// One token at position cache.tokens() through qaq's device cache (as
    /// llama_model::decode over a quantized_decode_cache): every layer appends,
    /// attends over the codes and observes; the step ends with the cache's
    /// rebalance. Writes the next-token logits [vocab] unless `logits` is null,
    /// and, when `attention` is given, the token's attention rows over the
    /// cache [layers][heads][tokens after it] (as decode_trace::attention).
    void decode(std::int32_t token, cuda_quantized_cache& cache, float* logits,
                std::vector<float>* attention = nullptr);

    /// log p(tokens[p + 1] | tokens[0..p]) for p = first, ..., size - 2, from
    /// one prefill; the log-softmax is taken on the device, so only these
    /// values (not the logits) come back. For perplexity.
    std::vector<double> next_token_log_probabilities(const std::vector<std::int32_t>& tokens, std::int64_t first);

private:
    friend class cuda_kv_cache;
    friend class cuda_quantized_cache;
    struct state;
    // extend_batch with the lock held; copy_logits false leaves them on the device only.
    std::vector<prefill_result> run_batch(const std::vector<cuda_extend_job>& jobs, bool copy_logits);
    std::unique_ptr<state> state_;
};

}  // namespace qaq::llama
