#!/usr/bin/env bash
# Build mmcv (default 2.1.0) *with ops* from the PyPI sdist into a cached wheel
# and print the wheel's path on the last line of stdout.
#
#   PYTHON=.venv/bin/python bash tools/build_mmcv.sh
#
# Environment:
#   PYTHON        interpreter whose torch the ops are built against (python3)
#   MMCV_VERSION  mmcv version (2.1.0)
#   MMCV_CUDA     1 = CUDA ops, 0 = CPU ops; default: CUDA when `nvcc` exists
#                 and a GPU is visible (nvidia-smi -L), CPU otherwise
#   MMDTM_CACHE   cache folder outside the repo (~/.cache/mmdtm); the wheel is
#                 kept under $MMDTM_CACHE/wheels/ and reused by later set-ups
set -euo pipefail
PY=${PYTHON:-python3}
# absolute, since the build runs inside the unpacked sdist
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")";; esac
VERSION=${MMCV_VERSION:-2.1.0}
CACHE=${MMDTM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmdtm}
log() { echo "[build_mmcv] $*" >&2; }
die() { echo "[build_mmcv] ERROR: $*" >&2; exit 1; }

torch_tag=$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))') \
  || die "torch is not importable with $PY; install requirements/build.txt first"
if [ -z "${MMCV_CUDA:-}" ]; then
  if command -v nvcc >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    MMCV_CUDA=1
  else
    MMCV_CUDA=0
  fi
fi
flavour=cpu; [ "$MMCV_CUDA" = 1 ] && flavour=cuda
py_tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
dest="$CACHE/wheels/mmcv-$VERSION-$py_tag-torch$torch_tag-$flavour"
cached=$(ls "$dest"/mmcv-"$VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -n "$cached" ]; then
  log "reusing cached wheel $cached"
  echo "$cached"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log "downloading the mmcv==$VERSION sdist"
"$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
  "mmcv==$VERSION" -d "$work" >&2 || die "could not download the mmcv==$VERSION sdist from PyPI"
tar -xzf "$work"/mmcv-"$VERSION".tar.gz -C "$work" || die "could not unpack the sdist"
src="$work/mmcv-$VERSION"
# Today's ATen headers require C++20; mmcv's setup.py hard-codes -std=c++17
# after CFLAGS, so the flag has to be replaced in the source.
sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
grep -q 'std=c++20' "$src/setup.py" || die "could not patch the C++ standard in $src/setup.py"

log "building mmcv $VERSION with $flavour ops against torch $torch_tag (this takes minutes)"
mkdir -p "$dest.partial"
( cd "$src" && MMCV_WITH_OPS=1 FORCE_CUDA="$MMCV_CUDA" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$PY" -m pip wheel -v --no-deps --no-build-isolation -w "$dest.partial" . ) \
  > "$work/build.log" 2>&1 || { tail -n 60 "$work/build.log" >&2; die "mmcv build failed (log tail above)"; }
wheel=$(ls "$dest.partial"/mmcv-*.whl 2>/dev/null | head -n1)
[ -n "$wheel" ] || die "the build produced no wheel"
rm -rf "$dest"; mv "$dest.partial" "$dest"
log "built $(basename "$wheel")"
ls "$dest"/mmcv-*.whl | head -n1
