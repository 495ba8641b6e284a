#pragma once
// Portability and versioning for every qaq header.
//
// QAQ_HOST_DEVICE marks functions that are compiled for both the host and a CUDA
// device, so the scalar core of a kernel can be unit-tested on the CPU.

#define QAQ_VERSION_MAJOR 0
#define QAQ_VERSION_MINOR 1
#define QAQ_VERSION_PATCH 0
#define QAQ_VERSION_STRING "0.1.0"

#if defined(__CUDACC__)
#define QAQ_HAS_CUDA 1
#define QAQ_HOST_DEVICE __forceinline__ __host__ __device__
#else
#define QAQ_HAS_CUDA 0
#define QAQ_HOST_DEVICE inline
#endif

// Keeps a rarely taken or heavy path out of its caller, whose own hot code then stays
// within the compiler's inlining budget.
#if defined(__GNUC__) || defined(__clang__)
#define QAQ_NOINLINE __attribute__((noinline))
#elif defined(_MSC_VER)
#define QAQ_NOINLINE __declspec(noinline)
#else
#define QAQ_NOINLINE
#endif

// For small SIMD helpers called in a kernel's inner loop, which GCC's inlining budget can
// leave as calls (passing vectors through memory) once the enclosing function is large.
#if defined(__GNUC__) || defined(__clang__)
#define QAQ_ALWAYS_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define QAQ_ALWAYS_INLINE __forceinline
#else
#define QAQ_ALWAYS_INLINE inline
#endif

// Full unrolling of a short loop over an array of vector registers, so that the array stays
// in registers (GCC keeps a rolled loop's array in memory). Other compilers ignore it.
#if defined(__GNUC__) || defined(__clang__)
#define QAQ_PRAGMA(text) _Pragma(#text)
#define QAQ_UNROLL(n) QAQ_PRAGMA(GCC unroll n)
#else
#define QAQ_UNROLL(n)
#endif

// The inline namespace versions the ABI: two qaq versions linked into one
// program cannot silently mix their types.
#define QAQ_NAMESPACE_BEGIN \
    namespace qaq {         \
    inline namespace v0 {
#define QAQ_NAMESPACE_END \
    }                     \
    }

QAQ_NAMESPACE_BEGIN
/// Version of the library as "major.minor.patch"; part of every result-cache key.
inline constexpr const char* version_string = QAQ_VERSION_STRING;
QAQ_NAMESPACE_END
