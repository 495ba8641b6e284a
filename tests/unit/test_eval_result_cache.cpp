// qaq-eval result cache: JSON lines appended atomically under flock; torn,
// corrupt and duplicate lines are moved aside (the original bytes kept) and
// never used; concurrent writer processes neither lose nor duplicate results.

#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "evaluator/result_cache.hpp"

namespace {

using namespace qaq::eval;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;

struct temp_dir {
    fs::path path;
    temp_dir() {
        static std::atomic<int> counter{0};
        path = fs::temp_directory_path() /
               ("qaq-eval-cache-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~temp_dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

evaluation_result result(int questions, int correct) {
    evaluation_result r;
    r.questions = questions;
    r.correct = correct;
    r.accuracy = static_cast<double>(correct) / questions;
    r.predictions.assign(static_cast<std::size_t>(questions), 0);
    return r;
}

nlohmann::json key(int i) { return {{"test", i}, {"model", {{"name", "m"}}}}; }

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string line_for(int i) {
    return nlohmann::json{{"format", result_format}, {"key", key(i)}, {"result", to_json(result(2, 1))}, {"meta", {}}}.dump() +
           "\n";
}

std::vector<fs::path> aside_files(const fs::path& dir) {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.path().filename().string().find(".corrupt-") != std::string::npos) out.push_back(e.path());
    return out;
}

struct captured {
    std::vector<std::string> messages;
    result_cache::warning_sink sink() {
        return [this](const std::string& m) { messages.push_back(m); };
    }
};

}  // namespace

TEST_CASE("eval: result cache stores, finds and reloads results", "[eval][cache]") {
    temp_dir t;
    const std::string file = (t.path / "sub" / "results.jsonl").string();
    captured w;
    {
        result_cache c(file, w.sink());
        CHECK(c.size() == 0);
        CHECK(c.find(key(1)) == nullptr);
        CHECK(c.append(key(1), result(4, 3), {{"note", "x"}}));
        CHECK(c.append(key(2), result(4, 1)));
        CHECK_FALSE(c.append(key(1), result(4, 0)));  // already there: nothing written
        REQUIRE(c.find(key(1)) != nullptr);
        CHECK(c.find(key(1))->metrics.correct == 3);
    }
    result_cache again(file, w.sink());
    CHECK(again.size() == 2);
    CHECK(again.find(key(2))->metrics.accuracy == Approx(0.25));
    CHECK(again.find(key(1))->meta["note"] == "x");
    CHECK(w.messages.empty());
    // Exactly two complete lines.
    const std::string text = slurp(file);
    CHECK(std::count(text.begin(), text.end(), '\n') == 2);
    CHECK(text.back() == '\n');
}

TEST_CASE("eval: result cache moves a torn final line aside and keeps the rest", "[eval][cache]") {
    temp_dir t;
    const fs::path file = t.path / "r.jsonl";
    const std::string original = line_for(1) + line_for(2) + line_for(3).substr(0, 40);
    std::ofstream(file, std::ios::binary) << original;
    captured w;
    result_cache c(file.string(), w.sink());
    CHECK(c.size() == 2);
    REQUIRE(w.messages.size() == 1);
    CHECK_THAT(w.messages[0], Contains("line 3: incomplete final line"));
    CHECK_THAT(w.messages[0], Contains("the original file is kept unchanged as"));
    const auto aside = aside_files(t.path);
    REQUIRE(aside.size() == 1);
    CHECK(slurp(aside[0]) == original);  // never overwritten
    CHECK(slurp(file) == line_for(1) + line_for(2));
    CHECK(c.append(key(3), result(2, 1)));
    const std::string after = slurp(file);
    CHECK(after.rfind(line_for(1) + line_for(2), 0) == 0);
    CHECK(std::count(after.begin(), after.end(), '\n') == 3);
    result_cache reread(file.string(), w.sink());
    CHECK(reread.size() == 3);
    CHECK(w.messages.size() == 1);
}

TEST_CASE("eval: result cache moves corrupt and duplicate lines aside", "[eval][cache]") {
    temp_dir t;
    const fs::path file = t.path / "r.jsonl";
    const std::string bad_result =
        nlohmann::json{{"format", result_format}, {"key", key(9)}, {"result", {{"questions", 1}}}}.dump() + "\n";
    const std::string original = line_for(1) + "{garbage\n" + line_for(2) + line_for(1) + bad_result + "\n" +
                                 "{\"format\": \"other\"}\n";
    std::ofstream(file, std::ios::binary) << original;
    captured w;
    result_cache c(file.string(), w.sink());
    CHECK(c.size() == 2);
    REQUIRE(w.messages.size() == 1);
    const std::string& m = w.messages[0];
    CHECK_THAT(m, Contains("4 bad line(s)"));
    CHECK_THAT(m, Contains("line 2: not valid JSON"));
    CHECK_THAT(m, Contains("line 4: duplicate of the result on line 1"));
    CHECK_THAT(m, Contains("line 5: result: field \"correct\" must be an integer"));
    CHECK_THAT(m, Contains("line 7: no \"format\""));
    const auto aside = aside_files(t.path);
    REQUIRE(aside.size() == 1);
    CHECK(slurp(aside[0]) == original);
    CHECK(slurp(file) == line_for(1) + line_for(2));
}

TEST_CASE("eval: a result file that is not JSON lines at all is moved aside whole", "[eval][cache]") {
    temp_dir t;
    const fs::path file = t.path / "r.jsonl";
    const std::string junk("\x00\x01\xff binary\n\x7f", 12);
    std::ofstream(file, std::ios::binary) << junk;
    captured w;
    result_cache c(file.string(), w.sink());
    CHECK(c.size() == 0);
    REQUIRE(aside_files(t.path).size() == 1);
    CHECK(slurp(aside_files(t.path)[0]) == junk);
    CHECK(slurp(file).empty());
    CHECK(c.append(key(5), result(1, 1)));
    CHECK(result_cache(file.string(), w.sink()).size() == 1);
}

TEST_CASE("eval: result cache sees other writers and never duplicates a key", "[eval][cache]") {
    temp_dir t;
    const std::string file = (t.path / "r.jsonl").string();
    captured w;
    result_cache a(file, w.sink()), b(file, w.sink());
    CHECK(a.append(key(1), result(2, 2)));
    CHECK(b.find(key(1)) == nullptr);
    b.refresh();
    REQUIRE(b.find(key(1)) != nullptr);
    CHECK_FALSE(b.append(key(1), result(2, 0)));  // re-read under the lock before writing
    CHECK(b.append(key(2), result(2, 0)));
    CHECK(a.append(key(3), result(2, 0)));
    a.refresh();
    CHECK(a.size() == 3);
    // A line appended behind the caches' backs that is corrupt triggers a repair on refresh.
    {
        std::ofstream out(file, std::ios::app | std::ios::binary);
        out << "{\"half\": ";
    }
    b.refresh();
    CHECK(b.size() == 3);
    CHECK(w.messages.size() == 1);
    CHECK(a.append(key(4), result(2, 0)));
    CHECK(result_cache(file, w.sink()).size() == 4);
    // The file vanishing is survivable.
    fs::remove(file);
    a.refresh();
    CHECK(a.size() == 0);
    CHECK(w.messages.size() == 2);
    CHECK(a.append(key(4), result(2, 0)));
}

TEST_CASE("eval: concurrent writer processes lose and duplicate nothing", "[eval][cache]") {
    temp_dir t;
    const std::string file = (t.path / "r.jsonl").string();
    constexpr int processes = 4, own = 25, shared = 5;
    std::vector<pid_t> children;
    for (int p = 0; p < processes; ++p) {
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            int status = 0;
            try {
                result_cache c(file, [](const std::string&) {});
                for (int i = 0; i < own; ++i) {
                    c.append(key(1000 * (p + 1) + i), result(3, i % 4));
                    if (i % 5 == 0) c.append(key(i / 5), result(3, 1));  // keys every process writes
                }
            } catch (...) {
                status = 1;
            }
            ::_exit(status);
        }
        children.push_back(pid);
    }
    for (pid_t pid : children) {
        int status = 0;
        ::waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
    }
    captured w;
    result_cache c(file, w.sink());
    CHECK(w.messages.empty());
    CHECK(c.size() == processes * own + shared);
    const std::string text = slurp(file);
    CHECK(std::count(text.begin(), text.end(), '\n') == processes * own + shared);
}
