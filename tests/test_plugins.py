"""Your own model: a factory named by its import path, from a throwaway package written to a
temporary folder and put on sys.path (not installed: tests/throwaway_package.py), and
keras.applications' own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from throwaway_package import package_on_path

from models import MODELS, UnknownModel
from tracking.config import Config, ConfigError
from tracking.train import main
from tracking.training.loop import train


@pytest.fixture
def mypkg(tmp_path: Path) -> Iterator[str]:
    """`mypkg.nets` on sys.path for this test only (and out of the registry's cache after)."""
    with package_on_path(tmp_path / "plugin") as module:
        yield module


def test_a_factory_by_import_path_trains_and_logs_where_it_came_from(
        mlflow_uri: str, mypkg: str) -> None:
    name = f"{mypkg}:small_net"
    assert MODELS[name].recipe.epochs == 2 and MODELS[name].min_image_size == 8
    results = train(Config(model=name, image_size=16, limit=200, experiment="plugins"))
    run = mlflow.MlflowClient().get_run(results["run_id"])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model"] == name and params["model_source"] == name
    assert params["model_package"] == "(not installed)"  # on sys.path, no distribution
    assert params["effective_epochs"] == "2" and params["optimizer"] == "adam"  # its recipe
    model = mlflow.pyfunc.load_model(f"runs:/{results['run_id']}/model")
    assert model.metadata.metadata["class_names"]  # the logged model loads, custom layer too


def test_a_factory_without_facts_takes_stated_defaults(mypkg: str, capsys) -> None:
    spec = MODELS[f"{mypkg}:build_net"]
    assert "carries no recipe, search_space, min_image_size: using the defaults" in \
        capsys.readouterr().err
    assert spec.min_image_size == 32 and spec.recipe.epochs == 15
    with pytest.raises(ConfigError, match="needs image_size >= 32"):
        Config(model=f"{mypkg}:build_net", image_size=16)


@pytest.mark.parametrize("attribute, message", [
    ("nothing", "mypkg.nets has no attribute 'nothing'"),
    ("NOT_A_FACTORY", "is a int, not a callable factory"),
    ("wrong_output", "outputs (None, 3), not (None, 10): one probability per class"),
])
def test_a_bad_factory_is_one_line_before_any_run(mlflow_uri: str, mypkg: str, capsys,
                                                  attribute: str, message: str) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--model", f"{mypkg}:{attribute}", "--limit", "200", "--epochs", "1",
              "--experiment", "bad-factories"])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert stop.value.code == 2 and len(errors) == 1 and message in errors[0], errors
    experiment = mlflow.MlflowClient().get_experiment_by_name("bad-factories")
    assert experiment is None or not mlflow.MlflowClient().search_runs(
        [experiment.experiment_id])  # no run was started


def test_unknown_names_say_what_there_is() -> None:
    with pytest.raises(UnknownModel, match="choose one of: vgg19, resnet50, densenet121, "
                                           "concat_cnn, or name a factory as module:attribute"):
        MODELS.resolve("vgg16")
    with pytest.raises(UnknownModel, match="cannot import no_such_package"):
        MODELS.resolve("no_such_package.nets:build")


@pytest.mark.slow
def test_keras_applications_by_import_path_train_one_epoch(mlflow_uri: str) -> None:
    """keras.applications' own constructor: called headless and untrained, the suite's head."""
    results = train(Config(model="keras.applications:MobileNetV2", limit=200, epochs=1,
                           experiment="plugins"))
    params = mlflow.MlflowClient().get_run(results["run_id"]).data.params
    assert params["model_source"] == "keras.applications:MobileNetV2"
    assert params["model_package"].startswith("keras==")
    assert 0.0 <= results["test_accuracy"] <= 1.0


@pytest.mark.slow  # about 80 s alone: two trial processes, two trainings, a report
def test_a_factory_by_import_path_tunes_resumes_compares_and_promotes(
        mlflow_uri: str, mypkg: str, tmp_path: Path) -> None:
    """The whole walk through the import path alone: two tuning trials (each in a trial
    process of its own, which imports the package from the same sys.path), an interrupted run
    resumed, the report and a promotion."""
    import keras

    from tracking.comparison.promotion import promote
    from tracking.comparison.report import build_report
    from tracking.training.resume import resume_config
    from tuning.config import TuneConfig
    from tuning.study import run_tuning_study

    name = f"{mypkg}:small_net"
    summary = run_tuning_study(TuneConfig(model=name, limit=200, max_epochs=1, n_trials=2,
                                          experiment="plugins", study_name="mypkg",
                                          final_test=False))
    assert summary["trials_complete"] == 2
    trials = mlflow.MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("plugins").experiment_id],
        f"tags.`mlflow.parentRunId` = '{summary['parent_run_id']}'")
    assert len(trials) == 2 and all(t.data.params["model_source"] == name for t in trials)

    class InterruptAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            raise KeyboardInterrupt("interrupted for the test")

    with pytest.raises(KeyboardInterrupt):
        train(Config(model=name, image_size=16, limit=200, experiment="plugins"),
              callbacks=[InterruptAfterFirstEpoch()])
    run_id = mlflow.last_active_run().info.run_id
    assert mlflow.get_run(run_id).info.status == "KILLED"
    keras.backend.clear_session()
    resumed = train(resume_config(run_id), resume_run_id=run_id)
    assert resumed["epochs_run"] == 2 and mlflow.get_run(run_id).info.status == "FINISHED"

    report = build_report([mlflow.get_experiment_by_name("plugins").experiment_id],
                          tmp_path / "report", latency=False)
    assert f"| 1 | {name} [limit 200] | digits | 1 |" in report.markdown
    promotion = promote(run_id)  # champion only if it beats chance, which 2 epochs may not
    assert promotion.name == "digits-classifier" and promotion.alias in ("champion",
                                                                          "challenger")
    version = mlflow.MlflowClient().get_model_version("digits-classifier", promotion.version)
    assert version.run_id == run_id and promotion.alias in version.aliases
