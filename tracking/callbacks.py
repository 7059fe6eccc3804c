"""Keras callbacks that carry a run's per-epoch record into MLflow.

Training stays a plain `model.fit(..., callbacks=...)`; these hooks run once per epoch
(never per batch, so they cost nothing on the accelerator's hot path).
"""

from __future__ import annotations

import math
import time
from typing import Any

import keras
import mlflow


class StopRun(Exception):  # noqa: N818 - a signal, not an error, for the caller
    """Raised inside training to end the run early with a given MLflow status and reason."""

    status = "KILLED"

    def __init__(self, reason: str, epoch: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.epoch = epoch


class NonFiniteLoss(StopRun):
    status = "FAILED"


def current_learning_rate(optimizer: keras.Optimizer) -> float:
    """The optimizer's learning rate at its current step (schedules evaluated)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class EpochLogger(keras.callbacks.Callback):
    """Logs Keras's epoch metrics plus `learning_rate`, `epoch_seconds` and
    `train_images_per_second` to the active MLflow run, step = epoch (1-based).

    `epoch_offset` shifts the step when a resumed run continues its own history.
    """

    def __init__(self, train_images: int, epoch_offset: int = 0) -> None:
        super().__init__()
        self.train_images = train_images
        self.epoch_offset = epoch_offset
        self.history: list[dict[str, float]] = []
        self._start = 0.0
        self._train_end = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()
        self._train_end = 0.0

    def on_test_begin(self, logs: dict | None = None) -> None:
        # inside fit, validation starts right after the last training step
        if self._start and not self._train_end:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        train_seconds = (self._train_end or now) - self._start
        metrics: dict[str, float] = {k: float(v) for k, v in (logs or {}).items()}
        metrics["learning_rate"] = current_learning_rate(self.model.optimizer)
        metrics["epoch_seconds"] = now - self._start
        metrics["train_images_per_second"] = self.train_images / max(train_seconds, 1e-9)
        self.history.append(metrics)
        finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
        mlflow.log_metrics(finite, step=epoch + 1 + self.epoch_offset)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Ends training at the first epoch whose loss is NaN or infinite."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLoss(f"loss became {float(loss)} in epoch {epoch + 1}", epoch + 1)


def best_epoch_of(stopper: keras.callbacks.EarlyStopping, history: list[dict[str, Any]]) -> int:
    """1-based epoch whose weights the early stopper restored (the best val_loss)."""
    if stopper.best_weights is not None:
        return int(stopper.best_epoch) + 1
    losses = [h.get("val_loss", math.inf) for h in history]
    return int(min(range(len(losses)), key=losses.__getitem__)) + 1 if losses else 0
