#!/usr/bin/env bash
# Builds qaq-bench in Release (its own build tree, build-bench/), runs every
# benchmark three times and prints the Markdown tables of docs/benchmarks.md.
#
#   scripts/bench.sh                                   # the whole suite (~10 min on 2 cores)
#   scripts/bench.sh --benchmark_filter='^BM_attend'   # extra arguments go to qaq-bench
#   scripts/bench.sh --benchmark_min_time=0.1          # quicker, noisier
#
# The JSON goes to results/bench-<UTC date>.json (a second run on the same day
# gets a time suffix). Commit it with the figures it backs: the tables are
# regenerated from it with `python3 scripts/bench_table.py <file>`.
# Environment: QAQ_BENCH_BUILD_DIR (default build-bench), QAQ_BENCH_REVISION
# (see below), CMAKE_GENERATOR, CXX.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

build_dir="${QAQ_BENCH_BUILD_DIR:-build-bench}"

say() { printf '\n==> %s\n' "$*" >&2; }

say "Configuring $build_dir (Release, benchmarks only)"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
    -DQAQ_ENABLE_BENCHMARKS=ON -DQAQ_ENABLE_TESTS=OFF -DQAQ_ENABLE_EXAMPLES=OFF >&2

say "Building qaq-bench"
cmake --build "$build_dir" --target qaq-bench -j"$(nproc)" >&2

mkdir -p results
stamp="$(date -u +%Y-%m-%d)"
out="results/bench-$stamp.json"
[ -e "$out" ] && out="results/bench-$stamp-$(date -u +%H%M%S).json"

# Context Google Benchmark does not record itself: the CPU model and the
# source revision (',' and '=' separate --benchmark_context entries).
sanitize() { tr ',=' '  ' | tr -s ' ' | sed 's/^ //; s/ $//'; }
cpu_model="$( (lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n1) | sanitize)"
[ -n "$cpu_model" ] || cpu_model="$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -n1 | sanitize)"
# QAQ_BENCH_REVISION names the revision of a tree that is not a git checkout
# (e.g. one exported with `git archive`); it is recorded as given, not dirty.
if [ -n "${QAQ_BENCH_REVISION:-}" ]; then
    commit="$(printf '%s' "$QAQ_BENCH_REVISION" | sanitize)"
    dirty=no
else
    commit="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
    dirty=no
    if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no -- include benchmarks 2>/dev/null)" ]; then
        dirty=yes
    fi
fi

say "Running qaq-bench -> $out"
# Console output (on stderr) while it runs; the file gets the JSON, the same
# document --benchmark_format=json would print. stdout carries only the
# Markdown tables, so `scripts/bench.sh > tables.md` works.
"$build_dir/benchmarks/qaq-bench" \
    --benchmark_out="$out" --benchmark_out_format=json \
    --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
    "--benchmark_context=cpu_model=${cpu_model:-unknown},git_commit=$commit,git_dirty=$dirty" \
    "$@" >&2

say "Tables (python3 scripts/bench_table.py $out)"
python3 scripts/bench_table.py "$out"
