"""The comparison report's figures, one PNG each, drawn by `tracking.evaluation.plots`:

    paths = write_figures(groups, folder)

Per data identity (a report section): `accuracy_by_model.png`, `curves_by_model.png`,
`confusion_matrices.png` (when some run logged its matrix), `reliability_by_model.png` (when
some run logged its predictions table; with several sections each name ends in `_<section>`),
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


def figure_name(name: str, dataset: str, several: bool) -> str:
    """`name` (one of FIGURES) for one data identity: `accuracy_by_model.png`, or with several
    in the report `accuracy_by_model_<dataset>.png`."""
    return name.replace(".png", f"_{dataset}.png") if several else name


def write_figures(groups: Sequence[ModelGroup], folder: Path,
                  include_smoke: bool = False) -> list[Path]:
    """The comparison figures, written into `folder`, one set per data identity (never two
    class sets on one axis), each over the groups its section ranks and sets beside them;
    returns their paths (the confusion matrices only when some run logged one, the
    reliability curves and the images every model gets wrong only where runs logged
    predictions tables)."""
    sections = list(dict.fromkeys(g.dataset for g in groups))
    several = len(sections) > 1
    figures: dict[str, Figure] = {}
    for dataset in sections:
        ranked, recipes = ranked_and_recipes(groups, dataset, include_smoke)
        shown = [*ranked, *recipes]
        if not shown:
            continue
        name = {n: figure_name(n, dataset, several) for n in FIGURES}
        chance = 1.0 / max(len(shown[0].runs[0].class_names), 1)
        figures[name["accuracy_by_model.png"]] = accuracy_by_model_figure(
            [g.label for g in shown], [g.accuracies for g in shown], chance=chance)
        figures[name["curves_by_model.png"]] = curves_by_model_figure(
            {g.label: [r.curves for r in g.runs] for g in shown})
        with_cm = [g for g in shown if g.confusion() is not None]
        if with_cm:  # counts summed over a model's runs (a mean would round single misses)
            title = {id(g): g.label + (f" (sum of {g.n} runs)" if g.n > 1 else "")
                     for g in with_cm}
            figures[name["confusion_matrices.png"]] = confusion_matrices_figure(
                {title[id(g)]: g.confusion() for g in with_cm},
                {title[id(g)]: g.runs[0].class_names for g in with_cm})
        curves = {g.label: _pooled_reliability(g) for g in shown}
        curves = {k: v for k, v in curves.items() if v is not None}
        if curves:
            figures[name["reliability_by_model.png"]] = reliability_by_model_figure(
                curves, ECE_BINS)
        gallery = _common_mistakes_figure(ranked)
        if gallery is not None:
            figures[common_mistakes_figure_name(dataset)] = gallery
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


def _pooled_reliability(group: ModelGroup
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
    """The reliability curve (mean confidence, accuracy and images per bin) and ECE of a
    model's test predictions, pooled over its runs."""
    frames = [r.predictions for r in group.runs if r.predictions is not None]
    if not frames:
        return None
    probs = [probabilities_of(f) for f in frames]
    correct = np.concatenate([p.argmax(axis=1) == f["true_label"].to_numpy()
                              for p, f in zip(probs, frames, strict=True)])
    rel = reliability(correct, np.concatenate([p.max(axis=1) for p in probs]))
    return rel.confidence, rel.accuracy, rel.counts, rel.ece


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
