// qaq-eval MPI mode (ctest label mpi): two ranks, one device each, rank 0
// distributing tasks and writing the results; the results must equal a
// single-process run. Runs `mpirun --allow-run-as-root --oversubscribe -np 2`.

#include <catch2/catch.hpp>

#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "test_support.hpp"

using namespace eval_test;
using Catch::Matchers::Contains;

namespace {

std::string mpirun(int ranks) {
    return quote(QAQ_EVAL_MPIEXEC) + " --allow-run-as-root --oversubscribe -np " + std::to_string(ranks) + " " +
           quote(QAQ_EVAL_BINARY) + " ";
}

std::map<std::string, nlohmann::json> lines_by_key(const fs::path& file, std::set<std::string>* workers = nullptr) {
    std::map<std::string, nlohmann::json> out;
    std::istringstream in(slurp(file));
    for (std::string l; std::getline(in, l);) {
        const nlohmann::json j = nlohmann::json::parse(l);
        CHECK(out.emplace(j["key"].dump(), j["result"]).second);
        if (workers) workers->insert(j["meta"]["worker"].get<std::string>());
    }
    return out;
}

}  // namespace

TEST_CASE("qaq-eval --mpi with two ranks matches a single-process run", "[mpi]") {
    REQUIRE(std::string(QAQ_EVAL_MPIEXEC) != "");
    const fs::path w = work_dir("mpi_two_ranks");
    const std::string common = "run --preset smoke --scorer fake --dataset " + quote("jsonl:" + data("questions.jsonl")) +
                               " -n 0 --fake-delay-ms 20 --bundle 2 ";  // two jobs of two evaluations
    auto r = run_shell(mpirun(2) + common + "--mpi --devices cpu,cpu --results " + quote((w / "mpi.jsonl").string()) +
                           " --out " + quote((w / "mpi-out").string()),
                       w);
    INFO(r.output);
    REQUIRE(r.status == 0);
    CHECK_THAT(r.stdout_text, Contains("experiment smoke (4 evaluations)"));  // printed once, by rank 0
    CHECK(std::count(r.stdout_text.begin(), r.stdout_text.end(), '\n') > 4);
    CHECK(r.stdout_text.find("experiment smoke") == r.stdout_text.rfind("experiment smoke"));
    std::set<std::string> workers;
    const auto mpi = lines_by_key(w / "mpi.jsonl", &workers);
    CHECK(mpi.size() == 4);
    bool rank1 = false;
    for (const auto& name : workers) rank1 = rank1 || name.rfind("rank 1", 0) == 0;
    CHECK(rank1);  // the second rank did work

    r = qaq_eval(common + "--results " + quote((w / "single.jsonl").string()) + " --out " + quote((w / "single-out").string()), w);
    REQUIRE(r.status == 0);
    CHECK(lines_by_key(w / "single.jsonl") == mpi);

    // Resume under MPI: nothing left to compute.
    r = run_shell(mpirun(2) + common + "--mpi --devices cpu --results " + quote((w / "mpi.jsonl").string()) + " --out " +
                      quote((w / "mpi-out").string()),
                  w);
    CHECK(r.status == 0);
    CHECK_THAT(r.output, Contains("4 evaluations: 0 computed, 4 from the results file"));

    // A rank whose device cannot start stops every rank with a clear message.
    r = run_shell(mpirun(2) + common + "--mpi --devices cpu,cuda:0@40GiB --results " + quote((w / "bad.jsonl").string()), w);
    CHECK(r.status != 0);
    CHECK_THAT(r.output, Contains(QAQ_EVAL_CUDA_BUILD
                                      ? "rank 1: qaq: device cuda:0@40GiB: the fake scorer runs on cpu devices only"
                                      : "rank 1: qaq: device cuda:0@40GiB: CUDA workers are not available in this build"));
    // Device entries must match the ranks.
    r = run_shell(mpirun(2) + common + "--mpi --devices cpu,cpu,cpu --results " + quote((w / "bad.jsonl").string()), w);
    CHECK(r.status != 0);
    CHECK_THAT(r.output, Contains("--devices has 3 entries but mpirun started 2 ranks"));
}
