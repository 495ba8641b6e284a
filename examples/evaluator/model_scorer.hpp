#pragma once
// The wiring point between qaq-eval and a real model (the LLaMA runner in
// examples/llama/, being written). Until it lands, `--scorer model` stops
// with a clear error; everything else in qaq-eval works with `--scorer fake`.
//
// What an implementation of multiple_choice_scorer over the runner does for
// score(context, choices, key, value) (QAQ-METHOD section 9, scorer.hpp):
//   1. tokens = tokenizer.encode(context) (with BOS as the model expects);
//      choice_tokens[i] = encode(context + choices[i]) minus the context's
//      tokens (the original: tokenize the concatenation, subtract the
//      context's length), so merges across the boundary match the original.
//   2. Batched prefill of the context: per-layer K and V [L,1,H,T,D],
//      attention [L,1,Hq,T,T], logits at the last position.
//   3. Quantize: qaq::any_quantizer(key).quantize(K, attention) and the same
//      for V (any group level), dequantize into float caches; fill key_size /
//      value_size from packed.bytes().used(), any_quantizer::accounting() and
//      the element count, and key_error / value_error from K vs dequantized K.
//      (For head / sub_head levels the decode-time cache
//      qaq::quantized_kv_cache<dynamic_quantizer, dynamic_quantizer>::prefill
//      gives the same codes and can attend straight over them.)
//   4. For each choice: run its tokens over the dequantized cache and over
//      the exact cache (the choice tokens' own K/V stay full precision, as in
//      the original); mean_logprob[i] = (log p(first token | exact logits at
//      the last context position) + sum of the quantized run's log p of the
//      other tokens) / choice length; attention_error over the attention rows
//      of the choice tokens restricted to the context positions;
//      logits_error over the choice positions' logits.
//   5. context_tokens = T; choice_tokens[i] = lengths.
// The factory builds one model replica per worker (device cpu: the runner's
// CPU forward pass; cuda: not available in this build) and the identity is
// {file name, sha256 of the GGUF file}.
//
// The key formula's q_norm (upper 10% quantile of the squared query norm) is
// model-specific: a calibration pass over a few questions should report it
// (qaq-eval takes it with --q-norm).

#include <string>

#include "evaluator/datasets/registry.hpp"
#include "evaluator/scorer.hpp"
#include "evaluator/sha256.hpp"
#include "evaluator/workers.hpp"
#include "qaq/error.hpp"

namespace qaq::eval {

struct model_scorer_options {
    std::string model_path;  ///< GGUF file
};

inline model_identity model_identity_of(const std::string& path) {
    return {datasets::basename_of(path), file_sha256(path)};
}

inline scorer_factory make_model_scorer_factory(const model_scorer_options& options) {
    QAQ_CHECK(!options.model_path.empty(), "--scorer model needs --model FILE (a GGUF file)");
    throw qaq::error("the model scorer is not wired yet: the LLaMA runner (examples/llama) is still being written; "
                     "examples/evaluator/model_scorer.hpp describes what it must implement. Use --scorer fake to "
                     "exercise the evaluator meanwhile");
}

}  // namespace qaq::eval
