#pragma once
// The per-element math of the CUDA forward pass (forward_kernels.cu), as
// QAQ_HOST_DEVICE functions: nvcc runs them inside the kernels, an ordinary
// C++ compiler runs them in tests/cuda/test_llama_scalar.cpp, which checks
// them against the CPU model's own functions (llama/model.hpp: rms_norm_row,
// rope_table + rotate_pairs, silu_gate, scaled_softmax). The arithmetic of the
// kernels is thereby checked on machines without a GPU.
//
// Plain C++ (no CUDA types); the C math functions (::expf, ::sqrtf, ::cos)
// exist on both sides. Results equal the CPU's within float rounding, not bit
// for bit: the kernels sum in another order, and the CPU's batched paths use
// Eigen's vectorized exp.

#include <math.h>

#include <cstdint>

#include "qaq/config.hpp"

namespace qaq::llama::cuda_scalar {

// ---- RMSNorm ----------------------------------------------------------------

/// 1 / sqrt(mean(x^2) + eps) of a row of n values whose squares sum to sum_squares.
QAQ_HOST_DEVICE float rms_inverse(float sum_squares, std::int64_t n, float eps) {
    return 1.0f / ::sqrtf(sum_squares / static_cast<float>(n) + eps);
}

/// One normalized element: x * weight * inverse (the CPU's order of the products).
QAQ_HOST_DEVICE float rms_normalized(float x, float weight, float inverse) { return x * weight * inverse; }

/// A whole row, serially (the kernel sums the squares with a block reduction).
QAQ_HOST_DEVICE void rms_norm_row(const float* x, const float* weight, float* out, std::int64_t n, float eps) {
    float sum = 0.0f;
    for (std::int64_t i = 0; i < n; ++i) sum += x[i] * x[i];
    const float inverse = rms_inverse(sum, n, eps);
    for (std::int64_t i = 0; i < n; ++i) out[i] = rms_normalized(x[i], weight[i], inverse);
}

// ---- RoPE (llama.cpp's NORM type: adjacent pairs) ---------------------------

/// cos and sin of position * inverse_frequency, in double and then rounded to
/// float, as the CPU's rope_table.
QAQ_HOST_DEVICE void rope_cos_sin(std::int64_t position, double inverse_frequency, float& cosine, float& sine) {
    const double angle = static_cast<double>(position) * inverse_frequency;
    cosine = static_cast<float>(::cos(angle));
    sine = static_cast<float>(::sin(angle));
}

/// Rotates the pair (a, b) = (x[2i], x[2i+1]) by the angle of (cosine, sine).
QAQ_HOST_DEVICE void rope_rotate_pair(float& a, float& b, float cosine, float sine) {
    const float x = a, y = b;
    a = x * cosine - y * sine;
    b = x * sine + y * cosine;
}

// ---- SwiGLU -------------------------------------------------------------------

/// silu(gate) * up = gate / (1 + e^-gate) * up.
QAQ_HOST_DEVICE float silu_gate(float gate, float up) { return gate / (1.0f + ::expf(-gate)) * up; }

// ---- Online softmax -------------------------------------------------------------

/// Running maximum and sum of exp(score - maximum) over a stream of scores:
/// the attention kernel's warps each keep one over their tokens and merge them;
/// log_sum_exp() gives the log-softmax normalizer of a logits column.
struct online_softmax {
    float maximum = -HUGE_VALF;
    float sum = 0.0f;

    QAQ_HOST_DEVICE void add(float score) {
        const float m = score > maximum ? score : maximum;
        sum = sum * ::expf(maximum - m) + ::expf(score - m);
        maximum = m;
    }
    /// The state of both streams together (order does not matter beyond rounding).
    QAQ_HOST_DEVICE void merge(const online_softmax& other) {
        if (other.sum == 0.0f) return;
        if (sum == 0.0f) {
            *this = other;
            return;
        }
        const float m = other.maximum > maximum ? other.maximum : maximum;
        sum = sum * ::expf(maximum - m) + other.sum * ::expf(other.maximum - m);
        maximum = m;
    }
    /// softmax of `score` among all scores added.
    QAQ_HOST_DEVICE float probability(float score) const { return ::expf(score - maximum) / sum; }
    /// log of the sum of exp(score) over all scores added.
    QAQ_HOST_DEVICE float log_sum_exp() const { return maximum + ::logf(sum); }
};

}  // namespace qaq::llama::cuda_scalar
