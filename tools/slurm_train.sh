#!/usr/bin/env bash
# Training on a Slurm cluster: one task per GPU, started by srun.
#   [GPUS=8] [GPUS_PER_NODE=8] bash tools/slurm_train.sh PARTITION JOB_NAME \
#       CONFIG [tools/train.py options...]
# e.g. bash tools/slurm_train.sh dev fsr \
#       configs/fsr/fsr_vit-b16_4xb2-20k_voc12aug-448x448.py --work-dir work_dirs/fsr
# CPUS_PER_TASK (5) and SRUN_ARGS (extra srun options) as in mmseg's script.
set -x
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
GPUS=${GPUS:-4}
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}

# SRUN_ARGS unquoted: one string of options, split into words
PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "$PYTHON" -u "$(dirname "$0")/train.py" "$CONFIG" --launcher=slurm "${@:4}"
