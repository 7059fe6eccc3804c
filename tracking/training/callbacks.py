"""Keras callbacks of a tracked run, one job each, in the order `train()` passes them to `fit`:

    Validation          val_loss, val_accuracy (and val_seconds) from one padded prediction pass
    LearningRateMetric  learning_rate at the end of the epoch (schedules evaluated)
    EpochTimer          epoch_seconds and train_images_per_second (the epoch minus val_seconds)
    EpochHistory        every epoch's logs, continuing a resumed run's
    ResumableEarlyStopping   Keras's EarlyStopping on val_loss, restartable from a checkpoint
    Checkpointer        best weights and a resumable checkpoint (tracking.training.checkpoints)
    MlflowMetrics       the epoch's metrics to MLflow (step = epoch, from 1), buffered offline
    NanGuard            a non-finite loss ends the run FAILED (NonFiniteLoss)

Each adds what it measures to Keras's `logs`, which every callback after it sees: that is how
validation's timing reaches the timer and the metrics reach MLflow. They run once per epoch,
never per batch, so they cost nothing on the accelerator's hot path.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow.entities import Metric, RunTag

from tracking.data.batches import Padded
from tracking.evaluation.evaluate import crossentropy
from tracking.store.lifecycle import HEARTBEAT_TAG, StopRun
from tracking.training.checkpoints import ArtifactsUnwritable, CheckpointStore
from tracking.training.classifier import seed_states

VAL_SECONDS = "val_seconds"  # logs key: seconds of this epoch's validation pass
MLFLOW_BATCH_LIMIT = 1000  # metrics per log_batch call


class NonFiniteLoss(StopRun):
    status = "FAILED"


class Validation(keras.callbacks.Callback):
    """`val_loss` and `val_accuracy` after each epoch, from one padded prediction pass, and
    `val_seconds`, its duration.

    It replaces `fit(validation_data=...)`, whose ragged last batch compiles the evaluation
    step twice, and shares its compiled predict step with the test evaluation (see
    tracking.data.batches). Place it first: the callbacks after it read what it adds to `logs`.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        super().__init__()
        self.images = Padded(x)
        self.y = np.asarray(y).astype(np.int64)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        started = time.perf_counter()
        probs = self.images.predict(self.model)
        if logs is not None:
            logs["val_accuracy"] = float(np.mean(probs.argmax(axis=1) == self.y))
            logs["val_loss"] = crossentropy(probs, self.y)
            logs[VAL_SECONDS] = time.perf_counter() - started


def current_learning_rate(optimizer: keras.Optimizer) -> float:
    """The optimizer's learning rate at its current step (schedules evaluated)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class LearningRateMetric(keras.callbacks.Callback):
    """`learning_rate`: the optimizer's rate after the epoch's last step."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = current_learning_rate(self.model.optimizer)


PROGRESS_ENV = "KERAS_MLFLOW_SUITE_PROGRESS_SECONDS"  # seconds between progress lines
PROGRESS_SECONDS = 10.0


def _duration(seconds: float) -> str:
    """`42 s`, `7 min`, `2.5 h`: a duration as a person reads it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class ProgressLines(keras.callbacks.Callback):
    """Progress for a log file rather than a terminal (Keras's `verbose=2` prints only at an
    epoch's end, 70 s of silence for a VGG19 epoch on a 2-core CPU): within an epoch a line
    `epoch 3/10: step 120/750 (16%), 0.41 s/step, epoch ends in 4 min` at most every
    `interval` seconds (PROGRESS_SECONDS, or $KERAS_MLFLOW_SUITE_PROGRESS_SECONDS), and after
    each epoch the run's time left at the pace so far (an upper bound: early stopping may end
    it sooner). One line each, so a log grows by a few lines a minute."""

    def __init__(self, epochs: int, steps: int, interval: float | None = None,
                 stream: Any = None) -> None:
        super().__init__()
        self.epochs, self.steps = epochs, steps
        self.interval = float(os.environ.get(PROGRESS_ENV, PROGRESS_SECONDS)) \
            if interval is None else interval
        self.stream = stream
        self._epoch = 0
        self._epoch_start = self._last = 0.0
        self._durations: list[float] = []

    def _say(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._epoch_start = self._last = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        if now - self._last < self.interval:
            return
        self._last = now
        done = batch + 1
        per_step = (now - self._epoch_start) / done
        self._say(f"epoch {self._epoch + 1}/{self.epochs}: step {done}/{self.steps} "
                  f"({100 * done / self.steps:.0f}%), {per_step:.2f} s/step, epoch ends in "
                  f"{_duration(per_step * (self.steps - done))}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._durations.append(time.perf_counter() - self._epoch_start)
        left = self.epochs - (epoch + 1)
        if left > 0:
            pace = float(np.mean(self._durations[-3:]))
            self._say(f"epoch {epoch + 1}/{self.epochs} took {_duration(self._durations[-1])};"
                      f" at most {left} more, about {_duration(pace * left)} "
                      "(early stopping may end sooner)")


class EpochTimer(keras.callbacks.Callback):
    """`epoch_seconds` (the whole epoch, validation included) and `train_images_per_second`
    (images per epoch over the epoch's seconds minus `val_seconds`, when a Validation callback
    before this one logged them). One clock, `time.perf_counter`; also kept in `epoch_seconds`
    and `train_seconds` (lists, one entry per epoch of this fit)."""

    def __init__(self, images_per_epoch: int) -> None:
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.epoch_seconds: list[float] = []
        self.train_seconds: list[float] = []
        self.starts: list[float] = []  # perf_counter at each epoch's start, then at the end
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()
        self.starts.append(self._start)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.starts.append(time.perf_counter())

    def epoch_durations(self) -> list[float]:
        """Seconds from each epoch's start to the next one's (the last: to the end of
        training): every callback of the epoch included, wherever it sits in the list."""
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        total = time.perf_counter() - self._start
        train = total - float((logs or {}).get(VAL_SECONDS, 0.0))
        self.epoch_seconds.append(total)
        self.train_seconds.append(train)
        if logs is not None:
            logs["epoch_seconds"] = total
            logs["train_images_per_second"] = self.images_per_epoch / max(train, 1e-9)


class EpochHistory(keras.callbacks.Callback):
    """Every epoch's logs as floats (`epochs[k]` is epoch k + 1), starting from a resumed
    run's history; what checkpoints store and what `train()` returns."""

    def __init__(self, epochs: list[dict[str, float]] | None = None) -> None:
        super().__init__()
        self.epochs: list[dict[str, float]] = list(epochs or [])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs.append({k: float(v) for k, v in (logs or {}).items()})

    def as_columns(self) -> dict[str, list[float]]:
        """{metric: [value per epoch]}, NaN where an epoch lacks the metric."""
        keys = dict.fromkeys(k for h in self.epochs for k in h)
        return {k: [h.get(k, float("nan")) for h in self.epochs] for k in keys}


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that can start from a resumed run's state (and its best weights)."""

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


class Checkpointer(keras.callbacks.Callback):
    """After each epoch with a finite loss: the best weights when this epoch is the early
    stopper's best, then a resumable checkpoint (model with optimizer state, history, the
    stopper's state, the random generators' states) through `store`. An epoch with a
    non-finite loss is never checkpointed: its weights are broken. Place after EpochHistory
    and the stopper, whose state it saves."""

    def __init__(self, store: CheckpointStore, stopper: ResumableEarlyStopping,
                 history: EpochHistory) -> None:
        super().__init__()
        self.store = store
        self.stopper = stopper
        self.history = history

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not math.isfinite(float((logs or {}).get("loss", 0.0))):
            return
        self.store.save(self.model, epoch + 1, {"history": list(self.history.epochs),
                                                "early_stopping": self.stopper.state(),
                                                "seeds": seed_states(self.model)},
                        best=self.stopper.best_epoch == epoch)
        if self.store.failure:  # an earlier write was refused: stop at this epoch's end
            raise ArtifactsUnwritable(self.store.failure, epoch=epoch + 1)


class MlflowMetrics(keras.callbacks.Callback):
    """The epoch's logs as metrics of run `run_id` (step = epoch, from 1) with a `heartbeat`
    tag, in one call. The call is MLflow's asynchronous logging (`log_batch(synchronous=False)`)
    so training does not wait for the store; the next epoch (or `flush()`) collects its
    outcome. When the tracking server is away, training goes on: the metrics stay in
    `pending` and go with the next epoch's (`flush()` sends them at the end). Epochs in
    `skip_epochs` (1-based; a resumed run's epochs logged before its stop) are not logged.

    With a `store` (CheckpointStore; Checkpointer placed before this callback), an epoch that
    is being checkpointed has its metrics held until that checkpoint's upload has ended, then
    sent at the next training step: the store never shows an epoch whose checkpoint a stop
    could still lose, and training never waits for the upload."""

    def __init__(self, run_id: str, skip_epochs: set[int] | frozenset[int] = frozenset(),
                 store: CheckpointStore | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.skip_epochs = skip_epochs
        self.store = store
        self.client = mlflow.MlflowClient()
        self.pending: list[Metric] = []  # metrics the tracking server has not taken yet
        self.held: list[tuple[int, list[Metric]]] = []  # (epoch, metrics) awaiting its upload
        self.offline = False
        self._in_flight: tuple[list[Any], list[Metric]] | None = None  # (operations, metrics)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now_ms = int(time.time() * 1000)
        logged = [] if epoch + 1 in self.skip_epochs else [
            Metric(k, float(v), now_ms, epoch + 1)
            for k, v in (logs or {}).items() if math.isfinite(float(v))]
        store = self.store
        if store is not None and store.submitted_epoch == epoch + 1 and \
                store.done_epoch < epoch + 1:
            self.held.append((epoch + 1, logged))  # after its checkpoint's upload
        else:
            self.pending.extend(logged)
        self._release(wait=False)
        self.flush(wait=False)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.held and self.store is not None and self.store.done_epoch >= self.held[0][0]:
            self._release(wait=False)
            self.flush(wait=False)

    def _release(self, wait: bool) -> None:
        """Move held metrics whose checkpoint upload has ended to `pending` (with `wait`: all
        of them, once the store's last job has ended)."""
        if wait and self.store is not None and self.held:
            self.store.wait()
        done = self.store.done_epoch if self.store is not None else 0
        while self.held and (wait or self.held[0][0] <= done):
            self.pending.extend(self.held.pop(0)[1])

    def flush(self, wait: bool = True) -> bool:
        """Send buffered metrics (with `wait`, the held ones too, once their checkpoint is
        uploaded); keep them (and go on training) if the server is away. With `wait`,
        returns once the store has them (True) or refused them (False)."""
        if wait:
            self._release(wait=True)
        if not self._collect():
            return False
        if self.pending:
            sent = list(self.pending)
            self.pending.clear()  # the same list: train() hands it to the offline fallback
            try:
                operations = [
                    self.client.log_batch(self.run_id, metrics=sent[i:i + MLFLOW_BATCH_LIMIT],
                                          tags=[RunTag(HEARTBEAT_TAG, str(int(time.time())))],
                                          synchronous=False)
                    for i in range(0, len(sent), MLFLOW_BATCH_LIMIT)]
            except Exception as err:  # noqa: BLE001 - any transport failure: keep and retry
                self._went_offline(sent, err)
                return False
            self._in_flight = (operations, sent)
        return self._collect() if wait else True

    def _collect(self) -> bool:
        """Wait for the logging call in flight; on failure its metrics go back to `pending`."""
        if self._in_flight is None:
            return True
        (operations, sent), self._in_flight = self._in_flight, None
        try:
            for operation in operations:
                operation.wait()
        except Exception as err:  # noqa: BLE001 - any transport failure: keep and retry
            self._went_offline(sent, err)
            return False
        self.offline = False
        return True

    def _went_offline(self, unsent: list[Metric], err: Exception) -> None:
        self.pending[:0] = unsent
        if not self.offline:
            print(f"warning: tracking server unreachable ({type(err).__name__}); "
                  "metrics are buffered and training goes on", file=sys.stderr)
        self.offline = True


class NanGuard(keras.callbacks.Callback):
    """A non-finite loss at the end of an epoch raises NonFiniteLoss: the run ends FAILED with
    `stop_reason` and `stop_epoch`. Place after MlflowMetrics, so the epoch's other metrics
    are logged first."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"loss became {loss} in epoch {epoch + 1}", epoch + 1)
