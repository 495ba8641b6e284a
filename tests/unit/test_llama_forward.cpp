// qaq-llama's forward pass against an independent oracle: the committed
// outputs of tests/oracle/llama_numpy.py (a float64 numpy implementation that
// reads the GGUF with the `gguf` package and uses Hugging Face's RoPE on
// un-permuted weights) for two tiny random models. Then the consistency of
// the model's own paths: single-token decode against the batched prefill,
// prefill-then-decode, the decode trace, and the quantized caches at fp16 and
// 8 bits staying close to the float32 baseline.

#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "llama/model.hpp"
#include "llama/tokenizer.hpp"
#include "qaq/io/npy.hpp"
#include "../support/llama_fixtures.hpp"

namespace {

using namespace qaq::llama;
using namespace qaq_llama_test;

struct simd_guard {
    simd_level saved = active_simd_level();
    explicit simd_guard(simd_level l) { active_simd_level() = l; }
    ~simd_guard() { active_simd_level() = saved; }
};

std::vector<simd_level> levels() {
    std::vector<simd_level> l{simd_level::scalar};
    if (cpu_has_avx2()) l.push_back(simd_level::avx2);
    return l;
}

}  // namespace

TEST_CASE("llama forward: prefill matches the numpy oracle (logits, K, V, attention)", "[llama][forward]") {
    for (const std::string model : {"tiny-llama", "tiny-llama-mixed"}) {
        for (simd_level level : levels()) {
            simd_guard guard(level);
            INFO(model << " with " << to_string(level) << " kernels");
            gguf_file file = gguf_file::open(fixture(model + ".gguf"));
            llama_model m(file);
            const auto tokens = load_tokens(model);
            prefill_options o;
            o.keep_kv = true;
            o.attention_rows = -1;
            o.logits_from = 0;
            const prefill_result r = m.prefill(tokens, o);

            std::vector<std::int64_t> shape;
            const auto logits = load_floats(model + ".logits.npy", &shape);
            REQUIRE(shape == std::vector<std::int64_t>{static_cast<std::int64_t>(tokens.size()), m.config().vocab});
            CHECK(relative_error(r.logits, logits) < 2e-5);
            const auto keys = load_floats(model + ".keys.npy", &shape);
            CHECK(shape == std::vector<std::int64_t>{r.kv.layers, 1, r.kv.heads, r.kv.tokens, r.kv.head_dim});
            CHECK(relative_error(r.keys, keys) < 2e-5);
            CHECK(relative_error(r.values, load_floats(model + ".values.npy")) < 2e-5);
            const auto attention = load_floats(model + ".attention.npy", &shape);
            CHECK(shape == std::vector<std::int64_t>{r.attention_dims.layers, 1, r.attention_dims.query_heads,
                                                     r.attention_dims.rows, r.attention_dims.tokens});
            CHECK(relative_error(r.attention, attention) < 2e-5);

            // The last rows only, and the last position's logits only (the default).
            prefill_options last;
            last.attention_rows = 3;
            const prefill_result r3 = m.prefill(tokens, last);
            REQUIRE(r3.logits.size() == static_cast<std::size_t>(m.config().vocab));
            CHECK(relative_error(r3.logits_at(r3.tokens - 1), r.logits_at(r.tokens - 1), r3.logits.size()) < 1e-5);
            const std::int64_t T = r.tokens, H = m.config().heads;
            for (std::int64_t l = 0; l < m.config().layers; ++l)
                for (std::int64_t h = 0; h < H; ++h)
                    for (std::int64_t row = 0; row < 3; ++row)
                        for (std::int64_t t = 0; t < T; ++t)
                            CHECK(r3.attention_rows()(l, 0, h, row, t) ==
                                  Approx(r.attention_rows()(l, 0, h, T - 3 + row, t)).margin(1e-6));
        }
    }
}

TEST_CASE("llama forward: a prefix's logits do not depend on later tokens", "[llama][forward]") {
    gguf_file file = gguf_file::open(fixture("tiny-llama.gguf"));
    llama_model m(file);
    const auto tokens = load_tokens("tiny-llama");
    prefill_options o;
    o.logits_from = 0;
    const prefill_result full = m.prefill(tokens, o);
    for (std::size_t n : {1u, 2u, 3u, 5u, 9u}) {  // 1..3 columns take the matrix-vector path
        const std::vector<std::int32_t> prefix(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(n));
        const prefill_result p = m.prefill(prefix, o);
        for (std::size_t t = 0; t < n; ++t)
            CHECK(relative_error(p.logits_at(static_cast<std::int64_t>(t)), full.logits_at(static_cast<std::int64_t>(t)),
                                 static_cast<std::size_t>(m.config().vocab)) < 1e-5);
    }
}

TEST_CASE("llama forward: single-token decode equals the batched prefill", "[llama][forward][decode]") {
    for (const std::string model : {"tiny-llama", "tiny-llama-mixed"}) {
        for (simd_level level : levels()) {
            simd_guard guard(level);
            INFO(model << " with " << to_string(level) << " kernels");
            gguf_file file = gguf_file::open(fixture(model + ".gguf"));
            llama_model m(file);
            const auto tokens = load_tokens(model);
            prefill_options o;
            o.logits_from = 0;
            o.attention_rows = -1;
            const prefill_result full = m.prefill(tokens, o);
            const std::int64_t V = m.config().vocab, H = m.config().heads;

            float_kv_cache cache(m.config(), 64);
            std::vector<float> logits(static_cast<std::size_t>(V));
            decode_trace trace;
            for (std::size_t t = 0; t < tokens.size(); ++t) {
                m.decode(tokens[t], cache, logits.data(), &trace);
                CHECK(cache.tokens() == static_cast<std::int64_t>(t + 1));
                CHECK(relative_error(logits.data(), full.logits_at(static_cast<std::int64_t>(t)), logits.size()) < 2e-5);
                // This step's attention is row t of the prefill's.
                const std::int64_t T = static_cast<std::int64_t>(t + 1);
                double worst = 0.0;
                for (std::int64_t l = 0; l < m.config().layers; ++l)
                    for (std::int64_t h = 0; h < H; ++h)
                        for (std::int64_t j = 0; j < T; ++j)
                            worst = std::max(worst, std::abs(double(trace.attention[static_cast<std::size_t>((l * H + h) * T + j)]) -
                                                             full.attention_rows()(l, 0, h, T - 1, j)));
                CHECK(worst < 1e-5);
            }
        }
    }
}

TEST_CASE("llama forward: prefill, hand the cache over, continue decoding", "[llama][forward][decode]") {
    gguf_file file = gguf_file::open(fixture("tiny-llama.gguf"));
    llama_model m(file);
    const auto tokens = load_tokens("tiny-llama");
    prefill_options all;
    all.logits_from = 0;
    const prefill_result full = m.prefill(tokens, all);
    const std::int64_t V = m.config().vocab;
    const std::size_t split = 10;

    prefill_options o;
    o.keep_kv = true;
    o.attention_rows = 5;
    const prefill_result head = m.prefill(std::vector<std::int32_t>(tokens.begin(), tokens.begin() + split), o);

    // The exact float32 cache continues exactly.
    float_kv_cache exact(m.config(), 32);
    exact.assign(head);
    std::vector<float> logits(static_cast<std::size_t>(V));
    for (std::size_t t = split; t < tokens.size(); ++t) {
        m.decode(tokens[t], exact, logits.data());
        CHECK(relative_error(logits.data(), full.logits_at(static_cast<std::int64_t>(t)), logits.size()) < 2e-5);
    }

    // The quantized caches stay close: fp16 very close, 8 bits close, QAQ reasonably.
    struct variant {
        const char* name;
        qaq::quantizer_config keys, values;
        double tolerance;
    };
    qaq::quantizer_config fp16;
    fp16.enabled = false;
    qaq::quantizer_config u8;
    u8.codec = qaq::codec_kind::uniform_zero_point;
    u8.fixed_bits = 8;
    qaq::quantizer_config qk, qv;
    qk.role = qaq::cache_role::key;
    qk.codec = qv.codec = qaq::codec_kind::uniform_zero_point;
    qk.bits = qaq::bits_kind::key_query_norm;
    qv.bits = qaq::bits_kind::value_attention;
    qk.window = qv.window = 5;
    qk.target_error = qv.target_error = 0.01;
    qk.q_norm = 40.0;
    qk.bits_min = qv.bits_min = 2;
    qk.bits_max = qv.bits_max = 8;
    qk.outlier_ratio = qv.outlier_ratio = 0.02;
    for (const variant& v : {variant{"fp16", fp16, fp16, 2e-3}, variant{"uniform:8", u8, u8, 2e-2},
                             variant{"qaq", qk, qv, 0.25}}) {
        INFO(v.name);
        quantized_decode_cache q(m.config(), 32, v.keys, v.values);
        q.prefill(head);
        CHECK(q.tokens() == static_cast<std::int64_t>(split));
        double worst = 0.0;
        for (std::size_t t = split; t < tokens.size(); ++t) {
            m.decode(tokens[t], q, logits.data());
            worst = std::max(worst, relative_error(logits.data(), full.logits_at(static_cast<std::int64_t>(t)), logits.size()));
        }
        CHECK(worst < v.tolerance);
        CHECK(q.tokens() == static_cast<std::int64_t>(tokens.size()));
        CHECK(q.cache().counters().rebalances == static_cast<std::int64_t>(tokens.size() - split));
        const auto bytes = q.cache().bytes();
        CHECK(bytes.quantized().elements == 2 * m.config().layers * m.config().kv_dim() * static_cast<std::int64_t>(tokens.size()));
    }
}

TEST_CASE("llama forward: decoding from scratch on quantized caches", "[llama][forward][decode]") {
    gguf_file file = gguf_file::open(fixture("tiny-llama.gguf"));
    llama_model m(file);
    const auto tokens = load_tokens("tiny-llama");
    prefill_options all;
    all.logits_from = 0;
    const prefill_result full = m.prefill(tokens, all);
    qaq::quantizer_config fp16;
    fp16.enabled = false;
    quantized_decode_cache q(m.config(), 32, fp16, fp16);
    std::vector<float> logits(static_cast<std::size_t>(m.config().vocab));
    for (std::size_t t = 0; t < tokens.size(); ++t) {
        m.decode(tokens[t], q, logits.data());
        CHECK(relative_error(logits.data(), full.logits_at(static_cast<std::int64_t>(t)), logits.size()) < 2e-3);
    }
    // The float cache refuses to overflow.
    float_kv_cache small(m.config(), 2);
    m.decode(tokens[0], small, nullptr);
    m.decode(tokens[1], small, nullptr);
    CHECK_THROWS_AS(m.decode(tokens[2], small, nullptr), qaq::error);
    CHECK_THROWS_AS(m.decode(-1, small, nullptr), qaq::error);
    CHECK_THROWS_AS(m.prefill({}), qaq::error);
    CHECK_THROWS_AS(m.prefill({static_cast<std::int32_t>(m.config().vocab)}), qaq::error);
}

TEST_CASE("llama model: config and tokenizer from the tiny models' metadata", "[llama][forward]") {
    gguf_file file = gguf_file::open(fixture("tiny-llama.gguf"));
    const llama_config c = llama_config::from_gguf(file);
    CHECK(c.layers == 2);
    CHECK(c.embedding == 64);
    CHECK(c.feed_forward == 96);
    CHECK(c.heads == 4);
    CHECK(c.kv_heads == 2);
    CHECK(c.head_dim == 16);
    CHECK(c.vocab == 269);
    CHECK(c.context_length == 128);
    CHECK(c.rope_theta == 10000.0);
    CHECK(c.rms_eps == Approx(1e-5));
    CHECK(c.tied_embeddings);
    tokenizer tok(tokenizer_vocabulary_from_gguf(file));
    CHECK(tok.size() == 269);
    const auto ids = tok.encode("<|im_start|>the answer<|im_end|>");
    CHECK(ids.front() == 1);
    CHECK(ids.back() == 2);
    CHECK(tok.decode(ids) == "<|im_start|>the answer<|im_end|>");

    gguf_file mixed = gguf_file::open(fixture("tiny-llama-mixed.gguf"));
    const llama_config cm = llama_config::from_gguf(mixed);
    CHECK_FALSE(cm.tied_embeddings);
    CHECK(cm.vocab == 96);
    CHECK_THROWS_WITH(tokenizer_vocabulary_from_gguf(mixed), Catch::Contains("no tokenizer metadata"));
}

TEST_CASE("llama forward: extend a float cache with a batch (context, then choices)", "[llama][forward]") {
    gguf_file file = gguf_file::open(fixture("tiny-llama.gguf"));
    llama_model m(file);
    const auto tokens = load_tokens("tiny-llama");
    prefill_options all;
    all.logits_from = 0;
    all.attention_rows = -1;
    all.keep_kv = true;
    const prefill_result full = m.prefill(tokens, all);
    const std::int64_t V = m.config().vocab, H = m.config().heads;
    const std::size_t split = 7;

    float_kv_cache cache(m.config(), 32);
    const prefill_result head = m.extend(std::vector<std::int32_t>(tokens.begin(), tokens.begin() + split), cache, all);
    CHECK(cache.tokens() == static_cast<std::int64_t>(split));
    for (int repeat = 0; repeat < 2; ++repeat) {  // the second time after truncating back to the context
        const prefill_result tail = m.extend(std::vector<std::int32_t>(tokens.begin() + split, tokens.end()), cache, all);
        const std::int64_t T = static_cast<std::int64_t>(tokens.size());
        CHECK(tail.tokens == T);
        CHECK(tail.logits_from == static_cast<std::int64_t>(split));
        for (std::int64_t t = static_cast<std::int64_t>(split); t < T; ++t)
            CHECK(relative_error(tail.logits_at(t), full.logits_at(t), static_cast<std::size_t>(V)) < 2e-5);
        CHECK(relative_error(tail.keys, full.keys) < 1e-5);
        CHECK(relative_error(tail.values, full.values) < 1e-5);
        REQUIRE(tail.attention_dims.rows == T - static_cast<std::int64_t>(split));
        double worst = 0.0;
        for (std::int64_t l = 0; l < m.config().layers; ++l)
            for (std::int64_t h = 0; h < H; ++h)
                for (std::int64_t row = 0; row < tail.attention_dims.rows; ++row)
                    for (std::int64_t j = 0; j < T; ++j)
                        worst = std::max(worst, std::abs(double(tail.attention_rows()(l, 0, h, row, j)) -
                                                         full.attention_rows()(l, 0, h, static_cast<std::int64_t>(split) + row, j)));
        CHECK(worst < 1e-5);
        cache.truncate(static_cast<std::int64_t>(split));
    }
    // A cache rebuilt from (here: exact) K/V views continues the same way.
    float_kv_cache rebuilt(m.config(), 32);
    rebuilt.assign(head.key_view(), head.value_view());
    std::vector<float> logits(static_cast<std::size_t>(V));
    m.decode(tokens[split], rebuilt, logits.data());
    CHECK(relative_error(logits.data(), full.logits_at(static_cast<std::int64_t>(split)), logits.size()) < 2e-5);
    CHECK_THROWS_AS(cache.truncate(100), qaq::error);
    float_kv_cache tiny(m.config(), 4);
    CHECK_THROWS_WITH(m.extend(tokens, tiny), Catch::Contains("exceeds the cache capacity"));
}

TEST_CASE("llama model: an unsupported tensor type is an error that names it", "[llama][forward]") {
    // Retype output_norm.weight from F32 to I32 (same size, so the file still parses).
    std::ifstream in(fixture("tiny-llama.gguf"), std::ios::binary);
    std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::string name = "output_norm.weight";
    const auto at = std::search(bytes.begin(), bytes.end(), name.begin(), name.end());
    REQUIRE(at != bytes.end());
    std::size_t pos = static_cast<std::size_t>(at - bytes.begin()) + name.size();
    std::uint32_t dims = 0;
    std::memcpy(&dims, &bytes[pos], 4);
    REQUIRE(dims == 1);
    pos += 4 + 8 * dims;
    std::uint32_t type = 0;
    std::memcpy(&type, &bytes[pos], 4);
    REQUIRE(type == 0);
    type = 26;  // I32
    std::memcpy(&bytes[pos], &type, 4);
    const gguf_file f = gguf_file::parse(bytes, "retyped.gguf");
    CHECK(f.tensor(name).type == ggml_type::i32);
    CHECK_THROWS_WITH(llama_model(f), Catch::Contains("output_norm.weight") && Catch::Contains("I32") &&
                                          Catch::Contains("retyped.gguf"));
}

TEST_CASE("llama forward: extend_batch equals one extend per sequence, dense weights or not", "[llama][forward]") {
    gguf_file file = gguf_file::open(fixture("tiny-llama.gguf"));
    const auto tokens = load_tokens("tiny-llama");
    REQUIRE(tokens.size() >= 12);
    model_options dense;
    dense.dense_weights = true;
    const llama_model blocks(file), floats(file, dense);
    const std::int64_t V = blocks.config().vocab;

    // Three sequences: different prefixes (0, 3 and 5 cached tokens), lengths
    // and options; one keeps only its last logits and no attention.
    const std::vector<std::int32_t> prefix(tokens.begin(), tokens.begin() + 5);
    const std::vector<std::vector<std::int32_t>> news = {
        {tokens.begin(), tokens.begin() + 6}, {tokens.begin() + 3, tokens.begin() + 7}, {tokens.begin() + 5, tokens.end()}};
    const std::vector<std::int64_t> cached = {0, 3, 5};
    auto options = [](std::size_t j) {
        prefill_options o;
        o.keep_kv = j != 1;
        o.attention_rows = j == 2 ? -1 : (j == 1 ? 0 : 2);
        o.logits_from = j == 1 ? -1 : 0;
        o.keep_query_norms = j == 0;
        return o;
    };
    auto fresh_caches = [&](const llama_model& m) {
        std::vector<float_kv_cache> caches;
        for (std::size_t j = 0; j < 3; ++j) {
            caches.emplace_back(m.config(), 32);
            if (cached[j] > 0)
                m.extend(std::vector<std::int32_t>(prefix.begin(), prefix.begin() + cached[j]), caches.back());
        }
        return caches;
    };

    for (const llama_model* m : {&blocks, &floats}) {
        std::vector<float_kv_cache> one = fresh_caches(*m), batch = fresh_caches(*m);
        std::vector<prefill_result> expected;
        for (std::size_t j = 0; j < 3; ++j) expected.push_back(m->extend(news[j], one[j], options(j)));
        std::vector<extend_job> jobs;
        for (std::size_t j = 0; j < 3; ++j) jobs.push_back(extend_job{&news[j], &batch[j], options(j)});
        const std::vector<prefill_result> got = m->extend_batch(jobs);
        REQUIRE(got.size() == 3);
        for (std::size_t j = 0; j < 3; ++j) {
            INFO("sequence " << j);
            CHECK(got[j].tokens == expected[j].tokens);
            CHECK(batch[j].tokens() == one[j].tokens());
            CHECK(got[j].logits_from == expected[j].logits_from);
            REQUIRE(got[j].logits.size() == expected[j].logits.size());
            CHECK(relative_error(got[j].logits, expected[j].logits) < 2e-5);
            CHECK(got[j].keys.size() == expected[j].keys.size());
            if (!expected[j].keys.empty()) {
                CHECK(relative_error(got[j].keys, expected[j].keys) < 1e-5);
                CHECK(relative_error(got[j].values, expected[j].values) < 1e-5);
            }
            CHECK(got[j].attention_dims.rows == expected[j].attention_dims.rows);
            REQUIRE(got[j].attention.size() == expected[j].attention.size());
            if (!expected[j].attention.empty()) CHECK(relative_error(got[j].attention, expected[j].attention) < 1e-5);
            REQUIRE(got[j].query_norms.size() == expected[j].query_norms.size());
            if (!expected[j].query_norms.empty()) CHECK(relative_error(got[j].query_norms, expected[j].query_norms) < 1e-5);
        }
        // Two jobs on one cache would interleave their tokens: refused.
        float_kv_cache shared(m->config(), 32);
        CHECK_THROWS_WITH(m->extend_batch({extend_job{&news[0], &shared, {}}, extend_job{&news[1], &shared, {}}}),
                          Catch::Contains("share one cache"));
        CHECK_THROWS_WITH(m->extend_batch({}), Catch::Contains("at least one sequence"));
    }
    // The float copy and the blocks give the same model.
    const prefill_result a = blocks.prefill(tokens, options(2)), b = floats.prefill(tokens, options(2));
    CHECK(relative_error(a.logits, b.logits) < 2e-5);
    CHECK(floats.layers()[0].q.has_dense_copy());
    CHECK_FALSE(blocks.layers()[0].q.has_dense_copy());
    (void)V;
}
