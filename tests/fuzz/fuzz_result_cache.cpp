// libFuzzer target: the evaluator's result cache (examples/evaluator/result_cache.hpp)
// opening a results file with arbitrary content: torn, corrupted, duplicated
// or foreign lines, as a crash, a full disk or another program can leave.
//
// The input is the file. Opening it must succeed (a bad line is repaired, never
// an error) or raise qaq::error, and then:
//   * when the file needed no repair, it is unchanged and no aside copy exists;
//   * when it did, the aside copy holds the original bytes exactly and the file
//     now holds only complete, valid, distinct lines: opening it again finds
//     the same results, repairs nothing, and leaves it byte for byte as it is;
//   * every result found can be looked up by its key;
//   * appending a new result works, and a third open finds it too.
// Anything else (another exception type, a sanitizer report, a broken
// invariant) aborts.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <unistd.h>

#include "evaluator/result_cache.hpp"
#include "qaq/error.hpp"

namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "fuzz_result_cache: invariant violated: %s\n", what.c_str());
    std::abort();
}
#define FUZZ_REQUIRE(condition)             \
    do {                                    \
        if (!(condition)) fail(#condition); \
    } while (0)

// A private directory per process, on tmpfs when there is one (the cache fsyncs).
const fs::path& directory() {
    static const fs::path dir = [] {
        const fs::path base = fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
        fs::path d = base / ("qaq-fuzz-result-cache-" + std::to_string(static_cast<long>(getpid())));
        fs::create_directories(d);
        return d;
    }();
    return dir;
}

std::string read_all(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void clear_directory() {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(directory(), ec)) fs::remove(entry.path(), ec);
}

qaq::eval::evaluation_result some_result() {
    qaq::eval::evaluation_result r;
    r.questions = 2;
    r.correct = 1;
    r.accuracy = 0.5;
    r.predictions = {0, 1};
    return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
    clear_directory();
    const fs::path path = directory() / "results.jsonl";
    const std::string original(reinterpret_cast<const char*>(bytes), size);
    {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out.write(original.data(), static_cast<std::streamsize>(original.size()));
    }
    std::vector<std::string> warnings;
    const auto collect = [&](const std::string& w) { warnings.push_back(w); };

    std::unique_ptr<qaq::eval::result_cache> cache;
    try {
        cache = std::make_unique<qaq::eval::result_cache>(path.string(), collect);
    } catch (const qaq::error&) {
        return 0;
    }
    const std::string after = read_all(path);
    if (cache->aside_files().empty()) {
        FUZZ_REQUIRE(after == original);
        FUZZ_REQUIRE(warnings.empty());
    } else {
        FUZZ_REQUIRE(cache->aside_files().size() == 1);
        FUZZ_REQUIRE(read_all(cache->aside_files().front()) == original);
        FUZZ_REQUIRE(warnings.size() == 1);
        FUZZ_REQUIRE(after.empty() || after.back() == '\n');
    }

    // The (repaired) file is stable: a second open repairs nothing and finds the same results.
    warnings.clear();
    qaq::eval::result_cache again(path.string(), collect);
    FUZZ_REQUIRE(again.aside_files().empty());
    FUZZ_REQUIRE(warnings.empty());
    FUZZ_REQUIRE(again.size() == cache->size());
    FUZZ_REQUIRE(read_all(path) == after);

    // Every stored result is found by its key, in both objects.
    std::size_t found = 0;
    std::size_t start = 0;
    while (start < after.size()) {
        const std::size_t end = after.find('\n', start);
        FUZZ_REQUIRE(end != std::string::npos);
        const std::string line = after.substr(start, end - start);
        start = end + 1;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const nlohmann::json j = nlohmann::json::parse(line);  // a kept line is valid JSON
        FUZZ_REQUIRE(cache->find(j["key"]) != nullptr);
        FUZZ_REQUIRE(again.find(j["key"]) != nullptr);
        ++found;
    }
    FUZZ_REQUIRE(found == cache->size());

    // A new result appends, and the first object picks it up on refresh.
    const nlohmann::json key = {{"fuzz", "a key no input holds"}, {"n", static_cast<std::int64_t>(size)}};
    if (again.find(key) == nullptr) {
        FUZZ_REQUIRE(again.append(key, some_result()));
        FUZZ_REQUIRE(!cache->append(key, some_result()));  // already there: refreshed first, written once
        FUZZ_REQUIRE(cache->find(key) != nullptr);
        qaq::eval::result_cache third(path.string(), collect);
        FUZZ_REQUIRE(third.aside_files().empty());
        FUZZ_REQUIRE(third.size() == again.size());
    }
    return 0;
}
