"""The comparison report: `comparison.md` and its figures, from the groups of runs.

Per data set: the table of runs, the ranking with a verdict on each neighbouring gap, every
pair judged on the same test images (`tracking.comparison.paired`), in a fair study each model at
its recipe against it tuned with the budget spent, accuracy against cost (parameters, training
seconds, inference latency) with the dominated models marked, calibration, and where the
models go wrong."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from tracking.comparison.figures import common_mistakes_figure_name, write_figures
from tracking.comparison.groups import (
    QUALITY_METRICS,
    TUNED_METRIC,
    ModelGroup,
    TuningSummary,
    group_runs,
    left_out,
    pool_image_sizes,
    ranked_and_recipes,
)
from tracking.comparison.latency import run_latency
from tracking.comparison.selection import (
    ALL_EXPERIMENTS,
    CompareError,
    select_runs,
    summarize,
    tuning_summary,
)
from tracking.comparison.tables import (
    accuracy_cell,
    cost_lines,
    fmt,
    paired_lines,
    pareto_figure_name,
    per_class_lines,
    recipe_lines,
    spread_cell,
)
from tracking.comparison.verdicts import (
    PairVerdict,
    SharedMistakes,
    class_error_sentence,
    gap_verdict,
    hardest_for_all,
    paired_verdicts,
    pct,
    shared_mistakes,
)
from tracking.store.ui import run_url, ui_base_url


def _epochs_cell(group: ModelGroup) -> str:
    return ", ".join(f"{fmt(r.best_epoch, 'd')} / {fmt(r.epochs_run, 'd')}" for r in group.runs)


def _identity_line(group: ModelGroup) -> str:
    """What this section's test accuracy is about, in one line."""
    run = group.runs[0]
    names = ", ".join(run.class_names[:6]) + (", ..." if len(run.class_names) > 6 else "")
    where = f" `{run.data_source}`" if run.data_source and "folder" in group.dataset else ""
    size = f", {run.image_size}x{run.image_size} px" if run.image_size else ""
    return (f"Data: {group.dataset}{where} ({len(run.class_names)} classes: {names}){size}. "
            "Runs of another data set, folder, class list or image size are in sections of "
            "their own, never ranked against these.")


def _left_out_lines(out: Sequence[tuple[ModelGroup, str]], ui_base: str,
                    include_smoke: bool) -> list[str]:
    if not out:
        return []
    lines = ["Left out of this ranking:", ""]
    for g, reason in out:
        ids = ", ".join(f"[{r.run_id[:8]}]({run_url(r.experiment_id, r.run_id, ui_base)})"
                        for r in g.runs)
        lines.append(f"- {g.label} ({ids}, test accuracy {accuracy_cell(g)}): {reason}")
    if any(reason.startswith("smoke run") for _, reason in out) and not include_smoke:
        lines.append("- `--include-smoke` ranks smoke runs too (each budget its own row).")
    return lines + [""]


def render_markdown(groups: Sequence[ModelGroup], tuning: Sequence[TuningSummary],
                    figures: Sequence[str], *, experiment: str, selection: str,
                    ui_base: str, pairs: dict[str, list[PairVerdict]] | None = None,
                    include_smoke: bool = False) -> str:
    """The whole comparison.md; `figures` are the file names of the figures written beside it
    (only those are linked); `pairs` the paired verdicts per data set (None: judged here).
    One section per data identity (`groups.assign_sections`); the runs `groups.left_out`
    keeps out of a ranking are listed with their reason."""
    lines = [f"# Model comparison: {experiment}", ""]
    runs = sum(g.n for g in groups)
    lines += [f"{runs} finished training runs ({selection}), compared on "
              f"{time.strftime('%Y-%m-%d %H:%M %Z')}. Test accuracy is on each run's held-out "
              "test split; ± is the sample standard deviation over runs (seeds).", ""]
    for dataset in dict.fromkeys(g.dataset for g in groups):
        ranked, recipes = ranked_and_recipes(groups, dataset, include_smoke)
        out = left_out(groups, dataset, include_smoke)
        if not ranked:
            lines += [f"## {dataset}", "", _identity_line(out[0][0]), ""]
            lines += _left_out_lines(out, ui_base, include_smoke)
            continue
        lines += [f"## {dataset}", "", _identity_line(ranked[0]), "",
                  "| Rank | Model | Data set | Runs | Test accuracy | Macro F1 | "
                  "Best epoch / epochs run | Train s | Images/s | Parameters | Run ids |",
                  "|---:|---|---|---:|---|---|---|---:|---:|---:|---|"]
        for rank, g in enumerate([*ranked, *recipes], 1):
            links = ", ".join(f"[{r.run_id[:8]}]({run_url(r.experiment_id, r.run_id, ui_base)})"
                              for r in g.runs)
            lines.append(
                f"| {rank if g in ranked else '–'} | {g.label} | {g.dataset} | {g.n} | "
                f"{accuracy_cell(g)} | "
                f"{accuracy_cell(g, 'f1_macro')} | {_epochs_cell(g)} | "
                f"{fmt(g.mean_of('train_seconds'), '.0f')} | "
                f"{fmt(g.mean_of('images_per_second'), '.0f')} | "
                f"{fmt(g.mean_of('num_params'), ',.0f')} | {links} |")
        lines += ["", "Images/s: training throughput, mean over epochs after the first (which "
                  "includes graph tracing); train s: wall time of `fit`. Best epoch: the one "
                  "whose weights early stopping restored."
                  + (" Rank –: not tuned in the fair study, so set beside the tuned models "
                     "and not ranked against them." if recipes else ""), ""]
        lines += ["### Ranking", ""]
        lines += [f"{rank}. **{g.label}** {accuracy_cell(g)}" for rank, g in enumerate(ranked, 1)]
        lines.append("")
        lines += _left_out_lines(out, ui_base, include_smoke)
        if len(ranked) > 1:
            lines += [f"- {gap_verdict(a, b)}" for a, b in zip(ranked, ranked[1:], strict=False)]
            lines.append("")
        if any(g.n < 2 for g in ranked):
            lines += ["Runs marked *single run* have no error bar: one run per model is what the "
                      "original study drew its ranking from, and a gap smaller than the "
                      "seed-to-seed spread says nothing. Rerun with "
                      "several seeds (`python -m tracking.study --seeds 3`).", ""]
        lines += paired_lines(pairs[dataset] if pairs is not None
                               else paired_verdicts(ranked))
        lines += recipe_lines(ranked, recipes, [t for t in tuning if t.dataset == dataset])
        lines += cost_lines(ranked, pareto_figure_name(dataset) in figures)
        lines += _quality_lines(ranked)
        lines += per_class_lines(ranked)  # per_class_metrics.csv (or older runs' keys)
        lines += ["### Where each model goes wrong", ""]
        lines += [f"- {class_error_sentence(g)}" for g in ranked]
        hard = hardest_for_all(ranked)
        if len(ranked) > 1 and hard:
            lines += [f"- Among the most-missed classes of every model: "
                      f"{', '.join(f'`{c}`' for c in hard)}."]
        if len(ranked) > 1:
            lines.append(f"- {_shared_sentence(shared_mistakes(ranked), dataset, figures)}")
        lines.append("")
    for t in tuning:
        lines += _tuning_lines(t, ui_base)
    lines += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    return "\n".join(lines)


def _quality_lines(ranked: Sequence[ModelGroup]) -> list[str]:
    """The calibration and ranking metrics of each model side by side (none logged: [])."""
    shown = [k for k in QUALITY_METRICS if any(g.quality_values(k) for g in ranked)]
    if not shown:
        return []
    lines = ["### Calibration and ranking", "",
             "| Model | " + " | ".join(QUALITY_METRICS[k] for k in shown) + " |",
             "|---|" + "---|" * len(shown)]
    lines += [f"| {g.label} | " + " | ".join(spread_cell(g.quality_values(k)) for k in shown)
              + " |" for g in ranked]
    return lines + ["", "On the test split. ROC AUC and average precision: one class against "
                    "the rest, averaged over classes; top-k: the true class among the k most "
                    "probable. ECE: top-label expected calibration error over 15 equal-width "
                    "confidence bins (Guo et al. 2017), and the Brier score (0 to 2): lower is "
                    "better calibrated.", ""]


def _shared_sentence(shared: Sequence[SharedMistakes], dataset: str,
                     figures: Sequence[str]) -> str:
    """Which test images every model gets wrong, or why that cannot be said."""
    if not shared:
        return ("No test split is shared by the runs of every model (a seed draws its own "
                "split; runs from before predictions tables were logged have none), so no "
                "test image can be compared across models.")
    parts = [f"{len(s.indices)} of {s.test_size} on split `{s.test_digest}` "
             f"({len(s.runs)} runs)" for s in shared]
    figure = common_mistakes_figure_name(dataset)
    shown = f", pictured in `{figure}`" if figure in figures else ""
    return f"Test images every model gets wrong: {'; '.join(parts)}{shown}."


def _tuning_lines(t: TuningSummary, ui_base: str) -> list[str]:
    m, p = t.metrics, t.params
    trials = ", ".join(f"{int(v)} {k[len('trials_'):].lower()}" for k, v in sorted(m.items())
                       if k.startswith("trials_"))
    best = ", ".join(f"{k[len('best_'):]} = {v}" for k, v in sorted(p.items())
                     if k.startswith("best_"))
    link = f"[{t.run_id[:8]}]({run_url(t.experiment_id, t.run_id, ui_base)})"
    lines = [f"## Tuning: {t.model} on {t.dataset}", "",
             f"Optuna study `{t.study_name}` (run {link}; trials: {trials or 'unknown'}"
             + (f"; {m['trial_epochs']:.0f} trial-epochs, {m['trial_seconds']:.0f} s"
                if "trial_epochs" in m and "trial_seconds" in m else "") + "). "
             f"Best trial: {best or 'none complete'}"
             + (f", validation accuracy {m['best_val_accuracy']:.4f}."
                if "best_val_accuracy" in m else ".")]
    if "sampler" in p:
        pruner = ", ".join(f"{k[len('pruner_'):]} {v}" for k, v in sorted(p.items())
                           if k.startswith("pruner_"))
        lines.append(f"Sampled by {p['sampler']} (seed {p.get('sampler_seed', '?')}, "
                     f"multivariate {p.get('sampler_multivariate', '?')}, constant liar "
                     f"{p.get('sampler_constant_liar', '?')}), pruned by {p.get('pruner', '?')}"
                     + (f" ({pruner})" if pruner else "") + f", Optuna "
                     f"{p.get('optuna_version', '?')}"
                     + (f"; {m['workers_seen']:.0f} worker(s) seen" if "workers_seen" in m
                        else "") + ".")
    if TUNED_METRIC in m:
        text = f"On the test split the tuned model scores {m[TUNED_METRIC]:.4f}"
        if "baseline_test_accuracy" in m:
            text += (f" against {m['baseline_test_accuracy']:.4f} for the original setting "
                     f"(a change of {pct(m[TUNED_METRIC] - m['baseline_test_accuracy'])} "
                     "points, from one run each)")
        lines.append(text + ".")
    quality = [f"{heading} {m['tuned_' + key]:.4f}" for key, heading in QUALITY_METRICS.items()
               if "tuned_" + key in m]
    if quality:
        lines.append(f"The tuned model on the test split: {', '.join(quality)}.")
    return lines + [""]


DEFAULT_OUTPUT = os.path.join("outputs", "comparison")
REPORT_FILE = "comparison.md"
# the figures a report writes (tracking.comparison.figures), removed before the next one
REPORT_PATTERNS = ("accuracy_by_model*.png", "curves_by_model*.png", "confusion_matrices*.png",
                   "reliability_by_model*.png", "common_mistakes_*.png", "accuracy_vs_cost_*.png")


@dataclass
class Report:
    path: Path  # comparison.md
    groups: list[ModelGroup]
    tuning: list[TuningSummary]
    markdown: str
    pairs: dict[str, list[PairVerdict]]  # per data set: every pair of its ranked models
    include_smoke: bool = False  # smoke runs ranked too


def report_title(groups: Sequence[ModelGroup], title: str, experiment_ids: Sequence[str]
                 ) -> str:
    """What the report says it compares: `title` (the experiment named), except that a
    search over every experiment (or no title) whose compared runs are all in one experiment
    names that experiment; else the searched experiments' ids."""
    compared = {r.experiment_id for g in groups for r in g.runs}
    if (title and title != ALL_EXPERIMENTS) or len(compared) != 1:
        return title or ",".join(experiment_ids)
    try:
        return mlflow.MlflowClient().get_experiment(compared.pop()).name
    except MlflowException:
        return title or ",".join(experiment_ids)


def build_report(
    experiment_ids: Sequence[str], output: str | Path = DEFAULT_OUTPUT, *,
    filter_string: str = "", parent_run_id: str = "", title: str = "",
    ui_base: str | None = None, latency: bool = True, include_smoke: bool = False,
    across_image_sizes: bool = False,
) -> Report:
    """Select, read and judge the runs; write comparison.md and the figures into `output`.
    Smoke runs (`--limit`, or epochs cut below the recipe's) stay out of a ranking that has
    full runs unless `include_smoke`. With `across_image_sizes`, runs that differ only in
    their image size share a section and are paired (`groups.pool_image_sizes`).
    With `latency`, each ranked model's inference latency is measured here
    (tracking.comparison.latency,
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
        summaries = [summarize(client, r, scratch) for r in training]
        if across_image_sizes:
            pool_image_sizes(summaries)
        groups = group_runs(summaries)
    tunings = [tuning_summary(r) for r in tuning]
    pairs = {}
    for dataset in dict.fromkeys(g.dataset for g in groups):
        ranked, _ = ranked_and_recipes(groups, dataset, include_smoke)
        pairs[dataset] = paired_verdicts(ranked)
        for g in ranked if latency else ():
            g.latency = run_latency(g.runs[0].run_id)
    selection = ("every run nested under " + parent_run_id[:8] if parent_run_id
                 else f"every run matching `{filter_string}`" if filter_string
                 else "the latest finished run of each model")
    for old in [folder / REPORT_FILE, *(f for pattern in REPORT_PATTERNS
                                        for f in folder.glob(pattern))]:
        old.unlink(missing_ok=True)  # an earlier report's files would be logged as this one's
    figures = [path.name for path in write_figures(groups, folder, include_smoke)]
    markdown = render_markdown(groups, tunings, figures,
                               experiment=report_title(groups, title, experiment_ids),
                               selection=selection, ui_base=ui_base_url(ui_base), pairs=pairs,
                               include_smoke=include_smoke)
    path = folder / REPORT_FILE
    path.write_text(markdown)
    return Report(path, groups, tunings, markdown, pairs, include_smoke)


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
        ranked, recipes = ranked_and_recipes(report.groups, dataset, report.include_smoke)
        prefix = f"{dataset}." if several else ""
        for rank, g in enumerate(ranked if recipes else (), 1):  # a fair study's
            metrics[f"rank.{prefix}{g.model}"] = rank
            recipe = next((r for r in recipes if r.model == g.model), None)
            if recipe is not None:
                metrics[f"tuning_gap.{prefix}{g.model}"] = g.mean - recipe.mean
    mlflow.log_metrics(metrics)
    ids = ",".join(r.run_id for g in report.groups for r in g.runs)
    mlflow.set_tag("compared_runs", ids[:5000])
