// qaq-eval question sampling: an exact port of CPython's random.seed(int) +
// random.sample, so seed 42 selects the same questions as the original
// implementation. Expected values printed by CPython 3.11:
//   random.seed(42); [random.getrandbits(32) for _ in range(3)], random.getrandbits(7)
//   random.seed(42); random.sample(range(1838), 10)      (set-based path)
//   random.seed(42); random.sample(range(1838), 500)     (pool-based path)
//   random.seed(2**40 + 5); random.sample(range(100000), 5)   (a two-word seed)

#include <catch2/catch.hpp>

#include <numeric>
#include <vector>

#include "evaluator/datasets/sampling.hpp"
#include "evaluator/evaluation.hpp"

using namespace qaq::eval;
using namespace qaq::eval::datasets;
using Catch::Matchers::Contains;

TEST_CASE("eval: MT19937 seeded like CPython", "[eval][sampling]") {
    python_random r(42);
    CHECK(r.getrandbits(32) == 2746317213u);
    CHECK(r.getrandbits(32) == 478163327u);
    CHECK(r.getrandbits(32) == 107420369u);
    CHECK(r.getrandbits(7) == 94u);
}

TEST_CASE("eval: random.sample reproduced on both of CPython's paths", "[eval][sampling]") {
    using v = std::vector<std::size_t>;
    CHECK(python_random(42).sample(1838, 10) == v{1309, 228, 51, 1518, 563, 501, 457, 285, 1508, 209});
    CHECK(python_random(42).sample(10042, 10) == v{1824, 409, 4506, 4012, 3657, 2286, 1679, 8935, 1424, 9674});
    CHECK(python_random(7).sample(5, 5) == v{2, 1, 3, 0, 4});
    CHECK(python_random(123456789).sample(3, 2) == v{2, 1});
    CHECK(python_random((1ull << 40) + 5).sample(100000, 5) == v{66110, 67753, 35206, 87005, 3595});
    CHECK(python_random(0).sample(30, 30) == v{27, 12, 24, 13, 1, 8, 16, 15, 28, 9, 22, 11, 6, 23, 4,
                                                 19, 2, 21, 25, 20, 14, 29, 26, 7, 0, 5, 17, 18, 10, 3});
    const v big = python_random(42).sample(1838, 500);
    REQUIRE(big.size() == 500);
    CHECK(v(big.begin(), big.begin() + 5) == v{1309, 228, 51, 1518, 563});
    CHECK(v(big.end() - 5, big.end()) == v{1271, 316, 1502, 332, 362});
    CHECK(std::accumulate(big.begin(), big.end(), std::size_t{0}) == 458104u);
}

TEST_CASE("eval: sample_questions: all, deterministic, bounded", "[eval][sampling]") {
    CHECK(sample_questions(4, 0, 1, "d") == std::vector<std::size_t>{0, 1, 2, 3});
    CHECK(sample_questions(100, 7, 9, "d") == sample_questions(100, 7, 9, "d"));
    CHECK(sample_questions(100, 7, 9, "d") != sample_questions(100, 7, 10, "d"));
    CHECK_THROWS_WITH(sample_questions(3, 4, 1, "piqa"), Contains("dataset piqa has 3 questions; cannot sample n = 4"));
    dataset d;
    d.name = "x";
    d.questions.resize(5);
    CHECK(sample(d, 5, 7).size() == 5);
    CHECK(sample(d, 5, 7).front() == &d.questions[2]);  // random.seed(7); random.sample(range(5), 5)[0] == 2
    CHECK_THROWS_WITH(sample(d, -1, 7), Contains("expected >= 0"));
}
