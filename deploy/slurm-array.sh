#!/usr/bin/env bash
# The fair study on Slurm: each task of the array is one worker on one GPU; the workers share
# the study through the Optuna storage (docs/comparing.md, "One study, many workers").
#
#   export MLFLOW_TRACKING_URI=http://mlflow-host:5000
#   export SUITE_STORAGE=postgresql://optuna:PASSWORD@db-host/optuna
#   sbatch deploy/slurm-array.sh                  # 4 workers; sbatch --array=0-7 ... for 8
#
# sbatch passes your environment on (--export=ALL): submit from the folder you want the
# outputs in, with the Python environment the suite is installed in active. Slurm sets
# CUDA_VISIBLE_DEVICES to the task's GPU; the study logs it (cuda_visible_devices).
# Settings, all from the environment:
#   MLFLOW_TRACKING_URI  the MLflow tracking server (required)
#   SUITE_STORAGE        the Optuna storage the workers share (required)
#   SUITE_TUNE_BUDGET    TRIALSxMAX_EPOCHS, default 6x8
#   SUITE_SEEDS          seeds of the final runs, default 3
#   SUITE_WORKER_ARGS    more flags of python -m tracking.study, split on spaces
#                        (e.g. "--dataset fashion_mnist --data-dir /data/fashion")
#   SUITE_PYTHON         the interpreter, default python
#SBATCH --job-name=fair-study
#SBATCH --array=0-3
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=24:00:00
#SBATCH --output=fair-study-%A_%a.log
set -euo pipefail

: "${SLURM_ARRAY_TASK_ID:?not a Slurm array task: submit with sbatch deploy/slurm-array.sh}"
: "${MLFLOW_TRACKING_URI:?set MLFLOW_TRACKING_URI to the MLflow tracking server}"
: "${SUITE_STORAGE:?set SUITE_STORAGE to the Optuna storage, e.g. postgresql://user:pw@host/db}"
export MLFLOW_TRACKING_URI

extra=()
read -r -a extra <<< "${SUITE_WORKER_ARGS:-}"

echo "fair-study worker: array task ${SLURM_ARRAY_TASK_ID} of job ${SLURM_ARRAY_JOB_ID:-?}" \
  "on $(hostname), CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}"
# exec: Slurm's SIGTERM (scancel, the time limit) reaches the worker, which ends its runs
# KILLED and resumable; the study puts its unfinished task back for another worker
exec "${SUITE_PYTHON:-python}" -m tracking.study \
  --tune-budget "${SUITE_TUNE_BUDGET:-6x8}" --seeds "${SUITE_SEEDS:-3}" \
  --storage "$SUITE_STORAGE" ${extra[@]+"${extra[@]}"}
