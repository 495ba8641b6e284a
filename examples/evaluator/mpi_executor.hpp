#pragma once
// MPI mode: one rank per device. Every rank runs the same command line,
// builds the same task list and loads the datasets; rank 0 hands out tasks
// (by index) from the shared queue, receives the results and is the only
// process that writes the result cache and the reports. Rank 0 also works on
// its own device in a second thread (MPI calls stay on the main thread:
// MPI_THREAD_FUNNELED).
//
// Protocol (payloads are JSON text):
//   worker -> 0  tag 1  {"type":"ready"} | {"type":"result","task":i,"ok":...,"results":[{"ok":true,"result":{...}}|{"ok":false,"error":"..."},...]|"error":"...",...}
//   0 -> worker  tag 2  {"task": i}      tag 3  stop (empty)
// Before any task, all ranks build their scorer and agree (MPI_Allreduce);
// if one cannot, every rank stops and rank 0 reports each failing device.
// When nothing is pending (all cached), no rank builds a scorer.
//
// Compiled only when CMake found MPI (QAQ_EVAL_WITH_MPI=1).

#ifndef QAQ_EVAL_WITH_MPI
#define QAQ_EVAL_WITH_MPI 0
#endif

#if QAQ_EVAL_WITH_MPI
#include <mpi.h>

#include <chrono>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "evaluator/evaluation.hpp"
#include "evaluator/workers.hpp"
#include "qaq/error.hpp"

namespace qaq::eval {

/// MPI_Init_thread / MPI_Finalize for the lifetime of the object.
class mpi_session {
public:
    mpi_session(int* argc, char*** argv) {
        int provided = 0;
        QAQ_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) == MPI_SUCCESS, "MPI_Init_thread failed");
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
        MPI_Comm_size(MPI_COMM_WORLD, &size_);
        if (provided < MPI_THREAD_FUNNELED) {
            MPI_Finalize();
            throw qaq::error("the MPI library does not provide MPI_THREAD_FUNNELED");
        }
    }
    ~mpi_session() { MPI_Finalize(); }
    mpi_session(const mpi_session&) = delete;
    mpi_session& operator=(const mpi_session&) = delete;
    int rank() const noexcept { return rank_; }
    int size() const noexcept { return size_; }
    /// Ends every rank after a fatal error on one of them.
    [[noreturn]] static void abort(int code) {
        MPI_Abort(MPI_COMM_WORLD, code);
        std::_Exit(code);
    }

private:
    int rank_ = 0, size_ = 1;
};

class mpi_executor final : public task_executor {
public:
    static constexpr int tag_request = 1, tag_task = 2, tag_stop = 3, tag_init_error = 4;

    /// `device`: this rank's device entry.
    mpi_executor(int rank, int size, device_spec device, scorer_factory factory)
        : rank_(rank), size_(size), device_(std::move(device)), factory_(std::move(factory)) {}

    bool is_primary() const override { return rank_ == 0; }

    void agree(const std::string& digest) override {
        char mine[65] = {0}, root[65] = {0};
        digest.copy(mine, 64);
        std::copy(mine, mine + 65, root);
        MPI_Bcast(root, 65, MPI_CHAR, 0, MPI_COMM_WORLD);
        int same = std::string(root) == std::string(mine) ? 1 : 0, all = 0;
        MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        QAQ_CHECK(all == 1, "MPI ranks built different task lists (rank ", rank_,
                  "): every rank must run the same command line with the same files");
    }

    void share(std::string& text) override {
        unsigned long long size = text.size();
        MPI_Bcast(&size, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
        text.resize(static_cast<std::size_t>(size));
        if (size > 0) MPI_Bcast(text.data(), static_cast<int>(size), MPI_CHAR, 0, MPI_COMM_WORLD);
    }

    void execute(const std::vector<std::size_t>& pending, const task_function& run,
                 const std::function<void(const task_outcome&)>& on_done,
                 const std::function<void()>& on_question) override {
        // 0. Nothing to do (everything cached): no rank loads a model.
        unsigned long long count = pending.size();
        MPI_Bcast(&count, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
        if (count == 0) return;
        // 1. Every rank builds its scorer; all agree before any task.
        std::unique_ptr<multiple_choice_scorer> scorer;
        std::string init_error;
        try {
            scorer = factory_(device_, 0);
            if (!scorer) init_error = "the scorer factory returned nothing";
        } catch (const std::exception& e) {
            init_error = e.what();
        }
        int ok = init_error.empty() ? 1 : 0, all_ok = 0;
        MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        if (!all_ok) {
            std::vector<int> oks(static_cast<std::size_t>(size_), 1);
            MPI_Gather(&ok, 1, MPI_INT, oks.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
            if (rank_ != 0) {
                if (!ok) send(0, tag_init_error, init_error);
                throw qaq::error("rank " + std::to_string(rank_) + " stops: a worker could not start (see rank 0)");
            }
            std::string message = "cannot start the workers:";
            if (!ok) message += "\n  rank 0, device " + device_.text + ": " + init_error;
            for (int r = 1; r < size_; ++r)
                if (!oks[static_cast<std::size_t>(r)])
                    message += "\n  rank " + std::to_string(r) + ": " + receive(r, tag_init_error);
            throw qaq::error(message);
        }
        if (rank_ == 0) coordinate(pending, run, on_done, on_question, *scorer);
        else work(run, *scorer);
    }

private:
    static void send(int to, int tag, const std::string& payload) {
        QAQ_CHECK(MPI_Send(payload.data(), static_cast<int>(payload.size()), MPI_CHAR, to, tag, MPI_COMM_WORLD) == MPI_SUCCESS,
                  "MPI_Send to rank ", to, " failed");
    }

    static std::string receive_probed(const MPI_Status& status) {
        int count = 0;
        MPI_Get_count(&status, MPI_CHAR, &count);
        std::string payload(static_cast<std::size_t>(count), '\0');
        MPI_Status ignored;
        QAQ_CHECK(MPI_Recv(payload.data(), count, MPI_CHAR, status.MPI_SOURCE, status.MPI_TAG, MPI_COMM_WORLD, &ignored) ==
                      MPI_SUCCESS,
                  "MPI_Recv from rank ", status.MPI_SOURCE, " failed");
        return payload;
    }

    static std::string receive(int from, int tag) {
        MPI_Status status;
        MPI_Probe(from, tag, MPI_COMM_WORLD, &status);
        return receive_probed(status);
    }

    void coordinate(const std::vector<std::size_t>& pending, const task_function& run,
                    const std::function<void(const task_outcome&)>& on_done, const std::function<void()>& on_question,
                    multiple_choice_scorer& scorer) {
        std::mutex mutex;
        std::deque<std::size_t> queue(pending.begin(), pending.end());
        std::exception_ptr fatal;
        bool stop = false;
        auto next_task = [&](std::size_t& task) {
            std::lock_guard<std::mutex> lock(mutex);
            if (stop || queue.empty()) return false;
            task = queue.front();
            queue.pop_front();
            return true;
        };
        auto finish = [&](const task_outcome& o) {
            std::lock_guard<std::mutex> lock(mutex);
            try {
                on_done(o);
            } catch (...) {
                if (!fatal) fatal = std::current_exception();
                stop = true;
            }
        };
        std::thread local([&] {
            std::size_t task = 0;
            while (next_task(task)) {
                task_outcome o;
                o.task = task;
                o.worker = "rank 0 " + device_.text;
                const auto start = std::chrono::steady_clock::now();
                try {
                    o.results = run(scorer, task, [&] {
                        std::lock_guard<std::mutex> lock(mutex);
                        if (on_question) on_question();
                    });
                    o.ok = true;
                } catch (const std::exception& e) {
                    o.error = e.what();
                }
                o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
                finish(o);
            }
        });
        int active = size_ - 1;
        while (active > 0) {
            int flag = 0;
            MPI_Status status;
            MPI_Iprobe(MPI_ANY_SOURCE, tag_request, MPI_COMM_WORLD, &flag, &status);
            if (!flag) {
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
                continue;
            }
            const int from = status.MPI_SOURCE;
            nlohmann::json message;
            try {
                message = nlohmann::json::parse(receive_probed(status));
            } catch (const std::exception& e) {
                message = {{"type", "bad"}, {"error", e.what()}};
            }
            if (message.value("type", "") == "result") {
                task_outcome o;
                o.remote = true;
                o.task = message.value("task", std::size_t{0});
                o.worker = message.value("worker", "rank " + std::to_string(from));
                o.seconds = message.value("seconds", 0.0);
                o.ok = message.value("ok", false);
                if (o.ok) {
                    try {
                        const nlohmann::json& results = message.at("results");
                        QAQ_CHECK(results.is_array(), "\"results\" must be an array");
                        for (const auto& r : results) {
                            evaluation_attempt a;
                            a.ok = r.at("ok").get<bool>();
                            if (a.ok) a.result = result_from_json(r.at("result"));
                            else a.error = r.at("error").get<std::string>();
                            o.results.push_back(std::move(a));
                        }
                    } catch (const std::exception& e) {
                        o.ok = false;
                        o.error = std::string("rank ") + std::to_string(from) + " sent an unreadable result: " + e.what();
                    }
                } else {
                    o.error = message.value("error", std::string("unknown error"));
                }
                finish(o);
            }
            std::size_t task = 0;
            if (next_task(task)) {
                send(from, tag_task, nlohmann::json{{"task", task}}.dump());
            } else {
                send(from, tag_stop, "");
                --active;
            }
        }
        local.join();
        if (fatal) std::rethrow_exception(fatal);
    }

    void work(const task_function& run, multiple_choice_scorer& scorer) {
        send(0, tag_request, nlohmann::json{{"type", "ready"}}.dump());
        for (;;) {
            MPI_Status status;
            MPI_Probe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &status);
            const std::string payload = receive_probed(status);
            if (status.MPI_TAG == tag_stop) return;
            QAQ_CHECK(status.MPI_TAG == tag_task, "rank ", rank_, ": unexpected MPI tag ", status.MPI_TAG, " from rank 0");
            const std::size_t task = nlohmann::json::parse(payload).at("task").get<std::size_t>();
            nlohmann::json reply = {{"type", "result"},
                                    {"task", task},
                                    {"worker", "rank " + std::to_string(rank_) + " " + device_.text}};
            const auto start = std::chrono::steady_clock::now();
            try {
                nlohmann::json results = nlohmann::json::array();
                for (const evaluation_attempt& a : run(scorer, task, [] {}))
                    results.push_back(a.ok ? nlohmann::json{{"ok", true}, {"result", to_json(a.result)}}
                                           : nlohmann::json{{"ok", false}, {"error", a.error}});
                reply["results"] = std::move(results);
                reply["ok"] = true;
            } catch (const std::exception& e) {
                reply["ok"] = false;
                reply["error"] = e.what();
            }
            reply["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            send(0, tag_request, reply.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
        }
    }

    int rank_ = 0, size_ = 1;
    device_spec device_;
    scorer_factory factory_;
};

}  // namespace qaq::eval
#endif  // QAQ_EVAL_WITH_MPI
