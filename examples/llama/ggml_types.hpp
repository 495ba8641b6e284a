#pragma once
// GGML tensor types as GGUF files store them: the type table (names, block
// sizes, bytes per block), dequantization to float, and the row-times-vector
// kernels of the decode path.
//
// Block layouts (ggml/src/ggml-common.h; every value little-endian):
//   F32   4-byte IEEE float;  F16: IEEE half;  BF16: the top 16 bits of a float
//   Q4_0  32 values in 18 bytes: fp16 d, 16 bytes of nibbles; byte j holds
//         element j in its low nibble and element j + 16 in its high nibble;
//         x = (q - 8) * d
//   Q4_1  32 values in 20 bytes: fp16 d, fp16 m, 16 bytes of nibbles (as
//         Q4_0); x = q * d + m
//   Q8_0  32 values in 34 bytes: fp16 d, 32 int8 q; x = q * d
// The other types are listed (so a file holding them can be described and its
// tensor sizes checked) but not dequantized: asking for them is an error that
// names the type.
//
// Kernels: `dot_rows` computes y[r] = row_r . x for rows stored in one of the
// types above, straight from the blocks (nothing is dequantized into memory).
// An AVX2+FMA+F16C version is compiled with target attributes whatever the
// build flags, and chosen at run time when the CPU has those instructions;
// the scalar version is the fallback and the reference of the tests.
//
// Written by hand: there is no Debian package for GGML's block formats.

#include <Eigen/Core>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "qaq/error.hpp"

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define QAQ_LLAMA_X86_KERNELS 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define QAQ_LLAMA_X86_KERNELS 0
#endif

namespace qaq::llama {

/// GGML type ids (ggml.h, enum ggml_type). Ids 4, 5 and 31..33 were removed from GGML.
enum class ggml_type : std::uint32_t {
    f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9,
    q2_k = 10, q3_k = 11, q4_k = 12, q5_k = 13, q6_k = 14, q8_k = 15,
    iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21, iq2_s = 22, iq4_xs = 23,
    i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_m = 29, bf16 = 30, tq1_0 = 34, tq2_0 = 35, mxfp4 = 39,
};

struct ggml_type_traits {
    ggml_type type;
    const char* name;
    std::int64_t block_size;  ///< elements per block
    std::int64_t type_size;   ///< bytes per block
    bool dequantizable;       ///< this program can turn it into floats
};

inline const std::array<ggml_type_traits, 32>& ggml_type_table() {
    static const std::array<ggml_type_traits, 32> table{{
        {ggml_type::f32, "F32", 1, 4, true},
        {ggml_type::f16, "F16", 1, 2, true},
        {ggml_type::q4_0, "Q4_0", 32, 18, true},
        {ggml_type::q4_1, "Q4_1", 32, 20, true},
        {ggml_type::q5_0, "Q5_0", 32, 22, false},
        {ggml_type::q5_1, "Q5_1", 32, 24, false},
        {ggml_type::q8_0, "Q8_0", 32, 34, true},
        {ggml_type::q8_1, "Q8_1", 32, 36, false},
        {ggml_type::q2_k, "Q2_K", 256, 84, false},
        {ggml_type::q3_k, "Q3_K", 256, 110, false},
        {ggml_type::q4_k, "Q4_K", 256, 144, false},
        {ggml_type::q5_k, "Q5_K", 256, 176, false},
        {ggml_type::q6_k, "Q6_K", 256, 210, false},
        {ggml_type::q8_k, "Q8_K", 256, 292, false},
        {ggml_type::iq2_xxs, "IQ2_XXS", 256, 66, false},
        {ggml_type::iq2_xs, "IQ2_XS", 256, 74, false},
        {ggml_type::iq3_xxs, "IQ3_XXS", 256, 98, false},
        {ggml_type::iq1_s, "IQ1_S", 256, 50, false},
        {ggml_type::iq4_nl, "IQ4_NL", 32, 18, false},
        {ggml_type::iq3_s, "IQ3_S", 256, 110, false},
        {ggml_type::iq2_s, "IQ2_S", 256, 82, false},
        {ggml_type::iq4_xs, "IQ4_XS", 256, 136, false},
        {ggml_type::i8, "I8", 1, 1, false},
        {ggml_type::i16, "I16", 1, 2, false},
        {ggml_type::i32, "I32", 1, 4, false},
        {ggml_type::i64, "I64", 1, 8, false},
        {ggml_type::f64, "F64", 1, 8, false},
        {ggml_type::iq1_m, "IQ1_M", 256, 56, false},
        {ggml_type::bf16, "BF16", 1, 2, true},
        {ggml_type::tq1_0, "TQ1_0", 256, 54, false},
        {ggml_type::tq2_0, "TQ2_0", 256, 66, false},
        {ggml_type::mxfp4, "MXFP4", 32, 17, false},
    }};
    return table;
}

/// The traits of a type id, or nullptr for an id GGML does not define.
inline const ggml_type_traits* find_ggml_type(std::uint32_t id) noexcept {
    for (const auto& t : ggml_type_table())
        if (static_cast<std::uint32_t>(t.type) == id) return &t;
    return nullptr;
}

inline const ggml_type_traits& ggml_traits(ggml_type type) {
    const ggml_type_traits* t = find_ggml_type(static_cast<std::uint32_t>(type));
    QAQ_CHECK(t != nullptr, "unknown GGML tensor type id ", static_cast<std::uint32_t>(type));
    return *t;
}

/// "Q4_1", or "unknown type id N".
inline std::string ggml_type_name(std::uint32_t id) {
    const ggml_type_traits* t = find_ggml_type(id);
    return t ? std::string(t->name) : "unknown type id " + std::to_string(id);
}
inline std::string ggml_type_name(ggml_type type) { return ggml_type_name(static_cast<std::uint32_t>(type)); }

/// The names of the types this program dequantizes, for error messages.
inline std::string dequantizable_type_names() {
    std::string s;
    for (const auto& t : ggml_type_table())
        if (t.dequantizable) s += (s.empty() ? "" : ", ") + std::string(t.name);
    return s;
}

/// Throws unless `type` can be dequantized; `what` names the tensor.
inline void require_dequantizable(ggml_type type, const std::string& what) {
    const ggml_type_traits* t = find_ggml_type(static_cast<std::uint32_t>(type));
    QAQ_CHECK(t != nullptr && t->dequantizable, what, " has tensor type ", ggml_type_name(type),
              ", which qaq-llama does not support (supported: ", dequantizable_type_names(), ")");
}

/// Bytes of one row of `n` elements; `n` must be a multiple of the block size.
inline std::int64_t ggml_row_bytes(ggml_type type, std::int64_t n) {
    const ggml_type_traits& t = ggml_traits(type);
    QAQ_CHECK(n >= 0 && n % t.block_size == 0, "a ", t.name, " row of ", n, " elements is not a whole number of ",
              t.block_size, "-element blocks");
    return n / t.block_size * t.type_size;
}

// ---------------------------------------------------------------------------
// Half floats and blocks
// ---------------------------------------------------------------------------

inline float fp16_to_fp32(std::uint16_t bits) noexcept {
    return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits));
}
inline std::uint16_t fp32_to_fp16(float x) noexcept {
    return Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(x));
}
inline float bf16_to_fp32(std::uint16_t bits) noexcept {
    const std::uint32_t u = static_cast<std::uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

inline std::uint16_t load_u16(const std::uint8_t* p) noexcept {
    return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}

inline constexpr std::int64_t qk = 32;  // elements per Q4_0 / Q4_1 / Q8_0 block

namespace detail {

inline void dequantize_q4_0_block(const std::uint8_t* b, float* out) noexcept {
    const float d = fp16_to_fp32(load_u16(b));
    const std::uint8_t* qs = b + 2;
    for (int j = 0; j < 16; ++j) {
        out[j] = static_cast<float>((qs[j] & 0x0F) - 8) * d;
        out[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
    }
}

inline void dequantize_q4_1_block(const std::uint8_t* b, float* out) noexcept {
    const float d = fp16_to_fp32(load_u16(b));
    const float m = fp16_to_fp32(load_u16(b + 2));
    const std::uint8_t* qs = b + 4;
    for (int j = 0; j < 16; ++j) {
        out[j] = static_cast<float>(qs[j] & 0x0F) * d + m;
        out[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
    }
}

inline void dequantize_q8_0_block(const std::uint8_t* b, float* out) noexcept {
    const float d = fp16_to_fp32(load_u16(b));
    for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(static_cast<std::int8_t>(b[2 + j])) * d;
}

}  // namespace detail

/// Dequantizes `n` consecutive elements (a whole number of blocks) stored in `type`.
inline void dequantize_row(ggml_type type, const std::uint8_t* src, float* dst, std::int64_t n) {
    require_dequantizable(type, "a tensor");
    const ggml_type_traits& t = ggml_traits(type);
    QAQ_CHECK(n % t.block_size == 0, "cannot dequantize ", n, " elements of ", t.name, ": not a whole number of ",
              t.block_size, "-element blocks");
    switch (type) {
        case ggml_type::f32: std::memcpy(dst, src, static_cast<std::size_t>(n) * 4); return;
        case ggml_type::f16:
            for (std::int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(load_u16(src + 2 * i));
            return;
        case ggml_type::bf16:
            for (std::int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(load_u16(src + 2 * i));
            return;
        case ggml_type::q4_0:
            for (std::int64_t b = 0; b < n / qk; ++b) detail::dequantize_q4_0_block(src + b * 18, dst + b * qk);
            return;
        case ggml_type::q4_1:
            for (std::int64_t b = 0; b < n / qk; ++b) detail::dequantize_q4_1_block(src + b * 20, dst + b * qk);
            return;
        case ggml_type::q8_0:
            for (std::int64_t b = 0; b < n / qk; ++b) detail::dequantize_q8_0_block(src + b * 34, dst + b * qk);
            return;
        default: break;
    }
    QAQ_CHECK(false, "dequantize_row: no kernel for ", t.name);
}

// ---------------------------------------------------------------------------
// Row . vector kernels
// ---------------------------------------------------------------------------

/// Which implementation `dot_rows` uses.
enum class simd_level { scalar, avx2 };

inline bool cpu_has_avx2() noexcept {
#if QAQ_LLAMA_X86_KERNELS
    // F16C from CPUID leaf 1 (ECX bit 29): clang before 18 has no "f16c" for __builtin_cpu_supports.
    static const bool has = (__builtin_cpu_init(), __builtin_cpu_supports("avx2")) && __builtin_cpu_supports("fma") && [] {
        unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
        return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
    }();
    return has;
#else
    return false;
#endif
}

/// The best level this CPU runs; tests may lower it.
inline simd_level& active_simd_level() noexcept {
    static simd_level level = cpu_has_avx2() ? simd_level::avx2 : simd_level::scalar;
    return level;
}

inline const char* to_string(simd_level s) noexcept { return s == simd_level::avx2 ? "avx2" : "scalar"; }

/// A vector prepared for dot products with block-quantized rows: x itself and
/// the sum of each 32-element block (Q4_1's offsets multiply it).
struct dot_operand {
    const float* x = nullptr;
    std::int64_t n = 0;
    const float* block_sums = nullptr;  ///< n / 32 sums (when n is a multiple of 32)
};

inline void block_sums(const float* x, std::int64_t n, float* sums) noexcept {
    for (std::int64_t b = 0; b < n / qk; ++b) {
        float s = 0.0f;
        for (std::int64_t j = 0; j < qk; ++j) s += x[b * qk + j];
        sums[b] = s;
    }
}

namespace detail {

inline float dot_row_scalar(ggml_type type, const std::uint8_t* row, const dot_operand& v) {
    const float* x = v.x;
    const std::int64_t n = v.n;
    float total = 0.0f;
    switch (type) {
        case ggml_type::f32: {
            for (std::int64_t i = 0; i < n; ++i) {
                float w;
                std::memcpy(&w, row + 4 * i, 4);
                total += w * x[i];
            }
            return total;
        }
        case ggml_type::f16:
            for (std::int64_t i = 0; i < n; ++i) total += fp16_to_fp32(load_u16(row + 2 * i)) * x[i];
            return total;
        case ggml_type::bf16:
            for (std::int64_t i = 0; i < n; ++i) total += bf16_to_fp32(load_u16(row + 2 * i)) * x[i];
            return total;
        case ggml_type::q4_0:
            for (std::int64_t b = 0; b < n / qk; ++b) {
                const std::uint8_t* blk = row + b * 18;
                const float* xb = x + b * qk;
                float s = 0.0f;
                for (int j = 0; j < 16; ++j)
                    s += static_cast<float>((blk[2 + j] & 0x0F) - 8) * xb[j] +
                         static_cast<float>((blk[2 + j] >> 4) - 8) * xb[j + 16];
                total += fp16_to_fp32(load_u16(blk)) * s;
            }
            return total;
        case ggml_type::q4_1:
            for (std::int64_t b = 0; b < n / qk; ++b) {
                const std::uint8_t* blk = row + b * 20;
                const float* xb = x + b * qk;
                float s = 0.0f;
                for (int j = 0; j < 16; ++j)
                    s += static_cast<float>(blk[4 + j] & 0x0F) * xb[j] + static_cast<float>(blk[4 + j] >> 4) * xb[j + 16];
                total += fp16_to_fp32(load_u16(blk)) * s + fp16_to_fp32(load_u16(blk + 2)) * v.block_sums[b];
            }
            return total;
        case ggml_type::q8_0:
            for (std::int64_t b = 0; b < n / qk; ++b) {
                const std::uint8_t* blk = row + b * 34;
                const float* xb = x + b * qk;
                float s = 0.0f;
                for (int j = 0; j < 32; ++j) s += static_cast<float>(static_cast<std::int8_t>(blk[2 + j])) * xb[j];
                total += fp16_to_fp32(load_u16(blk)) * s;
            }
            return total;
        default: break;
    }
    QAQ_CHECK(false, "dot product: no kernel for ", ggml_type_name(type));
    return 0.0f;
}

#if QAQ_LLAMA_X86_KERNELS
#define QAQ_LLAMA_AVX2 __attribute__((target("avx2,fma,f16c")))

QAQ_LLAMA_AVX2 inline float hsum(__m256 v) {
    const __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

QAQ_LLAMA_AVX2 inline float half_to_float(const std::uint8_t* p) {
    return _cvtsh_ss(load_u16(p));
}

// The 32 nibbles of a Q4 block as 4 x 8 floats, elements 0..7, 8..15, 16..23, 24..31.
QAQ_LLAMA_AVX2 inline void nibbles_to_floats(const std::uint8_t* qs, __m256 out[4]) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    const __m128i mask = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(bytes, mask);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
    out[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
    out[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
    out[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
    out[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
}

// How far ahead (bytes) the kernels prefetch the rows they stream: rows are
// contiguous, so this is the same block a few rows further on. Decode reads
// every weight once per token from memory; without it one thread reaches a
// third of the bandwidth it gets with it.
inline constexpr std::int64_t prefetch_distance = 8192;

QAQ_LLAMA_AVX2 inline void prefetch(const std::uint8_t* p, const std::uint8_t* end) {
    if (end - p > prefetch_distance) _mm_prefetch(reinterpret_cast<const char*>(p + prefetch_distance), _MM_HINT_T0);
}

// Rows rows at a time (Rows <= 4) share each x load; `end` bounds prefetching.
template <int Rows>
QAQ_LLAMA_AVX2 inline void dot_q4_1_avx2(const std::uint8_t* const* row, const dot_operand& v, float* y,
                                         const std::uint8_t* end) {
    __m256 acc[Rows];
    float offset[Rows];
    for (int r = 0; r < Rows; ++r) acc[r] = _mm256_setzero_ps(), offset[r] = 0.0f;
    const std::int64_t blocks = v.n / qk;
    for (std::int64_t b = 0; b < blocks; ++b) {
        const float* xb = v.x + b * qk;
        const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8), x2 = _mm256_loadu_ps(xb + 16),
                     x3 = _mm256_loadu_ps(xb + 24);
        const float xs = v.block_sums[b];
        for (int r = 0; r < Rows; ++r) {
            const std::uint8_t* blk = row[r] + b * 20;
            prefetch(blk, end);
            __m256 q[4];
            nibbles_to_floats(blk + 4, q);
            __m256 s = _mm256_mul_ps(q[0], x0);
            s = _mm256_fmadd_ps(q[1], x1, s);
            s = _mm256_fmadd_ps(q[2], x2, s);
            s = _mm256_fmadd_ps(q[3], x3, s);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(blk)), s, acc[r]);
            offset[r] += half_to_float(blk + 2) * xs;
        }
    }
    for (int r = 0; r < Rows; ++r) y[r] = hsum(acc[r]) + offset[r];
}

template <int Rows>
QAQ_LLAMA_AVX2 inline void dot_q4_0_avx2(const std::uint8_t* const* row, const dot_operand& v, float* y,
                                         const std::uint8_t* end) {
    __m256 acc[Rows];
    for (int r = 0; r < Rows; ++r) acc[r] = _mm256_setzero_ps();
    const __m256 eight = _mm256_set1_ps(8.0f);
    const std::int64_t blocks = v.n / qk;
    for (std::int64_t b = 0; b < blocks; ++b) {
        const float* xb = v.x + b * qk;
        const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8), x2 = _mm256_loadu_ps(xb + 16),
                     x3 = _mm256_loadu_ps(xb + 24);
        for (int r = 0; r < Rows; ++r) {
            const std::uint8_t* blk = row[r] + b * 18;
            prefetch(blk, end);
            __m256 q[4];
            nibbles_to_floats(blk + 2, q);
            __m256 s = _mm256_mul_ps(_mm256_sub_ps(q[0], eight), x0);
            s = _mm256_fmadd_ps(_mm256_sub_ps(q[1], eight), x1, s);
            s = _mm256_fmadd_ps(_mm256_sub_ps(q[2], eight), x2, s);
            s = _mm256_fmadd_ps(_mm256_sub_ps(q[3], eight), x3, s);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(blk)), s, acc[r]);
        }
    }
    for (int r = 0; r < Rows; ++r) y[r] = hsum(acc[r]);
}

template <int Rows>
QAQ_LLAMA_AVX2 inline void dot_q8_0_avx2(const std::uint8_t* const* row, const dot_operand& v, float* y,
                                         const std::uint8_t* end) {
    __m256 acc[Rows];
    for (int r = 0; r < Rows; ++r) acc[r] = _mm256_setzero_ps();
    const std::int64_t blocks = v.n / qk;
    for (std::int64_t b = 0; b < blocks; ++b) {
        const float* xb = v.x + b * qk;
        const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8), x2 = _mm256_loadu_ps(xb + 16),
                     x3 = _mm256_loadu_ps(xb + 24);
        for (int r = 0; r < Rows; ++r) {
            const std::uint8_t* blk = row[r] + b * 34;
            prefetch(blk, end);
            const __m128i q01 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
            const __m128i q23 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 18));
            __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q01)), x0);
            s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q01, 8))), x1, s);
            s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q23)), x2, s);
            s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q23, 8))), x3, s);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(blk)), s, acc[r]);
        }
    }
    for (int r = 0; r < Rows; ++r) y[r] = hsum(acc[r]);
}

QAQ_LLAMA_AVX2 inline float dot_f32_avx2(const std::uint8_t* row, const dot_operand& v) {
    __m256 acc = _mm256_setzero_ps();
    std::int64_t i = 0;
    for (; i + 8 <= v.n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(reinterpret_cast<const float*>(row) + i), _mm256_loadu_ps(v.x + i), acc);
    float total = hsum(acc);
    for (; i < v.n; ++i) {
        float w;
        std::memcpy(&w, row + 4 * i, 4);
        total += w * v.x[i];
    }
    return total;
}

QAQ_LLAMA_AVX2 inline float dot_f16_avx2(const std::uint8_t* row, const dot_operand& v) {
    __m256 acc = _mm256_setzero_ps();
    std::int64_t i = 0;
    for (; i + 8 <= v.n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i))),
                              _mm256_loadu_ps(v.x + i), acc);
    float total = hsum(acc);
    for (; i < v.n; ++i) total += fp16_to_fp32(load_u16(row + 2 * i)) * v.x[i];
    return total;
}

template <int Rows>
QAQ_LLAMA_AVX2 inline void dot_block_rows_avx2(ggml_type type, const std::uint8_t* const* row, const dot_operand& v,
                                               float* y, const std::uint8_t* end) {
    switch (type) {
        case ggml_type::q4_1: dot_q4_1_avx2<Rows>(row, v, y, end); return;
        case ggml_type::q4_0: dot_q4_0_avx2<Rows>(row, v, y, end); return;
        case ggml_type::q8_0: dot_q8_0_avx2<Rows>(row, v, y, end); return;
        case ggml_type::f32:
            for (int r = 0; r < Rows; ++r) y[r] = dot_f32_avx2(row[r], v);
            return;
        case ggml_type::f16:
            for (int r = 0; r < Rows; ++r) y[r] = dot_f16_avx2(row[r], v);
            return;
        default:
            for (int r = 0; r < Rows; ++r) y[r] = dot_row_scalar(type, row[r], v);
            return;
    }
}

QAQ_LLAMA_AVX2 inline void dot_rows_avx2(ggml_type type, const std::uint8_t* data, std::int64_t row_bytes,
                                         std::int64_t first, std::int64_t count, const dot_operand& v, float* y) {
    std::int64_t r = 0;
    const std::uint8_t* rows[4];
    const std::uint8_t* end = data + (first + count) * row_bytes;
    for (; r + 4 <= count; r += 4) {
        for (int k = 0; k < 4; ++k) rows[k] = data + (first + r + k) * row_bytes;
        dot_block_rows_avx2<4>(type, rows, v, y + r, end);
    }
    for (; r < count; ++r) {
        rows[0] = data + (first + r) * row_bytes;
        dot_block_rows_avx2<1>(type, rows, v, y + r, end);
    }
}
#endif  // QAQ_LLAMA_X86_KERNELS

}  // namespace detail

/// y[i] = row(first + i) . x for i in [0, count), rows of `v.n` elements
/// stored in `type` (`row_bytes` apart). `v.block_sums` must be set for Q4_1.
inline void dot_rows(ggml_type type, const std::uint8_t* data, std::int64_t row_bytes, std::int64_t first,
                     std::int64_t count, const dot_operand& v, float* y, simd_level level = active_simd_level()) {
    require_dequantizable(type, "a weight matrix");
    QAQ_CHECK(type != ggml_type::q4_1 || v.block_sums != nullptr, "dot_rows on Q4_1 rows needs the block sums of x");
#if QAQ_LLAMA_X86_KERNELS
    if (level == simd_level::avx2 && cpu_has_avx2()) {
        detail::dot_rows_avx2(type, data, row_bytes, first, count, v, y);
        return;
    }
#else
    (void)level;
#endif
    for (std::int64_t r = 0; r < count; ++r) y[r] = detail::dot_row_scalar(type, data + (first + r) * row_bytes, v);
}

}  // namespace qaq::llama
