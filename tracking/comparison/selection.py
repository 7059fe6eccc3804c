"""Which runs a comparison compares, read back from the store: the selection rules of
`python -m tracking.compare` (module docstring there) and one training run as a `RunSummary`.

    training, tuning = select_runs(experiment_ids, filter_string, parent_run_id)
    summary = summarize(mlflow.MlflowClient(), training[0], scratch_folder)

By default the latest run of each model is taken per data set, image size and budget
(`--limit`, epochs), so a later smoke run never hides a full one. Only training runs count:
a run needs the `model` param and the `test_accuracy` metric;
comparison, study and tuning parent runs (tag `run_kind`) and tuning trials (`trial_number`)
are skipped. `CompareError` (exit status 2) says what was searched when nothing matches.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Run

from models import MODELS
from tracking.cli import unquote
from tracking.comparison.groups import (
    QUALITY_METRICS,
    TUNED_METRIC,
    VARIANT_TAG,
    RunSummary,
    TuningSummary,
)
from tracking.errors import UsageError
from tracking.evaluation.class_names import read_class_names
from tracking.evaluation.evaluate import read_confusion_csv, read_per_class_metrics
from tracking.evaluation.outcomes import PredictionsError, read_mistake_images, read_predictions
from tracking.store.lifecycle import RUN_KIND_TAG, TRIAL_TAG, launched_experiment

SKIPPED_KINDS = ("comparison", "study", "tuning")


class CompareError(UsageError):
    """Nothing to compare (or no such experiment); the message says what was searched."""


ALL_EXPERIMENTS = "all experiments"  # the title of a report over every experiment


def is_training_run(run: Run) -> bool:
    """A finished training run with a test evaluation, not a report, study or trial."""
    tags = run.data.tags
    return ("model" in run.data.params and "test_accuracy" in run.data.metrics
            and tags.get(RUN_KIND_TAG) not in SKIPPED_KINDS and TRIAL_TAG not in tags)


def is_tuning_run(run: Run) -> bool:
    """A tuning study's parent run (tagged so, or it scored the tuned model on the test
    split)."""
    tags = run.data.tags
    return TRIAL_TAG not in tags and (TUNED_METRIC in run.data.metrics
                                      or tags.get(RUN_KIND_TAG) == "tuning")


def search_finished(experiment_ids: Sequence[str], filter_string: str = "") -> list[Run]:
    """Every finished run matching the filter, newest first (MLflow pages through them)."""
    clauses = ["attributes.status = 'FINISHED'"] + ([filter_string] if filter_string else [])
    return mlflow.search_runs(list(experiment_ids), " and ".join(clauses),
                              order_by=["attributes.start_time DESC"], output_format="list")


def select_runs(
    experiment_ids: Sequence[str], filter_string: str = "", parent_run_id: str = "",
) -> tuple[list[Run], list[Run]]:
    """(training runs, tuning parent runs) chosen by the rules in the module docstring."""
    clauses = [filter_string] if filter_string else []
    if parent_run_id:
        clauses.append(f"tags.mlflow.parentRunId = '{parent_run_id}'")
    runs = search_finished(experiment_ids, " and ".join(clauses))
    training = [r for r in runs if is_training_run(r)]
    tuning = [r for r in runs if is_tuning_run(r)]
    if not clauses:  # the latest run of each model (and fair-study variant) on each data set,
        # image size and budget: a later smoke run never hides a full one
        training = _latest(_plain_first(training), lambda r: (
            param(r, "dataset"), param(r, "data_source"), param(r, "image_size", "32"),
            param(r, "limit", "0"), param(r, "effective_epochs"), param(r, "model"),
            r.data.tags.get(VARIANT_TAG, "")))
        tuning = _latest(tuning, lambda r: (param(r, "dataset"), param(r, "model")))
    # workers sharing one Optuna study each log a parent run with the study's totals: one
    tuning = _latest(tuning, lambda r: r.data.tags.get("study_name") or r.info.run_id)
    return training, tuning


def _plain_first(runs: list[Run]) -> list[Run]:
    """The runs outside fair studies where a data set has any, else (a data set only a fair
    study trained on) that study's recipe and tuned runs: the default report never ranks a
    study's tuned models against single runs trained apart (`--parent` shows a study)."""
    plain = {param(r, "dataset") for r in runs if not r.data.tags.get(VARIANT_TAG)}
    return [r for r in runs
            if not r.data.tags.get(VARIANT_TAG) or param(r, "dataset") not in plain]


def param(run: Run, key: str, default: str = "") -> str:
    """A param as typed (`mlflow run` logs some quoted)."""
    return unquote(run.data.params.get(key, default))


def _latest(runs: list, key: Any) -> list:
    seen, kept = set(), []
    for run in runs:  # newest first
        if key(run) not in seen:
            seen.add(key(run))
            kept.append(run)
    return kept


def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def images_per_second(history: Sequence[float]) -> float | None:
    """Training throughput: the mean after epoch 1 (which pays for tracing), else epoch 1."""
    if not history:
        return None
    return float(np.mean(history[1:])) if len(history) > 1 else float(history[0])


def summarize(client: mlflow.MlflowClient, run: Run, scratch: str) -> RunSummary:
    """Read one training run's metrics, curves, class names, confusion matrix, per-class
    figures (`read_per_class_metrics`: its per_class_metrics.csv, else its per-class metric
    keys), predictions table and mistake images (what an older run lacks is left empty,
    with a warning)."""
    params, metrics = run.data.params, run.data.metrics
    run_id = run.info.run_id
    histories = {}
    for key in ("val_accuracy", "val_loss", "train_images_per_second"):
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        histories[key] = [m.value for m in points]
    names, confusion = read_names_and_confusion(run, os.path.join(scratch, run_id))
    try:
        per_class = read_per_class_metrics(run_id, metrics, names)
    except ValueError as err:
        print(f"warning: run {run_id}: {err}", file=sys.stderr)
        per_class = None
    try:
        predictions = read_predictions(run_id)
    except PredictionsError as err:
        print(f"warning: {err}", file=sys.stderr)
        predictions = None
    return RunSummary(
        run_id=run_id, experiment_id=run.info.experiment_id,
        run_name=run.data.tags.get("mlflow.runName", run_id),
        model=param(run, "model"), dataset=param(run, "dataset", "?"),
        seed=param(run, "seed", "?"), test_accuracy=float(metrics["test_accuracy"]),
        f1_macro=metrics.get("test_f1_macro"), best_epoch=_int(metrics.get("best_epoch")),
        epochs_run=_int(metrics.get("epochs_run")), train_seconds=metrics.get("train_seconds"),
        images_per_second=images_per_second(histories["train_images_per_second"]),
        num_params=_int(params.get("num_params")), class_names=names, confusion=confusion,
        curves={k: histories[k] for k in ("val_accuracy", "val_loss")},
        quality={k: metrics[k] for k in QUALITY_METRICS if k in metrics},
        predictions=predictions, per_class=per_class,
        mistake_images=(read_mistake_images(run_id, os.path.join(scratch, run_id))
                        if predictions is not None else {}),
        variant=run.data.tags.get(VARIANT_TAG, ""),
        best_val_accuracy=metrics.get("best_val_accuracy"),
        data_source=param(run, "data_source"), data_digest=param(run, "data_digest"),
        image_size=_int(param(run, "image_size", "32")),
        limit=_int(param(run, "limit", "0")) or 0,
        epochs_bound=_int(param(run, "effective_epochs", param(run, "epochs"))),
        recipe_epochs=(MODELS[param(run, "model")].recipe.epochs
                       if param(run, "model") in MODELS else None),
        setting="" if run.data.tags.get(VARIANT_TAG) else setting_of(run),
        epochs_set=epochs_are_a_setting(run),
    )


def setting_of(run: Run) -> str:
    """How a run's settings depart from its model's recipe, in a few words (`30 epochs, batch
    128, lr 0.003`; a batch cut to a training split smaller than the batch asked for: `batch
    38, capped from 64`): "" at the recipe. Epochs below the recipe's are a budget (a smoke
    run, `groups.RunSummary.budget`), not a setting, unless the run also has a learning rate
    of its own (a tuned setting trained by hand: `8 epochs, lr 0.0058`; a smoke run with a
    smaller batch, `--epochs 1 --batch-size 32`, stays a smoke run)."""
    model = param(run, "model")
    if model not in MODELS:
        return ""
    recipe, own, own_rate = MODELS[model].recipe, [], False
    batch = _int(param(run, "effective_batch_size"))
    asked = _int(param(run, "batch_size")) or recipe.batch_size  # "auto": the recipe's
    capped = ""
    if batch and batch < asked and batch == _int(param(run, "train_size")):
        # cut to a training split smaller than one batch (tracking.training.loop)
        capped = f"batch {batch}, capped from {asked}"
    elif batch and batch != recipe.batch_size:
        own.append(f"batch {batch}")
    try:
        rate = float(param(run, "effective_learning_rate"))
    except ValueError:
        rate = recipe.learning_rate
    if abs(rate - recipe.learning_rate) > 1e-12:
        own.append(f"lr {rate:g}")
        own_rate = True
    epochs = _int(param(run, "effective_epochs"))
    if epochs and (epochs > recipe.epochs or (epochs < recipe.epochs and own_rate)):
        own.insert(0, f"{epochs} epochs")
    return ", ".join(([capped] if capped else []) + own)


def epochs_are_a_setting(run: Run) -> bool:
    """Whether the run's epochs below its recipe's are part of a setting of its own (with its
    own learning rate, `setting_of`), not a cut budget."""
    epochs = _int(param(run, "effective_epochs"))
    return bool(epochs) and f"{epochs} epochs" in setting_of(run).split(", ")


def read_names_and_confusion(run: Run, scratch: str) -> tuple[list[str], np.ndarray | None]:
    """The run's class names (`class_names.json`; else, for older runs, the confusion CSV's
    headers or the comma-joined param) and its confusion matrix (None when unreadable)."""
    run_id, params = run.info.run_id, run.data.params
    logged = read_class_names(run_id)
    names = list(logged) if logged else (
        params["class_names"].split(",") if params.get("class_names") else [])
    confusion = None
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id,
                                                   artifact_path="confusion_matrix.csv",
                                                   dst_path=scratch)
        csv_names, confusion = read_confusion_csv(Path(path).read_text(encoding="utf-8"))
        names = names if logged else (csv_names or names)
    except Exception as err:  # noqa: BLE001 - an old or partial run: report it without
        print(f"warning: run {run_id} has no readable confusion_matrix.csv ({err})",
              file=sys.stderr)
    return names, confusion


def tuning_summary(run: Run) -> TuningSummary:
    params, tags = run.data.params, run.data.tags
    return TuningSummary(
        run_id=run.info.run_id, experiment_id=run.info.experiment_id,
        model=param(run, "model", tags.get("model", "?")),
        dataset=param(run, "dataset", tags.get("dataset", "?")),
        study_name=tags.get("study_name", run.data.tags.get("mlflow.runName", "")),
        params=dict(params), metrics=dict(run.data.metrics))


def default_experiment() -> str | None:
    """The experiment to compare when none is named: the launched run's under `mlflow run`,
    else $MLFLOW_EXPERIMENT_NAME, else None (every experiment: the training runs are followed
    wherever they are, e.g. MLflow's `Default` after a plain `mlflow run . -P model=vgg19`)."""
    return launched_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "")) or None


def experiment_ids(name: str | None) -> list[str]:
    """Ids of experiment `name`, or of every active experiment for None (CompareError for a
    name that does not exist)."""
    client = mlflow.MlflowClient()
    if name is None:
        return [e.experiment_id for e in client.search_experiments()]
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise CompareError(f"no experiment named {name!r} in {mlflow.get_tracking_uri()}")
    return [experiment.experiment_id]
