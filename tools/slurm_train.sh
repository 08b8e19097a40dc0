#!/usr/bin/env bash
# Train on a Slurm cluster: a batch job that requeues itself when pre-empted.
#
#   [GPUS=16 GPUS_PER_NODE=8 CPUS_PER_TASK=5 SBATCH_ARGS=... SRUN_ARGS=...] \
#   tools/slurm_train.sh PARTITION JOB_NAME CONFIG [tools/train.py flags...]
#
# e.g. GPUS=16 tools/slurm_train.sh gpu dtm_vitb configs/dtm_vitb.py --amp
#
# Run from a login node, the script submits itself with sbatch and returns
# (the job's output goes to LOG, default slurm-<job name>-<job id>.out,
# appended across requeues). In the job, srun starts one task per GPU
# (tools/train.py --launcher slurm).
#
# Pre-emption: Slurm is asked (--signal=B:$PREEMPT_SIGNAL@$PREEMPT_SECONDS,
# default USR1, 120 s) to signal this script ahead of the kill. The script
# passes the signal (and a SIGTERM) to the tasks, whose PreemptionHook stops
# them all after the same iteration and writes its checkpoint; they exit
# with 75. The script then requeues the job (scontrol requeue), and the
# requeued job (SLURM_RESTART_COUNT > 0) runs with --resume auto.
# PREEMPT_SIGNAL must be one of the config's default_hooks.preemption.signals
# (SIGTERM and SIGUSR1 by default). Some NCCL releases caught SIGUSR1
# (NVIDIA/nccl issue 704): with such a release use PREEMPT_SIGNAL=USR2 and
# --cfg-options "default_hooks.preemption.signals=[SIGTERM,SIGUSR2]".
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG [tools/train.py flags...]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
PREEMPTED_EXIT_CODE=75  # mmdtm.engine.PREEMPTED_EXIT_CODE
PREEMPT_SIGNAL=${PREEMPT_SIGNAL:-USR1}
PREEMPT_SIGNAL=${PREEMPT_SIGNAL#SIG}

if [ -z "${MMDTM_SLURM_BATCH:-}" ]; then  # submit this script as the job
    GPUS=${GPUS:-8}
    GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
    CPUS_PER_TASK=${CPUS_PER_TASK:-5}
    ROOT="$(cd "$(dirname "$0")/.." && pwd)"
    # shellcheck disable=SC2086
    exec sbatch -p "$PARTITION" \
        --job-name="$JOB_NAME" \
        --nodes=$(( (GPUS + GPUS_PER_NODE - 1) / GPUS_PER_NODE )) \
        --gres=gpu:"$GPUS_PER_NODE" \
        --ntasks="$GPUS" \
        --ntasks-per-node="$GPUS_PER_NODE" \
        --cpus-per-task="$CPUS_PER_TASK" \
        --requeue \
        --signal="B:$PREEMPT_SIGNAL@${PREEMPT_SECONDS:-120}" \
        --open-mode=append \
        --output="${LOG:-slurm-%x-%j.out}" \
        --export="ALL,MMDTM_SLURM_BATCH=1,MMDTM_ROOT=$ROOT" \
        ${SBATCH_ARGS:-} \
        "$ROOT/tools/slurm_train.sh" "$PARTITION" "$JOB_NAME" "$CONFIG" "$@"
fi

# in the batch job (sbatch runs a copy of this file: the root comes along)
ROOT=$MMDTM_ROOT
PYTHON=${PYTHON:-python}
flags=("$@")
if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then
    echo "slurm_train.sh: requeued job (restart $SLURM_RESTART_COUNT):" \
         "resuming with --resume auto" >&2
    flags+=(--resume auto)
fi
# jobs sharing a node get different ports (from the job id), not one fixed one
export MASTER_PORT=${PORT:-$(( 20000 + SLURM_JOB_ID % 10000 ))}
# shellcheck disable=SC2086
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
srun --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    "$PYTHON" -u "$ROOT/tools/train.py" "$CONFIG" --launcher slurm \
    "${flags[@]}" &
step=$!
preempted=
forward() {  # srun passes signals on to the tasks
    preempted=$1
    kill -s "$1" "$step" 2>/dev/null || true
}
trap "forward $PREEMPT_SIGNAL" "$PREEMPT_SIGNAL"
[ "$PREEMPT_SIGNAL" = TERM ] || trap 'forward TERM' TERM
while true; do
    rc=0
    wait "$step" || rc=$?
    # a trapped signal interrupts wait (rc > 128) while srun still runs
    if [ "$rc" -le 128 ] || ! kill -0 "$step" 2>/dev/null; then break; fi
done
if [ "$rc" -eq "$PREEMPTED_EXIT_CODE" ] || { [ -n "$preempted" ] && [ "$rc" -ne 0 ]; }; then
    echo "slurm_train.sh: pre-empted (srun exit code $rc); requeueing job" \
         "$SLURM_JOB_ID, which resumes with --resume auto" >&2
    scontrol requeue "$SLURM_JOB_ID"
    exit "$PREEMPTED_EXIT_CODE"
fi
exit "$rc"
