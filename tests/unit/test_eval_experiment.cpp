// qaq-eval experiments: grids from C++ (presets) and from JSON configs, runs
// over thread workers with the deterministic fake scorer, resuming from the
// result cache, and quantizer configs serialized canonically.

#include <catch2/catch.hpp>

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "evaluator/config_json.hpp"
#include "evaluator/datasets/original.hpp"
#include "evaluator/experiment.hpp"
#include "evaluator/experiment_config.hpp"
#include "evaluator/fake_scorer.hpp"
#include "evaluator/presets.hpp"

#ifndef QAQ_TEST_DATA_DIR
#define QAQ_TEST_DATA_DIR "tests/data"
#endif

namespace {

using namespace qaq::eval;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;

struct temp_dir {
    fs::path path;
    temp_dir() {
        static std::atomic<int> counter{0};
        path = fs::temp_directory_path() / ("qaq-eval-exp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~temp_dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

dataset fixture_questions() {
    const std::string path = std::string(QAQ_TEST_DATA_DIR) + "/eval/questions.jsonl";
    dataset d = datasets::parse_qaq_jsonl(datasets::read_text_file(path, "fixture"), path);
    d.name = "fixture";
    d.canonical_name = "jsonl:questions.jsonl";
    d.sha256 = "fixture-sha";
    return d;
}

/// Counts the scorer calls.
struct counting_scorer final : multiple_choice_scorer {
    fake_scorer inner;
    std::atomic<int>* calls;
    counting_scorer(std::shared_ptr<const answer_key> key, std::atomic<int>* c) : inner(std::move(key)), calls(c) {}
    choice_scores score(const std::string& context, const std::vector<std::string>& choices,
                        const qaq::quantizer_config& k, const qaq::quantizer_config& v) override {
        ++*calls;
        return inner.score(context, choices, k, v);
    }
};

struct harness {
    temp_dir dir;
    dataset_map sets;
    std::shared_ptr<answer_key> answers;
    std::atomic<int> calls{0};
    std::ostringstream log, table;
    std::vector<std::string> warnings;

    harness() {
        sets.add(fixture_questions());
        const dataset* d = &sets.get("fixture");
        answers = make_answer_key({d});
    }

    run_summary run(const experiment& e, int workers, std::int64_t n = 0, const std::string& results = "results.jsonl",
                    std::size_t bundle = 8) {
        result_cache cache((dir.path / results).string(), [this](const std::string& m) { warnings.push_back(m); });
        std::vector<device_spec> devices(static_cast<std::size_t>(workers), parse_devices("cpu")[0]);
        thread_executor executor(devices, [this](const device_spec&, int) {
            return std::make_unique<counting_scorer>(answers, &calls);
        });
        run_context ctx;
        ctx.datasets = &sets;
        ctx.cache = &cache;
        ctx.executor = &executor;
        ctx.model = fake_scorer::identity();
        ctx.settings.datasets = {"fixture"};
        ctx.settings.n = n;
        ctx.settings.seed = 42;
        ctx.output.out_dir = (dir.path / "out").string();
        ctx.output.table = &table;
        ctx.show_progress = false;
        ctx.log = &log;
        ctx.bundle_size = bundle;
        return e.run(ctx);
    }
};

}  // namespace

TEST_CASE("eval: canonical quantizer JSON keeps only the fields in use", "[eval][experiment]") {
    qaq::quantizer_config off;
    off.role = qaq::cache_role::key;
    off.enabled = false;
    off.fixed_bits = 3;  // irrelevant when disabled
    CHECK(canonical_json(off).dump() == R"({"enabled":false,"role":"key"})");
    const qaq::quantizer_config u = configs::uniform(qaq::cache_role::value, 4, 0.01);
    CHECK(canonical_json(u).dump() ==
          R"({"bits":"fixed","codec":"uniform_mean_centred","enabled":true,"fixed_bits":4,"level":"head","outlier_ratio":0.01,"precision":"fp16","role":"value","symmetric":false})");
    qaq::quantizer_config u2 = u;
    u2.window = 9, u2.target_error = 3;  // unused by fixed bits: same key
    CHECK(canonical_json(u2) == canonical_json(u));
    const qaq::quantizer_config a = configs::adaptive(qaq::cache_role::key, 0.1, {}, 5, 0.01);
    CHECK(canonical_json(a)["q_norm"] == 100.0);
    CHECK(canonical_json(configs::ggml_style(qaq::cache_role::key, 8))["group_dims"] == 32);
    // The user form reads the canonical form back.
    for (const auto& c : {u, a, configs::ggml_style(qaq::cache_role::key, 4), configs::kivi_approx(qaq::cache_role::value, 2)}) {
        nlohmann::json j = canonical_json(c);
        CHECK(canonical_json(config_from_json(j, c.role, "x")) == j);
    }
    CHECK_FALSE(config_from_json("fp16", qaq::cache_role::value, "x").enabled);
    CHECK(config_from_json({{"bits", 3}}, qaq::cache_role::key, "x").fixed_bits == 3);
    CHECK(config_from_json({{"bits", "attention"}}, qaq::cache_role::key, "x").bits == qaq::bits_kind::key_query_norm);
    CHECK(config_from_json({{"bits", "qaq"}}, qaq::cache_role::value, "x").bits == qaq::bits_kind::value_attention);
    CHECK_THROWS_WITH(config_from_json({{"bitz", 3}}, qaq::cache_role::key, "p.key"), Contains("p.key.bitz: unknown field"));
    CHECK_THROWS_WITH(config_from_json({{"fixed_bits", "4"}}, qaq::cache_role::key, "p.key"),
                      Contains("p.key.fixed_bits: expected an integer, got string"));
    CHECK_THROWS_WITH(config_from_json({{"outlier_ratio", 1.5}}, qaq::cache_role::key, "p.key"),
                      Contains("p.key: outlier ratio is 1.5"));
    CHECK_THROWS_WITH(config_from_json({{"bits", "value_attention"}}, qaq::cache_role::key, "p.key"),
                      Contains("value_attention bits serve the value cache"));
    CHECK_THROWS_WITH(config_from_json("int4", qaq::cache_role::key, "p.key"), Contains("expected \"fp16\""));
}

TEST_CASE("eval: every preset is valid and holds the fp16 baseline", "[eval][experiment]") {
    for (const auto& info : presets()) {
        const auto e = info.make({});
        const auto grid = e->quantizer_list();
        INFO(info.name);
        REQUIRE(!grid.empty());
        CHECK(is_baseline({"", "", "", false, "", grid[0].key, grid[0].value, "", 0, 0}));
        CHECK_NOTHROW(e->tasks({{"d"}, 1, 1}));
    }
    CHECK(make_preset("key-vs-value")->quantizer_list().size() == 17);
    CHECK(make_preset("qaq-vs-uniform")->quantizer_list().size() == 51);
    const auto base = make_preset("baselines")->quantizer_list();
    int kivi = 0;
    for (const auto& p : base) {
        if (p.method == "kivi") {
            ++kivi;
            CHECK(p.approximation);
            CHECK_THAT(p.note, Contains("per channel"));
        }
        if (p.method == "q4_0-style") {
            CHECK(p.key.symmetric);
            CHECK(p.key.level == qaq::group_level::sub_head);
            CHECK(p.key.group_dims == 32);
            CHECK(p.key.fixed_bits == 4);
            CHECK(p.key.precision == qaq::storage_precision::fp16);
        }
    }
    CHECK(kivi == 2);
    CHECK_THROWS_WITH(make_preset("nope"), Contains("unknown preset \"nope\"; expected one of smoke"));
    preset_parameters p;
    p.q_norm = 7;
    CHECK(make_preset("smoke", p)->quantizer_list()[3].key.q_norm == 7);
}

TEST_CASE("eval: JSON experiment configs expand axes, defaults and presets", "[eval][experiment]") {
    const nlohmann::json j = nlohmann::json::parse(R"({
        "name": "grid", "datasets": ["a", "b"], "n": 7, "seed": 3, "x_axis": "bits",
        "defaults": {"both": {"outlier_ratio": 0.01}},
        "points": [
            {"method": "fp16", "key": "fp16", "value": "fp16"},
            {"method": "uniform", "both": {"fixed_bits": [2, 4, 8]}},
            {"method": "mixed", "label": "mix", "key": {"fixed_bits": [4, 8]}, "value": {"fixed_bits": [2, 3]}},
            {"method": "qaq", "key": {"bits": "attention", "target_error": [0.1, 0.2]}, "value": {"bits": "attention"},
             "note": "n", "approximation": true},
            {"preset": "smoke"}
        ]})");
    const json_experiment e(j, "grid.json");
    CHECK(e.name() == "grid");
    CHECK(e.x_axis() == "bits");
    CHECK(e.default_settings().datasets == std::vector<std::string>{"a", "b"});
    CHECK(e.default_settings().n == 7);
    CHECK(e.default_settings().seed == 3);
    const auto g = e.quantizer_list();
    REQUIRE(g.size() == 1 + 3 + 4 + 2 + 4);
    CHECK_FALSE(g[0].key.enabled);
    // "both" is one shared axis
    CHECK(g[1].key.fixed_bits == 2);
    CHECK(g[1].value.fixed_bits == 2);
    CHECK(g[3].key.fixed_bits == 8);
    CHECK(g[3].value.fixed_bits == 8);
    CHECK(g[1].key.outlier_ratio == 0.01);  // from defaults
    CHECK(g[1].label == "K 2b o1% / V 2b o1%");
    // separate key and value axes: a cartesian product, key first
    CHECK(g[4].key.fixed_bits == 4);
    CHECK(g[4].value.fixed_bits == 2);
    CHECK(g[5].value.fixed_bits == 3);
    CHECK(g[6].key.fixed_bits == 8);
    CHECK(g[4].label == "mix K.fixed_bits=4 V.fixed_bits=2");
    CHECK(g[8].key.bits == qaq::bits_kind::key_query_norm);
    CHECK(g[8].key.target_error == 0.1);
    CHECK(g[9].key.target_error == 0.2);
    CHECK(g[8].value.bits == qaq::bits_kind::value_attention);
    CHECK(g[8].approximation);
    CHECK(g[10].method == "fp16");  // the smoke preset's points
    CHECK(e.tasks(e.default_settings()).size() == 2 * g.size());
    // The JSON form of a preset reads back to the same grid.
    const auto preset = make_preset("baselines");
    const json_experiment round(json_experiment::to_json(*preset), "round");
    REQUIRE(round.quantizer_list().size() == preset->quantizer_list().size());
    for (std::size_t i = 0; i < round.quantizer_list().size(); ++i) {
        CHECK(canonical_json(round.quantizer_list()[i].key) == canonical_json(preset->quantizer_list()[i].key));
        CHECK(round.quantizer_list()[i].approximation == preset->quantizer_list()[i].approximation);
    }
}

TEST_CASE("eval: JSON experiment points from KV spec strings", "[eval][experiment]") {
    preset_parameters p;
    p.q_norm = 42;
    const json_experiment e(nlohmann::json::parse(R"({"name": "kv", "points": [
        {"method": "spec", "kv": ["uniform:4", "k:uniform:8/v:fp16", "qaq:eps=0.2"]},
        {"method": "one", "label": "x", "kv": "fp16"}]})"),
                            "kv.json", p);
    const auto g = e.quantizer_list();
    REQUIRE(g.size() == 4);
    CHECK(g[0].label == "uniform:4");
    CHECK(g[0].key.fixed_bits == 4);
    CHECK(g[0].value.fixed_bits == 4);
    CHECK(g[0].key.role == qaq::cache_role::key);
    CHECK(g[1].key.fixed_bits == 8);
    CHECK_FALSE(g[1].value.enabled);
    CHECK(g[2].key.bits == qaq::bits_kind::key_query_norm);
    CHECK(g[2].key.q_norm == 42);  // q_norm=auto (the default) takes the preset q_norm
    CHECK(g[3].label == "x fp16");
    CHECK_NOTHROW(e.tasks({{"d"}, 1, 1}));
    auto parse = [](const char* text) { return json_experiment(nlohmann::json::parse(text), "kv.json"); };
    CHECK_THROWS_WITH(parse(R"({"name": "x", "points": [{"method": "m", "kv": "fp32"}]})"),
                      Contains("kv.json: points[0].kv: \"fp32\" is an exact float32 cache"));
    CHECK_THROWS_WITH(parse(R"({"name": "x", "points": [{"method": "m", "kv": "int4"}]})"), Contains("kv.json: points[0].kv: "));
    CHECK_THROWS_WITH(parse(R"({"name": "x", "points": [{"method": "m", "kv": "fp16", "key": "fp16"}]})"),
                      Contains("\"kv\" replaces key, value and both"));
}

TEST_CASE("eval: JSON experiment config errors name the place", "[eval][experiment]") {
    auto parse = [](const char* text) { return json_experiment(nlohmann::json::parse(text), "cfg.json"); };
    CHECK_THROWS_WITH(parse(R"({"points": [{"method": "m"}]})"), Contains("cfg.json: missing field \"name\""));
    CHECK_THROWS_WITH(parse(R"({"name": "x"})"), Contains("cfg.json: missing field \"points\""));
    CHECK_THROWS_WITH(parse(R"({"name": "x", "pionts": []})"), Contains("cfg.json: field \"pionts\": unknown field"));
    CHECK_THROWS_WITH(parse(R"({"name": "x", "points": [{"key": "fp16"}]})"),
                      Contains("cfg.json: points[0]: missing field \"method\""));
    CHECK_THROWS_WITH(parse(R"({"name": "x", "points": [{"method": "m", "key": {"fixed_bits": 99}}]})"),
                      Contains("cfg.json: points[0].key: bits is 99"));
    CHECK_THROWS_WITH(parse(R"({"name": "x", "points": [{"method": "m", "both": {"fixed_bits": []}}]})"),
                      Contains("points[0].both.fixed_bits: an axis needs at least one value"));
    CHECK_THROWS_WITH(parse(R"({"name": "x", "points": [{"preset": "smoke", "method": "m"}]})"),
                      Contains("a preset entry is {\"preset\": NAME} and nothing else"));
    CHECK_THROWS_WITH(parse(R"({"name": "x", "n": -1, "points": [{"method": "m"}]})"),
                      Contains("field \"n\" must be an integer >= 0"));
}

TEST_CASE("eval: an experiment runs, writes reports, and resumes from the cache", "[eval][experiment]") {
    harness h;
    const smoke_experiment e;
    const run_summary first = h.run(e, 2);
    CHECK(first.computed == 4);
    CHECK(first.cached == 0);
    CHECK(first.failed == 0);
    CHECK(h.calls == 4 * 12);
    REQUIRE(first.records.size() == 4);
    CHECK(first.records[0].result.questions == 12);
    CHECK(fs::exists(h.dir.path / "out" / "results.csv"));
    CHECK(fs::exists(h.dir.path / "out" / "results.json"));
    CHECK(fs::exists(h.dir.path / "out" / "summary.json"));
    CHECK(fs::exists(h.dir.path / "out" / "accuracy_fixture.svg"));
    CHECK_THAT(h.table.str(), Contains("experiment smoke (4 evaluations)"));
    // Fewer bits: more error, more compression.
    CHECK(first.records[1].result.mse_key > 0);
    CHECK(first.records[2].result.mse_key > first.records[1].result.mse_key);
    CHECK(first.records[2].result.compression_ratio > first.records[1].result.compression_ratio);
    // Run again: everything from the cache, nothing scored.
    h.calls = 0;
    const run_summary second = h.run(e, 3);
    CHECK(second.computed == 0);
    CHECK(second.cached == 4);
    CHECK(h.calls == 0);
    for (std::size_t i = 0; i < 4; ++i) CHECK(to_json(second.records[i].result) == to_json(first.records[i].result));
    // A different n is a different key.
    const run_summary third = h.run(e, 1, 5);
    CHECK(third.computed == 4);
    CHECK(third.records[0].result.questions == 5);
}

TEST_CASE("eval: a partial result file is completed, not recomputed", "[eval][experiment]") {
    harness h;
    const key_vs_value_experiment e;  // 17 points
    // Pretend an earlier run stored only the fp16 baseline and two more results, then was killed.
    {
        harness full;
        const run_summary all = full.run(e, 2);
        REQUIRE(all.computed == 17);
        result_cache partial((h.dir.path / "results.jsonl").string());
        for (std::size_t i : {0u, 3u, 12u}) partial.append(all.records[i].key, all.records[i].result);
        // ... and the results are identical whatever the number of workers
        const run_summary resumed = h.run(e, 3);
        CHECK(resumed.cached == 3);
        CHECK(resumed.computed == 14);
        CHECK(h.calls == 14 * 12);
        for (std::size_t i = 0; i < 17; ++i) CHECK(to_json(resumed.records[i].result) == to_json(all.records[i].result));
    }
    CHECK_THAT(h.table.str(), Contains("key only needs"));
}

TEST_CASE("eval: grid points with the same key are computed once", "[eval][experiment]") {
    harness h;
    const json_experiment e(nlohmann::json::parse(R"({"name": "dup", "points": [
        {"method": "a", "both": {"fixed_bits": 4}}, {"method": "b", "both": {"fixed_bits": 4}}, {"preset": "smoke"}]})"),
                            "dup");
    const run_summary s = h.run(e, 2);
    REQUIRE(s.records.size() == 6);
    CHECK(s.computed == 4);  // a, fp16, 2b, qaq; b and smoke's 4b share a's key
    CHECK(s.shared == 2);
    CHECK(to_json(s.records[1].result) == to_json(s.records[0].result));
    CHECK(h.calls == 4 * 12);
}

TEST_CASE("eval: a failing evaluation is reported, the others complete", "[eval][experiment]") {
    harness h;
    struct failing final : multiple_choice_scorer {
        fake_scorer inner;
        choice_scores score(const std::string& c, const std::vector<std::string>& ch, const qaq::quantizer_config& k,
                            const qaq::quantizer_config& v) override {
            if (k.enabled && k.fixed_bits == 2) throw qaq::error("simulated failure");
            return inner.score(c, ch, k, v);
        }
    };
    result_cache cache((h.dir.path / "r.jsonl").string());
    thread_executor executor(parse_devices("cpu*2"), [](const device_spec&, int) { return std::make_unique<failing>(); });
    run_context ctx;
    ctx.datasets = &h.sets;
    ctx.cache = &cache;
    ctx.executor = &executor;
    ctx.model = fake_scorer::identity();
    ctx.settings.datasets = {"fixture"};
    ctx.settings.n = 0;
    ctx.output.table = &h.table;
    ctx.show_progress = false;
    ctx.log = &h.log;
    const run_summary s = smoke_experiment().run(ctx);
    CHECK(s.failed == 1);
    CHECK(s.computed == 3);
    CHECK_FALSE(s.records[2].ok);
    CHECK_THAT(s.records[2].error, Contains("simulated failure"));
    CHECK_THAT(h.log.str(), Contains("evaluation failed (uniform / K 2b / V 2b on fixture"));
    CHECK_THAT(h.table.str(), Contains("FAILED: qaq: simulated failure"));
    CHECK(cache.size() == 3);  // failures are not cached: the next run retries them
}

TEST_CASE("eval: bundled evaluations give what one evaluation per job gives", "[eval][experiment]") {
    harness h;
    const auto e = make_preset("key-vs-value");  // 17 points on one sample
    const run_summary one = h.run(*e, 2, 0, "one.jsonl", 1);
    const run_summary bundled = h.run(*e, 2, 0, "bundled.jsonl", 5);  // jobs of 5, 5, 5, 2
    REQUIRE(one.records.size() == 17);
    REQUIRE(bundled.records.size() == 17);
    CHECK(one.computed == 17);
    CHECK(bundled.computed == 17);
    for (std::size_t i = 0; i < 17; ++i) {
        CHECK(bundled.records[i].task.label == one.records[i].task.label);
        CHECK(to_json(bundled.records[i].result) == to_json(one.records[i].result));
    }
}

TEST_CASE("eval: a pair that fails on one question fails alone inside its job", "[eval][experiment]") {
    // score_all throws for the whole question when any pair fails; the job then
    // scores that question pair by pair and drops only the failing pair.
    fake_scorer reference;
    struct picky final : multiple_choice_scorer {
        fake_scorer inner;
        int scored = 0;
        choice_scores score(const std::string& c, const std::vector<std::string>& ch, const qaq::quantizer_config& k,
                            const qaq::quantizer_config& v) override {
            if (k.enabled && k.fixed_bits == 2 && c == fixture_questions().questions[3].context)
                throw qaq::error("no 2-bit keys for question 3");
            return inner.score(c, ch, k, v);
        }
        std::vector<choice_scores> score_all(const std::string& c, const std::vector<std::string>& ch,
                                             const std::vector<quantizer_pair>& pairs) override {
            std::vector<choice_scores> out;
            for (const auto& p : pairs) out.push_back(score(c, ch, p.key, p.value));
            return out;
        }
    } scorer;
    const dataset d = fixture_questions();
    std::vector<const question*> questions;
    for (const auto& q : d.questions) questions.push_back(&q);
    const auto K = qaq::cache_role::key, V = qaq::cache_role::value;
    const std::vector<quantizer_pair> pairs = {{configs::uniform(K, 4), configs::uniform(V, 4)},
                                               {configs::uniform(K, 2), configs::uniform(V, 2)},
                                               {configs::fp16(K), configs::fp16(V)}};
    int reported = 0;
    const std::vector<evaluation_attempt> got = evaluate_all(scorer, questions, pairs, [&] { ++reported; });
    REQUIRE(got.size() == 3);
    CHECK(reported == static_cast<int>(questions.size()));
    CHECK_FALSE(got[1].ok);
    CHECK_THAT(got[1].error, Contains("no 2-bit keys for question 3"));
    for (std::size_t i : {0u, 2u}) {
        REQUIRE(got[i].ok);
        const evaluation_result alone = evaluate(reference, questions, pairs[i].key, pairs[i].value);
        CHECK(to_json(got[i].result) == to_json(alone));
    }
    CHECK_THROWS_WITH(evaluate(scorer, questions, pairs[1].key, pairs[1].value), Contains("no 2-bit keys"));
}
