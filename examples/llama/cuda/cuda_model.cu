// cuda_llama_model and cuda_kv_cache (cuda_model.hpp): weights on the
// device, cuBLAS for the matrix products, forward_kernels.cu for the rest,
// and every device allocation counted against the model's memory budget.

#include "llama/cuda/cuda_model.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "llama/cuda/forward_kernels.cuh"
#include "llama/cuda/model_state.cuh"
#include "qaq/backend/cuda/cuda_check.cuh"
#include "qaq/error.hpp"

namespace qaq::llama {

using namespace cuda_detail;
namespace kernels = cuda_forward;

int cuda_device_count(std::string* reason) { return qaq::cuda::device_count(reason); }


// ---------------------------------------------------------------------------
// Construction: checks, budget, weights
// ---------------------------------------------------------------------------

namespace {

std::int64_t matrix_bytes(const weight_matrix& w) { return 4 * w.rows() * w.cols(); }

device_array upload_matrix(const std::shared_ptr<memory_account>& account, const weight_matrix& w, cudaStream_t stream) {
    device_array a(account, matrix_bytes(w), "the weight '" + w.name() + "'");
    // Slabs of about 16 MiB: dequantized on the host (or copied from the
    // dense copy), then copied over.
    const std::int64_t slab = std::max<std::int64_t>(1, (std::int64_t{4} << 20) / std::max<std::int64_t>(1, w.cols()));
    std::vector<float> host(static_cast<std::size_t>(std::min(slab, w.rows()) * w.cols()));
    for (std::int64_t first = 0; first < w.rows(); first += slab) {
        const std::int64_t count = std::min(slab, w.rows() - first);
        w.dequantize(first, count, host.data());
        QAQ_CUDA_CHECK(cudaMemcpyAsync(a.as() + first * w.cols(), host.data(), sizeof(float) * count * w.cols(),
                                       cudaMemcpyHostToDevice, stream));
        QAQ_CUDA_CHECK(cudaStreamSynchronize(stream));  // before the host slab is refilled
    }
    return a;
}

template <class T>
device_array upload_vector(const std::shared_ptr<memory_account>& account, const std::vector<T>& v,
                           const std::string& what, cudaStream_t stream) {
    device_array a(account, static_cast<std::int64_t>(sizeof(T) * v.size()), what);
    QAQ_CUDA_CHECK(cudaMemcpyAsync(a.as<void>(), v.data(), sizeof(T) * v.size(), cudaMemcpyHostToDevice, stream));
    QAQ_CUDA_CHECK(cudaStreamSynchronize(stream));
    return a;
}

}  // namespace

cuda_llama_model::cuda_llama_model(const llama_model& host, const cuda_model_options& options)
    : state_(std::make_unique<state>()) {
    state& s = *state_;
    s.config = host.config();
    s.device = options.device;
    const std::string label = "cuda:" + std::to_string(options.device);
    std::string reason;
    const int count = cuda_device_count(&reason);
    QAQ_CHECK(count > 0, label, ": no usable CUDA device on this machine (", reason, ")");
    QAQ_CHECK(options.device >= 0 && options.device < count, label, ": no such device; this machine has ", count,
              " CUDA device(s), cuda:0..cuda:", count - 1);
    QAQ_CHECK(options.memory_budget >= 0, label, ": memory budget ", options.memory_budget, " is negative");
    s.use_device();
    cudaDeviceProp properties{};
    QAQ_CUDA_CHECK(cudaGetDeviceProperties(&properties, s.device));
    s.name = label + " (" + properties.name + ", sm_" + std::to_string(properties.major) +
             std::to_string(properties.minor) + ")";
    std::size_t free_bytes = 0, total_bytes = 0;
    QAQ_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const auto free_memory = static_cast<std::int64_t>(free_bytes);
    QAQ_CHECK(options.memory_budget <= free_memory, label, ": the memory budget ", format_bytes(options.memory_budget),
              " exceeds the device's free memory ", format_bytes(free_memory), " (of ",
              format_bytes(static_cast<std::int64_t>(total_bytes)), ")");
    const std::int64_t budget = options.memory_budget > 0 ? options.memory_budget : free_memory;
    s.account = std::make_shared<memory_account>(label, budget);

    const llama_config& c = s.config;
    QAQ_CHECK(c.head_dim <= kernels::max_head_dim, label, ": head dimension ", c.head_dim,
              " exceeds the CUDA attention kernel's limit ", kernels::max_head_dim);
    s.weight_bytes = matrix_bytes(host.embeddings()) + (c.tied_embeddings ? 0 : matrix_bytes(host.output())) +
                     4 * c.embedding * (1 + 2 * c.layers);
    for (const layer_weights& w : host.layers())
        for (const weight_matrix* m : {&w.q, &w.k, &w.v, &w.o, &w.gate, &w.up, &w.down}) s.weight_bytes += matrix_bytes(*m);
    // The weights and one batch of 64 tokens' activations must fit.
    const std::int64_t base_buffers = 4 * 64 * (2 * c.embedding + 2 * c.q_dim() + 2 * c.kv_dim() + 2 * c.feed_forward + c.vocab);
    QAQ_CHECK(s.weight_bytes + base_buffers <= budget, label, ": the model needs ", format_bytes(s.weight_bytes),
              " of float32 weights plus ", format_bytes(base_buffers), " of buffers, more than the memory budget ",
              format_bytes(budget), options.memory_budget > 0 ? " (the device spec's @MEMORY)" : " (the free memory)");

    QAQ_CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
    QAQ_CUBLAS_CHECK(cublasCreate(&s.blas));
    QAQ_CUBLAS_CHECK(cublasSetStream(s.blas, s.stream));
    // Plain float32 products (no TF32): the CPU model's results are the reference.
    QAQ_CUBLAS_CHECK(cublasSetMathMode(s.blas, CUBLAS_DEFAULT_MATH));

    s.embeddings = upload_matrix(s.account, host.embeddings(), s.stream);
    if (!c.tied_embeddings) s.output = upload_matrix(s.account, host.output(), s.stream);
    s.output_norm = upload_vector(s.account, host.output_norm(), "the output norm", s.stream);
    s.inverse_frequencies = upload_vector(s.account, rope_inverse_frequencies(c.rope_theta, c.head_dim),
                                          "the RoPE frequencies", s.stream);
    s.layers.resize(static_cast<std::size_t>(c.layers));
    for (std::int64_t l = 0; l < c.layers; ++l) {
        const layer_weights& w = host.layers()[static_cast<std::size_t>(l)];
        state::layer& d = s.layers[static_cast<std::size_t>(l)];
        d.attention_norm = upload_vector(s.account, w.attention_norm, "a norm weight", s.stream);
        d.ffn_norm = upload_vector(s.account, w.ffn_norm, "a norm weight", s.stream);
        d.q = upload_matrix(s.account, w.q, s.stream);
        d.k = upload_matrix(s.account, w.k, s.stream);
        d.v = upload_matrix(s.account, w.v, s.stream);
        d.o = upload_matrix(s.account, w.o, s.stream);
        d.gate = upload_matrix(s.account, w.gate, s.stream);
        d.up = upload_matrix(s.account, w.up, s.stream);
        d.down = upload_matrix(s.account, w.down, s.stream);
    }
}

cuda_llama_model::~cuda_llama_model() = default;

const llama_config& cuda_llama_model::config() const noexcept { return state_->config; }
int cuda_llama_model::device() const noexcept { return state_->device; }
const std::string& cuda_llama_model::device_name() const noexcept { return state_->name; }
std::int64_t cuda_llama_model::weight_bytes() const noexcept { return state_->weight_bytes; }
std::int64_t cuda_llama_model::memory_budget() const noexcept { return state_->account->budget(); }
std::int64_t cuda_llama_model::bytes_in_use() const noexcept { return state_->account->in_use(); }

// ---------------------------------------------------------------------------
// Caches
// ---------------------------------------------------------------------------

cuda_kv_cache::cuda_kv_cache(cuda_llama_model& model, std::int64_t max_tokens) : state_(std::make_unique<state>()) {
    const cuda_llama_model::state& m = *model.state_;
    QAQ_CHECK(max_tokens >= 1, "device cache capacity is ", max_tokens, ", expected >= 1");
    state& s = *state_;
    s.owner = &m;
    s.layers = m.config.layers, s.kv_heads = m.config.kv_heads, s.head_dim = m.config.head_dim;
    s.capacity = max_tokens;
    m.use_device();
    const std::int64_t bytes = 4 * s.layers * s.kv_heads * s.capacity * s.head_dim;
    s.keys = device_array(m.account, bytes, "a key cache of " + std::to_string(max_tokens) + " tokens");
    s.values = device_array(m.account, bytes, "a value cache of " + std::to_string(max_tokens) + " tokens");
}

cuda_kv_cache::~cuda_kv_cache() = default;
cuda_kv_cache::cuda_kv_cache(cuda_kv_cache&&) noexcept = default;
cuda_kv_cache& cuda_kv_cache::operator=(cuda_kv_cache&&) noexcept = default;

std::int64_t cuda_kv_cache::tokens() const noexcept { return state_->tokens; }
std::int64_t cuda_kv_cache::capacity() const noexcept { return state_->capacity; }
std::int64_t cuda_kv_cache::bytes() const noexcept { return state_->keys.bytes() + state_->values.bytes(); }

void cuda_kv_cache::assign(const kv_view<const float>& keys, const kv_view<const float>& values) {
    state& s = *state_;
    const kv_shape sh = keys.shape;
    QAQ_CHECK(sh == values.shape && sh.layers == s.layers && sh.heads == s.kv_heads && sh.head_dim == s.head_dim &&
                  sh.batch == 1,
              "device cache assign: keys ", to_string(sh), " and values ", to_string(values.shape), " must both be [",
              s.layers, ", 1, ", s.kv_heads, ", T, ", s.head_dim, "]");
    QAQ_CHECK(sh.tokens <= s.capacity, "device cache assign: ", sh.tokens, " tokens exceed the capacity ", s.capacity);
    const std::int64_t T = sh.tokens, D = s.head_dim;
    // Gathered into [layers][kv_heads][T][D] (the views may be strided), then
    // one pitched copy into the [..][capacity][D] layout.
    std::vector<float> k(static_cast<std::size_t>(s.layers * s.kv_heads * T * D)), v(k.size());
    std::size_t i = 0;
    for (std::int64_t l = 0; l < s.layers; ++l)
        for (std::int64_t h = 0; h < s.kv_heads; ++h)
            for (std::int64_t t = 0; t < T; ++t)
                for (std::int64_t d = 0; d < D; ++d, ++i) {
                    k[i] = keys(l, 0, h, t, d);
                    v[i] = values(l, 0, h, t, d);
                }
    s.owner->use_device();
    if (T > 0) {
        const std::size_t row = sizeof(float) * static_cast<std::size_t>(T * D);
        const std::size_t pitch = sizeof(float) * static_cast<std::size_t>(s.capacity * D);
        const auto rows = static_cast<std::size_t>(s.layers * s.kv_heads);
        QAQ_CUDA_CHECK(cudaMemcpy2DAsync(s.keys.as(), pitch, k.data(), row, row, rows, cudaMemcpyHostToDevice, s.owner->stream));
        QAQ_CUDA_CHECK(cudaMemcpy2DAsync(s.values.as(), pitch, v.data(), row, row, rows, cudaMemcpyHostToDevice, s.owner->stream));
        s.owner->synchronize();
    }
    s.tokens = T;
}

void cuda_kv_cache::truncate(std::int64_t tokens) {
    QAQ_CHECK(tokens >= 0 && tokens <= state_->tokens, "device cache truncate to ", tokens, " tokens; it holds ",
              state_->tokens);
    state_->tokens = tokens;
}

// ---------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------

prefill_result cuda_llama_model::prefill(const std::vector<std::int32_t>& tokens, const prefill_options& o) {
    QAQ_CHECK(!tokens.empty(), "prefill needs at least one token");
    cuda_kv_cache local(*this, static_cast<std::int64_t>(tokens.size()));
    return extend(tokens, local, o);
}

prefill_result cuda_llama_model::extend(const std::vector<std::int32_t>& tokens, cuda_kv_cache& cache,
                                        const prefill_options& o) {
    std::vector<prefill_result> r = extend_batch({cuda_extend_job{&tokens, &cache, o}});
    return std::move(r.front());
}

namespace {

/// The host-side plan of one batch: columns, sequences, kept rows, logits.
struct batch_plan {
    std::vector<std::int64_t> first, count, past, rows, from, wanted;
    std::vector<std::int32_t> tokens, logit_columns;
    std::vector<kernels::token_column> columns;
    std::vector<kernels::sequence_slot> sequences;
    std::int64_t N = 0, max_tokens = 0, attention_floats = 0, logit_count = 0;
    bool query_norms = false;
};

}  // namespace

std::vector<prefill_result> cuda_llama_model::extend_batch(const std::vector<cuda_extend_job>& jobs) {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return run_batch(jobs, true);
}

std::vector<prefill_result> cuda_llama_model::run_batch(const std::vector<cuda_extend_job>& jobs, bool copy_logits) {
    state& s = *state_;
    const llama_config& c = s.config;
    const std::int64_t E = c.embedding, D = c.head_dim, H = c.heads, Hk = c.kv_heads, F = c.feed_forward, V = c.vocab;
    const std::size_t J = jobs.size();
    QAQ_CHECK(J >= 1, "extend_batch needs at least one sequence");

    // ---- plan (the CPU model's checks and conventions) ----
    batch_plan p;
    p.first.resize(J), p.count.resize(J), p.past.resize(J), p.rows.resize(J), p.from.resize(J), p.wanted.resize(J);
    for (std::size_t j = 0; j < J; ++j) {
        const cuda_extend_job& job = jobs[j];
        QAQ_CHECK(job.tokens && job.cache, "extend_batch: sequence ", j, " has no tokens or no cache");
        const std::int64_t n = static_cast<std::int64_t>(job.tokens->size());
        QAQ_CHECK(n >= 1, "prefill needs at least one token");
        for (auto t : *job.tokens)
            QAQ_CHECK(t >= 0 && t < V, "token id ", t, " is out of range for a vocabulary of ", V);
        const cuda_kv_cache::state& cache = *job.cache->state_;
        QAQ_CHECK(cache.owner == &s, "extend_batch: sequence ", j, "'s cache belongs to another model");
        const std::int64_t P = cache.tokens;
        QAQ_CHECK(P + n <= cache.capacity, "prefill of ", n, " tokens after ", P, " cached ones exceeds the cache capacity ",
                  cache.capacity);
        for (std::size_t i = 0; i < j; ++i)
            QAQ_CHECK(jobs[i].cache != job.cache, "extend_batch: sequences ", i, " and ", j, " share one cache");
        const std::int64_t T = P + n;
        p.first[j] = p.N, p.count[j] = n, p.past[j] = P;
        p.rows[j] = job.options.attention_rows < 0 ? n : std::min(job.options.attention_rows, n);
        const std::int64_t lf = job.options.logits_from;
        p.from[j] = lf < 0 ? T - 1 : std::min(std::max(lf, P), T);
        p.wanted[j] = T - p.from[j];
        p.query_norms = p.query_norms || job.options.keep_query_norms;
        kernels::sequence_slot slot;
        slot.keys = cache.keys.as();
        slot.values = cache.values.as();
        slot.capacity = cache.capacity;
        slot.tokens = T;
        slot.attention_rows = p.rows[j];
        slot.attention_offset = p.attention_floats;
        p.sequences.push_back(slot);
        p.attention_floats += c.layers * H * p.rows[j] * T;
        p.max_tokens = std::max(p.max_tokens, T);
        for (std::int64_t t = 0; t < n; ++t) {
            kernels::token_column col;
            col.sequence = static_cast<std::int32_t>(j);
            col.position = static_cast<std::int32_t>(P + t);
            col.attention_row = t >= n - p.rows[j] ? static_cast<std::int32_t>(t - (n - p.rows[j])) : -1;
            p.columns.push_back(col);
            p.tokens.push_back((*job.tokens)[static_cast<std::size_t>(t)]);
        }
        for (std::int64_t k = 0; k < p.wanted[j]; ++k)
            p.logit_columns.push_back(static_cast<std::int32_t>(p.N + n - p.wanted[j] + k));
        p.N += n;
    }
    const std::int64_t N = p.N;
    p.logit_count = static_cast<std::int64_t>(p.logit_columns.size());
    QAQ_CHECK(p.max_tokens <= INT_MAX, "sequence of ", p.max_tokens, " tokens is too long for the CUDA forward");

    // ---- buffers ----
    s.use_device();
    const auto& a = s.account;
    s.x.ensure(a, 4 * E * N, "activations");
    s.h.ensure(a, 4 * E * N, "activations");
    s.q.ensure(a, 4 * c.q_dim() * N, "queries");
    s.att.ensure(a, 4 * c.q_dim() * N, "attention outputs");
    s.k.ensure(a, 4 * c.kv_dim() * N, "keys");
    s.v.ensure(a, 4 * c.kv_dim() * N, "values");
    s.gate.ensure(a, 4 * F * N, "feed-forward activations");
    s.up.ensure(a, 4 * F * N, "feed-forward activations");
    // Attention scores in chunks of columns: at most ~64 MiB of scratch.
    const std::int64_t per_column = H * p.max_tokens;
    const std::int64_t chunk = std::clamp<std::int64_t>((std::int64_t{16} << 20) / per_column, 1, N);
    s.scores.ensure(a, 4 * chunk * per_column, "attention scores");
    s.attention_rows.ensure(a, 4 * std::max<std::int64_t>(p.attention_floats, 1), "attention rows");
    if (p.query_norms) s.query_norms.ensure(a, 4 * c.layers * H * N, "query norms");
    s.upload(s.tokens, p.tokens, "token ids");
    s.upload(s.columns, p.columns, "token columns");
    s.upload(s.sequences, p.sequences, "sequence slots");
    const auto* columns = s.columns.as<const kernels::token_column>();
    const auto* sequences = s.sequences.as<const kernels::sequence_slot>();
    const float eps = static_cast<float>(c.rms_eps);

    // ---- layers ----
    QAQ_CUDA_CHECK(kernels::embed(s.embeddings.as(), s.tokens.as<const std::int32_t>(), N, E, s.x.as(), s.stream));
    for (std::int64_t l = 0; l < c.layers; ++l) {
        const state::layer& w = s.layers[static_cast<std::size_t>(l)];
        QAQ_CUDA_CHECK(kernels::rms_norm(s.x.as(), w.attention_norm.as(), nullptr, N, E, eps, s.h.as(), s.stream));
        s.multiply(w.q.as(), c.q_dim(), E, s.h.as(), N, s.q.as(), false);
        s.multiply(w.k.as(), c.kv_dim(), E, s.h.as(), N, s.k.as(), false);
        s.multiply(w.v.as(), c.kv_dim(), E, s.h.as(), N, s.v.as(), false);
        QAQ_CUDA_CHECK(kernels::rope(s.q.as(), s.k.as(), columns, s.inverse_frequencies.as<const double>(), N, H, Hk, D,
                                     s.stream));
        if (p.query_norms) QAQ_CUDA_CHECK(kernels::query_norms(s.q.as(), N, H, D, l, s.query_norms.as(), s.stream));
        QAQ_CUDA_CHECK(kernels::append_kv(s.k.as(), s.v.as(), columns, sequences, N, l, Hk, D, s.stream));
        for (std::int64_t first = 0; first < N; first += chunk)
            QAQ_CUDA_CHECK(kernels::attention(s.q.as(), s.att.as(), columns, sequences, first, std::min(chunk, N - first), l,
                                              H, Hk, D, s.scores.as(), p.max_tokens, s.attention_rows.as(), s.stream));
        s.multiply(w.o.as(), E, c.q_dim(), s.att.as(), N, s.x.as(), true);  // the residual: x += W_o att

        QAQ_CUDA_CHECK(kernels::rms_norm(s.x.as(), w.ffn_norm.as(), nullptr, N, E, eps, s.h.as(), s.stream));
        s.multiply(w.gate.as(), F, E, s.h.as(), N, s.gate.as(), false);
        s.multiply(w.up.as(), F, E, s.h.as(), N, s.up.as(), false);
        QAQ_CUDA_CHECK(kernels::silu_gate(s.gate.as(), s.up.as(), F * N, s.stream));
        s.multiply(w.down.as(), E, F, s.gate.as(), N, s.x.as(), true);  // the residual: x += W_down gate
    }

    // ---- logits of the wanted columns, through one output product ----
    if (p.logit_count > 0) {
        s.upload(s.logit_columns, p.logit_columns, "logit columns");
        s.normed.ensure(a, 4 * E * p.logit_count, "normalized outputs");
        s.logits.ensure(a, 4 * V * p.logit_count, "logits");
        QAQ_CUDA_CHECK(kernels::rms_norm(s.x.as(), s.output_norm.as(), s.logit_columns.as<const std::int32_t>(),
                                         p.logit_count, E, eps, s.normed.as(), s.stream));
        s.multiply(s.output_matrix(), V, E, s.normed.as(), p.logit_count, s.logits.as(), false);
    }

    // ---- results ----
    std::vector<prefill_result> results(J);
    std::int64_t at = 0;
    for (std::size_t j = 0; j < J; ++j) {
        prefill_result& r = results[j];
        const cuda_kv_cache::state& cache = *jobs[j].cache->state_;
        const std::int64_t T = p.past[j] + p.count[j];
        r.tokens = T;
        r.vocab = V;
        r.logits_from = p.from[j];
        if (p.wanted[j] > 0 && copy_logits) {
            r.logits.resize(static_cast<std::size_t>(p.wanted[j] * V));
            QAQ_CUDA_CHECK(cudaMemcpyAsync(r.logits.data(), s.logits.as() + at * V, sizeof(float) * r.logits.size(),
                                           cudaMemcpyDeviceToHost, s.stream));
        }
        at += p.wanted[j];
        if (p.rows[j] > 0) {
            r.attention_dims = attention_shape{c.layers, 1, H, p.rows[j], T};
            r.attention.resize(static_cast<std::size_t>(c.layers * H * p.rows[j] * T));
            QAQ_CUDA_CHECK(cudaMemcpyAsync(r.attention.data(), s.attention_rows.as() + p.sequences[j].attention_offset,
                                           sizeof(float) * r.attention.size(), cudaMemcpyDeviceToHost, s.stream));
        }
        if (jobs[j].options.keep_kv) {
            r.kv = kv_shape{c.layers, 1, Hk, T, D};
            r.keys.resize(static_cast<std::size_t>(r.kv.element_count()));
            r.values.resize(r.keys.size());
            const std::size_t row = sizeof(float) * static_cast<std::size_t>(T * D);
            const std::size_t pitch = sizeof(float) * static_cast<std::size_t>(cache.capacity * D);
            const auto rows = static_cast<std::size_t>(c.layers * Hk);
            QAQ_CUDA_CHECK(cudaMemcpy2DAsync(r.keys.data(), row, cache.keys.as(), pitch, row, rows, cudaMemcpyDeviceToHost, s.stream));
            QAQ_CUDA_CHECK(cudaMemcpy2DAsync(r.values.data(), row, cache.values.as(), pitch, row, rows, cudaMemcpyDeviceToHost,
                                             s.stream));
        }
    }
    std::vector<float> norms;
    if (p.query_norms) {
        norms.resize(static_cast<std::size_t>(c.layers * H * N));
        QAQ_CUDA_CHECK(cudaMemcpyAsync(norms.data(), s.query_norms.as(), sizeof(float) * norms.size(),
                                       cudaMemcpyDeviceToHost, s.stream));
    }
    s.synchronize();
    for (std::size_t j = 0; j < J; ++j) {
        jobs[j].cache->state_->tokens = p.past[j] + p.count[j];
        if (!jobs[j].options.keep_query_norms) continue;
        std::vector<float>& q = results[j].query_norms;
        q.resize(static_cast<std::size_t>(c.layers * H * p.count[j]));
        for (std::int64_t lh = 0; lh < c.layers * H; ++lh)
            for (std::int64_t t = 0; t < p.count[j]; ++t)
                q[static_cast<std::size_t>(lh * p.count[j] + t)] = norms[static_cast<std::size_t>(lh * N + p.first[j] + t)];
    }
    return results;
}

std::vector<double> cuda_llama_model::next_token_log_probabilities(const std::vector<std::int32_t>& tokens,
                                                                   std::int64_t first) {
    state& s = *state_;
    const std::int64_t T = static_cast<std::int64_t>(tokens.size());
    QAQ_CHECK(T >= 2 && first >= 0 && first <= T - 2, "next_token_log_probabilities: first position ", first, " of ", T,
              " tokens; expected 0 <= first <= tokens - 2");
    cuda_kv_cache local(*this, T);
    std::vector<cuda_extend_job> jobs{cuda_extend_job{&tokens, &local, prefill_options{}}};
    jobs.front().options.logits_from = first;
    std::lock_guard<std::mutex> lock(s.mutex);
    run_batch(jobs, false);  // the logits of positions first..T-1 stay in s.logits, one column each
    const std::int64_t count = T - 1 - first;
    s.upload(s.targets, std::vector<std::int32_t>(tokens.begin() + first + 1, tokens.end()), "target tokens");
    s.log_probabilities.ensure(s.account, 4 * count, "log-probabilities");
    QAQ_CUDA_CHECK(kernels::log_softmax_at(s.logits.as(), count, s.config.vocab, s.targets.as<const std::int32_t>(),
                                           s.log_probabilities.as(), s.stream));
    std::vector<float> host(static_cast<std::size_t>(count));
    QAQ_CUDA_CHECK(cudaMemcpyAsync(host.data(), s.log_probabilities.as(), sizeof(float) * host.size(),
                                   cudaMemcpyDeviceToHost, s.stream));
    s.synchronize();
    return std::vector<double>(host.begin(), host.end());
}

}  // namespace qaq::llama
