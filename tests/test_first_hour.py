"""What a new user meets after the Quick start: the commands find the Quick start's run, help
texts are quiet and short, the same seed gives the same numbers."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tracking import compare, server
from tracking.config import Config
from tracking.train import main as train_main
from tracking.training.loop import train

REPO = Path(__file__).resolve().parents[1]
TINY = dict(model="concat_cnn", dataset="digits", epochs=1, batch_size=32, limit=200,
            checkpoint_every=0)


def test_the_quick_start_run_is_found_by_compare_and_the_ui_link(
    mlflow_uri: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mlflow run .` without --experiment-name logs to MLflow's Default experiment: the report
    and the UI address follow the training runs there, and the link takes the UI's port."""
    run_id = train(Config(**TINY, experiment="Default"))["run_id"]
    assert mlflow.get_run(run_id).info.experiment_id == "0"
    capsys.readouterr()

    assert compare.main(["--output", str(tmp_path / "report")]) == 0
    out, err = capsys.readouterr()
    assert run_id in out and "# Model comparison: Default\n" in out  # its one experiment
    assert "runs table of 'Default': http://127.0.0.1:5000/#/experiments/0/runs?" in err

    assert server.main(["ui", "--ui-url", "http://127.0.0.1:8080"]) == 0
    address = capsys.readouterr().out.strip()
    assert address.startswith("http://127.0.0.1:8080/#/experiments/0/runs?")
    assert "workflowType=machine_learning" in address
    monkeypatch.setenv("SUITE_UI_URL", "http://127.0.0.1:5055")
    assert server.main(["ui"]) == 0
    assert capsys.readouterr().out.startswith("http://127.0.0.1:5055/#/experiments/0/")


def test_ui_without_training_runs_says_so(mlflow_uri: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        server.main(["ui"])
    assert exit_info.value.code == 2
    assert "no training runs in sqlite:///" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["tracking.train", "tuning.optuna_resnet", "tracking.compare"])
def test_help_is_quiet_and_for_users(module: str) -> None:
    """No TensorFlow start-up lines (they printed twice before), no internals in --help."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                         text=True, env=env, cwd=REPO, timeout=120)
    assert out.returncode == 0
    assert out.stderr == ""
    assert out.stdout.startswith(f"usage: python -m {module}")
    assert len(out.stdout.splitlines()) < 80
    for internal in ("advisory", "OutageGuard", "RDBStorage", "heartbeat"):
        assert internal not in out.stdout


@pytest.mark.parametrize("module, argv", [
    ("tracking.train", ["--model", "vgg16"]),  # a misspelt -P model=... under mlflow run
    ("tracking.train", ["--epochs", "-3"]),
    ("tracking.study", ["--seeds", "0"]),
    ("tracking.compare", ["--experiment", "no-such-experiment"]),
    ("tracking.predict", ["--run-id", "nosuchrun", "missing.png"]),
    ("tracking.promote", ["--run-id", "nosuchrun"]),
    ("tracking.runs", ["stale", "--older-than", "-1"]),
    ("tracking.server", ["--bogus"]),
    ("tuning", ["--model", "vgg16"]),
    ("tuning.optuna_resnet", ["--n-trials", "0"]),
    ("gradient_descent", ["--learning-rate", "-1"]),
])
def test_bad_input_is_one_line_and_exit_2_for_every_command(
        module: str, argv: list[str], mlflow_uri: str, capsys) -> None:
    """argparse's usage block is never printed before the error (it was 16 lines for train):
    stderr holds `python -m MODULE: error: ... (see --help)` alone."""
    import mlflow

    mlflow.MlflowClient().search_experiments()  # the store exists, as under mlflow run
    capsys.readouterr()
    package = module in ("tuning", "gradient_descent")
    main = importlib.import_module(f"{module}.__main__" if package else module).main
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"python -m {module}: error: "), err
    assert err[0].endswith("(see --help)")


def test_deterministic_is_a_logged_setting(mlflow_uri: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--deterministic", "maybe"])
    assert exit_info.value.code == 2
    assert "deterministic must be true or false" in capsys.readouterr().err
    run_id = train(Config(**TINY, experiment="det"))["run_id"]
    assert mlflow.get_run(run_id).data.params["deterministic"] == "false"


@pytest.mark.slow
def test_the_same_seed_gives_the_same_numbers_on_this_machine(mlflow_uri: str) -> None:
    """Two runs of one command, each in its own process with deterministic kernels."""
    histories = []
    for name in ("first", "second"):
        out = subprocess.run(
            [sys.executable, "-m", "tracking.train", "--model", "concat_cnn", "--limit", "300",
             "--epochs", "2", "--batch-size", "32", "--deterministic", "--experiment", "det",
             "--run-name", name], capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
    client = mlflow.MlflowClient()
    for run in client.search_runs([client.get_experiment_by_name("det").experiment_id]):
        assert run.data.params["deterministic"] == "true"
        histories.append([(m.step, m.value) for m in sorted(
            client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)])
    assert len(histories) == 2 and histories[0] == histories[1]
