#pragma once
// Experiments (the original's Experiment class): a set of evaluations -- a
// grid of key/value quantizer pairs, times the datasets -- run over the
// workers, resumed from the result cache, then processed together.
//
//   class my_experiment : public qaq::eval::experiment {
//       std::string name() const override { return "my-grid"; }
//       std::vector<grid_point> quantizer_list() const override { ... }
//       void process_result(const std::vector<evaluation_record>& r, const output_options& o) const override {
//           experiment::process_result(r, o);  // table, CSV, JSON, SVG
//           ...                                // and anything else
//       }
//   };
//   my_experiment().run(context);
//
// run() builds the tasks (every dataset x every grid point), looks each key
// up in the result cache, hands only the missing ones to the executor (thread
// workers or MPI ranks), appends each result to the cache the moment it is
// finished, and calls process_result over all records in grid order. Two grid
// points with the same key are computed once.

#include <chrono>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unistd.h>
#include <vector>

#include "evaluator/config_json.hpp"
#include "evaluator/evaluation.hpp"
#include "evaluator/progress.hpp"
#include "evaluator/report.hpp"
#include "evaluator/result_cache.hpp"
#include "evaluator/sha256.hpp"
#include "evaluator/workers.hpp"
#include "qaq/error.hpp"

namespace qaq::eval {

struct grid_point {
    std::string method;          ///< series name, e.g. "uniform", "qaq"
    std::string label;           ///< the point within the series
    qaq::quantizer_config key;   ///< role key
    qaq::quantizer_config value; ///< role value
    bool approximation = false;  ///< the configs only approximate `method` (see note)
    std::string note;
};

struct experiment_settings {
    std::vector<std::string> datasets = {"piqa"};
    std::int64_t n = 100;  ///< questions per evaluation; 0 = all
    std::uint64_t seed = 42;
    /// "prefill" (the paper's protocol) or "decode" (choices decoded token by
    /// token over the packed cache with a rebalance per step; scorer.hpp).
    std::string protocol = "prefill";
};

struct output_options {
    std::string out_dir;          ///< "" = no files
    std::ostream* table = &std::cout;  ///< nullptr = no table
    std::string x_axis;           ///< "" = the experiment's own
};

/// Where run() gets datasets from (loaded once, shared read-only by the workers).
class dataset_source {
public:
    virtual ~dataset_source() = default;
    virtual const dataset& get(const std::string& name) = 0;
};

/// In-memory datasets (tests, or pre-loaded sets).
class dataset_map final : public dataset_source {
public:
    void add(dataset d) {
        const std::string name = d.name;
        sets_[name] = std::make_unique<dataset>(std::move(d));
    }
    const dataset& get(const std::string& name) override {
        const auto it = sets_.find(name);
        QAQ_CHECK(it != sets_.end(), "unknown dataset \"", name, "\"");
        return *it->second;
    }

private:
    std::map<std::string, std::unique_ptr<dataset>> sets_;
};

struct run_context {
    dataset_source* datasets = nullptr;
    result_cache* cache = nullptr;       ///< required on the primary
    task_executor* executor = nullptr;
    model_identity model;
    experiment_settings settings;
    output_options output;
    bool show_progress = true;
    int progress_tty = -1;               ///< -1: isatty(2)
    std::ostream* log = &std::cerr;      ///< messages (failures, summary)
    std::int64_t exit_after_results = -1;  ///< test hook: _Exit(137) after this many appends (a simulated kill)
    /// Evaluations on the same questions (dataset, n, seed) run together as
    /// one job of at most this many, question by question, so the model's
    /// full-precision work is shared. A kill loses at most the jobs in flight.
    std::size_t bundle_size = 8;
};

struct run_summary {
    bool primary = true;
    std::vector<evaluation_record> records;  ///< in task order (primary only)
    std::size_t computed = 0, cached = 0, failed = 0, shared = 0;
};

class experiment {
public:
    virtual ~experiment() = default;
    virtual std::string name() const = 0;
    virtual std::string description() const { return {}; }
    /// The grid: key/value quantizer pairs, each with a method and a label.
    virtual std::vector<grid_point> quantizer_list() const = 0;
    /// Settings used when the command line gives none.
    virtual experiment_settings default_settings() const { return {}; }
    /// x axis of the plots: compression_ratio, reference_compression_ratio or bits.
    virtual std::string x_axis() const { return "compression_ratio"; }

    /// Called once with every record (in grid order) after the run; the default
    /// prints the table and writes results.csv, results.json, summary.json and
    /// accuracy_<dataset>.svg into the output directory.
    virtual void process_result(const std::vector<evaluation_record>& records, const output_options& out) const {
        write_report(records, out);
    }

    /// The tasks of this experiment: for each dataset, every grid point.
    std::vector<evaluation_task> tasks(const experiment_settings& s) const {
        std::vector<evaluation_task> out;
        const std::vector<grid_point> grid = quantizer_list();
        QAQ_CHECK(!grid.empty(), "experiment ", name(), " has an empty quantizer list");
        QAQ_CHECK(!s.datasets.empty(), "experiment ", name(), ": no datasets");
        for (const grid_point& p : grid) {
            const std::string place = "experiment " + name() + ", point \"" + p.method + " / " + p.label + "\"";
            QAQ_CHECK(p.key.role == qaq::cache_role::key, place, ": the key config has role ", qaq::to_string(p.key.role));
            QAQ_CHECK(p.value.role == qaq::cache_role::value, place, ": the value config has role ",
                      qaq::to_string(p.value.role));
            try {
                p.key.validate();
                p.value.validate();
            } catch (const qaq::error& e) {
                throw qaq::error(place + ": " + std::string(e.what()).substr(5));
            }
        }
        for (const std::string& d : s.datasets)
            for (const grid_point& p : grid)
                out.push_back({name(), p.method, p.label, p.approximation, p.note, p.key, p.value, d, s.n, s.seed,
                               s.protocol});
        return out;
    }

    run_summary run(run_context& ctx) const {
        QAQ_CHECK(ctx.datasets && ctx.executor, "run_context needs datasets and an executor");
        run_summary summary;
        summary.primary = ctx.executor->is_primary();
        QAQ_CHECK(!summary.primary || ctx.cache, "run_context needs a result cache on the primary");
        const std::vector<evaluation_task> all = tasks(ctx.settings);
        std::vector<const dataset*> sets;
        std::vector<nlohmann::json> keys;
        for (const auto& t : all) {
            sets.push_back(&ctx.datasets->get(t.dataset));
            keys.push_back(cache_key(t, ctx.model, *sets.back()));
        }
        // Samples are drawn once per (dataset, n, seed), here, before any worker
        // starts (which also checks n against every dataset); workers only read them.
        std::map<std::string, std::vector<const question*>> samples;
        std::vector<const std::vector<const question*>*> task_sample(all.size());
        for (std::size_t i = 0; i < all.size(); ++i) {
            const std::string id = all[i].dataset + "\n" + std::to_string(all[i].n) + "\n" + std::to_string(all[i].seed);
            auto it = samples.find(id);
            if (it == samples.end()) it = samples.emplace(id, sample(*sets[i], all[i].n, all[i].seed)).first;
            task_sample[i] = &it->second;
        }
        auto sample_of = [&](std::size_t i) -> const std::vector<const question*>& { return *task_sample[i]; };

        std::vector<evaluation_record> records(all.size());
        std::vector<std::size_t> pending;
        std::map<std::string, std::size_t> first_of_key;
        std::int64_t pending_questions = 0;
        if (summary.primary) {
            ctx.cache->refresh();
            for (std::size_t i = 0; i < all.size(); ++i) {
                records[i].task = all[i];
                records[i].key = keys[i];
                const std::string id = keys[i].dump();
                if (const cached_result* c = ctx.cache->find(keys[i])) {
                    records[i].ok = records[i].cached = true;
                    records[i].result = c->metrics;
                    ++summary.cached;
                } else if (first_of_key.count(id) == 0) {
                    first_of_key[id] = i;
                    pending.push_back(i);
                }
            }
        }
        // Jobs: pending evaluations grouped by their questions, at most bundle_size each.
        QAQ_CHECK(ctx.bundle_size >= 1, "bundle size is 0; expected >= 1");
        std::vector<std::vector<std::size_t>> jobs;
        {
            std::map<const std::vector<const question*>*, std::size_t> open;  // sample -> job being filled
            for (std::size_t i : pending) {
                auto it = open.find(task_sample[i]);
                if (it == open.end() || jobs[it->second].size() >= ctx.bundle_size) {
                    jobs.emplace_back();
                    it = open.insert_or_assign(task_sample[i], jobs.size() - 1).first;
                }
                jobs[it->second].push_back(i);
                pending_questions += static_cast<std::int64_t>(sample_of(i).size());  // per evaluation
            }
        }
        {
            // Only the primary read the result cache: every process takes its job list.
            std::string text = summary.primary ? nlohmann::json(jobs).dump() : std::string();
            ctx.executor->share(text);
            if (!summary.primary) {
                jobs = nlohmann::json::parse(text).get<std::vector<std::vector<std::size_t>>>();
                for (const auto& job : jobs)
                    for (std::size_t i : job) QAQ_CHECK(i < all.size(), "job list names task ", i, " of ", all.size());
            }
        }
        std::vector<std::size_t> job_ids(jobs.size());
        for (std::size_t j = 0; j < jobs.size(); ++j) job_ids[j] = j;
        progress bar(*ctx.log, pending_questions, static_cast<std::int64_t>(pending.size()),
                     summary.primary && ctx.show_progress && !pending.empty(), ctx.progress_tty);
        std::int64_t appended = 0;
        const task_function run_task = [&](multiple_choice_scorer& scorer, std::size_t j,
                                           const std::function<void()>& on_question) {
            QAQ_CHECK(j < jobs.size(), "job index ", j, " is out of range (", jobs.size(), " jobs)");
            std::vector<quantizer_pair> pairs;
            for (std::size_t i : jobs[j]) pairs.push_back({all[i].key, all[i].value});
            scorer.set_protocol(all[jobs[j].front()].protocol);
            // Progress counts questions per evaluation: a question of a job of k is k.
            const std::function<void()> per_question = [&on_question, k = pairs.size()] {
                if (on_question)
                    for (std::size_t e = 0; e < k; ++e) on_question();
            };
            return evaluate_all(scorer, sample_of(jobs[j].front()), pairs, per_question);
        };
        const auto on_done = [&](const task_outcome& o) {
            QAQ_CHECK(o.task < jobs.size(), "a worker reported job ", o.task, "; there are ", jobs.size(), " jobs");
            const std::vector<std::size_t>& job = jobs[o.task];
            const bool complete = o.ok && o.results.size() == job.size();
            for (std::size_t k = 0; k < job.size(); ++k) {
                const std::size_t i = job[k];
                evaluation_record& r = records[i];
                if (complete && o.results[k].ok) {
                    char host[256] = {0};
                    ::gethostname(host, sizeof host - 1);
                    const nlohmann::json meta = {{"experiment", all[i].experiment},
                                                 {"method", all[i].method},
                                                 {"label", all[i].label},
                                                 {"dataset_source", sets[i]->source},
                                                 {"worker", o.worker},
                                                 {"host", host},
                                                 {"pid", static_cast<long long>(::getpid())},
                                                 {"seconds", o.seconds},
                                                 {"job_size", job.size()},
                                                 {"finished_unix", static_cast<long long>(std::time(nullptr))}};
                    ctx.cache->append(keys[i], o.results[k].result, meta);
                    r.ok = true;
                    r.result = o.results[k].result;
                    ++summary.computed;
                    ++appended;
                } else {
                    r.ok = false;
                    r.error = !o.ok      ? o.error
                              : complete ? o.results[k].error
                                         : "the worker returned " + std::to_string(o.results.size()) +
                                               " results for a job of " + std::to_string(job.size());
                    ++summary.failed;
                    *ctx.log << "\nqaq-eval: evaluation failed (" << all[i].method << " / " << all[i].label << " on "
                             << all[i].dataset << ", " << o.worker << "): " << r.error << "\n";
                }
                bar.task_done(all[i].method + " / " + all[i].label + " on " + all[i].dataset, r.ok,
                              o.remote ? static_cast<std::int64_t>(sample_of(i).size()) : 0);
                if (ctx.exit_after_results >= 0 && appended >= ctx.exit_after_results) {
                    ctx.log->flush();
                    std::_Exit(137);
                }
            }
        };
        {
            sha256 digest;
            for (const auto& k : keys) digest.update(k.dump()).update("\n");
            ctx.executor->agree(digest.hex());
        }
        ctx.executor->execute(job_ids, run_task, on_done, [&] { bar.question_done(); });
        bar.finish();
        if (!summary.primary) return summary;
        // Grid points that share a key with a computed one.
        for (std::size_t i = 0; i < all.size(); ++i) {
            if (records[i].cached) continue;
            const auto it = first_of_key.find(keys[i].dump());
            if (it == first_of_key.end() || it->second == i) continue;
            const evaluation_record& first = records[it->second];
            records[i].ok = first.ok;
            records[i].result = first.result;
            records[i].error = first.error;
            ++summary.shared;
        }
        summary.records = records;
        output_options out = ctx.output;
        if (out.x_axis.empty()) out.x_axis = x_axis();
        process_result(summary.records, out);
        return summary;
    }

protected:
    /// The default report (see process_result).
    void write_report(const std::vector<evaluation_record>& records, const output_options& out) const {
        const std::string axis = out.x_axis.empty() ? x_axis() : out.x_axis;
        if (out.table) {
            *out.table << "experiment " << name() << " (" << records.size() << " evaluations)\n";
            print_table(*out.table, records);
            for (const auto& e : best_within_one_point(records)) {
                *out.table << "best ratio within 1 point of fp16: " << e.method << " on " << e.dataset << ": ";
                if (e.found)
                    *out.table << fixed(records[e.record].result.compression_ratio, 3) << "x (" << records[e.record].task.label
                               << ", accuracy " << fixed(records[e.record].result.accuracy, 4) << " vs "
                               << fixed(e.baseline, 4) << ")\n";
                else
                    *out.table << "none\n";
            }
        }
        if (out.out_dir.empty()) return;
        std::error_code ec;
        std::filesystem::create_directories(out.out_dir, ec);
        QAQ_CHECK(!ec, "cannot create the output directory ", out.out_dir, ": ", ec.message());
        const std::string dir = out.out_dir + "/";
        write_file_atomic(dir + "results.csv", render_csv(records));
        nlohmann::json j = {{"experiment", name()},
                            {"description", description()},
                            {"qaq_version", qaq::version_string},
                            {"x_axis", axis},
                            {"results", nlohmann::json::array()},
                            {"summary", summary_json(records, axis)}};
        for (const auto& r : records) j["results"].push_back(record_json(r));
        write_file_atomic(dir + "results.json", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
        write_file_atomic(dir + "summary.json", j["summary"].dump(2) + "\n");
        for (const auto& [d, plot] : accuracy_plots(records, name(), axis))
            write_file_atomic(dir + "accuracy_" + file_stem(d) + ".svg", render_svg(plot));
    }
};

}  // namespace qaq::eval
