#!/usr/bin/env bash
# Evaluate a checkpoint with one process per GPU through torchrun.
#
#   tools/test.sh CONFIG CHECKPOINT GPUS [tools/test.py flags...]
#
# Multi-node and the CPU fallback work as in tools/train.sh.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [tools/test.py flags...]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
exec "$(dirname "$0")/dist_launch.sh" test.py "$GPUS" "$CONFIG" "$CHECKPOINT" \
    --launcher pytorch "$@"
