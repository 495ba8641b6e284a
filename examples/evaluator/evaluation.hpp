#pragma once
// One evaluation (the original's Evaluator): one key/value quantizer pair, one
// model, one dataset, N questions sampled by seed -> one evaluation_result.
//
// Metrics (QAQ-METHOD section 9; the original evaluator.py in brackets):
//   accuracy, accuracy_ci95 = 1.96 sqrt(p (1 - p) / N)
//   answer_logprob          mean over questions of the right choice's mean log-prob
//   mse_* / mae_*           per question mean squared / absolute error, then the
//                           mean over questions (equal weight) [the original
//                           averaged per-question mean absolute errors]
//   average_bits_*          tokens-weighted mean of the reference average bits
//   bits_per_element_*      tokens-weighted reference bits incl. parameters
//   bytes_*                 real packed bytes summed over questions; bytes_fp16
//                           the FP16 size of the same K and V values
//   compression_ratio       bytes_fp16 / (bytes_key + bytes_value)
//   reference_compression_ratio  16 / (element-weighted reference bits per element)
//   bytes_per_token_*       average size per context token (tokens-weighted)

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "evaluator/config_json.hpp"
#include "evaluator/datasets/sampling.hpp"
#include "evaluator/question.hpp"
#include "evaluator/scorer.hpp"
#include "qaq/config.hpp"
#include "qaq/error.hpp"

namespace qaq::eval {

/// Bumped when the protocol or the metrics change, so old cached results stop matching.
inline constexpr int evaluation_protocol_version = 1;

struct evaluation_result {
    std::int64_t questions = 0;
    std::int64_t correct = 0;
    double accuracy = 0.0;
    double accuracy_ci95 = 0.0;
    double answer_logprob = 0.0;
    double mse_key = 0.0, mse_value = 0.0, mse_attention = 0.0, mse_logits = 0.0;
    double mae_key = 0.0, mae_value = 0.0, mae_attention = 0.0, mae_logits = 0.0;
    double average_bits_key = 16.0, average_bits_value = 16.0;
    double bits_per_element_key = 16.0, bits_per_element_value = 16.0;
    double bytes_key = 0.0, bytes_value = 0.0, bytes_fp16 = 0.0;
    double compression_ratio = 1.0;
    double reference_compression_ratio = 1.0;
    double bytes_per_token_key = 0.0, bytes_per_token_value = 0.0;
    std::int64_t context_tokens = 0;
    std::int64_t choice_tokens = 0;
    std::vector<int> predictions;  ///< chosen index per question, in sample order
};

inline nlohmann::json to_json(const evaluation_result& r) {
    return {{"questions", r.questions},
            {"correct", r.correct},
            {"accuracy", r.accuracy},
            {"accuracy_ci95", r.accuracy_ci95},
            {"answer_logprob", r.answer_logprob},
            {"mse_key", r.mse_key},
            {"mse_value", r.mse_value},
            {"mse_attention", r.mse_attention},
            {"mse_logits", r.mse_logits},
            {"mae_key", r.mae_key},
            {"mae_value", r.mae_value},
            {"mae_attention", r.mae_attention},
            {"mae_logits", r.mae_logits},
            {"average_bits_key", r.average_bits_key},
            {"average_bits_value", r.average_bits_value},
            {"bits_per_element_key", r.bits_per_element_key},
            {"bits_per_element_value", r.bits_per_element_value},
            {"bytes_key", r.bytes_key},
            {"bytes_value", r.bytes_value},
            {"bytes_fp16", r.bytes_fp16},
            {"compression_ratio", r.compression_ratio},
            {"reference_compression_ratio", r.reference_compression_ratio},
            {"bytes_per_token_key", r.bytes_per_token_key},
            {"bytes_per_token_value", r.bytes_per_token_value},
            {"context_tokens", r.context_tokens},
            {"choice_tokens", r.choice_tokens},
            {"predictions", r.predictions}};
}

/// Strict: every field must be present with the right type (a cached line that
/// lacks one is treated as corrupt).
inline evaluation_result result_from_json(const nlohmann::json& j) {
    QAQ_CHECK(j.is_object(), "result: expected an object, got ", j.type_name());
    evaluation_result r;
    auto number = [&](const char* name, double& out) {
        QAQ_CHECK(j.contains(name) && j[name].is_number(), "result: field \"", name, "\" must be a number");
        out = j[name].get<double>();
    };
    auto integer = [&](const char* name, std::int64_t& out) {
        QAQ_CHECK(j.contains(name) && j[name].is_number_integer(), "result: field \"", name, "\" must be an integer");
        out = j[name].get<std::int64_t>();
    };
    integer("questions", r.questions);
    integer("correct", r.correct);
    number("accuracy", r.accuracy);
    number("accuracy_ci95", r.accuracy_ci95);
    number("answer_logprob", r.answer_logprob);
    number("mse_key", r.mse_key);
    number("mse_value", r.mse_value);
    number("mse_attention", r.mse_attention);
    number("mse_logits", r.mse_logits);
    number("mae_key", r.mae_key);
    number("mae_value", r.mae_value);
    number("mae_attention", r.mae_attention);
    number("mae_logits", r.mae_logits);
    number("average_bits_key", r.average_bits_key);
    number("average_bits_value", r.average_bits_value);
    number("bits_per_element_key", r.bits_per_element_key);
    number("bits_per_element_value", r.bits_per_element_value);
    number("bytes_key", r.bytes_key);
    number("bytes_value", r.bytes_value);
    number("bytes_fp16", r.bytes_fp16);
    number("compression_ratio", r.compression_ratio);
    number("reference_compression_ratio", r.reference_compression_ratio);
    number("bytes_per_token_key", r.bytes_per_token_key);
    number("bytes_per_token_value", r.bytes_per_token_value);
    integer("context_tokens", r.context_tokens);
    integer("choice_tokens", r.choice_tokens);
    QAQ_CHECK(j.contains("predictions") && j["predictions"].is_array(), "result: field \"predictions\" must be an array");
    for (const auto& p : j["predictions"]) {
        QAQ_CHECK(p.is_number_integer(), "result: \"predictions\" must hold integers");
        r.predictions.push_back(p.get<int>());
    }
    QAQ_CHECK(r.questions >= 1 && r.correct >= 0 && r.correct <= r.questions &&
                  static_cast<std::int64_t>(r.predictions.size()) == r.questions,
              "result: inconsistent counts (questions ", r.questions, ", correct ", r.correct, ", predictions ",
              r.predictions.size(), ")");
    return r;
}

/// What an experiment asks for: one grid point on one dataset.
struct evaluation_task {
    std::string experiment;     ///< experiment name
    std::string method;         ///< series, e.g. "uniform", "qaq", "q4_0-style"
    std::string label;          ///< the point, e.g. "K 4b / V 4b"
    bool approximation = false; ///< the config only approximates the named method
    std::string note;           ///< why (shown in every output)
    qaq::quantizer_config key, value;
    std::string dataset;        ///< dataset name as loaded
    std::int64_t n = 0;         ///< questions (0: all)
    std::uint64_t seed = 42;
    std::string protocol = "prefill";  ///< "prefill" or "decode" (scorer.hpp)
};

/// The key of a prefill-protocol evaluation (the original's key fields).
inline nlohmann::json cache_key_prefill(const evaluation_task& t, const model_identity& model, const dataset& d) {
    return {{"qaq_version", qaq::version_string},
            {"protocol", evaluation_protocol_version},
            {"model", {{"name", model.name}, {"sha256", model.sha256}}},
            {"dataset", {{"name", d.canonical_name}, {"sha256", d.sha256}}},
            {"n", t.n},
            {"seed", t.seed},
            {"key", canonical_json(t.key)},
            {"value", canonical_json(t.value)}};
}

/// The result-cache key: every parameter the result depends on.
inline nlohmann::json cache_key(const evaluation_task& t, const model_identity& model, const dataset& d) {
    nlohmann::json key = cache_key_prefill(t, model, d);
    // The decode protocol's results differ; prefill keys stay as they were.
    if (t.protocol != "prefill") key["mode"] = t.protocol;
    return key;
}

/// Accumulates per-question scores into an evaluation_result.
class result_accumulator {
public:
    void add(const question& q, const choice_scores& s) {
        QAQ_CHECK(s.mean_logprob.size() == q.choices.size(), "question ", q.id, ": the scorer returned ",
                  s.mean_logprob.size(), " scores for ", q.choices.size(), " choices");
        int best = 0;
        for (std::size_t i = 0; i < s.mean_logprob.size(); ++i) {
            QAQ_CHECK(std::isfinite(s.mean_logprob[i]), "question ", q.id, ": choice ", i, " scored ", s.mean_logprob[i],
                      "; expected a finite mean log-probability");
            if (s.mean_logprob[i] > s.mean_logprob[static_cast<std::size_t>(best)]) best = static_cast<int>(i);
        }
        QAQ_CHECK(s.context_tokens >= 0, "question ", q.id, ": negative context token count");
        r_.predictions.push_back(best);
        ++r_.questions;
        r_.correct += best == q.answer;
        answer_logprob_ += s.mean_logprob[static_cast<std::size_t>(q.answer)];
        mse_[0] += s.key_error.mse(), mse_[1] += s.value_error.mse();
        mse_[2] += s.attention_error.mse(), mse_[3] += s.logits_error.mse();
        mae_[0] += s.key_error.mae(), mae_[1] += s.value_error.mae();
        mae_[2] += s.attention_error.mae(), mae_[3] += s.logits_error.mae();
        const double t = s.context_tokens;
        tokens_ += t;
        bits_[0] += s.key_size.average_bits * t, bits_[1] += s.value_size.average_bits * t;
        bpe_[0] += s.key_size.bits_per_element * t, bpe_[1] += s.value_size.bits_per_element * t;
        reference_bits_ += s.key_size.bits_per_element * s.key_size.elements +
                           s.value_size.bits_per_element * s.value_size.elements;
        elements_ += s.key_size.elements + s.value_size.elements;
        r_.bytes_key += s.key_size.bytes, r_.bytes_value += s.value_size.bytes;
        r_.bytes_fp16 += 2.0 * (s.key_size.elements + s.value_size.elements);
        r_.context_tokens += s.context_tokens;
        for (int c : s.choice_tokens) r_.choice_tokens += c;
    }

    evaluation_result finish() const {
        QAQ_CHECK(r_.questions > 0, "an evaluation needs at least one question");
        evaluation_result r = r_;
        const double n = static_cast<double>(r.questions);
        r.accuracy = static_cast<double>(r.correct) / n;
        r.accuracy_ci95 = 1.96 * std::sqrt(r.accuracy * (1.0 - r.accuracy) / n);
        r.answer_logprob = answer_logprob_ / n;
        r.mse_key = mse_[0] / n, r.mse_value = mse_[1] / n, r.mse_attention = mse_[2] / n, r.mse_logits = mse_[3] / n;
        r.mae_key = mae_[0] / n, r.mae_value = mae_[1] / n, r.mae_attention = mae_[2] / n, r.mae_logits = mae_[3] / n;
        if (tokens_ > 0) {
            r.average_bits_key = bits_[0] / tokens_, r.average_bits_value = bits_[1] / tokens_;
            r.bits_per_element_key = bpe_[0] / tokens_, r.bits_per_element_value = bpe_[1] / tokens_;
            r.bytes_per_token_key = r.bytes_key / tokens_, r.bytes_per_token_value = r.bytes_value / tokens_;
        }
        const double bytes = r.bytes_key + r.bytes_value;
        r.compression_ratio = bytes > 0 ? r.bytes_fp16 / bytes : 1.0;
        r.reference_compression_ratio = reference_bits_ > 0 ? 16.0 * elements_ / reference_bits_ : 1.0;
        return r;
    }

private:
    evaluation_result r_;
    double answer_logprob_ = 0.0, tokens_ = 0.0, reference_bits_ = 0.0, elements_ = 0.0;
    double mse_[4] = {0, 0, 0, 0}, mae_[4] = {0, 0, 0, 0}, bits_[2] = {0, 0}, bpe_[2] = {0, 0};
};

/// The questions an evaluation of `d` with (n, seed) uses, in sample order.
inline std::vector<const question*> sample(const dataset& d, std::int64_t n, std::uint64_t seed) {
    QAQ_CHECK(n >= 0, "question count n is ", n, "; expected >= 0 (0: all)");
    std::vector<const question*> out;
    for (std::size_t i : datasets::sample_questions(d.questions.size(), static_cast<std::size_t>(n), seed, d.name))
        out.push_back(&d.questions[i]);
    return out;
}

/// One evaluation of a job: its result, or why it failed.
struct evaluation_attempt {
    bool ok = false;
    evaluation_result result;
    std::string error;
};

/// Runs several evaluations over the same questions, question by question:
/// attempt i is the evaluation of pairs[i]. The scorer sees every pair of a
/// question at once (score_all), so it can share the full-precision work.
/// When score_all throws, the pairs are tried one by one on that question:
/// a pair that fails is reported with its error and dropped, the others go
/// on. `on_question` (optional) is called after each question.
inline std::vector<evaluation_attempt> evaluate_all(multiple_choice_scorer& scorer,
                                                    const std::vector<const question*>& questions,
                                                    const std::vector<quantizer_pair>& pairs,
                                                    const std::function<void()>& on_question = {}) {
    QAQ_CHECK(!pairs.empty(), "evaluate_all needs at least one quantizer pair");
    std::vector<result_accumulator> acc(pairs.size());
    std::vector<evaluation_attempt> out(pairs.size());
    std::vector<std::size_t> alive(pairs.size());
    for (std::size_t i = 0; i < pairs.size(); ++i) alive[i] = i;
    auto fail = [&](std::size_t i, const std::string& why) {
        out[i].error = why;
        alive.erase(std::find(alive.begin(), alive.end(), i));
    };
    for (const question* q : questions) {
        if (alive.empty()) break;
        std::vector<quantizer_pair> now;
        for (std::size_t i : alive) now.push_back(pairs[i]);
        std::vector<choice_scores> scores;
        bool together = true;
        try {
            scores = scorer.score_all(q->context, q->choices, now);
            QAQ_CHECK(scores.size() == now.size(), "question ", q->id, ": the scorer returned ", scores.size(),
                      " results for ", now.size(), " quantizer pairs");
        } catch (const std::exception&) {
            together = false;
        }
        const std::vector<std::size_t> current = alive;
        for (std::size_t k = 0; k < current.size(); ++k) {
            const std::size_t i = current[k];
            try {
                if (together) acc[i].add(*q, scores[k]);
                else acc[i].add(*q, scorer.score(q->context, q->choices, pairs[i].key, pairs[i].value));
            } catch (const std::exception& e) {
                fail(i, e.what());
            }
        }
        if (on_question) on_question();
    }
    for (std::size_t i : alive) {
        try {
            out[i].result = acc[i].finish();
            out[i].ok = true;
        } catch (const std::exception& e) {
            out[i].error = e.what();
        }
    }
    return out;
}

/// Runs one evaluation. `on_question` (optional) is called after each question.
inline evaluation_result evaluate(multiple_choice_scorer& scorer, const std::vector<const question*>& questions,
                                  const qaq::quantizer_config& key, const qaq::quantizer_config& value,
                                  const std::function<void()>& on_question = {}) {
    evaluation_attempt a = std::move(evaluate_all(scorer, questions, {quantizer_pair{key, value}}, on_question).front());
    if (!a.ok) throw qaq::error(a.error);
    return a.result;
}

}  // namespace qaq::eval
