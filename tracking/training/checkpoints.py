"""Per-epoch checkpoints a run can resume from, even after SIGKILL or a lost machine, and the
resume itself: the run's own settings read back, its checkpoint loaded, its gaps refilled.

Each completed epoch k is written locally, atomically (temporary file + `os.replace`), then
uploaded to the run's artifacts as `checkpoints/epoch-000k/{model.keras,state.json}`:
the model (with optimizer state) first, the small state file last. A folder without a
readable state.json is incomplete and ignored, so a half-written upload never replaces a
good checkpoint. The best weights so far live beside them as
`checkpoints/best-epoch-000k.weights.h5`. Older folders are removed once a newer one is
complete; a run that finishes cleanly drops its checkpoints (its model is logged).

A resume (`python -m tracking.train --resume RUN_ID`) uses exactly the values the run used: its
`effective_*` params and its recipe as logged (`optimizer`, `weight_decay`,
`warmup_fraction`, `augment_shift`, `arch_*`), never today's registry, so a recipe edited
between the interruption and the resume changes nothing in the middle of a run.
"""

from __future__ import annotations

import ast
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from models import MODELS, options
from tracking.cli import boolean, unquote
from tracking.config import Config, ConfigError
from tracking.data.batches import full_batches
from tracking.data.dataset import DataError, Dataset
from tracking.training.callbacks import ResumableEarlyStopping
from tracking.training.classifier import (
    build_classifier,
    compile_classifier,
    load_classifier,
    restore_seed_states,
)
from tracking.training.provenance import live_process

ARTIFACT_DIR = "checkpoints"
WEIGHTS_FILE = "weights.npz"  # model weights and optimizer variables (NumPy arrays)
LEGACY_MODEL_FILE = "model.keras"  # checkpoints written before weights.npz: a whole model
STATE_FILE = "state.json"
BEST_SUFFIX = ".weights.npz"
LEGACY_BEST_SUFFIX = ".weights.h5"


def atomic_save(path: Path, write: Callable[[str], None]) -> None:
    """Write `path` through `write(tmp_path)` so readers see the old file or the new one."""
    tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")  # keeps Keras's required suffix
    write(str(tmp))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _artifact_repo(run_id: str) -> Any:
    return get_artifact_repository(mlflow.get_run(run_id).info.artifact_uri)


def drop_checkpoints(run_id: str) -> None:
    """Delete run `run_id`'s checkpoints (a finished run's logged model supersedes them)."""
    try:
        _artifact_repo(run_id).delete_artifacts(ARTIFACT_DIR)
    except Exception:  # noqa: BLE001 - some stores cannot delete; stale files cost space only
        pass


class CheckpointStore:
    """Writes and uploads the checkpoints of one run; one instance per training process.

    `save` copies what it needs out of the model (milliseconds) and hands the writing and
    uploading to one background thread as one job per epoch (the best weights first, then the
    checkpoint), while training goes on: epoch k's job travels during epoch k + 1. At most one
    job waits: the next `save` first lets the previous finish. `close` (and so the end of a
    run, Ctrl-C and SIGTERM too) waits for the last one, so a run stopped by a signal leaves
    its last epoch's checkpoint complete; after SIGKILL the one in flight may be missing, and
    the resume starts one epoch earlier.
    """

    def __init__(self, run_id: str, every: int = 1) -> None:
        self.run_id = run_id
        self.every = every
        self.local = Path(tempfile.mkdtemp(prefix=f"ckpt-{run_id[:8]}-"))
        self.client = mlflow.MlflowClient()
        self.best_file: str | None = None
        self._uploaded: list[str] = []
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: Future | None = None

    def save(self, model: keras.Model, epoch: int, state: dict[str, Any],
             best: bool = False) -> None:
        """After `epoch` (1-based) completed: when `best`, its weights as the best so far (the
        previous best is dropped); every `every` epochs a checkpoint (weights and optimizer
        state, then the state file: history, early stopping, random generators)."""
        checkpoint = self.every > 0 and epoch % self.every == 0
        best = best and self.every > 0
        if not (best or checkpoint):
            return
        # one copy of the weights serves both files, and one job per epoch means the next
        # epoch's save never waits for this epoch's best weights to be uploaded
        snap = snapshot(model) if checkpoint else {"w": model.get_weights()}
        self._submit(self._write_epoch, snap, epoch, state, best, checkpoint)

    def _submit(self, job: Any, *args: Any) -> None:
        self.wait()
        self._pending = self._writer.submit(job, *args)

    def wait(self) -> None:
        """Until the job in flight is done (its failure is reported, never raised)."""
        if self._pending is not None:
            error = self._pending.exception()
            if error is not None:
                print(f"warning: a checkpoint was not saved ({type(error).__name__}: {error})",
                      file=sys.stderr)
            self._pending = None

    def _write_epoch(self, snap: dict[str, list[np.ndarray]], epoch: int,
                     state: dict[str, Any], best: bool, checkpoint: bool) -> None:
        if best:
            self._write_best(snap["w"], epoch)
        if checkpoint:
            self._write_checkpoint(snap, epoch, state)

    def _write_best(self, weights: list[np.ndarray], epoch: int) -> None:
        name = f"best-epoch-{epoch:04d}{BEST_SUFFIX}"
        path = self.local / name
        atomic_save(path, lambda p: _save_arrays(p, {"w": weights}))
        try:
            self.client.log_artifact(self.run_id, str(path), ARTIFACT_DIR)
        except Exception:  # noqa: BLE001 - server away: the previous best stays the best
            return
        previous, self.best_file = self.best_file, name
        if previous and previous != name:
            self._delete(f"{ARTIFACT_DIR}/{previous}")
        path.unlink(missing_ok=True)

    def _write_checkpoint(self, snap: dict[str, list[np.ndarray]], epoch: int,
                          state: dict[str, Any]) -> None:
        folder = self.local / f"epoch-{epoch:04d}"
        folder.mkdir(exist_ok=True)
        atomic_save(folder / WEIGHTS_FILE, lambda p: _save_arrays(p, snap))
        state = {**state, "epochs_done": epoch, "best_file": self.best_file,
                 "saved_at": time.time()}
        atomic_save(folder / STATE_FILE,
                    lambda p: Path(p).write_text(json.dumps(state, indent=1)))
        target = f"{ARTIFACT_DIR}/{folder.name}"
        try:
            self.client.log_artifact(self.run_id, str(folder / WEIGHTS_FILE), target)
            self.client.log_artifact(self.run_id, str(folder / STATE_FILE), target)  # completes
        except Exception:  # noqa: BLE001 - server away: the previous checkpoint stays
            shutil.rmtree(folder, ignore_errors=True)
            return
        for old in self._uploaded:
            self._delete(old)
        self._uploaded = [target]
        shutil.rmtree(folder, ignore_errors=True)

    def drop_all(self) -> None:
        """After a clean finish: the logged model supersedes the checkpoints."""
        self.wait()
        drop_checkpoints(self.run_id)

    def close(self) -> None:
        self.wait()
        self._writer.shutdown(wait=True)
        shutil.rmtree(self.local, ignore_errors=True)

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _delete(self, artifact_path: str) -> None:
        try:
            _artifact_repo(self.run_id).delete_artifacts(artifact_path)
        except Exception:  # some stores cannot delete; a stale file costs space only
            pass


def snapshot(model: keras.Model) -> dict[str, list[np.ndarray]]:
    """Copies of the model's weights (`get_weights` order) and its optimizer's variables."""
    return {"w": model.get_weights(),
            "o": [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]}


def restore(model: keras.Model, arrays: dict[str, list[np.ndarray]]) -> None:
    """Put a `snapshot` back into a compiled model of the same architecture (its optimizer is
    built first, so a resumed fit continues the step count and the schedule)."""
    model.set_weights(arrays["w"])
    model.optimizer.build(model.trainable_variables)
    variables = model.optimizer.variables
    if len(variables) != len(arrays["o"]):
        raise ValueError(f"the checkpoint holds {len(arrays['o'])} optimizer variables, the "
                         f"model's optimizer {len(variables)}")
    for variable, value in zip(variables, arrays["o"], strict=True):
        variable.assign(value)


def _save_arrays(path: str, arrays: dict[str, list[np.ndarray]]) -> None:
    with open(path, "wb") as f:  # an open file: np.savez would add ".npz" to a name
        np.savez(f, **{f"{group}{i}": a for group, values in arrays.items()
                       for i, a in enumerate(values)})


def load_arrays(path: str | Path) -> dict[str, list[np.ndarray]]:
    """The groups of arrays `_save_arrays` wrote (`w`: weights, `o`: optimizer), in order."""
    with np.load(path) as stored:
        groups: dict[str, list[np.ndarray]] = {}
        for key in sorted(stored.files, key=lambda k: (k[0], int(k[1:]))):
            groups.setdefault(key[0], []).append(stored[key])
    return groups


def latest_checkpoint(run_id: str, into: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """Download the newest complete checkpoint of `run_id`: (its weights.npz, or the
    model.keras of an older checkpoint, and its state), or None."""
    client = mlflow.MlflowClient()
    folders = sorted((f.path for f in client.list_artifacts(run_id, ARTIFACT_DIR)
                      if f.is_dir and Path(f.path).name.startswith("epoch-")), reverse=True)
    for folder in folders:
        try:
            state_path = client.download_artifacts(run_id, f"{folder}/{STATE_FILE}", str(into))
            state = json.loads(Path(state_path).read_text())
            names = {Path(f.path).name for f in client.list_artifacts(run_id, folder)}
            name = WEIGHTS_FILE if WEIGHTS_FILE in names else LEGACY_MODEL_FILE
            weights_path = client.download_artifacts(run_id, f"{folder}/{name}", str(into))
        except Exception:  # incomplete or unreadable: try the one before
            continue
        return Path(weights_path), state
    return None


def download_best_weights(run_id: str, name: str, into: str | Path) -> Path | None:
    try:
        return Path(mlflow.MlflowClient().download_artifacts(run_id, f"{ARTIFACT_DIR}/{name}",
                                                             str(into)))
    except Exception:
        return None


# --------------------------------------------------------------------------- resuming


def config_from_params(params: dict[str, str]) -> Config:
    """The resolved Config a run used, read back from its params: each setting's
    `effective_*` value where one was logged, and the recipe as logged (fields not logged, as
    in runs from before they were, come from the registry's recipe)."""
    values: dict[str, Any] = {}
    for f in fields(Config):
        text = params.get(f"effective_{f.name}", params.get(f.name))
        if text is None or not f.metadata.get("param", True):
            continue
        text = unquote(text)
        kind = str(f.type)  # e.g. "int | None"
        if text == "auto" and "None" in kind:
            values[f.name] = None
        elif "bool" in kind:
            values[f.name] = boolean(f.name, auto=True)(text)
        elif "int" in kind:
            values[f.name] = int(text)
        elif "float" in kind:
            values[f.name] = float(text)
        else:
            values[f.name] = text
    config = Config(**values)
    recipe = MODELS[config.model].recipe
    logged = {"optimizer": str, "weight_decay": float, "warmup_fraction": float}
    changes = {k: kind(unquote(params[k])) for k, kind in logged.items() if k in params}
    if config.augment and "augment_shift" in params:
        changes["shift"] = float(unquote(params["augment_shift"]))
    if "optimizer" in params:  # the run logged its recipe: its options are the arch_* params
        changes["model_options"] = options(**{k[len("arch_"):]: _literal(v)
                                              for k, v in params.items() if k.startswith("arch_")})
    return replace(config, recipe=replace(recipe, **changes)).resolved()


def _literal(text: str) -> Any:
    """A logged architecture option back as a Python value ("256" -> 256, "(3, 5)" -> (3, 5))."""
    try:
        return ast.literal_eval(unquote(text))
    except (ValueError, SyntaxError):
        return unquote(text)


def resume_config(run_id: str) -> Config:
    """The resolved Config run `run_id` trained with (`config_from_params`). Raises
    ConfigError for an unknown or finished run."""
    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except MlflowException as err:
        raise ConfigError(f"cannot resume: no run {run_id!r} in {mlflow.get_tracking_uri()} "
                          f"({err.error_code})") from None
    if run.info.status == "FINISHED":
        raise ConfigError(f"cannot resume run {run_id}: it already finished")
    if "model" not in run.data.params or run.data.tags.get("run_kind"):
        raise ConfigError(f"cannot resume run {run_id}: it is not a training run "
                          f"({run.data.tags.get('run_kind') or 'no model param'})")
    alive = live_process(run.data.tags) if run.info.status == "RUNNING" else ""
    if alive:
        raise ConfigError(f"cannot resume run {run_id}: it is still running ({alive}); "
                          "stop that process first")
    if not mlflow.MlflowClient().list_artifacts(run_id, ARTIFACT_DIR):
        raise ConfigError(f"cannot resume run {run_id}: it saved no checkpoint (it stopped "
                          "before its first epoch ended, or ran with --checkpoint-every 0); "
                          "start a new run")
    return config_from_params(run.data.params)


@dataclass
class StartPoint:
    """Where training starts: a compiled model, and what a resumed run had done already."""

    model: keras.Model
    epochs_done: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    early_stopping: dict[str, Any] | None = None  # ResumableEarlyStopping.state()
    best_weights: list | None = None

    def early_stopper(self, patience: int) -> ResumableEarlyStopping:
        """Early stopping on val_loss, restoring the best weights, from this point's state."""
        return ResumableEarlyStopping(monitor="val_loss", patience=patience,
                                      restore_best_weights=True,
                                      initial_state=self.early_stopping,
                                      initial_best_weights=self.best_weights)

    def continue_run(self, run_id: str) -> set[int]:
        """Mark the active run `run_id` as resumed here, and refill its metric gaps. Returns
        the epochs after this checkpoint whose metrics the stopped process had logged already
        (killed between an epoch's metrics and its checkpoint upload): the resumed run does not
        log them again (`MlflowMetrics(skip_epochs=...)`), so each epoch stays logged once."""
        mlflow.set_tags({"resumed_from_epoch": str(self.epochs_done), "stop_reason": ""})
        logged = relog_missing_epochs(run_id, self.history)
        return {step for step in logged if step > self.epochs_done}

    def finished_by(self, config: Config) -> bool:
        """Whether the resumed run had already ended: all epochs run, or patience used up."""
        stopped = self.early_stopping and self.early_stopping["wait"] >= config.patience
        return self.epochs_done >= config.epochs or bool(stopped)


def resume_point(run_id: str, config: Config, data: Dataset) -> StartPoint:
    """The newest complete checkpoint of `run_id`: model with optimizer state and step,
    history, early-stopping state and best weights. Raises DataError when there is none."""
    with tempfile.TemporaryDirectory(prefix="resume-") as scratch:
        found = latest_checkpoint(run_id, scratch)
        if found is None:
            raise DataError(f"run {run_id} has no complete checkpoint to resume from")
        path, state = found
        if path.name == WEIGHTS_FILE:
            model = compile_classifier(build_classifier(config, data), config,
                                       full_batches(len(data.y_train), config.batch_size))
            restore(model, load_arrays(path))
        else:
            model = load_classifier(path)
        restore_seed_states(model, state.get("seeds"))
        start = StartPoint(model, int(state["epochs_done"]), state["history"],
                           state.get("early_stopping"))
        if state.get("best_file"):
            best_path = download_best_weights(run_id, state["best_file"], scratch)
            if best_path is not None and best_path.name.endswith(BEST_SUFFIX):
                start.best_weights = load_arrays(best_path)["w"]
            elif best_path is not None:  # an older checkpoint's .weights.h5
                best = build_classifier(config, data)
                best.load_weights(best_path)
                start.best_weights = best.get_weights()
    return start


def relog_missing_epochs(run_id: str, history: list[dict[str, float]]) -> set[int]:
    """A process killed between its checkpoint and its metrics leaves a gap: fill it.
    Returns the epochs (steps) the run had logged before."""
    client = mlflow.MlflowClient()
    logged = {m.step for m in client.get_metric_history(run_id, "loss")}
    now = int(time.time() * 1000)
    missing = [Metric(k, v, now, step) for step, h in enumerate(history, start=1)
               if step not in logged for k, v in h.items() if math.isfinite(v)]
    if missing:
        client.log_batch(run_id, metrics=missing)
    return logged
