// libFuzzer target: qaq-eval's experiment config files (examples/evaluator/
// experiment_config.hpp: json_experiment, with config_json.hpp's quantizer
// objects, presets and the KV spec strings of examples/common/kv_spec.hpp).
//
// The input is the file's text. It must be read (datasets::parse_json, then
// json_experiment) or refused with qaq::error; a JSON library exception or any
// other escaping a reader is a failure. A config that is read must give:
//   * a name, and at least one grid point;
//   * for every point a non-empty method and label, a key config of role key
//     and a value config of role value, both valid (quantizer_config::validate);
//   * a to_json form that reads back to the same experiment (name, settings,
//     x axis, and every point's method, label, approximation, note and configs).
// Anything else aborts.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "evaluator/config_json.hpp"
#include "evaluator/datasets/text_input.hpp"
#include "evaluator/experiment_config.hpp"
#include "qaq/error.hpp"

namespace {

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "fuzz_experiment_config: invariant violated: %s\n", what.c_str());
    std::abort();
}
#define FUZZ_REQUIRE(condition, what)                                 \
    do {                                                              \
        if (!(condition)) fail(std::string(#condition " ") + (what)); \
    } while (0)

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
    const std::string text(reinterpret_cast<const char*>(bytes), size);
    std::unique_ptr<qaq::eval::json_experiment> e;
    try {
        e = std::make_unique<qaq::eval::json_experiment>(qaq::eval::datasets::parse_json(text, "fuzz.json"),
                                                         "fuzz.json");
    } catch (const qaq::error&) {
        return 0;
    }
    FUZZ_REQUIRE(!e->name().empty(), "");
    const auto grid = e->quantizer_list();
    FUZZ_REQUIRE(!grid.empty(), "");
    for (const qaq::eval::grid_point& p : grid) {
        FUZZ_REQUIRE(!p.method.empty(), p.label);
        FUZZ_REQUIRE(!p.label.empty(), p.method);
        FUZZ_REQUIRE(p.key.role == qaq::cache_role::key, p.label);
        FUZZ_REQUIRE(p.value.role == qaq::cache_role::value, p.label);
        try {
            p.key.validate();
            p.value.validate();
        } catch (const qaq::error& error) {
            fail("point '" + p.label + "' holds an invalid config: " + error.what());
        }
    }

    // The explicit form reads back to the same experiment.
    const nlohmann::json explicit_form = qaq::eval::json_experiment::to_json(*e);
    std::unique_ptr<qaq::eval::json_experiment> back;
    try {
        back = std::make_unique<qaq::eval::json_experiment>(explicit_form, "to_json");
    } catch (const qaq::error& error) {
        fail(std::string("to_json does not read back: ") + error.what() + "\n" + explicit_form.dump());
    }
    FUZZ_REQUIRE(back->name() == e->name(), "");
    FUZZ_REQUIRE(back->description() == e->description(), "");
    FUZZ_REQUIRE(back->x_axis() == e->x_axis(), "");
    const qaq::eval::experiment_settings a = e->default_settings(), b = back->default_settings();
    FUZZ_REQUIRE(a.datasets == b.datasets && a.n == b.n && a.seed == b.seed, "");
    const auto again = back->quantizer_list();
    FUZZ_REQUIRE(again.size() == grid.size(), "");
    for (std::size_t i = 0; i < grid.size(); ++i) {
        const qaq::eval::grid_point &p = grid[i], &q = again[i];
        FUZZ_REQUIRE(p.method == q.method && p.label == q.label && p.approximation == q.approximation &&
                         p.note == q.note,
                     p.label + " vs " + q.label);
        FUZZ_REQUIRE(qaq::eval::canonical_json(p.key) == qaq::eval::canonical_json(q.key), p.label);
        FUZZ_REQUIRE(qaq::eval::canonical_json(p.value) == qaq::eval::canonical_json(q.value), p.label);
    }
    return 0;
}
