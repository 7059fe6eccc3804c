"""Numerics of the gradient-descent warm-up: the function, its exact gradient, the descent.

    f(x, y)  = x^2 + y^2 + x (y + 2) + cos(3x)
    df/dx    = 2x + y + 2 - 3 sin(3x)
    df/dy    = 2y + x

Every stationary point lies on y = -x/2 where 1.5x + 2 - 3 sin(3x) = 0. Three of them are
minima: the global one near (-1.0882, 0.5441), f = -2.28071, and local ones near
(0.6059, -0.3030), f = 1.24273, and (-2.8537, 1.4269), f = -0.24934; the two between them
are saddle points.

Pure numpy and math (no tracking, no plotting), so it is cheap to import and to test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

#: Above this many steps a run is refused: the whole path is kept in memory and tracked.
MAX_STEPS_LIMIT = 1_000_000
#: A path whose distance from the origin exceeds max(this, 1000 |start|) counts as diverged.
DIVERGENCE_RADIUS = 1e6
#: Default grid of start points for the basin survey: 7 x 7 over [-4, 3] x [-3, 3].
GRID_X_RANGE: tuple[float, float] = (-4.0, 3.0)
GRID_Y_RANGE: tuple[float, float] = (-3.0, 3.0)
GRID_SIZE = 7


def f(x: Any, y: Any) -> Any:
    """f(x, y) = x^2 + y^2 + x (y + 2) + cos(3x), for floats or numpy arrays alike."""
    return x * x + y * y + x * (y + 2.0) + np.cos(3.0 * x)


def gradient(x: Any, y: Any) -> tuple[Any, Any]:
    """The analytic gradient (df/dx, df/dy) = (2x + y + 2 - 3 sin(3x), 2y + x)."""
    return 2.0 * x + y + 2.0 - 3.0 * np.sin(3.0 * x), 2.0 * y + x


class StopReason(str, Enum):
    """Why a descent stopped."""

    CONVERGED = "converged"  # the gradient norm fell below the tolerance
    MAX_STEPS = "max_steps"  # the step limit came first
    DIVERGED = "diverged"  # the next point was not finite or ran off without bound

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, eq=False)
class DescentResult:
    """The whole path of one descent and why it stopped.

    ``path[i]`` is the point after ``i`` steps (``path[0]`` is the start), ``values[i]`` is f
    there and ``grad_norms[i]`` the Euclidean norm of the gradient there. Every entry is finite:
    when a descent diverges, the path ends at its last finite point, and the final point of a
    diverged descent is not a minimum (see ``stop_reason``).
    """

    path: np.ndarray
    values: np.ndarray
    grad_norms: np.ndarray
    stop_reason: StopReason
    learning_rate: float
    tolerance: float
    max_steps: int

    @property
    def steps(self) -> int:
        """Number of gradient steps taken (finite ones, for a diverged descent)."""
        return len(self.path) - 1

    @property
    def start(self) -> tuple[float, float]:
        return float(self.path[0, 0]), float(self.path[0, 1])

    @property
    def x(self) -> float:
        """x of the final point."""
        return float(self.path[-1, 0])

    @property
    def y(self) -> float:
        """y of the final point."""
        return float(self.path[-1, 1])

    @property
    def f(self) -> float:
        """f at the final point."""
        return float(self.values[-1])

    @property
    def grad_norm(self) -> float:
        """Gradient norm at the final point."""
        return float(self.grad_norms[-1])

    @property
    def converged(self) -> bool:
        return self.stop_reason is StopReason.CONVERGED


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def validate(
    start: Sequence[float], learning_rate: float, max_steps: int, tolerance: float
) -> tuple[float, float]:
    """Check the settings of a descent; return the start as two floats or raise ValueError."""
    try:
        x0, y0 = (float(v) for v in start)
    except (TypeError, ValueError):
        raise ValueError(f"start must be two numbers (x, y), got {start!r}") from None
    if not (math.isfinite(x0) and math.isfinite(y0)):
        raise ValueError(f"start must be finite, got ({x0!r}, {y0!r})")
    _check_positive("learning_rate", learning_rate)
    _check_positive("tolerance", tolerance)
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)):
        raise ValueError(f"max_steps must be an integer, got {max_steps!r}")
    if not 1 <= max_steps <= MAX_STEPS_LIMIT:
        raise ValueError(f"max_steps must be between 1 and {MAX_STEPS_LIMIT}, got {max_steps}")
    return x0, y0


def gradient_descent(
    start: Sequence[float] = (0.0, 0.0),
    learning_rate: float = 0.1,
    max_steps: int = 10_000,
    tolerance: float = 1e-10,
) -> DescentResult:
    """Plain gradient descent on f from ``start``: p <- p - learning_rate * grad f(p).

    Stops when the gradient norm at the current point is below ``tolerance`` (converged), after
    ``max_steps`` steps (max_steps), or when the next point is not finite, f or its gradient is
    not finite there, or it lies farther than max(1e6, 1000 |start|) from the origin (diverged;
    f grows like |p|^2, so no minimum lies out there). Raises ValueError on bad settings.
    """
    x, y = validate(start, learning_rate, max_steps, tolerance)
    lr = float(learning_rate)
    radius = max(DIVERGENCE_RADIUS, 1e3 * math.hypot(x, y))

    xs: list[float] = [x]
    ys: list[float] = [y]
    fs: list[float] = [float(f(x, y))]
    gx, gy = (float(g) for g in gradient(x, y))
    norms: list[float] = [math.hypot(gx, gy)]
    reason = StopReason.MAX_STEPS
    with np.errstate(all="ignore"):
        for _ in range(max_steps):
            if norms[-1] < tolerance:
                reason = StopReason.CONVERGED
                break
            nx, ny = x - lr * gx, y - lr * gy
            if not (math.isfinite(nx) and math.isfinite(ny)):
                reason = StopReason.DIVERGED
                break
            nf = float(f(nx, ny))
            ngx, ngy = (float(g) for g in gradient(nx, ny))
            nnorm = math.hypot(ngx, ngy)
            if not (math.isfinite(nf) and math.isfinite(nnorm)):
                reason = StopReason.DIVERGED
                break
            x, y, gx, gy = nx, ny, ngx, ngy
            xs.append(x)
            ys.append(y)
            fs.append(nf)
            norms.append(nnorm)
            if math.hypot(x, y) > radius:
                reason = StopReason.DIVERGED
                break
        else:
            # Out of steps, but the last point may just have met the tolerance.
            if norms[-1] < tolerance:
                reason = StopReason.CONVERGED

    path = np.column_stack([xs, ys])
    values = np.asarray(fs)
    grad_norms = np.asarray(norms)
    for array in (path, values, grad_norms):
        array.flags.writeable = False
    return DescentResult(
        path=path,
        values=values,
        grad_norms=grad_norms,
        stop_reason=reason,
        learning_rate=lr,
        tolerance=float(tolerance),
        max_steps=int(max_steps),
    )


@dataclass(frozen=True)
class Minimum:
    """One distinct minimum reached in a grid survey and the share of starts that reach it."""

    x: float
    y: float
    f: float
    count: int
    share: float
    starts: tuple[tuple[float, float], ...]


@dataclass(frozen=True, eq=False)
class GridResult:
    """Descents from a grid of starts, their end points clustered into distinct minima."""

    runs: tuple[DescentResult, ...]
    minima: tuple[Minimum, ...]  # lowest f first
    unconverged: tuple[DescentResult, ...]  # runs that diverged or hit the step limit

    @property
    def unconverged_share(self) -> float:
        return len(self.unconverged) / len(self.runs)

    @property
    def best(self) -> DescentResult:
        """The run to report: converged to the lowest f in the fewest steps, if any converged."""
        ranked = sorted(
            self.runs,
            key=lambda r: (
                [StopReason.CONVERGED, StopReason.MAX_STEPS, StopReason.DIVERGED].index(
                    r.stop_reason
                ),
                round(r.f, 6),
                r.steps,
            ),
        )
        return ranked[0]


def grid_starts(
    x_range: tuple[float, float] = GRID_X_RANGE,
    y_range: tuple[float, float] = GRID_Y_RANGE,
    size: int = GRID_SIZE,
) -> list[tuple[float, float]]:
    """``size`` x ``size`` evenly spaced start points over x_range x y_range, row by row."""
    if size < 1:
        raise ValueError(f"grid size must be at least 1, got {size}")
    xs, ys = np.linspace(*x_range, size), np.linspace(*y_range, size)
    return [(float(x), float(y)) for y in ys for x in xs]


def grid_descent(
    starts: Sequence[Sequence[float]] | None = None,
    learning_rate: float = 0.1,
    max_steps: int = 10_000,
    tolerance: float = 1e-10,
    cluster_radius: float | None = None,
) -> GridResult:
    """Run a descent from each start (default: ``grid_starts()``) and cluster the minima.

    End points of converged runs closer than ``cluster_radius`` to a cluster's best point
    (smallest gradient norm) join that cluster. The default radius, min(0.5, max(1e-3,
    100 * tolerance)), is far above how far apart runs to the same minimum end and far below
    the distance between minima of f (about 1.9).
    """
    starts = grid_starts() if starts is None else [tuple(s) for s in starts]
    if not starts:
        raise ValueError("grid_descent needs at least one start point")
    for s in starts:
        validate(s, learning_rate, max_steps, tolerance)
    if cluster_radius is None:
        cluster_radius = min(0.5, max(1e-3, 100.0 * tolerance))
    runs = tuple(gradient_descent(s, learning_rate, max_steps, tolerance) for s in starts)

    clusters: list[list[DescentResult]] = []
    for run in runs:
        if not run.converged:
            continue
        for members in clusters:
            centre = min(members, key=lambda r: r.grad_norm)
            if math.hypot(run.x - centre.x, run.y - centre.y) < cluster_radius:
                members.append(run)
                break
        else:
            clusters.append([run])

    minima = []
    for members in clusters:
        centre = min(members, key=lambda r: r.grad_norm)
        minima.append(
            Minimum(
                x=centre.x,
                y=centre.y,
                f=centre.f,
                count=len(members),
                share=len(members) / len(runs),
                starts=tuple(r.start for r in members),
            )
        )
    minima.sort(key=lambda m: m.f)
    return GridResult(
        runs=runs,
        minima=tuple(minima),
        unconverged=tuple(r for r in runs if not r.converged),
    )
