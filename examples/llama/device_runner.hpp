#pragma once
// qaq-llama's --device: "cpu" (the default) or "cuda:N"; the float32 forward
// on a CUDA device that generate, perplexity and bench run when given cuda:N
// (llama/cuda/cuda_model.hpp) over the exact cache (cuda_runner) or qaq's
// device cache (quantized_sequence, which is the CPU cache on --device cpu). In a build without CUDA
// (QAQ_LLAMA_WITH_CUDA undefined) parse_device refuses cuda:N with a message
// that says so, and nothing CUDA is compiled.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/kv_spec.hpp"
#include "llama/model.hpp"
#include "qaq/error.hpp"

#if defined(QAQ_LLAMA_WITH_CUDA)
#include "llama/cuda/cuda_model.hpp"
#endif

namespace qaq::llama {

struct device_choice {
    bool cuda = false;
    int index = 0;
    std::string text = "cpu";
};

inline device_choice parse_device(const std::string& text) {
    device_choice d;
    d.text = text;
    if (text == "cpu") return d;
    const std::string prefix = "cuda:";
    const std::string index = text.rfind(prefix, 0) == 0 ? text.substr(prefix.size()) : std::string();
    QAQ_CHECK(!index.empty() && index.size() <= 6 && index.find_first_not_of("0123456789") == std::string::npos,
              "--device ", text, ": expected cpu or cuda:N (e.g. cuda:0)");
#if !defined(QAQ_LLAMA_WITH_CUDA)
    throw qaq::error("--device " + text +
                     ": this qaq-llama was built without CUDA (configure with -DQAQ_ENABLE_CUDA=ON where the CUDA "
                     "toolkit is installed); use --device cpu");
#else
    d.cuda = true;
    d.index = std::stoi(index);
    return d;
#endif
}

/// What qaq's CUDA cache cannot hold, refused before any work: fp16
/// (unquantized) roles and the normal codec run on the CPU cache only.
inline void require_cuda_cache(const qaq::examples::kv_spec& spec, const device_choice& d) {
    if (!d.cuda || spec.exact) return;
    for (const qaq::quantizer_config* c : {&spec.keys, &spec.values}) {
        QAQ_CHECK(c->enabled, "--kv ", spec.text, " with --device ", d.text,
                  ": an fp16 (unquantized) role has no CUDA cache; use --kv fp32, a quantized spec, or --device cpu");
        QAQ_CHECK(c->codec != qaq::codec_kind::normal, "--kv ", spec.text, " with --device ", d.text,
                  ": the normal codec has no CUDA kernels; use codec=zero-point or codec=mean-centred, or --device cpu");
    }
}

class cuda_runner;

#if defined(QAQ_LLAMA_WITH_CUDA)

/// One sequence on a CUDA device: prefill, then one token at a time, each an
/// extend of the device cache (the batched pass with one column).
class cuda_runner {
public:
    cuda_runner(const llama_model& host, const device_choice& d)
        : model_(std::make_unique<cuda_llama_model>(host, cuda_model_options{d.index, 0})) {}

    cuda_llama_model& model() noexcept { return *model_; }

    /// Starts a sequence of at most `capacity` tokens with `prompt`; logits of its last position.
    void start(const std::vector<std::int32_t>& prompt, std::int64_t capacity, std::vector<float>& logits) {
        cache_ = std::make_unique<cuda_kv_cache>(*model_, capacity);
        logits = model_->extend(prompt, *cache_).logits;
    }
    /// Appends `token`; logits of its position.
    void step(std::int32_t token, std::vector<float>& logits) {
        QAQ_CHECK(cache_ != nullptr, "cuda_runner::step before start");
        logits = model_->extend(std::vector<std::int32_t>{token}, *cache_).logits;
    }
    std::int64_t tokens() const noexcept { return cache_ ? cache_->tokens() : 0; }

private:
    std::unique_ptr<cuda_llama_model> model_;
    std::unique_ptr<cuda_kv_cache> cache_;
};

#endif

/// qaq's cache of one sequence on the chosen device: the CPU runner's
/// quantized_decode_cache, or cuda_quantized_cache on `gpu`'s device.
class quantized_sequence {
public:
    quantized_sequence(const llama_model& model, std::int64_t capacity, const qaq::examples::kv_spec& spec,
                       cuda_runner* gpu = nullptr)
        : model_(model) {
#if defined(QAQ_LLAMA_WITH_CUDA)
        if (gpu) {
            gpu_ = &gpu->model();
            device_ = std::make_unique<cuda_quantized_cache>(*gpu_, capacity, spec.keys, spec.values);
            return;
        }
#else
        QAQ_CHECK(gpu == nullptr, "a CUDA runner in a build without CUDA");
#endif
        host_ = std::make_unique<quantized_decode_cache>(model.config(), capacity, spec.keys, spec.values);
    }

    /// An exact prefill of `tokens` (keys, values and the last `attention_rows`
    /// rows kept) quantized into the empty cache; its logits are the result's.
    prefill_result prefill(const std::vector<std::int32_t>& tokens, std::int64_t attention_rows) {
        prefill_options po;
        po.keep_kv = true;
        po.attention_rows = attention_rows;
#if defined(QAQ_LLAMA_WITH_CUDA)
        if (device_) {
            prefill_result r = gpu_->prefill(tokens, po);
            device_->prefill(r);
            return r;
        }
#endif
        prefill_result r = model_.prefill(tokens, po);
        host_->prefill(r);
        return r;
    }
    /// One token through the cache (append, attend over the codes, observe,
    /// rebalance); the next-token logits into `logits` unless null.
    void decode(std::int32_t token, float* logits) {
#if defined(QAQ_LLAMA_WITH_CUDA)
        if (device_) return gpu_->decode(token, *device_, logits);
#endif
        model_.decode(token, *host_, logits);
    }
    std::int64_t tokens() const {
#if defined(QAQ_LLAMA_WITH_CUDA)
        if (device_) return device_->tokens();
#endif
        return host_->tokens();
    }
    qaq::kv_cache_byte_report bytes() {
#if defined(QAQ_LLAMA_WITH_CUDA)
        if (device_) return device_->bytes();
#endif
        return host_->cache().bytes();
    }
    qaq::reference_accounting accounting(qaq::cache_role role) {
#if defined(QAQ_LLAMA_WITH_CUDA)
        if (device_) return device_->accounting(role);
#endif
        return host_->cache().accounting(role);
    }
    const qaq::rebalance_counters& last_rebalance() const {
#if defined(QAQ_LLAMA_WITH_CUDA)
        if (device_) return device_->last_rebalance();
#endif
        return host_->last_rebalance();
    }

private:
    const llama_model& model_;
    std::unique_ptr<quantized_decode_cache> host_;
#if defined(QAQ_LLAMA_WITH_CUDA)
    cuda_llama_model* gpu_ = nullptr;
    std::unique_ptr<cuda_quantized_cache> device_;
#endif
};

}  // namespace qaq::llama
