"""The comparison report: `comparison.md` and its figures, from the groups of runs.

Per data set: the table of runs, the ranking with a verdict on each neighbouring gap, every
pair judged on the same test images (`tracking.comparison.paired`), in a fair study each model at its
recipe against it tuned with the budget spent, accuracy against cost (parameters, training
seconds, inference latency) with the dominated models marked, calibration, and where the
models go wrong."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from tracking.comparison.groups import (
    QUALITY_METRICS,
    ModelGroup,
    TuningSummary,
    ranked_and_recipes,
)
from tracking.comparison.tables import (
    accuracy_cell,
    cost_lines,
    cost_values,
    fmt,
    paired_lines,
    pareto_figure_name,
    recipe_lines,
    spread_cell,
)
from tracking.comparison.verdicts import (
    PairVerdict,
    SharedMistakes,
    class_error_sentence,
    dominators,
    gap_verdict,
    hardest_for_all,
    paired_verdicts,
    pct,
    shared_mistakes,
)
from tracking.evaluation.evaluate import ECE_BINS, reliability
from tracking.evaluation.outcomes import probabilities_of
from tracking.evaluation.plots import (
    accuracy_by_model_figure,
    confusion_matrices_figure,
    curves_by_model_figure,
    image_gallery_figure,
    pareto_figure,
    reliability_by_model_figure,
)
from tracking.store.ui import run_url

TUNED_METRIC = "tuned_test_accuracy"  # a tuning study's parent run logs it
# the figures of every report; confusion_matrices.png only when some run logged its matrix,
# reliability_by_model.png when some logged its predictions table
FIGURES = ("accuracy_by_model.png", "curves_by_model.png", "confusion_matrices.png",
           "reliability_by_model.png")
GALLERY_SIZE = 24  # images shown of those every model gets wrong


def common_mistakes_figure_name(dataset: str) -> str:
    return f"common_mistakes_{dataset}.png"


def _epochs_cell(group: ModelGroup) -> str:
    return ", ".join(f"{fmt(r.best_epoch, 'd')} / {fmt(r.epochs_run, 'd')}" for r in group.runs)


def render_markdown(groups: Sequence[ModelGroup], tuning: Sequence[TuningSummary],
                    figures: Sequence[str], *, experiment: str, selection: str,
                    ui_base: str, pairs: dict[str, list[PairVerdict]] | None = None) -> str:
    """The whole comparison.md; `figures` are the file names of the figures written beside it
    (only those are linked); `pairs` the paired verdicts per data set (None: judged here)."""
    lines = [f"# Model comparison: {experiment}", ""]
    runs = sum(g.n for g in groups)
    lines += [f"{runs} finished training runs ({selection}), compared on "
              f"{time.strftime('%Y-%m-%d %H:%M %Z')}. Test accuracy is on each run's held-out "
              "test split; ± is the sample standard deviation over runs (seeds).", ""]
    for dataset in dict.fromkeys(g.dataset for g in groups):
        ranked, recipes = ranked_and_recipes(groups, dataset)
        lines += [f"## {dataset}", "",
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


def write_figures(groups: Sequence[ModelGroup], folder: Path) -> list[Path]:
    """The comparison figures, written into `folder`; returns their paths (the confusion
    matrices only when some run logged one, the reliability curves and the images every model
    gets wrong only where runs logged predictions tables)."""
    several = len({g.dataset for g in groups}) > 1
    label = {id(g): f"{g.label} ({g.dataset})" if several else g.label for g in groups}
    figures: dict[str, Figure] = {
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
    curves = {label[id(g)]: _pooled_reliability(g) for g in groups}
    curves = {k: v for k, v in curves.items() if v is not None}
    if curves:
        figures["reliability_by_model.png"] = reliability_by_model_figure(curves, ECE_BINS)
    for dataset in dict.fromkeys(g.dataset for g in groups):
        gallery = _common_mistakes_figure([g for g in groups if g.dataset == dataset])
        if gallery is not None:
            figures[common_mistakes_figure_name(dataset)] = gallery
        ranked, _ = ranked_and_recipes(groups, dataset)
        costs = cost_values(ranked)
        if len(ranked) > 1 and any(any(c is not None for c in v) for v in costs.values()):
            accuracy = [g.mean for g in ranked]
            figures[pareto_figure_name(dataset)] = pareto_figure(
                [g.label for g in ranked], accuracy, costs,
                {name: [bool(d) for d in dominators(accuracy, [[c] for c in values])]
                 for name, values in costs.items()},
                title=f"{dataset}: test accuracy against cost (hollow: dominated on that cost)")
    paths = []
    for name, fig in figures.items():
        path = folder / name
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def _pooled_reliability(group: ModelGroup) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The reliability curve and ECE of a model's test predictions, pooled over its runs."""
    frames = [r.predictions for r in group.runs if r.predictions is not None]
    if not frames:
        return None
    probs = [probabilities_of(f) for f in frames]
    correct = np.concatenate([p.argmax(axis=1) == f["true_label"].to_numpy()
                              for p, f in zip(probs, frames, strict=True)])
    rel = reliability(correct, np.concatenate([p.max(axis=1) for p in probs]))
    return rel.confidence, rel.accuracy, rel.ece


def _common_mistakes_figure(groups: Sequence[ModelGroup]) -> Figure | None:
    """A gallery of the test images every model of one data set gets wrong (those whose
    pictures the runs logged), with the true class and each model's answer."""
    images, captions, total = [], [], 0
    names = groups[0].runs[0].class_names if groups else []
    for shared in shared_mistakes(groups):
        total += len(shared.indices)
        for n, (index, true) in enumerate(zip(shared.indices, shared.true_labels, strict=True)):
            pictures = [r.mistake_images[index] for r in shared.runs if index in r.mistake_images]
            if not pictures or len(images) >= GALLERY_SIZE:
                continue
            images.append(pictures[0])
            answers = "\n".join(f"{model}: {_name(names, labels[n])}"
                                 for model, labels in shared.predicted.items())
            captions.append(f"#{index} true {_name(names, true)}\n{answers}")
    if not images:
        return None
    return image_gallery_figure(np.stack(images), captions, title=(
        f"{groups[0].dataset}: test images every model gets wrong ({len(images)} of {total} "
        "shown, most confident first)"))


def _name(names: Sequence[str], label: int) -> str:
    return str(names[label]) if label < len(names) else str(label)
