#pragma once
// Memory the device cache owns besides device_buffer (device_api.cuh):
// page-locked host memory (the full-precision copy and staging, so copies are
// asynchronous DMA) and a reusable event; and the one growth rule for device
// arrays that must keep their contents.

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <utility>

#include "qaq/backend/cuda/cuda_check.cuh"
#include "qaq/backend/cuda/device_api.cuh"
#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN
namespace cuda {

/// Page-locked host memory (cudaHostAlloc / cudaFreeHost); move-only.
class pinned_buffer {
public:
    pinned_buffer() = default;
    explicit pinned_buffer(std::size_t bytes) : bytes_(bytes) {
        if (bytes > 0) QAQ_CUDA_CHECK(cudaHostAlloc(&data_, bytes, cudaHostAllocDefault));
    }
    pinned_buffer(const pinned_buffer&) = delete;
    pinned_buffer& operator=(const pinned_buffer&) = delete;
    pinned_buffer(pinned_buffer&& other) noexcept
        : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
    pinned_buffer& operator=(pinned_buffer&& other) noexcept {
        if (this != &other) {
            release();
            data_ = std::exchange(other.data_, nullptr);
            bytes_ = std::exchange(other.bytes_, 0);
        }
        return *this;
    }
    ~pinned_buffer() { release(); }

    void* data() const noexcept { return data_; }
    template <class T>
    T* as() const noexcept {
        return static_cast<T*>(data_);
    }
    std::size_t bytes() const noexcept { return bytes_; }

    /// At least `bytes` (contents not kept); the caller makes sure no copy still reads or writes it.
    void reserve(std::size_t bytes) {
        if (bytes > bytes_) *this = pinned_buffer(bytes);
    }

private:
    void release() noexcept {
        if (data_ != nullptr) (void)cudaFreeHost(data_);
        data_ = nullptr;
        bytes_ = 0;
    }
    void* data_ = nullptr;
    std::size_t bytes_ = 0;
};

/// A CUDA event (timing off), for "has the device finished reading this staging memory".
class cuda_event {
public:
    cuda_event() { QAQ_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
    cuda_event(const cuda_event&) = delete;
    cuda_event& operator=(const cuda_event&) = delete;
    cuda_event(cuda_event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
    cuda_event& operator=(cuda_event&& other) noexcept {
        if (this != &other) {
            if (event_ != nullptr) (void)cudaEventDestroy(event_);
            event_ = std::exchange(other.event_, nullptr);
        }
        return *this;
    }
    ~cuda_event() {
        if (event_ != nullptr) (void)cudaEventDestroy(event_);
    }
    void record(cudaStream_t stream) { QAQ_CUDA_CHECK(cudaEventRecord(event_, stream)); }
    void wait() const { QAQ_CUDA_CHECK(cudaEventSynchronize(event_)); }

private:
    cudaEvent_t event_ = nullptr;
};

namespace detail {

/// Grows `buffer` to at least `bytes` (by half its size at least, so n appends
/// cost O(log n) reallocations), keeping its first `keep` bytes. The old
/// buffer is released only after the stream has finished with it.
inline void grow_keeping(device_buffer& buffer, std::size_t bytes, std::size_t keep, cudaStream_t stream) {
    if (buffer.bytes() >= bytes) return;
    device_buffer bigger(std::max(bytes, buffer.bytes() + buffer.bytes() / 2));
    keep = std::min(keep, buffer.bytes());
    if (keep > 0) QAQ_CUDA_CHECK(cudaMemcpyAsync(bigger.data(), buffer.data(), keep, cudaMemcpyDeviceToDevice, stream));
    QAQ_CUDA_CHECK(cudaStreamSynchronize(stream));
    buffer = std::move(bigger);
}

/// At least `bytes` of scratch whose contents need not survive (waits for the stream first).
inline void reserve_scratch(device_buffer& buffer, std::size_t bytes, cudaStream_t stream) {
    if (buffer.bytes() >= bytes) return;
    QAQ_CUDA_CHECK(cudaStreamSynchronize(stream));
    buffer = device_buffer(std::max(bytes, buffer.bytes() + buffer.bytes() / 2));
}

}  // namespace detail
}  // namespace cuda
QAQ_NAMESPACE_END
