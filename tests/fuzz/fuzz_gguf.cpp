// libFuzzer target: the GGUF reader (examples/llama/gguf.hpp) and what
// qaq-llama reads from a parsed file: the model config, the tokenizer
// metadata and vocabulary (and a tokenizer built from it), and tensor rows.
//
// Every input must parse or raise qaq::error. A parsed file must then be
// self-consistent: version 2 or 3, a power-of-two alignment, the data section
// aligned and inside the file, every tensor's bytes inside the data section,
// aligned, of the size its type and shape give, and not overlapping another;
// every metadata value's typed getters either work or raise qaq::error.
// llama_config::from_gguf, tokenizer_vocabulary_from_gguf and the tokenizer
// constructor may refuse (qaq::error) but not crash; a tokenizer that builds
// must decode what it encodes without error on a few fixed strings. The first
// row of every dequantizable tensor is read (ASan checks the bounds). Any other
// exception, a sanitizer report or a broken invariant aborts.
//
// Seeds: tests/fuzz/corpus/gguf/, written by tests/fuzz/make_gguf_seeds.py.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "llama/gguf.hpp"
#include "llama/model_config.hpp"
#include "llama/tokenizer.hpp"
#include "qaq/error.hpp"

namespace {

using qaq::llama::gguf_file;
using qaq::llama::gguf_value;
using qaq::llama::gguf_value_type;

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "fuzz_gguf: invariant violated: %s\n", what.c_str());
    std::abort();
}
#define FUZZ_REQUIRE(condition, what)                                      \
    do {                                                                   \
        if (!(condition)) fail(std::string(#condition " ") + (what));      \
    } while (0)

// Calls f(); true if it completed, false if it raised qaq::error (anything else propagates).
template <class F>
bool completes(F&& f) {
    try {
        f();
        return true;
    } catch (const qaq::error&) {
        return false;
    }
}

void check_value(const gguf_file& f, const std::string& key, const gguf_value& v) {
    (void)v.to_display();
    (void)v.type_name();
    // Each typed getter works exactly for the types it documents, else raises qaq::error.
    const bool is_int = completes([&] { (void)f.get_int(key); });
    FUZZ_REQUIRE(!is_int || v.is_integer(), key);
    if (v.is_signed()) FUZZ_REQUIRE(is_int, key);
    const bool is_number = completes([&] { (void)f.get_float(key); });
    FUZZ_REQUIRE(is_number == (v.is_float() || is_int), key);
    const bool is_string = completes([&] { (void)f.get_string(key); });
    FUZZ_REQUIRE(is_string == (v.type == gguf_value_type::string), key);
    const bool is_bool = completes([&] { (void)f.find_bool(key); });
    FUZZ_REQUIRE(is_bool == (v.type == gguf_value_type::boolean), key);
    const bool strings = completes([&] { (void)f.get_string_array(key); });
    FUZZ_REQUIRE(strings == (v.type == gguf_value_type::array && v.element_type == gguf_value_type::string), key);
    (void)completes([&] { (void)f.get_float_array(key); });
    (void)completes([&] { (void)f.get_int32_array(key); });
    if (v.type == gguf_value_type::array)
        for (const gguf_value& e : v.array) FUZZ_REQUIRE(e.type == v.element_type, key + ": array element type");
}

void check_tensors(const gguf_file& f) {
    const std::uint64_t size = f.file_size(), data = f.data_offset(), alignment = f.alignment();
    FUZZ_REQUIRE(alignment > 0 && (alignment & (alignment - 1)) == 0, "alignment");
    FUZZ_REQUIRE(data % alignment == 0, "data offset aligned");
    std::vector<std::pair<std::uint64_t, std::uint64_t>> spans;
    for (const qaq::llama::gguf_tensor& t : f.tensors()) {
        FUZZ_REQUIRE(!t.dims.empty() && t.dims.size() <= 4, t.name);
        FUZZ_REQUIRE(t.offset % alignment == 0, t.name + ": offset aligned");
        FUZZ_REQUIRE(t.offset <= size && data <= size - t.offset && t.size <= size - data - t.offset,
                     t.name + ": bytes inside the file");
        const qaq::llama::ggml_type_traits& traits = qaq::llama::ggml_traits(t.type);
        FUZZ_REQUIRE(t.dims[0] % traits.block_size == 0, t.name + ": whole blocks per row");
        const auto expected = static_cast<std::uint64_t>(t.elements() / traits.block_size) *
                              static_cast<std::uint64_t>(traits.type_size);
        FUZZ_REQUIRE(t.size == expected, t.name + ": size from type and shape");
        FUZZ_REQUIRE(f.find_tensor(t.name) == &t, t.name + ": found by name");
        if (t.size > 0) spans.emplace_back(t.offset, t.offset + t.size);
        // The first row (at most 4096 elements) of a tensor the forward pass can read.
        const std::int64_t n = t.row_length();
        if (t.size == 0 || n <= 0 || n > 4096 || !completes([&] { qaq::llama::require_dequantizable(t.type, t.name); }))
            continue;
        const std::int64_t row_bytes = qaq::llama::ggml_row_bytes(t.type, n);
        FUZZ_REQUIRE(row_bytes >= 0 && static_cast<std::uint64_t>(row_bytes) <= t.size, t.name + ": first row inside");
        std::vector<float> row(static_cast<std::size_t>(n));
        qaq::llama::dequantize_row(t.type, t.data, row.data(), n);
    }
    std::sort(spans.begin(), spans.end());
    for (std::size_t k = 1; k < spans.size(); ++k) FUZZ_REQUIRE(spans[k - 1].second <= spans[k].first, "tensors overlap");
}

void check_tokenizer(const gguf_file& f) {
    qaq::llama::tokenizer_vocabulary vocabulary;
    if (!completes([&] { vocabulary = qaq::llama::tokenizer_vocabulary_from_gguf(f); })) return;
    if (vocabulary.tokens.size() > 4096) return;  // building a large one is slow; the seeds are small
    std::unique_ptr<qaq::llama::tokenizer> t;
    if (!completes([&] { t = std::make_unique<qaq::llama::tokenizer>(vocabulary); })) return;
    for (const char* text : {"", "Hello world", " a  b\n\tc", "caf\xc3\xa9 12 345"}) {
        std::vector<std::int32_t> ids;
        if (!completes([&] { ids = t->encode(text); })) continue;  // a vocabulary may lack pieces
        for (const std::int32_t id : ids)
            FUZZ_REQUIRE(id >= 0 && static_cast<std::size_t>(id) < vocabulary.tokens.size(), "token id in range");
        (void)completes([&] { (void)t->decode(ids); });
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
    std::vector<std::uint8_t> copy(bytes, bytes + size);  // exactly sized: ASan sees any read past the end
    std::unique_ptr<gguf_file> f;
    if (!completes([&] { f = std::make_unique<gguf_file>(gguf_file::parse(std::move(copy), "fuzz.gguf")); })) return 0;
    FUZZ_REQUIRE(f->version() == 2 || f->version() == 3, "version");
    for (const auto& [key, value] : f->metadata()) {
        FUZZ_REQUIRE(f->find(key) == &value, key + ": found by name");
        check_value(*f, key, value);
    }
    check_tensors(*f);
    (void)completes([&] { (void)qaq::llama::llama_config::from_gguf(*f); });
    check_tokenizer(*f);
    return 0;
}
