#!/usr/bin/env bash
# Reliability checks for CI: sanitizers over the whole test suite, then the
# libFuzzer targets' bounded runs.
#
#   1. preset `asan`: configure, build, and run every ctest under
#      AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/);
#   2. preset `fuzz`: configure with clang, build the fuzz targets, and run
#      `ctest -L fuzz`: each target for QAQ_FUZZ_SECONDS on a copy of its seed
#      corpus, plus the replays of tests/fuzz/regressions/ (build-fuzz/).
#
#   scripts/reliability.sh                  QAQ_FUZZ_SECONDS=60 by default
#   QAQ_FUZZ_SECONDS=300 scripts/reliability.sh
#
# Installs clang-14 and libclang-rt-14-dev (libFuzzer and clang's sanitizer
# runtimes) with apt-get when they are missing, as root or through sudo, and
# only what is missing, so running it again changes nothing. The other build
# dependencies are the ones scripts/test.sh installs; missing ones are
# installed the same way. Both stages always run; the exit status is non-zero
# if either failed. Each stage's duration is printed at the end.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

fuzz_seconds="${QAQ_FUZZ_SECONDS:-60}"
case "$fuzz_seconds" in
    '' | *[!0-9]*) echo "error: QAQ_FUZZ_SECONDS must be a whole number of seconds, got '$fuzz_seconds'" >&2; exit 2 ;;
esac
jobs="$(nproc 2>/dev/null || echo 2)"

say() { printf '\n==> %s\n' "$*"; }

source scripts/lib/system-packages.sh

# ---------------------------------------------------------------------------
# Packages (idempotent).
# ---------------------------------------------------------------------------
apt_packages=(
    build-essential cmake g++ catch2 libeigen3-dev nlohmann-json3-dev libcli11-dev python3
    clang-14 libclang-rt-14-dev
)
say "Checking system packages"
ensure_system_packages "${apt_packages[@]}"

# The fuzz preset names clang++-14; fall back to clang++ where only that exists.
fuzz_compiler_args=()
if ! command -v clang++-14 >/dev/null 2>&1; then
    if command -v clang++ >/dev/null 2>&1; then
        fuzz_compiler_args=(-DCMAKE_CXX_COMPILER=clang++)
    else
        echo "error: no clang++-14 or clang++ after installing clang-14" >&2
        exit 1
    fi
fi

# ---------------------------------------------------------------------------
# Stages.
# ---------------------------------------------------------------------------
stage_names=()
stage_results=()
stage_seconds=()
run_stage() {
    local name="$1"
    shift
    local start=$SECONDS status=0
    "$@" || status=$?
    stage_names+=("$name")
    stage_results+=("$status")
    stage_seconds+=($((SECONDS - start)))
    return 0
}

# Each stage chains its steps with && (errexit does not apply inside a
# function whose status is tested), so a failed step ends its stage.
asan_stage() {
    say "ASan + UBSan: configure and build (preset asan, build-asan/)" &&
        cmake --preset asan &&
        cmake --build --preset asan -j "$jobs" &&
        say "ASan + UBSan: the whole ctest suite" &&
        ctest --preset asan -j "$jobs"
}

fuzz_stage() {
    local targets=()
    for source in tests/fuzz/fuzz_*.cpp; do
        [ -e "$source" ] && targets+=("$(basename "$source" .cpp)")
    done
    if [ "${#targets[@]}" -eq 0 ]; then
        echo "no fuzz targets in tests/fuzz/"
        return 0
    fi
    say "Fuzzing: configure and build ${targets[*]} (preset fuzz, build-fuzz/, ${fuzz_seconds} s per target)" &&
        cmake --preset fuzz -DQAQ_FUZZ_SECONDS="$fuzz_seconds" "${fuzz_compiler_args[@]}" &&
        cmake --build --preset fuzz -j "$jobs" --target "${targets[@]}" &&
        say "Fuzzing: ctest -L fuzz" &&
        ctest --preset fuzz -j "$jobs"
}

total_start=$SECONDS
run_stage "asan (build + ctest)" asan_stage
run_stage "fuzz (build + ctest -L fuzz)" fuzz_stage

# Executions per fuzz target (libFuzzer's final statistics, kept by run_fuzz_target.cmake).
fuzz_work=build-fuzz/tests/fuzz/work
if [ -d "$fuzz_work" ]; then
    say "Fuzz targets: executions in ${fuzz_seconds} s each"
    for stats in "$fuzz_work"/*/stats.txt; do
        [ -e "$stats" ] || continue
        name="$(basename "$(dirname "$stats")")"
        executions="$(sed -n 's/^stat::number_of_executed_units: *//p' "$stats")"
        rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$stats")"
        rss="$(sed -n 's/^stat::peak_rss_mb: *//p' "$stats")"
        crashes="$(find "$fuzz_work/$name/artifacts" -type f 2>/dev/null | wc -l)"
        printf '  fuzz.%-20s %10s executions  %7s/s  peak RSS %5s MB  crash inputs: %s\n' \
            "$name" "${executions:-?}" "${rate:-?}" "${rss:-?}" "$crashes"
    done
fi

say "Summary"
failed=0
for i in "${!stage_names[@]}"; do
    result="passed"
    [ "${stage_results[$i]}" -eq 0 ] || { result="FAILED (exit ${stage_results[$i]})"; failed=1; }
    printf '  %-32s %-20s %5d s\n' "${stage_names[$i]}" "$result" "${stage_seconds[$i]}"
done
printf '  %-32s %-20s %5d s\n' "total" "" $((SECONDS - total_start))
exit "$failed"
