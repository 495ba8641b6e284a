#pragma once
// The architecture parameters of a LLaMA-family GGUF model, from its metadata.
//
//   llama_config c = llama_config::from_gguf(file);
//
// Keys read (prefix = general.architecture, which must be "llama"):
//   <arch>.block_count, .embedding_length, .feed_forward_length,
//   .attention.head_count, .attention.head_count_kv (default: head_count),
//   .attention.layer_norm_rms_epsilon, .rope.freq_base (default 10000),
//   .context_length, .vocab_size (default: rows of token_embd.weight),
//   .rope.dimension_count and .attention.key_length / value_length (default
//   head_dim = embedding_length / head_count; partial rotary embeddings and
//   rope scaling are not supported and are errors).
// The output projection is tied to token_embd.weight when the file has no
// output.weight.
//
// tokenizer_metadata_from_gguf() collects the tokenizer.ggml.* keys for the
// tokenizer (tokenizer.hpp); a file without them is an error that says so.

#include <cmath>
#include <cstdint>
#include <string>

#include "llama/gguf.hpp"
#include "llama/tokenizer.hpp"
#include "qaq/error.hpp"

namespace qaq::llama {

struct llama_config {
    std::string architecture = "llama";
    std::string name;                   ///< general.name (may be empty)
    std::int64_t layers = 0;
    std::int64_t embedding = 0;         ///< model width
    std::int64_t feed_forward = 0;      ///< SwiGLU hidden width
    std::int64_t heads = 0;             ///< query heads
    std::int64_t kv_heads = 0;          ///< key/value heads (grouped-query attention)
    std::int64_t head_dim = 0;
    std::int64_t rope_dims = 0;         ///< rotated dims per head (== head_dim)
    double rope_theta = 10000.0;
    double rms_eps = 1e-5;
    std::int64_t context_length = 0;    ///< training context
    std::int64_t vocab = 0;
    bool tied_embeddings = false;       ///< output projection = token_embd.weight

    std::int64_t q_dim() const noexcept { return heads * head_dim; }
    std::int64_t kv_dim() const noexcept { return kv_heads * head_dim; }

    static llama_config from_gguf(const gguf_file& f) {
        llama_config c;
        const auto arch = f.find_string("general.architecture");
        QAQ_CHECK(arch.has_value(), "GGUF file '", f.name(),
                  "' has no general.architecture; expected a model file with architecture \"llama\"");
        QAQ_CHECK(*arch == "llama", "GGUF file '", f.name(), "': unsupported architecture '", *arch,
                  "' (general.architecture); qaq-llama runs \"llama\" models only");
        c.architecture = *arch;
        c.name = f.find_string("general.name").value_or("");
        const std::string p = c.architecture + ".";
        const auto required = [&](const std::string& key) {
            QAQ_CHECK(f.has(key), "GGUF file '", f.name(), "' lacks the metadata key '", key,
                      "' that a llama model needs");
            return f.get_int(key);
        };
        c.layers = required(p + "block_count");
        c.embedding = required(p + "embedding_length");
        c.feed_forward = required(p + "feed_forward_length");
        c.heads = required(p + "attention.head_count");
        c.kv_heads = f.find_int(p + "attention.head_count_kv").value_or(c.heads);
        c.context_length = required(p + "context_length");
        QAQ_CHECK(f.has(p + "attention.layer_norm_rms_epsilon"), "GGUF file '", f.name(), "' lacks '", p,
                  "attention.layer_norm_rms_epsilon'");
        c.rms_eps = f.get_float(p + "attention.layer_norm_rms_epsilon");
        c.rope_theta = f.find_float(p + "rope.freq_base").value_or(10000.0);

        const auto positive = [&](std::int64_t v, const char* what, std::int64_t limit) {
            QAQ_CHECK(v >= 1 && v <= limit, "GGUF file '", f.name(), "': ", what, " is ", v, ", expected 1..", limit);
        };
        positive(c.layers, "block_count", 4096);
        positive(c.embedding, "embedding_length", 1 << 20);
        positive(c.feed_forward, "feed_forward_length", 1 << 22);
        positive(c.heads, "attention.head_count", 4096);
        positive(c.kv_heads, "attention.head_count_kv", 4096);
        positive(c.context_length, "context_length", std::int64_t{1} << 32);
        QAQ_CHECK(c.heads % c.kv_heads == 0, "GGUF file '", f.name(), "': head_count ", c.heads,
                  " is not a multiple of head_count_kv ", c.kv_heads);
        QAQ_CHECK(c.embedding % c.heads == 0 || f.has(p + "attention.key_length"), "GGUF file '", f.name(),
                  "': embedding_length ", c.embedding, " is not a multiple of head_count ", c.heads);
        c.head_dim = f.find_int(p + "attention.key_length").value_or(c.embedding / c.heads);
        const std::int64_t value_length = f.find_int(p + "attention.value_length").value_or(c.head_dim);
        QAQ_CHECK(value_length == c.head_dim, "GGUF file '", f.name(), "': attention.value_length ", value_length,
                  " differs from key_length ", c.head_dim, "; not supported");
        positive(c.head_dim, "head dimension", 4096);
        c.rope_dims = f.find_int(p + "rope.dimension_count").value_or(c.head_dim);
        QAQ_CHECK(c.rope_dims == c.head_dim, "GGUF file '", f.name(), "': rope.dimension_count ", c.rope_dims,
                  " differs from the head dimension ", c.head_dim, " (partial rotary embeddings are not supported)");
        QAQ_CHECK(c.head_dim % 2 == 0, "GGUF file '", f.name(), "': head dimension ", c.head_dim, " is odd");
        if (const auto scaling = f.find_string(p + "rope.scaling.type"))
            QAQ_CHECK(*scaling == "none", "GGUF file '", f.name(), "': rope scaling '", *scaling,
                      "' (", p, "rope.scaling.type) is not supported");
        QAQ_CHECK(f.find_tensor("rope_freqs.weight") == nullptr, "GGUF file '", f.name(),
                  "' has rope_freqs.weight (LLaMA-3.1 rope scaling), which is not supported");
        QAQ_CHECK(std::isfinite(c.rms_eps) && c.rms_eps > 0.0 && std::isfinite(c.rope_theta) && c.rope_theta > 0.0,
                  "GGUF file '", f.name(), "': rms epsilon ", c.rms_eps, " and rope freq_base ", c.rope_theta,
                  " must be positive");

        const gguf_tensor* embd = f.find_tensor("token_embd.weight");
        QAQ_CHECK(embd != nullptr, "GGUF file '", f.name(), "' has no tensor 'token_embd.weight'");
        QAQ_CHECK(embd->dims.size() == 2 && embd->dims[0] == c.embedding, "GGUF file '", f.name(),
                  "': token_embd.weight has shape ", embd->shape_string(), ", expected [", c.embedding, ", vocab]");
        c.vocab = f.find_int(p + "vocab_size").value_or(embd->dims[1]);
        QAQ_CHECK(c.vocab == embd->dims[1], "GGUF file '", f.name(), "': vocab_size ", c.vocab,
                  " differs from the rows of token_embd.weight ", embd->shape_string());
        c.tied_embeddings = f.find_tensor("output.weight") == nullptr;
        return c;
    }
};

/// The tokenizer keys of a GGUF file (tokenizer.ggml.*), checked for type.
/// Throws when the file has no tokenizer (no tokenizer.ggml.model or
/// tokenizer.ggml.tokens).
inline tokenizer_metadata tokenizer_metadata_from_gguf(const gguf_file& f) {
    QAQ_CHECK(f.has(gguf_key::model) && f.has(gguf_key::tokens), "GGUF file '", f.name(),
              "' has no tokenizer metadata (", gguf_key::model, " and ", gguf_key::tokens,
              " are required); qaq-llama needs the tokenizer stored in the model file");
    tokenizer_metadata m;
    m.model = f.get_string(gguf_key::model);
    m.pre = f.find_string(gguf_key::pre).value_or("");
    m.tokens = f.get_string_array(gguf_key::tokens);
    if (f.has(gguf_key::scores)) m.scores = f.get_float_array(gguf_key::scores);
    if (f.has(gguf_key::token_type)) m.token_types = f.get_int32_array(gguf_key::token_type);
    if (f.has(gguf_key::merges)) m.merges = f.get_string_array(gguf_key::merges);
    m.bos = f.find_int(gguf_key::bos_id);
    m.eos = f.find_int(gguf_key::eos_id);
    m.unk = f.find_int(gguf_key::unk_id);
    m.pad = f.find_int(gguf_key::pad_id);
    m.add_bos = f.find_bool(gguf_key::add_bos);
    m.add_space_prefix = f.find_bool(gguf_key::add_space_prefix);
    return m;
}

/// The tokenizer vocabulary of a GGUF file, with llama.cpp's defaults for
/// what the metadata leaves out (see vocabulary_from_metadata).
inline tokenizer_vocabulary tokenizer_vocabulary_from_gguf(const gguf_file& f) {
    return vocabulary_from_metadata(tokenizer_metadata_from_gguf(f));
}

}  // namespace qaq::llama
