#pragma once
// qaq-llama's --device: "cpu" (the default) or "cuda:N", and the exact
// float32 forward on a CUDA device that generate, perplexity and bench run
// when given cuda:N (llama/cuda/cuda_model.hpp). In a build without CUDA
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

/// The CUDA forward keeps an exact float32 cache: quantized --kv specs stay on the CPU for now.
inline void require_exact_cache(const qaq::examples::kv_spec& spec, const device_choice& d) {
    QAQ_CHECK(!d.cuda || spec.exact, "--kv ", spec.text, " with --device ", d.text,
              ": quantized KV caches are not yet on cuda (the CUDA forward keeps an exact float32 cache); use "
              "--kv fp32 on cuda, or --device cpu for quantized caches");
}

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

}  // namespace qaq::llama
