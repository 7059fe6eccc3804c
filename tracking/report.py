"""The comparison report: `comparison.md` and its figures, from the groups of runs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from tracking.groups import ModelGroup, TuningSummary
from tracking.plots import (
    accuracy_by_model_figure,
    confusion_matrices_figure,
    curves_by_model_figure,
)
from tracking.ui import run_url
from tracking.verdicts import class_error_sentence, gap_verdict, hardest_for_all, pct

TUNED_METRIC = "tuned_test_accuracy"  # a tuning study's parent run logs it
# every figure the report can hold; confusion_matrices.png only when some run logged its matrix
FIGURES = ("accuracy_by_model.png", "curves_by_model.png", "confusion_matrices.png")


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


def render_markdown(groups: Sequence[ModelGroup], tuning: Sequence[TuningSummary],
                    figures: Sequence[str], *, experiment: str, selection: str,
                    ui_base: str) -> str:
    """The whole comparison.md; `figures` are the file names of the figures written beside it
    (only those are linked)."""
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
    lines += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    return "\n".join(lines)


def _tuning_lines(t: TuningSummary, ui_base: str) -> list[str]:
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
                     f"(a change of {pct(m[TUNED_METRIC] - m['baseline_test_accuracy'])} "
                     "points, from one run each)")
        lines.append(text + ".")
    return lines + [""]


def write_figures(groups: Sequence[ModelGroup], folder: Path) -> list[Path]:
    """The comparison figures, written into `folder`; returns their paths (the confusion
    matrices only when some run logged one)."""
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
