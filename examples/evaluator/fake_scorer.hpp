#pragma once
// A deterministic stand-in for the model, for tests and dry runs of a grid.
//
// For each question it builds a synthetic K/V cache from a hash of the context
// (L = 2 layers, 2 KV heads, 4 query heads, head_dim 64, T = the context's
// word count clamped to 2..48; keys carry two outlier channels, attention rows
// are causal with an attention sink on token 0), quantizes it with the real
// library (qaq::any_quantizer, so bits, bytes and reference accounting are
// genuine), and computes the attention of synthetic choice queries over the
// context positions with the exact and the dequantized cache. The choice scores
// are hash-derived log-probabilities; with an answer key the right choice gets
// a bonus on a fixed 75% of the questions, and every choice is perturbed in
// proportion to the attention-output error, so accuracy falls as bits fall.
// Everything is a pure function of (context, choices, configs): threads,
// processes and MPI ranks produce identical results.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "evaluator/question.hpp"
#include "evaluator/scorer.hpp"
#include "evaluator/sha256.hpp"
#include "qaq/any_quantizer.hpp"
#include "qaq/tensor_view.hpp"

namespace qaq::eval {

/// 64-bit FNV-1a.
inline std::uint64_t fnv1a(const std::string& s, std::uint64_t h = 1469598103934665603ull) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    return h;
}

/// Identifies a question by its text, for the fake scorer's answer key.
inline std::uint64_t question_fingerprint(const std::string& context, const std::vector<std::string>& choices) {
    std::uint64_t h = fnv1a(context);
    for (const std::string& c : choices) h = fnv1a(c, fnv1a("\x1f", h));
    return h;
}

using answer_key = std::unordered_map<std::uint64_t, int>;

inline std::shared_ptr<answer_key> make_answer_key(const std::vector<const dataset*>& sets) {
    auto key = std::make_shared<answer_key>();
    for (const dataset* d : sets)
        for (const question& q : d->questions) (*key)[question_fingerprint(q.context, q.choices)] = q.answer;
    return key;
}

struct fake_scorer_options {
    double skill = 0.75;        ///< share of questions where the exact model prefers the answer
    double noise_scale = 12.0;  ///< perturbation per unit RMS attention-output error
    int delay_ms = 0;           ///< sleep per question (to watch progress and ETA)
};

class fake_scorer final : public multiple_choice_scorer {
public:
    explicit fake_scorer(std::shared_ptr<const answer_key> answers = nullptr, fake_scorer_options options = {})
        : answers_(std::move(answers)), options_(options) {}

    static model_identity identity(const fake_scorer_options& o = {}) {
        const std::string params = "qaq-eval fake scorer v1 skill=" + std::to_string(o.skill) +
                                   " noise=" + std::to_string(o.noise_scale) + " L2 H2 Hq4 D64";
        return {"fake", sha256_hex(params)};
    }

    choice_scores score(const std::string& context, const std::vector<std::string>& choices,
                        const qaq::quantizer_config& key, const qaq::quantizer_config& value) override {
        if (options_.delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(options_.delay_ms));
        constexpr std::int64_t L = 2, H = 2, Hq = 4, D = 64;
        const std::int64_t T = std::clamp<std::int64_t>(words(context), 2, 48);
        const qaq::kv_shape shape{L, 1, H, T, D};
        const std::size_t count = static_cast<std::size_t>(shape.element_count());
        rng g(fnv1a(context, 0x9e3779b97f4a7c15ull));
        std::vector<float> k(count), v(count), att(static_cast<std::size_t>(L * Hq * T * T), 0.0f);
        for (std::size_t i = 0; i < count; ++i) {
            const std::int64_t d = static_cast<std::int64_t>(i % D);
            k[i] = static_cast<float>(g.normal() + (d == 5 ? 6.0 : d == 37 ? -4.0 : 0.0));
            v[i] = static_cast<float>(0.5 * g.normal());
        }
        for (std::int64_t l = 0; l < L; ++l)
            for (std::int64_t q = 0; q < Hq; ++q)
                for (std::int64_t r = 0; r < T; ++r) {
                    float* row = att.data() + ((l * Hq + q) * T + r) * T;
                    double sum = 0.0;
                    for (std::int64_t t = 0; t <= r; ++t) {
                        row[t] = static_cast<float>(std::exp(1.5 * g.normal() + (t == 0 ? 3.0 : 0.0)));
                        sum += row[t];
                    }
                    for (std::int64_t t = 0; t <= r; ++t) row[t] = static_cast<float>(row[t] / sum);
                }
        const auto kv = qaq::kv_view<const float>::contiguous(k.data(), shape);
        const auto vv = qaq::kv_view<const float>::contiguous(v.data(), shape);
        const auto av = qaq::attention_view<const float>::contiguous(att.data(), {L, 1, Hq, T, T});
        std::vector<float> kq(count), vq(count);
        choice_scores s;
        s.context_tokens = static_cast<int>(T);
        quantize(key, kv, av, kq, s.key_size);
        quantize(value, vv, av, vq, s.value_size);
        s.key_error.add(k.data(), kq.data(), count);
        s.value_error.add(v.data(), vq.data(), count);

        int answer = -1;
        if (answers_) {
            const auto it = answers_->find(question_fingerprint(context, choices));
            if (it != answers_->end()) answer = it->second;
        }
        const bool knows = unit(fnv1a(context, 7)) < options_.skill;
        for (std::size_t c = 0; c < choices.size(); ++c) {
            const std::int64_t C = std::clamp<std::int64_t>(words(choices[c]), 1, 12);
            rng qg(fnv1a(choices[c], fnv1a(context, 11)));
            error_sum output_error;
            std::vector<float> q(D), p_exact(static_cast<std::size_t>(T)), p_quant(static_cast<std::size_t>(T));
            std::vector<float> o_exact(D), o_quant(D);
            for (std::int64_t l = 0; l < L; ++l)
                for (std::int64_t qh = 0; qh < Hq; ++qh)
                    for (std::int64_t tok = 0; tok < C; ++tok) {
                        for (auto& x : q) x = static_cast<float>(qg.normal());
                        const std::int64_t h = qh / (Hq / H);
                        attend(q, k, v, l, h, T, p_exact, o_exact);
                        attend(q, kq, vq, l, h, T, p_quant, o_quant);
                        s.attention_error.add(p_exact.data(), p_quant.data(), p_exact.size());
                        output_error.add(o_exact.data(), o_quant.data(), o_exact.size());
                    }
            s.logits_error.add(output_error);
            double score = 1.0 - 2.0 * unit(fnv1a(choices[c], fnv1a(context, 1)));
            if (knows && static_cast<int>(c) == answer) score += 1.5;
            score += rng(fnv1a(choices[c], fnv1a(context, 2))).normal() * options_.noise_scale *
                     std::sqrt(output_error.mse());
            // -softplus(-x): monotonic, always negative, like a log-probability.
            s.mean_logprob.push_back(score > 30 ? -std::exp(-score) : -std::log1p(std::exp(-score)));
            s.choice_tokens.push_back(static_cast<int>(C));
        }
        return s;
    }

private:
    struct rng {
        std::uint64_t state;
        explicit rng(std::uint64_t seed) : state(seed) {}
        std::uint64_t next() {
            std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            return z ^ (z >> 31);
        }
        double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
        double normal() {
            const double u1 = uniform(), u2 = uniform();
            return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
        }
    };

    static double unit(std::uint64_t h) { return rng(h).uniform(); }

    static std::int64_t words(const std::string& s) {
        std::int64_t n = 0;
        bool in_word = false;
        for (char ch : s) {
            const bool space = ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r';
            if (!space && !in_word) ++n;
            in_word = !space;
        }
        return n;
    }

    static void quantize(const qaq::quantizer_config& config, const qaq::kv_view<const float>& in,
                         const qaq::attention_view<const float>& attention, std::vector<float>& out, cache_size& size) {
        const qaq::any_quantizer q(config);
        const qaq::packed_tensor packed = q.quantize(in, attention);
        q.dequantize(packed, qaq::kv_view<float>::contiguous(out.data(), in.shape));
        const qaq::reference_accounting ref = q.accounting(packed);
        size.elements = static_cast<double>(in.shape.element_count());
        size.average_bits = config.enabled ? ref.average_bits : 16.0;
        size.bits_per_element = config.enabled ? ref.bits_per_element : 16.0;
        size.bytes = static_cast<double>(packed.bytes().used());
    }

    // softmax(q . K[l,h,t] / sqrt(D)) over t < T, and the output sum_t p_t V[l,h,t].
    static void attend(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                       std::int64_t l, std::int64_t h, std::int64_t T, std::vector<float>& p, std::vector<float>& o) {
        const std::int64_t D = static_cast<std::int64_t>(q.size()), H = 2;
        const float* kb = k.data() + ((l * H + h) * T) * D;
        const float* vb = v.data() + ((l * H + h) * T) * D;
        double max = -1e300;
        std::vector<double> logits(static_cast<std::size_t>(T));
        for (std::int64_t t = 0; t < T; ++t) {
            double dot = 0.0;
            for (std::int64_t d = 0; d < D; ++d) dot += static_cast<double>(q[d]) * kb[t * D + d];
            logits[t] = dot / std::sqrt(static_cast<double>(D));
            max = std::max(max, logits[t]);
        }
        double sum = 0.0;
        for (auto& x : logits) sum += (x = std::exp(x - max));
        std::fill(o.begin(), o.end(), 0.0f);
        for (std::int64_t t = 0; t < T; ++t) {
            p[t] = static_cast<float>(logits[t] / sum);
            for (std::int64_t d = 0; d < D; ++d) o[d] += p[t] * vb[t * D + d];
        }
    }

    std::shared_ptr<const answer_key> answers_;
    fake_scorer_options options_;
};

}  // namespace qaq::eval
