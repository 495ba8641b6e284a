#pragma once
// Devices and workers: one shared task queue, one worker per device entry,
// each worker owning its own model replica (a scorer built by the factory on
// its device).
//
// --devices syntax: comma-separated entries KIND[:INDEX][@MEMORY]
//   cpu                 a CPU worker (repeat for more: cpu,cpu,cpu)
//   cpu*4               shorthand for four CPU workers
//   cuda:0@40GiB        CUDA device 0, at most 40 GiB (the original's
//                       device_configs entry: main device + memory budget)
// MEMORY: a number with B, KB/MB/GB/TB (10^3) or KiB/MiB/GiB/TiB (2^10) units.
// cuda entries get CUDA workers in builds with CUDA (cuda_scorer.hpp); a
// build without CUDA stops the run before any task with "not available in
// this build" (qaq-eval's main.cpp decides).

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "evaluator/evaluation.hpp"
#include "evaluator/scorer.hpp"
#include "qaq/error.hpp"

namespace qaq::eval {

struct device_spec {
    enum class kind_t { cpu, cuda };
    kind_t kind = kind_t::cpu;
    int index = -1;                 ///< -1: not given
    std::int64_t memory_bytes = 0;  ///< 0: no limit given
    std::string text;               ///< the entry as written (normalized for cpu*N)
};

inline std::string to_string(const device_spec& d) { return d.text; }

inline std::int64_t parse_memory(const std::string& s, const std::string& entry) {
    std::size_t i = 0;
    while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
    QAQ_CHECK(i > 0, "device \"", entry, "\": memory \"", s, "\" must start with a number, e.g. 40GiB");
    double value = 0;
    try {
        value = std::stod(s.substr(0, i));
    } catch (...) {
        throw qaq::error("device \"" + entry + "\": memory \"" + s + "\" has no valid number");
    }
    const std::string unit = s.substr(i);
    double scale = 0;
    if (unit == "" || unit == "B") scale = 1;
    else if (unit == "KB" || unit == "kB") scale = 1e3;
    else if (unit == "MB") scale = 1e6;
    else if (unit == "GB") scale = 1e9;
    else if (unit == "TB") scale = 1e12;
    else if (unit == "KiB") scale = 1024.0;
    else if (unit == "MiB") scale = 1048576.0;
    else if (unit == "GiB") scale = 1073741824.0;
    else if (unit == "TiB") scale = 1099511627776.0;
    else
        throw qaq::error("device \"" + entry + "\": memory unit \"" + unit +
                         "\"; expected B, KB, MB, GB, TB, KiB, MiB, GiB or TiB");
    QAQ_CHECK(value > 0 && std::isfinite(value), "device \"", entry, "\": memory must be positive");
    return static_cast<std::int64_t>(std::llround(value * scale));
}

inline std::vector<device_spec> parse_devices(const std::string& text) {
    std::vector<device_spec> out;
    std::size_t start = 0;
    QAQ_CHECK(!text.empty(), "--devices is empty; expected e.g. cpu or cpu,cpu or cuda:0@40GiB");
    while (start <= text.size()) {
        std::size_t end = text.find(',', start);
        if (end == std::string::npos) end = text.size();
        std::string entry = text.substr(start, end - start);
        while (!entry.empty() && entry.front() == ' ') entry.erase(entry.begin());
        while (!entry.empty() && entry.back() == ' ') entry.pop_back();
        QAQ_CHECK(!entry.empty(), "--devices \"", text, "\" has an empty entry; expected KIND[:INDEX][@MEMORY], ...");
        int repeat = 1;
        std::string spec = entry;
        if (const std::size_t star = spec.find('*'); star != std::string::npos) {
            const std::string count = spec.substr(star + 1);
            QAQ_CHECK(!count.empty() && count.find_first_not_of("0123456789") == std::string::npos && count.size() <= 4,
                      "device \"", entry, "\": expected KIND*COUNT with a count of 1..1024");
            repeat = std::stoi(count);
            QAQ_CHECK(repeat >= 1 && repeat <= 1024, "device \"", entry, "\": count must be 1..1024");
            spec = spec.substr(0, star);
        }
        device_spec d;
        std::string kind = spec;
        if (const std::size_t at = spec.find('@'); at != std::string::npos) {
            d.memory_bytes = parse_memory(spec.substr(at + 1), entry);
            kind = spec.substr(0, at);
        }
        if (const std::size_t colon = kind.find(':'); colon != std::string::npos) {
            const std::string index = kind.substr(colon + 1);
            QAQ_CHECK(!index.empty() && index.size() <= 6 && index.find_first_not_of("0123456789") == std::string::npos,
                      "device \"", entry, "\": index \"", index, "\" must be a non-negative integer");
            d.index = std::stoi(index);
            kind = kind.substr(0, colon);
        }
        if (kind == "cpu") d.kind = device_spec::kind_t::cpu;
        else if (kind == "cuda") d.kind = device_spec::kind_t::cuda;
        else
            throw qaq::error("device \"" + entry + "\": unknown kind \"" + kind +
                             "\"; expected cpu or cuda (e.g. cpu, cpu*4, cuda:0@40GiB)");
        QAQ_CHECK(d.kind != device_spec::kind_t::cuda || d.index >= 0, "device \"", entry,
                  "\": a CUDA entry needs a device index, e.g. cuda:0 or cuda:0@40GiB");
        d.text = spec;
        for (int r = 0; r < repeat; ++r) out.push_back(d);
        start = end + 1;
    }
    return out;
}

/// The outcome of one job (a bundle of evaluations that share their questions).
struct task_outcome {
    std::size_t task = 0;                   ///< the job's index
    bool ok = false;
    std::vector<evaluation_attempt> results; ///< one per evaluation of the job, in order (when ok)
    std::string error;
    double seconds = 0.0;
    std::string worker;  ///< e.g. "cpu#1" or "rank 2 cpu#0"
    bool remote = false; ///< computed by another MPI rank (its questions were not reported one by one)
};

/// Runs job `task` on `scorer`, calling on_question after each question;
/// returns one result per evaluation of the job.
using task_function = std::function<std::vector<evaluation_attempt>(
    multiple_choice_scorer& scorer, std::size_t task, const std::function<void()>& on_question)>;

class task_executor {
public:
    virtual ~task_executor() = default;
    /// False on MPI ranks other than 0: they only work, and neither write results nor report.
    virtual bool is_primary() const { return true; }
    /// Checks that every process built the same task list (MPI: all ranks must
    /// agree, since tasks travel as indices); a no-op for local threads.
    virtual void agree(const std::string& /*task_list_digest*/) {}
    /// Gives every process the primary's `text` (MPI: the job list, which only
    /// rank 0 can build since only it reads the result cache); a no-op for
    /// local threads.
    virtual void share(std::string& /*text*/) {}
    /// Runs the pending tasks. on_done is called once per task, never concurrently,
    /// on the primary; on_question after each question a local worker finishes.
    virtual void execute(const std::vector<std::size_t>& pending, const task_function& run,
                         const std::function<void(const task_outcome&)>& on_done,
                         const std::function<void()>& on_question) = 0;
};

/// Builds every worker's scorer; the first failure stops the run with a message naming the device.
inline std::string worker_name(const device_spec& d, std::size_t i) { return d.text + "#" + std::to_string(i); }

/// N local threads (one per device entry) sharing one queue.
class thread_executor final : public task_executor {
public:
    thread_executor(std::vector<device_spec> devices, scorer_factory factory)
        : devices_(std::move(devices)), factory_(std::move(factory)) {
        QAQ_CHECK(!devices_.empty(), "no devices: expected at least one entry in --devices");
        QAQ_CHECK(static_cast<bool>(factory_), "no scorer factory");
    }

    void execute(const std::vector<std::size_t>& pending, const task_function& run,
                 const std::function<void(const task_outcome&)>& on_done,
                 const std::function<void()>& on_question) override {
        std::mutex mutex;  // guards next, on_done, on_question, errors
        std::size_t next = 0;
        std::condition_variable ready_cv;
        std::size_t ready = 0;
        std::vector<std::string> init_errors;
        std::exception_ptr fatal;
        std::atomic<bool> stop{false};
        std::vector<std::thread> threads;
        // No model replica is built for a worker that would get no task.
        const std::size_t workers = std::min(devices_.size(), pending.size());
        if (workers == 0) return;
        for (std::size_t w = 0; w < workers; ++w) {
            threads.emplace_back([&, w] {
                std::unique_ptr<multiple_choice_scorer> scorer;
                std::string init_error;
                try {
                    scorer = factory_(devices_[w], static_cast<int>(w));
                    if (!scorer) init_error = "the scorer factory returned nothing";
                } catch (const std::exception& e) {
                    init_error = e.what();
                }
                {
                    std::unique_lock<std::mutex> lock(mutex);
                    if (!init_error.empty())
                        init_errors.push_back("device " + devices_[w].text + " (worker " + std::to_string(w) + "): " +
                                              init_error);
                    ++ready;
                    ready_cv.notify_all();
                    ready_cv.wait(lock, [&] { return ready == workers; });
                    if (!init_errors.empty()) return;
                }
                for (;;) {
                    std::size_t task = 0;
                    {
                        std::lock_guard<std::mutex> lock(mutex);
                        if (stop || next >= pending.size()) return;
                        task = pending[next++];
                    }
                    task_outcome out;
                    out.task = task;
                    out.worker = worker_name(devices_[w], w);
                    const auto start = std::chrono::steady_clock::now();
                    try {
                        out.results = run(*scorer, task, [&] {
                            if (!on_question) return;
                            std::lock_guard<std::mutex> lock(mutex);
                            on_question();
                        });
                        out.ok = true;
                    } catch (const std::exception& e) {
                        out.error = e.what();
                    }
                    out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
                    std::lock_guard<std::mutex> lock(mutex);
                    try {
                        on_done(out);
                    } catch (...) {
                        if (!fatal) fatal = std::current_exception();
                        stop = true;
                    }
                }
            });
        }
        for (auto& t : threads) t.join();
        if (!init_errors.empty()) {
            std::string message = "cannot start the workers:";
            for (const auto& e : init_errors) message += "\n  " + e;
            throw qaq::error(message);
        }
        if (fatal) std::rethrow_exception(fatal);
    }

private:
    std::vector<device_spec> devices_;
    scorer_factory factory_;
};

}  // namespace qaq::eval
