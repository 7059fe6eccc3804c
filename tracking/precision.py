"""Numeric precision of training: float32, or Keras's mixed policies, chosen per model and
device where one was measured faster without losing accuracy.

    with precision_policy(resolve_precision(config.model, "auto")):
        model = build_classifier(config, data)     # layers take the policy when built

`auto` reads the model's registry entry (`ModelSpec.faster_precision`: device kind -> policy,
from the measurements in docs/benchmarks.md) and this machine's device kind (`device_kind`):
a GPU, a CPU with bfloat16 vector or matrix units (AVX-512 BF16, AMX), or another CPU. A
model or device without a measured winner trains in float32. The classifier's output layer
stays float32 under every policy (models._common.dense_head), so probabilities and the loss
keep full precision; with mixed_float16 Keras scales the loss itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import keras

from models import MODELS

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
CPU_FLAGS = Path("/proc/cpuinfo")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of bfloat16 arithmetic units


def device_kind() -> str:
    """`gpu` when Keras's backend sees one, else `cpu_bf16` for a CPU with bfloat16 units
    (Linux /proc/cpuinfo flags BF16_FLAGS), else `cpu`."""
    if any(d.lower().startswith(("gpu", "cuda")) for d in keras.distribution.list_devices()):
        return "gpu"
    try:
        flags = CPU_FLAGS.read_text()
    except OSError:
        return "cpu"
    return "cpu_bf16" if any(flag in flags.split() for flag in BF16_FLAGS) else "cpu"


def resolve_precision(model: str, precision: str) -> str:
    """`precision` itself, or for `auto` the policy measured faster for `model` on this
    device kind (float32 where none was)."""
    if precision != "auto":
        return precision
    return MODELS[model].faster_precision.get(device_kind(), "float32")


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[str]:
    """Keras's global dtype policy `precision` while the block builds models, then the one
    before (layers keep the policy they were built with)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield precision
    finally:
        keras.config.set_dtype_policy(previous)
