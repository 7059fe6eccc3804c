#!/usr/bin/env bash
# Run HERE (not on the device): download into .whl/ (git-ignored) the wheels the device
# image lacks, for its Python 3.12 on x86-64. The image already holds jax, numpy, pandas,
# scikit-learn, scipy, matplotlib, pillow, h5py, ml-dtypes, rich, absl-py, protobuf,
# requests, pyyaml, click, cloudpickle, anyio, ... (device README, KINDS.md). The set below
# is the smallest that runs scripts/gpu_check.py: mlflow-skinny (the whole client, stores
# and Keras flavor; the full `mlflow` wheel adds only the server and its UI, 12 MB that the
# 64 MiB carry cannot spare beside Fashion-MNIST). Checked by scripts/gpu_sim.sh, which runs
# the check on the CPU in a Python 3.12 venv holding only packages the device lists.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${plat[@]}" -d .whl \
  keras==3.15.1 namex optree \
  mlflow-skinny==3.17.2 mlflow-tracing==3.17.2 \
  sqlalchemy alembic mako greenlet sqlparse cachetools gitpython gitdb smmap \
  opentelemetry-api opentelemetry-sdk opentelemetry-semantic-conventions opentelemetry-proto \
  pydantic pydantic-core annotated-types typing-inspection python-dotenv importlib-metadata lazy-importer \
  databricks-sdk google-auth pyasn1-modules rsa pyasn1 fastapi starlette uvicorn \
  cryptography cffi pycparser optuna colorlog 2>&1 | grep -v "is ignored" || true
du -sh .whl
