"""Figures logged with a run or a comparison: each is one function returning a matplotlib
Figure; the caller logs or saves it, then closes it."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.colors import ListedColormap, LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ft2font import FT2Font  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullFormatter  # noqa: E402

SHARE_FLOOR = 1e-3  # the confusion colour scale's lowest share of a true class (log scale)
# Blues without its near-white end, so that a cell holding a single error is still coloured
SHARE_COLOURS = ListedColormap(plt.get_cmap("Blues")(np.linspace(0.12, 1.0, 256)),
                               bad="white")  # empty cells white
MAX_LEGEND_CLASSES = 12  # beyond this, per-class curves are drawn without a legend
MAX_LABELLED_CLASSES = 40  # beyond this, a confusion matrix has no class names or counts
MAX_FIGURE_INCHES = 24.0  # the side of the largest confusion matrix figure
TOP_CONFUSIONS = 30  # confusions listed beside a matrix of more than MAX_LABELLED_CLASSES
# Margins of the figures every run logs, whose text does not depend on the data set (class
# names appear only inside the axes): fixed margins instead of tight_layout, which renders
# every text once more to measure it and was about a third of the post-training time
FIXED_MARGINS = {"left": 0.07, "right": 0.97, "top": 0.87}


MAX_LABEL_CHARS = 24  # a class name longer than this is shortened on an axis (middle elided)
INDEX_NOTE = "classes by index (class_names.json): no installed font draws their names"


@functools.lru_cache(maxsize=1)
def _font_coverage() -> tuple[tuple[str, frozenset[int]], ...]:
    """(family, code points it draws) of every font matplotlib found, the default first."""
    default = font_manager.findfont(font_manager.FontProperties())
    fonts = sorted(font_manager.fontManager.ttflist, key=lambda f: f.fname != default)
    out = []
    for font in fonts:
        if font.name.startswith("Last Resort"):  # its "glyphs" are placeholder boxes
            continue
        try:
            out.append((font.name, frozenset(FT2Font(font.fname).get_charmap())))
        except (OSError, RuntimeError):  # a font file matplotlib listed but cannot open
            continue
    return tuple(out)


def label_fonts(names: Sequence[str]) -> list[str] | None:
    """Font families that together draw every character of `names` (matplotlib falls back
    from one to the next, glyph by glyph), the default first; None when some character has
    no installed font (CJK names without e.g. Debian's fonts-noto-cjk)."""
    coverage = _font_coverage()
    families = [coverage[0][0]] if coverage else []
    missing = {ord(c) for name in names for c in name if not c.isspace()}
    for family, points in coverage:
        if missing & points:
            if family not in families:
                families.append(family)
            missing -= points
        if not missing:
            return families
    return None if missing else families


def class_labels(names: Sequence[str]) -> tuple[list[str], list[str] | None, str]:
    """Axis labels for class `names`: (labels, font families, note). Names longer than
    MAX_LABEL_CHARS lose their middle to an ellipsis (a number is added if two then read the
    same); names no installed font can draw become their indices, with INDEX_NOTE."""
    families = label_fonts(names)
    if families is None:
        return [str(i) for i in range(len(names))], None, INDEX_NOTE
    half = (MAX_LABEL_CHARS - 1) // 2
    labels = [n if len(n) <= MAX_LABEL_CHARS else f"{n[:half]}\u2026{n[-half:]}"
              for n in names]
    if len(set(labels)) < len(labels):
        labels = [f"{i}: {label}" if label != name else label
                  for i, (label, name) in enumerate(zip(labels, names, strict=True))]
    return labels, families, ""


def confusion_matrix_figure(
    cm: np.ndarray, class_names: Sequence[str], title: str = "Confusion matrix",
    ax: plt.Axes | None = None,
) -> Figure:
    """Counts (rows = true class, columns = predicted) written in the cells; each cell's colour
    is its share of the true class on a log scale from SHARE_FLOOR to 1, so that one or two
    errors in a row of hundreds stay visible and rows of different sizes compare. Empty cells
    are white. `cm` is (classes, classes) integer counts. Above MAX_LABELLED_CLASSES, where
    neither names nor counts fit, the cells are unlabelled, the axes count label indices, and
    a figure of its own (`ax` None) is `confusion_overview_figure`: the matrix beside its
    most frequent confusions, named."""
    own = ax is None
    many = len(class_names) > MAX_LABELLED_CLASSES
    if own and many:
        return confusion_overview_figure(cm, class_names, title=title)
    if own:
        size = min(max(5.0, 0.55 * len(class_names) + 2), MAX_FIGURE_INCHES)
        fig, ax = plt.subplots(figsize=(size, size * 0.85))
    else:
        fig = ax.figure
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    norm = LogNorm(vmin=SHARE_FLOOR, vmax=1.0, clip=True)
    # nearest: a single error stays one sharp cell where cells are a few pixels wide
    im = ax.imshow(np.ma.masked_less_equal(share, 0), cmap=SHARE_COLOURS, norm=norm,
                   interpolation="nearest")
    note = ""
    if not many:
        ticks = np.arange(len(class_names))
        labels, families, note = class_labels(class_names)
        font = {"fontfamily": families} if families else {}
        ax.set_xticks(ticks, labels=labels, rotation=45, ha="right", **font)
        ax.set_yticks(ticks, labels=labels, **font)
    else:  # label indices (class_names.json names them)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(nbins=10, integer=True))
    index = " (label index)" if many else ""
    ax.set_xlabel(f"Predicted class{index}")
    ax.set_ylabel(f"True class{index}")
    ax.set_title(f"{title}\n{note}" if note else title)
    if not many:  # beyond, neither names nor counts can be read
        for i, j in zip(*np.nonzero(cm), strict=True):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if norm(share[i, j]) > 0.6 else "black")
    if own:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04,
                     label="share of the true class (log scale)")
        fig.tight_layout()
    return fig


def top_confusions(cm: np.ndarray, top: int = TOP_CONFUSIONS) -> list[tuple[int, int]]:
    """The (true, predicted) label pairs of the `top` largest off-diagonal counts of `cm`
    (classes, classes): most images first, then the larger share of the true class, then
    label order; only pairs with at least one image."""
    counts = cm.astype(np.int64).copy()
    np.fill_diagonal(counts, 0)
    rows, cols = np.nonzero(counts)
    share = counts[rows, cols] / np.maximum(cm.sum(axis=1)[rows], 1)
    order = np.lexsort((cols, rows, -share, -counts[rows, cols]))
    return [(int(rows[k]), int(cols[k])) for k in order[:top]]


def confusion_overview_figure(cm: np.ndarray, class_names: Sequence[str],
                              title: str = "Confusion matrix",
                              top: int = TOP_CONFUSIONS) -> Figure:
    """A confusion matrix of many classes, `cm` (classes, classes) integer counts (rows =
    true class): left, the whole matrix on `confusion_matrix_figure`'s colour scale with the
    axes in label indices; right, its `top` most frequent confusions (`top_confusions`) as
    bars named `true -> predicted`, each with its count and share of the true class. A
    fixed 16 x 8 inch figure, whatever the number of classes."""
    fig, (matrix, bars) = plt.subplots(1, 2, figsize=(16, 8), layout="constrained",
                                       gridspec_kw={"width_ratios": (1, 1)})
    classes = len(class_names)
    confusion_matrix_figure(cm, class_names, title=f"all {classes} classes", ax=matrix)
    fig.colorbar(matrix.images[0], ax=matrix, fraction=0.046, pad=0.02,
                 label="share of the true class (log scale)")
    pairs = top_confusions(cm, top)
    labels, families, note = class_labels([str(c) for c in class_names])
    totals = cm.sum(axis=1)
    wrong = int(totals.sum() - np.trace(cm))
    if pairs:
        counts = [int(cm[i, j]) for i, j in pairs]
        y = np.arange(len(pairs))  # the largest on top (the axis runs downwards)
        bars.barh(y, counts, color="tab:blue", alpha=0.8)
        bars.set_yticks(y, labels=[f"{labels[i]} \u2192 {labels[j]}" for i, j in pairs],
                        fontsize=7, **({"fontfamily": families} if families else {}))
        for yy, (i, _), n in zip(y, pairs, counts, strict=True):
            bars.text(n, yy, f" {n} ({100 * n / max(int(totals[i]), 1):.0f}% of {totals[i]})",
                      va="center", fontsize=7)
        bars.set_xlim(0, max(counts) * 1.3)
        bars.xaxis.set_major_locator(MaxNLocator(integer=True))
        bars.set_ylim(max(len(pairs), 10) - 0.4, -0.6)  # a few bars keep their height
    else:
        bars.text(0.5, 0.5, "no test image misclassified", ha="center", va="center",
                  transform=bars.transAxes)
        bars.set_yticks([])
    distinct = int(np.count_nonzero(cm) - np.count_nonzero(np.diag(cm)))
    bars.set_xlabel("Test images (share of the true class's)")
    bars.set_title(f"the {len(pairs)} most frequent of {distinct} confusions "
                   f"(true \u2192 predicted; {wrong} images wrong in all)"
                   + (f"\n{note}" if note else ""), fontsize=10)
    bars.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    return fig


def training_curves_figure(history: dict[str, Sequence[float]], best_epoch: int,
                           title: str = "") -> Figure:
    """Loss (log scale: a first epoch far above the rest must not flatten them) and accuracy
    per epoch, training against validation, best epoch marked; one legend below both."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = history.get(prefix + key, [])
            if len(values):
                ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=label)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best epoch {best_epoch}")
        ax.set_xlabel("Epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("Loss (log scale)")
    axes[1].set_ylabel("Accuracy")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle(title or "Training curves")
    fig.subplots_adjust(**{**FIXED_MARGINS, "top": 0.9, "bottom": 0.21, "wspace": 0.22})
    return fig


def roc_pr_curves_figure(curves: Sequence[Any], class_names: Sequence[str],
                         title: str = "") -> Figure:
    """One-vs-rest ROC (left) and precision-recall (right) curve of each class, with its
    area (ROC AUC, average precision) in the legend; `curves` holds per class an object with
    fpr, tpr, roc_auc, precision, recall, average_precision, or None (class absent)."""
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(12, 5))
    legend = len(class_names) <= MAX_LEGEND_CLASSES
    colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20").colors
    present = [(k, c) for k, c in enumerate(curves) if c is not None]
    names, families, note = class_labels(class_names) if legend else (class_names, None, "")
    # many classes: faint lines, fainter the more there are, under their mean
    faint = float(np.clip(8 / max(len(present), 1), 0.05, 0.35))
    for k, c in present:
        style = ({"color": colours[k % len(colours)], "lw": 1.3} if legend
                 else {"color": "tab:blue", "lw": 0.6, "alpha": faint})
        roc.plot(c.fpr, c.tpr, label=f"{names[k]} ({c.roc_auc:.3f})" if legend else None,
                 **style)
        pr.plot(c.recall, c.precision,
                label=f"{names[k]} ({c.average_precision:.3f})" if legend else None,
                drawstyle="steps-post", **style)
    if not legend and present:
        grid = np.linspace(0.0, 1.0, 201)
        roc.plot(grid, np.mean([np.interp(grid, c.fpr, c.tpr) for _, c in present], axis=0),
                 color="black", lw=2, label="mean over classes")
        pr.plot(grid, np.mean([interpolated_precision(c.recall, c.precision, grid)
                               for _, c in present], axis=0),
                color="black", lw=2, label="mean over classes")
    roc.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    macro_auc = np.mean([c.roc_auc for _, c in present]) if present else float("nan")
    macro_ap = np.mean([c.average_precision for _, c in present]) if present else float("nan")
    roc.set(xlabel="False positive rate", ylabel="True positive rate", xlim=(0, 1),
            ylim=(0, 1.005), title=f"ROC, macro AUC {macro_auc:.3f}")
    pr.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.005),
           title=f"Precision-recall, macro average precision {macro_ap:.3f}")
    for ax in (roc, pr):
        ax.grid(alpha=0.3)
        if legend and present:
            ax.legend(fontsize=7, loc="lower right" if ax is roc else "lower left",
                      title="class by index (area)" if note else "class (area)",
                      title_fontsize=7,
                      prop={"family": families, "size": 7} if families else None)
    if not legend:
        for ax in (roc, pr) if present else ():
            ax.legend(fontsize=7, loc="lower right" if ax is roc else "lower left")
        fig.text(0.5, 0.01, f"{len(present)} classes, one faint line each (legend omitted); "
                 "black: their mean (ROC: true positive rate at each false positive rate; "
                 "precision-recall: interpolated precision at each recall)",
                 ha="center", fontsize=8)
    fig.suptitle(title or "One-vs-rest curves")
    fig.subplots_adjust(**{**FIXED_MARGINS, "bottom": 0.13, "wspace": 0.2})
    return fig


def interpolated_precision(recall: np.ndarray, precision: np.ndarray,
                           grid: np.ndarray) -> np.ndarray:
    """Interpolated precision at each recall of `grid` (the best precision at that recall or
    more), from a curve of sklearn's `precision_recall_curve` (recall decreasing from 1 to 0,
    float arrays of one length); returns float64 of `grid`'s shape."""
    order = np.argsort(recall, kind="stable")
    ascending, best = recall[order], np.maximum.accumulate(precision[order][::-1])[::-1]
    at = np.searchsorted(ascending, grid, side="left")
    return np.where(at < len(best), best[np.minimum(at, len(best) - 1)], 0.0)


def reliability_diagram_figure(confidence: np.ndarray, accuracy: np.ndarray,
                               counts: np.ndarray, ece: float, bins: int,
                               title: str = "") -> Figure:
    """Reliability diagram: accuracy against mean confidence of each non-empty bin (top), the
    images per bin (bottom, log scale); the diagonal is perfect calibration."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.8, 6.4), sharex=True,
                                      gridspec_kw={"height_ratios": (3, 1)})
    top.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="perfect calibration")
    _reliability_points(top, confidence, accuracy, counts,
                        f"this model (hollow: bins under {MIN_BIN_IMAGES} images)",
                        color="tab:blue")
    top.vlines(confidence, np.minimum(confidence, accuracy), np.maximum(confidence, accuracy),
               color="tab:red", alpha=0.6, lw=2, label="gap")
    top.set(ylabel="Accuracy", xlim=(0, 1), ylim=(0, 1.005),
            title=f"ECE {ece:.4f} ({bins} equal-width bins)")
    top.grid(alpha=0.3)
    top.legend(fontsize=8, loc="upper left")
    bottom.bar(confidence, counts, width=0.8 / bins, color="tab:grey")
    bottom.set(xlabel="Confidence (probability of the predicted class)", ylabel="Images",
               yscale="log")
    bottom.grid(alpha=0.3)
    fig.suptitle(title or "Reliability")
    fig.subplots_adjust(**{**FIXED_MARGINS, "left": 0.17, "right": 0.95, "top": 0.9,
                           "bottom": 0.09, "hspace": 0.1})
    return fig


def image_gallery_figure(images: np.ndarray, captions: Sequence[str], title: str = "",
                         columns: int = 6, families: list[str] | None = None) -> Figure:
    """Images (n, S, S, 3) uint8 in a grid, each with its caption (7-point lines) above it, in
    the font `families` (from `class_labels`) when given."""
    count = len(images)
    rows = max(1, int(np.ceil(count / columns)))
    # fixed margins (see FIXED_MARGINS), sized in inches from the captions' line count; a
    # caption line longer than its column runs into the next
    lines = max((str(c).count("\n") + 1 for c in captions), default=1)
    image, caption, title_space = 1.6, lines * 7 * 1.3 / 72 + 0.08, 0.5
    height = title_space + rows * (image + caption)
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, height), squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.05 / height,
                        top=1 - (title_space + caption) / height, wspace=0.1,
                        hspace=caption / image)
    for ax in axes.flat:
        ax.axis("off")
    for ax, picture, text in zip(axes.flat, images, captions, strict=False):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(text, fontsize=7, **({"fontfamily": families} if families else {}))
    if count == 0:
        axes[0, 0].text(0, 0.5, "none", fontsize=10)
    fig.suptitle(title, fontsize=10)
    return fig


# --------------------------------------------------------------------------- comparison report


def accuracy_by_model_figure(
    labels: Sequence[str], runs: Sequence[Sequence[float]], metric: str = "Test accuracy",
    chance: float = 0.0,
) -> Figure:
    """Bars of the mean per model, one dot per run, error bars of one standard deviation
    (none for a single run); each model's mean is under its name. The axis runs from chance
    (1/classes, `chance`; lower if a run is below it, in steps of 0.05) to 1.0: one rule for
    one run and for many, so the bars' heights mean the same in every report."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(labels) + 2), 4.2))
    x = np.arange(len(labels))
    means = [float(np.mean(r)) for r in runs]
    stds = [float(np.std(r, ddof=1)) if len(r) > 1 else 0.0 for r in runs]
    ax.bar(x, means, yerr=stds, capsize=6, color="tab:blue", alpha=0.75,
           error_kw={"elinewidth": 1.5})
    for i, values in enumerate(runs):
        ax.plot(np.full(len(values), x[i]), values, "o", color="black", ms=4, alpha=0.7,
                clip_on=False, label="each run" if i == 0 else None)
    low = min(min(r) for r in runs)
    bottom = float(np.floor(max(0.0, min(chance, low)) * 20) / 20)
    ax.set_ylim(bottom, 1.0)
    ticks = [f"{label}\n{mean:.3f}" + (f" ± {sd:.3f}" if len(values) > 1 else " (single run)")
             for label, mean, sd, values in zip(labels, means, stds, runs, strict=True)]
    ax.set_xticks(x, labels=ticks, rotation=15 if len(labels) > 4 else 0, fontsize=8)
    ax.set_ylabel(metric + (f" (axis starts at {bottom:.2f}, chance)" if bottom > 0 else ""))
    ax.set_title(f"{metric} by model (mean ± 1 sd over runs)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right")
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
    """One confusion-matrix panel per model, on the one colour scale of
    `confusion_matrix_figure` (share of the true class, log scale)."""
    count = len(matrices)
    cols = min(count, 2)
    rows = int(np.ceil(count / cols))
    size = min(max(4.5, 0.45 * max(len(c) for c in class_names.values()) + 2),
               MAX_FIGURE_INCHES / 2)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + 1, size * 0.9 * rows),
                             squeeze=False, layout="constrained")
    for ax, (label, cm) in zip(axes.flat, matrices.items(), strict=False):
        confusion_matrix_figure(cm, class_names[label], title=label, ax=ax)
    for ax in list(axes.flat)[count:]:
        ax.set_visible(False)
    image = axes.flat[0].images[0]
    fig.colorbar(image, ax=list(axes.flat[:count]), fraction=0.03, pad=0.02,
                 label="share of the true class (log scale)")
    fig.suptitle("Confusion matrices (rows: true class; counts in the cells)"
                 if max(len(c) for c in class_names.values()) <= MAX_LABELLED_CLASSES
                 else "Confusion matrices (rows: true class; axes: label indices)")
    return fig


MIN_BIN_IMAGES = 10  # a reliability bin with fewer images is drawn hollow and not joined


def _reliability_points(ax: plt.Axes, confidence: np.ndarray, accuracy: np.ndarray,
                        counts: np.ndarray, label: str, **style: Any) -> None:
    """A reliability curve: bins of MIN_BIN_IMAGES or more images joined, smaller bins as
    hollow points (their accuracy is a few images' worth), each point with its count."""
    full = counts >= MIN_BIN_IMAGES
    line, = ax.plot(confidence[full], accuracy[full], marker="o", ms=4, label=label, **style)
    ax.plot(confidence[~full], accuracy[~full], ls="none", marker="o", ms=4,
            mfc="none", color=line.get_color())
    for x, y, n in zip(confidence, accuracy, counts, strict=True):
        ax.annotate(str(int(n)), (x, y), textcoords="offset points", xytext=(3, -9),
                    fontsize=6, color=line.get_color())


def reliability_by_model_figure(
        curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, float]],
        bins: int) -> Figure:
    """Every model's reliability curve on one diagram: {label: (mean confidence per non-empty
    bin, accuracy per bin, images per bin, ECE)}; each point carries its image count, and
    bins of fewer than MIN_BIN_IMAGES are hollow and left out of the line."""
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="perfect calibration")
    for label, (confidence, accuracy, counts, ece) in curves.items():
        _reliability_points(ax, confidence, accuracy, counts, f"{label} (ECE {ece:.4f})")
    ax.set(xlabel="Confidence (probability of the predicted class)", ylabel="Accuracy",
           xlim=(0, 1), ylim=(0, 1.005),
           title=f"Reliability by model ({bins} bins, test; numbers: images per bin;\n"
                 f"hollow: fewer than {MIN_BIN_IMAGES} images, not joined)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def pareto_figure(labels: Sequence[str], accuracy: Sequence[float],
                  costs: dict[str, Sequence[float | None]],
                  dominated: dict[str, Sequence[bool]], title: str = "") -> Figure:
    """Test accuracy against each cost (one panel per cost, lower is better, log scale): the
    models on that cost's Pareto front filled and joined by the best accuracy reachable at
    each cost, the dominated ones hollow. A model with an unknown cost is left out of that
    panel."""
    fig, axes = plt.subplots(1, len(costs), figsize=(4.3 * len(costs), 3.9), squeeze=False)
    for ax, (name, values) in zip(axes[0], costs.items(), strict=True):
        points = [(c, a, label, d) for c, a, label, d in
                  zip(values, accuracy, labels, dominated[name], strict=True) if c is not None]
        for c, a, label, d in points:
            ax.plot(c, a, "o", ms=8, mec="tab:blue", mfc="white" if d else "tab:blue",
                    label=None)
            ax.annotate(label + (" (dominated)" if d else ""), (c, a),
                        textcoords="offset points", xytext=(5, 4), fontsize=7)
        front = sorted((c, a) for c, a, _, d in points if not d)
        if len(front) > 1:
            ax.plot(*zip(*front, strict=True), "-", color="tab:blue", alpha=0.4,
                    drawstyle="steps-post")
        if points and min(c for c, *_ in points) > 0:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap
        ax.margins(x=0.25, y=0.15)
        ax.set_xlabel(f"{name} (lower is better)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Test accuracy (mean over runs)")
    fig.suptitle(title or "Accuracy against cost: hollow = dominated", fontsize=10)
    fig.tight_layout()
    return fig
