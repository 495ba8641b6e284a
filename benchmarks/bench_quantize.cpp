// Whole-tensor quantizer::quantize and dequantize throughput, single thread,
// against a memcpy of the same number of bytes (the physical limit of moving
// the cache once).
//
// Input: 16 MiB of float32, one layer, batch 1, 8 heads, T tokens, head_dim D
// (T = 8192 for D = 64, 4096 for D = 128), N(0, 1) values. Head-level groups,
// fixed widths, uniform_zero_point codec with fp16 parameters, outliers none
// or quantile(0.01). Bytes processed = float32 input bytes (what quantize
// reads and dequantize writes), so bytes_per_second / BM_memcpy's is the
// fraction of memcpy bandwidth.

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "qaq/policy/bits/fixed.hpp"
#include "qaq/policy/bits/value_attention.hpp"
#include "qaq/policy/outliers/none.hpp"
#include "qaq/policy/outliers/quantile.hpp"
#include "qaq/policy/storage/uniform_zero_point.hpp"
#include "qaq/quantizer.hpp"

namespace {

using namespace qaq_bench;

constexpr std::int64_t input_bytes = 16 * MiB;
constexpr std::int64_t heads = 8;
constexpr double outlier_ratio = 0.01;

using plain_quantizer = qaq::quantizer<qaq::bits::fixed, qaq::outliers::none, qaq::storage::uniform_zero_point>;
using outlier_quantizer = qaq::quantizer<qaq::bits::fixed, qaq::outliers::quantile, qaq::storage::uniform_zero_point>;
// The attention-aware policy of the paper: value_attention widths 2..8 from a predicted
// attention row, quantile(0.01) outliers.
using attention_quantizer =
    qaq::quantizer<qaq::bits::value_attention, qaq::outliers::quantile, qaq::storage::uniform_zero_point>;

qaq::kv_shape shape_for(std::int64_t D) {
    return {1, 1, heads, input_bytes / static_cast<std::int64_t>(sizeof(float)) / (heads * D), D};
}

// The input of one head_dim (16 MiB), kept while consecutive benchmarks use it.
const std::vector<float>& input_for(std::int64_t D) {
    static memo<std::vector<float>> inputs;
    return inputs.get(std::to_string(D), [&] {
        return std::make_unique<std::vector<float>>(normal_floats(shape_for(D).element_count(), 1000u + D));
    });
}

template <class Q>
Q make_quantizer(int bits);
template <>
plain_quantizer make_quantizer<plain_quantizer>(int bits) {
    return plain_quantizer(qaq::bits::fixed(bits), qaq::outliers::none{}, {false, qaq::storage_precision::fp16},
                           qaq::group_level::head);
}
template <>
outlier_quantizer make_quantizer<outlier_quantizer>(int bits) {
    return outlier_quantizer(qaq::bits::fixed(bits), qaq::outliers::quantile(outlier_ratio),
                             {false, qaq::storage_precision::fp16}, qaq::group_level::head);
}

template <>
attention_quantizer make_quantizer<attention_quantizer>(int) {
    return attention_quantizer(qaq::bits::value_attention(1, 0.02, 2, 8), qaq::outliers::quantile(outlier_ratio),
                               {false, qaq::storage_precision::fp16}, qaq::group_level::head);
}

// One attention row [1, 1, heads, 1, T] for the attention-aware policy: a softmax of N(0, 2) logits.
const std::vector<float>& attention_for(const qaq::kv_shape& shape) {
    static memo<std::vector<float>> rows;
    return rows.get(std::to_string(shape.tokens), [&] {
        auto a = std::make_unique<std::vector<float>>(normal_floats(shape.heads * shape.tokens, 77u, 2.0f));
        for (std::int64_t h = 0; h < shape.heads; ++h) {
            float* row = a->data() + h * shape.tokens;
            double sum = 0.0;
            for (std::int64_t t = 0; t < shape.tokens; ++t) sum += (row[t] = std::exp(row[t]));
            for (std::int64_t t = 0; t < shape.tokens; ++t) row[t] = static_cast<float>(row[t] / sum);
        }
        return a;
    });
}
qaq::attention_view<const float> attention_view_for(const qaq::kv_shape& shape) {
    return qaq::attention_view<const float>::contiguous(attention_for(shape).data(), {1, 1, shape.heads, 1, shape.tokens});
}

void set_counters(benchmark::State& state, const qaq::kv_shape& shape, const qaq::packed_tensor& packed) {
    const qaq::byte_report r = packed.bytes();
    state.SetBytesProcessed(state.iterations() * input_bytes);
    state.counters["T"] = static_cast<double>(shape.tokens);
    state.counters["groups"] = static_cast<double>(packed.group_count());
    state.counters["input_bytes"] = static_cast<double>(input_bytes);
    state.counters["packed_bytes"] = static_cast<double>(r.used());
    state.counters["bits_per_element"] = r.bits_per_element();
}

template <class Q>
void run_quantize(benchmark::State& state, std::int64_t D, int bits) {
    const qaq::kv_shape shape = shape_for(D);
    const auto& input = input_for(D);
    const auto view = qaq::kv_view<const float>::contiguous(input.data(), shape);
    const Q q = make_quantizer<Q>(bits);
    const auto attention = attention_view_for(shape);
    for (auto _ : state) {
        qaq::packed_tensor packed = q.quantize(view, attention);
        benchmark::DoNotOptimize(packed.codes.data());
        benchmark::ClobberMemory();
    }
    set_counters(state, shape, q.quantize(view, attention));
}

template <class Q>
void run_dequantize(benchmark::State& state, std::int64_t D, int bits) {
    const qaq::kv_shape shape = shape_for(D);
    const auto& input = input_for(D);
    const Q q = make_quantizer<Q>(bits);
    const qaq::packed_tensor packed =
        q.quantize(qaq::kv_view<const float>::contiguous(input.data(), shape), attention_view_for(shape));
    std::vector<float> output(input.size(), 0.0f);  // touched once: no page faults in the loop
    const auto out = qaq::kv_view<float>::contiguous(output.data(), shape);
    for (auto _ : state) {
        q.dequantize(packed, out);
        benchmark::DoNotOptimize(output.data());
        benchmark::ClobberMemory();
    }
    set_counters(state, shape, packed);
}

// Args: D, bits, policy (0: fixed bits, no outliers; 1: fixed bits, quantile(0.01);
// 2: value_attention 2..8 with quantile(0.01), bits ignored).
void BM_quantize(benchmark::State& state) {
    const auto D = state.range(0);
    const int bits = static_cast<int>(state.range(1));
    if (state.range(2) == 2) run_quantize<attention_quantizer>(state, D, bits);
    else if (state.range(2)) run_quantize<outlier_quantizer>(state, D, bits);
    else run_quantize<plain_quantizer>(state, D, bits);
}

void BM_dequantize(benchmark::State& state) {
    const auto D = state.range(0);
    const int bits = static_cast<int>(state.range(1));
    if (state.range(2) == 2) run_dequantize<attention_quantizer>(state, D, bits);
    else if (state.range(2)) run_dequantize<outlier_quantizer>(state, D, bits);
    else run_dequantize<plain_quantizer>(state, D, bits);
}

void quantize_args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"D", "bits", "quantile"});
    for (std::int64_t D : {64, 128})
        for (std::int64_t bits : {2, 3, 4, 8})
            for (std::int64_t outliers : {0, 1}) b->Args({D, bits, outliers});
    for (std::int64_t D : {64, 128}) b->Args({D, 0, 2});  // attention-aware widths 2..8
    b->Unit(benchmark::kMillisecond);
}

// The physical limit: copying the same 16 MiB (bytes processed = bytes copied).
void BM_memcpy(benchmark::State& state) {
    const auto bytes = static_cast<std::size_t>(state.range(0));
    std::vector<char> src(bytes, 1), dst(bytes, 0);
    for (auto _ : state) {
        std::memcpy(dst.data(), src.data(), bytes);
        benchmark::DoNotOptimize(dst.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes));
    state.counters["input_bytes"] = static_cast<double>(bytes);
}

}  // namespace

BENCHMARK(BM_memcpy)->ArgName("bytes")->Arg(input_bytes)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_quantize)->Apply(quantize_args);
BENCHMARK(BM_dequantize)->Apply(quantize_args);
