#!/usr/bin/env bash
# What slurm_train.sh and slurm_test.sh share: one srun task per GPU, each
# running a tool of this folder.
#   bash tools/slurm_run.sh PARTITION JOB_NAME TOOL [TOOL arguments...]
# GPUS (4), GPUS_PER_NODE (4), CPUS_PER_TASK (5) and SRUN_ARGS (extra srun
# options in one string) as in mmseg's slurm scripts; PYTHON (python).
set -x
PARTITION=$1
JOB_NAME=$2
TOOL=$3

# SRUN_ARGS unquoted: one string of options, split into words
PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"${GPUS_PER_NODE:-4}" \
    --ntasks="${GPUS:-4}" \
    --ntasks-per-node="${GPUS_PER_NODE:-4}" \
    --cpus-per-task="${CPUS_PER_TASK:-5}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS:-} \
    "${PYTHON:-python}" -u "$(dirname "$0")/$TOOL" "${@:4}"
