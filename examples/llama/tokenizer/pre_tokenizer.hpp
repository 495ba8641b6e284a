#pragma once
// Pre-tokenization of byte-level BPE vocabularies: the regex splits llama.cpp
// (src/llama-vocab.cpp, llm_tokenizer_bpe) applies for a GGUF's
// tokenizer.ggml.pre, hand-written instead of compiled from a regex.
//
// A pre-tokenizer is a list of stages. The first stage splits the whole text;
// every later stage splits each piece of the previous one on its own, so a
// regex lookahead such as \s+(?!\S) ends at a piece boundary. "Search" stages
// (one regex that need not cover the text) keep the stretches between their
// matches as pieces too, as llama.cpp and HF's Split(behavior=Isolated) do.
//
// Pre-tokenizers implemented (llama.cpp names; several names share one):
//   gpt2     : 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   smollm   : \p{N} (every digit a piece of its own), then gpt2 — StarCoder's
//              Sequence[Digits(individual_digits=true), ByteLevel]
//   llama3   : (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
//              | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+  (and ignore_merges)
//   qwen2    : as llama3 with \p{N} instead of \p{N}{1,3}
//   falcon   : [\p{P}\$\+<=>\^~\|`]+, then gpt2, then [0-9][0-9][0-9]
//   default  : [\p{P}\$\+<=>\^~\|]+, then gpt2, then \p{N}+, then [0-9][0-9][0-9]

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "llama/tokenizer/unicode.hpp"
#include "qaq/error.hpp"

namespace qaq::llama::detail {

enum class pre_stage : std::uint8_t {
    gpt2,           // the GPT-2 pattern above (covers the text)
    llama3,         // the LLaMA-3 pattern (covers the text)
    qwen2,          // the LLaMA-3 pattern with single digits (covers the text)
    each_number,    // search \p{N}
    number_run,     // search \p{N}+
    ascii_digits3,  // search [0-9][0-9][0-9]
    punctuation,    // search [\p{P}\$\+<=>\^~\|]+
    punctuation_backtick,  // search [\p{P}\$\+<=>\^~\|`]+ (falcon)
};

struct pre_tokenizer_spec {
    std::string name;               // the canonical name (first of its group)
    std::vector<pre_stage> stages;  // applied in order
    bool ignore_merges = false;     // a piece that is a token as a whole is not merged (llama3)
    bool default_add_bos = false;   // llama.cpp's add_bos when the GGUF does not say
};

/// The pre-tokenizer llama.cpp uses for `name` (tokenizer.ggml.pre; empty
/// means "default"). Throws qaq::error for a name it does not implement.
inline pre_tokenizer_spec pre_tokenizer_for(std::string_view name) {
    const auto in = [&](std::initializer_list<std::string_view> names) {
        for (auto n : names) {
            if (n == name) return true;
        }
        return false;
    };
    using s = pre_stage;
    if (name.empty() || name == "default") {
        return {"default", {s::punctuation, s::gpt2, s::number_run, s::ascii_digits3}, false, false};
    }
    if (in({"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v1-en", "jina-v2-es", "jina-v2-de",
            "jina-v2-code", "roberta-bpe", "mpt", "olmo", "jais"})) {
        return {"gpt-2", {s::gpt2}, false, false};
    }
    if (in({"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"})) {
        return {"smollm", {s::each_number, s::gpt2}, false, false};
    }
    if (in({"llama3", "llama-v3", "llama-bpe", "falcon3"})) return {"llama3", {s::llama3}, true, true};
    if (in({"dbrx", "smaug-bpe"})) return {"dbrx", {s::llama3}, false, false};
    if (in({"qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"})) return {"qwen2", {s::qwen2}, false, false};
    if (name == "falcon") return {"falcon", {s::punctuation_backtick, s::gpt2, s::ascii_digits3}, false, false};
    QAQ_CHECK(false, "unsupported pre-tokenizer '", std::string(name),
              "' (tokenizer.ggml.pre); supported: default, gpt-2, smollm, starcoder, llama3, qwen2, falcon, "
              "and their llama.cpp aliases");
    return {};
}

/// One unit of text: a code point (or an invalid byte) and its class.
struct text_unit {
    std::uint32_t cp;
    std::uint8_t cls;
};

/// A half-open range of units.
using piece = std::pair<std::uint32_t, std::uint32_t>;

/// Decodes `text` into units; offsets[i] is the byte offset of unit i and
/// offsets[units.size()] == text.size().
inline void decode_units(std::string_view text, std::vector<text_unit>& units, std::vector<std::uint32_t>& offsets) {
    units.clear();
    offsets.clear();
    units.reserve(text.size());
    offsets.reserve(text.size() + 1);
    std::size_t length = 0;
    for (std::size_t pos = 0; pos < text.size(); pos += length) {
        const std::uint32_t cp = decode_utf8(text, pos, length);
        units.push_back({cp, class_of(cp)});
        offsets.push_back(static_cast<std::uint32_t>(pos));
    }
    offsets.push_back(static_cast<std::uint32_t>(text.size()));
}

namespace pre {

inline bool is_letter(const text_unit& u) { return u.cls == cls_letter; }
inline bool is_number(const text_unit& u) { return u.cls == cls_number; }
inline bool is_space(const text_unit& u) { return u.cls == cls_whitespace; }
// [^\s\p{L}\p{N}]
inline bool is_other(const text_unit& u) { return (u.cls & (cls_letter | cls_number | cls_whitespace)) == 0; }
inline bool is_cr_lf(const text_unit& u) { return u.cp == '\r' || u.cp == '\n'; }

/// 's|'t|'re|'ve|'m|'ll|'d at pos: its length, or 0. `fold` makes it case-insensitive (ASCII).
inline std::uint32_t contraction(const text_unit* u, std::uint32_t pos, std::uint32_t end, bool fold) {
    if (u[pos].cp != '\'' || pos + 1 >= end) return 0;
    const auto lower = [&](std::uint32_t cp) { return (fold && cp >= 'A' && cp <= 'Z') ? cp + 32 : cp; };
    const std::uint32_t a = lower(u[pos + 1].cp);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (pos + 2 >= end) return 0;
    const std::uint32_t b = lower(u[pos + 2].cp);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
inline void split_gpt2(const text_unit* u, std::uint32_t begin, std::uint32_t end, std::vector<piece>& out) {
    std::uint32_t pos = begin;
    while (pos < end) {
        const std::uint32_t start = pos;
        if (const std::uint32_t n = contraction(u, pos, end, false)) {
            out.emplace_back(start, pos + n);
            pos += n;
            continue;
        }
        // " ?X+" looks at the unit after an optional leading space.
        const bool lead_space = u[pos].cp == ' ' && pos + 1 < end;
        const text_unit& head = u[pos + (lead_space ? 1 : 0)];
        bool (*run)(const text_unit&) = nullptr;
        if (is_letter(head)) {
            run = is_letter;
        } else if (is_number(head)) {
            run = is_number;
        } else if (is_other(head)) {
            run = is_other;
        }
        if (run != nullptr) {
            pos += lead_space ? 2 : 1;
            while (pos < end && run(u[pos])) ++pos;
            out.emplace_back(start, pos);
            continue;
        }
        // Whitespace: \s+(?!\S) leaves the last space of a run followed by a
        // non-space to the next match; \s+ takes a lone one.
        std::uint32_t k = 0;
        while (pos + k < end && is_space(u[pos + k])) ++k;
        pos += (k > 1 && pos + k < end) ? k - 1 : k;
        out.emplace_back(start, pos);
    }
}

/// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
inline void split_llama3(const text_unit* u, std::uint32_t begin, std::uint32_t end, std::uint32_t max_digits,
                         std::vector<piece>& out) {
    std::uint32_t pos = begin;
    while (pos < end) {
        const std::uint32_t start = pos;
        if (const std::uint32_t n = contraction(u, pos, end, true)) {
            out.emplace_back(start, pos + n);
            pos += n;
            continue;
        }
        const text_unit& c = u[pos];
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if (!is_cr_lf(c) && !is_number(c) && (is_letter(c) || (pos + 1 < end && is_letter(u[pos + 1])))) {
            ++pos;
            while (pos < end && is_letter(u[pos])) ++pos;
            out.emplace_back(start, pos);
            continue;
        }
        // \p{N}{1,D}
        if (is_number(c)) {
            while (pos < end && pos - start < max_digits && is_number(u[pos])) ++pos;
            out.emplace_back(start, pos);
            continue;
        }
        // " ?[^\s\p{L}\p{N}]+[\r\n]*"
        const bool lead_space = c.cp == ' ' && pos + 1 < end;
        if (is_other(u[pos + (lead_space ? 1 : 0)])) {
            pos += lead_space ? 2 : 1;
            while (pos < end && is_other(u[pos])) ++pos;
            while (pos < end && is_cr_lf(u[pos])) ++pos;
            out.emplace_back(start, pos);
            continue;
        }
        // \s*[\r\n]+ | \s+(?!\S) | \s+
        std::uint32_t k = 0, last_cr_lf = 0;
        while (pos + k < end && is_space(u[pos + k])) {
            if (is_cr_lf(u[pos + k])) last_cr_lf = k + 1;
            ++k;
        }
        if (last_cr_lf > 0) {
            pos += last_cr_lf;
        } else {
            pos += (k > 1 && pos + k < end) ? k - 1 : k;
        }
        out.emplace_back(start, pos);
    }
}

/// Splits [begin, end) at the matches of a search stage; `match` returns the
/// length of the match at a position (0: none).
template <class Match>
void split_search(std::uint32_t begin, std::uint32_t end, Match match, std::vector<piece>& out) {
    std::uint32_t gap = begin;
    for (std::uint32_t pos = begin; pos < end;) {
        const std::uint32_t n = match(pos);
        if (n == 0) {
            ++pos;
            continue;
        }
        if (gap < pos) out.emplace_back(gap, pos);
        out.emplace_back(pos, pos + n);
        pos += n;
        gap = pos;
    }
    if (gap < end) out.emplace_back(gap, end);
}

inline void apply_stage(pre_stage stage, const text_unit* u, std::uint32_t begin, std::uint32_t end,
                        std::vector<piece>& out) {
    switch (stage) {
        case pre_stage::gpt2: split_gpt2(u, begin, end, out); return;
        case pre_stage::llama3: split_llama3(u, begin, end, 3, out); return;
        case pre_stage::qwen2: split_llama3(u, begin, end, 1, out); return;
        case pre_stage::each_number:
            // HF's Digits tests Rust's char::is_numeric, whose Unicode (17)
            // is newer than the tables' (16, HF's regex engine): it also
            // isolates the 13 numbers Unicode 17 added.
            split_search(begin, end, [&](std::uint32_t p) {
                const std::uint32_t cp = u[p].cp;
                const bool unicode17 = (cp >= 0x11DE0 && cp <= 0x11DE9) || (cp >= 0x16FF4 && cp <= 0x16FF6);
                return (is_number(u[p]) || unicode17) ? 1u : 0u;
            }, out);
            return;
        case pre_stage::number_run:
            split_search(begin, end, [&](std::uint32_t p) {
                std::uint32_t q = p;
                while (q < end && is_number(u[q])) ++q;
                return q - p;
            }, out);
            return;
        case pre_stage::ascii_digits3:
            split_search(begin, end, [&](std::uint32_t p) {
                const auto digit = [&](std::uint32_t i) { return u[i].cp >= '0' && u[i].cp <= '9'; };
                return (p + 3 <= end && digit(p) && digit(p + 1) && digit(p + 2)) ? 3u : 0u;
            }, out);
            return;
        case pre_stage::punctuation:
        case pre_stage::punctuation_backtick:
            split_search(begin, end, [&](std::uint32_t p) {
                const bool backtick = stage == pre_stage::punctuation_backtick;
                const auto punct = [&](std::uint32_t i) {
                    const std::uint32_t cp = u[i].cp;
                    return u[i].cls == cls_punctuation || cp == '$' || cp == '+' || cp == '<' || cp == '=' ||
                           cp == '>' || cp == '^' || cp == '~' || cp == '|' || (backtick && cp == '`');
                };
                std::uint32_t q = p;
                while (q < end && punct(q)) ++q;
                return q - p;
            }, out);
            return;
    }
}

}  // namespace pre

/// Splits `units` into pieces by the stages; `scratch` is reused storage.
inline void pre_tokenize(const std::vector<pre_stage>& stages, const std::vector<text_unit>& units,
                         std::vector<piece>& pieces, std::vector<piece>& scratch) {
    pieces.clear();
    if (units.empty()) return;
    pieces.emplace_back(0u, static_cast<std::uint32_t>(units.size()));
    for (const pre_stage stage : stages) {
        scratch.clear();
        for (const piece& p : pieces) pre::apply_stage(stage, units.data(), p.first, p.second, scratch);
        pieces.swap(scratch);
    }
}

/// The pieces of `text` as strings (for tests and tools).
inline std::vector<std::string> pre_tokenize(std::string_view pre_name, std::string_view text) {
    const pre_tokenizer_spec spec = pre_tokenizer_for(pre_name);
    std::vector<text_unit> units;
    std::vector<std::uint32_t> offsets;
    std::vector<piece> pieces, scratch;
    decode_units(text, units, offsets);
    pre_tokenize(spec.stages, units, pieces, scratch);
    std::vector<std::string> out;
    out.reserve(pieces.size());
    for (const piece& p : pieces) {
        out.emplace_back(text.substr(offsets[p.first], offsets[p.second] - offsets[p.first]));
    }
    return out;
}

}  // namespace qaq::llama::detail
