"""Keras callbacks that carry a run's per-epoch record into MLflow.

Training stays a plain `model.fit(..., callbacks=...)`; these hooks run once per epoch
(never per batch, so they cost nothing on the accelerator's hot path).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow.entities import Metric, RunTag

from tracking.batches import Padded
from tracking.evaluate import crossentropy

HEARTBEAT_TAG = "heartbeat"  # unix seconds of the last completed epoch; see tracking.runs


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


class Validation(keras.callbacks.Callback):
    """`val_loss` and `val_accuracy` after each epoch, from one padded prediction pass.

    It replaces `fit(validation_data=...)`, whose ragged last batch compiles the evaluation
    step twice, and shares its compiled predict step with the test evaluation (see
    tracking.batches). Place it first: the callbacks after it read what it adds to `logs`.
    """

    def __init__(self, x: Any, y: Any) -> None:
        super().__init__()
        self.images = Padded(x)
        self.y = np.asarray(y).astype(np.int64)
        self.started = 0.0  # perf_counter at the start of the latest validation pass

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()
        probs = self.images.predict(self.model)
        if logs is not None:
            logs["val_accuracy"] = float(np.mean(probs.argmax(axis=1) == self.y))
            logs["val_loss"] = crossentropy(probs, self.y)


class EpochLogger(keras.callbacks.Callback):
    """Records each epoch: Keras's metrics plus `learning_rate`, `epoch_seconds` and
    `train_images_per_second`, logged to MLflow with step = epoch (1-based).

    Per epoch, in this order: a non-finite loss ends training (`NonFiniteLoss`, before any
    checkpoint could store broken weights); the best weights and a resumable checkpoint are
    written (when a `CheckpointStore` is given); then the metrics and a heartbeat tag go to
    MLflow in one call. Place it after the early stopper, whose verdict it reads.
    """

    def __init__(self, train_images: int, stopper: ResumableEarlyStopping | None = None,
                 checkpoints: Any = None, history: list[dict[str, float]] | None = None,
                 validation: Validation | None = None) -> None:
        super().__init__()
        self.train_images = train_images
        self.validation = validation
        self.stopper = stopper
        self.checkpoints = checkpoints
        self.history: list[dict[str, float]] = list(history or [])
        self.pending: list[Metric] = []  # metrics the tracking server has not taken yet
        self.offline = False
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        train_end = now  # training ends where this epoch's validation pass began
        if self.validation is not None and self.validation.started > self._start:
            train_end = self.validation.started
        train_seconds = train_end - self._start
        metrics: dict[str, float] = {k: float(v) for k, v in (logs or {}).items()}
        metrics["learning_rate"] = current_learning_rate(self.model.optimizer)
        metrics["epoch_seconds"] = now - self._start
        metrics["train_images_per_second"] = self.train_images / max(train_seconds, 1e-9)
        self.history.append(metrics)
        step = epoch + 1
        loss = metrics.get("loss", 0.0)
        if math.isfinite(loss):
            self._checkpoint(step)
        now_ms = int(time.time() * 1000)
        self.pending.extend(Metric(k, v, now_ms, step) for k, v in metrics.items()
                            if math.isfinite(v))
        self.flush()
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"loss became {loss} in epoch {step}", step)

    def flush(self) -> bool:
        """Send buffered metrics; keep them (and go on training) if the server is away."""
        if not self.pending:
            return True
        client = mlflow.MlflowClient()
        run_id = mlflow.active_run().info.run_id
        try:
            for i in range(0, len(self.pending), 1000):  # MLflow's batch limit
                client.log_batch(run_id, metrics=self.pending[i:i + 1000],
                                 tags=[RunTag(HEARTBEAT_TAG, str(int(time.time())))])
        except Exception as err:  # noqa: BLE001 - any transport failure: keep and retry
            if not self.offline:
                print(f"warning: tracking server unreachable ({type(err).__name__}); "
                      "metrics are buffered and training goes on", file=sys.stderr)
            self.offline = True
            return False
        self.pending.clear()
        self.offline = False
        return True

    def _checkpoint(self, step: int) -> None:
        if self.checkpoints is None:
            return
        if self.stopper is not None and self.stopper.best_epoch == step - 1:
            self.checkpoints.save_best(self.model, step)
        state = {"history": self.history,
                 "early_stopping": self.stopper.state() if self.stopper else None}
        self.checkpoints.save(self.model, step, state)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping on val_loss that can start from a resumed run's state."""

    def __init__(self, *, initial_state: dict | None = None,
                 initial_best_weights: list | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.initial_state = initial_state
        self.initial_best_weights = initial_best_weights

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self.initial_state:
            self.wait = int(self.initial_state["wait"])
            self.best = float(self.initial_state["best"])
            self.best_epoch = int(self.initial_state["best_epoch"])
            self.best_weights = self.initial_best_weights

    def state(self) -> dict[str, Any]:
        return {"wait": int(self.wait), "best": float(self.best),
                "best_epoch": int(self.best_epoch)}


def best_epoch_of(stopper: keras.callbacks.EarlyStopping, history: list[dict[str, Any]]) -> int:
    """1-based epoch whose weights the early stopper restored (the best val_loss)."""
    if stopper.best_weights is not None:
        return int(stopper.best_epoch) + 1
    losses = [h.get("val_loss", math.inf) for h in history]
    return int(min(range(len(losses)), key=losses.__getitem__)) + 1 if losses else 0
