#!/usr/bin/env bash
# Builds and runs everything of qaq's CUDA backend on a machine with an NVIDIA
# GPU, in a few minutes: the device tests (ctest -L cuda: the backend's
# kernels, the LLaMA runner's CUDA forward and qaq-eval's CUDA scorer against
# the CPU model), the scalar-core tests, qaq-llama --device cuda:0 on the tiny
# test model (exact cache and qaq's device cache), and the CUDA benchmarks
# (Google Benchmark JSON). Everything goes into
#   results/gpu-check-<UTC time>.txt    what ran and what it printed
#   results/gpu-check-<UTC time>.json   the benchmark results
# It fails (exit 1) when there is no usable GPU, when a CUDA test is skipped
# or fails, or when the benchmarks fail.
#
# Environment (all optional):
#   QAQ_CUDA_ARCHITECTURES  CMAKE_CUDA_ARCHITECTURES (default 90: H100/H200)
#   QAQ_GPU_BUILD_DIR       build tree (default build-gpu-check/)
#   QAQ_BENCH_FILTER        --benchmark_filter (default: all CUDA benchmarks)
#   QAQ_BENCH_MIN_TIME      --benchmark_min_time in seconds (default 0.3)
set -uo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

architectures="${QAQ_CUDA_ARCHITECTURES:-90}"
build_dir="${QAQ_GPU_BUILD_DIR:-build-gpu-check}"
bench_filter="${QAQ_BENCH_FILTER:-.}"
bench_min_time="${QAQ_BENCH_MIN_TIME:-0.3}"
stamp="$(date -u +%Y-%m-%dT%H%M%SZ)"
mkdir -p results
report="results/gpu-check-${stamp}.txt"
bench_json="results/gpu-check-${stamp}.json"
jobs="$(nproc 2>/dev/null || echo 4)"
started=$SECONDS

say() { printf '\n==> %s\n' "$*" | tee -a "$report"; }
fail() {
    printf '\nFAILED: %s\n' "$*" | tee -a "$report" >&2
    printf 'report: %s\n' "$report" >&2
    exit 1
}
# Runs a command, appending its output to the report (and the terminal).
run() {
    printf '$ %s\n' "$*" >>"$report"
    "$@" 2>&1 | tee -a "$report"
    return "${PIPESTATUS[0]}"
}

{
    echo "qaq gpu-check ${stamp}"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "host: $(hostname), ${jobs} CPUs"
} >"$report"

say "GPU"
if ! command -v nvidia-smi >/dev/null 2>&1; then
    fail "nvidia-smi not found: no NVIDIA driver on this machine, so no GPU to check"
fi
if ! run nvidia-smi -L || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    fail "nvidia-smi lists no GPU"
fi
run nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv || true

nvcc="${CUDACXX:-}"
if [ -z "$nvcc" ]; then nvcc="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"; fi
[ -x "$nvcc" ] || fail "nvcc not found (set CUDACXX or install the CUDA toolkit)"
run "$nvcc" --version || true

say "Configuring ${build_dir}/ (Release, CUDA architectures ${architectures})"
run cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DQAQ_ENABLE_CUDA=ON \
    "-DCMAKE_CUDA_ARCHITECTURES=${architectures}" "-DCMAKE_CUDA_COMPILER=${nvcc}" \
    -DQAQ_ENABLE_TESTS=ON -DQAQ_ENABLE_BENCHMARKS=ON -DQAQ_ENABLE_EXAMPLES=ON ||
    fail "cmake configure"

# The benchmark is part of the main build once benchmarks/CMakeLists.txt adds
# benchmarks/cuda; until then it is configured on its own.
bench_build="$build_dir"
if ! grep -qs 'add_subdirectory(cuda)' benchmarks/CMakeLists.txt; then
    bench_build="${build_dir}-bench"
    say "benchmarks/CMakeLists.txt does not add benchmarks/cuda yet: configuring it on its own in ${bench_build}/"
    run cmake -S benchmarks/cuda -B "$bench_build" -DCMAKE_BUILD_TYPE=Release \
        "-DCMAKE_CUDA_ARCHITECTURES=${architectures}" "-DCMAKE_CUDA_COMPILER=${nvcc}" ||
        fail "cmake configure of benchmarks/cuda"
fi

say "Building the CUDA tests, qaq-llama, qaq-eval, qaq-unit-tests and qaq-cuda-bench with ${jobs} jobs"
run cmake --build "$build_dir" -j"$jobs" --target qaq-cuda-tests qaq-cuda-scalar-tests qaq-llama-cuda-tests \
    qaq-llama qaq-eval qaq-unit-tests || fail "build of the CUDA tests and programs"
run cmake --build "$bench_build" -j"$jobs" --target qaq-cuda-bench || fail "build of qaq-cuda-bench"
echo "build done after $((SECONDS - started)) s" | tee -a "$report"

say "Scalar core (host) tests"
run ctest --test-dir "$build_dir" -R '^unit\.cuda_scalar\.|^unit\.cuda scalar: ' --output-on-failure --timeout 300 ||
    fail "scalar-core tests"

say "CUDA tests (ctest -L cuda)"
ctest_log="$(mktemp)"
run ctest --test-dir "$build_dir" -L cuda --output-on-failure --timeout 300 >"$ctest_log"
ctest_status=$?
cat "$ctest_log"
if grep -qE '\*\*\*Skipped|Not Run' "$ctest_log"; then
    rm -f "$ctest_log"
    fail "CUDA tests were skipped although nvidia-smi lists a GPU (see the test output above)"
fi
if ! grep -qE '^100% tests passed' "$ctest_log" || [ "$ctest_status" -ne 0 ]; then
    rm -f "$ctest_log"
    fail "CUDA tests failed"
fi
rm -f "$ctest_log"

say "qaq-llama --device cuda:0 on the tiny test model (and the same on the CPU)"
tiny=tests/data/llama/tiny-llama.gguf
text="$build_dir/gpu-check-text.txt"
printf 'the answer is in the text. the other answer is not there, and she reads on.\nin the end the answer is read again and again, then the reader stops.\n' >"$text"
run "$build_dir/examples/llama/qaq-llama" generate --model "$tiny" --prompt "the answer" -n 8 --device cuda:0 ||
    fail "qaq-llama generate --device cuda:0"
run "$build_dir/examples/llama/qaq-llama" perplexity --model "$tiny" --file "$text" --context 32 --device cuda:0 ||
    fail "qaq-llama perplexity --device cuda:0"
run "$build_dir/examples/llama/qaq-llama" perplexity --model "$tiny" --file "$text" --context 32 --device cpu ||
    fail "qaq-llama perplexity --device cpu"
run "$build_dir/examples/llama/qaq-llama" bench --model "$tiny" -p 64 -n 16 -r 2 --device cuda:0 ||
    fail "qaq-llama bench --device cuda:0"
# qaq's device cache (cuda_quantized_cache): generate in both prompt modes, perplexity, bench.
for mode in prefill decode; do
    run "$build_dir/examples/llama/qaq-llama" generate --model "$tiny" --prompt "the answer" -n 8 --device cuda:0 \
        --kv qaq --kv-mode "$mode" || fail "qaq-llama generate --device cuda:0 --kv qaq --kv-mode $mode"
done
run "$build_dir/examples/llama/qaq-llama" perplexity --model "$tiny" --file "$text" --context 32 --device cuda:0 \
    --kv qaq || fail "qaq-llama perplexity --device cuda:0 --kv qaq"
run "$build_dir/examples/llama/qaq-llama" perplexity --model "$tiny" --file "$text" --context 32 --device cpu \
    --kv qaq || fail "qaq-llama perplexity --device cpu --kv qaq"
run "$build_dir/examples/llama/qaq-llama" bench --model "$tiny" -p 0 -n 32 -r 2 --device cuda:0 --kv qaq ||
    fail "qaq-llama bench --device cuda:0 --kv qaq"

say "CUDA benchmarks -> ${bench_json}"
run timeout 360 "$bench_build/qaq-cuda-bench" "--benchmark_filter=${bench_filter}" \
    "--benchmark_min_time=${bench_min_time}" --benchmark_counters_tabular=true \
    "--benchmark_out=${bench_json}" --benchmark_out_format=json ||
    fail "qaq-cuda-bench"
[ -s "$bench_json" ] || fail "qaq-cuda-bench wrote no JSON (was a GPU visible to it?)"

say "Done in $((SECONDS - started)) s"
echo "report:     $report"
echo "benchmarks: $bench_json"
