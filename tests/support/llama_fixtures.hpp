#pragma once
// The tiny LLaMA models of tests/data/llama/ (written by tests/oracle/llama_numpy.py) and the
// comparison the forward-pass tests use, shared by the CPU (tests/unit) and CUDA (tests/cuda)
// test programs. QAQ_TEST_DATA_DIR is set by the build; Catch2 is included first.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "qaq/io/npy.hpp"

#ifndef QAQ_TEST_DATA_DIR
#define QAQ_TEST_DATA_DIR "tests/data"
#endif

namespace qaq_llama_test {

/// Path of a file of tests/data/llama/.
inline std::string fixture(const std::string& name) { return std::string(QAQ_TEST_DATA_DIR) + "/llama/" + name; }

/// An .npy array of tests/data/llama/ as float32 (its shape in *shape when asked).
inline std::vector<float> load_floats(const std::string& name, std::vector<std::int64_t>* shape = nullptr) {
    const qaq::io::npy_array a = qaq::io::read_npy(fixture(name));
    if (shape) *shape = a.shape;
    return a.to_float32();
}

/// The token ids the oracle ran the model on (<model>.tokens.npy).
inline std::vector<std::int32_t> load_tokens(const std::string& model) {
    const qaq::io::npy_array a = qaq::io::read_npy(fixture(model + ".tokens.npy"));
    std::vector<std::int32_t> t;
    for (std::int64_t i = 0; i < a.element_count(); ++i) t.push_back(static_cast<std::int32_t>(a.value_as_double(i)));
    return t;
}

/// max |a - b| / max(1, max |b|)
inline double relative_error(const float* a, const float* b, std::size_t n) {
    double diff = 0.0, scale = 1.0;
    for (std::size_t i = 0; i < n; ++i) {
        diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
        scale = std::max(scale, std::abs(double(b[i])));
    }
    return diff / scale;
}
inline double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
    REQUIRE(a.size() == b.size());
    return relative_error(a.data(), b.data(), a.size());
}

}  // namespace qaq_llama_test
