"""An artifact location that cannot be written, for real: a read-only mount and a full one
(tmpfs of 1 MiB), mounted by the test where it runs as root; skipped with the reason elsewhere.
Nothing trained is lost: the weights go to this machine's disk, and upload finishes the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from test_reliability import TINY, child_env, start_training, wait_for_epochs

from tracking.train import main


def mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}): the "
                    "disk-fault tests need root and CAP_SYS_ADMIN")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: the run's first files fit, its first checkpoint does not."""
    if os.geteuid() != 0:
        pytest.skip("the disk-fault tests mount a tmpfs: they need root")
    where = tmp_path / "small"
    mount_tmpfs(where, "size=1m")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def experiment_on(location: Path, name: str) -> str:
    return mlflow.MlflowClient().create_experiment(name, artifact_location=str(location))


def test_a_read_only_artifact_location_is_refused_before_any_run(
        mlflow_uri: str, small_disk: Path, capsys) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    experiment = experiment_on(small_disk / "artifacts", "read-only")
    with pytest.raises(SystemExit) as stop:
        main(["--model", "concat_cnn", "--limit", "200", "--epochs", "1",
              "--experiment", "read-only"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert stop.value.code == 2 and len(errors) == 1, err  # (beside MLflow's own INFO lines)
    assert f"cannot write to the artifact location {small_disk / 'artifacts'}" in err
    assert "Read-only file system" in err
    assert not mlflow.MlflowClient().search_runs([experiment])  # no run was started


def test_a_full_disk_stops_training_keeps_the_weights_and_upload_finishes(
        mlflow_uri: str, small_disk: Path, tmp_path: Path, capsys) -> None:
    experiment = experiment_on(small_disk, "full-disk")
    code = main(["--model", "concat_cnn", "--limit", "300", "--batch-size", "32",
                 "--epochs", "6", "--experiment", "full-disk"])
    err = capsys.readouterr().err
    assert code == 1
    first = [line for line in err.splitlines() if line.startswith("error: the checkpoint")]
    assert first and "No space left on device" in first[0]  # said at once, in one line
    assert "error: run stopped: epoch 1's checkpoint refused" in err  # and why it stopped
    assert str(small_disk) in first[0]
    client = mlflow.MlflowClient()
    (run,) = client.search_runs([experiment])
    assert run.info.status == "FAILED"
    reason = run.data.tags["stop_reason"]
    assert "No space left on device" in reason and "tracking.runs upload" in reason
    assert int(run.data.tags["stop_epoch"]) < 6  # stopped early, at an epoch's end
    folder = tmp_path / "mlflow-offline" / run.info.run_id  # the test's cwd is tmp_path
    assert (folder / "model.keras").exists()  # the trained weights are on the local disk

    subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
    from tracking import runs

    assert runs.main(["upload", str(folder)]) == 0
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
    models = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list",
                                         filter_string=f"source_run_id = '{run.info.run_id}'")
    assert [m.name for m in models] == ["model"]


@pytest.mark.slow
def test_a_stop_before_the_first_checkpoint_offers_no_resume(mlflow_uri: str,
                                                            tmp_path: Path) -> None:
    """--checkpoint-every 3 and SIGTERM after epoch 1: the message says there is nothing to
    continue from, and --resume says so in one line instead of a traceback."""
    proc = start_training(mlflow_uri, tmp_path, "--checkpoint-every", "3")
    run_id = wait_for_epochs(proc, 1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out[-2000:]
    assert "stopped before its first checkpoint (every 3 epochs)" in out
    assert "--resume" not in out.splitlines()[-1]
    again = subprocess.run([sys.executable, "-m", "tracking.train", "--resume", run_id],
                           cwd=tmp_path, env=child_env(mlflow_uri), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "has no complete checkpoint" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert TINY  # the same tiny setting as the other fault tests
