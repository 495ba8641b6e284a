#pragma once
// Helpers for the qaq-eval tests that run the binary.

#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#ifndef QAQ_TEST_DATA_DIR
#define QAQ_TEST_DATA_DIR "tests/data"
#endif
#ifndef QAQ_EVAL_BINARY
#define QAQ_EVAL_BINARY "qaq-eval"
#endif
#ifndef QAQ_EVAL_WORK_DIR
#define QAQ_EVAL_WORK_DIR "qaq-eval-test-work"
#endif
#ifndef QAQ_EVAL_MPIEXEC
#define QAQ_EVAL_MPIEXEC ""
#endif

namespace eval_test {

namespace fs = std::filesystem;

inline std::string data(const std::string& name) { return std::string(QAQ_TEST_DATA_DIR) + "/eval/" + name; }

/// A fresh directory for one test.
inline fs::path work_dir(const std::string& name) {
    const fs::path p = fs::path(QAQ_EVAL_WORK_DIR) / name;
    fs::remove_all(p);
    fs::create_directories(p);
    return p;
}

inline std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

inline std::string quote(const std::string& s) {
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

struct command_result {
    int status = -1;  ///< exit status, or 128 + signal
    std::string output;  ///< stdout and stderr together
    std::string stdout_text;
};

/// Runs `args` (already quoted) through /bin/sh; stdout and stderr are captured.
inline command_result run_shell(const std::string& args, const fs::path& dir) {
    const fs::path out = dir / "stdout.txt", err = dir / "stderr.txt";
    const std::string cmd = args + " >" + quote(out.string()) + " 2>" + quote(err.string()) + " </dev/null";
    const int raw = std::system(cmd.c_str());
    command_result r;
    if (WIFEXITED(raw)) r.status = WEXITSTATUS(raw);
    else if (WIFSIGNALED(raw)) r.status = 128 + WTERMSIG(raw);
    r.stdout_text = slurp(out);
    r.output = r.stdout_text + slurp(err);
    return r;
}

inline command_result qaq_eval(const std::string& args, const fs::path& dir) {
    return run_shell(quote(QAQ_EVAL_BINARY) + " " + args, dir);
}

inline std::size_t line_count(const fs::path& p) {
    const std::string s = slurp(p);
    return static_cast<std::size_t>(std::count(s.begin(), s.end(), '\n'));
}

}  // namespace eval_test
