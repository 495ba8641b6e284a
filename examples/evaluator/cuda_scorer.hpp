#pragma once
// qaq-eval's CUDA workers: the model scorer (model_scorer.hpp, prefill
// protocol) with its full-precision passes on a CUDA device
// (llama/cuda/cuda_model.hpp). Everything else is the CPU scorer's: the
// context's K/V come back from the device, are quantized and dequantized on
// the host by the same any_quantizer, and the dequantized caches go back to
// the device for the choices' continuations, so a CUDA worker and a CPU
// worker differ only by the forward pass (float32 on both).
//
// Each worker builds its own replica on its device, within the device spec's
// memory budget (cuda:0@40GiB; without @ the free memory when it starts).
// Only in builds with CUDA (QAQ_LLAMA_WITH_CUDA).

#include <memory>
#include <string>
#include <vector>

#include "evaluator/model_scorer.hpp"
#include "evaluator/workers.hpp"
#include "llama/cuda/cuda_model.hpp"
#include "qaq/error.hpp"

namespace qaq::eval {

class cuda_scoring_forward final : public scoring_forward {
public:
    cuda_scoring_forward(const llama::llama_model& host, const device_spec& d)
        : model_(host, llama::cuda_model_options{d.index, d.memory_bytes}) {}

    llama::prefill_result prefill(const std::vector<std::int32_t>& tokens, const llama::prefill_options& o) override {
        return model_.prefill(tokens, o);
    }
    std::vector<llama::prefill_result> continue_all(const std::vector<continuation>& jobs) override {
        std::vector<llama::cuda_kv_cache> caches;
        caches.reserve(jobs.size());
        for (const continuation& c : jobs) {
            caches.emplace_back(model_, c.keys.shape.tokens + static_cast<std::int64_t>(c.tokens->size()));
            caches.back().assign(c.keys, c.values);
        }
        std::vector<llama::cuda_extend_job> batch;
        for (std::size_t i = 0; i < jobs.size(); ++i)
            batch.push_back(llama::cuda_extend_job{jobs[i].tokens, &caches[i], jobs[i].options});
        return model_.extend_batch(batch);
    }
    std::string device() const override { return model_.device_name(); }

    llama::cuda_llama_model& model() noexcept { return model_; }

private:
    llama::cuda_llama_model model_;
};

/// Workers on CUDA devices sharing the host model (its weights are uploaded
/// once per worker, to the worker's device).
inline scorer_factory make_cuda_model_scorer_factory(std::shared_ptr<const loaded_model> model) {
    QAQ_CHECK(static_cast<bool>(model), "the CUDA scorer factory needs a model");
    return [model](const device_spec& d, int) -> std::unique_ptr<multiple_choice_scorer> {
        QAQ_CHECK(d.kind == device_spec::kind_t::cuda && d.index >= 0, "device ", d.text,
                  ": the CUDA scorer needs a cuda:N device");
        return std::make_unique<llama_scorer>(model, std::make_unique<cuda_scoring_forward>(model->model, d));
    };
}

}  // namespace qaq::eval
