#!/usr/bin/env bash
# All three benchmarks on one CUDA GPU, in at most about 10 minutes (most of
# it torch.compile's first compilations; later runs on the same machine hit
# inductor's cache); writes the tables (*.txt) and numbers (*.json) to $OUT,
# or benchmarks/results/<date>/.
#
#   bash benchmarks/gpu.sh            # PYTHON=... to pick the interpreter
#   bash benchmarks/gpu.sh --dry-run  # CPU: check every invocation's flags
#
# Sizes: the morphing op at B = 8, 64, 256 (N = 196, C = D = 512, k = 1, 7,
# 14), forward with the compiled arm (torch.compile, CUDA graphs) and the
# operator counts, forward + student backward eager only; the DTM train step
# of ViT-S/16 and ViT-B/16 at 224, batch 64, bf16 AMP (DTMLoss compile='auto':
# the compiled, CUDA-graphed levels), with the expected and the costliest
# schedule, and its optimizer part (fused AdamW in 2 groups against per-
# parameter groups); the teacher against the students at batch 64.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DRY=()
if [[ "${1:-}" == "--dry-run" ]]; then DRY=(--dry-run); fi
DEST="${OUT:-benchmarks/results/$(date -u +%Y%m%d-%H%M)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ ${#DRY[@]} -gt 0 ]]; then
  DEST=$(mktemp -d)
else
  mkdir -p "$DEST"
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$DEST/gpu.txt" 2>&1 || true
fi

run() {  # run NAME TIMEOUT_S ARGS...: one benchmark, table to NAME.txt
  local name=$1 limit=$2; shift 2
  echo "== $name: $*"
  timeout "$limit" "$PYTHON" "$@" --device cuda --json "$DEST/$name.json" \
    "${DRY[@]}" 2>&1 | tee "$DEST/$name.txt" | grep -v -i 'warn' || echo "!! $name failed or timed out"
}

start=$SECONDS
run morphing 200 benchmarks/bench_morphing.py --batch 8 64 256 --repeats 20 --warmup 3
run morphing_backward 60 benchmarks/bench_morphing.py --batch 8 64 256 --repeats 20 --warmup 3 --backward --no-compiled
run train_step 150 benchmarks/bench_train_step.py --amp bf16 --batch 64 --repeats 10 --warmup 3 --mem-repeats 2
run train_step_max 100 benchmarks/bench_train_step.py --amp bf16 --batch 64 --repeats 10 --warmup 3 --schedule max
run teacher 60 benchmarks/bench_teacher.py --batch 64 --repeats 10 --warmup 3
echo "done in $((SECONDS - start)) s; results in $DEST"
grep -h "^RESULT" "$DEST"/*.txt || true
if [[ ${#DRY[@]} -gt 0 ]]; then rm -rf "$DEST"; fi
