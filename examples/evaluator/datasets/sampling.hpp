#pragma once
// Deterministic sampling of N questions by seed: CPython's random.sample,
// reproduced exactly, so that seed 42 picks the same questions as the
// original implementation (random.seed(42); random.sample(rows, k=N)) from the
// same file in the same order.
//
// Algorithm (CPython 3.x, Lib/random.py and Modules/_randommodule.c):
//   seed(s):         MT19937 init_by_array(key), key = the 32-bit words of s,
//                    least significant first (one word 0 for s = 0).
//   getrandbits(k):  genrand_uint32() >> (32 - k), for 1 <= k <= 32.
//   randbelow(n):    k = bit_length(n); draw getrandbits(k) until < n.
//   sample(pop, k):  setsize = 21, plus 4 ** ceil(log(3k, 4)) when k > 5;
//     if n <= setsize: pool = copy of pop; for i in 0..k-1:
//                      j = randbelow(n - i); take pool[j]; pool[j] = pool[n - i - 1]
//     else:            for i in 0..k-1: draw j = randbelow(n) until j is new; take pop[j]
// The result is in draw order (not sorted). N = 0 (or N = the dataset size
// with --all) takes every question in file order without drawing.

#include <array>
#include <cmath>
#include <cstdint>
#include <unordered_set>
#include <vector>

#include "qaq/error.hpp"

namespace qaq::eval::datasets {

class python_random {
public:
    explicit python_random(std::uint64_t seed) {
        std::vector<std::uint32_t> key;
        do {
            key.push_back(static_cast<std::uint32_t>(seed & 0xffffffffu));
            seed >>= 32;
        } while (seed != 0);
        init_by_array(key);
    }

    std::uint32_t genrand_uint32() {
        static constexpr std::uint32_t upper = 0x80000000u, lower = 0x7fffffffu, matrix_a = 0x9908b0dfu;
        if (index_ >= n) {
            int k = 0;
            for (; k < n - m; ++k) {
                const std::uint32_t y = (state_[k] & upper) | (state_[k + 1] & lower);
                state_[k] = state_[k + m] ^ (y >> 1) ^ ((y & 1u) ? matrix_a : 0u);
            }
            for (; k < n - 1; ++k) {
                const std::uint32_t y = (state_[k] & upper) | (state_[k + 1] & lower);
                state_[k] = state_[k + (m - n)] ^ (y >> 1) ^ ((y & 1u) ? matrix_a : 0u);
            }
            const std::uint32_t y = (state_[n - 1] & upper) | (state_[0] & lower);
            state_[n - 1] = state_[m - 1] ^ (y >> 1) ^ ((y & 1u) ? matrix_a : 0u);
            index_ = 0;
        }
        std::uint32_t y = state_[index_++];
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        y ^= y >> 18;
        return y;
    }

    std::uint32_t getrandbits(int k) {
        QAQ_CHECK(k >= 1 && k <= 32, "getrandbits(", k, "): this port supports 1..32 bits");
        return genrand_uint32() >> (32 - k);
    }

    /// Uniform in [0, n), n >= 1 (n < 2^32).
    std::uint64_t randbelow(std::uint64_t n) {
        QAQ_CHECK(n >= 1 && n <= 0xffffffffull, "randbelow(", n, "): expected 1..2^32-1");
        int k = 0;
        for (std::uint64_t v = n; v != 0; v >>= 1) ++k;
        std::uint64_t r = getrandbits(k);
        while (r >= n) r = getrandbits(k);
        return r;
    }

    /// Indices of random.sample(range(population), k), in draw order.
    std::vector<std::size_t> sample(std::size_t population, std::size_t k) {
        QAQ_CHECK(k <= population, "cannot sample ", k, " of ", population, " items");
        std::vector<std::size_t> result(k);
        std::size_t setsize = 21;
        if (k > 5) setsize += static_cast<std::size_t>(std::pow(4.0, std::ceil(std::log(3.0 * static_cast<double>(k)) / std::log(4.0))));
        if (population <= setsize) {
            std::vector<std::size_t> pool(population);
            for (std::size_t i = 0; i < population; ++i) pool[i] = i;
            for (std::size_t i = 0; i < k; ++i) {
                const std::size_t j = static_cast<std::size_t>(randbelow(population - i));
                result[i] = pool[j];
                pool[j] = pool[population - i - 1];
            }
        } else {
            std::unordered_set<std::size_t> selected;
            for (std::size_t i = 0; i < k; ++i) {
                std::size_t j = static_cast<std::size_t>(randbelow(population));
                while (selected.count(j) != 0) j = static_cast<std::size_t>(randbelow(population));
                selected.insert(j);
                result[i] = j;
            }
        }
        return result;
    }

private:
    static constexpr int n = 624, m = 397;

    void init_genrand(std::uint32_t s) {
        state_[0] = s;
        for (int i = 1; i < n; ++i) state_[i] = 1812433253u * (state_[i - 1] ^ (state_[i - 1] >> 30)) + static_cast<std::uint32_t>(i);
        index_ = n;
    }

    void init_by_array(const std::vector<std::uint32_t>& key) {
        init_genrand(19650218u);
        int i = 1;
        std::size_t j = 0;
        const std::size_t key_length = key.size();
        for (std::size_t k = (n > key_length ? n : key_length); k > 0; --k) {
            state_[i] = (state_[i] ^ ((state_[i - 1] ^ (state_[i - 1] >> 30)) * 1664525u)) + key[j] + static_cast<std::uint32_t>(j);
            ++i, ++j;
            if (i >= n) state_[0] = state_[n - 1], i = 1;
            if (j >= key_length) j = 0;
        }
        for (int k = n - 1; k > 0; --k) {
            state_[i] = (state_[i] ^ ((state_[i - 1] ^ (state_[i - 1] >> 30)) * 1566083941u)) - static_cast<std::uint32_t>(i);
            ++i;
            if (i >= n) state_[0] = state_[n - 1], i = 1;
        }
        state_[0] = 0x80000000u;
    }

    std::array<std::uint32_t, n> state_{};
    int index_ = n + 1;
};

/// Positions of the questions an evaluation uses: all in file order when
/// n == 0, else python_random(seed).sample(size, n). n > size is an error.
inline std::vector<std::size_t> sample_questions(std::size_t size, std::size_t n, std::uint64_t seed,
                                                 const std::string& dataset_name) {
    if (n == 0) {
        std::vector<std::size_t> all(size);
        for (std::size_t i = 0; i < size; ++i) all[i] = i;
        return all;
    }
    QAQ_CHECK(n <= size, "dataset ", dataset_name, " has ", size, " questions; cannot sample n = ", n,
              " (use -n ", size, " or -n 0 for all of them)");
    return python_random(seed).sample(size, n);
}

}  // namespace qaq::eval::datasets
