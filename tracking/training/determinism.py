"""Run-to-run reproducibility: what a seed fixes, and what `--deterministic` adds.

A seed (`Config.seed`) fixes the splits, the initial weights, the order of the training
batches and the augmentation (`keras.utils.set_random_seed` seeds Python, NumPy and the
backend). On one machine with the same library versions, TensorFlow on the CPU then gives the
same losses from run to run (measured: three epochs of concat_cnn twice, identical to the last
digit). What still varies:
- across machines: the CPU's instruction set and core count choose other oneDNN kernels and
  another order of floating-point sums, so figures differ in the last digits, and over many
  epochs by more (one VGG19 run on digits: test accuracy 0.958 on one machine, 0.978 on
  another);
- on a GPU: some kernels (convolution backward passes, scatter-adds) are not deterministic.

`--deterministic` asks the backend for deterministic kernels where it has a switch:
TensorFlow's `tf.config.experimental.enable_op_determinism()` (an op without a deterministic
kernel then raises instead of varying), PyTorch's `torch.use_deterministic_algorithms(True)`,
and for JAX the XLA flag `--xla_gpu_deterministic_ops=true` (it must be set before JAX starts
its GPU backend: export XLA_FLAGS yourself when importing JAX before the suite). It is logged
as the `deterministic` param. Cross-machine variation remains: compare models over several
seeds (`python -m tracking.study --seeds 3`), not single runs.
"""

from __future__ import annotations

import importlib
import os

import keras

XLA_DETERMINISM_FLAG = "--xla_gpu_deterministic_ops=true"


def enable_determinism() -> str:
    """Switch the current Keras backend to deterministic kernels (process-wide, cannot be
    undone); return what was done, for the log."""
    backend = keras.backend.backend()
    # each backend's own library, imported only when it is the backend: a JAX or PyTorch
    # installation may have no TensorFlow
    if backend == "tensorflow":
        importlib.import_module("tensorflow").config.experimental.enable_op_determinism()
        return "tensorflow op determinism"
    if backend == "torch":
        importlib.import_module("torch").use_deterministic_algorithms(True)
        return "torch deterministic algorithms"
    if backend == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        if XLA_DETERMINISM_FLAG not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} {XLA_DETERMINISM_FLAG}".strip()
        return "XLA deterministic GPU ops"
    return f"no switch for backend {backend}"
