"""Plot gradient-descent paths over filled contours of f (matplotlib, Agg backend, no display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from gradient_descent.core import DescentResult, Minimum, StopReason, f  # noqa: E402

PLOT_NAME = "gradient_descent_path.png"
TITLE = r"$f(x, y) = x^2 + y^2 + x\,(y + 2) + \cos 3x$"
_MAX_MARKERS = 150  # a path with more points shows every k-th one as a marker


def _region(results: Sequence[DescentResult]) -> tuple[float, float, float, float]:
    """The box the paths cover, padded by a quarter of its size and at least 0.5 each side."""
    points = np.concatenate([r.path for r in results])
    lo, hi = points.min(axis=0), points.max(axis=0)
    pad = np.maximum(0.25 * (hi - lo), 0.5)
    return lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1]


def _contours(ax: plt.Axes, region: tuple[float, float, float, float]) -> None:
    """Filled contours of f over region, with a colour bar.

    A region wider than 1000 (a diverged path, which grows geometrically) gets symlog axes,
    a mesh even on those axes and contour levels at quantiles of f, so that every hop of the
    path and some structure of f stay visible although f spans many orders of magnitude.
    """
    x0, x1, y0, y1 = region
    if max(x1 - x0, y1 - y0) > 1e3:
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_yscale("symlog", linthresh=1.0)
        axes = []
        for axis, lo, hi in ((ax.xaxis, x0, x1), (ax.yaxis, y0, y1)):
            scale = axis.get_transform()  # the symlog transform, 1-d
            t_lo, t_hi = scale.transform(np.array([lo, hi]))
            axes.append(scale.inverted().transform(np.linspace(t_lo, t_hi, 400)))
        xx, yy = np.meshgrid(*axes)
        zz = f(xx, yy)
        levels: Any = np.unique(np.quantile(zz, np.linspace(0.0, 1.0, 31)))
        norm: Any = BoundaryNorm(levels, ncolors=256)  # one colour step per level
    else:
        xx, yy = np.meshgrid(np.linspace(x0, x1, 400), np.linspace(y0, y1, 400))
        zz = f(xx, yy)
        levels = MaxNLocator(30).tick_values(zz.min(), zz.max())
        norm = None
    filled = ax.contourf(xx, yy, zz, levels=levels, cmap="viridis", norm=norm)
    ax.contour(xx, yy, zz, levels=levels, colors="white", linewidths=0.3, alpha=0.4)
    bar = ax.figure.colorbar(filled, ax=ax, spacing="uniform", format="%.3g")
    bar.set_label("f(x, y)")


def _draw_path(ax: plt.Axes, run: DescentResult, colour: str, label: str | None) -> None:
    every = max(1, len(run.path) // _MAX_MARKERS)
    style = "--" if run.stop_reason is StopReason.DIVERGED else "-"
    ax.plot(
        run.path[:, 0],
        run.path[:, 1],
        style,
        color=colour,
        linewidth=1.2,
        marker="o",
        markersize=2.5,
        markevery=every,
        label=label,
    )


def plot_single(run: DescentResult, out_dir: str | Path) -> Path:
    """Draw one path (start and end marked) over contours of f; return the PNG's path."""
    fig, ax = plt.subplots(figsize=(8.5, 6.5), dpi=120)
    try:
        _contours(ax, _region([run]))
        _draw_path(ax, run, "white", f"path ({run.steps} steps, lr = {run.learning_rate:g})")
        sx, sy = run.start
        ax.plot(
            sx,
            sy,
            "s",
            color="#2ca02c",
            markersize=9,
            markeredgecolor="black",
            label=f"start ({sx:.4g}, {sy:.4g})",
        )
        end_label = (
            f"minimum ({run.x:.4f}, {run.y:.4f}), f = {run.f:.5f}"
            if run.converged
            else f"end, {run.stop_reason} ({run.x:.4g}, {run.y:.4g}), f = {run.f:.4g}"
        )
        ax.plot(
            run.x,
            run.y,
            "*",
            color="#d62728",
            markersize=16,
            markeredgecolor="black",
            label=end_label,
        )
        status = {
            StopReason.CONVERGED: "converged",
            StopReason.MAX_STEPS: "stopped at the step limit",
            StopReason.DIVERGED: "DIVERGED",
        }[run.stop_reason]
        ax.set_title(f"Gradient descent on {TITLE}: {status}")
        return _finish(fig, ax, out_dir)
    finally:
        plt.close(fig)


def plot_grid(
    runs: Sequence[DescentResult], minima: Sequence[Minimum], out_dir: str | Path
) -> Path:
    """Draw the paths from every start, coloured by the minimum they reach; return the PNG."""
    fig, ax = plt.subplots(figsize=(9, 7), dpi=120)
    try:
        _contours(ax, _region(runs))
        palette = ["#ff7f0e", "#e377c2", "#17becf", "#bcbd22", "#9467bd", "#8c564b"]
        colour_of: dict[tuple[float, float], str] = {}
        for i, m in enumerate(minima):
            colour = palette[i % len(palette)]
            for s in m.starts:
                colour_of[s] = colour
        labelled: set[str] = set()
        for run in runs:
            colour = colour_of.get(run.start, "#d62728")
            label = None
            if colour == "#d62728" and colour not in labelled:
                label = "diverged / step limit"
                labelled.add(colour)
            _draw_path(ax, run, colour, label)
            ax.plot(*run.start, "o", color=colour, markersize=5, markeredgecolor="black")
        for i, m in enumerate(minima):
            ax.plot(
                m.x,
                m.y,
                "*",
                color=palette[i % len(palette)],
                markersize=18,
                markeredgecolor="black",
                label=f"({m.x:.4f}, {m.y:.4f}), f = {m.f:.5f}: {m.share:.0%} of starts",
            )
        ax.set_title(f"Gradient descent from {len(runs)} starts on {TITLE}")
        return _finish(fig, ax, out_dir)
    finally:
        plt.close(fig)


def _finish(fig: plt.Figure, ax: plt.Axes, out_dir: str | Path) -> Path:
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    fig.tight_layout()
    out = Path(out_dir) / PLOT_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
