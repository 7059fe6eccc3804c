"""Figures logged with a run: each is one function returning a matplotlib Figure."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


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
