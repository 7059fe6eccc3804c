#!/usr/bin/env bash
# Run HERE (not on the device): download the wheels the device image lacks into .whl/
# (git-ignored), for Python 3.12 on x86-64. The device already has jax, numpy, pandas,
# scikit-learn, matplotlib, pillow, protobuf, requests, ...; we fetch only what it lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
get() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
          --implementation cp "${plat[@]}" -d .whl "$@"; }
get keras==3.15.1 namex optree mlflow==3.17.2 mlflow-skinny==3.17.2 mlflow-tracing==3.17.2 \
    sqlalchemy alembic mako sqlparse cachetools graphene graphql-core graphql-relay flask \
    itsdangerous blinker gitpython gitdb smmap opentelemetry-api opentelemetry-sdk \
    opentelemetry-semantic-conventions opentelemetry-proto pydantic pydantic-core \
    annotated-types typing-inspection databricks-sdk google-auth pyasn1-modules rsa pyasn1 \
    fastapi starlette uvicorn greenlet python-dotenv importlib-metadata optuna colorlog
du -sh .whl
