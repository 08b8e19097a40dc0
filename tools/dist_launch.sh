#!/usr/bin/env bash
# Run a tools/ script once per GPU with torchrun (used by train.sh and
# test.sh).
#
#   tools/dist_launch.sh SCRIPT NPROC [script arguments...]
#
# One node: torchrun's standalone rendezvous (--standalone), which binds a
# free port itself, so that launches on one machine never race for a port.
# Several nodes: run the same command on every node with NNODES, NODE_RANK,
# MASTER_ADDR (node 0's address) and PORT; in a Slurm job they default to
# SLURM_NNODES, SLURM_NODEID and the job's first host. The nodes meet through
# torchrun's c10d rendezvous at MASTER_ADDR:PORT, hosted by node 0's launcher
# (RDZV_ID: the job's name there, default SLURM_JOB_ID or 'mmdtm'); a node
# that has not joined within RDZV_TIMEOUT seconds (default 600) stops the
# others. PYTHON defaults to the repository's .venv. TORCHRUN_ARGS: more
# torchrun flags (word-split).
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
NNODES=${NNODES:-${SLURM_NNODES:-1}}
NODE_RANK=${NODE_RANK:-${SLURM_NODEID:-0}}
PORT=${PORT:-29500}
MAX_RESTARTS=${MAX_RESTARTS:-3}
if [ -z "${MASTER_ADDR:-}" ] && [ -n "${SLURM_JOB_NODELIST:-}" ]; then
    MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
fi
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PREEMPTED_EXIT_CODE=75  # mmdtm.engine.PREEMPTED_EXIT_CODE
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export NODE_RANK  # a lost rank is reported with its node (lost_ranks.py)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# a worker that finds lost ranks writes its report here (lost_ranks.py); it
# is printed last if the run fails
MMDTM_LAUNCH_REPORT=$(mktemp "${TMPDIR:-/tmp}/mmdtm_launch_report.XXXXXX")
export MMDTM_LAUNCH_REPORT
trap 'rm -f "$MMDTM_LAUNCH_REPORT"' EXIT
# job control: torchrun runs in the background without ignoring SIGINT
set -m
if [ "$NNODES" = 1 ]; then
    rendezvous=(--standalone)
else
    is_host=0
    [ "$NODE_RANK" = 0 ] && is_host=1
    rendezvous=(--nnodes="$NNODES" --rdzv-backend=c10d
                --rdzv-endpoint="$MASTER_ADDR:$PORT"
                --rdzv-id="${RDZV_ID:-${SLURM_JOB_ID:-mmdtm}}"
                --rdzv-conf="is_host=$is_host,join_timeout=${RDZV_TIMEOUT:-600}")
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
if [ "$rc" -ne 0 ] && [ -s "$MMDTM_LAUNCH_REPORT" ]; then
    echo "dist_launch.sh: the run failed: $(tail -n1 "$MMDTM_LAUNCH_REPORT")" >&2
fi
if [ -n "$preempted" ] && [ "$rc" -ne 0 ]; then
    echo "dist_launch.sh: pre-empted (SIG$preempted; torchrun exit code $rc)." \
         "Resume with the same command plus --resume auto." >&2
    exit "$PREEMPTED_EXIT_CODE"
fi
exit "$rc"
