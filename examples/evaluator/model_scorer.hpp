#pragma once
// The real model behind qaq-eval: the LLaMA runner (examples/llama/) scoring
// one multiple-choice question under one or several pairs of quantizers, as
// the original Evaluator does (QAQ-METHOD section 9; the steps are listed in
// scorer.hpp).
//
// Per question the full-precision work is done once and reused by every
// quantizer pair: the context's prefill (K, V, the last attention rows, the
// logits at the last context position) and each choice's exact continuation
// (its logits and attention rows, for the error metrics). Per pair:
//   - K and V of the context are quantized by the whole-tensor quantizer
//     (any group level) and dequantized — equal, within float rounding, to
//     attending over the packed codes (tests/unit/test_kv_cache.cpp);
//   - each choice continues that cache; its own tokens' K/V stay full
//     precision, as in the original.
// Every (pair, choice) continuation of a question is an independent sequence
// with its own cache; they run together through llama_model::extend_batch,
// so each weight matrix is read once per batch instead of once per choice.
//
// The model (and its float32 weight copy, model_options::dense_weights) is
// built once per process and shared by the workers: it is immutable.
//
// The full-precision passes go through a scoring_forward: the CPU model here,
// or a CUDA device (cuda_scorer.hpp). In the prefill protocol quantization
// runs on the host, from the context's K/V as the forward hands them back, so
// every device quantizes exactly alike; in the decode protocol each choice is
// a decoding_session on the forward's device (qaq's packed cache there).

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "evaluator/datasets/registry.hpp"
#include "evaluator/scorer.hpp"
#include "evaluator/sha256.hpp"
#include "evaluator/workers.hpp"
#include "llama/calibration.hpp"
#include "llama/gguf.hpp"
#include "llama/model.hpp"
#include "llama/model_config.hpp"
#include "llama/tokenizer.hpp"
#include "qaq/any_quantizer.hpp"
#include "qaq/error.hpp"

namespace qaq::eval {

struct model_scorer_options {
    std::string model_path;  ///< GGUF file
};

inline model_identity model_identity_of(const std::string& path) {
    return {datasets::basename_of(path), file_sha256(path)};
}

/// What the workers of one process share: the file, the model, the vocabulary.
struct loaded_model {
    explicit loaded_model(const std::string& path)
        : file(llama::gguf_file::open(path)), model(file, dense()),
          vocabulary(llama::tokenizer_vocabulary_from_gguf(file)) {}
    llama::gguf_file file;
    llama::llama_model model;
    llama::tokenizer vocabulary;

private:
    static llama::model_options dense() {
        llama::model_options o;
        o.dense_weights = true;
        return o;
    }
};

/// The forward passes of the prefill protocol on one device: the context's
/// prefill, and continuations of host caches (the exact context cache or a
/// dequantized one) by a choice's tokens, in one batch.
/// One choice decoded over qaq's packed cache (the decode protocol), on the
/// device of the scoring_forward that started it.
class decoding_session {
public:
    virtual ~decoding_session() = default;
    /// One token through the cache: the next-token logits [vocab] and this
    /// token's attention rows [layers][heads][tokens in the cache after it].
    virtual void decode(std::int32_t token, float* logits, std::vector<float>& attention) = 0;
    /// Layer `layer`'s keys or values as the cache reconstructs them, [kv_heads][tokens][head_dim].
    virtual std::vector<float> dequantize(std::int64_t layer, qaq::cache_role role) = 0;
    virtual qaq::kv_cache_byte_report bytes() = 0;
    virtual qaq::reference_accounting accounting(qaq::cache_role role) = 0;
};

/// The decode protocol on the CPU model: quantized_decode_cache.
class cpu_decoding_session final : public decoding_session {
public:
    cpu_decoding_session(const llama::llama_model& model, const llama::prefill_result& context, std::int64_t capacity,
                         const qaq::quantizer_config& key, const qaq::quantizer_config& value)
        : model_(model), cache_(model.config(), capacity, key, value) {
        cache_.prefill(context);
    }
    void decode(std::int32_t token, float* logits, std::vector<float>& attention) override {
        model_.decode(token, cache_, logits, &trace_);
        attention.swap(trace_.attention);
    }
    std::vector<float> dequantize(std::int64_t layer, qaq::cache_role role) override {
        const qaq::kv_cache_shape& s = cache_.cache().shape();
        const std::int64_t count = s.kv_heads * cache_.cache().tokens(layer) * s.head_dim;
        std::vector<float> out(static_cast<std::size_t>(count));
        cache_.cache().dequantize(layer, role, out.data(), count);
        return out;
    }
    qaq::kv_cache_byte_report bytes() override { return cache_.cache().bytes(); }
    qaq::reference_accounting accounting(qaq::cache_role role) override { return cache_.cache().accounting(role); }

private:
    const llama::llama_model& model_;
    llama::quantized_decode_cache cache_;
    llama::decode_trace trace_;
};

class scoring_forward {
public:
    /// `tokens` continuing a cache that holds `keys` and `values` [L, 1, Hk, T, D] (host memory).
    struct continuation {
        const std::vector<std::int32_t>* tokens = nullptr;
        qaq::kv_view<const float> keys, values;
        llama::prefill_options options;
    };

    virtual ~scoring_forward() = default;
    virtual llama::prefill_result prefill(const std::vector<std::int32_t>& tokens, const llama::prefill_options& o) = 0;
    /// As llama_model::extend_batch over caches assigned from each continuation's K/V.
    virtual std::vector<llama::prefill_result> continue_all(const std::vector<continuation>& jobs) = 0;
    /// The decode protocol's cache of `capacity` tokens, quantized from
    /// `context` (a prefill with keep_kv and attention rows).
    virtual std::unique_ptr<decoding_session> start_decoding(const llama::prefill_result& context,
                                                             std::int64_t capacity, const qaq::quantizer_config& key,
                                                             const qaq::quantizer_config& value) = 0;
    /// Where it runs, for messages: "cpu" or e.g. "cuda:0 (NVIDIA H200, sm_90)".
    virtual std::string device() const = 0;
};

/// The CPU model's passes (float_kv_cache continuations through extend_batch).
class cpu_scoring_forward final : public scoring_forward {
public:
    explicit cpu_scoring_forward(const llama::llama_model& model) : model_(model) {}

    llama::prefill_result prefill(const std::vector<std::int32_t>& tokens, const llama::prefill_options& o) override {
        return model_.prefill(tokens, o);
    }
    std::vector<llama::prefill_result> continue_all(const std::vector<continuation>& jobs) override {
        std::vector<llama::float_kv_cache> caches;
        caches.reserve(jobs.size());
        std::vector<llama::extend_job> batch;
        for (const continuation& c : jobs) {
            caches.emplace_back(model_.config(), c.keys.shape.tokens + static_cast<std::int64_t>(c.tokens->size()));
            caches.back().assign(c.keys, c.values);
        }
        for (std::size_t i = 0; i < jobs.size(); ++i) batch.push_back(llama::extend_job{jobs[i].tokens, &caches[i], jobs[i].options});
        return model_.extend_batch(batch);
    }
    std::unique_ptr<decoding_session> start_decoding(const llama::prefill_result& context, std::int64_t capacity,
                                                     const qaq::quantizer_config& key,
                                                     const qaq::quantizer_config& value) override {
        return std::make_unique<cpu_decoding_session>(model_, context, capacity, key, value);
    }
    std::string device() const override { return "cpu"; }

private:
    const llama::llama_model& model_;
};

class llama_scorer final : public multiple_choice_scorer {
public:
    explicit llama_scorer(const std::string& path)
        : shared_(std::make_shared<const loaded_model>(path)), forward_(std::make_unique<cpu_scoring_forward>(shared_->model)) {}
    explicit llama_scorer(std::shared_ptr<const loaded_model> shared) : shared_(std::move(shared)) {
        QAQ_CHECK(static_cast<bool>(shared_), "llama_scorer needs a model");
        forward_ = std::make_unique<cpu_scoring_forward>(shared_->model);
    }
    /// The prefill protocol's passes on another device; `shared` still gives
    /// the vocabulary (and the host model the forward was built from).
    llama_scorer(std::shared_ptr<const loaded_model> shared, std::unique_ptr<scoring_forward> forward)
        : shared_(std::move(shared)), forward_(std::move(forward)) {
        QAQ_CHECK(static_cast<bool>(shared_) && static_cast<bool>(forward_), "llama_scorer needs a model and a forward pass");
    }

    choice_scores score(const std::string& context, const std::vector<std::string>& choices,
                        const qaq::quantizer_config& key, const qaq::quantizer_config& value) override {
        return std::move(score_all(context, choices, {quantizer_pair{key, value}}).front());
    }

    std::vector<choice_scores> score_all(const std::string& context, const std::vector<std::string>& choices,
                                         const std::vector<quantizer_pair>& pairs) override {
        QAQ_CHECK(!choices.empty(), "a question needs at least one choice");
        QAQ_CHECK(!pairs.empty(), "score_all needs at least one quantizer pair");
        int window = 1;
        for (const quantizer_pair& p : pairs) window = std::max({window, p.key.window, p.value.window});
        prepare(context, choices, window);
        const std::int64_t T = static_cast<std::int64_t>(context_tokens_.size());

        if (protocol_ == "decode") return score_decoding(pairs);

        std::vector<choice_scores> out(pairs.size());
        // Dequantized context caches, one per pair (the evaluation protocol).
        std::vector<std::vector<float>> keys(pairs.size()), values(pairs.size());
        for (std::size_t p = 0; p < pairs.size(); ++p) {
            out[p].context_tokens = static_cast<int>(T);
            quantize(pairs[p].key, qaq::cache_role::key, exact_.keys, keys[p], out[p].key_size, out[p].key_error);
            quantize(pairs[p].value, qaq::cache_role::value, exact_.values, values[p], out[p].value_size,
                     out[p].value_error);
            out[p].mean_logprob.resize(choices.size());
            out[p].choice_tokens.resize(choices.size());
        }

        // (pair, choice) continuations in batches of about max_batch_columns tokens.
        struct unit {
            std::size_t pair, choice;
        };
        std::vector<unit> units;
        for (std::size_t p = 0; p < pairs.size(); ++p)
            for (std::size_t i = 0; i < choices.size(); ++i) units.push_back({p, i});
        std::size_t begin = 0;
        while (begin < units.size()) {
            std::size_t end = begin;
            std::int64_t columns = 0;
            while (end < units.size() &&
                   (end == begin || columns + choice_length(units[end].choice) <= max_batch_columns)) {
                columns += choice_length(units[end].choice);
                ++end;
            }
            std::vector<scoring_forward::continuation> jobs;
            for (std::size_t u = begin; u < end; ++u) {
                const std::size_t p = units[u].pair;
                scoring_forward::continuation job;
                job.tokens = &choice_tokens_[units[u].choice];
                job.keys = qaq::kv_view<const float>::contiguous(keys[p].data(), exact_.kv);
                job.values = qaq::kv_view<const float>::contiguous(values[p].data(), exact_.kv);
                job.options.attention_rows = -1;  // every choice row, for the attention error
                job.options.logits_from = T;      // logits at every choice position
                jobs.push_back(job);
            }
            const std::vector<llama::prefill_result> runs = forward_->continue_all(jobs);
            for (std::size_t u = begin; u < end; ++u)
                add_choice(runs[u - begin], units[u].choice, out[units[u].pair]);
            begin = end;
        }
        return out;
    }

    void set_protocol(const std::string& protocol) override {
        QAQ_CHECK(protocol == "prefill" || protocol == "decode", "protocol \"", protocol,
                  "\": expected prefill or decode");
        protocol_ = protocol;
    }

    /// Columns (tokens of all sequences) per extend_batch call: wide enough
    /// for efficient GEMMs, small enough to bound the logits buffers
    /// (columns x vocabulary floats).
    static constexpr std::int64_t max_batch_columns = 384;

private:
    // Everything full precision about the current question.
    struct exact_context {
        llama::prefill_result result;
        std::vector<float> keys, values;  // [L, 1, H, T, D]
        qaq::kv_shape kv{};
        qaq::attention_view<const float> attention_rows() const { return result.attention_rows(); }
    };

    const llama::llama_model& model() const { return shared_->model; }
    std::int64_t choice_length(std::size_t i) const { return static_cast<std::int64_t>(choice_tokens_[i].size()); }

    void quantize(qaq::quantizer_config config, qaq::cache_role role, const std::vector<float>& in,
                  std::vector<float>& dequantized, cache_size& size, error_sum& error) const {
        config.role = role;
        dequantized.resize(in.size());
        const qaq::any_quantizer q(config);
        const auto packed = q.quantize(qaq::kv_view<const float>::contiguous(in.data(), exact_.kv), exact_.attention_rows());
        q.dequantize(packed, qaq::kv_view<float>::contiguous(dequantized.data(), exact_.kv));
        const auto accounting = q.accounting(packed);
        size.elements = static_cast<double>(in.size());
        size.average_bits = accounting.average_bits;
        size.bits_per_element = accounting.bits_per_element;
        size.bytes = static_cast<double>(packed.bytes().used());
        error.add(in.data(), dequantized.data(), in.size());
    }

    // The decode protocol: per pair and choice, the context's cache quantized
    // from the prefill (its attention rows give the first value bits), then
    // every choice token decoded over the packed cache (attention over the
    // codes, the window tracker observing each row, a rebalance per token).
    // Sizes are those of the cache after the last token (context and choice).
    std::vector<choice_scores> score_decoding(const std::vector<quantizer_pair>& pairs) const {
        const llama::llama_config& c = model().config();
        const std::int64_t T = static_cast<std::int64_t>(context_tokens_.size());
        std::vector<choice_scores> out(pairs.size());
        std::vector<float> logits(static_cast<std::size_t>(c.vocab)), attention;
        for (std::size_t p = 0; p < pairs.size(); ++p) {
            choice_scores& o = out[p];
            o.context_tokens = static_cast<int>(T);
            o.mean_logprob.resize(choice_tokens_.size());
            o.choice_tokens.resize(choice_tokens_.size());
            for (std::size_t i = 0; i < choice_tokens_.size(); ++i) {
                const std::vector<std::int32_t>& tokens = choice_tokens_[i];
                const std::int64_t n = static_cast<std::int64_t>(tokens.size());
                const std::unique_ptr<decoding_session> cache =
                    forward_->start_decoding(exact_.result, T + n, pairs[p].key, pairs[p].value);
                if (i == 0) {
                    // K/V error of the context as first quantized (as in the prefill protocol).
                    std::vector<float> keys, values;
                    keys.reserve(exact_.keys.size());
                    values.reserve(exact_.values.size());
                    for (std::int64_t l = 0; l < c.layers; ++l) {
                        const std::vector<float> k = cache->dequantize(l, qaq::cache_role::key);
                        const std::vector<float> v = cache->dequantize(l, qaq::cache_role::value);
                        keys.insert(keys.end(), k.begin(), k.end());
                        values.insert(values.end(), v.begin(), v.end());
                    }
                    o.key_error.add(exact_.keys.data(), keys.data(), keys.size());
                    o.value_error.add(exact_.values.data(), values.data(), values.size());
                }
                const llama::prefill_result& e = exact_choices_[i];
                double sum = log_probability(exact_.result.logits_at(T - 1), tokens[0]);
                for (std::int64_t k = 0; k < n; ++k) {
                    cache->decode(tokens[static_cast<std::size_t>(k)], logits.data(), attention);
                    if (k + 1 < n) sum += log_probability(logits.data(), tokens[static_cast<std::size_t>(k + 1)]);
                    o.logits_error.add(logits.data(), e.logits_at(T + k), static_cast<std::size_t>(c.vocab));
                    // This token's attention rows over the context positions.
                    const std::int64_t width = T + k + 1, rows = e.attention_dims.rows, ew = e.attention_dims.tokens;
                    for (std::int64_t l = 0; l < c.layers; ++l)
                        for (std::int64_t h = 0; h < c.heads; ++h)
                            o.attention_error.add(&attention[static_cast<std::size_t>((l * c.heads + h) * width)],
                                                  &e.attention[static_cast<std::size_t>(((l * c.heads + h) * rows + k) * ew)],
                                                  static_cast<std::size_t>(T));
                }
                o.mean_logprob[i] = sum / static_cast<double>(n);
                o.choice_tokens[i] = static_cast<int>(n);
                if (i + 1 == choice_tokens_.size()) {
                    // Sizes of the last choice's final cache (context + choice).
                    const auto bytes = cache->bytes();
                    const double elements = static_cast<double>(c.layers * c.kv_heads * (T + n) * c.head_dim);
                    const auto ka = cache->accounting(qaq::cache_role::key);
                    const auto va = cache->accounting(qaq::cache_role::value);
                    o.key_size = {elements, ka.average_bits, ka.bits_per_element, static_cast<double>(bytes.keys.used())};
                    o.value_size = {elements, va.average_bits, va.bits_per_element,
                                    static_cast<double>(bytes.values.used())};
                }
            }
        }
        return out;
    }

    // Scores choice i from its quantized run r into `out`.
    void add_choice(const llama::prefill_result& r, std::size_t i, choice_scores& out) const {
        const llama::llama_config& c = model().config();
        const std::int64_t T = static_cast<std::int64_t>(context_tokens_.size());
        const std::vector<std::int32_t>& tokens = choice_tokens_[i];
        const std::int64_t n = static_cast<std::int64_t>(tokens.size());
        // Token 0 from the exact logits at the last context position; token k >= 1
        // from the quantized run at position T + k - 1.
        double sum = log_probability(exact_.result.logits_at(T - 1), tokens[0]);
        for (std::int64_t k = 1; k < n; ++k) sum += log_probability(r.logits_at(T + k - 1), tokens[static_cast<std::size_t>(k)]);
        out.mean_logprob[i] = sum / static_cast<double>(n);
        out.choice_tokens[i] = static_cast<int>(n);
        const llama::prefill_result& e = exact_choices_[i];
        for (std::int64_t k = 0; k < n; ++k)
            out.logits_error.add(r.logits_at(T + k), e.logits_at(T + k), static_cast<std::size_t>(c.vocab));
        // Attention rows of the choice tokens over the context positions [0, T).
        const std::int64_t rows = r.attention_dims.rows, width = r.attention_dims.tokens;
        for (std::int64_t row = 0; row < c.layers * c.heads * rows; ++row)
            out.attention_error.add(&r.attention[static_cast<std::size_t>(row * width)],
                                    &e.attention[static_cast<std::size_t>(row * width)], static_cast<std::size_t>(T));
    }

    void prepare(const std::string& context, const std::vector<std::string>& choices, int window) {
        const int rows = std::max(window, 8);
        if (context == context_ && choices == choices_ && rows <= attention_rows_) return;
        context_ = context, choices_ = choices, attention_rows_ = rows;
        const llama::llama_model& m = model();
        context_tokens_ = shared_->vocabulary.encode(context);
        QAQ_CHECK(!context_tokens_.empty(), "the question's context encodes to no tokens");
        const std::int64_t T = static_cast<std::int64_t>(context_tokens_.size());
        QAQ_CHECK(T + 1 <= m.config().context_length, "the question's context (", T,
                  " tokens) does not fit the model's context length");
        llama::prefill_options o;
        o.keep_kv = true;
        o.attention_rows = rows;
        o.logits_from = T - 1;
        exact_.result = forward_->prefill(context_tokens_, o);
        exact_.kv = exact_.result.kv;
        const auto kv = exact_.result.key_view();
        exact_.keys.assign(kv.data, kv.data + kv.shape.element_count());
        const auto vv = exact_.result.value_view();
        exact_.values.assign(vv.data, vv.data + vv.shape.element_count());

        // Choice tokens as the original takes them: encode the concatenation and
        // drop the context's length of tokens.
        choice_tokens_.clear();
        for (const std::string& choice : choices) {
            std::vector<std::int32_t> all = shared_->vocabulary.encode(context + choice);
            QAQ_CHECK(static_cast<std::int64_t>(all.size()) > T, "choice '", choice, "' adds no tokens to its context");
            choice_tokens_.emplace_back(all.begin() + T, all.end());
            QAQ_CHECK(T + choice_length(choice_tokens_.size() - 1) <= m.config().context_length, "question and choice '",
                      choice, "' (", all.size(), " tokens) do not fit the model's context length");
        }
        // The exact continuations, all choices in one batch.
        std::vector<scoring_forward::continuation> jobs;
        for (std::size_t i = 0; i < choices.size(); ++i) {
            scoring_forward::continuation job;
            job.tokens = &choice_tokens_[i];
            job.keys = exact_.result.key_view();
            job.values = exact_.result.value_view();
            job.options.attention_rows = -1;
            job.options.logits_from = T;
            jobs.push_back(job);
        }
        exact_choices_ = forward_->continue_all(jobs);
    }

    double log_probability(const float* logits, std::int32_t token) const {
        const std::int64_t V = model().config().vocab;
        const float m = *std::max_element(logits, logits + V);
        double sum = 0.0;
        for (std::int64_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(logits[i] - m));
        return static_cast<double>(logits[token] - m) - std::log(sum);
    }

    std::shared_ptr<const loaded_model> shared_;
    std::unique_ptr<scoring_forward> forward_;
    std::string protocol_ = "prefill";
    std::string context_;
    std::vector<std::string> choices_;
    int attention_rows_ = 0;
    std::vector<std::int32_t> context_tokens_;
    exact_context exact_;
    std::vector<std::vector<std::int32_t>> choice_tokens_;
    std::vector<llama::prefill_result> exact_choices_;
};

/// Workers sharing a model already loaded.
inline scorer_factory make_model_scorer_factory(std::shared_ptr<const loaded_model> model) {
    QAQ_CHECK(static_cast<bool>(model), "the model scorer factory needs a model");
    return [model](const device_spec&, int) -> std::unique_ptr<multiple_choice_scorer> {
        return std::make_unique<llama_scorer>(model);
    };
}

/// q_norm=auto for the evaluator (llama/calibration.hpp): the contexts of the
/// first `per_dataset` questions of each dataset (file order, not the
/// sample), rounded to 4 significant digits so that the value, part of every
/// result-cache key, is stable.
inline double calibrated_q_norm(const loaded_model& m, const std::vector<const dataset*>& sets, std::size_t per_dataset) {
    std::vector<std::vector<std::int32_t>> sequences;
    for (const dataset* d : sets)
        for (std::size_t i = 0; i < std::min(per_dataset, d->questions.size()); ++i)
            sequences.push_back(m.vocabulary.encode(d->questions[i].context));
    const double q = llama::calibrate_q_norm(m.model, sequences);
    const double scale = std::pow(10.0, 3 - std::floor(std::log10(q)));
    return std::round(q * scale) / scale;
}

/// Workers of one process share one loaded model, built by the first worker
/// that asks (later ones wait for it).
inline scorer_factory make_model_scorer_factory(const model_scorer_options& options) {
    QAQ_CHECK(!options.model_path.empty(), "--scorer model needs --model FILE (a GGUF file)");
    struct shared_state {
        std::mutex mutex;
        std::shared_ptr<const loaded_model> model;
    };
    auto state = std::make_shared<shared_state>();
    const std::string path = options.model_path;
    return [path, state](const device_spec&, int) -> std::unique_ptr<multiple_choice_scorer> {
        std::lock_guard<std::mutex> lock(state->mutex);
        if (!state->model) state->model = std::make_shared<const loaded_model>(path);
        return std::make_unique<llama_scorer>(state->model);
    };
}

}  // namespace qaq::eval
