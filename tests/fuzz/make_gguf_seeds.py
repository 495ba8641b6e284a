#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_gguf (tests/fuzz/corpus/gguf/): small GGUF
files that reach every part of the reader and of what qaq-llama reads from it.

    python3 tests/fuzz/make_gguf_seeds.py            # rewrites the corpus

Standard library only; the layout follows ggml/docs/gguf.md (little-endian).
The committed tiny models (tests/data/llama/*.gguf, 64 and 110 KB) are too
large for quick fuzzing, so these are written from scratch:

  model_sentencepiece.gguf  a whole llama model: config keys, a SentencePiece
                            vocabulary, and tensors of types f32, f16, bf16,
                            q4_0, q4_1, q8_0
  tokenizer_gpt2.gguf       a byte-level BPE vocabulary (256 byte tokens,
                            merges, special tokens), no tensors
  every_type_v2.gguf        version 2, one metadata value of every type,
                            nested arrays, alignment 64, an empty tensor
  truncated_model.gguf      model_sentencepiece.gguf cut inside its data
"""

import os
import struct

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
          BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}
# ggml type ids, block elements and block bytes
GGML = {"f32": (0, 1, 4), "f16": (1, 1, 2), "q4_0": (2, 32, 18), "q4_1": (3, 32, 20),
        "q8_0": (8, 32, 34), "bf16": (30, 1, 2)}


def gguf_string(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == STR:
        return gguf_string(v)
    if t == ARR:
        element_type, items = v
        out = struct.pack("<IQ", element_type, len(items))
        for item in items:
            out += value(element_type, item)
        return out
    return struct.pack(SCALAR[t], v)


def gguf(metadata, tensors, version=3, alignment=32):
    """metadata: [(key, type, value)]; tensors: [(name, dims, ggml type name, bytes)]."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata))
    for key, t, v in metadata:
        out += gguf_string(key) + struct.pack("<I", t) + value(t, v)
    offset = 0
    blobs = []
    for name, dims, type_name, data in tensors:
        type_id, block, size = GGML[type_name]
        elements = 1
        for d in dims:
            elements *= d
        assert dims[0] % block == 0 and len(data) == elements // block * size, name
        out += gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", type_id, offset)
        blobs.append((offset, data))
        offset += (len(data) + alignment - 1) // alignment * alignment
    out += b"\0" * ((-len(out)) % alignment)
    data_start = len(out)
    for at, data in blobs:
        out += b"\0" * (data_start + at - len(out)) + data
    return out


def floats(values):
    return b"".join(struct.pack("<f", v) for v in values)


def halves(values):
    return b"".join(struct.pack("<e", v) for v in values)


def bf16(values):
    return b"".join(struct.pack("<f", v)[2:] for v in values)


def q4_0(blocks):
    return b"".join(struct.pack("<e", 0.5) + bytes((i * 7 + j) & 0xFF for j in range(16)) for i in range(blocks))


def q4_1(blocks):
    return b"".join(struct.pack("<ee", 0.25, -1.0) + bytes((i * 5 + j * 3) & 0xFF for j in range(16))
                    for i in range(blocks))


def q8_0(blocks):
    return b"".join(struct.pack("<e", 0.01) + bytes((i * 11 + j * 13) & 0xFF for j in range(32))
                    for i in range(blocks))


def model():
    vocab = ["<unk>", "<s>", "</s>", "\u2581", "\u2581a", "\u2581the", "a", "b", "c", "e", "h", "l", "o", "t",
             "\u2581he", "ll", "llo", "<0x0A>", "<0x20>", "<0xC3>"]
    n = len(vocab)
    meta = [
        ("general.architecture", STR, "llama"),
        ("general.name", STR, "seed"),
        ("llama.block_count", U32, 1),
        ("llama.context_length", U32, 64),
        ("llama.embedding_length", U32, 8),
        ("llama.feed_forward_length", U32, 32),
        ("llama.attention.head_count", U32, 2),
        ("llama.attention.head_count_kv", U32, 1),
        ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
        ("llama.rope.freq_base", F32, 10000.0),
        ("tokenizer.ggml.model", STR, "llama"),
        ("tokenizer.ggml.tokens", ARR, (STR, vocab)),
        ("tokenizer.ggml.scores", ARR, (F32, [float(-i) for i in range(n)])),
        ("tokenizer.ggml.token_type", ARR, (I32, [2, 3, 3] + [1] * (n - 6) + [6, 6, 6])),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
        ("tokenizer.ggml.unknown_token_id", U32, 0),
        ("tokenizer.ggml.add_bos_token", BOOL, 1),
    ]
    tensors = [
        ("token_embd.weight", [8, n], "f32", floats([((i * 37) % 17 - 8) / 8.0 for i in range(8 * n)])),
        ("output_norm.weight", [8], "f16", halves([1.0] * 8)),
        ("blk.0.attn_norm.weight", [8], "bf16", bf16([1.0] * 8)),
        ("blk.0.ffn_gate.weight", [32, 2], "q4_0", q4_0(2)),
        ("blk.0.ffn_up.weight", [32, 1], "q4_1", q4_1(1)),
        ("blk.0.ffn_down.weight", [32, 2], "q8_0", q8_0(2)),
    ]
    return gguf(meta, tensors)


def tokenizer_gpt2():
    # GPT-2's byte <-> code point map: printable bytes map to themselves, the rest to 256+.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    code = {}
    extra = 0
    for b in range(256):
        if b in printable:
            code[b] = chr(b)
        else:
            code[b] = chr(256 + extra)
            extra += 1
    tokens = [code[b] for b in range(256)]
    merges = ["\u0120 t", "h e", "\u0120t he", "l l", "\u0120 w", "o r", "\u0120w or", "l d", "\u0120wor ld"]
    for m in merges:
        joined = m.replace(" ", "")
        if joined not in tokens:
            tokens.append(joined)
    tokens += ["<|endoftext|>", "<|im_start|>"]
    types = [1] * (len(tokens) - 2) + [3, 3]
    meta = [
        ("tokenizer.ggml.model", STR, "gpt2"),
        ("tokenizer.ggml.pre", STR, "smollm"),
        ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
        ("tokenizer.ggml.token_type", ARR, (I32, types)),
        ("tokenizer.ggml.merges", ARR, (STR, merges)),
        ("tokenizer.ggml.bos_token_id", U32, len(tokens) - 2),
        ("tokenizer.ggml.eos_token_id", U32, len(tokens) - 2),
        ("tokenizer.ggml.add_bos_token", BOOL, 0),
    ]
    return gguf(meta, [])


def every_type_v2():
    meta = [
        ("general.alignment", U32, 64),
        ("u8", U8, 255), ("i8", I8, -128), ("u16", U16, 65535), ("i16", I16, -32768),
        ("u32", U32, 4294967295), ("i32", I32, -2147483648), ("f32", F32, 1.5),
        ("bool", BOOL, 1), ("string", STR, "caf\u00e9\n\"q\"\\"), ("empty string", STR, ""),
        ("u64 big", U64, 2**64 - 1), ("i64", I64, -(2**63)), ("f64", F64, -2.25),
        ("array of f64", ARR, (F64, [0.5, float("inf"), float("nan")])),
        ("array of arrays", ARR, (ARR, [(U8, [1, 2]), (U8, []), (U8, [3])])),
        ("empty array", ARR, (STR, [])),
        ("nested", ARR, (ARR, [(ARR, [(I16, [-1])])])),
    ]
    tensors = [("empty", [0, 3], "f32", b""), ("one", [4], "f32", floats([1, 2, 3, 4]))]
    return gguf(meta, tensors, version=2, alignment=64)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = os.path.join(here, "corpus", "gguf")
    os.makedirs(out_dir, exist_ok=True)
    m = model()
    files = {
        "model_sentencepiece.gguf": m,
        "tokenizer_gpt2.gguf": tokenizer_gpt2(),
        "every_type_v2.gguf": every_type_v2(),
        "truncated_model.gguf": m[: len(m) - 100],
    }
    for name, data in files.items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
