#!/usr/bin/env bash
# Create or reuse a virtual environment with the whole mmdtm stack.
#   bash tools/setup_env.sh [VENV]      (default .venv)
#
# The exact versions come from a lock file used as pip constraints; mmdtm's
# own install_requires are ranges (requirements/runtime.txt, mmcv.txt,
# seg.txt), and pip checks the lock against them.
#
# Environment:
#   LOCK             constraints file (default requirements/lock.txt, the
#                    pinned stack; requirements/oldest.txt is the oldest
#                    tested stack, `make test-oldest`)
#   KEEP_TORCH=1     keep the torch/torchvision already installed in VENV
#                    (e.g. a build matching your GPU driver); everything else
#                    is then installed against that torch
#   TORCH_SPEC       what to install instead of the lock's torch/torchvision,
#                    e.g. "torch==2.5.1 torchvision==0.20.1"
#   TORCH_INDEX_URL  index to take torch from, e.g.
#                    https://download.pytorch.org/whl/cu121 (CUDA 12.1 build)
#   BASE_PYTHON      interpreter that creates VENV (python3)
# Idempotent: a second run finds everything installed and returns in seconds
# (the Makefile skips it entirely while its inputs are unchanged).
set -euo pipefail
VENV=${1:-.venv}
LOCK=${LOCK:-requirements/lock.txt}
BASE_PY=${BASE_PYTHON:-python3}
PIP_FLAGS=(-q --disable-pip-version-check)
start=$(date +%s)
log() { echo "[setup_env] $*"; }
die() { echo "[setup_env] ERROR: $*" >&2; exit 1; }
[ -f "$LOCK" ] || die "LOCK=$LOCK: no such constraints file"

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$BASE_PY" -m venv "$VENV"
fi
PY="$VENV/bin/python"
installed_torch() {
  # distribution versions (what pip compares), after checking both import
  "$PY" -c 'import torch, torchvision, importlib.metadata as m; print(m.version("torch"), m.version("torchvision"))' 2>/dev/null
}

# 1. torch: kept, from TORCH_SPEC (optionally another index), or the lock's.
if [ "${KEEP_TORCH:-0}" = 1 ]; then
  installed_torch >/dev/null \
    || die "KEEP_TORCH=1 but torch/torchvision do not import with $PY"
  log "keeping the installed torch/torchvision: $(installed_torch)"
else
  if [ -n "${TORCH_SPEC:-}" ]; then
    read -r -a spec <<< "$TORCH_SPEC"
    lock_args=()
  else
    spec=(torch torchvision)
    lock_args=(-c "$LOCK")
  fi
  index_args=()
  [ -n "${TORCH_INDEX_URL:-}" ] && index_args=(--index-url "$TORCH_INDEX_URL")
  log "installing ${spec[*]}${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}"
  "$PY" -m pip install "${PIP_FLAGS[@]}" "${index_args[@]}" "${lock_args[@]}" "${spec[@]}"
fi
read -r torch_v vision_v <<< "$(installed_torch)" || die "torch does not import with $PY"

# 2. the constraints everything else is installed with: the lock, with the
#    torch/torchvision that are now installed (kept, spec'd or locked).
CONSTRAINTS="$VENV/mmdtm-constraints.txt"
{
  echo "# written by tools/setup_env.sh from $LOCK"
  grep -v -E '^\s*(torch|torchvision)\s*[=<>!~]' "$LOCK"
  echo "torch==$torch_v"
  echo "torchvision==$vision_v"
} > "$CONSTRAINTS"
log "torch $torch_v, torchvision $vision_v; constraints in $CONSTRAINTS"
"$PY" -m pip install "${PIP_FLAGS[@]}" -c "$CONSTRAINTS" -r requirements/build.txt numpy

# 3. mmcv with compiled ops, built against this torch (cached per torch).
want=$(sed -n 's/^mmcv==//p' "$CONSTRAINTS")
[ -n "$want" ] || die "$LOCK pins no mmcv version (mmcv==X.Y.Z)"
mmcv_ok=$("$PY" - <<'PY' 2>/dev/null || true
import importlib.metadata as m
try:
    import mmcv, mmcv._ext  # noqa: F401  (compiled ops present)
    print(m.version("mmcv"))
except Exception:
    pass
PY
)
if [ "$mmcv_ok" != "$want" ]; then
  wheel=$(PYTHON="$PY" MMCV_VERSION="$want" bash tools/build_mmcv.sh | tail -n1)
  log "installing $wheel"
  "$PY" -m pip install "${PIP_FLAGS[@]}" --no-deps --force-reinstall "$wheel"
fi

# 4. mmdtm (editable) with the seg and tests extras; pip resolves its ranges
#    against the constraints, so a lock outside the ranges fails here.
log "installing mmdtm[seg,tests] (editable) with $CONSTRAINTS"
"$PY" -m pip install "${PIP_FLAGS[@]}" --no-build-isolation -c "$CONSTRAINTS" -e '.[seg,tests]'
"$PY" -c "import mmdtm, mmcv.ops, mmpretrain.models, mmseg.models, open_clip; print('mmdtm', mmdtm.__version__, 'ready')"
log "done in $(( $(date +%s) - start )) s; $(du -sh "$VENV" | cut -f1) in $VENV"
