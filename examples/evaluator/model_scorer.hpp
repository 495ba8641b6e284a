#pragma once
// The real model behind qaq-eval: the LLaMA runner (examples/llama/) scoring
// one multiple-choice question under one pair of quantizers, as the original
// Evaluator does (QAQ-METHOD section 9; the steps are listed in scorer.hpp).
//
// Per question the full-precision work is done once and reused by every
// quantizer pair: the context's prefill (K, V, the last attention rows, the
// logits at the last context position) and each choice's exact continuation
// (its logits and attention rows, for the error metrics). Per pair:
//   - K and V of the context are quantized by the whole-tensor quantizer
//     (any group level) and dequantized — equal, within float rounding, to
//     attending over the packed codes (tests/unit/test_kv_cache.cpp);
//   - each choice runs as one batched continuation over that cache; its own
//     tokens' K/V stay full precision, as in the original.

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "evaluator/datasets/registry.hpp"
#include "evaluator/scorer.hpp"
#include "evaluator/sha256.hpp"
#include "evaluator/workers.hpp"
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

class llama_scorer final : public multiple_choice_scorer {
public:
    explicit llama_scorer(const std::string& path)
        : file_(llama::gguf_file::open(path)), model_(file_),
          tokenizer_(llama::tokenizer_vocabulary_from_gguf(file_)) {}

    choice_scores score(const std::string& context, const std::vector<std::string>& choices,
                        const qaq::quantizer_config& key, const qaq::quantizer_config& value) override {
        QAQ_CHECK(!choices.empty(), "a question needs at least one choice");
        prepare(context, choices, std::max(key.window, value.window));
        const llama::llama_config& c = model_.config();
        const std::int64_t T = static_cast<std::int64_t>(context_tokens_.size());

        choice_scores out;
        out.context_tokens = static_cast<int>(T);
        // Quantize both caches of the context, then dequantize (the evaluation protocol).
        std::vector<float> keys(exact_.keys.size()), values(exact_.values.size());
        const auto shape = exact_.kv;
        auto quantize = [&](qaq::quantizer_config config, qaq::cache_role role, const std::vector<float>& in,
                            std::vector<float>& dequantized, cache_size& size, error_sum& error) {
            config.role = role;
            const qaq::any_quantizer q(config);
            const auto packed = q.quantize(qaq::kv_view<const float>::contiguous(in.data(), shape), exact_.attention_rows());
            q.dequantize(packed, qaq::kv_view<float>::contiguous(dequantized.data(), shape));
            const auto accounting = q.accounting(packed);
            size.elements = static_cast<double>(in.size());
            size.average_bits = accounting.average_bits;
            size.bits_per_element = accounting.bits_per_element;
            size.bytes = static_cast<double>(packed.bytes().used());
            error.add(in.data(), dequantized.data(), in.size());
        };
        quantize(key, qaq::cache_role::key, exact_.keys, keys, out.key_size, out.key_error);
        quantize(value, qaq::cache_role::value, exact_.values, values, out.value_size, out.value_error);

        const float* first_logits = exact_.result.logits_at(T - 1);
        for (std::size_t i = 0; i < choices.size(); ++i) {
            const std::vector<std::int32_t>& tokens = choice_tokens_[i];
            const std::int64_t n = static_cast<std::int64_t>(tokens.size());
            llama::float_kv_cache cache(c, T + n);
            cache.assign(qaq::kv_view<const float>::contiguous(keys.data(), shape),
                         qaq::kv_view<const float>::contiguous(values.data(), shape));
            llama::prefill_options o;
            o.attention_rows = -1;  // every choice row, for the attention error
            o.logits_from = T;      // logits at every choice position
            const llama::prefill_result r = model_.extend(tokens, cache, o);
            // Token 0 from the exact logits at the last context position; token k >= 1
            // from the quantized run at position T + k - 1.
            double sum = log_probability(first_logits, tokens[0]);
            for (std::int64_t k = 1; k < n; ++k) sum += log_probability(r.logits_at(T + k - 1), tokens[k]);
            out.mean_logprob.push_back(sum / static_cast<double>(n));
            out.choice_tokens.push_back(static_cast<int>(n));
            const llama::prefill_result& e = exact_choices_[i];
            for (std::int64_t k = 0; k < n; ++k)
                out.logits_error.add(r.logits_at(T + k), e.logits_at(T + k), static_cast<std::size_t>(c.vocab));
            // Attention rows of the choice tokens over the context positions [0, T).
            const auto& ra = r.attention;
            const auto& ea = e.attention;
            const std::int64_t rows = r.attention_dims.rows, width = r.attention_dims.tokens;
            for (std::int64_t row = 0; row < c.layers * c.heads * rows; ++row)
                out.attention_error.add(&ra[static_cast<std::size_t>(row * width)], &ea[static_cast<std::size_t>(row * width)],
                                        static_cast<std::size_t>(T));
        }
        return out;
    }

private:
    // Everything full precision about the current question.
    struct exact_context {
        llama::prefill_result result;
        std::vector<float> keys, values;  // [L, 1, H, T, D]
        qaq::kv_shape kv{};
        qaq::attention_view<const float> attention_rows() const { return result.attention_rows(); }
    };

    void prepare(const std::string& context, const std::vector<std::string>& choices, int window) {
        const int rows = std::max(window, 8);
        if (context == context_ && choices == choices_ && rows <= attention_rows_) return;
        context_ = context, choices_ = choices, attention_rows_ = rows;
        context_tokens_ = tokenizer_.encode(context);
        QAQ_CHECK(!context_tokens_.empty(), "the question's context encodes to no tokens");
        const std::int64_t T = static_cast<std::int64_t>(context_tokens_.size());
        QAQ_CHECK(T + 1 <= model_.config().context_length, "the question's context (", T,
                  " tokens) does not fit the model's context length");
        llama::prefill_options o;
        o.keep_kv = true;
        o.attention_rows = rows;
        o.logits_from = T - 1;
        exact_.result = model_.prefill(context_tokens_, o);
        exact_.kv = exact_.result.kv;
        const auto kv = exact_.result.key_view();
        exact_.keys.assign(kv.data, kv.data + kv.shape.element_count());
        const auto vv = exact_.result.value_view();
        exact_.values.assign(vv.data, vv.data + vv.shape.element_count());

        // Choice tokens as the original takes them: encode the concatenation and
        // drop the context's length of tokens.
        choice_tokens_.clear();
        exact_choices_.clear();
        for (const std::string& choice : choices) {
            std::vector<std::int32_t> all = tokenizer_.encode(context + choice);
            QAQ_CHECK(static_cast<std::int64_t>(all.size()) > T, "choice '", choice, "' adds no tokens to its context");
            choice_tokens_.emplace_back(all.begin() + T, all.end());
            const std::int64_t n = static_cast<std::int64_t>(choice_tokens_.back().size());
            llama::float_kv_cache cache(model_.config(), T + n);
            cache.assign(exact_.result.key_view(), exact_.result.value_view());
            llama::prefill_options e;
            e.attention_rows = -1;
            e.logits_from = T;
            exact_choices_.push_back(model_.extend(choice_tokens_.back(), cache, e));
        }
    }

    double log_probability(const float* logits, std::int32_t token) const {
        const std::int64_t V = model_.config().vocab;
        const float m = *std::max_element(logits, logits + V);
        double sum = 0.0;
        for (std::int64_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(logits[i] - m));
        return static_cast<double>(logits[token] - m) - std::log(sum);
    }

    llama::gguf_file file_;
    llama::llama_model model_;
    llama::tokenizer tokenizer_;
    std::string context_;
    std::vector<std::string> choices_;
    int attention_rows_ = 0;
    std::vector<std::int32_t> context_tokens_;
    exact_context exact_;
    std::vector<std::vector<std::int32_t>> choice_tokens_;
    std::vector<llama::prefill_result> exact_choices_;
};

inline scorer_factory make_model_scorer_factory(const model_scorer_options& options) {
    QAQ_CHECK(!options.model_path.empty(), "--scorer model needs --model FILE (a GGUF file)");
    const std::string path = options.model_path;
    return [path](const device_spec&, int) -> std::unique_ptr<multiple_choice_scorer> {
        return std::make_unique<llama_scorer>(path);
    };
}

}  // namespace qaq::eval
