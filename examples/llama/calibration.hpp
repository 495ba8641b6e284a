#pragma once
// The key formula's q_norm from a model (QAQ-METHOD section 5: the paper takes
// the upper 10% quantile of the squared query norm over a calibration run).
//
// q_norm = the 90th percentile of |q|^2 / head_dim — the squared norm of the
// query as the softmax sees it, q / sqrt(D) — over every layer, head and
// position of full-precision prefills of the calibration sequences.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "llama/model.hpp"
#include "qaq/error.hpp"

namespace qaq::llama {

inline double calibrate_q_norm(const llama_model& model, const std::vector<std::vector<std::int32_t>>& sequences) {
    std::vector<float> norms;
    for (const auto& tokens : sequences) {
        if (tokens.empty()) continue;
        prefill_options o;
        o.keep_query_norms = true;
        o.logits_from = static_cast<std::int64_t>(tokens.size());  // no logits needed
        const prefill_result r = model.prefill(tokens, o);
        norms.insert(norms.end(), r.query_norms.begin(), r.query_norms.end());
    }
    QAQ_CHECK(!norms.empty(), "q_norm calibration needs at least one non-empty token sequence");
    const std::size_t k = static_cast<std::size_t>(0.9 * static_cast<double>(norms.size() - 1));
    std::nth_element(norms.begin(), norms.begin() + static_cast<std::ptrdiff_t>(k), norms.end());
    return static_cast<double>(norms[k]) / static_cast<double>(model.config().head_dim);
}

inline double calibrate_q_norm(const llama_model& model, const std::vector<std::int32_t>& tokens) {
    return calibrate_q_norm(model, std::vector<std::vector<std::int32_t>>{tokens});
}

}  // namespace qaq::llama
