// qaq-cuda-bench: the CUDA backend's decode-time paths, timed with CUDA events
// (Google Benchmark manual time), over one layer of a LLaMA-3-8B-like cache:
// 8 KV heads, 32 query heads (GQA 4), head_dim 128, T = 8k / 32k / 128k tokens.
//
//   BM_cuda_dequantize/T/outliers     packed keys (4 bits, zero point, fp16 parameters,
//                                     outliers: 0 = none, 1 = 1% quantile) -> fp32
//   BM_cuda_attend_packed/T/outliers  attention of one query token straight over packed K and V
//   BM_cuda_attend_fp16/T             the same attention over a dense fp16 cache (baseline)
//   BM_cuda_cache_step/T              one decode step of device_kv_cache (QAQ keys and values,
//                                     1% outliers) after a prefill of T tokens: append, attend,
//                                     observe, rebalance (wall time: rebalance waits for the
//                                     device and re-quantizes from the page-locked host copy)
//
// Counters:
//   bytes          DRAM traffic the kernel cannot avoid: every byte of the packed (or
//                  fp16) K/V it reads, plus what it writes (dequantize: fp32 output)
//   GB_per_s       bytes / kernel time
//   memcpy_GB_per_s  the same traffic moved by a device-to-device cudaMemcpy
//                  (copying bytes / 2 reads and writes bytes), measured in the same run
//   memcpy_fraction  memcpy time / kernel time: 1.0 = as fast as copying its data
//
// Without a usable CUDA device the program says so and exits 0 without measuring.

#include <benchmark/benchmark.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "qaq/backend/cuda/cuda_check.cuh"
#include "qaq/backend/cuda/device_api.cuh"
#include "qaq/backend/cuda/device_kv_cache.cuh"
#include "qaq/config.hpp"

namespace {

namespace qc = qaq::cuda;

constexpr std::int64_t kv_heads = 8, query_heads = 32, head_dim = 128;

/// Pseudo-normal values (a sum of four uniforms) with one in 97 scaled by 20,
/// generated on the device so that a 128k-token layer costs no host traffic.
__global__ void fill_values(float* x, std::int64_t n, std::uint32_t seed) {
    for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
        std::uint32_t h = static_cast<std::uint32_t>(i) * 2654435761u ^ seed;
        float sum = 0.0f;
        for (int k = 0; k < 4; ++k) {
            h ^= h >> 16;
            h *= 0x7feb352du;
            h ^= h >> 15;
            h *= 0x846ca68bu;
            h ^= h >> 16;
            sum += static_cast<float>(h >> 8) * (1.0f / 16777216.0f);
        }
        const float v = (sum - 2.0f) * 1.7320508f;
        x[i] = i % 97 == 0 ? 20.0f * v : v;
    }
}

__global__ void to_half(const float* x, __half* y, std::int64_t n) {
    for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
        y[i] = __float2half_rn(x[i]);
}

void fill(float* x, std::int64_t n, std::uint32_t seed) {
    fill_values<<<1024, 256>>>(x, n, seed);
    QAQ_CUDA_CHECK(cudaGetLastError());
}

/// Every byte a set of packed groups holds (what attend and dequantize read).
std::int64_t packed_bytes(const qc::device_packed_groups& p) {
    const std::int64_t value_bytes = p.codec.precision == qaq::storage_precision::fp16 ? 2 : 4;
    std::int64_t bytes = p.groups + p.groups * p.codec.parameter_count() * value_bytes + 8 * (p.groups + 1) + p.code_bytes;
    if (p.outlier_count > 0) bytes += 8 * (p.groups + 1) + p.outlier_count * (2 + value_bytes);
    return bytes;
}

/// One layer's keys and values, packed and as dense fp16, and the buffers a step needs.
struct layer_data {
    qc::attend_shape shape;
    qc::device_packed_groups keys, values;
    qc::device_buffer keys_half, values_half, queries, output, dequantized;
    qc::device_buffer attend_workspace, dense_workspace, dequantize_workspace;
    std::size_t attend_workspace_bytes = 0, dense_workspace_bytes = 0;
};

const layer_data& layer_for(std::int64_t tokens, bool outliers) {
    static std::map<std::pair<std::int64_t, bool>, std::unique_ptr<layer_data>> layers;
    auto& slot = layers[{tokens, outliers}];
    if (slot) return *slot;
    auto data = std::make_unique<layer_data>();
    data->shape = {tokens, kv_heads, query_heads, head_dim};
    const std::int64_t elements = kv_heads * tokens * head_dim;

    qaq::quantizer_config config;
    config.codec = qaq::codec_kind::uniform_zero_point;
    config.precision = qaq::storage_precision::fp16;
    config.fixed_bits = 4;
    config.outlier_ratio = outliers ? 0.01 : 0.0;
    const qc::device_quantizer quantizer(config);
    const qc::group_tokens group_tokens{tokens, 1};
    qc::device_buffer source(sizeof(float) * static_cast<std::size_t>(elements));
    for (int role = 0; role < 2; ++role) {
        fill(source.as<float>(), elements, 0x9e3779b9u * (role + 1));
        qc::device_packed_groups packed =
            quantizer.quantize_device(source.as<const float>(), kv_heads * tokens, head_dim, group_tokens);
        qc::device_buffer dense(sizeof(__half) * static_cast<std::size_t>(elements));
        to_half<<<1024, 256>>>(source.as<const float>(), dense.as<__half>(), elements);
        QAQ_CUDA_CHECK(cudaGetLastError());
        (role == 0 ? data->keys : data->values) = std::move(packed);
        (role == 0 ? data->keys_half : data->values_half) = std::move(dense);
    }
    data->queries = qc::device_buffer(sizeof(float) * query_heads * head_dim);
    fill(data->queries.as<float>(), query_heads * head_dim, 17u);
    data->output = qc::device_buffer(sizeof(float) * query_heads * head_dim);
    data->dequantized = qc::device_buffer(sizeof(float) * static_cast<std::size_t>(elements));

    qaq::throw_if_failed(qc::attend(nullptr, data->attend_workspace_bytes, data->keys.codec, data->keys.layer(data->shape),
                                    data->values.codec, data->values.layer(data->shape), data->shape, nullptr, nullptr,
                                    nullptr),
                         "attend (workspace size)");
    data->attend_workspace = qc::device_buffer(data->attend_workspace_bytes);
    qaq::throw_if_failed(qc::attend_dense<__half>(nullptr, data->dense_workspace_bytes, nullptr, nullptr, data->shape,
                                                  nullptr, nullptr, nullptr),
                         "attend_dense (workspace size)");
    data->dense_workspace = qc::device_buffer(data->dense_workspace_bytes);
    data->dequantize_workspace = qc::device_buffer(1);  // dequantize_groups needs none; its size query says 1
    QAQ_CUDA_CHECK(cudaDeviceSynchronize());
    slot = std::move(data);
    return *slot;
}

/// Kernel time of `launch` in seconds, with CUDA events on the default stream.
template <class Launch>
double event_seconds(Launch&& launch) {
    static cudaEvent_t start = nullptr, stop = nullptr;
    if (start == nullptr) {
        QAQ_CUDA_CHECK(cudaEventCreate(&start));
        QAQ_CUDA_CHECK(cudaEventCreate(&stop));
    }
    QAQ_CUDA_CHECK(cudaEventRecord(start));
    launch();
    QAQ_CUDA_CHECK(cudaEventRecord(stop));
    QAQ_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    QAQ_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    return ms * 1e-3;
}

/// Seconds a device-to-device cudaMemcpy needs to move `traffic` bytes (copying traffic / 2); best of 10.
double memcpy_seconds(std::int64_t traffic) {
    static qc::device_buffer from, to;
    const auto half = static_cast<std::size_t>(traffic / 2);
    if (from.bytes() < half) {
        from = qc::device_buffer(half);
        to = qc::device_buffer(half);
    }
    double best = 1e30;
    for (int i = 0; i < 12; ++i) {
        const double s = event_seconds([&] { QAQ_CUDA_CHECK(cudaMemcpyAsync(to.data(), from.data(), half, cudaMemcpyDeviceToDevice)); });
        if (i >= 2) best = std::min(best, s);  // two warm-up copies
    }
    return best;
}

/// Runs the timing loop and sets the counters described at the top.
template <class Launch>
void measure(benchmark::State& state, std::int64_t traffic, Launch&& launch) {
    launch();  // warm-up (and first-launch costs)
    QAQ_CUDA_CHECK(cudaDeviceSynchronize());
    double total = 0.0;
    for (auto _ : state) {
        const double s = event_seconds(launch);
        state.SetIterationTime(s);
        total += s;
    }
    const double per_iteration = total / static_cast<double>(state.iterations());
    const double copy = memcpy_seconds(traffic);
    state.counters["bytes"] = static_cast<double>(traffic);
    state.counters["GB_per_s"] = static_cast<double>(traffic) / per_iteration * 1e-9;
    state.counters["memcpy_GB_per_s"] = static_cast<double>(traffic) / copy * 1e-9;
    state.counters["memcpy_fraction"] = copy / per_iteration;
}

void BM_cuda_dequantize(benchmark::State& state) {
    const layer_data& layer = layer_for(state.range(0), state.range(1) != 0);
    const qc::device_packed_groups& keys = layer.keys;
    const std::int64_t traffic = packed_bytes(keys) + static_cast<std::int64_t>(sizeof(float)) * keys.groups * keys.group_size;
    measure(state, traffic, [&] {
        std::size_t bytes = 1;
        qaq::throw_if_failed(qc::dequantize_groups(layer.dequantize_workspace.data(), bytes, keys.codec, keys.view(), keys.groups,
                                                   layer.dequantized.as<float>()),
                             "dequantize_groups");
    });
}

void BM_cuda_attend_packed(benchmark::State& state) {
    const layer_data& layer = layer_for(state.range(0), state.range(1) != 0);
    const std::int64_t traffic = packed_bytes(layer.keys) + packed_bytes(layer.values);
    measure(state, traffic, [&] {
        std::size_t bytes = layer.attend_workspace_bytes;
        qaq::throw_if_failed(qc::attend(layer.attend_workspace.data(), bytes, layer.keys.codec,
                                        layer.keys.layer(layer.shape), layer.values.codec,
                                        layer.values.layer(layer.shape), layer.shape, layer.queries.as<const float>(),
                                        layer.output.as<float>(), nullptr),
                             "attend");
    });
}

void BM_cuda_attend_fp16(benchmark::State& state) {
    const layer_data& layer = layer_for(state.range(0), false);
    const std::int64_t traffic = 2 * static_cast<std::int64_t>(sizeof(__half)) * kv_heads * state.range(0) * head_dim;
    measure(state, traffic, [&] {
        std::size_t bytes = layer.dense_workspace_bytes;
        qaq::throw_if_failed(qc::attend_dense(layer.dense_workspace.data(), bytes, layer.keys_half.as<const __half>(),
                                              layer.values_half.as<const __half>(), layer.shape,
                                              layer.queries.as<const float>(), layer.output.as<float>(), nullptr),
                             "attend_dense");
    });
}

/// QAQ's configuration of one role (the paper's formulas, 2..8 bits, window 5, 1% outliers).
qaq::quantizer_config qaq_role(qaq::cache_role role) {
    qaq::quantizer_config c;
    c.role = role;
    c.bits = role == qaq::cache_role::key ? qaq::bits_kind::key_query_norm : qaq::bits_kind::value_attention;
    c.q_norm = 40.0;
    c.target_error = role == qaq::cache_role::key ? 0.001 : 0.1;
    c.bits_min = 2;
    c.bits_max = 8;
    c.window = 5;
    c.outlier_ratio = 0.01;
    return c;
}

constexpr std::int64_t cache_steps = 64;

void BM_cuda_cache_step(benchmark::State& state) {
    const std::int64_t T0 = state.range(0), H = kv_heads, Hq = query_heads, D = head_dim;
    const qaq::kv_cache_shape shape{1, H, Hq, D, T0 + cache_steps + 1};
    qc::device_kv_cache cache(shape, qaq_role(qaq::cache_role::key), qaq_role(qaq::cache_role::value));
    // The prefill: keys and values filled on the device, copied to the host; attention rows uniform.
    const qaq::kv_shape kv{1, 1, H, T0, D};
    std::vector<float> keys(static_cast<std::size_t>(kv.element_count())), values(keys.size());
    {
        qc::device_buffer source(sizeof(float) * keys.size());
        fill(source.as<float>(), kv.element_count(), 101u);
        QAQ_CUDA_CHECK(cudaMemcpy(keys.data(), source.data(), source.bytes(), cudaMemcpyDeviceToHost));
        fill(source.as<float>(), kv.element_count(), 202u);
        QAQ_CUDA_CHECK(cudaMemcpy(values.data(), source.data(), source.bytes(), cudaMemcpyDeviceToHost));
    }
    const qaq::attention_shape rows{1, 1, Hq, 5, T0};
    const std::vector<float> attention(static_cast<std::size_t>(Hq * 5 * T0), 1.0f / static_cast<float>(T0));
    cache.prefill(qaq::kv_view<const float>::contiguous(keys.data(), kv),
                  qaq::kv_view<const float>::contiguous(values.data(), kv),
                  qaq::attention_view<const float>::contiguous(attention.data(), rows));
    qc::device_buffer k(sizeof(float) * H * D), v(sizeof(float) * H * D), q(sizeof(float) * Hq * D),
        out(sizeof(float) * Hq * D), p(sizeof(float) * Hq * shape.max_tokens);
    fill(q.as<float>(), Hq * D, 7u);
    std::int64_t changed = 0, host_bytes = 0, step = 0;
    for (auto _ : state) {
        fill(k.as<float>(), H * D, 1000u + static_cast<std::uint32_t>(step));
        fill(v.as<float>(), H * D, 2000u + static_cast<std::uint32_t>(step));
        QAQ_CUDA_CHECK(cudaDeviceSynchronize());
        const auto t0 = std::chrono::steady_clock::now();
        cache.append(0, k.as<const float>(), H * D, v.as<const float>(), H * D);
        const std::int64_t T = cache.tokens(0);
        cache.attend(0, q.as<const float>(), Hq * D, out.as<float>(), Hq * D, p.as<float>(), Hq * T);
        cache.observe(0, p.as<const float>(), Hq * T);
        const qaq::rebalance_counters c = cache.rebalance();
        state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        changed += c.groups_up + c.groups_down;
        host_bytes += c.host_bytes_read;
        ++step;
    }
    const qaq::kv_cache_byte_report bytes = cache.bytes();
    state.counters["groups_requantized_per_step"] = static_cast<double>(changed) / static_cast<double>(step);
    state.counters["host_KiB_read_per_step"] = static_cast<double>(host_bytes) / 1024.0 / static_cast<double>(step);
    state.counters["compression_vs_fp16"] = bytes.quantized().compression_ratio();
}

void token_and_outlier_args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"T", "outliers"});
    for (std::int64_t t : {8192, 32768, 131072})
        for (int outliers : {0, 1}) b->Args({t, outliers});
}

BENCHMARK(BM_cuda_dequantize)->Apply(token_and_outlier_args)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_cuda_attend_packed)->Apply(token_and_outlier_args)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_cuda_cache_step)
    ->ArgName("T")
    ->Arg(8192)
    ->Arg(32768)
    ->Iterations(cache_steps)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_cuda_attend_fp16)
    ->ArgName("T")
    ->Arg(8192)
    ->Arg(32768)
    ->Arg(131072)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
    std::string reason;
    if (qc::device_count(&reason) == 0) {
        std::printf("qaq-cuda-bench: no usable CUDA device (%s); nothing was measured.\n", reason.c_str());
        return 0;
    }
    cudaDeviceProp properties{};
    QAQ_CUDA_CHECK(cudaGetDeviceProperties(&properties, 0));
    int runtime = 0, driver = 0;
    (void)cudaRuntimeGetVersion(&runtime);
    (void)cudaDriverGetVersion(&driver);
    benchmark::AddCustomContext("qaq_version", qaq::version_string);
    benchmark::AddCustomContext("cuda_device", properties.name);
    benchmark::AddCustomContext("cuda_compute_capability",
                                std::to_string(properties.major) + "." + std::to_string(properties.minor));
    benchmark::AddCustomContext("cuda_sm_count", std::to_string(properties.multiProcessorCount));
    benchmark::AddCustomContext("cuda_global_memory_gib",
                                std::to_string(static_cast<double>(properties.totalGlobalMem) / (1u << 30)));
    benchmark::AddCustomContext("cuda_runtime", std::to_string(runtime));
    benchmark::AddCustomContext("cuda_driver", std::to_string(driver));
    benchmark::AddCustomContext("layer", "kv_heads 8, query_heads 32, head_dim 128; 4-bit zero-point codes, fp16 parameters");
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
