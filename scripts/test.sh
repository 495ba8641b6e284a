#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and runs qaq's whole test suite:
# system packages, numpy for the Python oracle, configure, build, ctest.
# Safe to run again: it installs only what is missing.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

say() { printf '\n==> %s\n' "$*"; }

# numpy pinned for a fresh machine; 2.2.6 has wheels for Python 3.10-3.13.
numpy_pin="numpy==2.2.6"
# Any numpy at least this new serves the oracle, so an existing one is kept.
numpy_minimum="1.22"

apt_packages=(
    build-essential cmake g++ catch2 libeigen3-dev nlohmann-json3-dev
    libcli11-dev libbenchmark-dev python3 python3-pip
    zlib1g-dev libopenmpi-dev openmpi-bin
)

source scripts/lib/system-packages.sh

say "Checking system packages"
ensure_system_packages "${apt_packages[@]}"

say "Checking numpy (for the Python oracle test)"
python="$(command -v python3)"
numpy_ok() {
    "$python" - "$numpy_minimum" <<'PY' 2>/dev/null
import sys
import numpy
def parts(version):
    return tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
sys.exit(0 if parts(numpy.__version__) >= parts(sys.argv[1]) else 1)
PY
}
if numpy_ok; then
    echo "numpy $("$python" -c 'import numpy; print(numpy.__version__)') already importable from $python"
else
    pip_flags=()
    # Inside a virtual environment pip installs into it (and refuses --user).
    # Elsewhere --user keeps the install out of the system site-packages, and
    # Debian's Python is "externally managed" (PEP 668): pip then refuses
    # even --user installs unless told it may.
    if "$python" -c 'import sys; sys.exit(0 if sys.prefix == sys.base_prefix else 1)'; then
        pip_flags+=(--user)
        if "$python" -c 'import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
            pip_flags+=(--break-system-packages)
        fi
    fi
    echo "installing $numpy_pin with: $python -m pip install ${pip_flags[*]-}"
    "$python" -m pip install ${pip_flags[@]+"${pip_flags[@]}"} "$numpy_pin"
    numpy_ok || { echo "error: numpy still not importable from $python" >&2; exit 1; }
fi
# The interpreter itself, not a shim (pyenv), so CMake and ctest use this one.
python_executable="$("$python" -c 'import sys; print(sys.executable)')"

# scripts/main.sh reuses the setup above and stops here.
if [ "${QAQ_SETUP_ONLY:-0}" = "1" ]; then
    exit 0
fi

# CUDA: with a toolkit (nvcc on PATH or in /usr/local/cuda/bin) the CUDA tests
# and benchmarks are built, explicitly, so that a toolkit CMake fails to use is
# an error rather than a silent skip. Without one they are skipped, and said so.
cuda_args=()
nvcc_path="$(command -v nvcc 2>/dev/null || true)"
if [ -z "$nvcc_path" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
    nvcc_path=/usr/local/cuda/bin/nvcc
fi
if [ -n "$nvcc_path" ]; then
    say "CUDA: $nvcc_path found; building the CUDA tests and benchmarks (QAQ_ENABLE_CUDA=ON)"
    cuda_args=(-DQAQ_ENABLE_CUDA=ON)
    # CMakeLists.txt points CUDACXX at /usr/local/cuda/bin/nvcc when nvcc is not on PATH.
else
    say "CUDA: SKIPPED - no nvcc on PATH or in /usr/local/cuda/bin; the CUDA tests and benchmarks are not built (QAQ_ENABLE_CUDA=OFF)"
    cuda_args=(-DQAQ_ENABLE_CUDA=OFF)
fi

say "Configuring (build/, Release)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "-DPython3_EXECUTABLE=$python_executable" "${cuda_args[@]}"

say "Building with $(nproc) jobs"
cmake --build build -j"$(nproc)"

say "Running the test suite"
ctest --test-dir build --output-on-failure
