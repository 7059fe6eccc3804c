"""Resuming an interrupted run: its own settings read back, its newest checkpoint loaded, the
gaps in its metrics refilled.

    config = resume_config(run_id)                  # ConfigError for a finished or unknown run
    start = resume_point(run_id, config, data)      # model + optimizer state, history, stopper

A resume (`python -m tracking.train --resume RUN_ID`) uses exactly the values the run used: its
`effective_*` params and its recipe as logged (`optimizer`, `weight_decay`,
`warmup_fraction`, `augment_shift`, `arch_*`), never today's registry, so a recipe edited
between the interruption and the resume changes nothing in the middle of a run. The
checkpoints themselves (their format, writing and finding them) are `tracking.training.checkpoints`.
"""

from __future__ import annotations

import ast
import math
import tempfile
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any

import keras
import mlflow
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from models import MODELS, options
from tracking.cli import boolean, unquote
from tracking.config import Config, ConfigError
from tracking.data.batches import full_batches
from tracking.data.dataset import Dataset
from tracking.data.loaders import DataError
from tracking.store.lifecycle import live_process
from tracking.training.callbacks import ResumableEarlyStopping
from tracking.training.checkpoints import (
    BEST_SUFFIX,
    WEIGHTS_FILE,
    complete_checkpoints,
    download_best_weights,
    latest_checkpoint,
    load_arrays,
    restore,
)
from tracking.training.classifier import (
    build_classifier,
    compile_classifier,
    load_classifier,
    restore_seed_states,
)


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
    if not complete_checkpoints(run_id):
        every = unquote(run.data.params.get("checkpoint_every", "1"))
        raise ConfigError(f"cannot resume run {run_id}: it has no complete checkpoint (it "
                          f"checkpoints every {every} epochs and stopped before the first, or "
                          "its artifact location refused it); start a new run")
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
