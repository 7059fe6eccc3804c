"""Faults produced for real: signals, SIGKILL, NaN loss, a tracking server that is down or
goes away, many processes on a fresh store, unsafe model files. Nothing logged is lost."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest

from tracking.train import main

TINY = ["--model", "concat_cnn", "--limit", "600", "--batch-size", "32", "--epochs", "6",
        "--patience", "6", "--experiment", "faults"]


def child_env(uri: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "TF_CPP_MIN_LOG_LEVEL": "3",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def start_training(uri: str, cwd: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tracking.train", *TINY, *extra], cwd=cwd,
                            env=child_env(uri), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_epochs(proc: subprocess.Popen, epochs: int, timeout: float = 240) -> str:
    """Poll the store until the child's run has `epochs` epochs logged; return its id."""
    client = mlflow.MlflowClient()
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        exp = client.get_experiment_by_name("faults")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs and len(client.get_metric_history(runs[0].info.run_id, "loss")) >= epochs:
            return runs[0].info.run_id
        time.sleep(0.3)
    raise AssertionError("training did not reach the wanted epoch in time")


def assert_resumed_cleanly(run_id: str, resumed_from: int) -> None:
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_from_epoch"] == str(resumed_from)
    runs_epochs = int(run.data.metrics["epochs_run"])
    for key in ("loss", "val_accuracy", "learning_rate"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == list(range(1, runs_epochs + 1)), (key, steps)  # no gap, no dup
    # optimizer state came back: the cosine schedule keeps falling across the resume
    lrs = [m.value for m in sorted(client.get_metric_history(run_id, "learning_rate"),
                                   key=lambda m: m.step)]
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False)), lrs
    assert "checkpoints" not in {f.path for f in client.list_artifacts(run_id)}
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run_id}'",
                                         output_format="list")
    assert [m.name for m in models] == ["model"]
    assert "test_accuracy" in run.data.metrics


def checkpoint_files(run_id: str) -> set[str]:
    client = mlflow.MlflowClient()
    files = set()
    for entry in client.list_artifacts(run_id, "checkpoints"):
        if entry.is_dir:
            files |= {f.path for f in client.list_artifacts(run_id, entry.path)}
        else:
            files.add(entry.path)
    return files


def test_sigterm_marks_killed_and_resume_continues(mlflow_uri: str, tmp_path: Path) -> None:
    proc = start_training(mlflow_uri, tmp_path)
    run_id = wait_for_epochs(proc, 2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert f"--resume {run_id}" in out
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.status == "KILLED"
    assert "SIGTERM" in run.data.tags["stop_reason"]
    files = checkpoint_files(run_id)
    assert any(f.endswith("/weights.npz") for f in files)
    assert any(f.endswith("/state.json") for f in files)
    assert any(f.startswith("checkpoints/best-epoch-") for f in files)
    done = len(mlflow.MlflowClient().get_metric_history(run_id, "loss"))

    assert main(["--resume", run_id]) == 0
    assert_resumed_cleanly(run_id, done)


@pytest.mark.slow
def test_sigkill_found_stale_marked_and_resumed(mlflow_uri: str, tmp_path: Path) -> None:
    from tracking.runs import main as runs_main

    proc = start_training(mlflow_uri, tmp_path)
    run_id = wait_for_epochs(proc, 2)
    proc.kill()
    proc.wait(timeout=60)
    client = mlflow.MlflowClient()
    assert client.get_run(run_id).info.status == "RUNNING"  # what MLflow alone leaves
    assert runs_main(["stale", "--mark"]) == 0
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and "process died" in run.data.tags["stop_reason"]
    assert main(["--resume", run_id]) == 0
    state_epochs = int(client.get_run(run_id).data.tags["resumed_from_epoch"])
    # epoch 2's metrics were in the store; its checkpoint may still have been on its way
    # (uploaded in the background), and then the resume starts after epoch 1 without logging
    # epoch 2 twice
    assert state_epochs >= 1
    assert_resumed_cleanly(run_id, state_epochs)


def test_resume_rejects_unknown_or_finished_runs(mlflow_uri: str, capsys) -> None:
    with pytest.raises(SystemExit) as err:
        main(["--resume", "0123456789abcdef0123456789abcdef"])
    assert err.value.code == 2
    assert "cannot resume: no run" in capsys.readouterr().err


def test_resume_refuses_a_live_run_a_run_without_checkpoint_and_other_runs(
        mlflow_uri: str, capsys) -> None:
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        exp = mlflow.MlflowClient().create_experiment("faults")  # set_experiment sets env
        run = mlflow.MlflowClient().create_run(exp, tags={"host": socket.gethostname(),
                                                          "pid": str(sleeper.pid)})
        mlflow.MlflowClient().log_param(run.info.run_id, "model", "concat_cnn")
        with pytest.raises(SystemExit) as err:  # its process still trains: two writers
            main(["--resume", run.info.run_id])
        assert err.value.code == 2
        assert f"still running (process {sleeper.pid} on " in capsys.readouterr().err
    finally:
        sleeper.kill()
        sleeper.wait()
    with pytest.raises(SystemExit) as err:  # gone, but it never saved a checkpoint
        main(["--resume", run.info.run_id])
    assert err.value.code == 2 and "has no complete checkpoint" in capsys.readouterr().err
    other = mlflow.MlflowClient().create_run(exp, tags={"run_kind": "comparison"})
    mlflow.MlflowClient().log_param(other.info.run_id, "model", "concat_cnn")
    mlflow.MlflowClient().set_terminated(other.info.run_id, "FAILED")
    with pytest.raises(SystemExit) as err:
        main(["--resume", other.info.run_id])
    assert err.value.code == 2 and "not a training run (comparison)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:  # a resume takes the run's settings, no others
        main(["--resume", run.info.run_id, "--model", "vgg19", "--epochs", "2"])
    assert err.value.code == 2
    assert "with its own settings: drop --model, --epochs" in capsys.readouterr().err
    assert mlflow.MlflowClient().get_run(run.info.run_id).info.status == "RUNNING"


def test_nan_loss_fails_the_run_with_reason(mlflow_uri: str) -> None:
    code = main(["--model", "concat_cnn", "--limit", "200", "--epochs", "3",
                 "--learning-rate", "1e9", "--experiment", "faults"])
    assert code == 1
    run = mlflow.search_runs(experiment_names=["faults"], output_format="list")[0]
    assert run.info.status == "FAILED"
    assert "loss became nan" in run.data.tags["stop_reason"]
    assert run.data.tags["stop_epoch"] == "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_fails_fast_naming_uri(monkeypatch, tmp_path: Path, capsys) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    start = time.time()
    with pytest.raises(SystemExit) as err:
        main(["--model", "concat_cnn", "--limit", "100"])
    assert err.value.code == 2
    assert time.time() - start < 10
    assert uri in capsys.readouterr().err


def test_stores_that_cannot_be_used_exit_2_before_any_run(monkeypatch, tmp_path: Path,
                                                          capsys) -> None:
    """A URI MLflow would take for a folder, an unknown scheme, a SQLite file under a file and a
    web server that is not MLflow: one line naming the URI, exit 2, before data or model."""
    from http.server import HTTPServer, SimpleHTTPRequestHandler

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    web = HTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        for uri, says in (("garbage", "tracking store garbage cannot be used"),
                          ("foo://bar", "tracking store foo://bar cannot be used"),
                          (f"sqlite:///{tmp_path}/a-file/mlflow.db", "cannot be used"),
                          (f"http://127.0.0.1:{web.server_port}",
                           "answers, but not as an MLflow tracking server (HTTP 404")):
            monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
            with pytest.raises(SystemExit) as err:
                main(["--model", "concat_cnn", "--limit", "100"])
            assert err.value.code == 2, uri
            assert says in capsys.readouterr().err.strip().splitlines()[-1], uri
    finally:
        web.shutdown()
    assert not (tmp_path / "garbage").exists() or not any((tmp_path / "garbage").iterdir())


def start_server(store: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
         "--artifacts-destination", str(store / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError("mlflow server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_server_lost_mid_training_keeps_everything(tmp_path: Path, monkeypatch) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    try:
        proc = start_training(uri, tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        run_id = wait_for_epochs(proc, 1)
    finally:
        stop_server(server)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 75, out
    assert "tracking server" in out and "unreachable" in out
    folder = tmp_path / "mlflow-offline" / run_id
    assert (folder / "model.keras").is_file() and (folder / "state.json").is_file()

    server = start_server(tmp_path, port)
    try:
        up = subprocess.run([sys.executable, "-m", "tracking.runs", "upload", str(folder)],
                            cwd=tmp_path, env=child_env(uri), capture_output=True, text=True,
                            timeout=300)
        assert up.returncode == 0, up.stderr[-2000:]
        client = mlflow.MlflowClient(uri)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        epochs = int(run.data.metrics["epochs_run"])
        steps = sorted(m.step for m in client.get_metric_history(run_id, "val_loss"))
        assert steps == list(range(1, epochs + 1))
        assert "test_accuracy" in run.data.metrics
        assert not [a for a in client.list_artifacts(run_id) if a.path == "checkpoints"]
        again = subprocess.run([sys.executable, "-m", "tracking.runs", "upload", str(folder)],
                               cwd=tmp_path, env=child_env(uri), capture_output=True,
                               text=True, timeout=300)
        assert again.returncode == 2 and "uploaded already" in again.stderr
        assert len(client.get_metric_history(run_id, "test_accuracy")) == 1
    finally:
        stop_server(server)


@pytest.mark.slow
def test_four_processes_on_a_fresh_store(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    args = ["--model", "concat_cnn", "--limit", "100", "--epochs", "1", "--experiment", "crowd"]
    procs = [subprocess.Popen([sys.executable, "-m", "tracking.train", *args], cwd=tmp_path,
                              env=child_env(uri), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(o[-1500:] for o in outs)
    runs = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("crowd").experiment_id])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}


def test_logged_model_loads_in_safe_mode(mlflow_uri: str) -> None:
    import keras

    from models import MODELS, build_model

    for name in MODELS:  # no Lambda layers anywhere: every model reloads in safe mode
        model = build_model(name, (32, 32, 3), 3, **MODELS[name].recipe.model_options)
        assert not any(isinstance(layer, keras.layers.Lambda)
                       for layer in model._flatten_layers())
    assert main(["--model", "concat_cnn", "--limit", "150", "--epochs", "1",
                 "--experiment", "safe"]) == 0
    run = mlflow.search_runs(experiment_names=["safe"], output_format="list")[0]
    local = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model")
    files = list(Path(local).rglob("*.keras"))
    assert files
    reloaded = keras.saving.load_model(files[0], safe_mode=True)
    assert reloaded.name == "concat_cnn"


def test_resume_uses_the_values_the_run_used_not_todays_recipe(
    mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recipe edited between the interruption and the resume changes nothing: the resumed
    config is the run's own, from its effective_* params and its logged recipe."""
    from dataclasses import replace

    from models import MODELS, options
    from tracking.config import Config
    from tracking.training.loop import train
    from tracking.training.resume import config_from_params

    spec = MODELS["concat_cnn"]
    ran = replace(spec.recipe, epochs=2, batch_size=32, shift=0.05)
    results = train(Config(model="concat_cnn", limit=200, experiment="faults", recipe=ran))
    params = mlflow.MlflowClient().get_run(results["run_id"]).data.params
    assert params["epochs"] == "auto" and params["effective_epochs"] == "2"

    edited = replace(spec.recipe, epochs=9, batch_size=64, learning_rate=0.5,
                     weight_decay=0.3, shift=0.0, model_options=options(dropout=0.7))
    monkeypatch.setitem(MODELS, "concat_cnn", replace(spec, recipe=edited))
    resumed = config_from_params(params)
    assert (resumed.epochs, resumed.batch_size, resumed.learning_rate) == (2, 32, 2e-3)
    assert resumed.augment is True and resumed.shift == 0.05
    assert resumed.recipe.weight_decay == spec.recipe.weight_decay
    assert dict(resumed.recipe.model_options) == dict(spec.recipe.model_options)
    assert resumed.recipe.optimizer == "adamw"


@pytest.mark.jax_smoke
def test_a_resumed_run_is_the_run_it_continues(mlflow_uri: str) -> None:
    """Interrupted after epoch 2 and resumed, a run logs the losses of the same command run
    straight through: same batches, dropout masks, random shifts, optimizer step and schedule."""
    import keras

    from tracking.config import Config
    from tracking.training.loop import train
    from tracking.training.resume import resume_config

    class InterruptAfter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == 1:
                raise KeyboardInterrupt("interrupted for the test")

    config = Config(model="concat_cnn", limit=120, epochs=4, patience=10, augment=True,
                    batch_size=32, experiment="faults")
    straight = train(config)["history"]["loss"]
    keras.backend.clear_session()
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[InterruptAfter()])
    run_id = mlflow.last_active_run().info.run_id
    assert mlflow.get_run(run_id).info.status == "KILLED"
    keras.backend.clear_session()
    resumed = train(resume_config(run_id), resume_run_id=run_id)["history"]["loss"]
    assert len(resumed) == len(straight) == 4
    assert resumed == pytest.approx(straight, rel=1e-6)


def test_an_epoch_logged_before_its_checkpoint_arrived_is_logged_once(mlflow_uri: str) -> None:
    """Killed after epoch 2's metrics reached the store but before its checkpoint did (the
    checkpoint travels in the background, so `kill -9` can fall between them): the resume
    restarts after epoch 1 and does not log epoch 2 a second time."""
    import keras
    from mlflow.entities import Metric

    from tracking.config import Config
    from tracking.training.loop import train
    from tracking.training.resume import resume_config

    class InterruptAfter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == 0:
                raise KeyboardInterrupt("interrupted for the test")

    config = Config(model="concat_cnn", limit=120, epochs=4, patience=10, batch_size=32,
                    experiment="faults")
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[InterruptAfter()])  # checkpoint and metrics of epoch 1
    run_id = mlflow.last_active_run().info.run_id
    mlflow.flush_async_logging()
    client = mlflow.MlflowClient()
    keys = list(client.get_run(run_id).data.metrics)  # the per-epoch keys of epoch 1
    # what the killed process had sent of epoch 2 before its checkpoint upload was cut off
    client.log_batch(run_id, metrics=[Metric(k, 0.5, int(time.time() * 1000), 2)
                                      for k in keys])
    keras.backend.clear_session()
    train(resume_config(run_id), resume_run_id=run_id)
    assert mlflow.get_run(run_id).data.tags["resumed_from_epoch"] == "1"
    for key in ("loss", "val_accuracy", "learning_rate"):
        history = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == [1, 2, 3, 4], key
        assert [m.value for m in history if m.step == 2] == [0.5]  # the first, kept


def test_stopped_while_logging_the_model_then_resumed_logs_each_result_once(
        mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C after the test metrics were logged, while the model was being logged (MLflow
    had created it PENDING): the resume logs the test metrics once, the model once, and marks
    the interrupted model FAILED."""
    import keras

    import tracking.training.finish
    from tracking.config import Config
    from tracking.training.loop import train
    from tracking.training.resume import resume_config

    def stopped_while_logging(model, sample, **kwargs):
        run_id = mlflow.active_run().info.run_id
        mlflow.initialize_logged_model(name="model", source_run_id=run_id)  # PENDING
        raise KeyboardInterrupt("interrupted for the test")

    config = Config(model="concat_cnn", limit=120, epochs=2, patience=10, batch_size=32,
                    experiment="faults")
    with monkeypatch.context() as patch:
        patch.setattr(tracking.training.finish, "log_classifier", stopped_while_logging)
        with pytest.raises(KeyboardInterrupt):
            train(config)
    run_id = mlflow.last_active_run().info.run_id
    client = mlflow.MlflowClient()
    assert client.get_run(run_id).info.status == "KILLED"
    assert len(client.get_metric_history(run_id, "test_accuracy")) == 1
    keras.backend.clear_session()
    train(resume_config(run_id), resume_run_id=run_id)
    for key in ("test_accuracy", "best_epoch", "train_seconds"):
        assert len(client.get_metric_history(run_id, key)) == 1, key
    experiment_id = client.get_run(run_id).info.experiment_id
    states = sorted(m.status.value for m in client.search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{run_id}'"))
    assert states == ["FAILED", "READY"]


def test_a_checkpoint_of_the_earlier_format_still_resumes(mlflow_uri: str, tmp_path: Path
                                                          ) -> None:
    """Runs checkpointed before weights.npz hold a whole model.keras: they resume too."""
    import json

    import keras

    from tracking.config import Config
    from tracking.training.loop import train
    from tracking.training.resume import resume_config

    class InterruptAfterFirst(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.model.save(tmp_path / "model.keras")  # what the earlier checkpoints held
            raise KeyboardInterrupt("interrupted for the test")

    config = Config(model="concat_cnn", limit=120, epochs=2, batch_size=32, experiment="faults")
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[InterruptAfterFirst()])
    run_id = mlflow.last_active_run().info.run_id
    client = mlflow.MlflowClient()
    state = json.loads(Path(client.download_artifacts(
        run_id, "checkpoints/epoch-0001/state.json", str(tmp_path))).read_text())
    from tracking.training.checkpoints import _artifact_repo

    _artifact_repo(run_id).delete_artifacts("checkpoints")
    state.pop("seeds")  # the earlier format kept no random generator states
    state["best_file"] = None
    (tmp_path / "state.json").write_text(json.dumps(state))
    for name in ("model.keras", "state.json"):
        client.log_artifact(run_id, str(tmp_path / name), "checkpoints/epoch-0001")
    keras.backend.clear_session()
    results = train(resume_config(run_id), resume_run_id=run_id)
    assert results["epochs_run"] == 2
    assert client.get_run(run_id).data.tags["resumed_from_epoch"] == "1"
