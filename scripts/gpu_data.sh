#!/usr/bin/env bash
# Run HERE: copy Fashion-MNIST's four IDX files (Debian's dataset-fashion-mnist) into .data/,
# which git ignores, so that a device call can carry them (`carry=[".whl", ".data"]`).
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-/usr/share/datasets/fashion-mnist}
mkdir -p .data/fashion-mnist
cp "$src"/*-ubyte.gz .data/fashion-mnist/
du -sh .data
