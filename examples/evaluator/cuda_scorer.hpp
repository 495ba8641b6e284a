#pragma once
// qaq-eval's CUDA workers: the model scorer (model_scorer.hpp) with its
// full-precision passes on a CUDA device (llama/cuda/cuda_model.hpp). In the
// prefill protocol everything else is the CPU scorer's: the context's K/V
// come back from the device, are quantized and dequantized on the host by the
// same any_quantizer, and the dequantized caches go back to the device for the
// choices' continuations, so a CUDA worker and a CPU worker differ only by the
// forward pass (float32 on both). In the decode protocol each choice decodes
// over qaq's device cache (cuda_quantized_cache) on the worker's device.
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

/// The decode protocol on a CUDA device: qaq's device cache (cuda_quantized_cache).
class cuda_decoding_session final : public decoding_session {
public:
    cuda_decoding_session(llama::cuda_llama_model& model, const llama::prefill_result& context, std::int64_t capacity,
                          const qaq::quantizer_config& key, const qaq::quantizer_config& value)
        : model_(model), cache_(model, capacity, key, value) {
        cache_.prefill(context);
    }
    void decode(std::int32_t token, float* logits, std::vector<float>& attention) override {
        model_.decode(token, cache_, logits, &attention);
    }
    std::vector<float> dequantize(std::int64_t layer, qaq::cache_role role) override {
        return cache_.dequantize(layer, role);
    }
    qaq::kv_cache_byte_report bytes() override { return cache_.bytes(); }
    qaq::reference_accounting accounting(qaq::cache_role role) override { return cache_.accounting(role); }

private:
    llama::cuda_llama_model& model_;
    llama::cuda_quantized_cache cache_;
};

class cuda_scoring_forward final : public scoring_forward {
public:
    cuda_scoring_forward(const llama::llama_model& host, const device_spec& d)
        : host_(host), model_(host, llama::cuda_model_options{d.index, d.memory_bytes}) {}

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
    /// qaq's device cache where it can hold the pair; pairs with an fp16
    /// (unquantized) role, the normal codec or token/layer groups decode on the
    /// host model instead (the device cache has no such storage; their results
    /// are the CPU worker's).
    std::unique_ptr<decoding_session> start_decoding(const llama::prefill_result& context, std::int64_t capacity,
                                                     const qaq::quantizer_config& key,
                                                     const qaq::quantizer_config& value) override {
        if (on_device(key) && on_device(value))
            return std::make_unique<cuda_decoding_session>(model_, context, capacity, key, value);
        return std::make_unique<cpu_decoding_session>(host_, context, capacity, key, value);
    }
    std::string device() const override { return model_.device_name(); }

    llama::cuda_llama_model& model() noexcept { return model_; }

private:
    static bool on_device(const qaq::quantizer_config& c) {
        return c.enabled && c.codec != qaq::codec_kind::normal &&
               (c.level == qaq::group_level::head || c.level == qaq::group_level::sub_head);
    }

    const llama::llama_model& host_;
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
