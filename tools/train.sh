#!/usr/bin/env bash
# Train with one process per GPU through torchrun (PyTorch's launcher).
#
#   tools/train.sh CONFIG GPUS [train.py flags...]
#
# Multi-node: run the same command on every node with
#   NNODES=2 NODE_RANK=0|1 MASTER_ADDR=<node 0 address> PORT=29500
# Without CUDA the processes use the gloo backend on CPU (tools/train.py
# switches automatically). PYTHON defaults to the repository's .venv.
# A dead worker makes torchrun restart the group (MAX_RESTARTS, default 3),
# which then resumes from the last complete checkpoint (docs/reliability.md).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [tools/train.py flags...]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
exec "$(dirname "$0")/dist_launch.sh" train.py "$GPUS" "$CONFIG" --launcher pytorch "$@"
