#!/usr/bin/env bash
# Run a tools/ script once per GPU with torchrun (used by train.sh and
# test.sh).
#
#   tools/dist_launch.sh SCRIPT NPROC [script arguments...]
#
# One node: torchrun's standalone rendezvous (--standalone), which binds a
# free port itself, so that launches on one machine never race for a port.
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT. PYTHON defaults to the
# repository's .venv. TORCHRUN_ARGS: more torchrun flags (word-split).
#
# Elastic restart: when a worker dies (killed, out of memory), torchrun stops
# the others and starts the whole group again, up to MAX_RESTARTS times
# (default 3; 0 turns it off). Restarted training workers resume from the
# newest complete checkpoint in the work dir (tools/train.py).
#
# Pre-emption: SIGTERM, SIGUSR1 or SIGUSR2 sent to this script is passed to
# torchrun as SIGTERM, which torchrun forwards to the workers (PreemptionHook:
# they stop after the same iteration and write its checkpoint; torchrun
# kills them if they take more than its --shutdown-timeout, 30 s by
# default). The script then exits with 75 (EX_TEMPFAIL): resume with
# --resume auto.
set -euo pipefail
SCRIPT=$1
NPROC=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MAX_RESTARTS=${MAX_RESTARTS:-3}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PREEMPTED_EXIT_CODE=75  # mmdtm.engine.PREEMPTED_EXIT_CODE
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# job control: torchrun runs in the background without ignoring SIGINT
set -m
if [ "$NNODES" = 1 ]; then
    rendezvous=(--standalone)
else
    rendezvous=(--nnodes="$NNODES" --node_rank="$NODE_RANK"
                --master_addr="$MASTER_ADDR" --master_port="$PORT")
fi
# shellcheck disable=SC2086
"$PYTHON" -m torch.distributed.run \
    "${rendezvous[@]}" \
    --nproc_per_node="$NPROC" \
    --max-restarts="$MAX_RESTARTS" \
    ${TORCHRUN_ARGS:-} \
    "$ROOT/tools/$SCRIPT" "$@" &
launcher=$!
preempted=
forward() {  # forward() SIGNAL_RECEIVED SIGNAL_TO_SEND
    [ "$1" = INT ] || preempted=$1
    kill -s "$2" "$launcher" 2>/dev/null || true
}
trap 'forward TERM TERM' TERM
trap 'forward USR1 TERM' USR1
trap 'forward USR2 TERM' USR2
trap 'forward INT INT' INT
while true; do
    rc=0
    wait "$launcher" || rc=$?
    # a trapped signal interrupts wait (rc > 128) while torchrun still runs
    if [ "$rc" -le 128 ] || ! kill -0 "$launcher" 2>/dev/null; then break; fi
done
if [ -n "$preempted" ] && [ "$rc" -ne 0 ]; then
    echo "dist_launch.sh: pre-empted (SIG$preempted; torchrun exit code $rc)." \
         "Resume with the same command plus --resume auto." >&2
    exit "$PREEMPTED_EXIT_CODE"
fi
exit "$rc"
