// qaq-bench's main(): Google Benchmark's, plus what the binary was built
// with, recorded in the "context" of every result (console and JSON), so a
// committed results/*.json says how its figures were obtained.

#include <benchmark/benchmark.h>

#include <string>

#include "qaq/config.hpp"

#ifndef QAQ_BENCH_COMPILER
#define QAQ_BENCH_COMPILER "unknown"
#endif
#ifndef QAQ_BENCH_FLAGS
#define QAQ_BENCH_FLAGS ""
#endif
#ifndef QAQ_BENCH_BUILD_TYPE
#define QAQ_BENCH_BUILD_TYPE ""
#endif

namespace {

// The vector extensions the compiler was allowed to use (not what the CPU has).
std::string simd_extensions() {
    std::string s;
    auto add = [&s](const char* name) { s += s.empty() ? name : std::string(" ") + name; };
#if defined(__AVX512F__)
    add("avx512f");
#endif
#if defined(__AVX2__)
    add("avx2");
#endif
#if defined(__FMA__)
    add("fma");
#endif
#if defined(__F16C__)
    add("f16c");
#endif
#if defined(__BMI2__)
    add("bmi2");
#endif
#if defined(__AVX__) && !defined(__AVX2__)
    add("avx");
#endif
#if defined(__SSE4_2__) && !defined(__AVX__)
    add("sse4.2");
#endif
#if defined(__ARM_NEON)
    add("neon");
#endif
    (void)add;  // a baseline target defines none of the macros above
    return s.empty() ? "baseline" : s;
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::AddCustomContext("qaq_version", qaq::version_string);
    benchmark::AddCustomContext("qaq_compiler", QAQ_BENCH_COMPILER);
    benchmark::AddCustomContext("qaq_flags", QAQ_BENCH_FLAGS);
    benchmark::AddCustomContext("qaq_build_type", QAQ_BENCH_BUILD_TYPE);
    benchmark::AddCustomContext("qaq_simd", simd_extensions());
#ifdef NDEBUG
    benchmark::AddCustomContext("qaq_assertions", "off (NDEBUG)");
#else
    benchmark::AddCustomContext("qaq_assertions", "ON: not an optimised build, figures are not representative");
#endif
#if defined(__SANITIZE_ADDRESS__)
    benchmark::AddCustomContext("qaq_sanitizers", "ON: instrumented build, figures are not representative");
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    benchmark::AddCustomContext("qaq_sanitizers", "ON: instrumented build, figures are not representative");
#endif
#endif
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
