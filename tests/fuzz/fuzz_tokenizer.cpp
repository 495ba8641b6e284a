// libFuzzer target: qaq::llama::tokenizer on arbitrary bytes.
//
// For a byte-level BPE vocabulary with all 256 byte tokens (smollm, gpt-2 and
// llama3 pre-tokenizers), decode(encode(input)) must equal the input, with and
// without special-token parsing. For a SentencePiece vocabulary with byte
// fallback the same holds for inputs without U+2581 (which SentencePiece
// decodes to a space). Every pre-tokenizer's pieces must tile the input. An
// exception is a failure too: these vocabularies encode every input.
//
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined \
//       -Iinclude -Iexamples tests/fuzz/fuzz_tokenizer.cpp -o fuzz_tokenizer
//   ./fuzz_tokenizer -max_total_time=30

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "llama/tokenizer.hpp"

namespace {

using qaq::llama::tokenizer;
using qaq::llama::tokenizer_vocabulary;

tokenizer_vocabulary byte_level(const char* pre) {
    tokenizer_vocabulary v;
    v.model = "gpt2";
    v.pre = pre;
    for (unsigned b = 0; b < 256; ++b) {
        std::string s;
        qaq::llama::detail::append_utf8(s, qaq::llama::detail::byte_to_code_point()[b]);
        v.tokens.push_back(s);
    }
    // Merges over common English and whitespace, chained so that ranks matter.
    v.merges = {"Ġ t", "h e", "i n", "Ġt he", "e r", "Ġ a", "o n", "r e", "Ġ Ġ", "ĠĠ ĠĠ", "Ġ s", "a t", "e n",
                "o r", "Ġ w", "l l", "Ġw or", "l d", "Ġwor ld", "h e", "1 2", "Ċ Ċ", "Ã ©", "' s", "in g", "Ġ in",
                "Ġin g", "Ġ 1", "Ġ1 2"};
    for (const auto& m : v.merges) {
        std::string joined = m;
        joined.erase(joined.find(' '), 1);
        bool known = false;
        for (const auto& t : v.tokens) known = known || t == joined;
        if (!known) v.tokens.push_back(joined);
    }
    v.token_types.assign(v.tokens.size(), qaq::llama::token_type_normal);
    for (const char* special : {"<|im_start|>", "<|im_end|>", "<|im", "<|endoftext|>"}) {
        v.tokens.push_back(special);
        v.token_types.push_back(qaq::llama::token_type_control);
    }
    v.tokens.push_back("<tool>");
    v.token_types.push_back(qaq::llama::token_type_user_defined);
    v.bos = static_cast<std::int32_t>(v.tokens.size()) - 5;
    v.eos = v.bos + 1;
    return v;
}

tokenizer_vocabulary sentencepiece(bool across_words) {
    tokenizer_vocabulary v;
    v.model = "llama";
    v.tokens = {"<unk>", "<s>", "</s>"};
    v.token_types = {qaq::llama::token_type_unknown, qaq::llama::token_type_control, qaq::llama::token_type_control};
    for (int b = 0; b < 256; ++b) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        v.tokens.push_back(name);
        v.token_types.push_back(qaq::llama::token_type_byte);
    }
    const char* normal[] = {"\xE2\x96\x81", "a", "b", "e", "t", "h", "ab", "\xE2\x96\x81" "a", "\xE2\x96\x81" "t",
                            "he", "\xE2\x96\x81" "the", "th", "\xE2\x96\x81" "th", "\xC3\xA9", "\xE2\x96\x81\xE2\x96\x81"};
    for (const char* t : normal) {
        v.tokens.push_back(t);
        v.token_types.push_back(qaq::llama::token_type_normal);
    }
    if (across_words) {  // a token across a word start: one merge loop per fragment
        v.tokens.push_back("e\xE2\x96\x81");
        v.token_types.push_back(qaq::llama::token_type_normal);
    }
    v.scores.assign(v.tokens.size(), 0.0f);
    for (std::size_t i = 0; i < v.scores.size(); ++i) v.scores[i] = -static_cast<float>(i % 7);
    v.bos = 1;
    v.eos = 2;
    v.unk = 0;
    v.add_bos = true;
    v.add_space_prefix = true;
    return v;
}

void check_round_trip(const tokenizer& tok, const std::string& text, bool parse_special) {
    const std::vector<std::int32_t> ids = tok.encode(text, parse_special);
    for (const std::int32_t id : ids) {
        if (id < 0 || static_cast<std::size_t>(id) >= tok.size()) std::abort();
    }
    if (tok.decode(ids) != text) {
        std::fprintf(stderr, "round trip failed (model %s, pre %s, parse_special %d) for %zu bytes\n",
                     tok.vocabulary().model.c_str(), tok.vocabulary().pre.c_str(), int(parse_special), text.size());
        std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const tokenizer smollm(byte_level("smollm"));
    static const tokenizer gpt2(byte_level("gpt-2"));
    static const tokenizer llama3(byte_level("llama3"));
    static const tokenizer spm(sentencepiece(false));
    static const tokenizer spm_across(sentencepiece(true));

    const std::string text(reinterpret_cast<const char*>(data), size);
    for (const tokenizer* tok : {&smollm, &gpt2, &llama3}) {
        check_round_trip(*tok, text, true);
        check_round_trip(*tok, text, false);
    }
    if (text.find("\xE2\x96\x81") == std::string::npos) {
        for (const tokenizer* tok : {&spm, &spm_across}) {
            check_round_trip(*tok, text, true);
            check_round_trip(*tok, text, false);
        }
    }
    // The pre-tokenizer pieces of every kind tile the input.
    for (const char* pre : {"smollm", "llama3", "qwen2", "default", "falcon"}) {
        std::string joined;
        for (const auto& piece : qaq::llama::detail::pre_tokenize(pre, text)) {
            if (piece.empty()) std::abort();
            joined += piece;
        }
        if (joined != text) std::abort();
    }
    return 0;
}
