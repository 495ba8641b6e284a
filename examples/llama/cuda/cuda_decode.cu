// cuda_quantized_cache and cuda_llama_model::decode (cuda_model.hpp): one
// token at a time through qaq's device cache, the decode-time protocol of the
// CPU runner (llama_model::decode over quantized_decode_cache) with the
// matrix products in cuBLAS and the cache in qaq::cuda::device_kv_cache.

#include <algorithm>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "llama/cuda/cuda_model.hpp"
#include "llama/cuda/forward_kernels.cuh"
#include "llama/cuda/model_state.cuh"
#include "qaq/backend/cuda/device_kv_cache.cuh"
#include "qaq/bit_packing.hpp"

namespace qaq::llama {

using namespace cuda_detail;
namespace kernels = cuda_forward;

namespace {

qaq::quantizer_config with_role(qaq::quantizer_config c, qaq::cache_role role) {
    c.role = role;
    return c;
}

/// Device bytes of one role when every group sits at bits_max (what the budget is charged).
std::int64_t worst_case_bytes(const qaq::quantizer_config& c, const llama_config& m, std::int64_t max_tokens) {
    const std::int64_t n = c.level == qaq::group_level::sub_head ? std::max(c.group_dims, 1) : m.head_dim;
    const std::int64_t groups = m.layers * max_tokens * m.kv_heads * (m.head_dim / std::max<std::int64_t>(n, 1));
    const int bits_max = c.bits == qaq::bits_kind::fixed ? c.fixed_bits : c.bits_max;
    const std::int64_t value_bytes = c.precision == qaq::storage_precision::fp16 ? 2 : 4;
    const std::int64_t parameters = (c.symmetric ? 1 : 2) * value_bytes;
    // codes, parameters, width, code offset, range, CSR row pointer; outliers at their ratio (both tails) and a margin.
    const std::int64_t per_group = qaq::packed_code_bytes(n, bits_max) + parameters + 1 + 8 + 4 + 8;
    const std::int64_t outliers =
        static_cast<std::int64_t>(c.outlier_ratio * static_cast<double>(groups * n)) + 4 * m.kv_heads * m.head_dim;
    return groups * per_group + outliers * (2 + value_bytes);
}

}  // namespace

struct cuda_quantized_cache::state {
    cuda_llama_model::state* owner = nullptr;
    std::unique_ptr<qaq::cuda::device_kv_cache> cache;
    std::int64_t capacity = 0, interval = 1, steps = 0, charged = 0;
    qaq::rebalance_counters last;

    ~state() {
        if (owner && charged > 0) owner->account->release(charged);
    }
};

cuda_quantized_cache::cuda_quantized_cache(cuda_llama_model& model, std::int64_t max_tokens, qaq::quantizer_config keys,
                                           qaq::quantizer_config values, std::int64_t rebalance_interval)
    : state_(std::make_unique<state>()) {
    QAQ_CHECK(max_tokens >= 1, "device cache capacity is ", max_tokens, ", expected >= 1");
    QAQ_CHECK(rebalance_interval >= 1, "rebalance interval is ", rebalance_interval, ", expected >= 1");
    cuda_llama_model::state& m = *model.state_;
    const llama_config& c = m.config;
    keys = with_role(std::move(keys), qaq::cache_role::key);
    values = with_role(std::move(values), qaq::cache_role::value);
    keys.validate();
    values.validate();
    state& s = *state_;
    const std::int64_t worst = worst_case_bytes(keys, c, max_tokens) + worst_case_bytes(values, c, max_tokens) +
                               4 * c.layers * std::max(keys.window, values.window) * max_tokens * c.kv_heads;
    m.account->reserve(worst, "a quantized cache of " + std::to_string(max_tokens) + " tokens");
    s.owner = &m;
    s.charged = worst;
    s.capacity = max_tokens;
    s.interval = rebalance_interval;
    m.use_device();
    s.cache = std::make_unique<qaq::cuda::device_kv_cache>(
        qaq::kv_cache_shape{c.layers, c.kv_heads, c.heads, c.head_dim, max_tokens}, std::move(keys), std::move(values),
        qaq::kv_cache_options{}, m.stream);
}

cuda_quantized_cache::~cuda_quantized_cache() = default;
cuda_quantized_cache::cuda_quantized_cache(cuda_quantized_cache&&) noexcept = default;
cuda_quantized_cache& cuda_quantized_cache::operator=(cuda_quantized_cache&&) noexcept = default;

std::int64_t cuda_quantized_cache::tokens() const { return state_->cache->tokens(state_->cache->shape().layers - 1); }
std::int64_t cuda_quantized_cache::capacity() const noexcept { return state_->capacity; }
const qaq::rebalance_counters& cuda_quantized_cache::last_rebalance() const noexcept { return state_->last; }
const qaq::rebalance_counters& cuda_quantized_cache::counters() const noexcept { return state_->cache->counters(); }

void cuda_quantized_cache::prefill(const prefill_result& r) {
    state_->owner->use_device();
    state_->cache->prefill(r.key_view(), r.value_view(), r.attention_rows());
}

qaq::kv_cache_byte_report cuda_quantized_cache::bytes() {
    state_->owner->use_device();
    return state_->cache->bytes();
}

qaq::reference_accounting cuda_quantized_cache::accounting(qaq::cache_role role) {
    state_->owner->use_device();
    return state_->cache->accounting(role);
}

std::vector<float> cuda_quantized_cache::dequantize(std::int64_t layer, qaq::cache_role role) {
    state_->owner->use_device();
    return state_->cache->dequantize(layer, role);
}

void cuda_llama_model::decode(std::int32_t token, cuda_quantized_cache& packed, float* logits,
                              std::vector<float>* attention) {
    state& s = *state_;
    cuda_quantized_cache::state& q = *packed.state_;
    QAQ_CHECK(q.owner == &s, "decode: the quantized cache belongs to another model");
    const llama_config& c = s.config;
    QAQ_CHECK(token >= 0 && token < c.vocab, "token id ", token, " is out of range for a vocabulary of ", c.vocab);
    qaq::cuda::device_kv_cache& cache = *q.cache;
    const std::int64_t position = packed.tokens();
    QAQ_CHECK(position < q.capacity, "the cache is full: it holds ", q.capacity, " tokens; cannot decode position ",
              position);
    const std::int64_t E = c.embedding, D = c.head_dim, H = c.heads, Hk = c.kv_heads, F = c.feed_forward;
    const std::int64_t T = position + 1;

    std::lock_guard<std::mutex> lock(s.mutex);
    s.use_device();
    const auto& a = s.account;
    s.x.ensure(a, 4 * E, "activations");
    s.h.ensure(a, 4 * E, "activations");
    s.q.ensure(a, 4 * c.q_dim(), "queries");
    s.att.ensure(a, 4 * c.q_dim(), "attention outputs");
    s.k.ensure(a, 4 * c.kv_dim(), "keys");
    s.v.ensure(a, 4 * c.kv_dim(), "values");
    s.gate.ensure(a, 4 * F, "feed-forward activations");
    s.up.ensure(a, 4 * F, "feed-forward activations");
    s.scores.ensure(a, 4 * H * T, "attention probabilities");
    kernels::token_column column;
    column.position = static_cast<std::int32_t>(position);
    s.upload(s.tokens, std::vector<std::int32_t>{token}, "token ids");
    s.upload(s.columns, std::vector<kernels::token_column>{column}, "token columns");
    const auto* columns = s.columns.as<const kernels::token_column>();
    if (attention) attention->resize(static_cast<std::size_t>(c.layers * H * T));
    const float eps = static_cast<float>(c.rms_eps);

    QAQ_CUDA_CHECK(kernels::embed(s.embeddings.as(), s.tokens.as<const std::int32_t>(), 1, E, s.x.as(), s.stream));
    for (std::int64_t l = 0; l < c.layers; ++l) {
        const state::layer& w = s.layers[static_cast<std::size_t>(l)];
        QAQ_CUDA_CHECK(kernels::rms_norm(s.x.as(), w.attention_norm.as(), nullptr, 1, E, eps, s.h.as(), s.stream));
        s.multiply(w.q.as(), c.q_dim(), E, s.h.as(), 1, s.q.as(), false);
        s.multiply(w.k.as(), c.kv_dim(), E, s.h.as(), 1, s.k.as(), false);
        s.multiply(w.v.as(), c.kv_dim(), E, s.h.as(), 1, s.v.as(), false);
        QAQ_CUDA_CHECK(kernels::rope(s.q.as(), s.k.as(), columns, s.inverse_frequencies.as<const double>(), 1, H, Hk, D,
                                     s.stream));
        cache.append(l, s.k.as(), Hk * D, s.v.as(), Hk * D);
        cache.attend(l, s.q.as(), H * D, s.att.as(), H * D, s.scores.as(), H * T);
        cache.observe(l, s.scores.as(), H * T);
        if (attention)  // to pageable memory: the copy completes before the call returns
            QAQ_CUDA_CHECK(cudaMemcpyAsync(attention->data() + l * H * T, s.scores.as(),
                                           sizeof(float) * static_cast<std::size_t>(H * T), cudaMemcpyDeviceToHost,
                                           s.stream));
        s.multiply(w.o.as(), E, c.q_dim(), s.att.as(), 1, s.x.as(), true);  // x += W_o att

        QAQ_CUDA_CHECK(kernels::rms_norm(s.x.as(), w.ffn_norm.as(), nullptr, 1, E, eps, s.h.as(), s.stream));
        s.multiply(w.gate.as(), F, E, s.h.as(), 1, s.gate.as(), false);
        s.multiply(w.up.as(), F, E, s.h.as(), 1, s.up.as(), false);
        QAQ_CUDA_CHECK(kernels::silu_gate(s.gate.as(), s.up.as(), F, s.stream));
        s.multiply(w.down.as(), E, F, s.gate.as(), 1, s.x.as(), true);  // x += W_down gate
    }
    if (logits) {
        s.normed.ensure(a, 4 * E, "normalized outputs");
        s.logits.ensure(a, 4 * c.vocab, "logits");
        QAQ_CUDA_CHECK(kernels::rms_norm(s.x.as(), s.output_norm.as(), nullptr, 1, E, eps, s.normed.as(), s.stream));
        s.multiply(s.output_matrix(), c.vocab, E, s.normed.as(), 1, s.logits.as(), false);
        QAQ_CUDA_CHECK(cudaMemcpyAsync(logits, s.logits.as(), sizeof(float) * static_cast<std::size_t>(c.vocab),
                                       cudaMemcpyDeviceToHost, s.stream));
    }
    // The step's end: rebalance waits for the stream, so the logits are there too.
    if (++q.steps % q.interval == 0)
        q.last = cache.rebalance();
    else
        cache.synchronize();
}

}  // namespace qaq::llama
