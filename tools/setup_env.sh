#!/usr/bin/env bash
# Create or reuse a virtual environment with the whole mmdtm stack.
#   bash tools/setup_env.sh [VENV]      (default .venv)
# Idempotent: a second run finds everything installed and returns in seconds
# (the Makefile skips it entirely while the requirement files are unchanged).
set -euo pipefail
VENV=${1:-.venv}
BASE_PY=${BASE_PYTHON:-python3}
PIP_FLAGS=(-q --disable-pip-version-check)
start=$(date +%s)
log() { echo "[setup_env] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$BASE_PY" -m venv "$VENV"
fi
PY="$VENV/bin/python"
log "installing torch and build tools (requirements/build.txt)"
"$PY" -m pip install "${PIP_FLAGS[@]}" -r requirements/build.txt
mmcv_ok=$("$PY" - <<'PY' 2>/dev/null || true
import importlib.metadata as m
try:
    import mmcv, mmcv._ext  # noqa: F401  (compiled ops present)
    print(m.version("mmcv"))
except Exception:
    pass
PY
)
want=$(sed -n 's/^mmcv==//p' requirements/mmcv.txt)
if [ "$mmcv_ok" != "$want" ]; then
  wheel=$(PYTHON="$PY" MMCV_VERSION="$want" bash tools/build_mmcv.sh | tail -n1)
  log "installing $wheel"
  "$PY" -m pip install "${PIP_FLAGS[@]}" --no-deps --force-reinstall "$wheel"
fi
log "installing runtime and test requirements"
"$PY" -m pip install "${PIP_FLAGS[@]}" -r requirements/mmcv.txt -r requirements/runtime.txt -r requirements/tests.txt
log "installing mmdtm (editable)"
"$PY" -m pip install "${PIP_FLAGS[@]}" --no-deps --no-build-isolation -e .
"$PY" -c "import mmdtm, mmcv.ops, mmpretrain.models, mmseg.models, open_clip; print('mmdtm', mmdtm.__version__, 'ready')"
log "done in $(( $(date +%s) - start )) s; $(du -sh "$VENV" | cut -f1) in $VENV"
