// qaq-eval workers and the fake scorer: --devices parsing, the shared task
// queue over several threads, device failures (CUDA is not in this build) as
// clear errors, and the fake scorer's determinism and genuine byte counts.

#include <catch2/catch.hpp>

#include <atomic>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "evaluator/fake_scorer.hpp"
#include "evaluator/presets.hpp"
#include "evaluator/progress.hpp"
#include "evaluator/workers.hpp"

using namespace qaq::eval;
using Catch::Matchers::Contains;

TEST_CASE("eval: --devices entries parse, with counts, indices and memory", "[eval][workers]") {
    auto d = parse_devices("cpu,cpu");
    REQUIRE(d.size() == 2);
    CHECK(d[0].kind == device_spec::kind_t::cpu);
    CHECK(parse_devices("cpu*3").size() == 3);
    d = parse_devices("cuda:0@40GiB, cuda:1@512MiB,cpu:2@1.5GB");
    REQUIRE(d.size() == 3);
    CHECK(d[0].kind == device_spec::kind_t::cuda);
    CHECK(d[0].index == 0);
    CHECK(d[0].memory_bytes == 40ll << 30);
    CHECK(d[0].text == "cuda:0@40GiB");
    CHECK(d[1].memory_bytes == 512ll << 20);
    CHECK(d[2].index == 2);
    CHECK(d[2].memory_bytes == 1500000000ll);
    CHECK_THROWS_WITH(parse_devices(""), Contains("--devices is empty"));
    CHECK_THROWS_WITH(parse_devices("cpu,,cpu"), Contains("has an empty entry"));
    CHECK_THROWS_WITH(parse_devices("tpu"), Contains("device \"tpu\": unknown kind \"tpu\"; expected cpu or cuda"));
    CHECK_THROWS_WITH(parse_devices("cuda"), Contains("a CUDA entry needs a device index"));
    CHECK_THROWS_WITH(parse_devices("cuda:0@40GB/s"), Contains("memory unit \"GB/s\""));
    CHECK_THROWS_WITH(parse_devices("cuda:x"), Contains("index \"x\" must be a non-negative integer"));
    CHECK_THROWS_WITH(parse_devices("cpu*0"), Contains("count must be 1..1024"));
}

namespace {

struct tagging_scorer final : multiple_choice_scorer {
    int worker;
    explicit tagging_scorer(int w) : worker(w) {}
    choice_scores score(const std::string&, const std::vector<std::string>& choices, const qaq::quantizer_config&,
                        const qaq::quantizer_config&) override {
        choice_scores s;
        s.mean_logprob.assign(choices.size(), -1.0);
        return s;
    }
};

}  // namespace

TEST_CASE("eval: thread workers share one queue, each with its own scorer", "[eval][workers]") {
    std::atomic<int> built{0};
    thread_executor ex(parse_devices("cpu*3"), [&](const device_spec&, int w) {
        ++built;
        return std::make_unique<tagging_scorer>(w);
    });
    std::vector<std::size_t> pending;
    for (std::size_t i = 0; i < 40; ++i) pending.push_back(i * 2);
    std::set<std::size_t> done;
    std::set<int> workers_used;
    std::mutex m;
    int questions = 0;
    ex.execute(
        pending,
        [&](multiple_choice_scorer& s, std::size_t task, const std::function<void()>& q) {
            {
                std::lock_guard<std::mutex> lock(m);
                workers_used.insert(dynamic_cast<tagging_scorer&>(s).worker);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
            q();
            evaluation_attempt a;
            a.ok = true;
            a.result.questions = static_cast<std::int64_t>(task);
            return std::vector<evaluation_attempt>{a};
        },
        [&](const task_outcome& o) {
            CHECK(o.ok);
            REQUIRE(o.results.size() == 1);
            CHECK(o.results[0].result.questions == static_cast<std::int64_t>(o.task));
            CHECK(done.insert(o.task).second);  // each task exactly once
        },
        [&] { ++questions; });
    CHECK(built == 3);
    CHECK(done.size() == 40);
    CHECK(questions == 40);
    CHECK(workers_used.size() >= 2);
}

TEST_CASE("eval: a device that cannot start stops the run before any task", "[eval][workers]") {
    thread_executor ex(parse_devices("cpu,cuda:0@40GiB"), [](const device_spec& d, int) -> std::unique_ptr<multiple_choice_scorer> {
        QAQ_CHECK(d.kind == device_spec::kind_t::cpu, "device ", d.text, ": CUDA workers are not available in this build");
        return std::make_unique<tagging_scorer>(0);
    });
    int ran = 0;
    CHECK_THROWS_WITH(ex.execute({1, 2, 3}, [&](multiple_choice_scorer&, std::size_t, const std::function<void()>&) {
        ++ran;
        return std::vector<evaluation_attempt>{};
    }, [](const task_outcome&) {}, {}),
                      Contains("cannot start the workers:") && Contains("device cuda:0@40GiB (worker 1)") &&
                          Contains("not available in this build"));
    CHECK(ran == 0);
}

TEST_CASE("eval: the fake scorer is deterministic and measures real bytes", "[eval][workers]") {
    const std::string ctx = "The quick brown fox jumps over the lazy dog near the river bank";
    const std::vector<std::string> choices = {" and sleeps.", " and flies away to the sun.", " quietly."};
    fake_scorer a, b;
    const auto K = qaq::cache_role::key, V = qaq::cache_role::value;
    const choice_scores s1 = a.score(ctx, choices, configs::uniform(K, 4), configs::uniform(V, 4));
    const choice_scores s2 = b.score(ctx, choices, configs::uniform(K, 4), configs::uniform(V, 4));
    CHECK(s1.mean_logprob == s2.mean_logprob);
    CHECK(s1.context_tokens == 13);
    REQUIRE(s1.mean_logprob.size() == 3);
    for (double x : s1.mean_logprob) CHECK(x < 0);
    // L2 x H2 x T13 x D64 values per cache; 4-bit codes are half a byte each.
    CHECK(s1.key_size.elements == 2 * 2 * 13 * 64);
    CHECK(s1.key_size.bytes >= s1.key_size.elements / 2);
    CHECK(s1.key_size.bytes < s1.key_size.elements);
    CHECK(s1.key_size.average_bits == 4.0);
    CHECK(s1.key_size.bits_per_element == Approx(4.0 + 32.0 / 64));
    const choice_scores fp = a.score(ctx, choices, configs::fp16(K), configs::fp16(V));
    CHECK(fp.key_size.average_bits == 16.0);
    CHECK(fp.key_size.bytes >= 2 * fp.key_size.elements);
    const choice_scores two = a.score(ctx, choices, configs::uniform(K, 2), configs::uniform(V, 2));
    CHECK(two.key_error.mse() > s1.key_error.mse());
    CHECK(two.logits_error.mse() > s1.logits_error.mse());
    CHECK(s1.key_error.mse() > fp.key_error.mse());
}

TEST_CASE("eval: progress line and durations", "[eval][workers]") {
    CHECK(format_duration(5) == "5s");
    CHECK(format_duration(125) == "2m05s");
    CHECK(format_duration(7300) == "2h01m");
    CHECK(format_duration(-1) == "?");
    std::ostringstream out;
    progress p(out, 10, 2, true, 0);
    p.question_done(5);
    p.task_done("a", true);
    CHECK_THAT(out.str(), Contains("[qaq-eval] 1/2 evaluations (5/10 questions)"));
    CHECK_THAT(p.line(), Contains(" 50% 5/10 questions"));
    std::ostringstream tty;
    progress t(tty, 4, 1, true, 1);
    t.question_done(4);
    t.task_done("b", true);
    t.finish();
    CHECK_THAT(tty.str(), Contains("\r[##############################] 100% 4/4 questions"));
}
