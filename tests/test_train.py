"""End-to-end tracked training against a real MLflow store in a temporary folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml

from tracking.config import Config, field_names
from tracking.evaluation.class_names import read_class_names
from tracking.evaluation.evaluate import read_confusion_csv
from tracking.evaluation.outcomes import read_predictions
from tracking.train import main
from tracking.training.loop import train

TINY = dict(model="concat_cnn", dataset="digits", epochs=2, batch_size=32, limit=300,
            experiment="tiny")
REPO = Path(__file__).resolve().parents[1]


def runs_in_store() -> int:
    client = mlflow.MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(ids)) if ids else 0


@pytest.mark.jax_smoke
def test_train_logs_everything_and_model_reloads(mlflow_uri: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # the run lasts longer
    results = train(Config(**TINY))
    client = mlflow.MlflowClient()
    run = client.get_run(results["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "concat_cnn-digits"

    params = run.data.params
    for name in field_names():
        assert name in params
    for name in ("num_params", "keras_backend", "keras_version", "mlflow_version", "train_size",
                 "val_size", "test_size", "class_names", "optimizer"):
        assert name in params, name
    assert params["epochs"] == "2" and params["learning_rate"] == "auto"
    assert float(params["effective_learning_rate"]) > 0 and params["effective_epochs"] == "2"
    assert params["class_names"] == ",".join(str(i) for i in range(10))
    test_size = int(params["test_size"])

    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                "epoch_seconds", "train_images_per_second"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [1, 2], key
    metrics = run.data.metrics
    for key in ("test_accuracy", "test_loss", "test_precision_macro", "test_recall_macro",
                "test_f1_macro", "test_precision_weighted", "test_recall_weighted",
                "test_f1_weighted", "test_f1_class_0", "test_precision_class_9",
                "best_epoch", "epochs_run", "train_seconds"):
        assert key in metrics, key
    assert metrics["epochs_run"] == 2 and 1 <= metrics["best_epoch"] <= 2
    assert run.data.tags["mlflow.runName"] == "concat_cnn-digits"

    # the evaluation practitioners look at, each in its range
    for key in ("test_roc_auc_macro", "test_average_precision_macro", "test_top_2_accuracy",
                "test_top_5_accuracy", "test_ece", "test_roc_auc_class_0",
                "test_average_precision_class_9"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert 0.0 <= metrics["test_brier_score"] <= 2.0
    assert metrics["test_accuracy"] <= metrics["test_top_2_accuracy"] \
        <= metrics["test_top_5_accuracy"]
    # the machine: MLflow's system metrics, sampled every second here
    assert metrics["system/cpu_utilization_percentage"] >= 0.0
    assert metrics["system/system_memory_usage_megabytes"] > 0.0
    assert params["system_metrics"] == "true"
    for name in ("python_version", "cpu_model", "cpu_count", "keras_devices"):
        assert params[name], name
    assert run.data.tags["git_dirty"] in ("true", "false")
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    assert "git_commit" not in run.data.tags  # one commit tag: MLflow's own

    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    for name in ("confusion_matrix.png", "confusion_matrix.csv", "classification_report.txt",
                 "classification_report.json", "training_curves.png", "model_summary.txt",
                 "roc_pr_curves.png", "reliability_diagram.png", "misclassified_examples.png",
                 "predictions.json", "misclassified_images.npz", "class_names.json",
                 "packages.txt"):
        assert name in artifacts, name
    assert ("git_diff.patch" in artifacts) == (run.data.tags["git_dirty"] == "true")
    predictions = read_predictions(run.info.run_id)
    assert len(predictions) == test_size and list(predictions["index"]) == list(range(test_size))
    digest = {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs}
    assert set(predictions["test_digest"]) == {digest["digits-32px-test"]}
    assert (predictions["predicted_label"] == predictions["true_label"]).mean() \
        == pytest.approx(metrics["test_accuracy"])
    assert read_class_names(run.info.run_id) == tuple(str(i) for i in range(10))
    csv_path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                   artifact_path="confusion_matrix.csv")
    names, counts = read_confusion_csv(Path(csv_path).read_text())
    assert names == [str(i) for i in range(10)]
    assert counts.sum() == test_size
    assert np.trace(counts) / test_size == pytest.approx(metrics["test_accuracy"])

    inputs = {(i.dataset.name, i.tags[0].value) for i in run.inputs.dataset_inputs}
    assert ("digits-32px-training", "training") in inputs
    assert all(i.dataset.digest for i in run.inputs.dataset_inputs)

    # the logged model predicts the same classes through pyfunc as in process
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    x = results["evaluation"].probabilities
    from tracking.data.dataset import load_dataset

    data = load_dataset("digits", limit=300)
    predicted = np.asarray(pyfunc.predict(data.x_test.astype(np.float64))).argmax(axis=1)
    np.testing.assert_array_equal(predicted, x.argmax(axis=1))
    assert pyfunc.metadata.signature is not None

    exp = client.get_experiment_by_name("tiny")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.parametrize("argv, message", [
    (["--model", "alexnet"], "unknown model 'alexnet'; choose one of: vgg19"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'; choose one of: digits"),
    (["--epochs", "0"], "epochs must be a positive integer"),
    (["--epochs", "three"], "epochs must be an integer or 'auto'"),
    (["--batch-size", "-4"], "batch_size must be a positive integer"),
    (["--image-size", "0"], "image_size must be an integer from 8 to 1024"),
    (["--image-size", "100000"], "image_size must be an integer from 8 to 1024"),
    (["--learning-rate", "fast"], "learning rate must be a number or 'auto'"),
    (["--learning-rate", "-0.1"], "learning_rate must be a positive number"),
    (["--learning-rate", "nan"], "learning_rate must be a positive number"),
    (["--val-split", "1.5"], "val_split must lie strictly between 0 and 1"),
    (["--test-split", "0"], "test_split must lie strictly between 0 and 1"),
    (["--dataset", "folder"], "needs data_dir"),
    (["--dataset", "folder", "--data-dir", "/no/such/folder"], "does not exist"),
    (["--seed", "99999999999"], "seed must be an integer from 0 to 2147483647"),
    (["--experiment", "e" * 501], "experiment name must have 1 to 500 characters, got 501"),
    (["--experiment", "gone"], "experiment 'gone' is deleted; restore it"),
    (["--full-test"], "give --limit N too"),
    (["--limit", "0", "--full-test"], "give --limit N too"),
    (["--resume", ""], "--resume needs a run id, got an empty value"),
])
def test_bad_input_exits_2_before_any_run(mlflow_uri: str, capsys, argv, message) -> None:
    client = mlflow.MlflowClient()
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.strip().splitlines()[-1].startswith("python -m tracking.train: error:")
    assert runs_in_store() == 0


def test_mlproject_parameters_mirror_the_config() -> None:
    spec = yaml.safe_load((REPO / "MLproject").read_text())
    params = spec["entry_points"]["main"]["parameters"]
    defaults = Config()
    for name, p in params.items():
        expected = getattr(defaults, name)
        if p["type"] == "path":  # MLflow resolves it against the caller's folder: "." there
            assert (p["default"], expected) == (".", ""), name
            continue
        shown = "auto" if expected is None else expected
        assert p["default"] == shown, name
        assert "{" + name + "}" in spec["entry_points"]["main"]["command"], name
    flags = {"model", "dataset", "data_dir", "epochs", "batch_size", "learning_rate",
             "image_size", "patience", "seed"}
    assert flags <= set(params)


def test_mlflow_run_local_smoke(mlflow_uri: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(REPO), "--env-manager", "local",
         "--experiment-name", "smoke", "-P", "model=concat_cnn", "-P", "epochs=2"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    runs = mlflow.search_runs(experiment_names=["smoke"])
    assert len(runs) == 1 and runs.loc[0, "status"] == "FINISHED"
    assert runs.loc[0, "params.model"] == "concat_cnn"
    assert 0.0 <= runs.loc[0, "metrics.test_accuracy"] <= 1.0
    assert runs.loc[0, "metrics.epochs_run"] == 2
    assert runs.loc[0, "params.experiment"] == "smoke"
    exp = mlflow.MlflowClient().get_experiment_by_name("smoke")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"

    # bad input: MLflow's run (made before the command) ends FAILED with the reason on it
    out = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(REPO), "--env-manager", "local",
         "--experiment-name", "smoke", "-P", "model=concat_cnn", "-P", "epochs=-1"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 1
    assert "epochs must be a positive integer" in out.stderr
    failed = mlflow.search_runs(experiment_names=["smoke"], filter_string="status = 'FAILED'",
                                output_format="list")
    assert len(failed) == 1
    assert failed[0].data.tags["stop_reason"].startswith("bad input: epochs must be a positive")


def write_folder_dataset(root: Path, classes: tuple[str, ...] = ("cat", "dog"),
                         per_class: int = 15) -> None:
    """Class folders of small random PNGs, each class a different brightness."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 100, (20, 20, 3)) + 120 * label
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")


@pytest.mark.slow  # quoting edge cases of mlflow run; the plain path is the smoke test
def test_mlflow_run_takes_odd_parameter_values(mlflow_uri: str, tmp_path: Path) -> None:
    """Quotes, spaces, `=`, non-ASCII and a relative path in -P values, and an empty value
    for `auto`: taken as the shell passed them; the relative path against the caller's folder.
    A folder that does not exist is refused by MLflow before our command runs."""
    caller = tmp_path / "caller"
    write_folder_dataset(caller / "bob's dätä=1")
    command = [sys.executable, "-m", "mlflow", "run", str(REPO), "--env-manager", "local",
               "--experiment-name", "odd", "-P", "model=concat_cnn", "-P", "dataset=folder",
               "-P", "epochs=1", "-P", "learning_rate="]
    out = subprocess.run([*command, "-P", "data_dir=bob's dätä=1"], capture_output=True,
                         text=True, timeout=600, cwd=caller)
    assert out.returncode == 0, out.stderr[-3000:]
    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("odd").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    params = runs[0].data.params
    assert params["effective_data_dir"] == str((caller / "bob's dätä=1").resolve())
    assert params["effective_learning_rate"] == "0.002"  # empty = auto = the recipe's
    assert params["class_names"] == "cat,dog"

    missing = subprocess.run([*command, "-P", "data_dir=no such folder"], capture_output=True,
                             text=True, timeout=300, cwd=caller)
    assert missing.returncode != 0
    assert "no such folder for parameter data_dir, but no such file or directory" in \
        missing.stderr


def test_precision_is_chosen_per_model_and_device_logged_and_used(
    mlflow_uri: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from dataclasses import replace

    import keras

    from models import MODELS, options
    from tracking.precision import device_kind, resolve_precision

    with pytest.raises(SystemExit) as exit_info:
        main(["--precision", "fp8"])
    assert exit_info.value.code == 2
    assert "precision must be one of auto, float32, mixed_bfloat16" in capsys.readouterr().err

    assert resolve_precision("concat_cnn", "auto") == "float32"  # nothing measured faster
    spec = MODELS["concat_cnn"]
    monkeypatch.setitem(MODELS, "concat_cnn", replace(
        spec, accuracy_held=options(mixed_bfloat16="a test's word for it"),
        faster_precision=options(**{device_kind(): "mixed_bfloat16"})))
    assert resolve_precision("concat_cnn", "auto") == "mixed_bfloat16"
    assert resolve_precision("concat_cnn", "float32") == "float32"

    results = train(Config(**{**TINY, "epochs": 1}))
    params = mlflow.MlflowClient().get_run(results["run_id"]).data.params
    assert (params["precision"], params["effective_precision"]) == ("auto", "mixed_bfloat16")
    assert params["device_kind"] == device_kind()
    assert "registry" in params["precision_reason"]  # why auto chose it, on the run
    assert 0.0 <= results["test_accuracy"] <= 1.0
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    model = mlflow.pyfunc.load_model(f"runs:/{results['run_id']}/model").unwrap_python_model()
    layer = model.model.get_layer("concat_cnn").get_layer("block1_pair3_conv1")
    assert layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32"


def test_a_batch_larger_than_the_training_split_is_logged_as_trained(mlflow_uri: str,
                                                                      capsys) -> None:
    results = train(Config(**{**TINY, "epochs": 1, "batch_size": 4096}))
    params = mlflow.MlflowClient().get_run(results["run_id"]).data.params
    n = int(params["train_size"])
    assert params["batch_size"] == "4096"  # as asked
    assert params["effective_batch_size"] == str(n)  # as fit trained it: one batch of n
    assert params["steps_per_epoch"] == "1"
    assert f"batch size 4096 cut to {n}: the training split has only {n} images" in \
        capsys.readouterr().err


def test_a_run_whose_output_is_no_terminal_says_its_progress_within_an_epoch(
        mlflow_uri: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("KERAS_MLFLOW_SUITE_PROGRESS_SECONDS", "0")  # every step, for the test
    train(Config(**TINY))  # 2 epochs; pytest's captured stdout is not a terminal
    out = capsys.readouterr().out
    steps = [line for line in out.splitlines() if line.startswith("epoch 1/2: step ")]
    assert steps and "s/step, epoch ends in" in steps[0]
    assert "epoch 1/2 took" in out and "at most 1 more, about" in out
    assert "epoch 2/2 took" not in out  # nothing left to estimate after the last epoch


def test_an_epochs_metrics_reach_the_store_only_after_its_checkpoint(mlflow_uri: str) -> None:
    """Watched from inside training: whenever the store shows epoch k's metrics, a complete
    checkpoint of epoch k or later is in the artifacts (the upload runs in the background)."""
    import keras

    from tracking.training.checkpoints import complete_checkpoints

    seen: list[tuple[int, int]] = []

    class Probe(keras.callbacks.Callback):
        def check(self) -> None:
            run_id = mlflow.active_run().info.run_id
            steps = {m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "loss")}
            folders = complete_checkpoints(run_id)
            newest = int(folders[-1].rsplit("-", 1)[1]) if folders else 0
            seen.append((max(steps, default=0), newest))
            assert max(steps, default=0) <= newest, (steps, folders)

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if batch % 3 == 0:
                self.check()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.check()

    results = train(Config(**{**TINY, "epochs": 3}), callbacks=[Probe()])
    assert any(logged > 0 for logged, _ in seen)  # metrics did arrive during training
    history = mlflow.MlflowClient().get_metric_history(results["run_id"], "loss")
    assert sorted(m.step for m in history) == [1, 2, 3]  # each epoch once, none lost
