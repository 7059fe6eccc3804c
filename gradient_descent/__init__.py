"""Gradient-descent warm-up: minimise f(x, y) = x^2 + y^2 + x(y + 2) + cos(3x), tracked in MLflow.

Run it with ``python -m gradient_descent`` (one start, default (0, 0), learning rate 0.1,
tolerance 1e-10 on the gradient norm, at most 10000 steps) or
``python -m gradient_descent --starts grid`` (a 7 x 7 grid of starts over [-4, 3] x [-3, 3],
reporting each distinct minimum and the share of starts that reach it). It prints the minimum
found, writes ``gradient_descent_path.png`` (``--output``, default ``outputs/``) and logs a run
named ``gradient-descent`` to the MLflow store named by MLFLOW_TRACKING_URI (default
``sqlite:///mlflow.db`` in the working folder), experiment ``gradient-descent`` by default.

- :mod:`gradient_descent.core`: f, its analytic gradient, the descent and the grid survey
  (numpy and math only);
- :mod:`gradient_descent.plot`: the contour plot (matplotlib, Agg);
- :mod:`gradient_descent.cli`: arguments and MLflow tracking; its `main` is the command
  (not imported here: the numerics load neither MLflow nor the suite).
"""

from __future__ import annotations

from gradient_descent.core import (
    DescentResult,
    GridResult,
    Minimum,
    StopReason,
    f,
    gradient,
    gradient_descent,
    grid_descent,
    grid_starts,
)

__all__ = [
    "DescentResult",
    "GridResult",
    "Minimum",
    "StopReason",
    "f",
    "gradient",
    "gradient_descent",
    "grid_descent",
    "grid_starts",
]
