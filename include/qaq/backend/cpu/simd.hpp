#pragma once
// Which SIMD kernels the CPU backend may run, decided at run time.
//
// qaq is header-only and is usually compiled without -march flags, so the
// AVX2 kernels are compiled for AVX2 + FMA + F16C with a function attribute
// (GCC, Clang) and chosen at run time when the processor has those
// extensions. With MSVC they are compiled only under /arch:AVX2. Everything
// has a scalar path that computes the same results (bit for bit where the
// scalar path is the definition: codes, packing; up to float summation order
// in the attention dot products).
//
// QAQ_DISABLE_SIMD (defined before including qaq) compiles the scalar paths
// only. `set_simd_enabled(false)` switches the AVX2 kernels off at run time;
// tests use it to compare both paths in one binary.

#include <atomic>
#include <cstdint>
#include <cstring>

#include "qaq/config.hpp"

#if !defined(QAQ_DISABLE_SIMD) && !defined(__CUDACC__) && (defined(__x86_64__) || defined(_M_X64))
#if defined(__GNUC__) || defined(__clang__)
#define QAQ_SIMD_AVX2 1
#define QAQ_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#elif defined(__AVX2__)
#define QAQ_SIMD_AVX2 1
#define QAQ_TARGET_AVX2
#endif
#endif
#ifndef QAQ_SIMD_AVX2
#define QAQ_SIMD_AVX2 0
#define QAQ_TARGET_AVX2
#endif

#if QAQ_SIMD_AVX2
#include <immintrin.h>
#if defined(__GNUC__) || defined(__clang__)
#include <cpuid.h>
#endif
#endif

QAQ_NAMESPACE_BEGIN
namespace backend::simd {

namespace detail {
inline bool cpu_has_avx2() noexcept {
#if QAQ_SIMD_AVX2 && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    // F16C from CPUID leaf 1 (ECX bit 29): clang before 18 has no "f16c" for __builtin_cpu_supports
    // (an error, which broke the clang-14 fuzz build).
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
#elif QAQ_SIMD_AVX2
    return true;  // compiled with /arch:AVX2
#else
    return false;
#endif
}
inline std::atomic<bool>& enabled_flag() noexcept {
    static std::atomic<bool> enabled{true};
    return enabled;
}
}  // namespace detail

/// True when the processor runs the AVX2 kernels (probed once).
inline bool avx2_supported() noexcept {
    static const bool supported = detail::cpu_has_avx2();
    return supported;
}

/// True when the AVX2 kernels are used: supported and not switched off.
inline bool use_avx2() noexcept { return avx2_supported() && detail::enabled_flag().load(std::memory_order_relaxed); }

/// Switches the SIMD kernels on or off for the whole program (tests compare both paths);
/// returns the previous setting.
inline bool set_simd_enabled(bool on) noexcept { return detail::enabled_flag().exchange(on); }

/// Restores the previous setting at scope exit.
class scoped_simd {
public:
    explicit scoped_simd(bool on) noexcept : previous_(set_simd_enabled(on)) {}
    ~scoped_simd() { set_simd_enabled(previous_); }
    scoped_simd(const scoped_simd&) = delete;
    scoped_simd& operator=(const scoped_simd&) = delete;

private:
    bool previous_;
};

/// An IEEE binary16 value (its bits) as float, exactly (subnormals, infinities and NaN included).
inline float half_to_float(std::uint16_t h) noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t magnitude = h & 0x7FFFu;
    std::uint32_t bits;
    if (magnitude >= 0x7C00u) {
        bits = 0x7F800000u | ((magnitude & 0x3FFu) << 13);  // inf, NaN (payload kept)
    } else if (magnitude >= 0x0400u) {
        bits = (magnitude << 13) + ((127u - 15u) << 23);  // normal
    } else {
        const float f = static_cast<float>(magnitude) * 5.9604644775390625e-8f;  // subnormal: m * 2^-24, exact
        std::memcpy(&bits, &f, 4);
    }
    bits |= sign;
    float out;
    std::memcpy(&out, &bits, 4);
    return out;
}

namespace detail {
#if QAQ_SIMD_AVX2
QAQ_TARGET_AVX2 inline void halves_to_floats_avx2(const std::uint8_t* in, std::int64_t n, float* out) noexcept {
    std::int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i))));
    for (; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        out[i] = half_to_float(h);
    }
}
#endif
}  // namespace detail

/// n binary16 values (little-endian bytes at `in`) as floats.
inline void halves_to_floats(const std::uint8_t* in, std::int64_t n, float* out) noexcept {
#if QAQ_SIMD_AVX2
    if (use_avx2()) {
        detail::halves_to_floats_avx2(in, n, out);
        return;
    }
#endif
    for (std::int64_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        out[i] = half_to_float(h);
    }
}

}  // namespace backend::simd
QAQ_NAMESPACE_END
