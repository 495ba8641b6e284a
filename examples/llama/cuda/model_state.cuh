#pragma once
// What the CUDA forward's translation units share (cuda_model.cu: weights and
// the batched forward; cuda_decode.cu: one token through qaq's device cache):
// the device memory account, counted device arrays, cuBLAS error checks and
// the state behind cuda_llama_model and cuda_kv_cache. Internal to
// examples/llama/cuda/; programs use cuda_model.hpp.

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "llama/cuda/cuda_model.hpp"
#include "llama/cuda/forward_kernels.cuh"
#include "qaq/backend/cuda/cuda_check.cuh"
#include "qaq/error.hpp"

namespace qaq::llama {
namespace cuda_detail {

inline void check_cublas(cublasStatus_t s, const char* call) {
    if (s != CUBLAS_STATUS_SUCCESS)
        throw qaq::error(std::string(call) + ": " + cublasGetStatusString(s) + " (" + cublasGetStatusName(s) + ")");
}
#define QAQ_CUBLAS_CHECK(call) ::qaq::llama::cuda_detail::check_cublas((call), #call)

inline std::string format_bytes(std::int64_t bytes) {
    char buffer[64];
    const double b = static_cast<double>(bytes);
    if (b >= 1073741824.0) std::snprintf(buffer, sizeof buffer, "%.2f GiB", b / 1073741824.0);
    else std::snprintf(buffer, sizeof buffer, "%.1f MiB", b / 1048576.0);
    return buffer;
}

/// The device bytes of one model and its caches, against its budget.
class memory_account {
public:
    memory_account(std::string device, std::int64_t budget) : device_(std::move(device)), budget_(budget) {}

    void reserve(std::int64_t bytes, const std::string& what) {
        std::lock_guard<std::mutex> lock(mutex_);
        QAQ_CHECK(in_use_ + bytes <= budget_, device_, ": ", what, " need ", format_bytes(bytes), " more, but ",
                  format_bytes(in_use_), " of the memory budget ", format_bytes(budget_),
                  " are already in use (weights, buffers and caches); give the device a larger budget "
                  "(e.g. cuda:0@40GiB) or use shorter batches");
        in_use_ += bytes;
    }
    void release(std::int64_t bytes) noexcept {
        std::lock_guard<std::mutex> lock(mutex_);
        in_use_ -= bytes;
    }
    std::int64_t in_use() const noexcept {
        std::lock_guard<std::mutex> lock(mutex_);
        return in_use_;
    }
    std::int64_t budget() const noexcept { return budget_; }
    const std::string& device() const noexcept { return device_; }

private:
    std::string device_;
    std::int64_t budget_;
    std::int64_t in_use_ = 0;
    mutable std::mutex mutex_;
};

/// cudaMalloc'ed memory counted in a memory_account; move-only.
class device_array {
public:
    device_array() = default;
    device_array(std::shared_ptr<memory_account> account, std::int64_t bytes, const std::string& what)
        : account_(std::move(account)) {
        account_->reserve(bytes, what);
        const cudaError_t e = cudaMalloc(&data_, static_cast<std::size_t>(std::max<std::int64_t>(bytes, 1)));
        if (e != cudaSuccess) {
            account_->release(bytes);
            (void)cudaGetLastError();
            throw qaq::error(account_->device() + ": cudaMalloc of " + format_bytes(bytes) + " for " + what + ": " +
                             cudaGetErrorString(e) + " (" + cudaGetErrorName(e) + ")");
        }
        bytes_ = bytes;
    }
    device_array(device_array&& o) noexcept
        : account_(std::move(o.account_)), data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
    device_array& operator=(device_array&& o) noexcept {
        if (this != &o) {
            release();
            account_ = std::move(o.account_);
            data_ = std::exchange(o.data_, nullptr);
            bytes_ = std::exchange(o.bytes_, 0);
        }
        return *this;
    }
    device_array(const device_array&) = delete;
    device_array& operator=(const device_array&) = delete;
    ~device_array() { release(); }

    template <class T = float>
    T* as() const noexcept {
        return static_cast<T*>(data_);
    }
    std::int64_t bytes() const noexcept { return bytes_; }

    /// At least `bytes` (contents not kept): a buffer that grows with the batches.
    void ensure(const std::shared_ptr<memory_account>& account, std::int64_t bytes, const std::string& what) {
        if (bytes <= bytes_ && data_) return;
        release();
        *this = device_array(account, bytes + bytes / 4, what);  // headroom: fewer regrowths
    }

private:
    void release() noexcept {
        if (data_) {
            (void)cudaFree(data_);
            account_->release(bytes_);
        }
        data_ = nullptr;
        bytes_ = 0;
    }

    std::shared_ptr<memory_account> account_;
    void* data_ = nullptr;
    std::int64_t bytes_ = 0;
};

inline int as_int(std::int64_t v, const char* what) {
    QAQ_CHECK(v >= 0 && v <= INT_MAX, what, " is ", v, "; cuBLAS takes at most ", INT_MAX);
    return static_cast<int>(v);
}


}  // namespace cuda_detail

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

struct cuda_llama_model::state {
    struct layer {
        cuda_detail::device_array attention_norm, ffn_norm, q, k, v, o, gate, up, down;
    };

    llama_config config;
    int device = 0;
    std::string name;
    std::shared_ptr<cuda_detail::memory_account> account;
    cudaStream_t stream = nullptr;
    cublasHandle_t blas = nullptr;
    std::int64_t weight_bytes = 0;

    cuda_detail::device_array embeddings, output, output_norm, inverse_frequencies;
    std::vector<layer> layers;

    // Buffers sized by the largest batch so far.
    cuda_detail::device_array x, h, q, k, v, att, gate, up, tokens, columns, sequences, scores, attention_rows, query_norms;
    cuda_detail::device_array logit_columns, normed, logits, targets, log_probabilities;

    std::mutex mutex;  // one forward pass at a time (the buffers above are shared)

    const float* output_matrix() const { return config.tied_embeddings ? embeddings.as() : output.as(); }

    ~state() {
        if (blas) (void)cublasDestroy(blas);
        if (stream) (void)cudaStreamDestroy(stream);
    }

    void use_device() const { QAQ_CUDA_CHECK(cudaSetDevice(device)); }
    void synchronize() const { QAQ_CUDA_CHECK(cudaStreamSynchronize(stream)); }

    template <class T>
    void upload(cuda_detail::device_array& a, const std::vector<T>& host, const std::string& what) {
        a.ensure(account, static_cast<std::int64_t>(sizeof(T) * std::max<std::size_t>(host.size(), 1)), what);
        if (!host.empty())
            QAQ_CUDA_CHECK(cudaMemcpyAsync(a.as<void>(), host.data(), sizeof(T) * host.size(), cudaMemcpyHostToDevice, stream));
    }

    /// Y [rows x n] = W X (+ Y when accumulate), W [rows x cols] row-major on the
    /// device (= column-major [cols x rows]), X [cols x n], all float32.
    void multiply(const float* W, std::int64_t rows, std::int64_t cols, const float* X, std::int64_t n, float* Y,
                  bool accumulate) const {
        const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
        const int m = cuda_detail::as_int(rows, "matrix rows"), k = cuda_detail::as_int(cols, "matrix columns");
        QAQ_CUBLAS_CHECK(cublasSgemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, m, cuda_detail::as_int(n, "batch columns"), k, &one, W,
                                     k, X, k, &beta, Y, m));
    }
};

struct cuda_kv_cache::state {
    const cuda_llama_model::state* owner = nullptr;
    cuda_detail::device_array keys, values;
    std::int64_t layers = 0, kv_heads = 0, head_dim = 0, capacity = 0, tokens = 0;
};

}  // namespace qaq::llama
