#!/usr/bin/env bash
# Runs every libFuzzer target (tests/fuzz/fuzz_*.cpp) for longer than ctest's
# short fuzz.<name> runs, and prints executions and crashes per target.
#
#   scripts/fuzz.sh [seconds]        seconds per target, default 600
#
# Environment:
#   QAQ_FUZZ_BUILD_DIR   build tree (default build-fuzz/, the `fuzz` preset;
#                        configured and built here when needed)
#   QAQ_FUZZ_TARGETS     names to run, e.g. "npy quantizer" (default: all)
#   QAQ_FUZZ_JOBS        targets run at once (default 1; each uses one core)
#   QAQ_FUZZ_SKIP_KNOWN  1: the targets step around the open bugs that
#                        tests/fuzz/regressions/ reproduces, to look for new ones
#
# A target that crashes is started again until its time is spent, so one bug
# does not end the run: every crash input is kept in
# <build>/fuzz-runs/<name>/artifacts/, replayed once, and grouped by its first
# error line. The corpus in <build>/fuzz-runs/<name>/corpus/ grows from run to
# run (seeded from tests/fuzz/corpus/<name>/); the checked-in seeds never change.
# Exit status: 0 when no target crashed, 1 otherwise.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

seconds="${1:-600}"
case "$seconds" in
    '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [seconds per target]" >&2; exit 2 ;;
esac
build_dir="${QAQ_FUZZ_BUILD_DIR:-$repo_root/build-fuzz}"
jobs="${QAQ_FUZZ_JOBS:-1}"

say() { printf '\n==> %s\n' "$*"; }

# ---------------------------------------------------------------------------
# Targets, configure and build.
# ---------------------------------------------------------------------------
names=()
for source in tests/fuzz/fuzz_*.cpp; do
    [ -e "$source" ] || continue
    name="$(basename "$source" .cpp)"
    name="${name#fuzz_}"
    if [ -n "${QAQ_FUZZ_TARGETS:-}" ] && [[ " $QAQ_FUZZ_TARGETS " != *" $name "* ]]; then
        continue
    fi
    names+=("$name")
done
if [ "${#names[@]}" -eq 0 ]; then
    echo "error: no fuzz targets selected (tests/fuzz/fuzz_*.cpp, QAQ_FUZZ_TARGETS='${QAQ_FUZZ_TARGETS:-}')" >&2
    exit 2
fi

if [ ! -f "$build_dir/CMakeCache.txt" ]; then
    say "Configuring $build_dir"
    compiler_args=()
    if ! command -v clang++-14 >/dev/null 2>&1; then
        if command -v clang++ >/dev/null 2>&1; then
            compiler_args=(-DCMAKE_CXX_COMPILER=clang++)
        else
            echo "error: libFuzzer needs clang (clang++-14 or clang++); scripts/reliability.sh installs it" >&2
            exit 1
        fi
    fi
    if [ "$build_dir" = "$repo_root/build-fuzz" ]; then
        cmake --preset fuzz "${compiler_args[@]}"
    else
        cmake -S "$repo_root" -B "$build_dir" -DCMAKE_CXX_COMPILER=clang++-14 "${compiler_args[@]}" \
            -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQAQ_ENABLE_FUZZING=ON -DQAQ_ENABLE_BENCHMARKS=OFF \
            -DQAQ_ENABLE_CUDA=OFF
    fi
fi
build_targets=()
for name in "${names[@]}"; do build_targets+=("fuzz_$name"); done
say "Building ${build_targets[*]}"
cmake --build "$build_dir" --target "${build_targets[@]}" -j "$(nproc 2>/dev/null || echo 2)"

# ---------------------------------------------------------------------------
# One target: fuzz, then replay and group the crash inputs.
# ---------------------------------------------------------------------------
run_target() {
    local name="$1"
    local exe="$build_dir/tests/fuzz/fuzz_$name"
    local work="$build_dir/fuzz-runs/$name"
    local seeds="$repo_root/tests/fuzz/corpus/$name"
    rm -rf "$work/artifacts"
    mkdir -p "$work/corpus" "$work/artifacts"
    local inputs=("$work/corpus")
    [ -d "$seeds" ] && inputs+=("$seeds")

    # libFuzzer stops at the first crash; start it again (the corpus it grew is
    # kept) until the time is spent, so one bug does not end the run. Fork mode
    # (-fork) would do the same but reloads the corpus for every job, which
    # costs the slow targets most of their speed.
    local deadline=$((SECONDS + seconds)) executions=0 restarts=0 status=0 remaining part
    : >"$work/log"
    while remaining=$((deadline - SECONDS)); [ "$remaining" -gt 0 ] && [ "$restarts" -le 100 ]; do
        status=0
        "$exe" -max_total_time="$remaining" -timeout=10 -print_final_stats=1 \
            -artifact_prefix="$work/artifacts/" "${inputs[@]}" >"$work/last.log" 2>&1 || status=$?
        cat "$work/last.log" >>"$work/log"
        # Executions: the final stats; after a sanitizer report (no stats), the last "#N" progress line.
        part="$(grep -E '^stat::number_of_executed_units:' "$work/last.log" | tail -n 1 | awk '{print $2}' || true)"
        if [ -z "$part" ]; then
            part="$(grep -E '^#[0-9]+' "$work/last.log" | tail -n 1 | sed -E 's/^#([0-9]+).*/\1/' || true)"
        fi
        executions=$((executions + ${part:-0}))
        [ "$status" -ne 0 ] || break
        restarts=$((restarts + 1))
        # A crash on the corpus itself would repeat at once: stop rather than spin.
        if ! grep -q 'INITED' "$work/last.log"; then break; fi
    done
    rm -f "$work/last.log"

    local artifacts=("$work/artifacts"/*)
    [ -e "${artifacts[0]:-}" ] || artifacts=()
    : >"$work/failures"
    local replayed=0
    for artifact in "${artifacts[@]}"; do
        [ "$replayed" -lt 200 ] || break
        replayed=$((replayed + 1))
        # The first line that names the failure, with pids, addresses and numbers blurred.
        "$exe" -runs=1 "$artifact" 2>&1 |
            grep -m 1 -E '^fuzz_[a-z_]+: |runtime error: |==[0-9]+==ERROR: |^SUMMARY: |deadly signal|timeout|out-of-memory' |
            sed -E -e 's/==[0-9]+==/==/' -e 's/0x[0-9a-f]+/0x?/g' -e 's/[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)?/N/g' \
                -e "s|^|$(basename "$artifact") |" >>"$work/failures" || true
    done
    local distinct=0
    if [ -s "$work/failures" ]; then
        distinct="$(cut -d' ' -f2- "$work/failures" | sort -u | wc -l)"
    fi
    printf '%s %s %s %s %s\n' "$name" "$executions" "${#artifacts[@]}" "$distinct" "$restarts" >"$work/summary"
}

say "Fuzzing ${names[*]} for ${seconds} s each ($jobs at a time${QAQ_FUZZ_SKIP_KNOWN:+, QAQ_FUZZ_SKIP_KNOWN=$QAQ_FUZZ_SKIP_KNOWN})"
running=0
for name in "${names[@]}"; do
    echo "started fuzz_$name"
    run_target "$name" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait || true

# ---------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------
say "Results (${seconds} s per target; logs and crash inputs under $build_dir/fuzz-runs/)"
printf '%-12s %14s %10s %16s %18s\n' target executions exec/s "crash inputs" "distinct failures"
crashed=0
for name in "${names[@]}"; do
    if [ ! -f "$build_dir/fuzz-runs/$name/summary" ]; then
        printf '%-12s %s\n' "$name" "no result (see $build_dir/fuzz-runs/$name/log)"
        crashed=1
        continue
    fi
    read -r _ executions crashes distinct _ <"$build_dir/fuzz-runs/$name/summary"
    printf '%-12s %14s %10s %16s %18s\n' "$name" "$executions" "$((executions / (seconds > 0 ? seconds : 1)))" \
        "$crashes" "$distinct"
    [ "$crashes" -eq 0 ] || crashed=1
done
for name in "${names[@]}"; do
    failures="$build_dir/fuzz-runs/$name/failures"
    [ -s "$failures" ] || continue
    printf '\nfuzz_%s: distinct failures (count, first line; one input each):\n' "$name"
    cut -d' ' -f2- "$failures" | sort | uniq -c | sort -rn | while read -r count line; do
        example="$(grep -F -- "$line" "$failures" | head -n 1 | cut -d' ' -f1)"
        printf '  %5d  %s\n         e.g. %s\n' "$count" "$line" "$build_dir/fuzz-runs/$name/artifacts/$example"
    done
done
exit "$crashed"
