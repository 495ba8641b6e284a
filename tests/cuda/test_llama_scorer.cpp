// qaq-eval's CUDA scorer (examples/evaluator/cuda_scorer.hpp) against the
// CPU scorer on the tiny test model: the same questions under several
// quantizer pairs give the same choice log-probabilities, errors and sizes,
// and the factory builds CUDA workers only for cuda devices. Part of
// qaq-llama-cuda-tests: needs a GPU (skipped, exit 77, without).

#include <catch2/catch.hpp>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "evaluator/cuda_scorer.hpp"
#include "evaluator/model_scorer.hpp"
#include "evaluator/presets.hpp"
#include "evaluator/workers.hpp"

#ifndef QAQ_TEST_DATA_DIR
#define QAQ_TEST_DATA_DIR "tests/data"
#endif

using namespace qaq::eval;
using Catch::Matchers::Contains;

namespace {
std::string tiny_model() { return std::string(QAQ_TEST_DATA_DIR) + "/llama/tiny-llama.gguf"; }
}  // namespace

TEST_CASE("cuda scorer: choice log-probabilities, errors and sizes equal the CPU scorer's", "[cuda][eval]") {
    const auto K = qaq::cache_role::key, V = qaq::cache_role::value;
    const std::vector<quantizer_pair> pairs = {{configs::fp16(K), configs::fp16(V)},
                                               {configs::uniform(K, 8), configs::uniform(V, 8)},
                                               {configs::uniform(K, 4), configs::uniform(V, 2)}};
    const auto shared = std::make_shared<const loaded_model>(tiny_model());
    llama_scorer cpu(shared);
    const scorer_factory factory = make_cuda_model_scorer_factory(shared);
    const std::vector<device_spec> devices = parse_devices("cuda:0@2GiB");
    const std::unique_ptr<multiple_choice_scorer> gpu = factory(devices[0], 0);

    struct question {
        std::string context;
        std::vector<std::string> choices;
    };
    const std::vector<question> questions = {{"the answer is", {" the", " an answer the", " is is"}},
                                             {"she reads on and", {" stops", " reads the answer again"}}};
    for (const question& q : questions) {
        const std::vector<choice_scores> expected = cpu.score_all(q.context, q.choices, pairs);
        const std::vector<choice_scores> got = gpu->score_all(q.context, q.choices, pairs);
        REQUIRE(got.size() == expected.size());
        for (std::size_t p = 0; p < pairs.size(); ++p) {
            INFO("context '" << q.context << "', pair " << p);
            REQUIRE(got[p].mean_logprob.size() == q.choices.size());
            for (std::size_t i = 0; i < q.choices.size(); ++i) {
                CHECK(got[p].mean_logprob[i] == Approx(expected[p].mean_logprob[i]).margin(1e-4));
                CHECK(got[p].choice_tokens[i] == expected[p].choice_tokens[i]);
            }
            CHECK(got[p].context_tokens == expected[p].context_tokens);
            // K/V differ from the CPU's by float rounding only: the quantizers
            // see nearly the same input and report nearly the same errors.
            CHECK(got[p].key_error.mse() == Approx(expected[p].key_error.mse()).epsilon(0.05).margin(1e-9));
            CHECK(got[p].value_error.mse() == Approx(expected[p].value_error.mse()).epsilon(0.05).margin(1e-9));
            CHECK(got[p].logits_error.mse() == Approx(expected[p].logits_error.mse()).epsilon(0.05).margin(1e-8));
            CHECK(got[p].attention_error.mse() == Approx(expected[p].attention_error.mse()).epsilon(0.05).margin(1e-9));
            CHECK(got[p].key_size.bytes == Approx(expected[p].key_size.bytes).epsilon(0.01));
            CHECK(got[p].value_size.bytes == Approx(expected[p].value_size.bytes).epsilon(0.01));
        }
    }
    // The decode protocol: each choice decoded over qaq's device cache (the fp16 pair on the
    // host model). Fixed widths: the caches hold the same codes up to float rounding of the
    // forward, so scores agree closely with the CPU scorer's and sizes exactly.
    cpu.set_protocol("decode");
    gpu->set_protocol("decode");
    for (const question& q : questions) {
        const std::vector<choice_scores> expected = cpu.score_all(q.context, q.choices, pairs);
        const std::vector<choice_scores> got = gpu->score_all(q.context, q.choices, pairs);
        REQUIRE(got.size() == expected.size());
        for (std::size_t p = 0; p < pairs.size(); ++p) {
            INFO("decode protocol, context '" << q.context << "', pair " << p);
            for (std::size_t i = 0; i < q.choices.size(); ++i)
                CHECK(got[p].mean_logprob[i] == Approx(expected[p].mean_logprob[i]).margin(2e-3));
            CHECK(got[p].key_size.average_bits == expected[p].key_size.average_bits);
            CHECK(got[p].value_size.average_bits == expected[p].value_size.average_bits);
            CHECK(got[p].key_error.mse() == Approx(expected[p].key_error.mse()).epsilon(0.05).margin(1e-9));
            CHECK(got[p].attention_error.mse() == Approx(expected[p].attention_error.mse()).epsilon(0.1).margin(1e-8));
        }
    }
    gpu->set_protocol("prefill");
    // The CUDA factory takes cuda devices only.
    device_spec cpu_device;
    CHECK_THROWS_WITH(factory(cpu_device, 1), Contains("needs a cuda:N device"));
}
