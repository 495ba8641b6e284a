#pragma once
// Dot products and weighted sums straight over packed codes, for attention.
//
// For widths that divide a byte (1, 2, 4, 8) an 8-byte word of LSB-first
// codes splits into 8 / W "planes" with one mask and shift each: plane k holds
// codes k, p + k, 2p + k, ... (p = 8 / W codes per byte). A dot product does
// not care about order, so the query is permuted into plane order once per
// call (`to_plane_order`) and every token's codes are then consumed plane by
// plane with contiguous vector operations — no per-element shuffles. Weighted
// sums accumulate in plane order and are permuted back once at the end.
//
// With AVX2 + FMA (e.g. -march=x86-64-v3) the planes are widened to float
// eight lanes at a time; otherwise a scalar loop computes the same sums.

#include <cstdint>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define QAQ_CODE_KERNELS_AVX2 1
#else
#define QAQ_CODE_KERNELS_AVX2 0
#endif

#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN
namespace backend::kernels {

/// True when width W has a plane kernel and n codes fill whole 8-byte words.
inline bool has_plane_kernel(int width, std::int64_t n) noexcept {
    return (width == 1 || width == 2 || width == 4 || width == 8) && n % (64 / width) == 0;
}

/// Codes per 8-byte word at width W.
constexpr std::int64_t codes_per_word(int width) noexcept { return 64 / width; }

/// Position in plane order of code i (width W divides 8).
inline std::int64_t plane_position(std::int64_t i, int width) noexcept {
    const std::int64_t per_byte = 8 / width, block = codes_per_word(width);
    const std::int64_t word = i / block, within = i % block;
    const std::int64_t byte = within / per_byte, plane = within % per_byte;
    return word * block + plane * 8 + byte;
}

/// out[plane_position(i)] = in[i] for n values.
inline void to_plane_order(const float* in, std::int64_t n, int width, float* out) noexcept {
    for (std::int64_t i = 0; i < n; ++i) out[plane_position(i, width)] = in[i];
}

/// out[i] = in[plane_position(i)] for n values.
inline void from_plane_order(const float* in, std::int64_t n, int width, float* out) noexcept {
    for (std::int64_t i = 0; i < n; ++i) out[i] = in[plane_position(i, width)];
}

namespace detail {
template <int W>
inline std::uint64_t plane(std::uint64_t word, int k) noexcept {
    constexpr std::uint64_t byte_mask = (W == 8) ? 0xFFull : ((1ull << W) - 1u);
    constexpr std::uint64_t mask = byte_mask * 0x0101010101010101ull;
    return (word >> (k * W)) & mask;
}
}  // namespace detail

/// sum_j q_plane[j] * code_plane[j] over n codes of width W (plane order).
template <int W>
inline float dot_codes(const std::uint8_t* codes, const float* q_plane, std::int64_t n) noexcept {
    constexpr int planes = 8 / W;
    const std::int64_t words = n / codes_per_word(W);
#if QAQ_CODE_KERNELS_AVX2
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (std::int64_t w = 0; w < words; ++w) {
        std::uint64_t word;
        std::memcpy(&word, codes + 8 * w, 8);
        const float* q = q_plane + w * codes_per_word(W);
        for (int k = 0; k < planes; ++k) {
            const __m128i bytes = _mm_cvtsi64_si128(static_cast<long long>(detail::plane<W>(word, k)));
            const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
            if (k & 1) acc1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(q + 8 * k), acc1);
            else acc0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(q + 8 * k), acc0);
        }
    }
    const __m256 acc = _mm256_add_ps(acc0, acc1);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
#else
    float acc = 0.0f;
    for (std::int64_t w = 0; w < words; ++w) {
        std::uint64_t word;
        std::memcpy(&word, codes + 8 * w, 8);
        const float* q = q_plane + w * codes_per_word(W);
        for (int k = 0; k < planes; ++k) {
            const std::uint64_t p = detail::plane<W>(word, k);
            for (int b = 0; b < 8; ++b) acc += q[8 * k + b] * static_cast<float>((p >> (8 * b)) & 0xFFu);
        }
    }
    return acc;
#endif
}

/// acc_plane[j] += a * code_plane[j] over n codes of width W (plane order).
template <int W>
inline void axpy_codes(const std::uint8_t* codes, float a, float* acc_plane, std::int64_t n) noexcept {
    constexpr int planes = 8 / W;
    const std::int64_t words = n / codes_per_word(W);
#if QAQ_CODE_KERNELS_AVX2
    const __m256 av = _mm256_set1_ps(a);
    for (std::int64_t w = 0; w < words; ++w) {
        std::uint64_t word;
        std::memcpy(&word, codes + 8 * w, 8);
        float* out = acc_plane + w * codes_per_word(W);
        for (int k = 0; k < planes; ++k) {
            const __m128i bytes = _mm_cvtsi64_si128(static_cast<long long>(detail::plane<W>(word, k)));
            const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
            _mm256_storeu_ps(out + 8 * k, _mm256_fmadd_ps(av, v, _mm256_loadu_ps(out + 8 * k)));
        }
    }
#else
    for (std::int64_t w = 0; w < words; ++w) {
        std::uint64_t word;
        std::memcpy(&word, codes + 8 * w, 8);
        float* out = acc_plane + w * codes_per_word(W);
        for (int k = 0; k < planes; ++k) {
            const std::uint64_t p = detail::plane<W>(word, k);
            for (int b = 0; b < 8; ++b) out[8 * k + b] += a * static_cast<float>((p >> (8 * b)) & 0xFFu);
        }
    }
#endif
}

/// Runtime width -> plane kernel; returns false when the width has none.
inline bool dot_codes(int width, const std::uint8_t* codes, const float* q_plane, std::int64_t n, float& out) noexcept {
    switch (width) {
        case 1: out = dot_codes<1>(codes, q_plane, n); return true;
        case 2: out = dot_codes<2>(codes, q_plane, n); return true;
        case 4: out = dot_codes<4>(codes, q_plane, n); return true;
        case 8: out = dot_codes<8>(codes, q_plane, n); return true;
        default: return false;
    }
}
inline bool axpy_codes(int width, const std::uint8_t* codes, float a, float* acc_plane, std::int64_t n) noexcept {
    switch (width) {
        case 1: axpy_codes<1>(codes, a, acc_plane, n); return true;
        case 2: axpy_codes<2>(codes, a, acc_plane, n); return true;
        case 4: axpy_codes<4>(codes, a, acc_plane, n); return true;
        case 8: axpy_codes<8>(codes, a, acc_plane, n); return true;
        default: return false;
    }
}

/// Index of a plane width in per-width arrays: 1 -> 0, 2 -> 1, 4 -> 2, 8 -> 3.
constexpr int plane_slot(int width) noexcept { return width == 1 ? 0 : width == 2 ? 1 : width == 4 ? 2 : 3; }
inline constexpr int plane_widths[4] = {1, 2, 4, 8};

}  // namespace backend::kernels
QAQ_NAMESPACE_END
