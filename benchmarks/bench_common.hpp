#pragma once
// Helpers shared by the qaq-bench topics: deterministic data and a one-slot
// memo so that expensive setup (a 32k-token cache) is built once per
// benchmark, not once per Google Benchmark calibration run.

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace qaq_bench {

inline constexpr std::int64_t KiB = 1024;
inline constexpr std::int64_t MiB = 1024 * KiB;

/// n float32 values drawn from N(0, sigma), the same for the same seed.
inline std::vector<float> normal_floats(std::int64_t n, std::uint32_t seed, float sigma = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, sigma);
    std::vector<float> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = dist(rng);
    return v;
}

/// Keeps the most recently built object of type T for one key. Benchmarks run
/// one after another (repetitions of one benchmark are consecutive), so one
/// slot suffices and memory stays bounded by the largest case.
template <class T>
class memo {
public:
    T& get(const std::string& key, const std::function<std::unique_ptr<T>()>& build) {
        if (!value_ || key != key_) {
            value_.reset();  // free the old case before building the new one
            value_ = build();
            key_ = key;
        }
        return *value_;
    }
    void clear() {
        value_.reset();
        key_.clear();
    }

private:
    std::string key_;
    std::unique_ptr<T> value_;
};

}  // namespace qaq_bench
