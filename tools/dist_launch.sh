#!/usr/bin/env bash
# Run a tools/ script once per GPU with torchrun (used by train.sh and
# test.sh).
#
#   tools/dist_launch.sh SCRIPT NPROC [script arguments...]
#
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT. PYTHON defaults to the
# repository's .venv.
#
# Elastic restart: when a worker dies (killed, out of memory), torchrun stops
# the others and starts the whole group again, up to MAX_RESTARTS times
# (default 3; 0 turns it off). Restarted training workers resume from the
# newest complete checkpoint in the work dir (tools/train.py).
set -euo pipefail
SCRIPT=$1
NPROC=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MAX_RESTARTS=${MAX_RESTARTS:-3}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" \
    --nproc_per_node="$NPROC" \
    --max-restarts="$MAX_RESTARTS" \
    "$ROOT/tools/$SCRIPT" "$@"
