#!/usr/bin/env bash
# Training on a Slurm cluster, as mmseg's tools/slurm_train.sh:
#   [GPUS=4] [GPUS_PER_NODE=4] bash tools/slurm_train.sh PARTITION JOB_NAME \
#       CONFIG [tools/train.py options, e.g. --work-dir DIR...]
# CPUS_PER_TASK and SRUN_ARGS too (tools/slurm_run.sh).
exec bash "$(dirname "$0")/slurm_run.sh" "$1" "$2" train.py "$3" \
    --launcher=slurm "${@:4}"
