// The CUDA forward pass (examples/llama/cuda/) against the CPU model on the
// tiny test models (tests/data/llama): prefill (logits, K, V, attention rows,
// query norms), extend_batch over several device caches, token-by-token
// extension against CPU decoding, the device log-softmax, and the memory
// budget. Part of qaq-llama-cuda-tests: needs a GPU (skipped, exit 77, without).

#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/kv_spec.hpp"
#include "llama/cuda/cuda_model.hpp"
#include "llama/model.hpp"
#include "qaq/io/npy.hpp"
#include "../support/llama_fixtures.hpp"

namespace {

using namespace qaq::llama;
using Catch::Matchers::Contains;
using namespace qaq_llama_test;

// Both float32 with other summation orders: agreement to a few 1e-6 is expected.
constexpr double tolerance = 1e-4;

void require_same_result(const prefill_result& gpu, const prefill_result& cpu) {
    REQUIRE(gpu.tokens == cpu.tokens);
    REQUIRE(gpu.logits_from == cpu.logits_from);
    CHECK(relative_error(gpu.logits, cpu.logits) < tolerance);
    REQUIRE(gpu.kv == cpu.kv);
    CHECK(relative_error(gpu.keys, cpu.keys) < tolerance);
    CHECK(relative_error(gpu.values, cpu.values) < tolerance);
    const qaq::attention_shape& a = gpu.attention_dims;
    const qaq::attention_shape& b = cpu.attention_dims;
    REQUIRE((a.layers == b.layers && a.batch == b.batch && a.query_heads == b.query_heads && a.rows == b.rows &&
             a.tokens == b.tokens));
    CHECK(relative_error(gpu.attention, cpu.attention) < tolerance);
    CHECK(relative_error(gpu.query_norms, cpu.query_norms) < tolerance);
}

}  // namespace

TEST_CASE("cuda llama: prefill equals the CPU model's", "[cuda][llama]") {
    for (const std::string name : {"tiny-llama", "tiny-llama-mixed"}) {
        INFO(name);
        const gguf_file file = gguf_file::open(fixture(name + ".gguf"));
        const llama_model cpu(file);
        cuda_llama_model gpu(cpu);
        const auto tokens = load_tokens(name);
        for (const std::int64_t rows : {std::int64_t{-1}, std::int64_t{0}, std::int64_t{3}}) {
            prefill_options o;
            o.keep_kv = true;
            o.attention_rows = rows;
            o.logits_from = rows == 0 ? -1 : 0;
            o.keep_query_norms = rows != 0;
            INFO("attention rows " << rows);
            require_same_result(gpu.prefill(tokens, o), cpu.prefill(tokens, o));
        }
        CHECK(gpu.weight_bytes() > 0);
        CHECK(gpu.bytes_in_use() >= gpu.weight_bytes());
    }
}

TEST_CASE("cuda llama: extend_batch over several device caches equals the CPU model's", "[cuda][llama]") {
    const gguf_file file = gguf_file::open(fixture("tiny-llama.gguf"));
    const llama_model cpu(file);
    cuda_llama_model gpu(cpu);
    const auto tokens = load_tokens("tiny-llama");
    const std::vector<std::int32_t> context(tokens.begin(), tokens.begin() + 9);
    prefill_options keep;
    keep.keep_kv = true;
    const prefill_result head = cpu.prefill(context, keep);

    // Continuations of different lengths and options; caches of other capacities.
    const std::vector<std::vector<std::int32_t>> continuations = {
        {tokens[9]}, {tokens[9], tokens[10], tokens[11]}, {tokens[3], tokens[1], tokens[4], tokens[1], tokens[5]}};
    std::vector<float_kv_cache> cpu_caches;
    std::vector<cuda_kv_cache> gpu_caches;
    std::vector<extend_job> cpu_jobs;
    std::vector<cuda_extend_job> gpu_jobs;
    for (std::size_t j = 0; j < continuations.size(); ++j) {
        const std::int64_t capacity = 9 + static_cast<std::int64_t>(continuations[j].size()) + static_cast<std::int64_t>(j);
        cpu_caches.emplace_back(cpu.config(), capacity);
        cpu_caches.back().assign(head);
        gpu_caches.emplace_back(gpu, capacity);
        gpu_caches.back().assign(head);
    }
    for (std::size_t j = 0; j < continuations.size(); ++j) {
        prefill_options o;
        o.attention_rows = j == 1 ? 2 : -1;
        o.logits_from = j == 2 ? 10 : 9;
        o.keep_kv = j != 0;
        o.keep_query_norms = j == 2;
        cpu_jobs.push_back(extend_job{&continuations[j], &cpu_caches[j], o});
        gpu_jobs.push_back(cuda_extend_job{&continuations[j], &gpu_caches[j], o});
    }
    const std::vector<prefill_result> expected = cpu.extend_batch(cpu_jobs);
    const std::vector<prefill_result> got = gpu.extend_batch(gpu_jobs);
    REQUIRE(got.size() == expected.size());
    for (std::size_t j = 0; j < got.size(); ++j) {
        INFO("sequence " << j);
        require_same_result(got[j], expected[j]);
        CHECK(gpu_caches[j].tokens() == cpu_caches[j].tokens());
    }

    // Truncated back to the context, a cache continues as a fresh one would.
    gpu_caches[1].truncate(9);
    const prefill_result again = gpu.extend(continuations[1], gpu_caches[1], gpu_jobs[1].options);
    CHECK(relative_error(again.logits, got[1].logits) < tolerance);

    CHECK_THROWS_WITH(gpu.extend_batch({gpu_jobs[0], gpu_jobs[0]}), Contains("share one cache"));
    const std::vector<std::int32_t> bad = {static_cast<std::int32_t>(cpu.config().vocab)};
    CHECK_THROWS_WITH(gpu.prefill(bad), Contains("out of range"));
    cuda_kv_cache small(gpu, 2);
    CHECK_THROWS_WITH(gpu.extend(context, small), Contains("exceeds the cache capacity"));
}

TEST_CASE("cuda llama: one token at a time equals CPU decoding", "[cuda][llama]") {
    const gguf_file file = gguf_file::open(fixture("tiny-llama-mixed.gguf"));
    const llama_model cpu(file);
    cuda_llama_model gpu(cpu);
    const auto tokens = load_tokens("tiny-llama-mixed");
    float_kv_cache exact(cpu.config(), 64);
    cuda_kv_cache device(gpu, 64);
    std::vector<float> logits(static_cast<std::size_t>(cpu.config().vocab));
    for (std::size_t t = 0; t < tokens.size(); ++t) {
        cpu.decode(tokens[t], exact, logits.data());
        const prefill_result r = gpu.extend({tokens[t]}, device);
        INFO("position " << t);
        CHECK(relative_error(r.logits, logits) < tolerance);
    }
    CHECK(device.tokens() == exact.tokens());
}

TEST_CASE("cuda llama: decode over qaq's device cache follows the CPU quantized cache", "[cuda][llama]") {
    const gguf_file file = gguf_file::open(fixture("tiny-llama-mixed.gguf"));
    const llama_model cpu(file);
    cuda_llama_model gpu(cpu);
    const auto tokens = load_tokens("tiny-llama-mixed");
    const std::size_t prompt = tokens.size() / 2;
    // Fixed widths: the two caches quantize the same keys and values (to float rounding of the
    // forward), so logits agree closely; qaq's adaptive widths may differ where the rounding of
    // the attention crosses a width boundary, so those logits only agree loosely.
    for (const auto& [text, allowed] : {std::pair<const char*, double>{"uniform:4", 1e-2}, {"qaq:q_norm=8", 5e-2}}) {
        INFO(text);
        const qaq::examples::kv_spec spec = qaq::examples::parse_kv_spec(text);
        quantized_decode_cache host(cpu.config(), 64, spec.keys, spec.values);
        cuda_quantized_cache device(gpu, 64, spec.keys, spec.values);
        prefill_options o;
        o.keep_kv = true;
        o.attention_rows = 8;
        const std::vector<std::int32_t> head(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(prompt));
        host.prefill(cpu.prefill(head, o));
        device.prefill(gpu.prefill(head, o));
        REQUIRE(device.tokens() == static_cast<std::int64_t>(prompt));
        std::vector<float> expected(static_cast<std::size_t>(cpu.config().vocab)), got(expected.size());
        for (std::size_t t = prompt; t < tokens.size(); ++t) {
            cpu.decode(tokens[t], host, expected.data());
            gpu.decode(tokens[t], device, got.data());
            INFO("position " << t);
            CHECK(relative_error(got, expected) < allowed);
        }
        CHECK(device.tokens() == static_cast<std::int64_t>(tokens.size()));
        CHECK(device.counters().rebalances == static_cast<std::int64_t>(tokens.size() - prompt));
        const qaq::kv_cache_byte_report bytes = device.bytes();
        CHECK(bytes.quantized().elements == host.cache().bytes().quantized().elements);
        CHECK(bytes.keys.codes > 0);
        CHECK(device.accounting(qaq::cache_role::value).bits_per_element > 2.0);
    }
    // Out-of-range tokens and a full cache are refused clearly.
    const qaq::examples::kv_spec spec = qaq::examples::parse_kv_spec("uniform:4");
    cuda_quantized_cache small(gpu, 2, spec.keys, spec.values);
    std::vector<float> logits(static_cast<std::size_t>(cpu.config().vocab));
    CHECK_THROWS_WITH(gpu.decode(-1, small, logits.data()), Contains("out of range"));
    gpu.decode(tokens[0], small, logits.data());
    gpu.decode(tokens[1], small, nullptr);
    CHECK_THROWS_WITH(gpu.decode(tokens[2], small, logits.data()), Contains("full"));
}

TEST_CASE("cuda llama: the device log-softmax gives the CPU logits' log-probabilities", "[cuda][llama]") {
    const gguf_file file = gguf_file::open(fixture("tiny-llama.gguf"));
    const llama_model cpu(file);
    cuda_llama_model gpu(cpu);
    const auto tokens = load_tokens("tiny-llama");
    const std::int64_t first = 4, V = cpu.config().vocab;
    prefill_options o;
    o.logits_from = first;
    const prefill_result r = cpu.prefill(tokens, o);
    const std::vector<double> got = gpu.next_token_log_probabilities(tokens, first);
    REQUIRE(got.size() == tokens.size() - 1 - static_cast<std::size_t>(first));
    for (std::size_t k = 0; k < got.size(); ++k) {
        const float* l = r.logits_at(first + static_cast<std::int64_t>(k));
        const double m = *std::max_element(l, l + V);
        double sum = 0.0;
        for (std::int64_t i = 0; i < V; ++i) sum += std::exp(double(l[i]) - m);
        const double expected = double(l[tokens[static_cast<std::size_t>(first) + k + 1]]) - m - std::log(sum);
        CHECK(got[k] == Approx(expected).margin(1e-4));
    }
    CHECK_THROWS_WITH(gpu.next_token_log_probabilities(tokens, static_cast<std::int64_t>(tokens.size()) - 1),
                      Contains("expected 0 <= first <= tokens - 2"));
}

TEST_CASE("cuda llama: devices and memory budgets are checked with clear errors", "[cuda][llama]") {
    const gguf_file file = gguf_file::open(fixture("tiny-llama.gguf"));
    const llama_model cpu(file);
    CHECK_THROWS_WITH(cuda_llama_model(cpu, cuda_model_options{cuda_device_count(), 0}), Contains("no such device"));
    CHECK_THROWS_WITH(cuda_llama_model(cpu, cuda_model_options{0, 4096}), Contains("more than the memory budget"));
    // A budget that holds the weights but not a long cache.
    cuda_llama_model gpu(cpu);
    cuda_llama_model tight(cpu, cuda_model_options{0, gpu.bytes_in_use() + (std::int64_t{8} << 20)});
    CHECK_THROWS_WITH(cuda_kv_cache(tight, std::int64_t{1} << 22), Contains("of the memory budget"));
    CHECK_THROWS_WITH(cuda_llama_model(cpu, cuda_model_options{0, std::int64_t{1} << 62}),
                      Contains("exceeds the device's free memory"));
}
