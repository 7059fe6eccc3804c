"""The comparison report's figures, one PNG each, drawn by `tracking.evaluation.plots`:

    paths = write_figures(groups, folder)

`accuracy_by_model.png`, `curves_by_model.png`, `confusion_matrices.png` (when some run
logged its matrix), `reliability_by_model.png` (when some run logged its predictions table),
per data set `common_mistakes_<dataset>.png` (test images every model gets wrong, on a split
they share) and `accuracy_vs_cost_<dataset>.png` (accuracy against parameters, training
seconds and inference latency).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from tracking.comparison.groups import (
    ModelGroup,
    ranked_and_recipes,
)
from tracking.comparison.tables import (
    cost_values,
    pareto_figure_name,
)
from tracking.comparison.verdicts import (
    dominators,
    shared_mistakes,
)
from tracking.evaluation.evaluate import ECE_BINS, reliability
from tracking.evaluation.outcomes import probabilities_of
from tracking.evaluation.plots import (
    accuracy_by_model_figure,
    class_labels,
    confusion_matrices_figure,
    curves_by_model_figure,
    image_gallery_figure,
    pareto_figure,
    reliability_by_model_figure,
)

# the figures of every report; confusion_matrices.png only when some run logged its matrix,
# reliability_by_model.png when some logged its predictions table
FIGURES = ("accuracy_by_model.png", "curves_by_model.png", "confusion_matrices.png",
           "reliability_by_model.png")
GALLERY_SIZE = 24  # images shown of those every model gets wrong


def common_mistakes_figure_name(dataset: str) -> str:
    return f"common_mistakes_{dataset}.png"


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
    names, families, note = class_labels(groups[0].runs[0].class_names if groups else [])
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
    return image_gallery_figure(np.stack(images), captions, families=families, title=(
        f"{groups[0].dataset}: test images every model gets wrong ({len(images)} of {total} "
        "shown, most confident first)" + (f"; {note}" if note else "")))


def _name(names: Sequence[str], label: int) -> str:
    return str(names[label]) if label < len(names) else str(label)
