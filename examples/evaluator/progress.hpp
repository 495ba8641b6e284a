#pragma once
// Progress on stderr with an ETA. On a terminal: one line redrawn in place
// (at most 10 times a second). Otherwise: one plain line per finished
// evaluation, so logs stay readable. Thread-safe.
//
// Units are questions; the ETA is elapsed / done x remaining over the
// questions computed in this run (cached evaluations do not count).

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <ostream>
#include <string>

namespace qaq::eval {

inline std::string format_duration(double seconds) {
    if (!(seconds >= 0) || seconds > 1e9) return "?";
    const auto s = static_cast<long long>(seconds + 0.5);
    char buffer[32];
    if (s >= 3600) std::snprintf(buffer, sizeof buffer, "%lldh%02lldm", s / 3600, (s / 60) % 60);
    else if (s >= 60) std::snprintf(buffer, sizeof buffer, "%lldm%02llds", s / 60, s % 60);
    else std::snprintf(buffer, sizeof buffer, "%llds", s);
    return buffer;
}

class progress {
public:
    /// `enabled` false: silent. `tty` decides the style (isatty(2) by default).
    progress(std::ostream& out, std::int64_t total_questions, std::int64_t total_tasks, bool enabled = true, int tty = -1)
        : out_(out), total_(total_questions), tasks_(total_tasks), enabled_(enabled),
          tty_(tty < 0 ? ::isatty(2) == 1 : tty == 1), start_(clock::now()) {}

    void question_done(std::int64_t count = 1) {
        std::lock_guard<std::mutex> lock(mutex_);
        done_ += count;
        if (tty_) draw(false);
    }

    /// An evaluation finished; `questions_not_reported` are added to the count
    /// (remote workers report whole evaluations).
    void task_done(const std::string& label, bool ok, std::int64_t questions_not_reported = 0) {
        std::lock_guard<std::mutex> lock(mutex_);
        done_ += questions_not_reported;
        ++tasks_done_;
        if (!enabled_) return;
        if (tty_) {
            draw(true);
        } else {
            out_ << "[qaq-eval] " << tasks_done_ << "/" << tasks_ << " evaluations (" << done_ << "/" << total_
                 << " questions), elapsed " << format_duration(elapsed()) << ", ETA " << format_duration(eta())
                 << (ok ? "  done: " : "  FAILED: ") << label << "\n";
            out_.flush();
        }
    }

    void finish() {
        std::lock_guard<std::mutex> lock(mutex_);
        if (enabled_ && tty_ && drawn_) {
            draw(true);
            out_ << "\n";
            out_.flush();
        }
    }

    std::string line() const {
        const double fraction = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
        const int width = 30, filled = static_cast<int>(fraction * width + 1e-9);
        std::string bar(static_cast<std::size_t>(filled), '#');
        bar.append(static_cast<std::size_t>(width - filled), '.');
        char buffer[160];
        std::snprintf(buffer, sizeof buffer, "[%s] %3d%% %lld/%lld questions, %lld/%lld evaluations, ETA %s",
                      bar.c_str(), static_cast<int>(fraction * 100), static_cast<long long>(done_),
                      static_cast<long long>(total_), static_cast<long long>(tasks_done_),
                      static_cast<long long>(tasks_), format_duration(eta()).c_str());
        return buffer;
    }

    std::int64_t questions_done() const { return done_; }

private:
    using clock = std::chrono::steady_clock;

    double elapsed() const { return std::chrono::duration<double>(clock::now() - start_).count(); }
    double eta() const {
        if (done_ <= 0) return -1;
        return elapsed() / static_cast<double>(done_) * static_cast<double>(total_ - done_);
    }

    void draw(bool force) {
        if (!enabled_) return;
        const auto now = clock::now();
        if (!force && drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
        last_draw_ = now;
        drawn_ = true;
        out_ << "\r" << line() << "\x1b[K";
        out_.flush();
    }

    std::ostream& out_;
    std::int64_t total_ = 0, tasks_ = 0, done_ = 0, tasks_done_ = 0;
    bool enabled_ = true, tty_ = false, drawn_ = false;
    clock::time_point start_, last_draw_{};
    mutable std::mutex mutex_;
};

}  // namespace qaq::eval
