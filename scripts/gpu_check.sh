#!/usr/bin/env bash
# One device call, under 8 minutes: the four models on Fashion-MNIST under JAX with the
# suite's own tracked loop, an SQLite MLflow store under $OUT, and per model: images/s,
# ratio against the peer baseline at the same batch size, epochs, test accuracy, wall time.
#
# Here, once:   scripts/gpu_wheels.sh
#               mkdir -p .data && cp -r /usr/share/datasets/fashion-mnist .data/
#               echo /.data/ >> .git/info/exclude
# Device call:  run(command="bash scripts/gpu_check.sh", carry=[".whl", ".data"], timeout_s=540)
set -euo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 MLFLOW_TRACKING_URI="sqlite:///$OUT/mlflow.db"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 scripts/gpu_check.py --data-dir "${DATA_DIR:-.data/fashion-mnist}" \
  --batch-size "${BATCH:-128}" --epochs "${EPOCHS:-10}" --output "$OUT/gpu_check.json" \
  2>&1 | tee "$OUT/gpu_check.log"
