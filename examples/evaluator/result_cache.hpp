#pragma once
// The result cache: every finished evaluation, one JSON line each, keyed by
// all its parameters (evaluation.hpp: cache_key). A grid resumes from it.
//
// File format (JSON Lines, UTF-8): each line is
//   {"format":"qaq-eval-result/1","key":{...},"result":{...},"meta":{...}}
// key:    qaq version, protocol version, model {name, sha256}, dataset {name,
//         sha256}, n, seed, key and value quantizer configs (canonical form).
//         Its dump() (sorted keys, compact) is the identity of a result.
// result: the metrics (evaluation_result).
// meta:   informative only (experiment, method, label, host, pid, time, seconds).
//
// Crash and concurrency safety:
//  * Every access (load, look-up refresh, append, repair) holds an exclusive
//    flock on the side file <results>.lock, which is never renamed or removed,
//    so it serializes threads of other processes on the same host (and hosts
//    sharing a file system with working flock) for the whole operation.
//  * An append opens <results> with O_APPEND, re-reads what other processes
//    appended since (so a key is never written twice), writes the complete
//    line with one write(2), fsyncs, and closes. A line is only ever written
//    for a finished evaluation, so the file holds finished results only.
//  * A writer killed mid-write can leave at most a torn final line (no '\n').
//    A torn, unparsable, incomplete or duplicate line is never silently used
//    or dropped: on the next access the whole original file is kept, by a hard
//    link (or a byte copy where links are unsupported), as
//    <results>.corrupt-<UTC time>-<pid>, and the valid lines (first copy of
//    each key) are written to <results>.tmp-<pid>, fsynced, and renamed over
//    <results>; the directory is fsynced. rename(2) is atomic, so a crash
//    during the repair leaves either the old or the new file, and the original
//    bytes are always kept aside. A warning names the file, the bad line
//    numbers and the aside copy.
//  * Because each process re-opens the path under the lock, a rename by one
//    process is seen by the others on their next operation.

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "evaluator/evaluation.hpp"
#include "qaq/error.hpp"

namespace qaq::eval {

inline constexpr const char* result_format = "qaq-eval-result/1";

struct cached_result {
    nlohmann::json key;
    nlohmann::json result;
    nlohmann::json meta;
    evaluation_result metrics;
};

class result_cache {
public:
    using warning_sink = std::function<void(const std::string&)>;

    static void warn_to_stderr(const std::string& message) { std::cerr << "qaq-eval: warning: " << message << "\n"; }

    /// Opens (and, if needed, repairs) `path`; the file and its directory are
    /// created on the first append.
    explicit result_cache(std::string path, warning_sink warn = warn_to_stderr)
        : path_(std::move(path)), warn_(std::move(warn)) {
        QAQ_CHECK(!path_.empty(), "the results file path is empty");
        const std::filesystem::path parent = std::filesystem::path(path_).parent_path();
        if (!parent.empty()) {
            std::error_code ec;
            std::filesystem::create_directories(parent, ec);
            QAQ_CHECK(!ec, "cannot create the directory ", parent.string(), " for the results file: ", ec.message());
        }
        lock_guard lock(lock_path());
        reload_locked();
    }

    const std::string& path() const noexcept { return path_; }
    std::size_t size() const noexcept { return entries_.size(); }
    /// Aside copies this object made of corrupt files.
    const std::vector<std::string>& aside_files() const noexcept { return aside_; }

    /// Picks up results other processes appended.
    void refresh() {
        lock_guard lock(lock_path());
        refresh_locked();
    }

    /// The cached result for `key` (as of the last refresh), or nullptr.
    const cached_result* find(const nlohmann::json& key) const {
        const auto it = entries_.find(key.dump());
        return it == entries_.end() ? nullptr : &it->second;
    }

    /// Appends one finished evaluation. Returns false (and writes nothing) when
    /// another process already stored this key.
    bool append(const nlohmann::json& key, const evaluation_result& result, const nlohmann::json& meta = nlohmann::json::object()) {
        lock_guard lock(lock_path());
        refresh_locked();
        const std::string id = key.dump();
        if (entries_.count(id) != 0) return false;
        nlohmann::json record = {{"format", result_format}, {"key", key}, {"result", to_json(result)}, {"meta", meta}};
        const std::string line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
        const bool existed = std::filesystem::exists(path_);
        const int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        QAQ_CHECK(fd >= 0, "cannot open the results file ", path_, " for appending: ", std::strerror(errno));
        std::size_t done = 0;
        while (done < line.size()) {
            const ssize_t w = ::write(fd, line.data() + done, line.size() - done);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                const int e = errno;
                ::close(fd);
                throw qaq::error("writing to the results file " + path_ + " failed: " + std::strerror(e) +
                                 " (a partial line, if any, is moved aside on the next run)");
            }
            done += static_cast<std::size_t>(w);
        }
        const bool synced = ::fsync(fd) == 0;
        const int sync_errno = errno;
        ::close(fd);
        QAQ_CHECK(synced, "fsync of the results file ", path_, " failed: ", std::strerror(sync_errno));
        if (!existed) sync_directory();
        offset_ += line.size();
        struct stat st {};
        if (::stat(path_.c_str(), &st) == 0) inode_ = st.st_ino;
        entries_.emplace(id, cached_result{record["key"], record["result"], record["meta"], result});
        return true;
    }

private:
    struct lock_guard {
        int fd = -1;
        explicit lock_guard(const std::string& path) {
            fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
            QAQ_CHECK(fd >= 0, "cannot open the lock file ", path, ": ", std::strerror(errno));
            while (::flock(fd, LOCK_EX) != 0) {
                if (errno == EINTR) continue;
                const int e = errno;
                ::close(fd);
                throw qaq::error("cannot lock " + path + ": " + std::strerror(e));
            }
        }
        ~lock_guard() {
            ::flock(fd, LOCK_UN);
            ::close(fd);
        }
        lock_guard(const lock_guard&) = delete;
        lock_guard& operator=(const lock_guard&) = delete;
    };

    struct problem {
        std::size_t line;
        std::string what;
    };

    std::string lock_path() const { return path_ + ".lock"; }

    static bool read_file(const std::string& path, std::string& out, std::size_t from = 0) {
        out.clear();
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            QAQ_CHECK(errno == ENOENT, "cannot open the results file ", path, ": ", std::strerror(errno));
            return false;
        }
        if (from > 0 && ::lseek(fd, static_cast<off_t>(from), SEEK_SET) < 0) {
            const int e = errno;
            ::close(fd);
            throw qaq::error("cannot seek in the results file " + path + ": " + std::strerror(e));
        }
        char buffer[1 << 16];
        for (;;) {
            const ssize_t r = ::read(fd, buffer, sizeof buffer);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) {
                const int e = errno;
                ::close(fd);
                throw qaq::error("cannot read the results file " + path + ": " + std::strerror(e));
            }
            if (r == 0) break;
            out.append(buffer, static_cast<std::size_t>(r));
        }
        ::close(fd);
        return true;
    }

    /// Parses and validates one line; returns a problem description or "".
    static std::string check_line(const std::string& line, cached_result& out) {
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for a number like 1e999
            return std::string("not valid JSON (") + e.what() + ")";
        }
        if (!j.is_object()) return "not a JSON object";
        if (!j.contains("format") || j["format"] != result_format)
            return std::string("no \"format\": \"") + result_format + "\"";
        if (!j.contains("key") || !j["key"].is_object()) return "no \"key\" object";
        if (!j.contains("result")) return "no \"result\" object";
        try {
            out.metrics = result_from_json(j["result"]);
        } catch (const qaq::error& e) {
            return std::string(e.what()).substr(5);
        }
        out.key = j["key"];
        out.result = j["result"];
        out.meta = j.contains("meta") ? j["meta"] : nlohmann::json::object();
        return "";
    }

    /// Classifies `text` (complete lines from `first_line`); returns false when
    /// it holds anything that needs a repair.
    bool scan(const std::string& text, std::size_t first_line, std::map<std::string, cached_result>& entries,
              std::vector<problem>& problems, std::map<std::string, std::size_t>& first_seen, std::string* valid_text,
              std::size_t& consumed) const {
        std::size_t start = 0, number = first_line;
        consumed = 0;
        while (start < text.size()) {
            const std::size_t end = text.find('\n', start);
            if (end == std::string::npos) {
                problems.push_back({number, "incomplete final line (no newline: an interrupted write)"});
                break;
            }
            const std::string line = text.substr(start, end - start);
            if (line.find_first_not_of(" \t\r") != std::string::npos) {
                cached_result r;
                const std::string what = check_line(line, r);
                if (!what.empty()) {
                    problems.push_back({number, what});
                } else {
                    const std::string id = r.key.dump();
                    const auto seen = first_seen.find(id);
                    if (seen != first_seen.end() || entries.count(id) != 0) {
                        problems.push_back({number, "duplicate of the result on line " +
                                                        (seen != first_seen.end() ? std::to_string(seen->second)
                                                                                  : std::string("(earlier)"))});
                    } else {
                        first_seen.emplace(id, number);
                        entries.emplace(id, std::move(r));
                        if (valid_text) valid_text->append(line).push_back('\n');
                    }
                }
            }
            start = end + 1;
            consumed = start;
            ++number;
        }
        return problems.empty();
    }

    void reload_locked() {
        std::string text;
        entries_.clear();
        offset_ = 0;
        lines_ = 0;
        inode_ = 0;
        if (!read_file(path_, text)) return;
        std::map<std::string, cached_result> entries;
        std::vector<problem> problems;
        std::map<std::string, std::size_t> first_seen;
        std::string valid;
        std::size_t consumed = 0;
        if (!scan(text, 1, entries, problems, first_seen, &valid, consumed)) repair(text, valid, problems);
        else valid = text;
        entries_ = std::move(entries);
        offset_ = valid.size();
        lines_ = static_cast<std::size_t>(std::count(valid.begin(), valid.end(), '\n'));
        struct stat st {};
        if (::stat(path_.c_str(), &st) == 0) inode_ = st.st_ino;
    }

    void refresh_locked() {
        struct stat st {};
        if (::stat(path_.c_str(), &st) != 0) {
            QAQ_CHECK(errno == ENOENT, "cannot stat the results file ", path_, ": ", std::strerror(errno));
            if (!entries_.empty())
                warn_("the results file " + path_ + " disappeared; " + std::to_string(entries_.size()) +
                      " results known to this run are no longer stored there and will be recomputed if needed");
            entries_.clear();
            offset_ = lines_ = 0;
            inode_ = 0;
            return;
        }
        if (st.st_ino != inode_ || static_cast<std::size_t>(st.st_size) < offset_) return reload_locked();
        if (static_cast<std::size_t>(st.st_size) == offset_) return;
        std::string text;
        read_file(path_, text, offset_);
        std::map<std::string, cached_result> fresh;
        std::vector<problem> problems;
        std::map<std::string, std::size_t> first_seen;
        std::size_t consumed = 0;
        if (!scan(text, lines_ + 1, fresh, problems, first_seen, nullptr, consumed)) return reload_locked();
        for (auto& f : fresh)
            if (entries_.count(f.first) != 0) return reload_locked();  // a duplicate of an older line: repair
        for (auto& f : fresh) entries_.emplace(f.first, std::move(f.second));
        offset_ += consumed;
        lines_ += static_cast<std::size_t>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(consumed), '\n'));
    }

    static std::string utc_stamp() {
        const std::time_t now = std::time(nullptr);
        std::tm tm{};
        gmtime_r(&now, &tm);
        char buffer[32];
        std::strftime(buffer, sizeof buffer, "%Y%m%dT%H%M%SZ", &tm);
        return buffer;
    }

    void sync_directory() const {
        std::filesystem::path dir = std::filesystem::path(path_).parent_path();
        if (dir.empty()) dir = ".";
        const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
            ::fsync(fd);
            ::close(fd);
        }
    }

    static void write_all(int fd, const std::string& data, const std::string& path) {
        std::size_t done = 0;
        while (done < data.size()) {
            const ssize_t w = ::write(fd, data.data() + done, data.size() - done);
            if (w < 0 && errno == EINTR) continue;
            QAQ_CHECK(w > 0, "writing ", path, " failed: ", std::strerror(errno));
            done += static_cast<std::size_t>(w);
        }
        QAQ_CHECK(::fsync(fd) == 0, "fsync of ", path, " failed: ", std::strerror(errno));
    }

    /// Keeps the original bytes aside, then atomically replaces the file by its valid lines.
    void repair(const std::string& original, const std::string& valid, const std::vector<problem>& problems) {
        std::string aside;
        for (int attempt = 0;; ++attempt) {
            aside = path_ + ".corrupt-" + utc_stamp() + "-" + std::to_string(::getpid()) +
                    (attempt > 0 ? "-" + std::to_string(attempt) : "");
            if (::link(path_.c_str(), aside.c_str()) == 0) break;
            if (errno == EEXIST) continue;
            // No hard links here: copy the bytes to a new file instead.
            const int fd = ::open(aside.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            if (fd < 0 && errno == EEXIST) continue;
            QAQ_CHECK(fd >= 0, "cannot keep the corrupt results file ", path_, " aside as ", aside, ": ",
                      std::strerror(errno), "; nothing was changed (fix or move the file by hand)");
            try {
                write_all(fd, original, aside);
            } catch (...) {
                ::close(fd);
                throw;
            }
            ::close(fd);
            break;
        }
        const std::string temp = path_ + ".tmp-" + std::to_string(::getpid());
        const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        QAQ_CHECK(fd >= 0, "cannot write ", temp, ": ", std::strerror(errno));
        try {
            write_all(fd, valid, temp);
        } catch (...) {
            ::close(fd);
            ::unlink(temp.c_str());
            throw;
        }
        ::close(fd);
        QAQ_CHECK(::rename(temp.c_str(), path_.c_str()) == 0, "cannot rename ", temp, " to ", path_, ": ",
                  std::strerror(errno));
        sync_directory();
        aside_.push_back(aside);
        std::string message = "the results file " + path_ + " had " + std::to_string(problems.size()) +
                              " bad line(s):";
        for (std::size_t i = 0; i < problems.size() && i < 10; ++i)
            message += "\n  line " + std::to_string(problems[i].line) + ": " + problems[i].what;
        if (problems.size() > 10) message += "\n  ... and " + std::to_string(problems.size() - 10) + " more";
        message += "\n  the original file is kept unchanged as " + aside + "; " + path_ + " now holds its " +
                   std::to_string(std::count(valid.begin(), valid.end(), '\n')) +
                   " valid result(s); missing results will be recomputed";
        warn_(message);
    }

    std::string path_;
    warning_sink warn_;
    std::map<std::string, cached_result> entries_;
    std::size_t offset_ = 0;  // bytes of the file already read (always at a line boundary)
    std::size_t lines_ = 0;   // lines already read
    ino_t inode_ = 0;
    std::vector<std::string> aside_;
};

}  // namespace qaq::eval
