"""The gradient-descent warm-up: exact gradient, exact minima, divergence, CLI and tracking.

Expected minima are not hard-coded: they come from a bisection-plus-Newton root solve of the
stationarity condition, done here independently of the package.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from gradient_descent import (
    StopReason,
    f,
    gradient,
    gradient_descent,
    grid_descent,
    grid_starts,
)
from gradient_descent.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- reference solution ---------------------------------------------------------------------


def _stationary_points() -> list[tuple[float, float, bool]]:
    """Every stationary point (x, y, is_minimum) of f, solved to machine precision.

    df/dy = 0 gives y = -x/2; then df/dx = 0 is h(x) = 1.5x + 2 - 3 sin(3x) = 0. Because
    |3 sin(3x)| <= 3, all roots lie in [-10/3, 2/3]; a fine scan brackets each, bisection
    narrows it and Newton polishes it. A point is a minimum where the Hessian
    [[2 - 9 cos 3x, 1], [1, 2]] is positive definite.
    """

    def h(x: float) -> float:
        return 1.5 * x + 2.0 - 3.0 * math.sin(3.0 * x)

    def dh(x: float) -> float:
        return 1.5 - 9.0 * math.cos(3.0 * x)

    grid = np.linspace(-10.0 / 3.0 - 0.1, 2.0 / 3.0 + 0.1, 20_001)
    points = []
    for a, b in zip(grid[:-1], grid[1:], strict=True):
        if h(a) * h(b) > 0:
            continue
        for _ in range(200):
            mid = 0.5 * (a + b)
            a, b = (a, mid) if h(a) * h(mid) <= 0 else (mid, b)
        x = 0.5 * (a + b)
        for _ in range(3):
            x -= h(x) / dh(x)
        fxx = 2.0 - 9.0 * math.cos(3.0 * x)
        points.append((x, -x / 2.0, fxx > 0 and fxx * 2.0 - 1.0 > 0))
    return points


MINIMA = sorted(((x, y) for x, y, is_min in _stationary_points() if is_min), key=lambda p: f(*p))


def test_reference_solution_has_three_minima() -> None:
    assert len(_stationary_points()) == 5  # three minima and two saddle points between them
    assert len(MINIMA) == 3
    for x, y in MINIMA:
        gx, gy = gradient(x, y)
        assert abs(gx) < 1e-13 and abs(gy) < 1e-13
    # the study's reported (early-stopped) minimum lies close to the global one
    assert math.isclose(MINIMA[0][0], -1.088156592554671, abs_tol=1e-4)
    assert math.isclose(f(*MINIMA[0]), -2.2807097055009007, abs_tol=1e-8)


# -- the gradient ---------------------------------------------------------------------------


def test_gradient_matches_central_differences() -> None:
    rng = np.random.default_rng(20240601)
    h = 1e-5
    for x, y in rng.uniform(-4.0, 4.0, size=(200, 2)):
        gx, gy = gradient(x, y)
        fd_x = (f(x + h, y) - f(x - h, y)) / (2 * h)
        fd_y = (f(x, y + h) - f(x, y - h)) / (2 * h)
        assert gx == pytest.approx(fd_x, rel=1e-7, abs=1e-7)
        assert gy == pytest.approx(fd_y, rel=1e-7, abs=1e-7)


def _autodiff_gradient(points: np.ndarray) -> np.ndarray:
    """Gradient of f written once with keras.ops, differentiated by the Keras backend."""
    import keras
    from keras import ops

    def f_ops(x, y):  # noqa: ANN001, ANN202 - backend tensors
        return ops.square(x) + ops.square(y) + x * (y + 2.0) + ops.cos(3.0 * x)

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(points[:, 0], dtype=tf.float64)
        y = tf.constant(points[:, 1], dtype=tf.float64)
        with tf.GradientTape() as tape:
            tape.watch([x, y])
            total = tf.reduce_sum(f_ops(x, y))
        gx, gy = tape.gradient(total, [x, y])
        return np.column_stack([gx.numpy(), gy.numpy()])
    if backend == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
        grad = jax.grad(lambda x, y: f_ops(x, y).sum(), argnums=(0, 1))
        gx, gy = grad(jax.numpy.asarray(points[:, 0]), jax.numpy.asarray(points[:, 1]))
        return np.column_stack([np.asarray(gx), np.asarray(gy)])
    if backend == "torch":
        import torch

        x = torch.tensor(points[:, 0], dtype=torch.float64, requires_grad=True)
        y = torch.tensor(points[:, 1], dtype=torch.float64, requires_grad=True)
        gx, gy = torch.autograd.grad(f_ops(x, y).sum(), [x, y])
        return np.column_stack([gx.detach().numpy(), gy.detach().numpy()])
    pytest.skip(f"no autodiff recipe for the {backend} backend")


def test_gradient_matches_keras_autodiff() -> None:
    from keras import backend, ops

    points = np.random.default_rng(7).uniform(-4.0, 4.0, size=(100, 2))
    auto = _autodiff_gradient(points)
    gx, gy = gradient(points[:, 0], points[:, 1])
    # TensorFlow keeps float64 through keras.ops.cos; Keras' JAX backend computes it in float32.
    cos_dtype = backend.standardize_dtype(ops.cos(ops.convert_to_tensor([1.0], "float64")).dtype)
    tol = 1e-12 if cos_dtype == "float64" else 1e-5
    np.testing.assert_allclose(np.column_stack([gx, gy]), auto, rtol=tol, atol=tol)


# -- the descent ----------------------------------------------------------------------------


def test_default_descent_reaches_the_global_minimum_exactly() -> None:
    result = gradient_descent()  # defaults: start (0, 0), lr 0.1, tol 1e-10, 10000 steps
    x_star, y_star = MINIMA[0]
    assert result.stop_reason is StopReason.CONVERGED
    assert abs(result.x - x_star) < 1e-6 and abs(result.y - y_star) < 1e-6
    assert abs(result.x - x_star) < 1e-9  # in fact far closer
    assert result.f == pytest.approx(f(x_star, y_star), abs=1e-12)
    assert result.grad_norm < 1e-10
    assert 0 < result.steps < 1000
    assert result.path.shape == (result.steps + 1, 2)
    assert len(result.values) == len(result.grad_norms) == result.steps + 1
    assert tuple(result.path[0]) == (0.0, 0.0)
    assert np.all(np.diff(result.values) <= 1e-12)  # lr 0.1 is a descent step all the way
    assert result.values[-1] == pytest.approx(f(result.x, result.y), abs=0)


@pytest.mark.parametrize(
    ("start", "which"),
    [((1.0, 0.0), "right"), ((-3.0, 2.0), "left"), ((-4.0, 3.0), "left"), ((-1.0, 1.0), "global")],
)
def test_starts_reach_their_basins_minimum(start: tuple[float, float], which: str) -> None:
    by_x = sorted(MINIMA)  # left, global, right
    target = {"left": by_x[0], "global": by_x[1], "right": by_x[2]}[which]
    result = gradient_descent(start, learning_rate=0.1, max_steps=10_000, tolerance=1e-10)
    assert result.converged
    assert abs(result.x - target[0]) < 1e-6 and abs(result.y - target[1]) < 1e-6


def test_grid_finds_all_three_minima_with_shares_summing_to_one() -> None:
    starts = grid_starts()
    assert len(starts) == 49
    grid = grid_descent(starts)
    assert not grid.unconverged
    assert len(grid.minima) == 3
    for found, (x, y) in zip(grid.minima, MINIMA, strict=True):  # both sorted by f
        assert abs(found.x - x) < 1e-6 and abs(found.y - y) < 1e-6
    assert sum(m.share for m in grid.minima) == pytest.approx(1.0)
    assert sum(m.count for m in grid.minima) == 49
    assert grid.best.converged and abs(grid.best.f - f(*MINIMA[0])) < 1e-12


def test_too_large_learning_rate_is_reported_as_diverged_without_nan() -> None:
    result = gradient_descent((0.0, 0.0), learning_rate=5.0, max_steps=10_000, tolerance=1e-10)
    assert result.stop_reason is StopReason.DIVERGED
    assert not result.converged
    assert result.steps < 100
    for value in (result.x, result.y, result.f, result.grad_norm):
        assert math.isfinite(value)
    assert np.all(np.isfinite(result.path)) and np.all(np.isfinite(result.values))
    assert result.f > 1e6  # it ran off, growing without bound


def test_step_limit() -> None:
    result = gradient_descent((0.0, 0.0), learning_rate=0.01, max_steps=5, tolerance=1e-10)
    assert result.stop_reason is StopReason.MAX_STEPS
    assert result.steps == 5


def test_result_is_frozen() -> None:
    result = gradient_descent(max_steps=3)
    with pytest.raises(AttributeError):
        result.stop_reason = StopReason.CONVERGED  # type: ignore[misc]
    with pytest.raises(ValueError):
        result.path[0, 0] = 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"learning_rate": 0.0},
        {"learning_rate": -0.1},
        {"learning_rate": float("nan")},
        {"tolerance": 0.0},
        {"tolerance": float("inf")},
        {"max_steps": 0},
        {"max_steps": 2.5},
        {"start": (float("nan"), 0.0)},
        {"start": (0.0, float("inf"))},
        {"start": (1.0,)},
    ],
)
def test_bad_settings_raise_value_error(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        gradient_descent(**kwargs)


# -- command line and tracking --------------------------------------------------------------


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--learning-rate", "-0.1"], "--learning-rate"),
        (["--learning-rate", "0"], "--learning-rate"),
        (["--tolerance", "0"], "--tolerance"),
        (["--max-steps", "0"], "--max-steps"),
        (["--max-steps", "-3"], "--max-steps"),
        (["--max-steps", "ten"], "--max-steps"),
        (["--start-x", "nan"], "--start-x"),
        (["--start-y", "inf"], "--start-y"),
        (["--starts", "random"], "--starts"),
        (["--experiment", " "], "--experiment"),
    ],
)
def test_bad_input_exits_2_without_a_run(
    mlflow_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list, names: str
) -> None:
    assert main([*argv, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "error" in err and names in err
    # MLflow was never touched: no store, no artifacts, no plot
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "mlruns").exists()
    assert not (tmp_path / "out").exists()


def test_main_tracks_params_metrics_tag_and_plot(
    mlflow_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.tracking import MlflowClient

    assert main(["--learning-rate", "-1"]) == 2  # a refused call first: it must leave no run
    assert main(["--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "minimum: x = -1.088162409" in out

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("gradient-descent")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "gradient-descent"
    assert run.info.status == "FINISHED"
    assert run.data.tags["stop_reason"] == "converged"
    assert run.data.params == {
        "learning_rate": "0.1",
        "max_steps": "10000",
        "tolerance": "1e-10",
        "starts": "single",
        "start_x": "0.0",
        "start_y": "0.0",
    }
    metrics = run.data.metrics
    steps = int(metrics["steps"])
    assert abs(metrics["min_x"] - MINIMA[0][0]) < 1e-6
    assert abs(metrics["min_y"] - MINIMA[0][1]) < 1e-6
    assert metrics["min_f"] == pytest.approx(f(*MINIMA[0]), abs=1e-10)
    for key in ("f", "grad_norm"):
        history = client.get_metric_history(run.info.run_id, key)
        assert len(history) == steps
        assert sorted(m.step for m in history) == list(range(1, steps + 1))
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["gradient_descent_path.png"]
    _assert_png(tmp_path / "out" / "gradient_descent_path.png")


def test_main_diverged_run_fails_but_keeps_path_and_plot(
    mlflow_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.tracking import MlflowClient

    assert main(["--learning-rate", "5", "--output", str(tmp_path / "out")]) == 1
    assert "diverged" in capsys.readouterr().err
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("gradient-descent").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["stop_reason"] == "diverged"
    metrics = run.data.metrics
    assert "min_f" not in metrics  # there is no minimum to report
    assert all(math.isfinite(v) for v in metrics.values())
    assert len(client.get_metric_history(run.info.run_id, "f")) == int(metrics["steps"]) > 0
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["gradient_descent_path.png"]
    _assert_png(tmp_path / "out" / "gradient_descent_path.png")


def test_main_grid_reports_every_minimum(
    mlflow_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.tracking import MlflowClient

    argv = ["--starts", "grid", "--experiment", "gd-grid", "--output", str(tmp_path / "g")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3 distinct minima from 49 starts" in out
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("gd-grid").experiment_id])
    metrics = run.data.metrics
    assert metrics["n_minima"] == 3
    assert sum(metrics[f"minimum_{i}_share"] for i in range(3)) == pytest.approx(1.0)
    for i, (x, y) in enumerate(MINIMA):
        assert abs(metrics[f"minimum_{i}_x"] - x) < 1e-6
        assert abs(metrics[f"minimum_{i}_y"] - y) < 1e-6
    assert abs(metrics["min_x"] - MINIMA[0][0]) < 1e-6
    assert len(client.get_metric_history(run.info.run_id, "f")) == int(metrics["steps"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"gradient_descent_path.png", "minima.json"}
    _assert_png(tmp_path / "g" / "gradient_descent_path.png")


def test_main_under_mlflow_run_reuses_its_run_and_params(
    mlflow_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mlflow run` creates the run, logs the parameters as typed ("-1") and sets MLFLOW_RUN_ID."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    experiment_id = client.create_experiment("project")
    run_id = client.create_run(experiment_id).info.run_id
    client.log_param(run_id, "start_x", "-1")
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    argv = ["--start-x", "-1", "--start-y", "1", "--max-steps", "20", "--output", "out"]
    assert main(argv) == 0
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["start_x"] == "-1" and run.data.params["start_y"] == "1.0"
    assert run.data.tags["stop_reason"] == "max_steps"
    assert client.get_experiment_by_name("gradient-descent") is None
