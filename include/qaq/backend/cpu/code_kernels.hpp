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
// Widths that do not divide a byte (3, 5, 6, 7) keep natural order: eight
// codes at a time come out of the byte-shuffle unpacker of affine_kernels.hpp
// (plane_position is then the identity), so every width 1..8 has a kernel.
//
// With AVX2 + FMA (e.g. -march=x86-64-v3) the planes are widened to float
// eight lanes at a time; otherwise a scalar loop computes the same sums.

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define QAQ_CODE_KERNELS_AVX2 1
#else
#define QAQ_CODE_KERNELS_AVX2 0
#endif

#include "qaq/backend/cpu/affine_kernels.hpp"
#include "qaq/backend/cpu/simd.hpp"
#include "qaq/bit_packing.hpp"
#include "qaq/config.hpp"

QAQ_NAMESPACE_BEGIN
namespace backend::kernels {

/// True when W divides a byte: its codes split into 8 / W planes per 8-byte word.
constexpr bool divides_byte(int width) noexcept { return width == 1 || width == 2 || width == 4 || width == 8; }

/// True when width W has a kernel for groups of n codes: widths that divide a byte when the codes
/// fill whole 8-byte words, the others (3, 5, 6, 7) when n is a multiple of 8 and the codes take
/// at least 16 bytes (the unpacker reads 16-byte windows inside the group).
inline bool has_plane_kernel(int width, std::int64_t n) noexcept {
    if (width < 1 || width > 8) return false;
    if (divides_byte(width)) return (n * width) % 64 == 0;  // n % (64 / width) == 0 without a division
    return n % 8 == 0 && n * width >= 128;
}

/// Codes per 8-byte word at width W.
constexpr std::int64_t codes_per_word(int width) noexcept { return 64 / width; }

/// Position in plane order of code i (identity for widths that do not divide a byte).
inline std::int64_t plane_position(std::int64_t i, int width) noexcept {
    if (!divides_byte(width)) return i;
    const std::int64_t per_byte = 8 / width, block = codes_per_word(width);
    const std::int64_t word = i / block, within = i % block;
    const std::int64_t byte = within / per_byte, plane = within % per_byte;
    return word * block + plane * 8 + byte;
}

/// Position in plane order of code i, for a compile-time width that divides a byte (shifts, no divisions).
template <int W>
constexpr std::int64_t plane_position(std::int64_t i) noexcept {
    constexpr std::int64_t per_byte = 8 / W, block = 64 / W;
    const std::int64_t within = i % block;
    return (i - within) + (within % per_byte) * 8 + within / per_byte;
}

/// out[plane_position(i)] = in[i] for n values.
inline void to_plane_order(const float* in, std::int64_t n, int width, float* out) noexcept {
    switch (width) {
        case 1: for (std::int64_t i = 0; i < n; ++i) out[plane_position<1>(i)] = in[i]; break;
        case 2: for (std::int64_t i = 0; i < n; ++i) out[plane_position<2>(i)] = in[i]; break;
        case 4: for (std::int64_t i = 0; i < n; ++i) out[plane_position<4>(i)] = in[i]; break;
        case 8: for (std::int64_t i = 0; i < n; ++i) out[plane_position<8>(i)] = in[i]; break;
        default: for (std::int64_t i = 0; i < n; ++i) out[plane_position(i, width)] = in[i]; break;
    }
}

/// out[i] = in[plane_position(i)] for n values.
inline void from_plane_order(const float* in, std::int64_t n, int width, float* out) noexcept {
    switch (width) {
        case 1: for (std::int64_t i = 0; i < n; ++i) out[i] = in[plane_position<1>(i)]; break;
        case 2: for (std::int64_t i = 0; i < n; ++i) out[i] = in[plane_position<2>(i)]; break;
        case 4: for (std::int64_t i = 0; i < n; ++i) out[i] = in[plane_position<4>(i)]; break;
        case 8: for (std::int64_t i = 0; i < n; ++i) out[i] = in[plane_position<8>(i)]; break;
        default: for (std::int64_t i = 0; i < n; ++i) out[i] = in[plane_position(i, width)]; break;
    }
}

/// out[i] += in[plane_position(i)] for n values.
inline void add_from_plane_order(const float* in, std::int64_t n, int width, float* out) noexcept {
    switch (width) {
        case 1: for (std::int64_t i = 0; i < n; ++i) out[i] += in[plane_position<1>(i)]; break;
        case 2: for (std::int64_t i = 0; i < n; ++i) out[i] += in[plane_position<2>(i)]; break;
        case 4: for (std::int64_t i = 0; i < n; ++i) out[i] += in[plane_position<4>(i)]; break;
        case 8: for (std::int64_t i = 0; i < n; ++i) out[i] += in[plane_position<8>(i)]; break;
        default: for (std::int64_t i = 0; i < n; ++i) out[i] += in[plane_position(i, width)]; break;
    }
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

// ---------------------------------------------------------------------------
// Many groups per call: the attention kernels of quantized_kv_cache.
//
// dot_groups:  dots[i * Q + j] = q_j . c_i          (q_j = q_plane + j * q_stride)
// axpy_groups: acc_j += sum_i weights[i * Q + j] c_i (acc_j = acc_plane + j * acc_stride)
//
// for `count` groups of n codes of width W (codes[i] points at group i's
// packed codes), all in plane order. One call covers every query head that
// reads a KV head (GQA), so each group's codes are widened to float once per
// call, not once per head. The AVX2 versions widen a word with one
// zero-extending load (vpmovzxbd) and split its planes with vector shifts;
// axpy_groups keeps a strip of accumulators in registers across the groups.
// ---------------------------------------------------------------------------

namespace detail {

template <int W>
inline void dot_groups_scalar(const std::uint8_t* const* codes, std::int64_t count, const float* q_plane,
                              std::int64_t query_count, std::int64_t q_stride, std::int64_t n, float* dots) noexcept {
    if constexpr (!divides_byte(W)) {  // natural order
        for (std::int64_t i = 0; i < count; ++i)
            for (std::int64_t j = 0; j < query_count; ++j) {
                float acc = 0.0f;
                for (std::int64_t e = 0; e < n; ++e)
                    acc += q_plane[j * q_stride + e] * static_cast<float>(read_code(codes[i], e, W));
                dots[i * query_count + j] = acc;
            }
        return;
    }
    constexpr int planes = divides_byte(W) ? 8 / W : 1;
    const std::int64_t words = n / codes_per_word(W);
    for (std::int64_t i = 0; i < count; ++i)
        for (std::int64_t j = 0; j < query_count; ++j) {
            float acc = 0.0f;
            for (std::int64_t w = 0; w < words; ++w) {
                std::uint64_t word;
                std::memcpy(&word, codes[i] + 8 * w, 8);
                const float* q = q_plane + j * q_stride + w * codes_per_word(W);
                for (int k = 0; k < planes; ++k) {
                    const std::uint64_t p = plane<W>(word, k);
                    for (int b = 0; b < 8; ++b) acc += q[8 * k + b] * static_cast<float>((p >> (8 * b)) & 0xFFu);
                }
            }
            dots[i * query_count + j] = acc;
        }
}

template <int W>
inline void axpy_groups_scalar(const std::uint8_t* const* codes, std::int64_t count, const float* weights,
                               std::int64_t query_count, float* acc_plane, std::int64_t acc_stride,
                               std::int64_t n) noexcept {
    if constexpr (!divides_byte(W)) {  // natural order
        for (std::int64_t i = 0; i < count; ++i)
            for (std::int64_t j = 0; j < query_count; ++j) {
                const float a = weights[i * query_count + j];
                for (std::int64_t e = 0; e < n; ++e)
                    acc_plane[j * acc_stride + e] += a * static_cast<float>(read_code(codes[i], e, W));
            }
        return;
    }
    constexpr int planes = divides_byte(W) ? 8 / W : 1;
    const std::int64_t words = n / codes_per_word(W);
    for (std::int64_t i = 0; i < count; ++i)
        for (std::int64_t j = 0; j < query_count; ++j) {
            const float a = weights[i * query_count + j];
            float* acc = acc_plane + j * acc_stride;
            for (std::int64_t w = 0; w < words; ++w) {
                std::uint64_t word;
                std::memcpy(&word, codes[i] + 8 * w, 8);
                float* out = acc + w * codes_per_word(W);
                for (int k = 0; k < planes; ++k) {
                    const std::uint64_t p = plane<W>(word, k);
                    for (int b = 0; b < 8; ++b) out[8 * k + b] += a * static_cast<float>((p >> (8 * b)) & 0xFFu);
                }
            }
        }
}

#if QAQ_SIMD_AVX2
// AVX2 has sixteen vector registers. Every kernel below keeps its accumulators in registers and
// takes a word's planes one at a time (`plane`), so at most one widened word and one plane are
// live besides them; the head steps (`dot_head_step`, `axpy_head_step`) bound the accumulators.
// A kernel that needs more spills its accumulators and then waits on a store-to-load round trip
// per group.

// One 8-byte word of codes, zero-extended to eight 32-bit lanes (plane k sits at bits k*W).
QAQ_TARGET_AVX2 inline __m256i load_word(const std::uint8_t* word) noexcept {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(word)));
}

// Plane k of a widened word, as float (k is a constant once the plane loops are unrolled).
template <int W>
QAQ_TARGET_AVX2 inline __m256 plane(__m256i bytes, int k) noexcept {
    constexpr int planes = 8 / W;
    __m256i p = k == 0 ? bytes : _mm256_srli_epi32(bytes, k * W);
    if (k + 1 < planes) p = _mm256_and_si256(p, _mm256_set1_epi32((1 << W) - 1));
    return _mm256_cvtepi32_ps(p);
}

QAQ_TARGET_AVX2 inline float horizontal_sum(__m256 a) noexcept {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

// Eight sums at once: out[u] = sum of the lanes of a[u] (a transposed reduction, 9 operations
// instead of eight separate horizontal sums).
QAQ_TARGET_AVX2 inline __m256 horizontal_sums8(const __m256* a) noexcept {
    const __m256 h01 = _mm256_hadd_ps(a[0], a[1]), h23 = _mm256_hadd_ps(a[2], a[3]);
    const __m256 h45 = _mm256_hadd_ps(a[4], a[5]), h67 = _mm256_hadd_ps(a[6], a[7]);
    const __m256 lo = _mm256_hadd_ps(h01, h23), hi = _mm256_hadd_ps(h45, h67);  // [a0..a3 | a0..a3], [a4..a7 | ..]
    return _mm256_add_ps(_mm256_permute2f128_ps(lo, hi, 0x20), _mm256_permute2f128_ps(lo, hi, 0x31));
}

// One query head, eight groups at a time: one accumulator per group (eight independent FMA
// chains) and one transposed reduction. Returns how many groups it did (a multiple of 8).
template <int W>
QAQ_TARGET_AVX2 std::int64_t dot_groups8_avx2(const std::uint8_t* const* codes, std::int64_t count, const float* q_plane,
                                              std::int64_t n, float* dots) noexcept {
    constexpr std::int64_t per_word = codes_per_word(W);
    const std::int64_t words = n / per_word;
    std::int64_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 acc[8];
QAQ_UNROLL(8)
        for (int u = 0; u < 8; ++u) acc[u] = _mm256_setzero_ps();
        for (std::int64_t w = 0; w < words; ++w) {
            const float* q = q_plane + w * per_word;
QAQ_UNROLL(8)
            for (int u = 0; u < 8; ++u) {
                const __m256i bytes = load_word(codes[i + u] + 8 * w);
QAQ_UNROLL(8)
                for (int k = 0; k < 8 / W; ++k)
                    acc[u] = _mm256_fmadd_ps(plane<W>(bytes, k), _mm256_loadu_ps(q + 8 * k), acc[u]);
            }
        }
        _mm256_storeu_ps(dots + i, horizontal_sums8(acc));
    }
    return i;
}

// QC query heads at once, one group at a time; A accumulators per head (four for one head,
// two otherwise), taken in turn by plane and word.
template <int W, int QC>
QAQ_TARGET_AVX2 void dot_groups_plane_avx2(const std::uint8_t* const* codes, std::int64_t count, const float* q_plane,
                                           std::int64_t q_stride, std::int64_t n, float* dots,
                                           std::int64_t dots_stride) noexcept {
    constexpr int A = QC == 1 ? 4 : 2;
    constexpr std::int64_t per_word = codes_per_word(W);
    const std::int64_t words = n / per_word;
    for (std::int64_t i = 0; i < count; ++i) {
        const std::uint8_t* c = codes[i];
        __m256 acc[QC * A];
QAQ_UNROLL(8)
        for (int e = 0; e < QC * A; ++e) acc[e] = _mm256_setzero_ps();
        // Words in pairs, so that the accumulator index is a constant after unrolling.
        for (std::int64_t w = 0; w < words; w += 2)
QAQ_UNROLL(2)
            for (int h = 0; h < 2; ++h) {
                if (w + h == words) break;
                const __m256i bytes = load_word(c + 8 * (w + h));
QAQ_UNROLL(8)
                for (int k = 0; k < 8 / W; ++k) {
                    const __m256 v = plane<W>(bytes, k);
                    const float* q = q_plane + (w + h) * per_word + 8 * k;
                    const int a = (2 * h + k) % A;
QAQ_UNROLL(4)
                    for (int j = 0; j < QC; ++j)
                        acc[j * A + a] = _mm256_fmadd_ps(v, _mm256_loadu_ps(q + j * q_stride), acc[j * A + a]);
                }
            }
QAQ_UNROLL(4)
        for (int j = 0; j < QC; ++j) {
            __m256 sum = acc[j * A];
            for (int a = 1; a < A; ++a) sum = _mm256_add_ps(sum, acc[j * A + a]);
            dots[i * dots_stride + j] = horizontal_sum(sum);
        }
    }
}

// A strip of NW words x QC heads of accumulators stays in registers while every group adds to it.
template <int W, int QC, int NW>
QAQ_TARGET_AVX2 void axpy_strip_avx2(const std::uint8_t* const* codes, std::int64_t count, const float* weights,
                                     std::int64_t weight_stride, float* strip, std::int64_t acc_stride,
                                     std::int64_t code_offset) noexcept {
    constexpr int planes = 8 / W;
    constexpr int per_word = static_cast<int>(codes_per_word(W));
    // One flat array indexed by (j * NW + u) * planes + k, every loop over it unrolled: otherwise
    // GCC keeps a copy in memory and stores it on every group.
    constexpr int accumulators = QC * NW * planes;
    __m256 acc[accumulators];
QAQ_UNROLL(16)
    for (int e = 0; e < accumulators; ++e)
        acc[e] = _mm256_loadu_ps(strip + (e / (NW * planes)) * acc_stride + ((e / planes) % NW) * per_word + 8 * (e % planes));
    for (std::int64_t i = 0; i < count; ++i) {
        const std::uint8_t* c = codes[i] + code_offset;
        const float* a = weights + i * weight_stride;
QAQ_UNROLL(8)
        for (int u = 0; u < NW; ++u) {
            const __m256i bytes = load_word(c + 8 * u);
QAQ_UNROLL(8)
            for (int k = 0; k < planes; ++k) {
                const __m256 v = plane<W>(bytes, k);
QAQ_UNROLL(4)
                for (int j = 0; j < QC; ++j) acc[(j * NW + u) * planes + k] = _mm256_fmadd_ps(_mm256_broadcast_ss(a + j), v, acc[(j * NW + u) * planes + k]);
            }
        }
    }
QAQ_UNROLL(16)
    for (int e = 0; e < accumulators; ++e)
        _mm256_storeu_ps(strip + (e / (NW * planes)) * acc_stride + ((e / planes) % NW) * per_word + 8 * (e % planes), acc[e]);
}

// Widths that do not divide a byte: blocks of eight codes in natural order from the byte-shuffle
// unpacker. Block b's 16-byte window starts at its first byte while that stays inside the group
// (b * W + 16 <= bytes); the last blocks share the window that ends at the group's last byte.
struct natural_blocks {
    std::int64_t blocks, direct;  // blocks in a group; the first `direct` read from their own byte
    std::int64_t bytes;
    natural_blocks(int W, std::int64_t n) noexcept
        : blocks(n / 8), direct(affine::detail::direct_block_count(W, n / 8, n * W / 8)), bytes(n * W / 8) {}
};

// Codes of block b of a group (natural_blocks describes the group).
template <int W>
QAQ_TARGET_AVX2 inline __m256 natural_block(const affine::detail::unpacker<W>& u, const natural_blocks& g,
                                            const std::uint8_t* c, std::int64_t b) noexcept {
    if (b < g.direct) return _mm256_cvtepi32_ps(u.codes(c + b * W));
    return _mm256_cvtepi32_ps(u.codes(c + g.bytes - 16, static_cast<int>(b * W - (g.bytes - 16))));
}

template <int W, int QC>
QAQ_TARGET_AVX2 void dot_groups_natural_avx2(const std::uint8_t* const* codes, std::int64_t count, const float* q,
                                             std::int64_t q_stride, std::int64_t n, float* dots,
                                             std::int64_t dots_stride) noexcept {
    constexpr int A = QC == 1 ? 4 : 2;
    const affine::detail::unpacker<W> u;
    const natural_blocks g(W, n);
    for (std::int64_t i = 0; i < count; ++i) {
        __m256 acc[QC * A];
QAQ_UNROLL(8)
        for (int e = 0; e < QC * A; ++e) acc[e] = _mm256_setzero_ps();
        std::int64_t b = 0;
        for (; b + A <= g.blocks; b += A)
QAQ_UNROLL(4)
            for (int a = 0; a < A; ++a) {
                const __m256 v = natural_block<W>(u, g, codes[i], b + a);
QAQ_UNROLL(4)
                for (int j = 0; j < QC; ++j)
                    acc[j * A + a] = _mm256_fmadd_ps(v, _mm256_loadu_ps(q + j * q_stride + 8 * (b + a)), acc[j * A + a]);
            }
        for (; b < g.blocks; ++b) {
            const __m256 v = natural_block<W>(u, g, codes[i], b);
QAQ_UNROLL(4)
            for (int j = 0; j < QC; ++j) acc[j * A] = _mm256_fmadd_ps(v, _mm256_loadu_ps(q + j * q_stride + 8 * b), acc[j * A]);
        }
QAQ_UNROLL(4)
        for (int j = 0; j < QC; ++j) {
            __m256 sum = acc[j * A];
            for (int a = 1; a < A; ++a) sum = _mm256_add_ps(sum, acc[j * A + a]);
            dots[i * dots_stride + j] = horizontal_sum(sum);
        }
    }
}

// NB blocks x QC heads of accumulators stay in registers while every group adds to them.
template <int W, int QC, int NB>
QAQ_TARGET_AVX2 void axpy_natural_strip_avx2(const affine::detail::unpacker<W>& u, const natural_blocks& g,
                                             const std::uint8_t* const* codes, std::int64_t count,
                                             const float* weights, std::int64_t weight_stride, float* acc_plane,
                                             std::int64_t acc_stride, std::int64_t first_block) noexcept {
    __m256 acc[QC * NB];
QAQ_UNROLL(8)
    for (int e = 0; e < QC * NB; ++e) acc[e] = _mm256_loadu_ps(acc_plane + (e / NB) * acc_stride + 8 * (first_block + e % NB));
    for (std::int64_t i = 0; i < count; ++i) {
        const float* a = weights + i * weight_stride;
QAQ_UNROLL(8)
        for (int k = 0; k < NB; ++k) {
            const __m256 v = natural_block<W>(u, g, codes[i], first_block + k);
QAQ_UNROLL(4)
            for (int j = 0; j < QC; ++j) acc[j * NB + k] = _mm256_fmadd_ps(_mm256_broadcast_ss(a + j), v, acc[j * NB + k]);
        }
    }
QAQ_UNROLL(8)
    for (int e = 0; e < QC * NB; ++e) _mm256_storeu_ps(acc_plane + (e / NB) * acc_stride + 8 * (first_block + e % NB), acc[e]);
}

template <int W, int QC>
QAQ_TARGET_AVX2 void axpy_groups_natural_avx2(const std::uint8_t* const* codes, std::int64_t count, const float* weights,
                                              std::int64_t weight_stride, float* acc_plane, std::int64_t acc_stride,
                                              std::int64_t n) noexcept {
    constexpr int NB = 8 / QC > 0 ? 8 / QC : 1;
    const affine::detail::unpacker<W> u;
    const natural_blocks g(W, n);
    std::int64_t b = 0;
    for (; b + NB <= g.blocks; b += NB)
        axpy_natural_strip_avx2<W, QC, NB>(u, g, codes, count, weights, weight_stride, acc_plane, acc_stride, b);
    for (; b < g.blocks; ++b)
        axpy_natural_strip_avx2<W, QC, 1>(u, g, codes, count, weights, weight_stride, acc_plane, acc_stride, b);
}

// Heads per call: at most four (two or four accumulators per head in the dot kernels); for the
// plane axpy at most eight accumulators (planes x heads), i.e. one head at 1 bit, two at 2 bits.
constexpr int dot_head_step = 4;
constexpr int axpy_head_step(int W) noexcept { return W == 1 ? 1 : W == 2 ? 2 : 4; }

template <int W, int QC>
QAQ_TARGET_AVX2 void axpy_groups_avx2(const std::uint8_t* const* codes, std::int64_t count, const float* weights,
                                      std::int64_t weight_stride, float* acc_plane, std::int64_t acc_stride,
                                      std::int64_t n) noexcept {
    if constexpr (!divides_byte(W)) {
        axpy_groups_natural_avx2<W, QC>(codes, count, weights, weight_stride, acc_plane, acc_stride, n);
    } else {
        constexpr int planes = 8 / W;
        // About eight accumulators per strip: enough independent chains to hide the FMA latency.
        constexpr int NW = (8 / (planes * QC)) > 0 ? (8 / (planes * QC)) : 1;
        const std::int64_t words = n / codes_per_word(W);
        std::int64_t w = 0;
        for (; w + NW <= words; w += NW)
            axpy_strip_avx2<W, QC, NW>(codes, count, weights, weight_stride, acc_plane + w * codes_per_word(W),
                                       acc_stride, 8 * w);
        if constexpr (NW > 1) {
            float* strip = acc_plane + w * codes_per_word(W);
            std::int64_t offset = 8 * w;
            for (std::int64_t left = words - w; left > 0; --left, strip += codes_per_word(W), offset += 8)
                axpy_strip_avx2<W, QC, 1>(codes, count, weights, weight_stride, strip, acc_stride, offset);
        }
    }
}

// The per-group dot kernel of width W for QC heads: plane order or natural order.
template <int W, int QC>
QAQ_TARGET_AVX2 void dot_groups_avx2(const std::uint8_t* const* codes, std::int64_t count, const float* q,
                                     std::int64_t q_stride, std::int64_t n, float* dots,
                                     std::int64_t dots_stride) noexcept {
    if constexpr (divides_byte(W)) dot_groups_plane_avx2<W, QC>(codes, count, q, q_stride, n, dots, dots_stride);
    else dot_groups_natural_avx2<W, QC>(codes, count, q, q_stride, n, dots, dots_stride);
}

template <int W>
QAQ_TARGET_AVX2 void dot_groups_avx2_heads(const std::uint8_t* const* codes, std::int64_t count, const float* q_plane,
                                           std::int64_t query_count, std::int64_t q_stride, std::int64_t n,
                                           float* dots) noexcept {
    // Decode without GQA: eight groups per reduction (plane widths above one bit: eight planes
    // of eight groups would need more registers than AVX2 has).
    if constexpr (divides_byte(W) && W > 1) {
        if (query_count == 1) {
            const std::int64_t done = dot_groups8_avx2<W>(codes, count, q_plane, n, dots);
            codes += done, count -= done, dots += done;
        }
    }
    for (std::int64_t j0 = 0; j0 < query_count; j0 += dot_head_step) {
        const float* q = q_plane + j0 * q_stride;
        float* d = dots + j0;
        switch (std::min<std::int64_t>(query_count - j0, dot_head_step)) {
            case 1: dot_groups_avx2<W, 1>(codes, count, q, q_stride, n, d, query_count); break;
            case 2: dot_groups_avx2<W, 2>(codes, count, q, q_stride, n, d, query_count); break;
            case 3: dot_groups_avx2<W, 3>(codes, count, q, q_stride, n, d, query_count); break;
            default: dot_groups_avx2<W, 4>(codes, count, q, q_stride, n, d, query_count); break;
        }
    }
}

template <int W>
QAQ_TARGET_AVX2 void axpy_groups_avx2_heads(const std::uint8_t* const* codes, std::int64_t count,
                                            const float* weights, std::int64_t query_count, float* acc_plane,
                                            std::int64_t acc_stride, std::int64_t n) noexcept {
    constexpr int step = divides_byte(W) ? axpy_head_step(W) : 4;
    for (std::int64_t j0 = 0; j0 < query_count; j0 += step) {
        const float* wt = weights + j0;
        float* acc = acc_plane + j0 * acc_stride;
        switch (std::min<std::int64_t>(query_count - j0, step)) {
            case 1: axpy_groups_avx2<W, 1>(codes, count, wt, query_count, acc, acc_stride, n); break;
            case 2: if constexpr (step >= 2) axpy_groups_avx2<W, 2>(codes, count, wt, query_count, acc, acc_stride, n); break;
            case 3: if constexpr (step >= 3) axpy_groups_avx2<W, 3>(codes, count, wt, query_count, acc, acc_stride, n); break;
            default: if constexpr (step >= 4) axpy_groups_avx2<W, 4>(codes, count, wt, query_count, acc, acc_stride, n); break;
        }
    }
}
#endif  // QAQ_SIMD_AVX2

}  // namespace detail

/// dots[i * query_count + j] = (q_plane + j * q_stride) . codes of group i, for `count`
/// groups of n codes of width W in plane order (has_plane_kernel(W, n) must hold).
template <int W>
inline void dot_groups(const std::uint8_t* const* codes, std::int64_t count, const float* q_plane,
                       std::int64_t query_count, std::int64_t q_stride, std::int64_t n, float* dots) noexcept {
#if QAQ_SIMD_AVX2
    if (simd::use_avx2()) {
        detail::dot_groups_avx2_heads<W>(codes, count, q_plane, query_count, q_stride, n, dots);
        return;
    }
#endif
    detail::dot_groups_scalar<W>(codes, count, q_plane, query_count, q_stride, n, dots);
}

/// (acc_plane + j * acc_stride) += sum_i weights[i * query_count + j] * codes of group i,
/// in plane order, for `count` groups of n codes of width W (has_plane_kernel(W, n) must hold).
template <int W>
inline void axpy_groups(const std::uint8_t* const* codes, std::int64_t count, const float* weights,
                        std::int64_t query_count, float* acc_plane, std::int64_t acc_stride, std::int64_t n) noexcept {
#if QAQ_SIMD_AVX2
    if (simd::use_avx2()) {
        detail::axpy_groups_avx2_heads<W>(codes, count, weights, query_count, acc_plane, acc_stride, n);
        return;
    }
#endif
    detail::axpy_groups_scalar<W>(codes, count, weights, query_count, acc_plane, acc_stride, n);
}

/// Runtime width (1, 2, 4 or 8) -> dot_groups / axpy_groups.
/// Runtime width (1..8; has_plane_kernel(width, n) must hold) -> dot_groups / axpy_groups.
inline void dot_groups(int width, const std::uint8_t* const* codes, std::int64_t count, const float* q_plane,
                       std::int64_t query_count, std::int64_t q_stride, std::int64_t n, float* dots) noexcept {
    switch (width) {
        case 1: dot_groups<1>(codes, count, q_plane, query_count, q_stride, n, dots); break;
        case 2: dot_groups<2>(codes, count, q_plane, query_count, q_stride, n, dots); break;
        case 3: dot_groups<3>(codes, count, q_plane, query_count, q_stride, n, dots); break;
        case 4: dot_groups<4>(codes, count, q_plane, query_count, q_stride, n, dots); break;
        case 5: dot_groups<5>(codes, count, q_plane, query_count, q_stride, n, dots); break;
        case 6: dot_groups<6>(codes, count, q_plane, query_count, q_stride, n, dots); break;
        case 7: dot_groups<7>(codes, count, q_plane, query_count, q_stride, n, dots); break;
        default: dot_groups<8>(codes, count, q_plane, query_count, q_stride, n, dots); break;
    }
}
inline void axpy_groups(int width, const std::uint8_t* const* codes, std::int64_t count, const float* weights,
                        std::int64_t query_count, float* acc_plane, std::int64_t acc_stride, std::int64_t n) noexcept {
    switch (width) {
        case 1: axpy_groups<1>(codes, count, weights, query_count, acc_plane, acc_stride, n); break;
        case 2: axpy_groups<2>(codes, count, weights, query_count, acc_plane, acc_stride, n); break;
        case 3: axpy_groups<3>(codes, count, weights, query_count, acc_plane, acc_stride, n); break;
        case 4: axpy_groups<4>(codes, count, weights, query_count, acc_plane, acc_stride, n); break;
        case 5: axpy_groups<5>(codes, count, weights, query_count, acc_plane, acc_stride, n); break;
        case 6: axpy_groups<6>(codes, count, weights, query_count, acc_plane, acc_stride, n); break;
        case 7: axpy_groups<7>(codes, count, weights, query_count, acc_plane, acc_stride, n); break;
        default: axpy_groups<8>(codes, count, weights, query_count, acc_plane, acc_stride, n); break;
    }
}

/// Per-width arrays of the attention kernels: widths 1..8 in slots 0..7.
inline constexpr int plane_slot_count = 8;
constexpr int plane_slot(int width) noexcept { return width - 1; }
inline constexpr int plane_widths[plane_slot_count] = {1, 2, 3, 4, 5, 6, 7, 8};

}  // namespace backend::kernels
QAQ_NAMESPACE_END
