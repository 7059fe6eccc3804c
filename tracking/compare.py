"""Compare trained models honestly: one report from the runs of an MLflow experiment.

    python -m tracking.compare [--experiment NAME] [--filter "params.dataset = 'digits'"]
                               [--parent RUN_ID] [--output DIR] [--ui-url URL]
    mlflow run . -e compare [-P filter="..."] --experiment-name NAME

Where: the named --experiment, else (under `mlflow run`) the launched run's, else every
experiment. Which runs: without --filter, the latest finished run of each model (per data set)
outside fair studies (a data set only a fair study trained on: its latest recipe and tuned
runs); with --filter (an MLflow search filter), every finished run it selects; with --parent, every
finished run nested under that run (a study's). Only training runs count: a run needs the
`model` param and the `test_accuracy` metric; comparison and study runs and tuning trials are
skipped. A tuning study's parent run among the selected runs gets a section of its own.

The report (--output, default outputs/comparison): `comparison.md` with a table per data set
(test accuracy, macro F1, best epoch / epochs run, training time, images per second, size,
the runs by id), the ranking with a verdict on each gap (does it exceed the run-to-run
spread?), every pair of models judged on the same test images (McNemar's exact test or a
paired bootstrap, Holm's correction: tracking.comparison.paired), in a fair study each model at its
recipe against it tuned, accuracy against parameters, training seconds and inference latency
(measured here, --no-latency to skip) with the dominated models marked, the calibration and
ranking metrics side by side (ROC AUC, average precision, top-k accuracy, ECE, Brier score),
which classes each model gets wrong most (by share) and which test images every model gets
wrong (from the runs' predictions tables, on a test split they share);
`accuracy_by_model.png`, `curves_by_model.png`, `confusion_matrices.png`,
`reliability_by_model.png`, `common_mistakes_<dataset>.png` and
`accuracy_vs_cost_<dataset>.png`. Everything is logged to a run of its own tagged
`run_kind=comparison`. With no finished runs to compare it exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from tracking.cli import bad_input_exits, output_folder, unquote
from tracking.comparison.groups import (
    QUALITY_METRICS,
    VARIANT_TAG,
    ModelGroup,
    RunSummary,
    TuningSummary,
    group_runs,
    ranked_and_recipes,
)
from tracking.comparison.latency import run_latency
from tracking.comparison.report import TUNED_METRIC, render_markdown, write_figures
from tracking.comparison.verdicts import PairVerdict, paired_verdicts
from tracking.config import Config
from tracking.errors import UsageError
from tracking.evaluation.evaluate import read_confusion_csv
from tracking.evaluation.outcomes import PredictionsError, read_mistake_images, read_predictions
from tracking.store.lifecycle import launched_experiment, tracked_run
from tracking.store.ui import UI_URL_ENV, publish_runs_view, runs_table_url, ui_base_url
from tracking.training.provenance import read_class_names

RUN_KIND_TAG = "run_kind"  # comparison / study runs carry it; training runs do not
SKIPPED_KINDS = ("comparison", "study", "tuning")
TRIAL_TAG = "trial_number"  # set on every tuning trial's run
DEFAULT_OUTPUT = os.path.join("outputs", "comparison")
REPORT_FILE = "comparison.md"


class CompareError(UsageError):
    """Nothing to compare (or no such experiment); the message says what was searched."""


# --------------------------------------------------------------------------- selecting runs

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
    if not clauses:  # the latest run of each model (and fair-study variant) on each data set
        training = _latest(_plain_first(training), lambda r: (
            param(r, "dataset"), param(r, "model"), r.data.tags.get(VARIANT_TAG, "")))
        tuning = _latest(tuning, lambda r: (param(r, "dataset"), param(r, "model")))
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


# --------------------------------------------------------------------------- reading runs


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
    """Read one training run's metrics, curves, class names, confusion matrix, predictions
    table and mistake images (what an older run lacks is left empty, with a warning)."""
    params, metrics = run.data.params, run.data.metrics
    run_id = run.info.run_id
    histories = {}
    for key in ("val_accuracy", "val_loss", "train_images_per_second"):
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        histories[key] = [m.value for m in points]
    names, confusion = read_names_and_confusion(run, os.path.join(scratch, run_id))
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
        predictions=predictions,
        mistake_images=(read_mistake_images(run_id, os.path.join(scratch, run_id))
                        if predictions is not None else {}),
        variant=run.data.tags.get(VARIANT_TAG, ""),
        best_val_accuracy=metrics.get("best_val_accuracy"),
    )


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


# --------------------------------------------------------------------------- entry points


@dataclass
class Report:
    path: Path  # comparison.md
    groups: list[ModelGroup]
    tuning: list[TuningSummary]
    markdown: str
    pairs: dict[str, list[PairVerdict]]  # per data set: every pair of its ranked models


def build_report(
    experiment_ids: Sequence[str], output: str | Path = DEFAULT_OUTPUT, *,
    filter_string: str = "", parent_run_id: str = "", title: str = "",
    ui_base: str | None = None, latency: bool = True,
) -> Report:
    """Select, read and judge the runs; write comparison.md and the figures into `output`.
    With `latency`, each ranked model's inference latency is measured here (tracking.comparison.latency,
    from its first run's logged model).

    Raises CompareError when no finished training run matches.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if parent_run_id:
        try:
            mlflow.MlflowClient().get_run(parent_run_id)
        except MlflowException:
            raise CompareError(f"--parent: no run {parent_run_id!r} in "
                               f"{mlflow.get_tracking_uri()}") from None
    training, tuning = select_runs(experiment_ids, filter_string, parent_run_id)
    if not training:
        where = [(f"in experiment {title}" if title != ALL_EXPERIMENTS else f"in {title}")
                 if title else "",
                 f"nested under run {parent_run_id}" if parent_run_id else "",
                 f"matching filter {filter_string!r}" if filter_string else ""]
        raise CompareError(
            " ".join(["no finished training runs (with a test_accuracy)", *filter(None, where)])
            + "; train some first (python -m tracking.train or python -m tracking.study)")
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory(prefix="compare-") as scratch:
        groups = group_runs([summarize(client, r, scratch) for r in training])
    tunings = [tuning_summary(r) for r in tuning]
    pairs = {}
    for dataset in dict.fromkeys(g.dataset for g in groups):
        ranked, _ = ranked_and_recipes(groups, dataset)
        pairs[dataset] = paired_verdicts(ranked)
        for g in ranked if latency else ():
            g.latency = run_latency(g.runs[0].run_id)
    selection = ("every run nested under " + parent_run_id[:8] if parent_run_id
                 else f"every run matching `{filter_string}`" if filter_string
                 else "the latest finished run of each model")
    figures = [path.name for path in write_figures(groups, folder)]
    markdown = render_markdown(groups, tunings, figures, experiment=title or ",".join(
        experiment_ids), selection=selection, ui_base=ui_base_url(ui_base), pairs=pairs)
    path = folder / REPORT_FILE
    path.write_text(markdown)
    return Report(path, groups, tunings, markdown, pairs)


def log_report(report: Report) -> None:
    """Log comparison.md and the figures, and one mean/sd metric pair per model, to the
    active run; tag it with the compared run ids."""
    mlflow.log_artifacts(str(report.path.parent))
    several = len({x.dataset for x in report.groups}) > 1
    metrics = {}
    for g in report.groups:
        key = (f"{g.dataset}.{g.model}" if several else g.model) + (
            f".{g.variant}" if g.variant else "")
        metrics[f"mean_test_accuracy.{key}"] = g.mean
        if g.std is not None:
            metrics[f"sd_test_accuracy.{key}"] = g.std
        metrics[f"runs.{key}"] = g.n
        if g.latency is not None:
            metrics[f"latency_ms.{key}"] = g.latency.ms_per_image
            metrics[f"inference_images_per_second.{key}"] = g.latency.images_per_second
    for dataset in dict.fromkeys(g.dataset for g in report.groups):
        ranked, recipes = ranked_and_recipes(report.groups, dataset)
        prefix = f"{dataset}." if several else ""
        for rank, g in enumerate(ranked if recipes else (), 1):  # a fair study's
            metrics[f"rank.{prefix}{g.model}"] = rank
            recipe = next((r for r in recipes if r.model == g.model), None)
            if recipe is not None:
                metrics[f"tuning_gap.{prefix}{g.model}"] = g.mean - recipe.mean
    mlflow.log_metrics(metrics)
    ids = ",".join(r.run_id for g in report.groups for r in g.runs)
    mlflow.set_tag("compared_runs", ids[:5000])


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tracking.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="",
                   help="experiment name (default: every experiment, or the launched run's "
                        "under mlflow run)")
    p.add_argument("--filter", default="", dest="filter_string",
                   help="MLflow search filter; every finished run it selects is compared")
    p.add_argument("--parent", default="", help="compare every run nested under this run id")
    p.add_argument("--output", default=DEFAULT_OUTPUT, type=output_folder,
                   help="folder for the report")
    p.add_argument("--no-log", action="store_true", help="write the files only, log no run")
    p.add_argument("--no-latency", dest="latency", action="store_false",
                   help="do not load the models to measure their inference latency")
    p.add_argument("--ui-url", default="",
                   help=f"where the MLflow UI is, for the links (default: the tracking server, "
                        f"${UI_URL_ENV} or http://127.0.0.1:5000)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: exit 2 with a message when there is nothing to compare."""
    parser = build_parser()
    args = parser.parse_args(argv)
    filter_string, parent = args.filter_string.strip(), unquote(args.parent)
    ui_url = unquote(args.ui_url) or None
    with bad_input_exits(parser):
        name = unquote(args.experiment) or default_experiment()
        ids = experiment_ids(name)
        try:
            report = build_report(ids, args.output, filter_string=filter_string,
                                  parent_run_id=parent, title=name or ALL_EXPERIMENTS,
                                  ui_base=ui_url, latency=args.latency)
        except MlflowException as err:  # a malformed --filter
            raise CompareError(f"cannot search runs with filter {filter_string!r}: "
                               f"{str(err).splitlines()[0]}") from None
    compared = {r.experiment_id for g in report.groups for r in g.runs}
    home = ids[0] if name else compared.pop() if len(compared) == 1 else None
    if not args.no_log:
        datasets = "-".join(dict.fromkeys(g.dataset for g in report.groups))
        # tags, not params: under `mlflow run` the entry point's params are already logged
        tags = {RUN_KIND_TAG: "comparison",
                "compare_filter": filter_string or "(latest run of each model)",
                "compare_parent": parent or "(none)"}
        log_to = name or (mlflow.MlflowClient().get_experiment(home).name if home
                          else Config().experiment)
        with tracked_run(log_to, f"comparison-{datasets}", tags=tags) as run:
            log_report(report)
        home = run.info.experiment_id
    print(report.markdown)
    print(f"report: {report.path.resolve()}", file=sys.stderr)
    if home is not None:
        publish_runs_view(home)
        print(f"runs table: {runs_table_url(home, ui_url)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
