#!/usr/bin/env bash
# Run HERE, before spending device time: scripts/gpu_check.sh on this CPU, in a Python 3.12
# venv that holds only packages the device image lists (jax, numpy, pandas, scikit-learn, ...;
# no TensorFlow, no MLflow, no Keras), with the carried wheels installed exactly as there.
# A tiny Fashion-MNIST subset and 2 epochs: it checks that the carried set is complete and the
# check runs end to end under JAX, not speed or accuracy. About 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${SIM_VENV:-/tmp/gpu-sim-venv}
py312=${PY312:-python3.12}
"$py312" -c "" 2>/dev/null || py312="$HOME/.pyenv/versions/3.12.1/bin/python"
if [ ! -x "$venv/bin/python3" ]; then
  "$py312" -m venv "$venv"
  # names from the device's package list (device README, KINDS.md) that the check may touch
  "$venv/bin/pip" install -q "jax==0.11.2" numpy pandas scikit-learn scipy matplotlib pillow \
    protobuf requests pyyaml jinja2 markupsafe werkzeug click packaging pyarrow h5py \
    ml-dtypes rich psutil cloudpickle absl-py typing-extensions anyio h11 httpx httpcore idna \
    certifi charset-normalizer urllib3 python-dateutil six joblib threadpoolctl zipp attrs \
    pygments markdown-it-py mdurl fsspec tqdm annotated-doc
fi
[ -d .whl ] || bash scripts/gpu_wheels.sh
[ -d .data/fashion-mnist ] || bash scripts/gpu_data.sh
rm -rf /tmp/gpu-sim-site /tmp/gpu-sim-out
PATH="$venv/bin:$PATH" SITE=/tmp/gpu-sim-site OUT=/tmp/gpu-sim-out \
  GPU_CHECK_ARGS="${GPU_CHECK_ARGS:---limit 2000 --epochs 2 --batch-size 128}" \
  bash scripts/gpu_check.sh
