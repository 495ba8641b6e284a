#!/usr/bin/env python3
"""An independent LLaMA forward pass in numpy (float64), reading GGUF with the
`gguf` package (pip install gguf numpy). It is the oracle of qaq-llama's
forward pass (tests/unit/test_llama_forward.cpp).

Independent of the C++ code on purpose:
  * GGUF parsing and dequantization come from the `gguf` package;
  * attention uses the Hugging Face convention: the q/k weights are first
    un-permuted to the Hugging Face row order (convert_hf_to_gguf.py's
    LlamaModel.permute stores each head's rows as interleaved pairs), then
    rotated with rotate_half (pairs (i, i + D/2)). qaq-llama instead rotates
    adjacent pairs (2i, 2i + 1) of the stored rows, as llama.cpp does for
    LLAMA_ROPE_TYPE_NORM. Equal logits prove both conventions agree.
  * keys are returned in the file's (llama.cpp's) row order, so they compare
    with what qaq-llama stores in its cache.

Subcommands:
  make-fixtures DIR   writes the tiny random models and their reference
                      outputs into DIR (tests/data/llama): tiny-llama.gguf
                      (the real model's types: Q8_0 embeddings tied to the
                      output, Q4_1 matrices, F32 norms, a byte-level BPE
                      tokenizer), tiny-llama-mixed.gguf (F32, F16, BF16,
                      Q4_0, Q4_1 and Q8_0 matrices, an untied output,
                      alignment 64, no tokenizer) and, for each, the logits,
                      keys, values and attention of a fixed token sequence.
  logits MODEL IDS    prints the last position's top tokens for comma-
                      separated token ids (a quick check of a real model).
  check DIR           recomputes the fixtures' outputs and compares them with
                      the committed .npy files (used by ctest when numpy and
                      gguf are importable).
"""
import argparse
import os
import sys

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as QT
except ImportError:  # pragma: no cover
    print("llama_numpy.py needs the gguf package: pip install gguf", file=sys.stderr)
    raise

SEED = 20240307
TOKENS = [1, 42, 7, 200, 13, 13, 99, 3, 250, 64, 5, 128, 77, 31, 2, 180]


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

def field_value(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    v = f.contents()
    return v


def load(path):
    r = gguf.GGUFReader(path)
    arch = field_value(r, "general.architecture")
    assert arch == "llama", arch
    p = arch + "."
    cfg = dict(
        layers=int(field_value(r, p + "block_count")),
        embedding=int(field_value(r, p + "embedding_length")),
        ffn=int(field_value(r, p + "feed_forward_length")),
        heads=int(field_value(r, p + "attention.head_count")),
        eps=float(field_value(r, p + "attention.layer_norm_rms_epsilon")),
        theta=float(field_value(r, p + "rope.freq_base", 10000.0)),
    )
    cfg["kv_heads"] = int(field_value(r, p + "attention.head_count_kv", cfg["heads"]))
    cfg["head_dim"] = cfg["embedding"] // cfg["heads"]
    weights = {}
    for t in r.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # numpy order: rows first
        weights[t.name] = w.reshape(shape)
    return cfg, weights


def unpermute(w, n_head):
    """Inverse of convert_hf_to_gguf.py LlamaModel.permute: GGUF rows -> HF rows."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute(w, n_head):
    """convert_hf_to_gguf.py LlamaModel.permute: HF rows -> GGUF rows."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---------------------------------------------------------------------------
# Forward (Hugging Face LlamaForCausalLM semantics, float64)
# ---------------------------------------------------------------------------

def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def forward(cfg, W, tokens):
    T = len(tokens)
    D, H, Hk = cfg["head_dim"], cfg["heads"], cfg["kv_heads"]
    x = W["token_embd.weight"][tokens]  # [T, E]
    inv_freq = 1.0 / (cfg["theta"] ** (np.arange(0, D, 2, dtype=np.float64) / D))
    freqs = np.outer(np.arange(T, dtype=np.float64), inv_freq)  # [T, D/2]
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb), np.sin(emb)
    keys, values, attention = [], [], []
    for l in range(cfg["layers"]):
        b = f"blk.{l}."
        h = rms_norm(x, W[b + "attn_norm.weight"], cfg["eps"])
        wq = unpermute(W[b + "attn_q.weight"], H)
        wk = unpermute(W[b + "attn_k.weight"], Hk)
        q = (h @ wq.T).reshape(T, H, D).transpose(1, 0, 2)   # [H, T, D]
        k = (h @ wk.T).reshape(T, Hk, D).transpose(1, 0, 2)  # [Hk, T, D]
        v = (h @ W[b + "attn_v.weight"].T).reshape(T, Hk, D).transpose(1, 0, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # Keys in the file's row order (what llama.cpp and qaq-llama cache).
        k_file = permute(k.transpose(1, 0, 2).reshape(T, Hk * D).T, Hk).T.reshape(T, Hk, D).transpose(1, 0, 2)
        keys.append(k_file)
        values.append(v)
        group = H // Hk
        out = np.zeros((H, T, D))
        probs = np.zeros((H, T, T))
        mask = np.triu(np.full((T, T), -np.inf), k=1)
        for hq in range(H):
            s = q[hq] @ k[hq // group].T / np.sqrt(D) + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            probs[hq] = s
            out[hq] = s @ v[hq // group]
        attention.append(probs)
        x = x + out.transpose(1, 0, 2).reshape(T, H * D) @ W[b + "attn_output.weight"].T
        h = rms_norm(x, W[b + "ffn_norm.weight"], cfg["eps"])
        g = h @ W[b + "ffn_gate.weight"].T
        u = h @ W[b + "ffn_up.weight"].T
        x = x + ((g / (1.0 + np.exp(-g))) * u) @ W[b + "ffn_down.weight"].T
    x = rms_norm(x, W["output_norm.weight"], cfg["eps"])
    out_w = W["output.weight"] if "output.weight" in W else W["token_embd.weight"]
    logits = x @ out_w.T
    # [L, 1, H, T, D] and [L, 1, Hq, T, T], as qaq's kv_view / attention_view.
    return logits, np.stack(keys)[:, None], np.stack(values)[:, None], np.stack(attention)[:, None]


# ---------------------------------------------------------------------------
# Tiny random models
# ---------------------------------------------------------------------------

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tiny_vocabulary():
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    byte_map = bytes_to_unicode()
    tokens = specials + [byte_map[b] for b in range(256)]
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "r e", "a n"]
    for m in merges:
        a, b = m.split(" ")
        tokens.append(a + b)
    types = [3] * len(specials) + [1] * (len(tokens) - len(specials))
    return tokens, types, merges


def quantize(w, qtype):
    if qtype == QT.F32:
        return w.astype(np.float32)
    if qtype == QT.F16:
        return w.astype(np.float16)
    return gguf.quants.quantize(w.astype(np.float32), qtype)


def write_tiny(path, *, types, tied, with_tokenizer, vocab=None, alignment=None, seed=SEED):
    rng = np.random.default_rng(seed)
    layers, E, F, H, Hk = 2, 64, 96, 4, 2
    D = E // H
    tokens, token_types, merges = tiny_vocabulary()
    V = vocab or len(tokens)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("qaq tiny random llama")
    w.add_block_count(layers)
    w.add_context_length(128)
    w.add_embedding_length(E)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(Hk)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(D)
    w.add_vocab_size(V)
    if alignment:
        w.add_custom_alignment(alignment)
    if with_tokenizer:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        w.add_token_list(tokens)
        w.add_token_types(token_types)
        w.add_token_merges(merges)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(False)
        w.add_add_space_prefix(False)

    def mat(rows, cols, scale):
        return rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)

    def add(name, array, qtype):
        data = quantize(array, qtype)
        if qtype in (QT.F32, QT.F16):
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, data, raw_dtype=qtype)

    add("token_embd.weight", rng.standard_normal((V, E)), types["embd"])
    for l in range(layers):
        b = f"blk.{l}."
        add(b + "attn_norm.weight", 1.0 + 0.2 * rng.standard_normal(E), QT.F32)
        add(b + "attn_q.weight", mat(H * D, E, 2.0), types["q"])
        add(b + "attn_k.weight", mat(Hk * D, E, 2.0), types["k"])
        add(b + "attn_v.weight", mat(Hk * D, E, 1.0), types["v"])
        add(b + "attn_output.weight", mat(E, H * D, 1.0), types["o"])
        add(b + "ffn_norm.weight", 1.0 + 0.2 * rng.standard_normal(E), QT.F32)
        add(b + "ffn_gate.weight", mat(F, E, 1.5), types["gate"])
        add(b + "ffn_up.weight", mat(F, E, 1.5), types["up"])
        add(b + "ffn_down.weight", mat(E, F, 1.0), types["down"])
    add("output_norm.weight", 1.0 + 0.2 * rng.standard_normal(E), QT.F32)
    if not tied:
        add("output.weight", mat(V, E, 4.0), types["output"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


FIXTURES = {
    "tiny-llama": dict(
        types=dict(embd=QT.Q8_0, q=QT.Q4_1, k=QT.Q4_1, v=QT.Q4_1, o=QT.Q4_1, gate=QT.Q4_1, up=QT.Q4_1,
                   down=QT.Q4_1),
        tied=True, with_tokenizer=True),
    "tiny-llama-mixed": dict(
        types=dict(embd=QT.F16, q=QT.Q4_0, k=QT.BF16, v=QT.Q8_0, o=QT.F32, gate=QT.Q4_1, up=QT.F16,
                   down=QT.Q4_0, output=QT.Q8_0),
        tied=False, with_tokenizer=False, vocab=96, alignment=64, seed=SEED + 1),
}


def fixture_tokens(name):
    vocab = FIXTURES[name].get("vocab") or len(tiny_vocabulary()[0])
    return [t % vocab for t in TOKENS]


def outputs(path, name):
    cfg, W = load(path)
    logits, k, v, a = forward(cfg, W, fixture_tokens(name))
    return {"logits": logits, "keys": k, "values": v, "attention": a}


def make_fixtures(directory):
    os.makedirs(directory, exist_ok=True)
    for name, spec in FIXTURES.items():
        path = os.path.join(directory, name + ".gguf")
        write_tiny(path, **spec)
        for kind, array in outputs(path, name).items():
            np.save(os.path.join(directory, f"{name}.{kind}.npy"), array.astype(np.float32))
        np.save(os.path.join(directory, f"{name}.tokens.npy"), np.array(fixture_tokens(name), dtype=np.int32))
        print(f"{path}: {os.path.getsize(path)} bytes")


def check(directory):
    worst = 0.0
    for name in FIXTURES:
        for kind, array in outputs(os.path.join(directory, name + ".gguf"), name).items():
            ref = np.load(os.path.join(directory, f"{name}.{kind}.npy"))
            err = float(np.max(np.abs(ref - array)) / max(1.0, float(np.max(np.abs(array)))))
            worst = max(worst, err)
            print(f"{name}.{kind}: max relative error {err:.2e}")
    if worst > 1e-5:
        print("FAIL: the committed fixtures do not match the numpy forward pass", file=sys.stderr)
        return 1
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make-fixtures")
    p.add_argument("directory")
    p = sub.add_parser("check")
    p.add_argument("directory")
    p = sub.add_parser("logits")
    p.add_argument("model")
    p.add_argument("ids")
    p.add_argument("--top", type=int, default=5)
    args = ap.parse_args()
    if args.command == "make-fixtures":
        make_fixtures(args.directory)
        return 0
    if args.command == "check":
        return check(args.directory)
    cfg, W = load(args.model)
    ids = [int(t) for t in args.ids.split(",")]
    logits = forward(cfg, W, ids)[0][-1]
    for t in np.argsort(-logits)[: args.top]:
        print(int(t), float(logits[t]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
