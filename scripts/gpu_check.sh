#!/usr/bin/env bash
# One device call, under 8 minutes: the four models on Fashion-MNIST under JAX with the
# suite's own tracked loop, an SQLite MLflow store under $OUT; per model: images/s, ratio
# against the peer at the same batch size, first-epoch (compile) seconds, epochs, test
# accuracy against its goal, wall time (scripts/gpu_check.py).
#
# Here, once:   scripts/gpu_wheels.sh          # .whl/, ~21 MB, ignored by git
#               scripts/gpu_data.sh            # .data/fashion-mnist, ~31 MB, ignored by git
#               scripts/gpu_sim.sh             # the same check on this CPU, in a venv like the
#                                              # device's (Python 3.12, no TensorFlow)
# Device call:  run(command="bash scripts/gpu_check.sh", carry=[".whl", ".data"], timeout_s=540)
# Extra flags go to gpu_check.py: GPU_CHECK_ARGS="--models resnet50 --epochs 3" bash ...
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "${SITE:-/tmp/site}" .whl/*.whl
  export PYTHONPATH="${SITE:-/tmp/site}"
fi
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1
export MLFLOW_TRACKING_URI="sqlite:///$OUT/mlflow.db"
# jax preallocates 75% of the GPU by default; the check needs far less
export XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 scripts/gpu_check.py --data-dir "${DATA_DIR:-.data/fashion-mnist}" \
  --output "$OUT/gpu_check.json" ${GPU_CHECK_ARGS:-} 2>&1 | tee "$OUT/gpu_check.log"
