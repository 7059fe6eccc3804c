"""Figures logged with a run: each is one function returning a matplotlib Figure."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def confusion_matrix_figure(
    cm: np.ndarray, class_names: Sequence[str], title: str = "Confusion matrix",
    vmax: float | None = None, ax: plt.Axes | None = None,
) -> Figure:
    """Heatmap of counts (rows = true class, columns = predicted), each cell annotated."""
    own = ax is None
    if own:
        size = max(5.0, 0.55 * len(class_names) + 2)
        fig, ax = plt.subplots(figsize=(size, size * 0.85))
    else:
        fig = ax.figure
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=vmax or max(int(cm.max()), 1))
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=class_names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title)
    threshold = (vmax or cm.max()) / 2
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > threshold else "black")
    if own:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
    return fig


def training_curves_figure(history: dict[str, Sequence[float]], best_epoch: int,
                           title: str = "") -> Figure:
    """Loss and accuracy per epoch, training against validation, best epoch marked."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = history.get(prefix + key, [])
            if len(values):
                ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=label)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best epoch {best_epoch}")
        ax.set_xlabel("Epoch")
        ax.set_ylabel(key.capitalize())
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title or "Training curves")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- comparison report


def accuracy_by_model_figure(
    labels: Sequence[str], runs: Sequence[Sequence[float]], metric: str = "Test accuracy",
) -> Figure:
    """Bars of the mean per model, one dot per run, error bars of one standard deviation
    (none for a single run)."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(labels) + 2), 4.2))
    x = np.arange(len(labels))
    means = [float(np.mean(r)) for r in runs]
    stds = [float(np.std(r, ddof=1)) if len(r) > 1 else 0.0 for r in runs]
    bars = ax.bar(x, means, yerr=stds, capsize=6, color="tab:blue", alpha=0.75,
                  error_kw={"elinewidth": 1.5})
    for i, values in enumerate(runs):
        ax.plot(np.full(len(values), x[i]), values, "o", color="black", ms=4, alpha=0.7,
                label="each run" if i == 0 else None)
    for bar, mean, std, values in zip(bars, means, stds, runs, strict=True):
        note = f"{mean:.3f}" + ("" if len(values) > 1 else "\n(single run)")
        top = max(mean + std, max(values))
        ax.annotate(note, (bar.get_x() + bar.get_width() / 2, top), xytext=(0, 6),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8)
    low = min(min(r) for r in runs)
    bottom = float(np.floor(max(0.0, low - 0.1 * (1 - low) - 0.05) * 20) / 20)
    ax.set_ylim(bottom, 1.03)
    ax.set_xticks(x, labels=labels, rotation=15 if len(labels) > 4 else 0)
    ax.set_ylabel(metric + (f" (axis starts at {bottom:.2f})" if bottom > 0 else ""))
    ax.set_title(f"{metric} by model (mean ± 1 sd over runs)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def curves_by_model_figure(
    curves: dict[str, Sequence[dict[str, Sequence[float]]]],
    keys: Sequence[str] = ("val_accuracy", "val_loss"),
) -> Figure:
    """Validation curves per epoch for every model on one figure: one panel per key, the
    mean over a model's runs as a line, each run faint behind it."""
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.2))
    axes = np.atleast_1d(axes)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (label, runs) in enumerate(curves.items()):
        colour = colours[n % len(colours)]
        for ax, key in zip(axes, keys, strict=True):
            series = [list(r.get(key, [])) for r in runs if len(r.get(key, []))]
            if not series:
                continue
            for s in series if len(series) > 1 else []:
                ax.plot(range(1, len(s) + 1), s, color=colour, alpha=0.25, lw=1)
            length = max(len(s) for s in series)
            mean = [np.mean([s[i] for s in series if i < len(s)]) for i in range(length)]
            ax.plot(range(1, length + 1), mean, color=colour, marker="o", ms=3, lw=2,
                    label=label + (f" (mean of {len(series)})" if len(series) > 1 else ""))
    for ax, key in zip(axes, keys, strict=True):
        ax.set_xlabel("Epoch")
        ax.set_ylabel(key + (" (log scale)" if "loss" in key else ""))
        if "loss" in key:  # early epochs of a deep net from scratch can sit orders higher
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Validation curves by model")
    fig.tight_layout()
    return fig


def confusion_matrices_figure(
    matrices: dict[str, np.ndarray], class_names: dict[str, Sequence[str]],
) -> Figure:
    """One confusion-matrix panel per model, all on the same colour scale."""
    vmax = max(max(int(np.max(cm)) for cm in matrices.values()), 1)
    count = len(matrices)
    cols = min(count, 2)
    rows = int(np.ceil(count / cols))
    size = max(4.5, 0.45 * max(len(c) for c in class_names.values()) + 2)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + 1, size * 0.9 * rows),
                             squeeze=False, layout="constrained")
    for ax, (label, cm) in zip(axes.flat, matrices.items(), strict=False):
        confusion_matrix_figure(cm, class_names[label], title=label, vmax=vmax, ax=ax)
    for ax in list(axes.flat)[count:]:
        ax.set_visible(False)
    image = axes.flat[0].images[0]
    fig.colorbar(image, ax=list(axes.flat[:count]), fraction=0.03, pad=0.02,
                 label="test images")
    fig.suptitle("Confusion matrices (rows: true class), same colour scale")
    return fig
