"""Compare trained models honestly: one report from the runs of an MLflow experiment.

    python -m tracking.compare [--experiment NAME] [--filter "params.dataset = 'digits'"]
                               [--parent RUN_ID] [--output DIR]
    mlflow run . -e compare [-P filter="..."] --experiment-name NAME

Which runs: without --filter, the latest finished run of each model (per data set); with
--filter (an MLflow search filter), every finished run it selects; with --parent, every
finished run nested under that run (a study's). Only training runs count: a run needs the
`model` param and the `test_accuracy` metric; comparison and study runs and tuning trials are
skipped. A tuning study's parent run among the selected runs gets a section of its own.

The report (--output, default outputs/comparison): `comparison.md` with a table per data set
(test accuracy, macro F1, best epoch / epochs run, training time, images per second, size,
the runs by id), the ranking with a verdict on each gap (does it exceed the run-to-run
spread?), and which classes each model gets wrong most; `accuracy_by_model.png`,
`curves_by_model.png` and `confusion_matrices.png`. Everything is logged to a run of its own
tagged `run_kind=comparison`. With no finished runs to compare it exits with status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RUN_KIND_TAG = "run_kind"  # comparison / study runs carry it; training runs do not
SKIPPED_KINDS = ("comparison", "study", "tuning")
TRIAL_TAG = "trial_number"  # set on every tuning trial's run
TUNED_METRIC = "tuned_test_accuracy"  # a tuning study's parent run logs it
DEFAULT_OUTPUT = os.path.join("outputs", "comparison")
REPORT_FILE = "comparison.md"
FIGURES = ("accuracy_by_model.png", "curves_by_model.png", "confusion_matrices.png")
TOP_CLASSES = 3  # classes named per model in the per-class view


class CompareError(ValueError):
    """Nothing to compare (or no such experiment); the message says what was searched."""


@dataclass
class RunSummary:
    """What the report needs of one training run."""

    run_id: str
    experiment_id: str
    run_name: str
    model: str
    dataset: str
    seed: str
    test_accuracy: float
    f1_macro: float | None
    best_epoch: int | None
    epochs_run: int | None
    train_seconds: float | None
    images_per_second: float | None
    num_params: int | None
    class_names: list[str]
    confusion: np.ndarray | None
    curves: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class ModelGroup:
    """The runs of one model on one data set (one per seed, or a single run)."""

    dataset: str
    model: str
    runs: list[RunSummary]

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def accuracies(self) -> list[float]:
        return [r.test_accuracy for r in self.runs]

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float | None:
        """Sample standard deviation of the test accuracy; None for a single run."""
        return float(np.std(self.accuracies, ddof=1)) if self.n > 1 else None

    def mean_of(self, attribute: str) -> float | None:
        values = [getattr(r, attribute) for r in self.runs if getattr(r, attribute) is not None]
        return float(np.mean(values)) if values else None

    def confusion(self) -> np.ndarray | None:
        """Counts summed over the runs (None if a run lacks its matrix or the classes differ)."""
        mats = [r.confusion for r in self.runs]
        if any(m is None for m in mats) or len({m.shape for m in mats}) != 1:
            return None
        return np.sum(mats, axis=0)


@dataclass
class TuningSummary:
    """A tuning study's parent run: the tuned model against the original setting."""

    run_id: str
    experiment_id: str
    model: str
    dataset: str
    study_name: str
    params: dict[str, str]
    metrics: dict[str, float]


# --------------------------------------------------------------------------- selecting runs


def is_training_run(run: Any) -> bool:
    """A finished training run with a test evaluation, not a report, study or trial."""
    tags = run.data.tags
    return ("model" in run.data.params and "test_accuracy" in run.data.metrics
            and tags.get(RUN_KIND_TAG) not in SKIPPED_KINDS and TRIAL_TAG not in tags)


def is_tuning_run(run: Any) -> bool:
    return TUNED_METRIC in run.data.metrics and TRIAL_TAG not in run.data.tags


def search_finished(client: Any, experiment_ids: Sequence[str], filter_string: str = "") -> list:
    """Every finished run matching the filter, newest first (all pages)."""
    clauses = ["attributes.status = 'FINISHED'"] + ([filter_string] if filter_string else [])
    runs, token = [], None
    while True:
        page = client.search_runs(list(experiment_ids), " and ".join(clauses),
                                  order_by=["attributes.start_time DESC"], max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def select_runs(
    client: Any, experiment_ids: Sequence[str], filter_string: str = "",
    parent_run_id: str = "",
) -> tuple[list, list]:
    """(training runs, tuning parent runs) chosen by the rules in the module docstring."""
    clauses = [filter_string] if filter_string else []
    if parent_run_id:
        clauses.append(f"tags.mlflow.parentRunId = '{parent_run_id}'")
    runs = search_finished(client, experiment_ids, " and ".join(clauses))
    training = [r for r in runs if is_training_run(r)]
    tuning = [r for r in runs if is_tuning_run(r)]
    if not clauses:  # the latest run of each model on each data set
        training = _latest(training, lambda r: (param(r, "dataset"), param(r, "model")))
        tuning = _latest(tuning, lambda r: (param(r, "dataset"), param(r, "model")))
    return training, tuning


def param(run: Any, key: str, default: str = "") -> str:
    """A param as typed (`mlflow run` logs some quoted)."""
    return run.data.params.get(key, default).strip("'\"")


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


def summarize(client: Any, run: Any, scratch: str) -> RunSummary:
    """Read one training run's metrics, curves and confusion matrix."""
    import mlflow

    from tracking.evaluate import read_confusion_csv

    params, metrics = run.data.params, run.data.metrics
    run_id = run.info.run_id
    histories = {}
    for key in ("val_accuracy", "val_loss", "train_images_per_second"):
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        histories[key] = [m.value for m in points]
    names = params.get("class_names", "").split(",") if params.get("class_names") else []
    confusion = None
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id,
                                                   artifact_path="confusion_matrix.csv",
                                                   dst_path=os.path.join(scratch, run_id))
        csv_names, confusion = read_confusion_csv(Path(path).read_text())
        names = csv_names or names
    except Exception as err:  # noqa: BLE001 - an old or partial run: report it without
        print(f"warning: run {run_id} has no readable confusion_matrix.csv ({err})",
              file=sys.stderr)
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
    )


def tuning_summary(run: Any) -> TuningSummary:
    params, tags = run.data.params, run.data.tags
    return TuningSummary(
        run_id=run.info.run_id, experiment_id=run.info.experiment_id,
        model=param(run, "model", tags.get("model", "?")),
        dataset=param(run, "dataset", tags.get("dataset", "?")),
        study_name=tags.get("study_name", run.data.tags.get("mlflow.runName", "")),
        params=dict(params), metrics=dict(run.data.metrics))


def group_runs(summaries: Sequence[RunSummary]) -> list[ModelGroup]:
    """One group per (data set, model), best mean test accuracy first within a data set."""
    groups: dict[tuple[str, str], list[RunSummary]] = {}
    for s in summaries:
        groups.setdefault((s.dataset, s.model), []).append(s)
    out = [ModelGroup(d, m, sorted(runs, key=lambda r: (r.seed, r.run_id)))
           for (d, m), runs in groups.items()]
    return sorted(out, key=lambda g: (g.dataset, -g.mean, g.model))


# --------------------------------------------------------------------------- judging gaps


def gap_verdict(better: ModelGroup, worse: ModelGroup) -> str:
    """One sentence: is the accuracy gap between two models larger than their spread?

    The rule: with several runs each, the gap must exceed the sum of the two standard
    deviations (one-sd bands that do not overlap) and Welch's t-test must give p < 0.05; a gap
    that passes only the first is reported as not yet significant.
    With a single run on either side there is no spread to compare against.
    """
    gap = better.mean - worse.mean
    head = f"**{better.model}** over **{worse.model}**: {_pct(gap)} points"
    if better.n < 2 or worse.n < 2:
        singles = [g.model for g in (better, worse) if g.n < 2]
        return (f"{head}; {' and '.join(singles)} "
                f"{'has' if len(singles) == 1 else 'have'} a single run, so the seed-to-seed "
                "spread is unknown and this gap may be noise.")
    spread = (better.std or 0.0) + (worse.std or 0.0)
    p = _welch_p(better.accuracies, worse.accuracies)
    p_text = f", Welch's t-test p = {p:.2g}" if p is not None else ""
    if gap > spread and (p is None or p < 0.05):
        return (f"{head}, more than the spread (sd {_pct(better.std)} + {_pct(worse.std)} = "
                f"{_pct(spread)}{p_text}): the gap holds across {better.n} and {worse.n} runs.")
    if gap > spread:
        return (f"{head}, more than the spread (sd {_pct(better.std)} + {_pct(worse.std)} = "
                f"{_pct(spread)}) but not significant at 5%{p_text} with {better.n} and "
                f"{worse.n} runs: more seeds would settle it.")
    return (f"{head}, within the spread (sd {_pct(better.std)} + {_pct(worse.std)} = "
            f"{_pct(spread)}{p_text}): these runs do not separate the two models.")


def _welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    from scipy import stats

    if np.std(a) < 1e-12 and np.std(b) < 1e-12:
        return None
    with warnings.catch_warnings():  # identical accuracies (a common case) are not a problem
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def _pct(value: float | None) -> str:
    """An accuracy difference in percentage points."""
    return "?" if value is None else f"{100 * value:.2f}"


# --------------------------------------------------------------------------- per class


def class_error_sentence(group: ModelGroup) -> str:
    """Which classes a model gets wrong most, and what it takes them for, in plain words."""
    cm = group.confusion()
    names = group.runs[0].class_names
    if cm is None or len(names) != cm.shape[0]:
        return f"**{group.model}**: no confusion matrix was logged."
    over = f" (summed over {group.n} runs)" if group.n > 1 else ""
    totals = cm.sum(axis=1)
    wrong = totals - np.diag(cm)
    if wrong.sum() == 0:
        return f"**{group.model}** classified every test image correctly{over}."
    order = [i for i in np.argsort(-wrong, kind="stable") if wrong[i] > 0][:TOP_CLASSES]
    parts = []
    for i in order:
        row = cm[i].copy()
        row[i] = 0
        j = int(np.argmax(row))
        parts.append(f"`{names[i]}` ({int(wrong[i])} of {int(totals[i])} missed, "
                     f"{100 * wrong[i] / max(totals[i], 1):.0f}%, mostly taken for "
                     f"`{names[j]}`: {int(row[j])})")
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return (f"**{group.model}** gets {listed} wrong most{over}; "
            f"{int(wrong.sum())} of {int(totals.sum())} test images wrong in all.")


def hardest_for_all(groups: Sequence[ModelGroup]) -> list[str]:
    """Classes among the most-missed of every model."""
    common: set[str] | None = None
    for g in groups:
        cm = g.confusion()
        if cm is None:
            return []
        if len(g.runs[0].class_names) != cm.shape[0]:
            return []
        wrong = cm.sum(axis=1) - np.diag(cm)
        top = {g.runs[0].class_names[i] for i in np.argsort(-wrong, kind="stable")[:TOP_CLASSES]
               if wrong[i] > 0}
        common = top if common is None else common & top
    return sorted(common or [])


# --------------------------------------------------------------------------- the report


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _accuracy_cell(group: ModelGroup, attribute: str = "test_accuracy") -> str:
    values = [getattr(r, attribute) for r in group.runs if getattr(r, attribute) is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f} (single run)"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def _epochs_cell(group: ModelGroup) -> str:
    return ", ".join(f"{_fmt(r.best_epoch, 'd')} / {_fmt(r.epochs_run, 'd')}" for r in group.runs)


def render_markdown(groups: Sequence[ModelGroup], tuning: Sequence[TuningSummary], *,
                    experiment: str, selection: str, ui_base: str) -> str:
    """The whole comparison.md."""
    from tracking.server import run_url

    lines = [f"# Model comparison: {experiment}", ""]
    runs = sum(g.n for g in groups)
    lines += [f"{runs} finished training runs ({selection}), compared on "
              f"{time.strftime('%Y-%m-%d %H:%M %Z')}. Test accuracy is on each run's held-out "
              "test split; ± is the sample standard deviation over runs (seeds).", ""]
    for dataset in dict.fromkeys(g.dataset for g in groups):
        ranked = [g for g in groups if g.dataset == dataset]
        lines += [f"## {dataset}", "",
                  "| Rank | Model | Data set | Runs | Test accuracy | Macro F1 | "
                  "Best epoch / epochs run | Train s | Images/s | Parameters | Run ids |",
                  "|---:|---|---|---:|---|---|---|---:|---:|---:|---|"]
        for rank, g in enumerate(ranked, 1):
            links = ", ".join(f"[{r.run_id[:8]}]({run_url(r.experiment_id, r.run_id, ui_base)})"
                              for r in g.runs)
            lines.append(
                f"| {rank} | {g.model} | {g.dataset} | {g.n} | {_accuracy_cell(g)} | "
                f"{_accuracy_cell(g, 'f1_macro')} | {_epochs_cell(g)} | "
                f"{_fmt(g.mean_of('train_seconds'), '.0f')} | "
                f"{_fmt(g.mean_of('images_per_second'), '.0f')} | "
                f"{_fmt(g.mean_of('num_params'), ',.0f')} | {links} |")
        lines += ["", "Images/s: training throughput, mean over epochs after the first (which "
                  "includes graph tracing); train s: wall time of `fit`. Best epoch: the one "
                  "whose weights early stopping restored.", ""]
        lines += ["### Ranking", ""]
        lines += [f"{rank}. **{g.model}** {_accuracy_cell(g)}" for rank, g in enumerate(ranked, 1)]
        lines.append("")
        if len(ranked) > 1:
            lines += [f"- {gap_verdict(a, b)}" for a, b in zip(ranked, ranked[1:], strict=False)]
            lines.append("")
        if any(g.n < 2 for g in ranked):
            lines += ["Runs marked *single run* have no error bar: one run per model is what the "
                      "original study drew its ranking from, and a gap smaller than the "
                      "seed-to-seed spread says nothing. Rerun with "
                      "several seeds (`python -m tracking.study --seeds 3`).", ""]
        lines += ["### Where each model goes wrong", ""]
        lines += [f"- {class_error_sentence(g)}" for g in ranked]
        hard = hardest_for_all(ranked)
        if len(ranked) > 1 and hard:
            lines += [f"- Among the most-missed classes of every model: "
                      f"{', '.join(f'`{c}`' for c in hard)}."]
        lines.append("")
    for t in tuning:
        lines += _tuning_lines(t, ui_base)
    lines += ["## Figures", ""] + [f"![{name}]({name})" for name in FIGURES] + [""]
    return "\n".join(lines)


def _tuning_lines(t: TuningSummary, ui_base: str) -> list[str]:
    from tracking.server import run_url

    m, p = t.metrics, t.params
    trials = ", ".join(f"{int(v)} {k[len('trials_'):].lower()}" for k, v in sorted(m.items())
                       if k.startswith("trials_"))
    best = ", ".join(f"{k[len('best_'):]} = {v}" for k, v in sorted(p.items())
                     if k.startswith("best_"))
    link = f"[{t.run_id[:8]}]({run_url(t.experiment_id, t.run_id, ui_base)})"
    lines = [f"## Tuning: {t.model} on {t.dataset}", "",
             f"Optuna study `{t.study_name}` (run {link}; trials: {trials or 'unknown'}). "
             f"Best trial: {best or 'none complete'}"
             + (f", validation accuracy {m['best_val_accuracy']:.4f}."
                if "best_val_accuracy" in m else ".")]
    if TUNED_METRIC in m:
        text = f"On the test split the tuned model scores {m[TUNED_METRIC]:.4f}"
        if "baseline_test_accuracy" in m:
            text += (f" against {m['baseline_test_accuracy']:.4f} for the original setting "
                     f"(a change of {_pct(m[TUNED_METRIC] - m['baseline_test_accuracy'])} "
                     "points, from one run each)")
        lines.append(text + ".")
    return lines + [""]


def write_figures(groups: Sequence[ModelGroup], folder: Path) -> list[Path]:
    """The three comparison figures, written into `folder`."""
    import matplotlib.pyplot as plt

    from tracking.plots import (
        accuracy_by_model_figure,
        confusion_matrices_figure,
        curves_by_model_figure,
    )

    several = len({g.dataset for g in groups}) > 1
    label = {id(g): f"{g.model} ({g.dataset})" if several else g.model for g in groups}
    figures = {
        "accuracy_by_model.png": accuracy_by_model_figure(
            [label[id(g)] for g in groups], [g.accuracies for g in groups]),
        "curves_by_model.png": curves_by_model_figure(
            {label[id(g)]: [r.curves for r in g.runs] for g in groups}),
    }
    with_cm = [g for g in groups if g.confusion() is not None]
    if with_cm:  # counts summed over a model's runs (a mean would round single misses away)
        title = {id(g): label[id(g)] + (f" (sum of {g.n} runs)" if g.n > 1 else "")
                 for g in with_cm}
        figures["confusion_matrices.png"] = confusion_matrices_figure(
            {title[id(g)]: g.confusion() for g in with_cm},
            {title[id(g)]: g.runs[0].class_names for g in with_cm})
    paths = []
    for name, fig in figures.items():
        path = folder / name
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- entry points


@dataclass
class Report:
    path: Path  # comparison.md
    groups: list[ModelGroup]
    tuning: list[TuningSummary]
    markdown: str


def build_report(
    experiment_ids: Sequence[str], output: str | Path = DEFAULT_OUTPUT, *,
    filter_string: str = "", parent_run_id: str = "", title: str = "",
    ui_base: str | None = None,
) -> Report:
    """Select, read and judge the runs; write comparison.md and the figures into `output`.

    Raises CompareError when no finished training run matches.
    """
    import mlflow

    from tracking.server import ui_base_url

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = mlflow.MlflowClient()
    training, tuning = select_runs(client, experiment_ids, filter_string, parent_run_id)
    if not training:
        where = (f"nested under run {parent_run_id}" if parent_run_id else
                 f"matching filter {filter_string!r}" if filter_string else "")
        raise CompareError(
            f"no finished training runs (with a test_accuracy) in experiment {title or ''} "
            f"{where}".replace("  ", " ").strip() + "; train some first "
            "(python -m tracking.train or python -m tracking.study)")
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="compare-") as scratch:
        groups = group_runs([summarize(client, r, scratch) for r in training])
    tunings = [tuning_summary(r) for r in tuning]
    selection = ("every run nested under " + parent_run_id[:8] if parent_run_id
                 else f"every run matching `{filter_string}`" if filter_string
                 else "the latest finished run of each model")
    markdown = render_markdown(groups, tunings, experiment=title or ",".join(experiment_ids),
                               selection=selection, ui_base=ui_base_url(ui_base))
    path = folder / REPORT_FILE
    path.write_text(markdown)
    write_figures(groups, folder)
    return Report(path, groups, tunings, markdown)


def log_report(report: Report) -> None:
    """Log comparison.md and the figures, and one mean/sd metric pair per model, to the
    active run; tag it with the compared run ids."""
    import mlflow

    mlflow.log_artifacts(str(report.path.parent))
    metrics = {}
    for g in report.groups:
        key = f"{g.dataset}.{g.model}" if len({x.dataset for x in report.groups}) > 1 else g.model
        metrics[f"mean_test_accuracy.{key}"] = g.mean
        if g.std is not None:
            metrics[f"sd_test_accuracy.{key}"] = g.std
        metrics[f"runs.{key}"] = g.n
    mlflow.log_metrics(metrics)
    ids = ",".join(r.run_id for g in report.groups for r in g.runs)
    mlflow.set_tag("compared_runs", ids[:5000])


def default_experiment() -> str:
    """The launched run's experiment under `mlflow run`, else MLFLOW_EXPERIMENT_NAME, else the
    training default."""
    import mlflow

    from tracking.config import Config

    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        client = mlflow.MlflowClient()
        return client.get_experiment(client.get_run(run_id).info.experiment_id).name
    return (os.environ.get("MLFLOW_EXPERIMENT_NAME")
            or Config.__dataclass_fields__["experiment"].default)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tracking.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="",
                   help="experiment name (default: the training default, keras-cnn-comparison)")
    p.add_argument("--filter", default="", dest="filter_string",
                   help="MLflow search filter; every finished run it selects is compared")
    p.add_argument("--parent", default="", help="compare every run nested under this run id")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help="folder for the report")
    p.add_argument("--no-log", action="store_true", help="write the files only, log no run")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: exit 2 with a message when there is nothing to compare."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from tracking.server import TrackingServerError, check_tracking_uri

    try:
        check_tracking_uri()
    except TrackingServerError as err:
        parser.exit(2, f"error: {err}\n")
    import mlflow
    from mlflow.exceptions import MlflowException

    from tracking.server import publish_runs_view, runs_table_url
    from tracking.store import ensure_experiment

    args.filter_string = args.filter_string.strip()
    args.parent = args.parent.strip().strip("'\"").strip()
    name = args.experiment.strip("'\" ") or default_experiment()
    experiment = mlflow.MlflowClient().get_experiment_by_name(name)
    if experiment is None:
        parser.exit(2, f"error: no experiment named {name!r} in {mlflow.get_tracking_uri()}\n")
    try:
        report = build_report([experiment.experiment_id], args.output,
                              filter_string=args.filter_string, parent_run_id=args.parent,
                              title=name)
    except CompareError as err:
        parser.exit(2, f"error: {err}\n")
    except MlflowException as err:  # a malformed --filter
        parser.exit(2, f"error: cannot search runs with filter {args.filter_string!r}: "
                       f"{str(err).splitlines()[0]}\n")
    if not args.no_log:
        datasets = "-".join(dict.fromkeys(g.dataset for g in report.groups))
        with mlflow.start_run(experiment_id=ensure_experiment(name),
                              run_name=f"comparison-{datasets}"):
            # tags, not params: under `mlflow run` the entry point's params are already logged
            mlflow.set_tags({RUN_KIND_TAG: "comparison",
                             "compare_filter": args.filter_string or "(latest run of each model)",
                             "compare_parent": args.parent or "(none)"})
            log_report(report)
        publish_runs_view(experiment.experiment_id)
    print(report.markdown)
    print(f"report: {report.path.resolve()}", file=sys.stderr)
    print(f"runs table: {runs_table_url(experiment.experiment_id)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
