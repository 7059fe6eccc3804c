"""The Optuna study over ResNet-50's training settings, against real MLflow and Optuna stores.

Fast tests tune the small `concat_cnn` on a sliver of digits; the slow ones run ResNet-50,
several worker processes, a PostgreSQL server started here, and a worker killed mid-trial.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

import tuning.storage
from tracking.config import Config
from tuning.config import TuneConfig, TuneError
from tuning.optuna_resnet import build_parser, main
from tuning.report import OBJECTIVE_METRIC
from tuning.space import baseline_params, search_space
from tuning.storage import StorageUnavailable, open_storage, with_driver
from tuning.study import (
    PRUNER_STARTUP_TRIALS,
    PRUNER_WARMUP_EPOCHS,
    check_resume,
    default_pruner,
    make_pruner,
    run_tuning_study,
)

REPO = Path(__file__).resolve().parents[1]
# in the worker's process: these tests are about the study, tests/test_trial_process.py about
# trials in processes of their own (the default)
TINY = dict(model="concat_cnn", limit=200, max_epochs=2, experiment="tune", trial_process=False)
TINY_ARGS = ["--model", "concat_cnn", "--limit", "200", "--max-epochs", "2",
             "--trial-process", "false"]


def runs_in_store(tmp_path: Path) -> int:
    if not (tmp_path / "mlflow.db").exists():  # no store, no runs (and no 5 s of migrations)
        return 0
    client = mlflow.MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(ids)) if ids else 0


def child_runs(parent_ids: list[str]) -> list:
    client = mlflow.MlflowClient()
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    return [r for r in client.search_runs(experiment_ids)
            if r.data.tags.get("mlflow.parentRunId") in parent_ids]


def load(study_name: str, storage: str) -> optuna.Study:
    return optuna.load_study(study_name=study_name, storage=with_driver(storage))


def test_two_trial_study_nests_trials_and_registers_the_best(mlflow_uri: str,
                                                             tmp_path: Path) -> None:
    summary = run_tuning_study(TuneConfig(n_trials=2, **TINY))
    client = mlflow.MlflowClient()
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["study_name"] == "concat_cnn-digits"
    assert parent.data.params["n_trials"] == "2" and parent.data.params["sampler_seed"] == "0"
    # what the study ran with is on the study, not left to the installed Optuna's defaults
    params = parent.data.params
    assert (params["sampler"], params["sampler_multivariate"],
            params["sampler_constant_liar"]) == ("TPESampler", "True", "True")
    assert params["optuna_version"] == optuna.__version__
    assert params["pruner"] == "MedianPruner" and params["pruner_n_warmup_steps"] == "3"
    assert parent.data.metrics["workers_seen"] == 1

    # the Optuna study sits next to the MLflow store; trial 0 is the enqueued baseline
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = load("concat_cnn-digits", storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert study.trials[0].params == baseline_params("concat_cnn", 2)
    assert study.trials[0].params == {"epochs": 2, "batch_size": 128, "learning_rate": 2e-3}
    assert study.trials[0].user_attrs["baseline"] is True

    children = child_runs([parent.info.run_id])
    assert len(children) == 2
    by_trial = {int(r.data.tags["trial_number"]): r for r in children}
    assert set(by_trial) == {0, 1}
    for number, run in by_trial.items():
        trial = study.trials[number]
        assert run.info.status == "FINISHED"
        assert run.info.run_id == trial.user_attrs["mlflow_run_id"]
        assert run.data.tags["study_name"] == "concat_cnn-digits"
        assert run.data.tags["trial_state"] == "COMPLETE"
        assert run.data.params["epochs"] == str(trial.params["epochs"])
        assert run.data.params["batch_size"] == str(trial.params["batch_size"])
        assert run.data.params["evaluate_test"] == "false"
        assert "test_accuracy" not in run.data.metrics  # the test split waits for the report
        history = client.get_metric_history(run.info.run_id, OBJECTIVE_METRIC)
        assert [m.step for m in history] == list(range(1, int(run.data.metrics["epochs_run"]) + 1))
        assert trial.intermediate_values == {m.step: m.value for m in history}
        assert trial.value == pytest.approx(run.data.metrics["best_val_accuracy"])
        assert "training_curves.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert by_trial[0].data.tags["baseline"] == "true"

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "optimization_history.png", "intermediate_values.png",
            "confusion_matrix.png"} <= artifacts
    csv = mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="trials.csv")
    rows = Path(csv).read_text().strip().splitlines()
    assert len(rows) == 3 and "params_batch_size" in rows[0]

    best = study.best_trial
    metrics, params, tags = parent.data.metrics, parent.data.params, parent.data.tags
    assert metrics["best_val_accuracy"] == pytest.approx(best.value)
    assert params["best_epochs"] == str(best.params["epochs"])
    assert params["best_batch_size"] == str(best.params["batch_size"])
    assert tags["best_run_id"] == best.user_attrs["mlflow_run_id"]
    assert metrics["trials_complete"] == 2 and metrics["trials_pruned"] == 0
    for key in ("tuned_test_accuracy", "baseline_test_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
        assert summary[key] == pytest.approx(metrics[key])
    if best.number == 0:
        assert metrics["tuned_test_accuracy"] == metrics["baseline_test_accuracy"]

    versions = client.search_model_versions("name = 'concat_cnn-tuned'")
    if summary["chance_p_value"] >= 0.05:  # two epochs on 128 images may not beat chance
        assert versions == [] and summary["registered_model"] is None
        assert "not better than chance" in tags["tuning_warning"]
        return
    assert [v.run_id for v in versions] == [tags["best_run_id"]]
    assert client.get_registered_model("concat_cnn-tuned").name == "concat_cnn-tuned"
    assert versions[0].tags["trial_number"] == str(best.number)


def test_a_pruned_trial_is_marked_pruned_in_optuna_and_mlflow(mlflow_uri: str,
                                                             tmp_path: Path) -> None:
    # prunes at the first report: validation accuracy never reaches 1.01
    summary = run_tuning_study(TuneConfig(n_trials=1, study_name="pruned", **TINY),
                        pruner=optuna.pruners.ThresholdPruner(lower=1.01))
    study = load("pruned", f"sqlite:///{tmp_path / 'optuna.db'}")
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]  # stopped after epoch 1 of 2

    client = mlflow.MlflowClient()
    (run,) = child_runs([summary["parent_run_id"]])
    assert run.info.status == "KILLED"
    assert run.data.tags["trial_state"] == "PRUNED"
    assert run.data.tags["stop_reason"].startswith("pruned at epoch 1: val_accuracy")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1]

    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_pruned"] == 1
    assert parent.data.metrics["trials_complete"] == 0
    assert "best_epochs" not in parent.data.params and "best_trial" not in summary
    assert "param_importances_skipped" in parent.data.tags
    assert client.search_registered_models() == []


def test_resuming_a_study_adds_trials_without_a_second_baseline(mlflow_uri: str,
                                                                tmp_path: Path) -> None:
    config = TuneConfig(model="concat_cnn", limit=100, max_epochs=1, experiment="tune",
                        trial_process=False,
                        study_name="resumed", n_trials=2)
    first = run_tuning_study(replace(config, n_trials=1))
    second = run_tuning_study(config)
    full = run_tuning_study(config)  # the total is reached: nothing to run

    study = load("resumed", f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.number for t in study.trials] == [0, 1]
    assert [t.user_attrs.get("baseline", False) for t in study.trials] == [True, False]
    assert (first["worker_trials"], second["worker_trials"], full["worker_trials"]) == (1, 1, 0)
    client = mlflow.MlflowClient()
    seeds = [client.get_run(s["parent_run_id"]).data.params["sampler_seed"]
             for s in (first, second, full)]
    assert seeds == ["0", "1", "2"]  # a resumed sampler does not replay earlier proposals
    assert [r.data.tags["trial_number"] for r in child_runs([second["parent_run_id"]])] == ["1"]
    assert client.get_run(full["parent_run_id"]).data.metrics["trials_complete"] == 2
    # reporting again registers nothing new unless the best trial changed
    versions = client.search_model_versions("name = 'concat_cnn-tuned'")
    assert len({v.run_id for v in versions}) == len(versions) <= 2


@pytest.mark.slow
def test_resuming_with_another_search_space_exits_2_before_any_run(mlflow_uri: str,
                                                                   tmp_path: Path,
                                                                   capsys) -> None:
    args = ["--model", "concat_cnn", "--limit", "100", "--experiment", "tune",
            "--study-name", "space", "--n-trials", "1"]
    assert main([*args, "--max-epochs", "1"]) == 0
    study = load("space", f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.user_attrs["search_space"] == {
        "model": "concat_cnn", "dataset": "digits", "epochs": "1..1",
        "batch_size": "16,32,64,128,256,512", "learning_rate": "0.0001..0.01 log",
        "limit": "100"}
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    runs = runs_in_store(tmp_path)
    assert runs == 2  # parent and trial
    capsys.readouterr()

    for more in (["--max-epochs", "3", "--n-trials", "2"], ["--max-epochs", "3", "--create-only"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, *more])
        assert exit_info.value.code == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("python -m tuning.optuna_resnet: error: study 'space' in sqlite:///")
        assert ("was created with epochs 1..1, this command asks for epochs 2..3: use a new "
                "--study-name, or resume with the same settings (--max-epochs 1)") in last
    # the images trials are scored on are part of the study: another --limit is refused
    with pytest.raises(SystemExit) as exit_info:
        main([*args[:2], *args[4:], "--max-epochs", "1"])  # no --limit: the whole data set
    assert exit_info.value.code == 2
    assert ("was created with limit 100, this command asks for limit (none): use a new "
            "--study-name, or resume with the same settings (--limit 100)"
            ) in capsys.readouterr().err
    assert len(load("space", f"sqlite:///{tmp_path / 'optuna.db'}").trials) == 1
    assert runs_in_store(tmp_path) == runs


def test_a_study_from_before_the_recorded_space_is_checked_against_its_trials(
    mlflow_uri: str, tmp_path: Path, capsys
) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    legacy = optuna.create_study(storage=storage, study_name="legacy", direction="maximize")
    legacy.add_trial(optuna.create_trial(params=baseline_params("concat_cnn", 2),
                                         distributions=search_space("concat_cnn", 2),
                                         value=0.5))
    config = TuneConfig(study_name="legacy", **TINY)  # max_epochs 2: the same space
    check_resume(config)
    with pytest.raises(TuneError, match=r"created with epochs 2\.\.2, this command asks for "
                                        r"epochs 2\.\.4: .*\(--max-epochs 2\)$"):
        check_resume(replace(config, max_epochs=4))
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY_ARGS, "--study-name", "legacy", "--max-epochs", "4", "--create-only"])
    assert exit_info.value.code == 2
    assert "study 'legacy' in sqlite:///" in capsys.readouterr().err
    study = load("legacy", storage)
    assert len(study.trials) == 1 and "search_space" not in study.user_attrs
    assert runs_in_store(tmp_path) == 0


def test_a_best_trial_at_chance_level_is_not_registered_as_tuned() -> None:
    """Two one-epoch trials at validation accuracy 0.097 (10 classes) once ended in a
    registered "tuned" model; now the verdict refuses it, and a baseline that stays best is
    registered with a warning."""
    from tuning.report import tuning_verdict

    def trial(number: int, value: float) -> optuna.trial.FrozenTrial:
        made = optuna.trial.create_trial(params={"epochs": 1},
                                         distributions={"epochs": search_space(
                                             "concat_cnn", 1)["epochs"]}, value=value)
        made.number = number
        return made

    baseline, other = trial(0, 0.097), trial(1, 0.097)
    p_value, warning = tuning_verdict(other, baseline, val_size=288, num_classes=10)
    assert p_value > 0.5 and "not better than chance" in warning
    assert "nothing was registered" in warning
    p_value, warning = tuning_verdict(trial(1, 0.4), baseline, 288, 10)
    assert p_value < 1e-20 and warning == ""
    best_baseline = trial(0, 0.4)
    p_value, warning = tuning_verdict(best_baseline, best_baseline, 288, 10)
    assert p_value < 0.05 and "no trial beat the baseline trial 0" in warning


def test_default_pruner_spares_warm_up_epochs_and_compares_at_equal_epochs() -> None:
    """Steps are epochs from 1: a hopeless trial survives its warm-up epochs, then is pruned;
    a completed trial that never reached an epoch does not count at that epoch."""
    study = optuna.create_study(direction="maximize", pruner=default_pruner())
    for _ in range(PRUNER_STARTUP_TRIALS):
        study.add_trial(optuna.create_trial(
            params={}, distributions={}, value=0.9,
            intermediate_values={e: 0.5 + 0.1 * e for e in range(1, 5)}))
    for _ in range(2):  # short trials, excellent by their last epoch 2
        study.add_trial(optuna.create_trial(params={}, distributions={}, value=0.99,
                                            intermediate_values={1: 0.9, 2: 0.99}))
    trial = study.ask()
    verdicts = []
    for epoch in range(1, 5):
        trial.report(0.1, step=epoch)
        verdicts.append(trial.should_prune())
    assert verdicts == [False] * PRUNER_WARMUP_EPOCHS + [True] * (4 - PRUNER_WARMUP_EPOCHS)

    # as good as the long trials at epoch 3: the short trials, absent there, do not raise the bar
    short = study.ask()
    for epoch in range(1, 4):
        short.report(0.5 + 0.1 * epoch, step=epoch)
    assert not short.should_prune()


@pytest.mark.slow
def test_a_trial_of_several_seeds_is_worth_their_mean(mlflow_uri: str, tmp_path: Path) -> None:
    """--seeds-per-trial 2: a trial trains seeds 0 and 1 on one split, its value is the mean,
    and the pruner sees the per-epoch mean of the two."""
    summary = run_tuning_study(TuneConfig(n_trials=1, seeds_per_trial=2, study_name="two-seeds",
                                   **{**TINY, "limit": 100, "max_epochs": 1}))
    study = load("two-seeds", f"sqlite:///{tmp_path / 'optuna.db'}")
    (trial,) = study.trials
    assert study.user_attrs["search_space"]["seeds_per_trial"] == "2"
    client = mlflow.MlflowClient()
    runs = sorted(child_runs([summary["parent_run_id"]]), key=lambda r: r.data.tags["trial_seed"])
    assert [r.info.run_name for r in runs] == ["trial-0-seed0", "trial-0-seed1"]
    assert [r.data.params["seed"] for r in runs] == ["0", "1"]
    assert {r.data.params["split_seed"] for r in runs} == {"0"}  # one split for both
    assert len({tuple(sorted(i.dataset.digest for i in r.inputs.dataset_inputs))
                for r in runs}) == 1
    values = [r.data.metrics["best_val_accuracy"] for r in runs]
    assert trial.value == pytest.approx(np.mean(values))
    assert trial.user_attrs["seed_values"] == pytest.approx(values)
    assert trial.user_attrs["mlflow_run_ids"] == [r.info.run_id for r in runs]
    histories = [[m.value for m in sorted(client.get_metric_history(r.info.run_id,
                                                                    OBJECTIVE_METRIC),
                                          key=lambda m: m.step)] for r in runs]
    assert trial.intermediate_values == pytest.approx(
        {e + 1: np.mean([h[e] for h in histories]) for e in range(len(histories[1]))})
    epochs = sum(int(r.data.metrics["epochs_run"]) for r in runs)
    parent = client.get_run(summary["parent_run_id"])
    assert trial.user_attrs["trial_epochs"] == epochs == parent.data.metrics["trial_epochs"]
    assert parent.data.metrics["trial_seconds"] > 0
    assert parent.data.params["seeds_per_trial"] == "2"
    assert parent.data.tags["run_kind"] == "tuning"
    # the seed with the better validation accuracy stands for the trial
    assert trial.user_attrs["mlflow_run_id"] == runs[int(np.argmax(values))].info.run_id
    assert {r.data.tags["trial_state"] for r in runs} == {"COMPLETE"}


def test_pruners_by_name() -> None:
    assert isinstance(make_pruner("median", 8), optuna.pruners.MedianPruner)
    hyperband = make_pruner("hyperband", 8)
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner)
    assert (hyperband._min_resource, hyperband._max_resource) == (PRUNER_WARMUP_EPOCHS + 1, 8)
    assert isinstance(make_pruner("none", 8), optuna.pruners.NopPruner)
    assert build_parser().parse_args(["--pruner", "hyperband"]).pruner == "hyperband"


@pytest.mark.parametrize("argv, message", [
    (["--n-trials", "0"], "n_trials must be a positive integer, got 0"),
    (["--n-trials", "-3"], "n_trials must be a positive integer, got -3"),
    (["--n-trials", "many"], "n-trials must be an integer, got 'many'"),
    (["--max-epochs", "0"], "max_epochs must be a positive integer, got 0"),
    (["--timeout", "-1"], "timeout must be a number of seconds >= 0"),
    (["--model", "alexnet"], "unknown model 'alexnet'"),
    (["--pruner", "sometimes"], "pruner must be one of median, hyperband, none"),
    (["--seeds-per-trial", "0"], "seeds_per_trial must be a positive integer, got 0"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--storage", "redis://localhost/0"], "unknown storage scheme 'redis'"),
    (["--storage", "optuna.db"], "storage 'optuna.db' is not a database URL"),
    (["--storage", "sqlite:////no/such/folder/optuna.db"], "cannot reach storage"),
    (["--storage", "postgresql://tuner:secret@127.0.0.1:{port}/optuna"],
     "cannot reach storage postgresql://tuner:***@127.0.0.1:"),
])
def test_bad_input_exits_2_before_any_run(mlflow_uri: str, tmp_path: Path, capsys, argv,
                                          message) -> None:
    port = free_port()  # nothing listens there
    argv = [a.format(port=port) for a in argv]
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("python -m tuning.optuna_resnet: error:")
    assert message in last
    assert "secret" not in err
    assert time.monotonic() - started < 10
    assert runs_in_store(tmp_path) == 0


def test_unanswering_database_server_is_reported_within_seconds(mlflow_uri: str, tmp_path: Path,
                                                               capsys) -> None:
    """A server that takes the connection and never answers: the connect timeout ends it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(SystemExit) as exit_info:
            main(["--storage", f"postgresql://u@127.0.0.1:{port}/optuna"])
        waited = time.monotonic() - started
    assert exit_info.value.code == 2
    assert f"cannot reach storage postgresql://u@127.0.0.1:{port}" in capsys.readouterr().err
    assert 2 < waited < 10  # CONNECT_TIMEOUT_SECONDS, not libpq's default of forever
    assert runs_in_store(tmp_path) == 0


def test_mlproject_tune_entry_mirrors_the_command_line() -> None:
    spec = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]["tune"]
    defaults = vars(build_parser().parse_args([]))
    for name, p in spec["parameters"].items():
        if p["type"] == "path":  # MLflow resolves it against the caller's folder: "." there
            assert (p["default"], defaults[name]) == (".", ""), name
            continue
        default = str(defaults[name]).lower() if isinstance(defaults[name], bool) \
            else defaults[name]  # a flag's true/false, as the MLproject writes it
        assert p["default"] == default, name
        assert f"--{name.replace('_', '-')} {{{name}}}" in spec["command"], name
    assert {"dataset", "data_dir", "n_trials", "timeout", "max_epochs", "study_name", "storage",
            "seed", "precision", "pruner", "seeds_per_trial", "limit",
            "trial_process"} == set(spec["parameters"])
    assert spec["command"].startswith("python -m tuning.optuna_resnet")


def test_mlproject_generic_tuning_entry_mirrors_python_m_tuning() -> None:
    from tuning import cli

    spec = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]["tune_model"]
    parser = cli.build_parser("python -m tuning", "", None)
    defaults = vars(parser.parse_args(["--model", "vgg19"]))
    assert "default" not in spec["parameters"]["model"]  # required, as --model is
    for name, p in spec["parameters"].items():
        assert f"--{name.replace('_', '-')} {{{name}}}" in spec["command"], name
        if name == "model":
            continue
        expected = "." if p["type"] == "path" else p["default"]
        got = str(defaults[name]).lower() if isinstance(defaults[name], bool) else defaults[name]
        assert (got or ".") == expected if p["type"] == "path" else got == expected, name
    assert spec["command"].startswith("python -m tuning ")


@pytest.mark.slow
def test_under_mlflow_run_the_launched_run_is_the_parent(
    mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mlflow run -e tune` creates the run, logs the parameters as typed, sets MLFLOW_RUN_ID."""
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment("project")
    run_id = client.create_run(experiment_id).info.run_id
    for key, value in {"n_trials": "1", "max_epochs": "1", "timeout": "0", "study_name": "",
                       "storage": "", "seed": "0", "dataset": "digits", "data_dir": ""}.items():
        client.log_param(run_id, key, value)
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    assert main(["--n-trials", "1", "--max-epochs", "1", "--model", "concat_cnn",
                 "--limit", "100", "--timeout", "0"]) == 0
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["study_name"] == "concat_cnn-digits"
    (child,) = child_runs([run_id])
    assert child.info.experiment_id == experiment_id
    assert client.get_experiment_by_name(Config().experiment) is None  # nothing filed elsewhere


# --------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_resnet50_two_trial_study(mlflow_uri: str) -> None:
    summary = run_tuning_study(TuneConfig(n_trials=2, limit=120, max_epochs=1, experiment="tune",
                                          trial_process=False))
    assert summary["trials_complete"] + summary["trials_pruned"] == 2
    # one epoch on 96 images: registered only when the best trial beats chance
    if summary["chance_p_value"] < 0.05:
        assert summary["registered_model"] == "resnet50-tuned/1"
    else:
        assert summary["registered_model"] is None and "not better than chance" in \
            summary["warning"]
    runs = child_runs([summary["parent_run_id"]])
    assert {r.data.params["model"] for r in runs} == {"resnet50"}
    assert {r.data.params["epochs"] for r in runs} == {"1"}
    assert 0.0 <= summary["tuned_test_accuracy"] <= 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    """Debian's server binaries (/usr/lib/postgresql/<version>/bin), newest first, or PATH's."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                   key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


@dataclass
class PostgresServer:
    """A running PostgreSQL server: `url` without a database; stop() and start() it again on
    the same port and data folder (a database outage)."""
    url: str
    pg_ctl: list[str]  # the pg_ctl command line (as the server's user) with its data folder
    start_options: list[str]

    def _run(self, *args: str) -> None:
        subprocess.run([*self.pg_ctl, *args], check=True, capture_output=True, text=True,
                       timeout=120)

    def stop(self) -> None:
        self._run("-m", "fast", "-w", "stop")

    def start(self) -> None:
        if subprocess.run([*self.pg_ctl, "status"], capture_output=True).returncode != 0:
            self._run("-w", *self.start_options, "start")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL server on 127.0.0.1 (trust auth).

    As root the server runs as the `postgres` user (initdb refuses root), from a temporary
    folder that user owns; the unix socket lives there too.
    """
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: "
                    "apt-get install postgresql")
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="pgtest-"))
    if as_user:
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()

    server = PostgresServer(
        url=f"postgresql://postgres@127.0.0.1:{port}",
        pg_ctl=[*as_user, str(bin_dir / "pg_ctl"), "-D", str(data)],
        start_options=["-l", str(root / "server.log"), "-o",
                       f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"])
    try:
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust",
                        "-U", "postgres", "--no-sync"],
                       check=True, capture_output=True, text=True, timeout=120)
        server.start()
    except subprocess.CalledProcessError as err:
        log = root / "server.log"
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {err.stderr}\n"
                    f"{log.read_text() if log.exists() else ''}")
    try:
        yield server
    finally:
        subprocess.run([*server.pg_ctl, "-m", "immediate", "stop"], capture_output=True,
                       timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_server(postgres: PostgresServer) -> str:
    """The server's URL without a database."""
    return postgres.url


def create_database(server: str, name: str) -> str:
    import sqlalchemy

    engine = sqlalchemy.create_engine(with_driver(f"{server}/postgres"),
                                      isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return f"{server}/{name}"


def tune_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tuning.optuna_resnet", *TINY_ARGS, "--experiment", "tune",
            *args]


def wait_for_first_epoch(worker: subprocess.Popen, study_name: str, storage: str) -> None:
    """Return once trial 0 of the worker's study is running and has reported an epoch."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            trials = load(study_name, storage).trials
        except KeyError:  # study not created yet
            continue
        if trials and trials[0].state == TrialState.RUNNING and trials[0].intermediate_values:
            return
    worker.kill()
    pytest.fail("trial 0 never reported an epoch")


def worker_env(mlflow_uri: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri, "PYTHONPATH": str(REPO),
            "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.mark.slow
@pytest.mark.postgres
def test_two_workers_share_one_study_on_postgresql(mlflow_uri: str, tmp_path: Path,
                                                   postgres_server: str) -> None:
    storage = create_database(postgres_server, "two_workers")
    common = ("--storage", storage, "--study-name", "shared", "--n-trials", "5")
    env = worker_env(mlflow_uri)
    subprocess.run(tune_command(*common, "--create-only"), env=env, check=True, timeout=300,
                   capture_output=True)
    workers = [subprocess.Popen(tune_command(*common), env=env, cwd=tmp_path, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
               for _ in range(2)]
    outputs = [w.communicate(timeout=900)[0] for w in workers]
    for w, out in zip(workers, outputs, strict=True):
        assert w.returncode == 0, out[-3000:]

    study = load("shared", storage)
    counted = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(counted) == 5 and len(study.trials) == 5  # the total, not 5 per worker
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(5))
    assert sum(bool(t.user_attrs.get("baseline")) for t in study.trials) == 1

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("tune")
    parents = [r for r in client.search_runs([experiment.experiment_id])
               if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2 and {r.info.status for r in parents} == {"FINISHED"}
    assert len({r.data.tags["worker"] for r in parents}) == 2
    children = child_runs([r.info.run_id for r in parents])
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == numbers
    assert all(r.data.tags["study_name"] == "shared" for r in children)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {r.info.run_id
                                                                     for r in parents}
    # every worker reported; the model registry holds one version per distinct best run
    versions = client.search_model_versions("name = 'concat_cnn-tuned'")
    assert len({v.run_id for v in versions}) == len(versions) >= 1
    assert study.best_trial.user_attrs["mlflow_run_id"] in {v.run_id for v in versions}


@pytest.mark.slow
def test_a_killed_workers_trial_is_failed_and_retried(mlflow_uri: str, tmp_path: Path) -> None:
    """SIGKILL mid-trial, then the same command at once, well inside the heartbeat's grace
    period (the default 240 s): the dead process is seen on this host, its trial failed and
    retried, its runs KILLED, and the study completes the requested number of trials."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    common = ("--study-name", "killed", "--n-trials", "2", "--limit", "600", "--max-epochs", "4")
    env = worker_env(mlflow_uri)
    victim = subprocess.Popen(tune_command(*common), env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_first_epoch(victim, "killed", storage)
    victim.send_signal(signal.SIGKILL)
    victim.wait()

    out = subprocess.run(tune_command(*common), env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "reclaimed trial 0: its worker's process on this host was gone" in out.stdout
    study = load("killed", storage)
    states = [t.state for t in study.trials]
    assert states[0] == TrialState.FAIL
    retry = study.trials[1]
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == study.trials[0].params
    assert retry.user_attrs["baseline"] is True
    assert states[1:].count(TrialState.COMPLETE) + states[1:].count(TrialState.PRUNED) == 2

    client = mlflow.MlflowClient()
    dead_run = client.get_run(study.trials[0].user_attrs["mlflow_run_id"])
    assert dead_run.info.status == "KILLED"
    assert dead_run.data.tags["trial_state"] == "FAIL"
    assert "worker lost: trial 0 lost its process" in dead_run.data.tags["stop_reason"]
    dead_parent = client.get_run(dead_run.data.tags["mlflow.parentRunId"])
    assert dead_parent.info.status == "KILLED"
    running = client.search_runs([dead_run.info.experiment_id], "attributes.status = 'RUNNING'")
    assert not running  # nothing left RUNNING in MLflow either
    retry_run = client.get_run(retry.user_attrs["mlflow_run_id"])
    assert retry_run.info.run_id != dead_run.info.run_id
    assert retry_run.data.tags["retry_of_trial"] == "0"
    assert retry_run.data.tags["trial_state"] in ("COMPLETE", "PRUNED")


@pytest.mark.slow
def test_an_interrupted_baseline_is_enqueued_again(mlflow_uri: str, tmp_path: Path) -> None:
    """SIGTERM (as Ctrl-C) during trial 0: Optuna fails it; the resumed study runs the
    baseline again instead of losing the reference setting for good."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    common = ("--study-name", "stopped", "--n-trials", "2", "--limit", "600",
              "--max-epochs", "4")
    worker = subprocess.Popen(tune_command(*common), env=worker_env(mlflow_uri), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_first_epoch(worker, "stopped", storage)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 143, err[-2000:]
    assert "Traceback" not in err and "interrupted: resume with --study-name stopped" in err
    first = load("stopped", storage).trials[0]
    assert first.state == TrialState.FAIL and first.user_attrs["interrupted"] is True
    (run_id,) = first.user_attrs["mlflow_run_ids"]
    assert mlflow.MlflowClient(mlflow_uri).get_run(run_id).data.tags["trial_state"] == "FAIL"

    out = subprocess.run(tune_command(*common), env=worker_env(mlflow_uri), cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    baselines = [t for t in load("stopped", storage).trials if t.user_attrs.get("baseline")]
    assert [t.state for t in baselines][0] == TrialState.FAIL
    assert baselines[1].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert baselines[1].params == first.params


@pytest.mark.postgres
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning",
                            "ignore:Heartbeat of storage is supposed to be used")
def test_storage_waits_out_a_short_outage_and_gives_up_on_a_long_one(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The storage's own operations against a server that is really stopped and started."""
    url = create_database(postgres.url, "outage")
    study = optuna.create_study(storage=open_storage(url, heartbeat_interval=60, grace_period=240),
                                study_name="outage", direction="maximize")
    capsys.readouterr()

    # a short outage: creating a trial waits until the server is back
    monkeypatch.setattr(tuning.storage, "STORAGE_OUTAGE_SECONDS", 60)
    postgres.stop()
    restart = threading.Timer(2, postgres.start)
    restart.start()
    try:
        started = time.monotonic()
        trial = study.ask()
        waited = time.monotonic() - started
    finally:
        restart.join()
        postgres.start()
    assert 2 < waited < 30
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert err[0].startswith(f"warning: storage {url} unavailable (")
    assert err[0].endswith("retrying for up to 60 s")
    assert err[1].startswith(f"storage {url} available again after ")

    # a long one: telling the result gives up after the limit, then fails at once
    monkeypatch.setattr(tuning.storage, "STORAGE_OUTAGE_SECONDS", 3)
    postgres.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match=rf"^storage {url} unavailable for 3 s \("):
            study.tell(trial, 0.5)
        assert 3 <= time.monotonic() - started < 15
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            study.get_trials()
        assert time.monotonic() - started < 2
    finally:
        postgres.start()
    study.tell(trial, 0.5)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]
    assert "available again" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.postgres
def test_a_worker_outlives_a_database_restart(mlflow_uri: str, tmp_path: Path,
                                              postgres: PostgresServer) -> None:
    """PostgreSQL stopped for 6 s once trial 0 is complete: the worker waits, then finishes."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    storage = create_database(postgres.url, "restart")
    worker = subprocess.Popen(
        tune_command("--storage", storage, "--study-name", "restart", "--n-trials", "3",
                     "--heartbeat-interval", "1"),
        env=worker_env(mlflow_uri), cwd=tmp_path, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    engine = sqlalchemy.create_engine(with_driver(storage), poolclass=NullPool)
    complete = sqlalchemy.text("SELECT count(*) FROM trials WHERE state = 'COMPLETE'")
    try:
        deadline = time.monotonic() + 300
        while True:
            assert worker.poll() is None, worker.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "trial 0 never completed"
            time.sleep(0.2)
            try:
                with engine.connect() as conn:
                    if conn.execute(complete).scalar():
                        break
            except sqlalchemy.exc.ProgrammingError:  # no tables yet
                continue
        engine.dispose()
        postgres.stop()
        time.sleep(6)
        postgres.start()
        output = worker.communicate(timeout=600)[0]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        postgres.start()
    assert worker.returncode == 0, output[-3000:]
    warnings = [line for line in output.splitlines() if line.startswith("warning: storage")]
    assert len(warnings) == 1 and "retrying for up to 60 s" in warnings[0], output[-3000:]
    assert f"storage {storage} available again after" in output

    study = load("restart", storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("tune")
    (parent,) = [r for r in client.search_runs([experiment.experiment_id])
                 if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED"
    children = child_runs([parent.info.run_id])
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == [0, 1, 2]
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {r.info.run_id for r in children} == {t.user_attrs["mlflow_run_id"]
                                                 for t in study.trials}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_swallowed_by_a_gc_callback_still_stops_the_loop() -> None:
    """Python only prints an exception raised in a garbage-collector callback; the signal is
    remembered, and the tuning loop's next turn raises it (tuning.study.run_trials)."""
    import gc

    from tracking.cli import raise_if_interrupted, sigterm_as_interrupt

    def interrupt_during_gc(phase: str, info: dict) -> None:
        if phase == "start":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the handler runs here, inside the callback

    with sigterm_as_interrupt():
        gc.callbacks.append(interrupt_during_gc)
        try:
            gc.collect()  # the KeyboardInterrupt is swallowed ("Exception ignored")
        finally:
            gc.callbacks.remove(interrupt_during_gc)
        with pytest.raises(KeyboardInterrupt, match="Ctrl-C"):
            raise_if_interrupted()
    with sigterm_as_interrupt():
        raise_if_interrupted()  # a new block starts with nothing pending
