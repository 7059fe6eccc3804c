"""When the tracking server goes away at the end of training: keep the results on disk, send
them later. Nothing a run produced is lost.

    with keep_offline_if_unreachable(run_id, model, history, best_epoch):
        finish_run(...)                   # the test evaluation, figures, the logged model
    # -> TrackingOffline(folder) when the server cannot be reached; exit status 75 (EX_TEMPFAIL)

    python -m tracking.runs upload mlflow-offline/<run_id>     # once the server is back

The folder holds the trained model (`model.keras`) and `state.json`: the history, the best
epoch and the metrics the server never took. `upload_offline` sends those metrics, then runs
the same `finish_run` as training did and ends the run FINISHED.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import mlflow
from mlflow.entities import Metric

from tracking.config import load_for
from tracking.store.connect import tracking_reachable
from tracking.store.lifecycle import TrackingOffline
from tracking.training.callbacks import EpochHistory, MlflowMetrics, best_epoch_of
from tracking.training.checkpoints import (
    ArtifactsUnwritable,
    CheckpointStore,
    atomic_save,
    disk_refused,
    drop_checkpoints,
)
from tracking.training.finish import finish_run
from tracking.training.resume import config_from_params, relog_missing_epochs

OFFLINE_ROOT = "mlflow-offline"  # relative to the working directory


def save_offline(run_id: str, model: keras.Model, history: list[dict[str, float]],
                 best_epoch: int, pending: list[Metric]) -> Path:
    """Write what the server could not take: the trained model and the unsent metrics."""
    folder = Path(OFFLINE_ROOT) / run_id
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save(folder / "model.keras", model.save)
    state = {"run_id": run_id, "history": history, "best_epoch": best_epoch,
             "pending": [m.to_dictionary() for m in pending]}
    atomic_save(folder / "state.json", lambda p: Path(p).write_text(json.dumps(state)))
    return folder


@contextlib.contextmanager
def keep_offline_if_unreachable(run_id: str, model: keras.Model,
                                history: list[dict[str, float]], best_epoch: int,
                                pending: list[Metric]) -> Iterator[None]:
    """Run the block; if it fails while the tracking server cannot be reached, save the run
    (`save_offline`), say how to upload it, and raise TrackingOffline instead. A failure with
    the server reachable is re-raised as it is."""
    try:
        yield
    except Exception as err:
        if disk_refused(err):  # the artifact location is full or read-only
            why = getattr(err, "strerror", None) or type(err).__name__
            try:
                folder = save_offline(run_id, model, history, best_epoch, pending)
            except OSError:
                raise ArtifactsUnwritable(f"model log refused ({why}); nor could it be kept "
                                          "on this machine's disk") from None
            # stop_reason keeps 250 characters: the command first, no paths of the error's
            raise ArtifactsUnwritable(
                f"model log refused ({why}); kept: python -m tracking.runs upload {folder} "
                "finishes the run once the artifact location has room") from None
        if tracking_reachable():
            raise
        folder = save_offline(run_id, model, history, best_epoch, pending)
        print(f"error: the tracking server {mlflow.get_tracking_uri()} went away; the trained"
              f" model and {len(pending)} unsent metrics are in {folder}. When the server is"
              f" back: python -m tracking.runs upload {folder}", file=sys.stderr)
        raise TrackingOffline(str(folder)) from None


@contextlib.contextmanager
def keep_weights_if_disk_refuses(run_id: str, model: keras.Model,
                                 stopper: keras.callbacks.EarlyStopping, history: EpochHistory,
                                 metrics: MlflowMetrics, store: CheckpointStore
                                 ) -> Iterator[None]:
    """Run the block (training); on Ctrl-C or SIGTERM, send the metrics still held for their
    checkpoint's upload, then stop; when the artifact location refused a checkpoint
    (ArtifactsUnwritable), save the best weights so far with `save_offline` on this machine's
    disk and raise ArtifactsUnwritable again, its reason saying where they are, how to finish
    the run with them (`python -m tracking.runs upload`) and what a resume would start from."""
    try:
        yield
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: the epochs done keep their metrics
        with contextlib.suppress(Exception):
            metrics.flush()
        raise
    except ArtifactsUnwritable as stop:
        if stopper.best_weights is not None:
            model.set_weights(stopper.best_weights)
        best = best_epoch_of(stopper, history.epochs)
        metrics.flush()  # the metrics go to the tracking store (held ones too) ...
        with contextlib.suppress(Exception):  # ... and the stopping epoch's, which the
            relog_missing_epochs(run_id, history.epochs)  # stop kept from MlflowMetrics
        try:
            folder = save_offline(run_id, model, history.epochs, best, metrics.pending)
        except OSError as err:
            kept = f"nor could the weights be kept here ({err.strerror or err})"
        else:  # the tag stop_reason keeps 250 characters: the command first
            kept = (f"epoch {best}'s weights kept: python -m tracking.runs upload {folder} "
                    "finishes the run once there is room")
        resume = (f"; --resume goes on from epoch {store.saved_epoch}"
                  if store.saved_epoch else "")
        raise ArtifactsUnwritable(f"{stop.reason}; {kept}{resume}", stop.epoch) from None


UPLOADED_TAG = "uploaded_after_outage"


class AlreadyUploaded(ValueError):
    """The saved run was uploaded before: a second upload would log everything twice."""


def upload_offline(folder: str | Path) -> str:
    """Log a run saved by `save_offline` to the (reachable again) tracking server, then drop
    its checkpoints; return its id. The data set is loaded again from the run's own params, as
    a resume would. Raises AlreadyUploaded when the run carries UPLOADED_TAG."""
    folder = Path(folder)
    state: dict[str, Any] = json.loads((folder / "state.json").read_text())
    run_id = state["run_id"]
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    if run.data.tags.get(UPLOADED_TAG) == "true":
        raise AlreadyUploaded(f"run {run_id} was uploaded already (tag {UPLOADED_TAG}); "
                              f"{folder} can be deleted")
    config = config_from_params(run.data.params)
    data = load_for(config)
    model = keras.saving.load_model(folder / "model.keras", safe_mode=True)
    pending = [Metric(m["key"], m["value"], m["timestamp"], m["step"]) for m in state["pending"]]
    for i in range(0, len(pending), 1000):
        client.log_batch(run_id, metrics=pending[i:i + 1000])
    with mlflow.start_run(run_id=run_id):
        finish_run(model, config, data, state["history"], state["best_epoch"], run_id, {},
                   again=True)  # an upload cut short may have logged part of it
        mlflow.set_tags({UPLOADED_TAG: "true", "stop_reason": ""})  # it is finished now
    drop_checkpoints(run_id)
    return run_id
