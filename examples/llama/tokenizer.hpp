#pragma once
// The tokenizer of qaq-llama, built from a GGUF file's tokenizer metadata.
//
//   qaq::llama::tokenizer tok(qaq::llama::vocabulary_from_metadata(meta));
//   std::vector<std::int32_t> ids = tok.encode("<|im_start|>user\nHi<|im_end|>");
//   std::string text = tok.decode(ids);
//
// Two vocabulary kinds (tokenizer.ggml.model):
//   "gpt2"  byte-level BPE (GPT-2, SmolLM2, LLaMA-3, Qwen2, ...): text is split
//           by the pre-tokenizer regexes of tokenizer.ggml.pre (see
//           tokenizer/pre_tokenizer.hpp), each piece's bytes map to GPT-2's
//           printable code points and merge by rank. Any byte sequence, valid
//           UTF-8 or not, round-trips when the vocabulary has all 256 byte
//           tokens. (SmolLM2's lacks 21, all control characters or bytes that
//           valid UTF-8 never or almost never holds: such a byte encodes as
//           the unknown token, or throws when there is none.)
//   "llama" SentencePiece BPE (LLaMA-2 GGUFs): spaces become U+2581, with
//           add_space_prefix a space is prefixed to the text and after every
//           special token (as llama.cpp does), characters merge by token score,
//           and what does not form a token falls back to <0xNN> byte tokens.
//           Input U+2581 decodes as a space, as in SentencePiece.
//
// Special tokens: before pre-tokenization the text is cut at literal
// occurrences of control (type 3) and unknown (type 2) tokens when
// parse_special, and of user-defined (type 4) tokens always (as llama.cpp and
// HF tokenizers do). At each position the longest special token wins
// (leftmost-longest, HF's rule).
//
// decode() renders special tokens as their text (render_special = false drops
// control and unknown tokens); a BOS at the front is dropped when add_bos,
// since encode() put it there, so decode(encode(s)) == s.
//
// Header-only, standard library only; errors are qaq::error.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "llama/tokenizer/bpe.hpp"
#include "llama/tokenizer/pre_tokenizer.hpp"
#include "llama/tokenizer/unicode.hpp"
#include "qaq/error.hpp"

namespace qaq::llama {

/// Token types of tokenizer.ggml.token_type.
enum token_type : std::int32_t {
    token_type_undefined = 0,
    token_type_normal = 1,
    token_type_unknown = 2,
    token_type_control = 3,
    token_type_user_defined = 4,
    token_type_unused = 5,
    token_type_byte = 6,
};

/// What GGUF metadata holds about the tokenizer.
struct tokenizer_vocabulary {
    std::string model;                      // "gpt2" (byte-level BPE) or "llama" (SentencePiece BPE)
    std::string pre;                        // pre-tokenizer name, e.g. "smollm", "llama3", "default", "gpt-2"
    std::vector<std::string> tokens;        // tokenizer.ggml.tokens
    std::vector<float> scores;              // tokenizer.ggml.scores (SentencePiece; may be empty)
    std::vector<std::int32_t> token_types;  // tokenizer.ggml.token_type (may be empty: all normal)
    std::vector<std::string> merges;        // tokenizer.ggml.merges ("a b"), gpt2 only
    std::int32_t bos = -1, eos = -1, unk = -1, pad = -1;
    bool add_bos = false, add_space_prefix = false;
};

/// GGUF metadata keys of the tokenizer, for the GGUF reader.
namespace gguf_key {
inline constexpr std::string_view model = "tokenizer.ggml.model";
inline constexpr std::string_view pre = "tokenizer.ggml.pre";
inline constexpr std::string_view tokens = "tokenizer.ggml.tokens";
inline constexpr std::string_view scores = "tokenizer.ggml.scores";
inline constexpr std::string_view token_type = "tokenizer.ggml.token_type";
inline constexpr std::string_view merges = "tokenizer.ggml.merges";
inline constexpr std::string_view bos_id = "tokenizer.ggml.bos_token_id";
inline constexpr std::string_view eos_id = "tokenizer.ggml.eos_token_id";
inline constexpr std::string_view unk_id = "tokenizer.ggml.unknown_token_id";
inline constexpr std::string_view pad_id = "tokenizer.ggml.padding_token_id";
inline constexpr std::string_view add_bos = "tokenizer.ggml.add_bos_token";
inline constexpr std::string_view add_space_prefix = "tokenizer.ggml.add_space_prefix";
}  // namespace gguf_key

/// The tokenizer keys as a GGUF reader finds them; a key the file lacks
/// stays empty / nullopt.
struct tokenizer_metadata {
    std::string model;                                    // tokenizer.ggml.model (required)
    std::string pre;                                      // tokenizer.ggml.pre ("" -> "default")
    std::vector<std::string> tokens;                      // tokenizer.ggml.tokens (required)
    std::vector<float> scores;                            // tokenizer.ggml.scores
    std::vector<std::int32_t> token_types;                // tokenizer.ggml.token_type
    std::vector<std::string> merges;                      // tokenizer.ggml.merges
    std::optional<std::int64_t> bos, eos, unk, pad;       // tokenizer.ggml.*_token_id
    std::optional<bool> add_bos, add_space_prefix;        // tokenizer.ggml.add_bos_token, .add_space_prefix
};

/// Fills what the metadata leaves out with llama.cpp's defaults:
///   "llama": bos 1, eos 2, unk 0, add_bos true, add_space_prefix true;
///   "gpt2":  no special ids, add_bos only for the llama3 pre-tokenizers,
///            add_space_prefix false.
/// A special id outside the vocabulary is replaced by that default, as
/// llama.cpp does (it warns; the library never prints). Everything else is
/// checked by the tokenizer's constructor.
inline tokenizer_vocabulary vocabulary_from_metadata(tokenizer_metadata m) {
    tokenizer_vocabulary v;
    v.model = std::move(m.model);
    v.pre = std::move(m.pre);
    v.tokens = std::move(m.tokens);
    v.scores = std::move(m.scores);
    v.token_types = std::move(m.token_types);
    v.merges = std::move(m.merges);
    const bool spm = v.model == "llama";
    std::int32_t bos = spm ? 1 : -1, eos = spm ? 2 : -1, unk = spm ? 0 : -1, pad = -1;
    bool add_bos = spm, add_space_prefix = spm;
    if (v.model == "gpt2") {
        try {
            add_bos = detail::pre_tokenizer_for(v.pre).default_add_bos;
        } catch (const qaq::error&) {
            // an unknown pre-tokenizer is reported by the constructor
        }
    }
    const auto n = static_cast<std::int64_t>(v.tokens.size());
    const auto pick = [n](const std::optional<std::int64_t>& id, std::int32_t fallback) {
        if (!id) return fallback;
        if (*id < 0 || *id >= n) return (fallback < n) ? fallback : std::int32_t{-1};
        return static_cast<std::int32_t>(*id);
    };
    v.bos = pick(m.bos, bos);
    v.eos = pick(m.eos, eos);
    v.unk = pick(m.unk, unk);
    v.pad = pick(m.pad, pad);
    v.add_bos = m.add_bos.value_or(add_bos);
    v.add_space_prefix = m.add_space_prefix.value_or(add_space_prefix);
    return v;
}

class tokenizer {
public:
    /// Validates the vocabulary: known model kind (and pre-tokenizer for
    /// gpt2), non-empty tokens, scores/types of the tokens' length, special
    /// ids in range, merges of known tokens whose concatenation is a token.
    explicit tokenizer(tokenizer_vocabulary v) : v_(std::move(v)) {
        QAQ_CHECK(v_.model == "gpt2" || v_.model == "llama", "unsupported tokenizer model '", v_.model,
                  "' (tokenizer.ggml.model); expected \"gpt2\" (byte-level BPE) or \"llama\" (SentencePiece BPE)");
        byte_level_ = v_.model == "gpt2";
        QAQ_CHECK(!v_.tokens.empty(), "tokenizer vocabulary is empty (tokenizer.ggml.tokens has no tokens)");
        QAQ_CHECK(v_.tokens.size() <= 0x7FFFFFFFu, "tokenizer vocabulary has ", v_.tokens.size(),
                  " tokens, more than an int32 id can name");
        const std::size_t n = v_.tokens.size();
        QAQ_CHECK(v_.scores.empty() || v_.scores.size() == n, "tokenizer.ggml.scores has ", v_.scores.size(),
                  " entries for ", n, " tokens");
        QAQ_CHECK(v_.token_types.empty() || v_.token_types.size() == n, "tokenizer.ggml.token_type has ",
                  v_.token_types.size(), " entries for ", n, " tokens");
        const auto check_id = [n](std::int32_t id, const char* what) {
            QAQ_CHECK(id >= -1 && (id < 0 || static_cast<std::size_t>(id) < n), "tokenizer ", what, " id ", id,
                      " is out of range for a vocabulary of ", n, " tokens");
        };
        check_id(v_.bos, "bos");
        check_id(v_.eos, "eos");
        check_id(v_.unk, "unk");
        check_id(v_.pad, "pad");
        QAQ_CHECK(!v_.add_bos || v_.bos >= 0, "tokenizer adds BOS (add_bos_token) but has no bos token id");

        types_.resize(n, token_type_normal);
        for (std::size_t id = 0; id < n; ++id) {
            if (!v_.token_types.empty()) {
                types_[id] = v_.token_types[id];
            } else if (!byte_level_ && byte_token_value(v_.tokens[id]) >= 0) {
                types_[id] = token_type_byte;
            }
        }
        index_.build(v_.tokens);

        if (byte_level_) {
            const detail::pre_tokenizer_spec spec = detail::pre_tokenizer_for(v_.pre);
            stages_ = spec.stages;
            ignore_merges_ = spec.ignore_merges;
            const auto& map = detail::byte_to_code_point();
            for (std::size_t b = 0; b < 256; ++b) {
                std::string text;
                detail::append_utf8(text, map[b]);
                byte_tokens_[b] = index_.find(text, v_.tokens);
            }
            build_merges();
        } else {
            words_are_independent_ = words_independent();
            for (std::size_t b = 0; b < 256; ++b) {
                char name[8];
                std::snprintf(name, sizeof name, "<0x%02X>", static_cast<unsigned>(b));
                std::int32_t id = index_.find(name, v_.tokens);
                if (id < 0) id = index_.find(std::string(1, static_cast<char>(b)), v_.tokens);
                byte_tokens_[b] = id;
            }
        }

        // Special tokens, by first byte, longest first.
        for (std::size_t id = 0; id < n; ++id) {
            const std::int32_t t = types_[id];
            if ((t == token_type_control || t == token_type_unknown || t == token_type_user_defined) &&
                !v_.tokens[id].empty()) {
                specials_by_byte_[static_cast<unsigned char>(v_.tokens[id][0])].push_back(
                    static_cast<std::int32_t>(id));
            }
        }
        for (auto& list : specials_by_byte_) {
            std::stable_sort(list.begin(), list.end(), [&](std::int32_t a, std::int32_t b) {
                return v_.tokens[static_cast<std::size_t>(a)].size() > v_.tokens[static_cast<std::size_t>(b)].size();
            });
        }

        pieces_.resize(n);
        for (std::size_t id = 0; id < n; ++id) pieces_[id] = make_piece(static_cast<std::int32_t>(id));
    }

    /// Token ids of `text` (BOS first when add_bos). Special tokens in the
    /// text become their ids when parse_special (user-defined ones always).
    std::vector<std::int32_t> encode(std::string_view text, bool parse_special = true) const {
        QAQ_CHECK(text.size() < 0xFFFFFFFFu, "tokenizer: text of ", text.size(),
                  " bytes is longer than one encode() call handles (4 GiB)");
        std::vector<std::int32_t> out;
        out.reserve(text.size() / 3 + 2);
        if (v_.add_bos) out.push_back(v_.bos);
        encode_state state;
        std::size_t fragment = 0;
        for (std::size_t pos = 0; pos < text.size();) {
            const std::int32_t special = match_special(text, pos, parse_special);
            if (special < 0) {
                ++pos;
                continue;
            }
            if (pos > fragment) encode_fragment(text.substr(fragment, pos - fragment), state, out);
            out.push_back(special);
            pos += v_.tokens[static_cast<std::size_t>(special)].size();
            fragment = pos;
        }
        if (fragment < text.size()) encode_fragment(text.substr(fragment), state, out);
        return out;
    }

    /// The text of `ids`; throws for an id out of range.
    std::string decode(const std::vector<std::int32_t>& ids, bool render_special = true) const {
        std::string out;
        std::size_t first = 0;
        if (v_.add_bos && !ids.empty() && ids[0] == v_.bos) first = 1;
        bool strip_space = !byte_level_ && v_.add_space_prefix;  // the space encode() prefixed
        for (std::size_t i = first; i < ids.size(); ++i) {
            const std::int32_t id = ids[i];
            check_token(id);
            const std::int32_t t = types_[static_cast<std::size_t>(id)];
            if (t == token_type_control || t == token_type_unknown || t == token_type_user_defined) {
                if (render_special || t == token_type_user_defined) out += pieces_[static_cast<std::size_t>(id)];
                strip_space = !byte_level_ && v_.add_space_prefix;
                continue;
            }
            const std::string& piece = pieces_[static_cast<std::size_t>(id)];
            if (strip_space && !piece.empty()) {
                out.append(piece, piece[0] == ' ' ? 1 : 0, std::string::npos);
                strip_space = false;
            } else {
                out += piece;
            }
        }
        return out;
    }

    /// The bytes one token stands for (special tokens: their text). Pieces of
    /// consecutive tokens concatenate to the decoded text, except for the
    /// SentencePiece prefix space that decode() removes.
    std::string token_text(std::int32_t id) const {
        check_token(id);
        return pieces_[static_cast<std::size_t>(id)];
    }

    /// The vocabulary's string of a token (byte-level form, U+2581, <0xNN>).
    const std::string& token_string(std::int32_t id) const {
        check_token(id);
        return v_.tokens[static_cast<std::size_t>(id)];
    }

    /// The id of a vocabulary string, or -1.
    std::int32_t find_token(std::string_view text) const { return index_.find(text, v_.tokens); }

    /// Whether the token is a control or unknown token (rendered only as
    /// markup, never as text).
    bool is_special(std::int32_t id) const {
        check_token(id);
        const std::int32_t t = types_[static_cast<std::size_t>(id)];
        return t == token_type_control || t == token_type_unknown;
    }

    std::int32_t bos() const { return v_.bos; }
    std::int32_t eos() const { return v_.eos; }
    std::int32_t unk() const { return v_.unk; }
    std::int32_t pad() const { return v_.pad; }
    std::size_t size() const { return v_.tokens.size(); }
    const tokenizer_vocabulary& vocabulary() const { return v_; }

private:
    struct encode_state {
        std::vector<detail::text_unit> units;
        std::vector<std::uint32_t> offsets;
        std::vector<detail::piece> pieces, scratch;
        detail::bpe_workspace ws;
        std::string buffer;
        // word -> [begin, end) in cached_ids; keys view the caller's text
        std::unordered_map<std::string_view, std::pair<std::uint32_t, std::uint32_t>> cache;
        std::vector<std::int32_t> cached_ids;
    };

    void check_token(std::int32_t id) const {
        QAQ_CHECK(id >= 0 && static_cast<std::size_t>(id) < v_.tokens.size(), "token id ", id,
                  " is out of range for a vocabulary of ", v_.tokens.size(), " tokens");
    }

    /// 0xNN for a "<0xNN>" token, else -1.
    static int byte_token_value(const std::string& text) {
        if (text.size() != 6 || text[0] != '<' || text[1] != '0' || text[2] != 'x' || text[5] != '>') return -1;
        const auto hex = [](char c) {
            if (c >= '0' && c <= '9') return c - '0';
            if (c >= 'A' && c <= 'F') return c - 'A' + 10;
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;
            return -1;
        };
        const int hi = hex(text[3]), lo = hex(text[4]);
        return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
    }

    void build_merges() {
        merges_.reserve(v_.merges.size());
        std::string joined;
        for (std::size_t rank = 0; rank < v_.merges.size(); ++rank) {
            const std::string& merge = v_.merges[rank];
            // Byte-level tokens hold no space, so the separator is the one
            // space; a token with spaces still works if one split fits.
            std::int32_t left = -1, right = -1;
            for (std::size_t cut = merge.find(' '); cut != std::string::npos; cut = merge.find(' ', cut + 1)) {
                left = index_.find(std::string_view(merge).substr(0, cut), v_.tokens);
                right = index_.find(std::string_view(merge).substr(cut + 1), v_.tokens);
                if (left >= 0 && right >= 0) {
                    joined.assign(merge, 0, cut);
                    joined.append(merge, cut + 1, std::string::npos);
                    break;
                }
            }
            QAQ_CHECK(left >= 0 && right >= 0, "tokenizer merge ", rank, " '", merge,
                      "' is not two known tokens separated by a space");
            const std::int32_t merged = index_.find(joined, v_.tokens);
            QAQ_CHECK(merged >= 0, "tokenizer merge ", rank, " '", merge, "' makes '", joined,
                      "', which is not a token of the vocabulary");
            merges_.insert(left, right, static_cast<std::int32_t>(rank), merged);
        }
    }

    std::string make_piece(std::int32_t id) const {
        const std::string& text = v_.tokens[static_cast<std::size_t>(id)];
        const std::int32_t t = types_[static_cast<std::size_t>(id)];
        if (t == token_type_control || t == token_type_unknown || t == token_type_user_defined) return text;
        if (byte_level_) {
            // Every code point stands for one byte; one that does not is kept as is.
            std::string out;
            std::size_t length = 0;
            for (std::size_t pos = 0; pos < text.size(); pos += length) {
                const std::uint32_t cp = detail::decode_utf8(text, pos, length);
                const int byte = cp == detail::invalid_code_point ? -1 : detail::code_point_to_byte(cp);
                if (byte >= 0) {
                    out.push_back(static_cast<char>(byte));
                } else {
                    out.append(text, pos, length);
                }
            }
            return out;
        }
        if (t == token_type_byte) {
            const int byte = byte_token_value(text);
            if (byte >= 0) return std::string(1, static_cast<char>(byte));
        }
        std::string out;
        for (std::size_t pos = 0; pos < text.size();) {
            if (text.compare(pos, 3, "\xE2\x96\x81") == 0) {
                out.push_back(' ');
                pos += 3;
            } else {
                out.push_back(text[pos++]);
            }
        }
        return out;
    }

    /// The special token starting at text[pos] (longest), or -1.
    std::int32_t match_special(std::string_view text, std::size_t pos, bool parse_special) const {
        const auto& list = specials_by_byte_[static_cast<unsigned char>(text[pos])];
        for (const std::int32_t id : list) {
            if (!parse_special && types_[static_cast<std::size_t>(id)] != token_type_user_defined) continue;
            const std::string& s = v_.tokens[static_cast<std::size_t>(id)];
            if (text.compare(pos, s.size(), s) == 0) return id;
        }
        return -1;
    }

    std::int32_t byte_token(unsigned char byte) const {
        const std::int32_t id = byte_tokens_[byte];
        if (id >= 0) return id;
        QAQ_CHECK(v_.unk >= 0, "tokenizer vocabulary has no token for byte ", unsigned(byte),
                  " and no unknown token");
        return v_.unk;
    }

    void encode_fragment(std::string_view text, encode_state& st, std::vector<std::int32_t>& out) const {
        if (byte_level_) {
            encode_byte_level(text, st, out);
        } else {
            encode_sentencepiece(text, st, out);
        }
    }

    void encode_byte_level(std::string_view text, encode_state& st, std::vector<std::int32_t>& out) const {
        detail::decode_units(text, st.units, st.offsets);
        detail::pre_tokenize(stages_, st.units, st.pieces, st.scratch);
        if (st.cache.size() > 200000) {
            st.cache.clear();
            st.cached_ids.clear();
        }
        for (const detail::piece& p : st.pieces) {
            const std::string_view word = text.substr(st.offsets[p.first], st.offsets[p.second] - st.offsets[p.first]);
            const auto hit = st.cache.find(word);
            if (hit != st.cache.end()) {
                out.insert(out.end(), st.cached_ids.begin() + hit->second.first,
                           st.cached_ids.begin() + hit->second.second);
                continue;
            }
            const std::size_t before = out.size();
            encode_word(word, st, out);
            const auto begin = static_cast<std::uint32_t>(st.cached_ids.size());
            st.cached_ids.insert(st.cached_ids.end(), out.begin() + static_cast<std::ptrdiff_t>(before), out.end());
            st.cache.emplace(word, std::make_pair(begin, static_cast<std::uint32_t>(st.cached_ids.size())));
        }
    }

    void encode_word(std::string_view word, encode_state& st, std::vector<std::int32_t>& out) const {
        if (ignore_merges_) {
            st.buffer.clear();
            const auto& map = detail::byte_to_code_point();
            for (const char c : word) detail::append_utf8(st.buffer, map[static_cast<unsigned char>(c)]);
            const std::int32_t whole = index_.find(st.buffer, v_.tokens);
            if (whole >= 0) {
                out.push_back(whole);
                return;
            }
        }
        st.ws.symbols.clear();
        for (const char c : word) st.ws.symbols.push_back({byte_token(static_cast<unsigned char>(c)), 0, 0, 0, 0});
        detail::merge_byte_level(st.ws, merges_, out);
    }

    void encode_sentencepiece(std::string_view fragment, encode_state& st, std::vector<std::int32_t>& out) const {
        std::string& text = st.buffer;
        text.clear();
        // A fragment starts the text or follows a special token: llama.cpp
        // prefixes the space to both.
        if (v_.add_space_prefix) text += "\xE2\x96\x81";
        for (const char c : fragment) {
            if (c == ' ') {
                text += "\xE2\x96\x81";
            } else {
                text.push_back(c);
            }
        }
        const std::string_view view = text;
        const auto lookup = [&](std::uint32_t begin, std::uint32_t n) {
            return index_.find(view.substr(begin, n), v_.tokens);
        };
        const auto score = [&](std::int32_t id) {
            return v_.scores.empty() ? 0.0f : v_.scores[static_cast<std::size_t>(id)];
        };
        const auto emit_bytes = [&](std::uint32_t begin, std::uint32_t n) {
            for (std::uint32_t i = 0; i < n; ++i) out.push_back(byte_token(static_cast<unsigned char>(view[begin + i])));
        };
        // When no token holds U+2581 after another character, no merge
        // crosses the start of a word ("x|▁y"), and each word merges on its
        // own: the same result as one merge loop over the whole fragment, with
        // small queues.
        st.ws.symbols.clear();
        bool previous_space = false;
        std::size_t length = 0;
        for (std::size_t pos = 0; pos < view.size(); pos += length) {
            detail::decode_utf8(view, pos, length);
            const bool space = length == 3 && view.compare(pos, 3, "\xE2\x96\x81") == 0;
            if (space && !previous_space && words_are_independent_ && !st.ws.symbols.empty()) {
                detail::merge_sentencepiece(st.ws, lookup, score, emit_bytes, out);
                st.ws.symbols.clear();
            }
            previous_space = space;
            const std::int32_t id = index_.find(view.substr(pos, length), v_.tokens);
            st.ws.symbols.push_back(
                {id, 0, 0, static_cast<std::uint32_t>(pos), static_cast<std::uint32_t>(length)});
        }
        detail::merge_sentencepiece(st.ws, lookup, score, emit_bytes, out);
    }

    /// SentencePiece: whether no mergeable token holds U+2581 after another character.
    bool words_independent() const {
        for (std::size_t id = 0; id < v_.tokens.size(); ++id) {
            const std::int32_t t = types_[id];
            if (t != token_type_normal && t != token_type_unused && t != token_type_undefined) continue;
            const std::string& text = v_.tokens[id];
            for (std::size_t p = text.find("\xE2\x96\x81", 1); p != std::string::npos;
                 p = text.find("\xE2\x96\x81", p + 1)) {
                if (p < 3 || text.compare(p - 3, 3, "\xE2\x96\x81") != 0) return false;
            }
        }
        return true;
    }

    tokenizer_vocabulary v_;
    bool byte_level_ = true;
    bool ignore_merges_ = false;
    bool words_are_independent_ = false;  // SentencePiece: merge word by word
    std::vector<detail::pre_stage> stages_;
    std::vector<std::int32_t> types_;
    detail::token_index index_;
    detail::merge_table merges_;
    std::array<std::int32_t, 256> byte_tokens_{};
    std::array<std::vector<std::int32_t>, 256> specials_by_byte_{};
    std::vector<std::string> pieces_;
};

}  // namespace qaq::llama
