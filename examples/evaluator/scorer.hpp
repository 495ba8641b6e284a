#pragma once
// The model behind the evaluator: one zero-shot multiple-choice question at a
// time, under one pair of quantizers (QAQ-METHOD section 9).
//
// score(context, choices, key, value) must, for one question:
//  1. run the context (prefill) in full precision, keeping its K/V cache
//     [L,1,H,T,D] and attention rows [L,1,Hq,T,T], and the logits at the last
//     context position;
//  2. quantize both caches of the context tokens (key and value configs; a
//     disabled config is an FP16 cache);
//  3. for each choice, run its tokens on the quantized cache and, for the
//     error metrics, also on the full-precision cache;
//  4. mean_logprob[i] = mean over choice i's tokens of log p(token): the first
//     token from the full-precision logits at the last context position, the
//     others from the quantized run;
//  5. fill the error and size fields below.
// The text scored for choice i is exactly context + choices[i] (each choice
// carries its leading separator). The evaluator picks the arg-max (first on
// ties) and aggregates; it never sees the answer's index here.
//
// A scorer is used by one thread at a time; each worker owns one (its own
// model replica, built by a scorer_factory on its device).

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "evaluator/question.hpp"
#include "qaq/error.hpp"
#include "qaq/quantizer_config.hpp"

namespace qaq::eval {

/// Sums for the mean squared (and mean absolute) difference of two tensors.
struct error_sum {
    double squared = 0.0;   ///< sum of (a - b)^2
    double absolute = 0.0;  ///< sum of |a - b|
    double count = 0.0;     ///< elements compared

    void add(const float* a, const float* b, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) {
            const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
            squared += d * d;
            absolute += std::abs(d);
        }
        count += static_cast<double>(n);
    }
    void add(const error_sum& o) {
        squared += o.squared, absolute += o.absolute, count += o.count;
    }
    double mse() const noexcept { return count > 0 ? squared / count : 0.0; }
    double mae() const noexcept { return count > 0 ? absolute / count : 0.0; }
};

/// Size of one quantized cache (keys or values) of the context tokens.
struct cache_size {
    double elements = 0.0;          ///< values held: L x H x T x D
    double average_bits = 16.0;     ///< reference accounting (QAQ-METHOD 7): mean width x (1 - a) + 16 a
    double bits_per_element = 16.0; ///< reference accounting, + 16 x parameters / group size
    double bytes = 0.0;             ///< real packed bytes that hold data (qaq::byte_report::used())
};

struct choice_scores {
    std::vector<double> mean_logprob;  ///< per choice (required)
    std::vector<int> choice_tokens;    ///< per choice: tokens scored (optional; reports only)
    int context_tokens = 0;            ///< T: tokens whose cache was quantized (weights bits and sizes)

    error_sum key_error;        ///< dequantized K vs K over the context positions, all layers/heads/dims
    error_sum value_error;      ///< the same for V
    error_sum attention_error;  ///< attention rows of the choice tokens over the context positions
    error_sum logits_error;     ///< logits at the choice positions: quantized vs full-precision run

    cache_size key_size, value_size;
};

/// One key/value quantizer pair.
struct quantizer_pair {
    qaq::quantizer_config key, value;
};

class multiple_choice_scorer {
public:
    virtual ~multiple_choice_scorer() = default;
    virtual choice_scores score(const std::string& context, const std::vector<std::string>& choices,
                                const qaq::quantizer_config& key, const qaq::quantizer_config& value) = 0;

    /// Which protocol the following calls run: "prefill" (QAQ-METHOD section
    /// 9: the context's cache quantized once, each choice run as one batch
    /// over it) or "decode" (the context's cache quantized, then each choice
    /// decoded token by token over the packed cache, observing attention and
    /// rebalancing after every token: the generation-time protocol of section
    /// 8). A scorer that cannot run a protocol refuses it here.
    virtual void set_protocol(const std::string& protocol) {
        QAQ_CHECK(protocol == "prefill", "protocol \"", protocol, "\": this scorer runs only the prefill protocol");
    }

    /// The same question under several pairs: element i equals
    /// score(context, choices, pairs[i].key, pairs[i].value). A scorer that
    /// can share work between pairs (the model's full-precision pass, batched
    /// products) overrides it; the default asks score() once per pair.
    virtual std::vector<choice_scores> score_all(const std::string& context, const std::vector<std::string>& choices,
                                                 const std::vector<quantizer_pair>& pairs) {
        std::vector<choice_scores> out;
        out.reserve(pairs.size());
        for (const quantizer_pair& p : pairs) out.push_back(score(context, choices, p.key, p.value));
        return out;
    }
};

/// Identifies the model in result-cache keys.
struct model_identity {
    std::string name;    ///< e.g. the GGUF file name, or "fake"
    std::string sha256;  ///< of the model file (or of the fake scorer's parameters)
};

struct device_spec;  // workers.hpp

/// Builds one scorer (a model replica) for a worker on `device`.
/// `worker` numbers the workers of this process from 0.
using scorer_factory = std::function<std::unique_ptr<multiple_choice_scorer>(const device_spec& device, int worker)>;

}  // namespace qaq::eval
