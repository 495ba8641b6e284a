#pragma once
// Output of an experiment: a table on stdout, results.csv, results.json, and
// one SVG plot per dataset of accuracy vs compression ratio (a series per
// method, like the paper's Figure 4), plus summary numbers:
//   * the accuracy-vs-compression envelope of each method (points no other
//     point of the method beats in both accuracy and ratio);
//   * per method, the highest compression ratio whose accuracy is less than
//     one percentage point below the FP16 baseline (the paper's Table 1).
// Files are written to a temporary name and renamed, so a reader never sees
// half a file.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "evaluator/config_json.hpp"
#include "evaluator/evaluation.hpp"
#include "evaluator/svg_plot.hpp"
#include "qaq/error.hpp"

namespace qaq::eval {

struct evaluation_record {
    evaluation_task task;
    nlohmann::json key;        ///< the result-cache key
    bool ok = false;           ///< false: the evaluation failed (see error)
    bool cached = false;       ///< true: read from the results file, not computed in this run
    std::string error;
    evaluation_result result;
};

inline bool is_baseline(const evaluation_task& t) { return !t.key.enabled && !t.value.enabled; }

/// Display name of a method, with the approximation marker.
inline std::string method_name(const evaluation_task& t) { return t.approximation ? t.method + " (approx.)" : t.method; }

/// The x value of a record on `axis`: compression_ratio (real packed bytes),
/// reference_compression_ratio, or bits (mean reference bits of the quantized caches).
inline double axis_value(const evaluation_record& r, const std::string& axis) {
    if (axis == "compression_ratio") return r.result.compression_ratio;
    if (axis == "reference_compression_ratio") return r.result.reference_compression_ratio;
    if (axis == "bits") {
        if (r.task.key.enabled && !r.task.value.enabled) return r.result.average_bits_key;
        if (!r.task.key.enabled && r.task.value.enabled) return r.result.average_bits_value;
        return (r.result.average_bits_key + r.result.average_bits_value) / 2;
    }
    throw qaq::error("unknown plot axis \"" + axis + "\"; expected compression_ratio, reference_compression_ratio or bits");
}

inline std::string axis_title(const std::string& axis) {
    if (axis == "compression_ratio") return "compression ratio (FP16 bytes / packed bytes)";
    if (axis == "reference_compression_ratio") return "compression ratio (reference accounting)";
    return "average bits per value (quantized cache)";
}

/// The FP16 baseline accuracy per dataset, when the records hold one.
inline std::map<std::string, double> baselines(const std::vector<evaluation_record>& records) {
    std::map<std::string, double> out;
    for (const auto& r : records)
        if (r.ok && is_baseline(r.task) && out.count(r.task.dataset) == 0) out[r.task.dataset] = r.result.accuracy;
    return out;
}

/// Indices (into `records`) of the envelope of one method on one dataset,
/// ordered by increasing compression ratio.
inline std::vector<std::size_t> envelope(const std::vector<evaluation_record>& records, const std::string& method,
                                         const std::string& dataset, const std::string& axis = "compression_ratio") {
    std::vector<std::size_t> candidates;
    for (std::size_t i = 0; i < records.size(); ++i)
        if (records[i].ok && method_name(records[i].task) == method && records[i].task.dataset == dataset)
            candidates.push_back(i);
    std::vector<std::size_t> out;
    for (std::size_t i : candidates) {
        bool dominated = false;
        for (std::size_t j : candidates) {
            if (i == j) continue;
            const double xi = axis_value(records[i], axis), xj = axis_value(records[j], axis);
            const double ai = records[i].result.accuracy, aj = records[j].result.accuracy;
            if (xj >= xi && aj >= ai && (xj > xi || aj > ai)) dominated = true;
            if (xj == xi && aj == ai && j < i) dominated = true;  // keep the first of equal points
        }
        if (!dominated) out.push_back(i);
    }
    std::sort(out.begin(), out.end(),
              [&](std::size_t a, std::size_t b) { return axis_value(records[a], axis) < axis_value(records[b], axis); });
    return out;
}

struct table1_entry {
    std::string method, dataset;
    double baseline = 0;
    bool found = false;
    std::size_t record = 0;  ///< the best point, when found
};

/// Per method and dataset: the highest compression ratio with accuracy > baseline - 0.01.
inline std::vector<table1_entry> best_within_one_point(const std::vector<evaluation_record>& records) {
    const auto base = baselines(records);
    std::vector<table1_entry> out;
    std::set<std::pair<std::string, std::string>> seen;
    for (const auto& r : records) {
        if (!r.ok || is_baseline(r.task) || base.count(r.task.dataset) == 0) continue;
        const auto id = std::make_pair(method_name(r.task), r.task.dataset);
        if (!seen.insert(id).second) continue;
        table1_entry e{id.first, id.second, base.at(r.task.dataset), false, 0};
        for (std::size_t i = 0; i < records.size(); ++i) {
            const auto& c = records[i];
            if (!c.ok || method_name(c.task) != e.method || c.task.dataset != e.dataset) continue;
            if (c.result.accuracy > e.baseline - 0.01 &&
                (!e.found || c.result.compression_ratio > records[e.record].result.compression_ratio)) {
                e.found = true;
                e.record = i;
            }
        }
        out.push_back(e);
    }
    return out;
}

inline std::string fixed(double v, int decimals) {
    char buffer[48];
    std::snprintf(buffer, sizeof buffer, "%.*f", decimals, v);
    return buffer;
}

inline std::string sci(double v) {
    char buffer[48];
    std::snprintf(buffer, sizeof buffer, "%.2e", v);
    return buffer;
}

inline void print_table(std::ostream& out, const std::vector<evaluation_record>& records) {
    const auto base = baselines(records);
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"method", "point", "dataset", "n", "accuracy", "+-95%", "d_acc", "logp", "K bits", "V bits", "ratio",
                    "ref ratio", "mse K", "mse V", "mse attn", "mse logits", "src"});
    for (const auto& r : records) {
        std::vector<std::string> row = {method_name(r.task), r.task.label, r.task.dataset};
        if (!r.ok) {
            row.push_back(std::to_string(r.task.n));
            row.push_back("FAILED: " + r.error);
            rows.push_back(row);
            continue;
        }
        const auto& m = r.result;
        row.push_back(std::to_string(m.questions));
        row.push_back(fixed(m.accuracy, 4));
        row.push_back(fixed(m.accuracy_ci95, 4));
        row.push_back(base.count(r.task.dataset) ? fixed(m.accuracy - base.at(r.task.dataset), 4) : "-");
        row.push_back(fixed(m.answer_logprob, 3));
        row.push_back(fixed(m.average_bits_key, 2));
        row.push_back(fixed(m.average_bits_value, 2));
        row.push_back(fixed(m.compression_ratio, 3));
        row.push_back(fixed(m.reference_compression_ratio, 3));
        row.push_back(sci(m.mse_key));
        row.push_back(sci(m.mse_value));
        row.push_back(sci(m.mse_attention));
        row.push_back(sci(m.mse_logits));
        row.push_back(r.cached ? "cache" : "run");
        rows.push_back(row);
    }
    std::vector<std::size_t> width(rows[0].size(), 0);
    for (const auto& row : rows)
        for (std::size_t i = 0; i < row.size() && i < width.size(); ++i)
            if (!(row.size() == 5 && i == 4)) width[i] = std::max(width[i], row[i].size());
    for (const auto& row : rows) {
        std::string line;
        for (std::size_t i = 0; i < row.size(); ++i) {
            std::string cell = row[i];
            if (i + 1 < row.size() && i < width.size()) cell.resize(std::max(width[i], cell.size()), ' ');
            line += (i ? "  " : "") + cell;
        }
        while (!line.empty() && line.back() == ' ') line.pop_back();
        out << line << "\n";
    }
    bool approximations = false;
    for (const auto& r : records) approximations = approximations || r.task.approximation;
    if (approximations) {
        std::set<std::string> notes;
        for (const auto& r : records)
            if (r.task.approximation && notes.insert(r.task.method + ": " + r.task.note).second)
                out << "(approx.) " << r.task.method << ": " << r.task.note << "\n";
    }
}

inline std::string csv_cell(const std::string& s) {
    if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
    std::string out = "\"";
    for (char c : s) {
        if (c == '"') out += "\"\"";
        else out.push_back(c);
    }
    return out + "\"";
}

inline std::string render_csv(const std::vector<evaluation_record>& records) {
    static const char* metric_names[] = {
        "accuracy", "accuracy_ci95", "answer_logprob", "mse_key", "mse_value", "mse_attention", "mse_logits", "mae_key",
        "mae_value", "mae_attention", "mae_logits", "average_bits_key", "average_bits_value", "bits_per_element_key",
        "bits_per_element_value", "bytes_key", "bytes_value", "bytes_fp16", "compression_ratio",
        "reference_compression_ratio", "bytes_per_token_key", "bytes_per_token_value"};
    std::string out = "experiment,method,approximation,label,dataset,n,seed,key_config,value_config,status,source,questions,correct,context_tokens,choice_tokens";
    for (const char* m : metric_names) out += std::string(",") + m;
    out += ",note,error\n";
    for (const auto& r : records) {
        const nlohmann::json m = to_json(r.result);
        std::vector<std::string> cells = {r.task.experiment,
                                          r.task.method,
                                          r.task.approximation ? "true" : "false",
                                          r.task.label,
                                          r.task.dataset,
                                          std::to_string(r.task.n),
                                          std::to_string(r.task.seed),
                                          canonical_json(r.task.key).dump(),
                                          canonical_json(r.task.value).dump(),
                                          r.ok ? "ok" : "failed",
                                          r.cached ? "cache" : "run"};
        if (r.ok) {
            cells.push_back(std::to_string(r.result.questions));
            cells.push_back(std::to_string(r.result.correct));
            cells.push_back(std::to_string(r.result.context_tokens));
            cells.push_back(std::to_string(r.result.choice_tokens));
            for (const char* name : metric_names) cells.push_back(m[name].dump());
        } else {
            for (std::size_t i = 0; i < 4 + std::size(metric_names); ++i) cells.push_back("");
        }
        cells.push_back(r.task.note);
        cells.push_back(r.error);
        for (std::size_t i = 0; i < cells.size(); ++i) out += (i ? "," : "") + csv_cell(cells[i]);
        out += "\n";
    }
    return out;
}

inline nlohmann::json record_json(const evaluation_record& r) {
    nlohmann::json j = {{"method", r.task.method},
                        {"label", r.task.label},
                        {"approximation", r.task.approximation},
                        {"note", r.task.note},
                        {"dataset", r.task.dataset},
                        {"n", r.task.n},
                        {"seed", r.task.seed},
                        {"key_config", canonical_json(r.task.key)},
                        {"value_config", canonical_json(r.task.value)},
                        {"cache_key", r.key},
                        {"status", r.ok ? "ok" : "failed"},
                        {"source", r.cached ? "cache" : "run"}};
    if (r.ok) j["result"] = to_json(r.result);
    else j["error"] = r.error;
    return j;
}

inline nlohmann::json summary_json(const std::vector<evaluation_record>& records, const std::string& axis) {
    nlohmann::json out = {{"baselines", baselines(records)}, {"best_within_one_point", nlohmann::json::array()},
                          {"envelopes", nlohmann::json::array()}};
    for (const auto& e : best_within_one_point(records)) {
        nlohmann::json j = {{"method", e.method}, {"dataset", e.dataset}, {"baseline_accuracy", e.baseline},
                            {"found", e.found}};
        if (e.found) {
            const auto& r = records[e.record];
            j["label"] = r.task.label;
            j["accuracy"] = r.result.accuracy;
            j["compression_ratio"] = r.result.compression_ratio;
            j["reference_compression_ratio"] = r.result.reference_compression_ratio;
        }
        out["best_within_one_point"].push_back(j);
    }
    std::set<std::pair<std::string, std::string>> seen;
    for (const auto& r : records) {
        if (!r.ok) continue;
        const auto id = std::make_pair(method_name(r.task), r.task.dataset);
        if (!seen.insert(id).second) continue;
        nlohmann::json points = nlohmann::json::array();
        for (std::size_t i : envelope(records, id.first, id.second, axis))
            points.push_back({{"label", records[i].task.label},
                              {axis, axis_value(records[i], axis)},
                              {"accuracy", records[i].result.accuracy}});
        out["envelopes"].push_back({{"method", id.first}, {"dataset", id.second}, {"points", points}});
    }
    return out;
}

/// One plot per dataset: accuracy vs `axis`, a series per method.
inline std::vector<std::pair<std::string, plot_spec>> accuracy_plots(const std::vector<evaluation_record>& records,
                                                                     const std::string& experiment, const std::string& axis) {
    std::vector<std::string> datasets;
    for (const auto& r : records)
        if (std::find(datasets.begin(), datasets.end(), r.task.dataset) == datasets.end()) datasets.push_back(r.task.dataset);
    const auto base = baselines(records);
    std::vector<std::pair<std::string, plot_spec>> out;
    for (const auto& d : datasets) {
        plot_spec p;
        p.title = experiment + " - " + d;
        p.x_label = axis_title(axis);
        p.y_label = "accuracy";
        p.envelope_line = axis != "bits";  // a grid: join its envelope; a bit sweep: join every point
        if (base.count(d)) {
            p.has_reference = true;
            p.reference_y = base.at(d);
            p.reference_label = "fp16 " + fixed(base.at(d), 3);
        }
        for (const auto& r : records) {
            if (!r.ok || r.task.dataset != d || is_baseline(r.task)) continue;
            const std::string name = method_name(r.task);
            auto it = std::find_if(p.series.begin(), p.series.end(), [&](const plot_series& s) { return s.name == name; });
            if (it == p.series.end()) {
                p.series.push_back({name, {}});
                it = p.series.end() - 1;
            }
            it->points.push_back({axis_value(r, axis), r.result.accuracy, r.result.accuracy_ci95});
        }
        out.emplace_back(d, std::move(p));
    }
    return out;
}

/// A file-name-safe version of `s`.
inline std::string file_stem(const std::string& s) {
    std::string out;
    for (char c : s) out.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ? c : '_');
    return out.empty() ? "dataset" : out;
}

/// Writes `content` to `path` via a temporary file and rename(2).
inline void write_file_atomic(const std::string& path, const std::string& content) {
    const std::string temp = path + ".tmp-" + std::to_string(::getpid());
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    QAQ_CHECK(fd >= 0, "cannot write ", temp, ": ", std::strerror(errno));
    std::size_t done = 0;
    while (done < content.size()) {
        const ssize_t w = ::write(fd, content.data() + done, content.size() - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            const int e = errno;
            ::close(fd);
            ::unlink(temp.c_str());
            throw qaq::error("writing " + temp + " failed: " + std::strerror(e));
        }
        done += static_cast<std::size_t>(w);
    }
    ::fsync(fd);
    ::close(fd);
    QAQ_CHECK(::rename(temp.c_str(), path.c_str()) == 0, "cannot rename ", temp, " to ", path, ": ", std::strerror(errno));
}

}  // namespace qaq::eval
