"""Inference latency of logged classifiers, measured here: the report's process and device.

    latency = run_latency(run_id)      # groups.Latency, or None when the run logged no model

Every model of a report is measured the same way one after the other, so their figures are
comparable with each other (not with another machine's): the Keras model is loaded from the
run's logged model and its compiled predict step (`predict_on_batch`) is timed on random
uint8 images of its input size (a CNN's cost does not depend on the pixel values).

- batch 1: WARMUP_CALLS calls first (tracing, allocation), then the median wall time of
  LATENCY_REPEATS calls, in ms per image;
- a large batch (THROUGHPUT_BATCH images): one warm-up call, then THROUGHPUT_BATCH divided by
  the median of THROUGHPUT_REPEATS calls, in images per second.
"""

from __future__ import annotations

import sys
import time

import keras
import numpy as np
from mlflow.exceptions import MlflowException

from tracking.comparison.groups import Latency
from tracking.machine import accelerators, keras_devices, processor_model
from tracking.serving.pyfunc import MODEL_NAME, load_logged_classifier

WARMUP_CALLS = 5
LATENCY_REPEATS = 30
THROUGHPUT_BATCH = 256
THROUGHPUT_REPEATS = 5


def device_name() -> str:
    """Where this process predicts: the GPU model when Keras sees one, else the CPU model."""
    gpu = accelerators().get("accelerator")
    uses_gpu = "gpu" in keras_devices().lower() or "cuda" in keras_devices().lower()
    return gpu if gpu and uses_gpu else processor_model()


def measure_latency(model: keras.Model, *, repeats: int = LATENCY_REPEATS,
                    batch: int = THROUGHPUT_BATCH,
                    batch_repeats: int = THROUGHPUT_REPEATS) -> Latency:
    """Time `model`'s compiled predict step (module docstring) on random images of its input
    shape (S, S, C) and dtype. Returns ms per image at batch 1 and images/s at `batch`."""
    shape = tuple(model.inputs[0].shape[1:])
    dtype = keras.backend.standardize_dtype(model.inputs[0].dtype)
    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, size=(1, *shape)).astype(dtype)
    many = rng.integers(0, 256, size=(batch, *shape)).astype(dtype)

    def timed(x: np.ndarray, calls: int) -> float:
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            model.predict_on_batch(x)
            times.append(time.perf_counter() - started)
        return float(np.median(times))

    timed(one, WARMUP_CALLS)
    per_image = timed(one, repeats)
    timed(many, 1)
    per_batch = timed(many, batch_repeats)
    return Latency(ms_per_image=1000 * per_image, images_per_second=batch / per_batch,
                   batch=batch, device=device_name())


def run_latency(run_id: str) -> Latency | None:
    """The latency of the model logged by run `run_id` (`runs:/<id>/model`); None, with a
    warning, when the run has no loadable model."""
    try:
        model = load_logged_classifier(f"runs:/{run_id}/{MODEL_NAME}")
    except (MlflowException, OSError) as err:
        print(f"warning: no latency for run {run_id}: its model does not load "
              f"({str(err).strip().splitlines()[0][:200]})", file=sys.stderr)
        return None
    try:
        return measure_latency(model)
    finally:
        keras.backend.clear_session()
