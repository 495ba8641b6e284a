// One decode step of attention, single thread: quantized_kv_cache::attend
// straight over the packed codes, against the same attention over an FP32
// cache and over an FP16 cache (plain Eigen, no qaq code involved).
//
// One layer, one KV head, `Hq` query heads reading it (1, and 4 for the GQA
// case), T cached tokens of head_dim D, N(0, 1) keys, values and queries.
// qaq: quantizer<bits::fixed, outliers::none, storage::uniform_zero_point>
// with fp16 parameters, the same width for keys and values, filled by prefill
// outside the timed loop.
//
// Bytes processed per call = bytes the call has to read: the packed cache
// (cache.bytes().quantized().used(): codes, parameters, width tags, slot
// indices) for qaq, 2*T*D*4 for FP32 and 2*T*D*2 for FP16. tokens_per_second
// counts cached tokens attended over per second.

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "qaq/kv_cache.hpp"
#include "qaq/policy/bits/fixed.hpp"
#include "qaq/policy/outliers/none.hpp"
#include "qaq/policy/storage/uniform_zero_point.hpp"
#include "qaq/quantizer.hpp"

#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

namespace {

using namespace qaq_bench;

using fixed_quantizer = qaq::quantizer<qaq::bits::fixed, qaq::outliers::none, qaq::storage::uniform_zero_point>;
using qaq_cache = qaq::quantized_kv_cache<fixed_quantizer, fixed_quantizer>;

using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Keys and values [T][D] and queries [Hq][D]: the same data for every variant.
struct inputs {
    std::vector<float> keys, values, queries;
    inputs(std::int64_t T, std::int64_t D, std::int64_t Hq)
        : keys(normal_floats(T * D, 1u)), values(normal_floats(T * D, 2u)), queries(normal_floats(Hq * D, 3u)) {}
};

std::string key_of(const char* kind, std::int64_t T, std::int64_t D, std::int64_t Hq, std::int64_t bits = 0) {
    return std::string(kind) + "/" + std::to_string(T) + "/" + std::to_string(D) + "/" + std::to_string(Hq) + "/" +
           std::to_string(bits);
}

void set_counters(benchmark::State& state, std::int64_t T, std::int64_t D, std::int64_t Hq, std::int64_t bytes) {
    state.SetBytesProcessed(state.iterations() * bytes);
    state.counters["T"] = static_cast<double>(T);
    state.counters["D"] = static_cast<double>(D);
    state.counters["query_heads"] = static_cast<double>(Hq);
    state.counters["bytes_per_call"] = static_cast<double>(bytes);
    state.counters["tokens_per_second"] = benchmark::Counter(static_cast<double>(T), benchmark::Counter::kIsIterationInvariantRate);
}

// ---------------------------------------------------------------------------
// qaq: attend over the packed cache.
// ---------------------------------------------------------------------------
struct qaq_case {
    qaq_cache cache;
    std::vector<float> queries, output, probabilities;

    qaq_case(std::int64_t T, std::int64_t D, std::int64_t Hq, int bits)
        : cache(qaq::kv_cache_shape{1, 1, Hq, D, T}, make(bits), make(bits)) {
        const inputs in(T, D, Hq);
        const qaq::kv_shape shape{1, 1, 1, T, D};
        cache.prefill(qaq::kv_view<const float>::contiguous(in.keys.data(), shape),
                      qaq::kv_view<const float>::contiguous(in.values.data(), shape));
        queries = in.queries;
        output.assign(static_cast<std::size_t>(Hq * D), 0.0f);
        probabilities.assign(static_cast<std::size_t>(Hq * T), 0.0f);
    }
    static fixed_quantizer make(int bits) {
        return fixed_quantizer(qaq::bits::fixed(bits), qaq::outliers::none{}, {false, qaq::storage_precision::fp16},
                               qaq::group_level::head);
    }
};

// Args: T, D, bits, Hq.
void BM_attend_qaq(benchmark::State& state) {
    const std::int64_t T = state.range(0), D = state.range(1), Hq = state.range(3);
    const int bits = static_cast<int>(state.range(2));
    static memo<qaq_case> cases;
    qaq_case& c = cases.get(key_of("qaq", T, D, Hq, bits), [&] { return std::make_unique<qaq_case>(T, D, Hq, bits); });
    for (auto _ : state) {
        c.cache.attend(0, c.queries.data(), static_cast<std::int64_t>(c.queries.size()), c.output.data(),
                       static_cast<std::int64_t>(c.output.size()), c.probabilities.data(),
                       static_cast<std::int64_t>(c.probabilities.size()));
        benchmark::DoNotOptimize(c.output.data());
        benchmark::ClobberMemory();
    }
    const qaq::kv_cache_byte_report bytes = c.cache.bytes();
    set_counters(state, T, D, Hq, bytes.quantized().used());
    state.counters["bits"] = bits;
    state.counters["bits_per_element"] = bytes.quantized().bits_per_element();
}

// ---------------------------------------------------------------------------
// FP32 baseline: scores = K Q / sqrt(D), column softmax, out = V^T P.
// ---------------------------------------------------------------------------
void softmax_columns(Eigen::Ref<Eigen::MatrixXf> p) {
    for (Eigen::Index j = 0; j < p.cols(); ++j) {
        auto a = p.col(j).array();
        a = (a - a.maxCoeff()).exp();
        a /= a.sum();
    }
}

struct float_case {
    std::vector<float> keys, values, queries, output, probabilities;
    float_case(std::int64_t T, std::int64_t D, std::int64_t Hq) {
        inputs in(T, D, Hq);
        keys = std::move(in.keys);
        values = std::move(in.values);
        queries = std::move(in.queries);
        output.assign(static_cast<std::size_t>(Hq * D), 0.0f);
        probabilities.assign(static_cast<std::size_t>(Hq * T), 0.0f);
    }
};

void attend_fp32(const float* k, const float* v, const float* q, std::int64_t T, std::int64_t D, std::int64_t Hq,
                 float* out, float* p) {
    const Eigen::Map<const row_major> K(k, T, D), V(v, T, D);
    const Eigen::Map<const Eigen::MatrixXf> Q(q, D, Hq);  // [Hq][D]: one query head per column
    Eigen::Map<Eigen::MatrixXf> P(p, T, Hq), O(out, D, Hq);
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    P.noalias() = K * Q;
    P *= scale;
    softmax_columns(P);
    O.noalias() = V.transpose() * P;
}

void BM_attend_fp32(benchmark::State& state) {
    const std::int64_t T = state.range(0), D = state.range(1), Hq = state.range(2);
    static memo<float_case> cases;
    float_case& c = cases.get(key_of("fp32", T, D, Hq), [&] { return std::make_unique<float_case>(T, D, Hq); });
    for (auto _ : state) {
        attend_fp32(c.keys.data(), c.values.data(), c.queries.data(), T, D, Hq, c.output.data(), c.probabilities.data());
        benchmark::DoNotOptimize(c.output.data());
        benchmark::ClobberMemory();
    }
    set_counters(state, T, D, Hq, 2 * T * D * static_cast<std::int64_t>(sizeof(float)));
}

// ---------------------------------------------------------------------------
// FP16 baseline: K and V stored as Eigen::half, converted to float one block
// of rows at a time (the block stays in L1/L2), then the FP32 products.
// The conversion uses F16C (8 halves per instruction) when the target has it:
// Eigen 3.4's `.cast<float>()` of a half matrix converts one element at a
// time, which made this baseline ~20x slower than FP32 at T = 1k, D = 64 (an
// FP16 cache that no real kernel would ship).
// ---------------------------------------------------------------------------
constexpr std::int64_t fp16_block_rows = 64;

void half_to_float(const Eigen::half* in, std::int64_t n, float* out) {
    std::int64_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
    }
#endif
    for (; i < n; ++i) out[i] = static_cast<float>(in[i]);
}

struct half_case {
    std::vector<Eigen::half> keys, values;
    std::vector<float> queries, output, probabilities, block;
    half_case(std::int64_t T, std::int64_t D, std::int64_t Hq) {
        const inputs in(T, D, Hq);
        keys.reserve(in.keys.size());
        values.reserve(in.values.size());
        for (float x : in.keys) keys.emplace_back(x);
        for (float x : in.values) values.emplace_back(x);
        queries = in.queries;
        output.assign(static_cast<std::size_t>(Hq * D), 0.0f);
        probabilities.assign(static_cast<std::size_t>(Hq * T), 0.0f);
        block.assign(static_cast<std::size_t>(fp16_block_rows * D), 0.0f);
    }
};

void attend_fp16(const Eigen::half* k, const Eigen::half* v, const float* q, std::int64_t T, std::int64_t D,
                 std::int64_t Hq, float* out, float* p, float* block) {
    const Eigen::Map<const Eigen::MatrixXf> Q(q, D, Hq);
    Eigen::Map<Eigen::MatrixXf> P(p, T, Hq), O(out, D, Hq);
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    for (std::int64_t t0 = 0; t0 < T; t0 += fp16_block_rows) {
        const std::int64_t rows = std::min(fp16_block_rows, T - t0);
        half_to_float(k + t0 * D, rows * D, block);
        const Eigen::Map<const row_major> B(block, rows, D);
        P.middleRows(t0, rows).noalias() = B * Q;
    }
    P *= scale;
    softmax_columns(P);
    O.setZero();
    for (std::int64_t t0 = 0; t0 < T; t0 += fp16_block_rows) {
        const std::int64_t rows = std::min(fp16_block_rows, T - t0);
        half_to_float(v + t0 * D, rows * D, block);
        const Eigen::Map<const row_major> B(block, rows, D);
        O.noalias() += B.transpose() * P.middleRows(t0, rows);
    }
}

void BM_attend_fp16(benchmark::State& state) {
    const std::int64_t T = state.range(0), D = state.range(1), Hq = state.range(2);
    static memo<half_case> cases;
    half_case& c = cases.get(key_of("fp16", T, D, Hq), [&] { return std::make_unique<half_case>(T, D, Hq); });
    for (auto _ : state) {
        attend_fp16(c.keys.data(), c.values.data(), c.queries.data(), T, D, Hq, c.output.data(),
                    c.probabilities.data(), c.block.data());
        benchmark::DoNotOptimize(c.output.data());
        benchmark::ClobberMemory();
    }
    set_counters(state, T, D, Hq, 2 * T * D * static_cast<std::int64_t>(sizeof(Eigen::half)));
}

// ---------------------------------------------------------------------------
// Ranges. GQA (4 query heads per KV head) at one size.
// ---------------------------------------------------------------------------
constexpr std::int64_t token_counts[] = {1024, 4096, 8192, 16384, 32768};
constexpr std::int64_t head_dims[] = {64, 128};
constexpr std::int64_t widths[] = {2, 3, 4, 8};
constexpr std::int64_t gqa_tokens = 4096, gqa_head_dim = 128, gqa_query_heads = 4;

void qaq_args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"T", "D", "bits", "Hq"});
    for (auto T : token_counts)
        for (auto D : head_dims)
            for (auto bits : widths) b->Args({T, D, bits, 1});
    for (auto bits : widths) b->Args({gqa_tokens, gqa_head_dim, bits, gqa_query_heads});
    b->Unit(benchmark::kMicrosecond);
}

void baseline_args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"T", "D", "Hq"});
    for (auto T : token_counts)
        for (auto D : head_dims) b->Args({T, D, 1});
    b->Args({gqa_tokens, gqa_head_dim, gqa_query_heads});
    b->Unit(benchmark::kMicrosecond);
}

}  // namespace

BENCHMARK(BM_attend_fp32)->Apply(baseline_args);
BENCHMARK(BM_attend_fp16)->Apply(baseline_args);
BENCHMARK(BM_attend_qaq)->Apply(qaq_args);
