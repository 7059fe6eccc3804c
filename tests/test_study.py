"""The whole study in one command, shrunk: real training, nested runs, the report on the parent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from tracking import study
from tracking.study import cli as study_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_study_nests_every_seed_and_logs_the_report(mlflow_uri: str, tmp_path: Path,
                                                    capsys) -> None:
    out = tmp_path / "study"
    assert study.main(["--models", "concat_cnn", "--seeds", "2", "--epochs", "2",
                       "--limit", "300", "--experiment", "s", "--output", str(out)]) == 0
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("s")
    parents = client.search_runs([exp.experiment_id], "tags.run_kind = 'study'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "study-digits"
    assert parent.data.params["seeds"] == "2" and parent.data.params["models"] == "concat_cnn"

    children = client.search_runs([exp.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.info.run_name for c in children) == ["concat_cnn-digits-seed0",
                                                         "concat_cnn-digits-seed1"]
    assert {c.data.params["seed"] for c in children} == {"0", "1"}
    assert all(c.info.status == "FINISHED" for c in children)
    accuracies = [c.data.metrics["test_accuracy"] for c in children]

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.md", "accuracy_by_model.png", "curves_by_model.png",
            "confusion_matrices.png"} <= artifacts
    metrics = parent.data.metrics
    assert metrics["mean_test_accuracy.concat_cnn"] == pytest.approx(np.mean(accuracies))
    assert metrics["sd_test_accuracy.concat_cnn"] == pytest.approx(np.std(accuracies, ddof=1))
    assert metrics["runs.concat_cnn"] == 2

    md = (out / "comparison.md").read_text()
    assert md in capsys.readouterr().out
    row = f"| 1 | concat_cnn [limit 300, 2 epochs] | digits | 2 | {np.mean(accuracies):.4f} ± "
    assert row in md
    assert all(c.info.run_id[:8] in md for c in children)
    assert "Where each model goes wrong" in md and "**concat_cnn [limit 300, 2 epochs]** " in md
    # the UI opens this experiment on the key-metrics view, the study expanded
    view = exp.tags["mlflow.sharedViewState.key-metrics"]
    assert parent.info.run_id in view and "metrics.`test_accuracy`" in view


def test_bad_study_settings_exit_2_before_any_run(mlflow_uri: str, tmp_path: Path,
                                                  capsys) -> None:
    (tmp_path / "a-file").write_text("")
    for argv, message in ((["--models", "alexnet"], "unknown model 'alexnet'"),
                          (["--output", str(tmp_path / "a-file" / "report")],
                           "argument --output: not a folder that can be written"),
                          (["--seeds", "0"], "seeds must be a positive integer"),
                          (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
                          (["--models", "vgg19,vgg19"], "must not repeat"),
                          (["--tune-budget", "6"], "tune budget must be TRIALSxMAX_EPOCHS"),
                          (["--tune-budget", "0x8"], "tune_budget must be two positive"),
                          (["--tune", "--tune-budget", "2x2"], "exclude each other"),
                          (["--tune-budget", "2x2", "--pruner", "asha"],
                           "pruner must be one of median, hyperband, none")):
        with pytest.raises(SystemExit) as exit_info:
            study.main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert mlflow.search_runs(search_all_experiments=True).empty


@pytest.mark.slow
def test_mlflow_run_study_entry_point(mlflow_uri: str, tmp_path: Path) -> None:
    """`mlflow run . -e study`: the launched run is the parent, then `-e compare` on it."""
    out = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "study", "--env-manager",
         "local", "--experiment-name", "mlrun-study", "-P", "models=concat_cnn", "-P",
         "seeds=2", "-P", "epochs=1", "-P", "limit=200", "-P", f"output={tmp_path / 'o'}"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = mlflow.search_runs(experiment_names=["mlrun-study"])
    parent = runs[runs["tags.run_kind"] == "study"]
    assert len(parent) == 1 and parent.iloc[0]["status"] == "FINISHED"
    parent_id = parent.iloc[0]["run_id"]
    children = runs[runs["tags.mlflow.parentRunId"] == parent_id]
    assert len(children) == 2 and set(children["params.seed"]) == {"0", "1"}

    out = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "compare", "--env-manager",
         "local", "--experiment-name", "mlrun-study", "-P", f"parent={parent_id}",
         "-P", f"output={tmp_path / 'c'}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = mlflow.search_runs(experiment_names=["mlrun-study"],
                              filter_string="tags.run_kind = 'comparison'")
    assert len(runs) == 1 and runs.iloc[0]["metrics.runs.concat_cnn"] == 2
    assert (tmp_path / "c" / "comparison.md").exists()


@pytest.mark.slow
def test_study_with_tuning_files_the_optuna_study_under_the_parent(mlflow_uri: str,
                                                                   tmp_path: Path) -> None:
    """--tune runs tuning.optuna_resnet's study (here on concat_cnn, for time) as a child of
    the study's parent, and the report gets its section."""
    assert study.main(["--models", "concat_cnn", "--seeds", "1", "--epochs", "1", "--limit",
                       "200", "--tune", "--tune-model", "concat_cnn", "--tune-trials", "2",
                       "--tune-max-epochs", "2", "--experiment", "t",
                       "--output", str(tmp_path / "o")]) == 0
    client = mlflow.MlflowClient()
    exp_id = client.get_experiment_by_name("t").experiment_id
    parent = client.search_runs([exp_id], "tags.run_kind = 'study'")[0]
    tuning_id = parent.data.tags["tuning_run_id"]
    tuning = client.get_run(tuning_id)
    assert tuning.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert "tuned_test_accuracy" in tuning.data.metrics
    trials = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{tuning_id}'")
    assert len(trials) == 2 and all("trial_number" in t.data.tags for t in trials)
    md = (tmp_path / "o" / "comparison.md").read_text()
    assert "## Tuning: concat_cnn on digits" in md
    assert "Sampled by TPESampler (seed 0, multivariate True, constant liar True), pruned by " \
           "MedianPruner" in md and "1 worker(s) seen" in md
    assert f"{tuning.data.metrics['tuned_test_accuracy']:.4f}" in md
    # no rows for trials or the tuning run
    assert "| 1 | concat_cnn [limit 200, 1 epochs] | digits | 1 |" in md


def fair_study(tmp_path: Path, models: str, budget: str, seeds: str) -> tuple:
    out = tmp_path / "fair"
    assert study.main(["--models", models, "--tune-budget", budget, "--seeds", seeds,
                       "--epochs", "1", "--limit", "200", "--experiment", "fair",
                       "--trial-process", "false", "--output", str(out)]) == 0
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("fair")
    (parent,) = client.search_runs([exp.experiment_id], "tags.run_kind = 'study'")
    children = client.search_runs([exp.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return parent, children, (out / "comparison.md").read_text()


def test_fair_study_tunes_then_scores_new_seeds_on_one_split(mlflow_uri: str,
                                                             tmp_path: Path) -> None:
    from tracking.evaluation.outcomes import read_predictions

    parent, children, md = fair_study(tmp_path, "concat_cnn", "1x1", "1")
    params = parent.data.params
    assert (params["tune_budget"], params["final_seeds"], params["split_seed"]) == (
        "1x1", "1", "0")
    (tuning,) = [c for c in children if c.data.tags.get("run_kind") == "tuning"]
    assert tuning.data.metrics["trials_complete"] + tuning.data.metrics["trials_pruned"] == 1
    assert "tuned_test_accuracy" not in tuning.data.metrics  # trials never see the test split
    assert parent.data.metrics["trial_epochs.concat_cnn"] == tuning.data.metrics["trial_epochs"]

    final = [c for c in children if "study_variant" in c.data.tags]
    assert sorted(c.info.run_name for c in final) == [
        "concat_cnn-digits-recipe-seed1", "concat_cnn-digits-tuned-seed1"]
    assert {c.data.params["seed"] for c in final} == {"1"}  # not the tuning seed 0
    assert {c.data.params["split_seed"] for c in final} == {"0"}
    assert len({read_predictions(c.info.run_id)["test_digest"][0] for c in final}) == 1
    best = tuning.data.params
    for run in (c for c in final if c.data.tags["study_variant"] == "tuned"):
        assert run.data.params["epochs"] == best["best_epochs"]
        assert run.data.params["batch_size"] == best["best_batch_size"]
        assert float(run.data.params["learning_rate"]) == pytest.approx(
            float(best["best_learning_rate"]))
        assert run.data.tags["tuning_run_id"] == tuning.info.run_id

    metrics = parent.data.metrics
    assert metrics["tuning_gap.concat_cnn"] == pytest.approx(
        metrics["mean_test_accuracy.concat_cnn.tuned"]
        - metrics["mean_test_accuracy.concat_cnn.recipe"])
    assert metrics["rank.concat_cnn"] == 1
    assert "| 1 | concat_cnn (tuned) [limit 200] | digits | 1 |" in md
    assert "### Recipe against tuned" in md and "Every model had the same budget: 1 trial " in md
    assert "### Accuracy against cost" in md
    # the first candidate of digits-classifier: champion if better than chance, else challenger
    promotion = parent.data.tags["promotion"]
    assert promotion.startswith("digits-classifier version 1: ")
    alias = "champion" if ": champion: " in promotion else "challenger"
    registered = mlflow.MlflowClient().get_model_version_by_alias("digits-classifier", alias)
    assert registered.run_id in {c.info.run_id for c in final
                                 if c.data.tags["study_variant"] == "tuned"}


@pytest.mark.slow
def test_fair_study_gives_two_models_equal_budgets(mlflow_uri: str, tmp_path: Path) -> None:
    parent, children, md = fair_study(tmp_path, "concat_cnn,vgg19", "2x1", "2")
    studies = {c.data.params["model"]: c for c in children
               if c.data.tags.get("run_kind") == "tuning"}
    assert set(studies) == {"concat_cnn", "vgg19"}
    for key in ("n_trials", "max_epochs", "pruner", "seeds_per_trial", "seed"):
        assert studies["concat_cnn"].data.params[key] == studies["vgg19"].data.params[key]
    for s in studies.values():
        assert s.data.metrics["trials_complete"] + s.data.metrics["trials_pruned"] == 2
        assert s.data.metrics["trial_epochs"] == 2  # two trials of one epoch
    metrics = parent.data.metrics
    assert {metrics["rank.concat_cnn"], metrics["rank.vgg19"]} == {1, 2}
    assert "concat_cnn (tuned) − vgg19 (tuned)" in md or "vgg19 (tuned) − concat_cnn (tuned)" in md
    assert "Every model had the same budget: 2 trials" in md


def test_a_fair_study_reports_apart_from_a_plain_one(tmp_path: Path) -> None:
    """--output auto (the MLproject's default): outputs/study, or outputs/fair_study with a
    tuning budget, so a fair study never overwrites a plain study's report."""
    assert study_cli.report_folder("auto") is None and study_cli.report_folder("") is None
    assert study_cli.report_folder(str(tmp_path / "r")) == str(tmp_path / "r")
    assert (tmp_path / "r").is_dir()
    assert study_cli.default_output(None) == str(Path("outputs", "study"))
    assert study_cli.default_output((2, 3)) == str(Path("outputs", "fair_study"))
