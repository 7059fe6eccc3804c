"""What earlier versions of the suite wrote still loads and resumes.

`tests/fixtures/earlier_run/` was written by the suite at commit 85580eb (before `tracking/`
was arranged in wings): an interrupted concat_cnn run (its params, tags, metrics and its
checkpoint after epoch 1, at a tiny size: 16 px, blocks (4, 8)) and a finished run's logged
model (`logged_model.tar`, the MLflow model folder) with the probabilities it gave for three
images. A store of that version holds exactly these records; they are replayed into a fresh
store here and used through today's code.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunTag

FIXTURE = Path(__file__).parent / "fixtures" / "earlier_run"


def replay_interrupted_run(experiment: str) -> str:
    """The fixture's interrupted run, as its store held it: params, tags, metrics, status
    KILLED, and its checkpoints as artifacts. Returns its (new) run id."""
    folder = FIXTURE / "interrupted_run"
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment(experiment)
    tags = json.loads((folder / "tags.json").read_text())
    run = client.create_run(experiment_id, run_name=tags["mlflow.runName"])
    params = json.loads((folder / "params.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    client.log_batch(
        run.info.run_id,
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()
              if k not in ("resume_command", "mlflow.runName")],
        metrics=[Metric(k, v, 0, step) for k, points in metrics.items() for step, v in points])
    client.log_artifacts(run.info.run_id, str(folder / "checkpoints"), "checkpoints")
    client.set_terminated(run.info.run_id, "KILLED")
    return run.info.run_id


def test_a_run_interrupted_by_the_earlier_version_resumes(mlflow_uri: str) -> None:
    from tracking.training.loop import train
    from tracking.training.resume import resume_config

    run_id = replay_interrupted_run("earlier")
    config = resume_config(run_id)
    assert (config.model, config.image_size, config.epochs, config.seed) == ("concat_cnn", 16, 2, 3)
    assert dict(config.recipe.model_options)["blocks"] == (4, 8)  # the recipe as logged
    results = train(config, resume_run_id=run_id)
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert results["epochs_run"] == 2 and run.data.tags["resumed_from_epoch"] == "1"
    losses = mlflow.MlflowClient().get_metric_history(run_id, "loss")
    assert sorted(m.step for m in losses) == [1, 2]  # epoch 1 kept, epoch 2 added, once each
    assert "test_accuracy" in run.data.metrics


def test_a_model_logged_by_the_earlier_version_loads_and_predicts_the_same(
        tmp_path: Path) -> None:
    from tracking.serving.pyfunc import load_logged_classifier

    with tarfile.open(FIXTURE / "logged_model.tar") as archive:
        archive.extractall(tmp_path, filter="data")
    model_dir = str(tmp_path / "logged_model")
    expected = np.load(FIXTURE / "logged_model_expected.npz")
    pyfunc = mlflow.pyfunc.load_model(model_dir)
    probabilities = pyfunc.predict(expected["x"].astype(np.float64))
    np.testing.assert_allclose(probabilities, expected["probabilities"], rtol=1e-5, atol=1e-6)
    assert load_logged_classifier(model_dir).output_shape == (None, 10)
