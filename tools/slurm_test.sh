#!/usr/bin/env bash
# Testing on a Slurm cluster, as mmseg's tools/slurm_test.sh:
#   [GPUS=4] [GPUS_PER_NODE=4] bash tools/slurm_test.sh PARTITION JOB_NAME \
#       CONFIG CHECKPOINT [tools/test.py options, e.g. --tta...]
# CPUS_PER_TASK and SRUN_ARGS too (tools/slurm_run.sh).
exec bash "$(dirname "$0")/slurm_run.sh" "$1" "$2" test.py "$3" "$4" \
    --launcher=slurm "${@:5}"
