"""Command line and MLflow tracking of the gradient-descent warm-up.

    python -m gradient_descent [--start-x X] [--start-y Y] [--learning-rate LR]
        [--max-steps N] [--tolerance T] [--starts {single,grid}] [--output DIR]
        [--experiment NAME]

Arguments are checked before MLflow is touched: a bad one is a one-line error, exit status 2,
and no run. A run named ``gradient-descent`` records the parameters, the per-step metrics
``f`` and ``grad_norm`` (step i = the point after i steps, logged in batches), the summary
metrics ``min_x``, ``min_y``, ``min_f``, ``steps``, the tag ``stop_reason`` and the plot.
A diverged descent has no minimum: its run logs ``last_x``, ``last_y``, ``last_f`` instead,
ends FAILED, and the command exits with status 1.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from gradient_descent.core import (
    GRID_SIZE,
    GRID_X_RANGE,
    GRID_Y_RANGE,
    MAX_STEPS_LIMIT,
    DescentResult,
    GridResult,
    StopReason,
    gradient_descent,
    grid_descent,
    grid_starts,
)
from gradient_descent.plot import plot_grid, plot_single
from tracking.cli import CommandParser, output_folder
from tracking.store.connect import ensure_experiment, prepare_store
from tracking.store.ui import run_url

DEFAULT_EXPERIMENT = "gradient-descent"
RUN_NAME = "gradient-descent"
_BATCH = 1000  # MLflow accepts at most 1000 metrics per log_batch call


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def _steps(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= MAX_STEPS_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_STEPS_LIMIT}, got {text!r}")
    return value


def _name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments; each type check raises a one-line error naming the problem."""
    parser = CommandParser(
        prog="python -m gradient_descent",
        description="Gradient descent on f(x, y) = x^2 + y^2 + x(y + 2) + cos(3x), "
        "tracked in MLflow (MLFLOW_TRACKING_URI).",
    )
    parser.add_argument("--start-x", type=_finite, default=0.0, help="start x (default 0)")
    parser.add_argument("--start-y", type=_finite, default=0.0, help="start y (default 0)")
    parser.add_argument("--learning-rate", type=_positive, default=0.1, help="default 0.1")
    parser.add_argument("--max-steps", type=_steps, default=10_000, help="default 10000")
    parser.add_argument(
        "--tolerance",
        type=_positive,
        default=1e-10,
        help="stop when the gradient norm is below this (default 1e-10)",
    )
    grid = (
        f"{GRID_SIZE}x{GRID_SIZE} over [{GRID_X_RANGE[0]:g}, {GRID_X_RANGE[1]:g}] x "
        f"[{GRID_Y_RANGE[0]:g}, {GRID_Y_RANGE[1]:g}]"
    )
    parser.add_argument(
        "--starts",
        choices=["single", "grid"],
        default="single",
        help=f"single: from (start-x, start-y); grid: from a {grid} grid, "
        "reporting every minimum found and its share of starts (default single)",
    )
    parser.add_argument(
        "--output",
        type=lambda text: Path(output_folder(text)),
        default="outputs",
        help="folder for gradient_descent_path.png (default outputs)",
    )
    parser.add_argument(
        "--experiment",
        type=_name,
        default=DEFAULT_EXPERIMENT,
        help=f"MLflow experiment (default {DEFAULT_EXPERIMENT}; ignored under `mlflow run`)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status (2: bad arguments, 1: diverged, 0: otherwise)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has already printed the one-line error (or help)
        return exit_.code if isinstance(exit_.code, int) else 2

    settings = {
        "learning_rate": args.learning_rate,
        "max_steps": args.max_steps,
        "tolerance": args.tolerance,
    }
    if args.starts == "grid":
        grid = grid_descent(grid_starts(), **settings)
        plot = plot_grid(grid.runs, grid.minima, args.output)
        best = grid.best
        params = {
            **settings,
            "starts": "grid",
            "grid": f"{GRID_SIZE}x{GRID_SIZE} over x in [{GRID_X_RANGE[0]:g}, "
            f"{GRID_X_RANGE[1]:g}], y in [{GRID_Y_RANGE[0]:g}, {GRID_Y_RANGE[1]:g}]",
        }
        _report_grid(grid)
    else:
        best = gradient_descent((args.start_x, args.start_y), **settings)
        plot = plot_single(best, args.output)
        params = {**settings, "starts": "single", "start_x": args.start_x, "start_y": args.start_y}
        grid = None
        _report_single(best)
    print(f"plot: {plot}")

    run_id, experiment = _track(args.experiment, params, best, grid, plot)
    print(f"mlflow run {run_id} in experiment {experiment!r}")
    info = MlflowClient().get_run(run_id).info
    print(f"run page: {run_url(info.experiment_id, run_id)}", file=sys.stderr)
    return 1 if best.stop_reason is StopReason.DIVERGED else 0


def _report_single(run: DescentResult) -> None:
    where = f"x = {run.x:.12g}, y = {run.y:.12g}, f = {run.f:.12g}"
    if run.stop_reason is StopReason.CONVERGED:
        print(f"minimum: {where} after {run.steps} steps (|grad f| = {run.grad_norm:.1e})")
    elif run.stop_reason is StopReason.MAX_STEPS:
        print(
            f"no minimum within {run.steps} steps (|grad f| = {run.grad_norm:.1e} > tolerance "
            f"{run.tolerance:g}): last point {where}"
        )
    else:
        print(
            f"error: diverged after {run.steps} steps (learning rate {run.learning_rate:g} is "
            f"too large?); last finite point {where} is not a minimum",
            file=sys.stderr,
        )


def _report_grid(grid: GridResult) -> None:
    n = len(grid.runs)
    print(f"{len(grid.minima)} distinct minima from {n} starts:")
    print(f"  {'x':>13} {'y':>13} {'f':>13} {'share':>7} {'starts':>6}")
    for m in grid.minima:
        print(f"  {m.x:13.8f} {m.y:13.8f} {m.f:13.8f} {m.share:7.1%} {m.count:6d}")
    if grid.unconverged:
        reasons = ", ".join(
            f"{sum(r.stop_reason is reason for r in grid.unconverged)} {reason}"
            for reason in (StopReason.MAX_STEPS, StopReason.DIVERGED)
        )
        print(f"  no minimum from {len(grid.unconverged)} starts ({reasons})")
    best = grid.best
    if best.converged:
        print(
            f"minimum: x = {best.x:.12g}, y = {best.y:.12g}, f = {best.f:.12g} after "
            f"{best.steps} steps from ({best.start[0]:g}, {best.start[1]:g})"
        )
    else:
        _report_single(best)


def _metric_batches(run: DescentResult, timestamp: int) -> list[list[Any]]:
    metrics = []
    for step in range(1, len(run.path)):
        metrics.append(Metric("f", float(run.values[step]), timestamp, step))
        metrics.append(Metric("grad_norm", float(run.grad_norms[step]), timestamp, step))
    return [metrics[i : i + _BATCH] for i in range(0, len(metrics), _BATCH)]


def _summary(best: DescentResult, grid: GridResult | None) -> dict[str, float]:
    prefix = "min" if best.stop_reason is not StopReason.DIVERGED else "last"
    summary = {
        f"{prefix}_x": best.x,
        f"{prefix}_y": best.y,
        f"{prefix}_f": best.f,
        "steps": best.steps,
        "final_grad_norm": best.grad_norm,
        "start_f": float(best.values[0]),
        "start_grad_norm": float(best.grad_norms[0]),
    }
    if grid is not None:
        summary.update(
            best_start_x=best.start[0],
            best_start_y=best.start[1],
            n_starts=len(grid.runs),
            n_minima=len(grid.minima),
            unconverged_share=grid.unconverged_share,
        )
        for i, m in enumerate(grid.minima):
            summary.update(
                {
                    f"minimum_{i}_x": m.x,
                    f"minimum_{i}_y": m.y,
                    f"minimum_{i}_f": m.f,
                    f"minimum_{i}_share": m.share,
                }
            )
    return summary


def _track(
    experiment: str,
    params: dict[str, Any],
    best: DescentResult,
    grid: GridResult | None,
    plot: Path,
) -> tuple[str, str]:
    """Log one run; return its id and experiment name. Under `mlflow run` the run exists."""
    prepare_store()
    client = MlflowClient()
    experiment_id = None if os.environ.get("MLFLOW_RUN_ID") else ensure_experiment(experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=RUN_NAME) as run:
        run_id = run.info.run_id
        # `mlflow run` has already logged its own spelling of the parameters ("-1" for -1.0);
        # MLflow refuses to change a logged value, so log only the ones not there yet.
        logged = client.get_run(run_id).data.params
        mlflow.log_params({k: v for k, v in params.items() if k not in logged})
        for batch in _metric_batches(best, int(time.time() * 1000)):
            client.log_batch(run_id, metrics=batch)
        mlflow.log_metrics(_summary(best, grid))
        mlflow.set_tag("stop_reason", str(best.stop_reason))
        if grid is not None:
            mlflow.log_dict(
                {
                    "minima": [
                        {
                            "x": m.x,
                            "y": m.y,
                            "f": m.f,
                            "share": m.share,
                            "count": m.count,
                            "starts": [list(s) for s in m.starts],
                        }
                        for m in grid.minima
                    ],
                    "unconverged": [
                        {"start": list(r.start), "stop_reason": str(r.stop_reason)}
                        for r in grid.unconverged
                    ],
                },
                "minima.json",
            )
        mlflow.log_artifact(str(plot))
        if best.stop_reason is StopReason.DIVERGED:
            mlflow.end_run(status="FAILED")
        name = client.get_experiment(run.info.experiment_id).name
    return run_id, name
