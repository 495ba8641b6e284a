// The evaluator's real-model scorer on the tiny test model: scoring several
// quantizer pairs of a question at once (batched continuations) gives what
// scoring each pair alone gives, and the exact pair scores like the exact model.
#include <catch2/catch.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "evaluator/fake_scorer.hpp"
#include "evaluator/presets.hpp"
#include "evaluator/model_scorer.hpp"

#ifndef QAQ_TEST_DATA_DIR
#define QAQ_TEST_DATA_DIR "tests/data"
#endif

using namespace qaq::eval;

namespace {
std::string tiny_model() { return std::string(QAQ_TEST_DATA_DIR) + "/llama/tiny-llama.gguf"; }
}  // namespace

TEST_CASE("eval: llama_scorer scores several pairs at once as it scores each alone", "[eval][model]") {
    const auto K = qaq::cache_role::key, V = qaq::cache_role::value;
    const std::vector<quantizer_pair> pairs = {{configs::fp16(K), configs::fp16(V)},
                                               {configs::uniform(K, 4), configs::uniform(V, 4)},
                                               {configs::uniform(K, 2), configs::uniform(V, 2)},
                                               {configs::uniform(K, 8), configs::uniform(V, 2)}};
    const std::string context = "the answer is";
    const std::vector<std::string> choices = {" the", " an answer the", " is is"};
    llama_scorer together(tiny_model()), alone(tiny_model());
    const std::vector<choice_scores> all = together.score_all(context, choices, pairs);
    REQUIRE(all.size() == pairs.size());
    for (std::size_t p = 0; p < pairs.size(); ++p) {
        INFO("pair " << p);
        const choice_scores one = alone.score(context, choices, pairs[p].key, pairs[p].value);
        REQUIRE(all[p].mean_logprob.size() == choices.size());
        for (std::size_t i = 0; i < choices.size(); ++i) {
            CHECK(std::isfinite(all[p].mean_logprob[i]));
            CHECK(all[p].mean_logprob[i] == Approx(one.mean_logprob[i]).margin(1e-5));
            CHECK(all[p].choice_tokens[i] == one.choice_tokens[i]);
        }
        CHECK(all[p].context_tokens == one.context_tokens);
        CHECK(all[p].key_size.bytes == one.key_size.bytes);
        CHECK(all[p].value_size.bytes == one.value_size.bytes);
        CHECK(all[p].key_error.mse() == Approx(one.key_error.mse()).epsilon(1e-9));
        CHECK(all[p].logits_error.mse() == Approx(one.logits_error.mse()).epsilon(1e-3).margin(1e-10));
    }
    // More bits, smaller errors; the fp16 cache is close to exact.
    CHECK(all[0].logits_error.mse() < all[1].logits_error.mse());
    CHECK(all[1].logits_error.mse() < all[2].logits_error.mse());
    CHECK(all[1].key_error.mse() < all[2].key_error.mse());
    CHECK(all[0].logits_error.mse() < 1e-4);
    CHECK_THROWS_WITH(together.score_all(context, choices, {}), Catch::Contains("at least one quantizer pair"));
}

TEST_CASE("eval: the model scorer factory shares one model between workers", "[eval][model]") {
    const scorer_factory factory = make_model_scorer_factory({tiny_model()});
    device_spec cpu;
    auto a = factory(cpu, 0), b = factory(cpu, 1);
    const auto K = qaq::cache_role::key, V = qaq::cache_role::value;
    const choice_scores sa = a->score("the answer", {" is", " the"}, configs::uniform(K, 4), configs::uniform(V, 4));
    const choice_scores sb = b->score("the answer", {" is", " the"}, configs::uniform(K, 4), configs::uniform(V, 4));
    CHECK(sa.mean_logprob == sb.mean_logprob);
    CHECK_THROWS_WITH(make_model_scorer_factory({""}), Catch::Contains("needs --model"));
}

TEST_CASE("eval: the decode protocol decodes each choice over the packed cache", "[eval][model]") {
    const auto K = qaq::cache_role::key, V = qaq::cache_role::value;
    const std::string context = "the answer is";
    const std::vector<std::string> choices = {" the", " an answer the"};
    llama_scorer prefill(tiny_model()), decode(tiny_model());
    decode.set_protocol("decode");
    CHECK_THROWS_WITH(decode.set_protocol("both"), Catch::Contains("expected prefill or decode"));
    const std::vector<quantizer_pair> pairs = {{configs::fp16(K), configs::fp16(V)},
                                               {configs::uniform(K, 2), configs::uniform(V, 2)}};
    const std::vector<choice_scores> p = prefill.score_all(context, choices, pairs);
    const std::vector<choice_scores> d = decode.score_all(context, choices, pairs);
    REQUIRE(d.size() == 2);
    // An FP16 cache is nearly exact under both protocols: the same scores.
    for (std::size_t i = 0; i < choices.size(); ++i) {
        CHECK(d[0].mean_logprob[i] == Approx(p[0].mean_logprob[i]).margin(2e-3));
        CHECK(d[0].choice_tokens[i] == p[0].choice_tokens[i]);
        CHECK(std::isfinite(d[1].mean_logprob[i]));
    }
    CHECK(d[0].logits_error.mse() < 1e-4);
    CHECK(d[0].attention_error.mse() < 1e-6);
    CHECK(d[1].attention_error.mse() > 10 * d[0].attention_error.mse());
    // 2-bit caches: errors grow, and decode holds context and choice tokens.
    CHECK(d[1].logits_error.mse() > d[0].logits_error.mse());
    CHECK(d[1].key_error.mse() == Approx(p[1].key_error.mse()).epsilon(1e-6));
    CHECK(d[1].key_size.elements > p[1].key_size.elements);
    CHECK(d[1].key_size.average_bits <= 16.0);
    // The fake scorer runs the prefill protocol only.
    fake_scorer fake;
    CHECK_THROWS_WITH(fake.set_protocol("decode"), Catch::Contains("only the prefill protocol"));
}
