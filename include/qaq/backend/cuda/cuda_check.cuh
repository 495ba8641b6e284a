#pragma once
// CUDA runtime errors at the two kinds of boundary: device entry points
// translate cudaError_t into qaq::status (they never throw), host wrappers
// turn a failure into qaq::error with the runtime's own message.

#include <cuda_runtime_api.h>

#include <string>

#include "qaq/config.hpp"
#include "qaq/error.hpp"

QAQ_NAMESPACE_BEGIN
namespace cuda {

/// The qaq::status a CUDA runtime error maps to.
inline status to_status(cudaError_t e) noexcept {
    switch (e) {
        case cudaSuccess: return status::success;
        case cudaErrorMemoryAllocation: return status::out_of_memory;
        case cudaErrorInvalidValue:
        case cudaErrorInvalidDevicePointer:
        case cudaErrorInvalidConfiguration: return status::invalid_argument;
        case cudaErrorNoKernelImageForDevice:
        case cudaErrorUnsupportedPtxVersion:
        case cudaErrorInsufficientDriver:
        case cudaErrorNoDevice: return status::not_supported;
        default: return status::device_error;
    }
}

/// Throws qaq::error("<context>: <CUDA message> (<error name>)") unless `e` is cudaSuccess.
inline void throw_if_failed(cudaError_t e, const std::string& context) {
    if (e != cudaSuccess)
        throw error(context + ": " + cudaGetErrorString(e) + " (" + cudaGetErrorName(e) + ")");
}

/// Number of usable CUDA devices; 0 (never an exception) when there is no
/// device or no driver, with the runtime's reason in `reason`.
inline int device_count(std::string* reason = nullptr) noexcept {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        if (reason) *reason = cudaGetErrorString(e);
        (void)cudaGetLastError();  // the failed query must not poison later calls
        return 0;
    }
    if (count == 0 && reason) *reason = "no CUDA device";
    return count;
}

}  // namespace cuda
QAQ_NAMESPACE_END

/// In a function returning qaq::status: returns the status of a failed CUDA call.
#define QAQ_CUDA_TRY(call)                                                   \
    do {                                                                     \
        const cudaError_t qaq_cuda_error_ = (call);                          \
        if (qaq_cuda_error_ != cudaSuccess) return ::qaq::cuda::to_status(qaq_cuda_error_); \
    } while (0)

/// In host code: throws qaq::error naming the call and the CUDA message.
#define QAQ_CUDA_CHECK(call) ::qaq::cuda::throw_if_failed((call), #call)
