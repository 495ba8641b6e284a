// The decode-time cache's other operations, single thread, on one layer of a
// Llama-3-8B-like shape: 8 KV heads, 32 query heads, head_dim 128.
//
//   BM_append     one token (keys + values of all 8 KV heads) into a cache that
//                 already holds T tokens; 8192 appends per run (the cache
//                 grows from T to T + 8192)
//   BM_rebalance  one rebalance after a new attention row was observed (the
//                 observe is not timed), adaptive widths 2..8
//   BM_prefill    quantizing a whole prefilled cache (construction included)
//
// policy 0: fixed 4 bits, no outliers (qaq::bits::fixed / outliers::none).
// policy 1: QAQ adaptive widths, keys key_query_norm, values value_attention,
//           bits 2..8, attention window 3, quantile(0.01) outliers.
// Both with uniform_zero_point codes and fp16 parameters, head-level groups.
// Bytes processed: float32 input bytes (append, prefill) and host-copy bytes
// read to re-encode groups (rebalance).

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <memory>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "qaq/kv_cache.hpp"
#include "qaq/policy/bits/fixed.hpp"
#include "qaq/policy/bits/key_query_norm.hpp"
#include "qaq/policy/bits/value_attention.hpp"
#include "qaq/policy/outliers/none.hpp"
#include "qaq/policy/outliers/quantile.hpp"
#include "qaq/policy/storage/uniform_zero_point.hpp"
#include "qaq/quantizer.hpp"

namespace {

using namespace qaq_bench;

constexpr std::int64_t kv_heads = 8, query_heads = 32, head_dim = 128;
constexpr int window = 3, bits_min = 2, bits_max = 8, fixed_bits = 4;
constexpr double outlier_ratio = 0.01;
constexpr std::int64_t appends_per_run = 8192;

using fixed_quantizer = qaq::quantizer<qaq::bits::fixed, qaq::outliers::none, qaq::storage::uniform_zero_point>;
using key_quantizer = qaq::quantizer<qaq::bits::key_query_norm, qaq::outliers::quantile, qaq::storage::uniform_zero_point>;
using value_quantizer =
    qaq::quantizer<qaq::bits::value_attention, qaq::outliers::quantile, qaq::storage::uniform_zero_point>;
using fixed_cache = qaq::quantized_kv_cache<fixed_quantizer, fixed_quantizer>;
using adaptive_cache = qaq::quantized_kv_cache<key_quantizer, value_quantizer>;

constexpr qaq::storage::uniform_zero_point codec{false, qaq::storage_precision::fp16};

fixed_quantizer make_fixed() {
    return fixed_quantizer(qaq::bits::fixed(fixed_bits), qaq::outliers::none{}, codec, qaq::group_level::head);
}
key_quantizer make_keys() {
    return key_quantizer(qaq::bits::key_query_norm(20.0, 0.05, bits_min, bits_max, window),
                         qaq::outliers::quantile(outlier_ratio), codec, qaq::group_level::head);
}
value_quantizer make_values() {
    return value_quantizer(qaq::bits::value_attention(window, 0.02, bits_min, bits_max),
                           qaq::outliers::quantile(outlier_ratio), codec, qaq::group_level::head);
}

qaq::kv_cache_shape cache_shape(std::int64_t max_tokens) {
    return {1, kv_heads, query_heads, head_dim, max_tokens};
}

/// One attention row per query head: softmax of N(0, 2^2) logits, peaked like real attention.
std::vector<float> attention_row(std::int64_t tokens, std::uint32_t seed) {
    std::vector<float> p = normal_floats(query_heads * tokens, seed, 2.0f);
    for (std::int64_t q = 0; q < query_heads; ++q) {
        Eigen::Map<Eigen::ArrayXf> a(p.data() + q * tokens, tokens);
        a = (a - a.maxCoeff()).exp();
        a /= a.sum();
    }
    return p;
}

/// A prefill's input: keys and values [1, 1, kv_heads, T, head_dim] and
/// `window` attention rows [1, 1, query_heads, window, T].
struct prefill_input {
    std::int64_t tokens;
    std::vector<float> keys, values, attention;
    explicit prefill_input(std::int64_t T)
        : tokens(T), keys(normal_floats(kv_heads * T * head_dim, 11u)),
          values(normal_floats(kv_heads * T * head_dim, 12u)),
          attention(static_cast<std::size_t>(query_heads * window * T)) {
        for (int r = 0; r < window; ++r) {
            const std::vector<float> row = attention_row(T, 100u + static_cast<std::uint32_t>(r));
            for (std::int64_t q = 0; q < query_heads; ++q)
                std::copy(row.begin() + q * T, row.begin() + (q + 1) * T, attention.begin() + (q * window + r) * T);
        }
    }
    qaq::kv_view<const float> key_view() const { return qaq::kv_view<const float>::contiguous(keys.data(), shape()); }
    qaq::kv_view<const float> value_view() const {
        return qaq::kv_view<const float>::contiguous(values.data(), shape());
    }
    qaq::attention_view<const float> attention_view() const {
        return qaq::attention_view<const float>::contiguous(attention.data(), {1, 1, query_heads, window, tokens});
    }
    qaq::kv_shape shape() const { return {1, 1, kv_heads, tokens, head_dim}; }
    std::int64_t bytes() const { return static_cast<std::int64_t>((keys.size() + values.size()) * sizeof(float)); }
};

const prefill_input& input_for(std::int64_t T) {
    static memo<prefill_input> inputs;
    return inputs.get(std::to_string(T), [&] { return std::make_unique<prefill_input>(T); });
}

template <class Cache>
std::unique_ptr<Cache> prefilled(std::int64_t max_tokens, const prefill_input& in);
template <>
std::unique_ptr<fixed_cache> prefilled<fixed_cache>(std::int64_t max_tokens, const prefill_input& in) {
    auto c = std::make_unique<fixed_cache>(cache_shape(max_tokens), make_fixed(), make_fixed());
    c->prefill(in.key_view(), in.value_view());
    return c;
}
template <>
std::unique_ptr<adaptive_cache> prefilled<adaptive_cache>(std::int64_t max_tokens, const prefill_input& in) {
    auto c = std::make_unique<adaptive_cache>(cache_shape(max_tokens), make_keys(), make_values());
    c->prefill(in.key_view(), in.value_view(), in.attention_view());
    return c;
}

// ---------------------------------------------------------------------------
// append
// ---------------------------------------------------------------------------
template <class Cache>
void run_append(benchmark::State& state, std::int64_t T) {
    auto cache = prefilled<Cache>(T + appends_per_run, input_for(T));
    // A pool of distinct tokens, cycled.
    constexpr std::int64_t pool = 64, per_token = kv_heads * head_dim;
    const std::vector<float> keys = normal_floats(pool * per_token, 21u), values = normal_floats(pool * per_token, 22u);
    std::int64_t i = 0;
    for (auto _ : state) {
        const std::int64_t at = (i++ % pool) * per_token;
        cache->append(0, keys.data() + at, per_token, values.data() + at, per_token);
    }
    state.SetBytesProcessed(state.iterations() * 2 * per_token * static_cast<std::int64_t>(sizeof(float)));
    state.counters["T"] = static_cast<double>(T);
    state.counters["tokens_per_second"] = benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
}

// Args: T, policy. Fixed iteration count: the cache must not fill up.
void BM_append(benchmark::State& state) {
    if (state.range(1)) run_append<adaptive_cache>(state, state.range(0));
    else run_append<fixed_cache>(state, state.range(0));
}

// ---------------------------------------------------------------------------
// rebalance
// ---------------------------------------------------------------------------
struct rebalance_case {
    std::unique_ptr<adaptive_cache> cache;
    std::vector<std::vector<float>> rows;  // attention rows observed in turn
    std::int64_t next_row = 0;
    rebalance_case(std::int64_t T, qaq::downgrade_source downgrade) {
        const prefill_input& in = input_for(T);
        cache = std::make_unique<adaptive_cache>(cache_shape(T), make_keys(), make_values(),
                                                 qaq::kv_cache_options{downgrade});
        cache->prefill(in.key_view(), in.value_view(), in.attention_view());
        for (std::uint32_t r = 0; r < 8; ++r) rows.push_back(attention_row(T, 200u + r));
        // A few decode steps first, so the widths are those of a running cache.
        for (int step = 0; step < window; ++step) observe_and_rebalance();
    }
    qaq::rebalance_counters observe_and_rebalance() {
        observe_next();
        return cache->rebalance();
    }
    void observe_next() {
        const auto& row = rows[static_cast<std::size_t>(next_row++ % static_cast<std::int64_t>(rows.size()))];
        cache->observe(0, row.data(), static_cast<std::int64_t>(row.size()));
    }
};

// Args: T, downgrade source (0: host copy, 1: codes).
void BM_rebalance(benchmark::State& state) {
    const std::int64_t T = state.range(0);
    const auto downgrade = state.range(1) ? qaq::downgrade_source::codes : qaq::downgrade_source::host_copy;
    static memo<rebalance_case> cases;
    rebalance_case& c = cases.get(std::to_string(T) + "/" + std::to_string(state.range(1)),
                                  [&] { return std::make_unique<rebalance_case>(T, downgrade); });
    std::int64_t up = 0, down = 0, host_bytes = 0;
    for (auto _ : state) {
        state.PauseTiming();
        c.observe_next();
        state.ResumeTiming();
        const qaq::rebalance_counters step = c.cache->rebalance();
        up += step.groups_up;
        down += step.groups_down;
        host_bytes += step.host_bytes_read;
    }
    const double n = static_cast<double>(state.iterations());
    state.SetBytesProcessed(host_bytes);
    state.counters["T"] = static_cast<double>(T);
    state.counters["groups"] = static_cast<double>(2 * kv_heads * T);
    state.counters["groups_up_per_call"] = static_cast<double>(up) / n;
    state.counters["groups_down_per_call"] = static_cast<double>(down) / n;
    state.counters["bits_per_element"] = c.cache->bytes().quantized().bits_per_element();
}

// ---------------------------------------------------------------------------
// prefill
// ---------------------------------------------------------------------------
template <class Cache>
void run_prefill(benchmark::State& state, std::int64_t T) {
    const prefill_input& in = input_for(T);
    double bits_per_element = 0.0;
    for (auto _ : state) {
        auto cache = prefilled<Cache>(T, in);
        benchmark::DoNotOptimize(cache.get());
        bits_per_element = cache->bytes().quantized().bits_per_element();
    }
    state.SetBytesProcessed(state.iterations() * in.bytes());
    state.counters["T"] = static_cast<double>(T);
    state.counters["bits_per_element"] = bits_per_element;
    state.counters["tokens_per_second"] =
        benchmark::Counter(static_cast<double>(T), benchmark::Counter::kIsIterationInvariantRate);
}

// Args: T, policy.
void BM_prefill(benchmark::State& state) {
    if (state.range(1)) run_prefill<adaptive_cache>(state, state.range(0));
    else run_prefill<fixed_cache>(state, state.range(0));
}

}  // namespace

BENCHMARK(BM_append)
    ->ArgNames({"T", "policy"})
    ->ArgsProduct({{1024, 4096, 16384}, {0, 1}})
    ->Iterations(appends_per_run)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_rebalance)
    ->ArgNames({"T", "downgrade"})
    ->ArgsProduct({{1024, 4096}, {0, 1}})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_prefill)->ArgNames({"T", "policy"})->ArgsProduct({{1024, 4096}, {0, 1}})->Unit(benchmark::kMillisecond);
