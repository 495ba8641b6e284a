#pragma once
// A LLaMA forward pass on the CPU: weights straight from a GGUF file,
// batched prefill with matrix-matrix products, single-token decode over a
// pluggable key/value cache (an exact float32 cache, or qaq's packed
// quantized cache).
//
//   gguf_file file = gguf_file::open(path);
//   llama_model model(file);
//
//   // Prefill (one batched pass) that also hands back what QAQ needs:
//   prefill_options o;
//   o.keep_kv = true;            // K, V [layers, 1, kv_heads, T, head_dim]
//   o.attention_rows = 5;        // the last 5 attention rows [layers, 1, heads, 5, T]
//   prefill_result r = model.prefill(tokens, o);
//
//   // Continue on a quantized copy of that cache:
//   quantized_decode_cache cache(model.config(), max_tokens, key_config, value_config);
//   cache.prefill(r);            // qaq::quantized_kv_cache::prefill(K, V, attention)
//   model.decode(next_token, cache, logits);   // append, attend over codes, observe, rebalance
//
//   // ... or on the exact float32 baseline:
//   float_kv_cache exact(model.config(), max_tokens);
//   exact.assign(r);             // or assign(K view, V view), e.g. a dequantized cache
//   model.decode(next_token, exact, logits);
//
//   // Batched continuation of an exact cache (a question, then each choice):
//   float_kv_cache context(model.config(), max_tokens);
//   model.extend(question, context, o);
//   prefill_result c = model.extend(choice, context, o);  // logits, attention rows over all positions
//   context.truncate(question.size());                     // back to the question for the next choice
//
// Conventions (checked against an independent numpy implementation that uses
// Hugging Face's, tests/oracle/llama_numpy.py):
//  * Matrices are GGUF tensors [ne0 = in, ne1 = out]: row r (ne0 contiguous
//    values) produces output r.
//  * RoPE as llama.cpp's LLAMA_ROPE_TYPE_NORM: within each head the adjacent
//    pairs (x[2i], x[2i+1]) rotate by pos * theta^(-2i/D). The converter
//    (convert_hf_to_gguf.py, LlamaModel.permute) stored the q/k rows of each
//    head so that this equals Hugging Face's rotate_half on (x[i], x[i+D/2]).
//    Keys in the caches are therefore in the file's row order; q.k, and so
//    attention, is the same.
//  * Attention softmax(q.k / sqrt(D)) with causal masking; query head h reads
//    KV head h / (heads / kv_heads).
//
// A llama_model is immutable after construction: several threads may run
// prefill/extend/decode on it at once, each with its own caches.
//
// Performance: decode multiplies the matrices by the vector straight from
// their blocks (ggml_types.hpp: AVX2 kernels, scalar fallback; nothing is
// dequantized into memory); prefill dequantizes one slab of rows at a time
// into a float buffer and multiplies it with Eigen's GEMM. Both use OpenMP
// threads when the build has OpenMP (rows of a matrix-vector product, heads
// of the attention; Eigen parallelizes its own GEMM).

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <utility>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "llama/ggml_types.hpp"
#include "llama/gguf.hpp"
#include "llama/model_config.hpp"
#include "qaq/dynamic_quantizer.hpp"
#include "qaq/error.hpp"
#include "qaq/kv_cache.hpp"
#include "qaq/quantizer_config.hpp"
#include "qaq/tensor_view.hpp"

namespace qaq::llama {

using column_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
using row_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// ---------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------

/// Threads the forward pass uses (OpenMP's maximum; 1 without OpenMP).
inline int thread_count() noexcept {
#if defined(_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/// Sets the threads of the forward pass and of Eigen's GEMM (no-op without OpenMP).
inline void set_thread_count(int n) {
    QAQ_CHECK(n >= 1, "thread count is ", n, ", expected >= 1");
#if defined(_OPENMP)
    omp_set_num_threads(n);
#endif
    Eigen::setNbThreads(n);
}

/// Runs f(first, last) over [0, n) split into one contiguous range per
/// thread (ranges start on multiples of `grain`); serially when `parallel`
/// is false or OpenMP is absent.
template <class F>
void parallel_ranges(std::int64_t n, std::int64_t grain, bool parallel, F&& f) {
#if defined(_OPENMP)
    const int threads = parallel ? std::min<std::int64_t>(thread_count(), std::max<std::int64_t>(1, n / grain)) : 1;
    if (threads > 1) {
#pragma omp parallel num_threads(threads)
        {
            const std::int64_t t = omp_get_thread_num(), count = omp_get_num_threads();
            const std::int64_t units = (n + grain - 1) / grain;
            const std::int64_t first = std::min(n, units * t / count * grain);
            const std::int64_t last = std::min(n, units * (t + 1) / count * grain);
            if (first < last) f(first, last);
        }
        return;
    }
#else
    (void)parallel;
    (void)grain;
#endif
    if (n > 0) f(std::int64_t{0}, n);
}

// ---------------------------------------------------------------------------
// Per-element math of the forward pass. Free functions so that the CUDA
// forward's scalar cores (llama/cuda/forward_scalar.cuh) are tested against
// exactly what this model computes.
// ---------------------------------------------------------------------------

/// RMSNorm of one row: out = x * weight / sqrt(mean(x^2) + eps).
inline void rms_norm_row(const float* x, const float* weight, float* out, std::int64_t n, double eps) {
    const Eigen::Map<const Eigen::VectorXf> v(x, n);
    const float inv = 1.0f / std::sqrt(v.squaredNorm() / static_cast<float>(n) + static_cast<float>(eps));
    Eigen::Map<Eigen::VectorXf>(out, n) = v.cwiseProduct(Eigen::Map<const Eigen::VectorXf>(weight, n)) * inv;
}

/// The RoPE inverse frequencies theta^(-2i/D), i < D/2, in double.
inline std::vector<double> rope_inverse_frequencies(double theta, std::int64_t head_dim) {
    std::vector<double> f(static_cast<std::size_t>(head_dim / 2));
    for (std::int64_t i = 0; i < head_dim / 2; ++i)
        f[static_cast<std::size_t>(i)] = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
    return f;
}

/// cos and sin of position * inverse_frequencies[i], computed in double, stored as float.
inline void rope_table(std::int64_t position, const std::vector<double>& inverse_frequencies, float* cosines,
                       float* sines) {
    for (std::size_t i = 0; i < inverse_frequencies.size(); ++i) {
        const double angle = static_cast<double>(position) * inverse_frequencies[i];
        cosines[i] = static_cast<float>(std::cos(angle));
        sines[i] = static_cast<float>(std::sin(angle));
    }
}

/// llama.cpp's LLAMA_ROPE_TYPE_NORM on one head: the adjacent pairs
/// (x[2i], x[2i+1]), i < pairs, rotate by the angles of a rope_table.
inline void rotate_pairs(float* x, const float* cosines, const float* sines, std::int64_t pairs) {
    for (std::int64_t i = 0; i < pairs; ++i) {
        const float a = x[2 * i], b = x[2 * i + 1];
        x[2 * i] = a * cosines[i] - b * sines[i];
        x[2 * i + 1] = a * sines[i] + b * cosines[i];
    }
}

/// SwiGLU's gate of the batched pass: gate[i] = silu(gate[i]) * up[i].
inline void silu_gate(float* gate, const float* up, std::int64_t n) {
    Eigen::Map<Eigen::ArrayXf> g(gate, n);
    g = g / (1.0f + (-g).exp()) * Eigen::Map<const Eigen::ArrayXf>(up, n);
}

/// Attention softmax of one row of raw scores q.k, in place: softmax(scale * row).
inline void scaled_softmax(float* row, std::int64_t n, float scale) {
    Eigen::Map<Eigen::ArrayXf> p(row, n);
    p *= scale;
    p = (p - p.maxCoeff()).exp();
    p /= p.sum();
}

// ---------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------

/// A weight matrix [rows x cols] in its GGUF storage: `rows` rows of `cols`
/// contiguous elements (ne0 = cols), block-quantized or float.
class weight_matrix {
public:
    weight_matrix() = default;
    weight_matrix(const gguf_file& f, const std::string& name, std::int64_t cols, std::int64_t rows) {
        const gguf_tensor& t = f.tensor(name);
        QAQ_CHECK(t.dims.size() == 2 && t.dims[0] == cols && t.dims[1] == rows, "GGUF file '", f.name(),
                  "': tensor '", name, "' has shape ", t.shape_string(), ", expected [", cols, ", ", rows, "]");
        require_dequantizable(t.type, "GGUF file '" + f.name() + "': tensor '" + name + "'");
        type_ = t.type;
        rows_ = rows;
        cols_ = cols;
        row_bytes_ = ggml_row_bytes(t.type, cols);
        data_ = t.data;
        name_ = name;
    }

    ggml_type type() const noexcept { return type_; }
    std::int64_t rows() const noexcept { return rows_; }
    std::int64_t cols() const noexcept { return cols_; }
    std::int64_t bytes() const noexcept { return rows_ * row_bytes_; }
    const std::string& name() const noexcept { return name_; }

    /// Rows [first, first + count) as floats, row-major [count x cols].
    void dequantize(std::int64_t first, std::int64_t count, float* out) const {
        if (dense_) {
            std::copy(dense_->data() + first * cols_, dense_->data() + (first + count) * cols_, out);
            return;
        }
        for (std::int64_t r = 0; r < count; ++r) dequantize_row(type_, data_ + (first + r) * row_bytes_, out + r * cols_, cols_);
    }

    /// Keeps a float32 copy (4 bytes per weight) so that batched products
    /// multiply it directly instead of dequantizing slabs on every call: for
    /// callers that run many short batches (the evaluator). Vector products
    /// still read the blocks (fewer bytes per token).
    void keep_dense_copy() {
        if (dense_) return;
        auto copy = std::make_shared<std::vector<float>>(static_cast<std::size_t>(rows_ * cols_));
        parallel_ranges(rows_, 8, true, [&](std::int64_t a, std::int64_t b) {
            for (std::int64_t r = a; r < b; ++r)
                dequantize_row(type_, data_ + r * row_bytes_, copy->data() + r * cols_, cols_);
        });
        dense_ = std::move(copy);
    }
    bool has_dense_copy() const noexcept { return static_cast<bool>(dense_); }

    /// y = W x for a prepared x (see prepared_vector), over all threads when large enough.
    void multiply(const dot_operand& x, float* y) const {
        QAQ_CHECK(x.n == cols_, "matrix '", name_, "' has ", cols_, " columns; the vector has ", x.n);
        parallel_ranges(rows_, 16, rows_ * cols_ >= (1 << 16), [&](std::int64_t first, std::int64_t last) {
            dot_rows(type_, data_, row_bytes_, first, last - first, x, y + first);
        });
    }

    /// Rows [first, last) of W x into y[first..last) on the calling thread.
    void multiply_rows(const dot_operand& x, std::int64_t first, std::int64_t last, float* y) const {
        dot_rows(type_, data_, row_bytes_, first, last - first, x, y + first);
    }

    /// Y [rows x n] (column-major, leading dimension ldy) = W X, X [cols x n]
    /// column-major with leading dimension cols. `accumulate` adds to Y.
    void multiply(const float* X, std::int64_t n, float* Y, std::int64_t ldy, bool accumulate,
                  std::vector<float>& scratch) const {
        if (n < 4) {
            // A few columns: the matrix-vector kernels, no dequantization.
            std::vector<float> sums(static_cast<std::size_t>(cols_ / qk + 1)), y(static_cast<std::size_t>(rows_));
            for (std::int64_t c = 0; c < n; ++c) {
                const float* x = X + c * cols_;
                if (cols_ % qk == 0) block_sums(x, cols_, sums.data());
                multiply(dot_operand{x, cols_, sums.data()}, y.data());
                float* out = Y + c * ldy;
                for (std::int64_t r = 0; r < rows_; ++r) out[r] = accumulate ? out[r] + y[static_cast<std::size_t>(r)] : y[static_cast<std::size_t>(r)];
            }
            return;
        }
        const Eigen::Map<const column_matrix> x(X, cols_, n);
        if (dense_) {
            const Eigen::Map<const row_matrix> w(dense_->data(), rows_, cols_);
            Eigen::Map<column_matrix, 0, Eigen::OuterStride<>> y(Y, rows_, n, Eigen::OuterStride<>(ldy));
            if (accumulate) y.noalias() += w * x;
            else y.noalias() = w * x;
            return;
        }
        // Slabs of rows of at most ~4 MiB of floats: dequantize, then GEMM.
        const std::int64_t slab = std::max<std::int64_t>(64, (std::int64_t{1} << 20) / cols_ / 64 * 64);
        scratch.resize(static_cast<std::size_t>(std::min(slab, rows_) * cols_));
        for (std::int64_t first = 0; first < rows_; first += slab) {
            const std::int64_t count = std::min(slab, rows_ - first);
            parallel_ranges(count, 8, count * cols_ >= (1 << 15), [&](std::int64_t a, std::int64_t b) {
                dequantize(first + a, b - a, scratch.data() + a * cols_);
            });
            const Eigen::Map<const row_matrix> w(scratch.data(), count, cols_);
            Eigen::Map<column_matrix, 0, Eigen::OuterStride<>> y(Y + first, count, n, Eigen::OuterStride<>(ldy));
            if (accumulate) y.noalias() += w * x;
            else y.noalias() = w * x;
        }
    }

private:
    ggml_type type_ = ggml_type::f32;
    std::int64_t rows_ = 0, cols_ = 0, row_bytes_ = 0;
    const std::uint8_t* data_ = nullptr;
    std::string name_;
    std::shared_ptr<const std::vector<float>> dense_;  // shared by copies (tied embeddings)
};

/// y_i = W_i x for several matrices that read the same x (q, k and v; gate
/// and up), as one parallel region over their concatenated rows: one thread
/// synchronization instead of one per matrix.
inline void multiply_all(std::initializer_list<std::pair<const weight_matrix*, float*>> products, const dot_operand& x) {
    std::int64_t total = 0, work = 0;
    for (const auto& p : products) {
        QAQ_CHECK(x.n == p.first->cols(), "matrix '", p.first->name(), "' has ", p.first->cols(),
                  " columns; the vector has ", x.n);
        total += p.first->rows();
        work += p.first->rows() * p.first->cols();
    }
    parallel_ranges(total, 16, work >= (1 << 16), [&](std::int64_t first, std::int64_t last) {
        std::int64_t base = 0;
        for (const auto& p : products) {
            const std::int64_t rows = p.first->rows();
            const std::int64_t a = std::max(first, base), b = std::min(last, base + rows);
            if (a < b) p.first->multiply_rows(x, a - base, b - base, p.second);
            base += rows;
        }
    });
}

/// A vector with its 32-element block sums, ready for weight_matrix::multiply.
class prepared_vector {
public:
    void prepare(const float* x, std::int64_t n) {
        sums_.resize(static_cast<std::size_t>(n / qk + 1));
        if (n % qk == 0) block_sums(x, n, sums_.data());
        operand_ = dot_operand{x, n, sums_.data()};
    }
    const dot_operand& operand() const noexcept { return operand_; }

private:
    std::vector<float> sums_;
    dot_operand operand_;
};

inline std::vector<float> load_vector(const gguf_file& f, const std::string& name, std::int64_t n) {
    const gguf_tensor& t = f.tensor(name);
    QAQ_CHECK(t.elements() == n && t.dims[0] == n, "GGUF file '", f.name(), "': tensor '", name, "' has shape ",
              t.shape_string(), ", expected [", n, "]");
    require_dequantizable(t.type, "GGUF file '" + f.name() + "': tensor '" + name + "'");
    std::vector<float> v(static_cast<std::size_t>(n));
    dequantize_row(t.type, t.data, v.data(), n);
    return v;
}

struct layer_weights {
    std::vector<float> attention_norm, ffn_norm;
    weight_matrix q, k, v, o, gate, up, down;
};

// ---------------------------------------------------------------------------
// Caches for decoding
// ---------------------------------------------------------------------------

/// What single-token decoding needs from a key/value cache. One decode step
/// calls, for layer 0, 1, ..., layers - 1: append(l, k, v) then attend(l, q,
/// out, p); then end_step().
class decode_cache {
public:
    virtual ~decode_cache() = default;
    /// Tokens every layer holds between steps (the next token's position).
    virtual std::int64_t tokens() const = 0;
    virtual std::int64_t capacity() const = 0;
    /// keys, values: [kv_heads][head_dim] of the new token (keys rotated).
    virtual void append(std::int64_t layer, const float* keys, const float* values) = 0;
    /// queries, output: [heads][head_dim]; probabilities: [heads][tokens()+1 during the step].
    virtual void attend(std::int64_t layer, const float* queries, float* output, float* probabilities) = 0;
    virtual void end_step() {}
};

/// The exact baseline: keys and values in float32, attention in float.
class float_kv_cache final : public decode_cache {
public:
    float_kv_cache(const llama_config& c, std::int64_t max_tokens)
        : layers_(c.layers), heads_(c.heads), kv_heads_(c.kv_heads), dim_(c.head_dim), capacity_(max_tokens) {
        QAQ_CHECK(max_tokens >= 1, "float cache capacity is ", max_tokens, ", expected >= 1");
        keys_.assign(static_cast<std::size_t>(layers_ * kv_heads_ * capacity_ * dim_), 0.0f);
        values_.assign(keys_.size(), 0.0f);
        counts_.assign(static_cast<std::size_t>(layers_), 0);
    }

    std::int64_t tokens() const override { return counts_.back(); }
    std::int64_t capacity() const override { return capacity_; }

    void append(std::int64_t layer, const float* keys, const float* values) override {
        std::int64_t& t = counts_[static_cast<std::size_t>(layer)];
        QAQ_CHECK(t < capacity_, "the float32 cache is full (", capacity_, " tokens)");
        for (std::int64_t h = 0; h < kv_heads_; ++h) {
            std::copy(keys + h * dim_, keys + (h + 1) * dim_, mutable_key(layer, h, t));
            std::copy(values + h * dim_, values + (h + 1) * dim_, mutable_value(layer, h, t));
        }
        ++t;
    }

    void attend(std::int64_t layer, const float* queries, float* output, float* probabilities) override {
        const std::int64_t T = counts_[static_cast<std::size_t>(layer)];
        const std::int64_t group = heads_ / kv_heads_;
        const float scale = 1.0f / std::sqrt(static_cast<float>(dim_));
        for (std::int64_t g = 0; g < kv_heads_; ++g) {
            const Eigen::Map<const row_matrix> K(key(layer, g, 0), T, dim_), V(value(layer, g, 0), T, dim_);
            const Eigen::Map<const column_matrix> Q(queries + g * group * dim_, dim_, group);
            Eigen::Map<column_matrix> P(probabilities + g * group * T, T, group);
            // lazyProduct: a few columns; no GEMM blocking and no threads (a
            // decode step must not synchronize threads per head).
            P.noalias() = K.lazyProduct(Q) * scale;
            for (std::int64_t j = 0; j < group; ++j) {
                auto p = P.col(j).array();
                p = (p - p.maxCoeff()).exp();
                p /= p.sum();
            }
            Eigen::Map<column_matrix> O(output + g * group * dim_, dim_, group);
            O.noalias() = V.transpose().lazyProduct(P);
        }
    }

    /// Replaces the contents by keys and values [layers, 1, kv_heads, T,
    /// head_dim]: a prefill's (prefill_options::keep_kv), or a quantized
    /// cache's reconstruction.
    void assign(const kv_view<const float>& keys, const kv_view<const float>& values) {
        const kv_shape s = keys.shape;
        QAQ_CHECK(s == values.shape && s.layers == layers_ && s.heads == kv_heads_ && s.head_dim == dim_ && s.batch == 1,
                  "float cache assign: keys ", to_string(s), " and values ", to_string(values.shape),
                  " must both be [", layers_, ", 1, ", kv_heads_, ", T, ", dim_, "]");
        QAQ_CHECK(s.tokens <= capacity_, "float cache assign: ", s.tokens, " tokens exceed the capacity ", capacity_);
        for (std::int64_t l = 0; l < layers_; ++l) {
            for (std::int64_t h = 0; h < kv_heads_; ++h)
                for (std::int64_t t = 0; t < s.tokens; ++t)
                    for (std::int64_t d = 0; d < dim_; ++d) {
                        mutable_key(l, h, t)[d] = keys(l, 0, h, t, d);
                        mutable_value(l, h, t)[d] = values(l, 0, h, t, d);
                    }
            counts_[static_cast<std::size_t>(l)] = s.tokens;
        }
    }
    template <class Result>
    void assign(const Result& r) {
        assign(r.key_view(), r.value_view());
    }

    /// Drops every token from position `tokens` on (e.g. back to the end of
    /// a shared context before the next choice).
    void truncate(std::int64_t tokens) {
        QAQ_CHECK(tokens >= 0 && tokens <= this->tokens(), "float cache truncate to ", tokens, " tokens; it holds ",
                  this->tokens());
        for (auto& c : counts_) c = tokens;
    }

    std::int64_t layers() const noexcept { return layers_; }
    std::int64_t kv_heads() const noexcept { return kv_heads_; }
    std::int64_t head_dim() const noexcept { return dim_; }

    /// Bytes of the tokens held (what a float32 cache of this length needs).
    std::int64_t bytes() const noexcept { return 2 * layers_ * kv_heads_ * tokens() * dim_ * 4; }

    const float* key(std::int64_t l, std::int64_t h, std::int64_t t) const {
        return keys_.data() + ((l * kv_heads_ + h) * capacity_ + t) * dim_;
    }
    const float* value(std::int64_t l, std::int64_t h, std::int64_t t) const {
        return values_.data() + ((l * kv_heads_ + h) * capacity_ + t) * dim_;
    }

private:
    float* mutable_key(std::int64_t l, std::int64_t h, std::int64_t t) {
        return keys_.data() + ((l * kv_heads_ + h) * capacity_ + t) * dim_;
    }
    float* mutable_value(std::int64_t l, std::int64_t h, std::int64_t t) {
        return values_.data() + ((l * kv_heads_ + h) * capacity_ + t) * dim_;
    }

    std::int64_t layers_, heads_, kv_heads_, dim_, capacity_;
    std::vector<float> keys_, values_;
    std::vector<std::int64_t> counts_;
};

using qaq_kv_cache = qaq::quantized_kv_cache<qaq::dynamic_quantizer, qaq::dynamic_quantizer>;

/// qaq's packed cache: attention straight over the codes, every attention
/// row observed by the window tracker, rebalance() after every step (or every
/// `rebalance_interval` steps).
class quantized_decode_cache final : public decode_cache {
public:
    quantized_decode_cache(const llama_config& c, std::int64_t max_tokens, qaq::quantizer_config keys,
                           qaq::quantizer_config values, qaq::kv_cache_options options = {},
                           std::int64_t rebalance_interval = 1)
        : cache_(qaq::kv_cache_shape{c.layers, c.kv_heads, c.heads, c.head_dim, max_tokens},
                 qaq::dynamic_quantizer(with_role(std::move(keys), qaq::cache_role::key)),
                 qaq::dynamic_quantizer(with_role(std::move(values), qaq::cache_role::value)), options),
          kv_count_(c.kv_heads * c.head_dim),
          q_count_(c.heads * c.head_dim),
          heads_(c.heads),
          interval_(rebalance_interval) {
        QAQ_CHECK(rebalance_interval >= 1, "rebalance interval is ", rebalance_interval, ", expected >= 1");
    }

    std::int64_t tokens() const override { return cache_.tokens(cache_.shape().layers - 1); }
    std::int64_t capacity() const override { return cache_.shape().max_tokens; }

    void append(std::int64_t layer, const float* keys, const float* values) override {
        cache_.append(layer, keys, kv_count_, values, kv_count_);
    }
    void attend(std::int64_t layer, const float* queries, float* output, float* probabilities) override {
        const std::int64_t T = cache_.tokens(layer);
        cache_.attend(layer, queries, q_count_, output, q_count_, probabilities, heads_ * T);
        cache_.observe(layer, probabilities, heads_ * T);
    }
    void end_step() override {
        if (++steps_ % interval_ == 0) last_ = cache_.rebalance();
    }

    /// Quantizes a prefill's keys and values (and its last attention rows,
    /// which attention-aware bits need) into the empty cache.
    template <class Result>
    void prefill(const Result& r) {
        cache_.prefill(r.key_view(), r.value_view(), r.attention_rows());
    }

    qaq_kv_cache& cache() noexcept { return cache_; }
    const qaq_kv_cache& cache() const noexcept { return cache_; }
    const qaq::rebalance_counters& last_rebalance() const noexcept { return last_; }

private:
    static qaq::quantizer_config with_role(qaq::quantizer_config c, qaq::cache_role role) {
        c.role = role;
        return c;
    }

    qaq_kv_cache cache_;
    std::int64_t kv_count_, q_count_, heads_, interval_, steps_ = 0;
    qaq::rebalance_counters last_;
};

// ---------------------------------------------------------------------------
// Prefill
// ---------------------------------------------------------------------------

struct prefill_options {
    /// Keep every layer's keys and values: [layers, 1, kv_heads, T, head_dim].
    bool keep_kv = false;
    /// Keep the last `attention_rows` rows of every layer's attention,
    /// [layers, 1, heads, rows, T] (-1: all T rows; 0: none).
    std::int64_t attention_rows = 0;
    /// First position whose logits are computed; -1: the last one only;
    /// T or more: none.
    std::int64_t logits_from = -1;
    /// Keep the squared norm of every query vector, [layers, heads, T].
    bool keep_query_norms = false;
};

struct prefill_result {
    std::int64_t tokens = 0;
    std::int64_t vocab = 0;
    std::int64_t logits_from = 0;        ///< position of the first logits row
    std::vector<float> logits;           ///< [(tokens - logits_from) x vocab]
    kv_shape kv{};                       ///< [layers, 1, kv_heads, T, head_dim] when kept
    std::vector<float> keys, values;
    attention_shape attention_dims{};    ///< [layers, 1, heads, rows, T] when kept
    std::vector<float> attention;
    std::vector<float> query_norms;      ///< [layers, heads, T] when kept

    const float* logits_at(std::int64_t position) const {
        QAQ_CHECK(position >= logits_from && position < tokens, "no logits kept for position ", position,
                  " (kept ", logits_from, "..", tokens - 1, ")");
        return logits.data() + (position - logits_from) * vocab;
    }
    kv_view<const float> key_view() const {
        QAQ_CHECK(!keys.empty(), "the prefill kept no keys (set prefill_options::keep_kv)");
        return kv_view<const float>::contiguous(keys.data(), kv);
    }
    kv_view<const float> value_view() const {
        QAQ_CHECK(!values.empty(), "the prefill kept no values (set prefill_options::keep_kv)");
        return kv_view<const float>::contiguous(values.data(), kv);
    }
    /// Empty (data == nullptr) when no rows were kept.
    attention_view<const float> attention_rows() const {
        if (attention.empty()) return {};
        return attention_view<const float>::contiguous(attention.data(), attention_dims);
    }
};

/// One sequence of llama_model::extend_batch: new tokens continuing its own cache.
struct extend_job {
    const std::vector<std::int32_t>* tokens = nullptr;
    float_kv_cache* cache = nullptr;
    prefill_options options;
};

/// What one decode step can hand back besides the logits.
struct decode_trace {
    std::vector<float> attention;  ///< [layers][heads][T] probabilities of this step (T = tokens after it)
    std::vector<float> keys, values;  ///< [layers][kv_heads][head_dim] of the new token
    std::vector<float> query_norms;   ///< [layers][heads] squared query norms
};

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

struct model_options {
    /// Keep a float32 copy of every weight matrix (4 bytes per weight: 540 MB
    /// for a 135M model) so batched passes skip dequantization. Worth it when
    /// a program runs many short batches (the evaluator); single-token
    /// decode does not use it.
    bool dense_weights = false;
};

class llama_model {
public:
    explicit llama_model(const gguf_file& f, const model_options& options = {})
        : file_(f), config_(llama_config::from_gguf(f)) {
        const llama_config& c = config_;
        embeddings_ = weight_matrix(f, "token_embd.weight", c.embedding, c.vocab);
        output_ = c.tied_embeddings ? embeddings_ : weight_matrix(f, "output.weight", c.embedding, c.vocab);
        output_norm_ = load_vector(f, "output_norm.weight", c.embedding);
        layers_.resize(static_cast<std::size_t>(c.layers));
        for (std::int64_t l = 0; l < c.layers; ++l) {
            const std::string b = "blk." + std::to_string(l) + ".";
            layer_weights& w = layers_[static_cast<std::size_t>(l)];
            w.attention_norm = load_vector(f, b + "attn_norm.weight", c.embedding);
            w.ffn_norm = load_vector(f, b + "ffn_norm.weight", c.embedding);
            w.q = weight_matrix(f, b + "attn_q.weight", c.embedding, c.q_dim());
            w.k = weight_matrix(f, b + "attn_k.weight", c.embedding, c.kv_dim());
            w.v = weight_matrix(f, b + "attn_v.weight", c.embedding, c.kv_dim());
            w.o = weight_matrix(f, b + "attn_output.weight", c.q_dim(), c.embedding);
            w.gate = weight_matrix(f, b + "ffn_gate.weight", c.embedding, c.feed_forward);
            w.up = weight_matrix(f, b + "ffn_up.weight", c.embedding, c.feed_forward);
            w.down = weight_matrix(f, b + "ffn_down.weight", c.feed_forward, c.embedding);
        }
        if (options.dense_weights) {
            embeddings_.keep_dense_copy();
            if (c.tied_embeddings) output_ = embeddings_;
            else output_.keep_dense_copy();
            for (layer_weights& w : layers_)
                for (weight_matrix* m : {&w.q, &w.k, &w.v, &w.o, &w.gate, &w.up, &w.down}) m->keep_dense_copy();
        }
        inverse_frequencies_ = rope_inverse_frequencies(c.rope_theta, c.head_dim);
    }

    const llama_config& config() const noexcept { return config_; }
    const gguf_file& file() const noexcept { return file_; }
    const std::vector<layer_weights>& layers() const noexcept { return layers_; }
    const weight_matrix& output() const noexcept { return output_; }
    const weight_matrix& embeddings() const noexcept { return embeddings_; }
    const std::vector<float>& output_norm() const noexcept { return output_norm_; }

    /// Bytes of all weight matrices as stored (what decode reads per token).
    std::int64_t weight_bytes() const noexcept {
        std::int64_t b = config_.tied_embeddings ? embeddings_.bytes() : embeddings_.bytes() + output_.bytes();
        for (const auto& w : layers_)
            b += w.q.bytes() + w.k.bytes() + w.v.bytes() + w.o.bytes() + w.gate.bytes() + w.up.bytes() + w.down.bytes();
        return b;
    }

    // ---- prefill ------------------------------------------------------------

    /// One batched pass over `tokens` from position 0 (see prefill_options).
    prefill_result prefill(const std::vector<std::int32_t>& tokens, const prefill_options& o = {}) const {
        QAQ_CHECK(!tokens.empty(), "prefill needs at least one token");
        float_kv_cache local(config_, static_cast<std::int64_t>(tokens.size()));
        return extend(tokens, local, o);
    }

    /// One batched pass over `tokens` at positions cache.tokens(), ...,
    /// appending their keys and values to `cache` (the exact float32 cache):
    /// a prefill that continues a cache (e.g. the choices of a question after
    /// the question). In the result, positions and T count every token the
    /// cache holds afterwards: keys/values [layers, 1, kv_heads, T, head_dim]
    /// are the whole cache, attention rows [layers, 1, heads, rows, T] the
    /// last rows of the new tokens, logits_from an absolute position (at
    /// least the first new one).
    prefill_result extend(const std::vector<std::int32_t>& tokens, float_kv_cache& cache,
                          const prefill_options& o = {}) const {
        std::vector<prefill_result> r = extend_batch({extend_job{&tokens, &cache, o}});
        return std::move(r.front());
    }

    /// Several independent sequences in one pass: each job extends its own
    /// cache exactly as extend() would, but the weight products run once over
    /// the columns of all jobs (a wider, cheaper GEMM per weight read). Used
    /// to score every choice of a question under several caches at once.
    std::vector<prefill_result> extend_batch(const std::vector<extend_job>& jobs) const {
        const llama_config& c = config_;
        const std::int64_t E = c.embedding, D = c.head_dim, H = c.heads, Hk = c.kv_heads, F = c.feed_forward;
        const std::int64_t group = H / Hk;
        const std::size_t J = jobs.size();
        QAQ_CHECK(J >= 1, "extend_batch needs at least one sequence");
        // Per job: first column, new tokens, cached tokens before, rows kept.
        std::vector<std::int64_t> first(J), count(J), past(J), rows(J);
        std::int64_t N = 0;
        for (std::size_t j = 0; j < J; ++j) {
            const extend_job& job = jobs[j];
            QAQ_CHECK(job.tokens && job.cache, "extend_batch: sequence ", j, " has no tokens or no cache");
            const std::int64_t n = static_cast<std::int64_t>(job.tokens->size());
            QAQ_CHECK(n >= 1, "prefill needs at least one token");
            for (auto t : *job.tokens) check_token(t);
            const float_kv_cache& cache = *job.cache;
            QAQ_CHECK(cache.layers() == c.layers && cache.kv_heads() == c.kv_heads && cache.head_dim() == c.head_dim,
                      "the float cache does not have this model's shape");
            const std::int64_t P = cache.tokens();
            QAQ_CHECK(P + n <= cache.capacity(), "prefill of ", n, " tokens after ", P,
                      " cached ones exceeds the cache capacity ", cache.capacity());
            for (std::size_t i = 0; i < j; ++i)
                QAQ_CHECK(jobs[i].cache != job.cache, "extend_batch: sequences ", i, " and ", j, " share one cache");
            first[j] = N, count[j] = n, past[j] = P;
            rows[j] = job.options.attention_rows < 0 ? n : std::min(job.options.attention_rows, n);
            N += n;
        }

        std::vector<prefill_result> results(J);
        for (std::size_t j = 0; j < J; ++j) {
            prefill_result& r = results[j];
            r.tokens = past[j] + count[j];
            r.vocab = c.vocab;
            if (rows[j] > 0) {
                r.attention_dims = attention_shape{c.layers, 1, H, rows[j], r.tokens};
                r.attention.assign(static_cast<std::size_t>(c.layers * H * rows[j] * r.tokens), 0.0f);
            }
            if (jobs[j].options.keep_query_norms) r.query_norms.resize(static_cast<std::size_t>(c.layers * H * count[j]));
        }

        column_matrix x(E, N), h(E, N), q(c.q_dim(), N), k(c.kv_dim(), N), v(c.kv_dim(), N), att(c.q_dim(), N);
        column_matrix gate(F, N), up(F, N);
        std::vector<float> scratch;
        // cos/sin per column (its sequence's position) and pair.
        std::vector<float> cosines(static_cast<std::size_t>(N * D / 2)), sines(cosines.size());
        for (std::size_t j = 0; j < J; ++j)
            for (std::int64_t t = 0; t < count[j]; ++t) {
                const std::int64_t col = first[j] + t;
                embeddings_.dequantize((*jobs[j].tokens)[static_cast<std::size_t>(t)], 1, x.col(col).data());
                rope_table(past[j] + t, cosines.data() + col * D / 2, sines.data() + col * D / 2);
            }
        // (sequence, query head) pairs: the attention's unit of parallel work.
        const std::int64_t pairs = static_cast<std::int64_t>(J) * H;

        for (std::int64_t l = 0; l < c.layers; ++l) {
            const layer_weights& w = layers_[static_cast<std::size_t>(l)];
            rms_norm(x, w.attention_norm, h);
            w.q.multiply(h.data(), N, q.data(), q.rows(), false, scratch);
            w.k.multiply(h.data(), N, k.data(), k.rows(), false, scratch);
            w.v.multiply(h.data(), N, v.data(), v.rows(), false, scratch);
            parallel_ranges(N, 1, N >= 16, [&](std::int64_t a, std::int64_t b) {
                for (std::int64_t t = a; t < b; ++t) {
                    const float* cs = cosines.data() + t * D / 2;
                    const float* sn = sines.data() + t * D / 2;
                    for (std::int64_t hh = 0; hh < H; ++hh) rotate(q.col(t).data() + hh * D, cs, sn);
                    for (std::int64_t hh = 0; hh < Hk; ++hh) rotate(k.col(t).data() + hh * D, cs, sn);
                }
            });
            for (std::size_t j = 0; j < J; ++j) {
                if (jobs[j].options.keep_query_norms)
                    for (std::int64_t hh = 0; hh < H; ++hh)
                        for (std::int64_t t = 0; t < count[j]; ++t)
                            results[j].query_norms[static_cast<std::size_t>((l * H + hh) * count[j] + t)] =
                                q.col(first[j] + t).segment(hh * D, D).squaredNorm();
                for (std::int64_t t = 0; t < count[j]; ++t)
                    jobs[j].cache->append(l, k.col(first[j] + t).data(), v.col(first[j] + t).data());
            }

            // Causal attention over each sequence's cache, one (sequence, query
            // head) per task: S [T x n] = K Q_h, new token i sees positions 0..P+i.
            const float scale = 1.0f / std::sqrt(static_cast<float>(D));
            parallel_ranges(pairs, 1, N >= 8, [&](std::int64_t a, std::int64_t b) {
                column_matrix s;
                for (std::int64_t pair = a; pair < b; ++pair) {
                    const std::size_t j = static_cast<std::size_t>(pair / H);
                    const std::int64_t hh = pair % H, g = hh / group;
                    const std::int64_t n = count[j], P = past[j], T = P + n, R = rows[j];
                    const float_kv_cache& cache = *jobs[j].cache;
                    const Eigen::Map<const row_matrix> K(cache.key(l, g, 0), T, D), V(cache.value(l, g, 0), T, D);
                    s.resize(T, n);
                    s.noalias() = K * q.block(hh * D, first[j], D, n);
                    for (std::int64_t i = 0; i < n; ++i) {
                        scaled_softmax(s.col(i).data(), P + i + 1, scale);
                        s.col(i).tail(n - i - 1).setZero();
                    }
                    att.block(hh * D, first[j], D, n).noalias() = V.transpose() * s;
                    for (std::int64_t row = 0; row < R; ++row) {
                        float* dst = results[j].attention.data() + ((l * H + hh) * R + row) * T;
                        const float* src = s.col(n - R + row).data();
                        std::copy(src, src + T, dst);
                    }
                }
            });
            w.o.multiply(att.data(), N, x.data(), E, true, scratch);

            rms_norm(x, w.ffn_norm, h);
            w.gate.multiply(h.data(), N, gate.data(), F, false, scratch);
            w.up.multiply(h.data(), N, up.data(), F, false, scratch);
            silu_gate(gate.data(), up.data(), gate.size());
            w.down.multiply(gate.data(), N, x.data(), E, true, scratch);
        }

        // Logits: the wanted columns of every sequence through one output product.
        std::vector<std::int64_t> from(J), wanted(J);
        std::int64_t total = 0;
        for (std::size_t j = 0; j < J; ++j) {
            const std::int64_t P = past[j], T = P + count[j], lf = jobs[j].options.logits_from;
            from[j] = lf < 0 ? T - 1 : std::min(std::max(lf, P), T);
            wanted[j] = T - from[j];
            total += wanted[j];
        }
        column_matrix normed(E, std::max<std::int64_t>(total, 1));
        std::vector<float> logits;
        if (total > 0) {
            column_matrix last(E, total);
            std::int64_t at = 0;
            for (std::size_t j = 0; j < J; ++j) {
                if (wanted[j] > 0) last.middleCols(at, wanted[j]) = x.middleCols(first[j] + count[j] - wanted[j], wanted[j]);
                at += wanted[j];
            }
            normed.resize(E, total);
            rms_norm(last, output_norm_, normed);
            logits.resize(static_cast<std::size_t>(total * c.vocab));
            output_.multiply(normed.data(), total, logits.data(), c.vocab, false, scratch);
        }
        std::int64_t at = 0;
        for (std::size_t j = 0; j < J; ++j) {
            prefill_result& r = results[j];
            r.logits_from = from[j];
            if (wanted[j] > 0)
                r.logits.assign(logits.begin() + at * c.vocab, logits.begin() + (at + wanted[j]) * c.vocab);
            at += wanted[j];
            if (jobs[j].options.keep_kv) {
                const float_kv_cache& cache = *jobs[j].cache;
                const std::int64_t T = r.tokens;
                r.kv = kv_shape{c.layers, 1, Hk, T, D};
                r.keys.resize(static_cast<std::size_t>(r.kv.element_count()));
                r.values.resize(r.keys.size());
                for (std::int64_t l = 0; l < c.layers; ++l)
                    for (std::int64_t g = 0; g < Hk; ++g) {
                        const std::size_t o = static_cast<std::size_t>((l * Hk + g) * T * D);
                        std::copy(cache.key(l, g, 0), cache.key(l, g, 0) + T * D, r.keys.data() + o);
                        std::copy(cache.value(l, g, 0), cache.value(l, g, 0) + T * D, r.values.data() + o);
                    }
            }
        }
        return results;
    }

    // ---- decode -------------------------------------------------------------

    /// One token at position cache.tokens(): runs every layer over `cache`
    /// and writes the next-token logits [vocab] (unless `logits` is null).
    void decode(std::int32_t token, decode_cache& cache, float* logits, decode_trace* trace = nullptr) const {
        check_token(token);
        const llama_config& c = config_;
        const std::int64_t position = cache.tokens();
        QAQ_CHECK(position < cache.capacity(), "the cache is full: it holds ", cache.capacity(),
                  " tokens; cannot decode position ", position);
        const std::int64_t E = c.embedding, D = c.head_dim, H = c.heads, Hk = c.kv_heads, F = c.feed_forward;
        const std::int64_t T = position + 1;
        work s;  // a few KiB per call: the model stays usable from several threads at once
        s.resize(c, T);
        embeddings_.dequantize(token, 1, s.x.data());
        rope_table(position, s.cos.data(), s.sin.data());
        if (trace) {
            trace->attention.assign(static_cast<std::size_t>(c.layers * H * T), 0.0f);
            trace->keys.resize(static_cast<std::size_t>(c.layers * Hk * D));
            trace->values.resize(trace->keys.size());
            trace->query_norms.resize(static_cast<std::size_t>(c.layers * H));
        }

        for (std::int64_t l = 0; l < c.layers; ++l) {
            const layer_weights& w = layers_[static_cast<std::size_t>(l)];
            rms_norm_vector(s.x.data(), w.attention_norm.data(), s.h.data(), E);
            s.input.prepare(s.h.data(), E);
            multiply_all({{&w.q, s.q.data()}, {&w.k, s.k.data()}, {&w.v, s.v.data()}}, s.input.operand());
            for (std::int64_t hh = 0; hh < H; ++hh) rotate(s.q.data() + hh * D, s.cos.data(), s.sin.data());
            for (std::int64_t hh = 0; hh < Hk; ++hh) rotate(s.k.data() + hh * D, s.cos.data(), s.sin.data());
            cache.append(l, s.k.data(), s.v.data());
            cache.attend(l, s.q.data(), s.att.data(), s.probabilities.data());
            if (trace) {
                std::copy(s.probabilities.begin(), s.probabilities.begin() + H * T,
                          trace->attention.begin() + l * H * T);
                std::copy(s.k.begin(), s.k.begin() + Hk * D, trace->keys.begin() + l * Hk * D);
                std::copy(s.v.begin(), s.v.begin() + Hk * D, trace->values.begin() + l * Hk * D);
                for (std::int64_t hh = 0; hh < H; ++hh)
                    trace->query_norms[static_cast<std::size_t>(l * H + hh)] =
                        Eigen::Map<const Eigen::VectorXf>(s.q.data() + hh * D, D).squaredNorm();
            }
            s.input.prepare(s.att.data(), c.q_dim());
            w.o.multiply(s.input.operand(), s.h.data());
            for (std::int64_t i = 0; i < E; ++i) s.x[static_cast<std::size_t>(i)] += s.h[static_cast<std::size_t>(i)];

            rms_norm_vector(s.x.data(), w.ffn_norm.data(), s.h.data(), E);
            s.input.prepare(s.h.data(), E);
            multiply_all({{&w.gate, s.gate.data()}, {&w.up, s.up.data()}}, s.input.operand());
            for (std::int64_t i = 0; i < F; ++i) {
                const float g = s.gate[static_cast<std::size_t>(i)];
                s.gate[static_cast<std::size_t>(i)] = g / (1.0f + std::exp(-g)) * s.up[static_cast<std::size_t>(i)];
            }
            s.input.prepare(s.gate.data(), F);
            w.down.multiply(s.input.operand(), s.h.data());
            for (std::int64_t i = 0; i < E; ++i) s.x[static_cast<std::size_t>(i)] += s.h[static_cast<std::size_t>(i)];
        }
        cache.end_step();
        if (logits) {
            rms_norm_vector(s.x.data(), output_norm_.data(), s.h.data(), E);
            s.input.prepare(s.h.data(), E);
            output_.multiply(s.input.operand(), logits);
        }
    }

private:
    struct work {
        std::vector<float> x, h, q, k, v, att, gate, up, probabilities, cos, sin;
        prepared_vector input;
        void resize(const llama_config& c, std::int64_t T) {
            const auto n = [](std::int64_t v) { return static_cast<std::size_t>(v); };
            x.resize(n(c.embedding));
            h.resize(n(c.embedding));
            q.resize(n(c.q_dim()));
            att.resize(n(c.q_dim()));
            k.resize(n(c.kv_dim()));
            v.resize(n(c.kv_dim()));
            gate.resize(n(c.feed_forward));
            up.resize(n(c.feed_forward));
            probabilities.resize(n(c.heads * T));
            cos.resize(n(c.head_dim / 2));
            sin.resize(n(c.head_dim / 2));
        }
    };

    void check_token(std::int32_t t) const {
        QAQ_CHECK(t >= 0 && t < config_.vocab, "token id ", t, " is out of range for a vocabulary of ", config_.vocab);
    }

    void rope_table(std::int64_t position, float* cosines, float* sines) const {
        llama::rope_table(position, inverse_frequencies_, cosines, sines);
    }

    void rotate(float* x, const float* cosines, const float* sines) const {
        rotate_pairs(x, cosines, sines, static_cast<std::int64_t>(inverse_frequencies_.size()));
    }

    void rms_norm_vector(const float* x, const float* weight, float* out, std::int64_t n) const {
        rms_norm_row(x, weight, out, n, config_.rms_eps);
    }

    void rms_norm(const column_matrix& x, const std::vector<float>& weight, column_matrix& out) const {
        for (std::int64_t t = 0; t < x.cols(); ++t) rms_norm_vector(x.col(t).data(), weight.data(), out.col(t).data(), x.rows());
    }

    gguf_file file_;
    llama_config config_;
    weight_matrix embeddings_, output_;
    std::vector<float> output_norm_;
    std::vector<layer_weights> layers_;
    std::vector<double> inverse_frequencies_;
};

}  // namespace qaq::llama
