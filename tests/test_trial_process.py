"""Each trial in its own process (`--trial-process`, tuning.trial_process), against real MLflow
and Optuna stores: the trials' runs come from processes of their own, nested and tagged as in
process; the pruner reaches into the child; a trial whose process dies fails alone and the
worker goes on; SIGTERM to the worker stops the child and ends its run KILLED.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from tuning.config import TuneConfig
from tuning.objective import INTERRUPTED_ATTR, WORKER_RSS_ATTR
from tuning.study import run_tuning_study
from tuning.trial_process import PEAK_RSS_ATTR

REPO = Path(__file__).resolve().parents[1]
TINY = dict(model="concat_cnn", limit=200, max_epochs=2, experiment="tune",
            trial_process=True)

# a factory whose first build inside a trial process kills that process once its MLflow run
# has started, as the OOM killer would; every later build (and any build in the worker) is an
# ordinary concat_cnn
DYING_FACTORY = '''
import multiprocessing, os, signal, threading, time
from pathlib import Path
import mlflow
from models import MODELS
_spec = MODELS["concat_cnn"]
recipe, min_image_size = _spec.recipe, _spec.min_image_size
def _die_in_training():  # once this process's run is in the store (active runs are per thread)
    client = mlflow.MlflowClient()
    while not client.search_runs([e.experiment_id for e in client.search_experiments()],
                                 f"tags.pid = '{os.getpid()}'"):
        time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGKILL)
def build(input_shape, classes, **options):
    marker = Path(os.environ["DYING_MARKER"])
    if multiprocessing.current_process().name.startswith("trial-") and not marker.exists():
        marker.write_text(str(os.getpid()))
        threading.Thread(target=_die_in_training, daemon=True).start()
    return _spec.factory(input_shape=input_shape, classes=classes, **options)
build.recipe, build.min_image_size = recipe, min_image_size
'''


def study_trials(name: str, tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna.db'}"
                             ).get_trials(deepcopy=False)


def trial_runs(parent_run_id: str) -> list[mlflow.entities.Run]:
    client = mlflow.MlflowClient()
    experiment = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment],
                              f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


def test_each_trial_runs_in_a_process_of_its_own_nested_as_in_process(
        mlflow_uri: str, tmp_path: Path) -> None:
    summary = run_tuning_study(TuneConfig(**TINY, n_trials=2, study_name="own"))
    trials = study_trials("own", tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    runs = trial_runs(summary["parent_run_id"])
    assert sorted(r.info.run_name for r in runs) == ["trial-0", "trial-1"]
    pids = {r.data.tags["pid"] for r in runs}
    assert len(pids) == 2 and str(os.getpid()) not in pids  # one process per trial
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["trial_state"] == "COMPLETE"
        assert run.data.tags["study_name"] == "own"
        assert "val_accuracy" in run.data.metrics
    for trial in trials:
        assert trial.user_attrs[PEAK_RSS_ATTR] > 0 and trial.user_attrs[WORKER_RSS_ATTR] > 0
        assert trial.intermediate_values  # the child reported every epoch to the trial
    parent = mlflow.get_run(summary["parent_run_id"])
    assert parent.data.params["trial_process"] == "true"
    assert summary["best_value"] == max(t.value for t in trials)


@pytest.mark.slow
def test_the_pruner_prunes_inside_the_trial_process(mlflow_uri: str, tmp_path: Path) -> None:
    # nothing reaches an accuracy of 2: every trial pruned at its first report
    summary = run_tuning_study(TuneConfig(**TINY, n_trials=2, study_name="pruned",
                                          final_test=False),
                               pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    trials = study_trials("pruned", tmp_path)
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    assert [sorted(t.intermediate_values) for t in trials] == [[1], [1]]
    runs = trial_runs(summary["parent_run_id"])
    assert {(r.info.status, r.data.tags["trial_state"]) for r in runs} == {("KILLED", "PRUNED")}
    assert all("pruned at epoch 1" in r.data.tags["stop_reason"] for r in runs)


@pytest.mark.slow
def test_a_trial_whose_process_dies_fails_alone(mlflow_uri: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dying_nets.py").write_text(DYING_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))  # the trial processes inherit sys.path
    monkeypatch.setenv("DYING_MARKER", str(tmp_path / "died"))
    summary = run_tuning_study(TuneConfig(**{**TINY, "model": "dying_nets:build"},
                                          n_trials=1, study_name="dies", final_test=False))
    trials = study_trials("dies", tmp_path)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    # a failed trial does not count towards n_trials: the worker went on to the next one
    assert summary["worker_trials"] == 2
    dead_pid = (tmp_path / "died").read_text()
    runs = {r.info.run_name: r for r in trial_runs(summary["parent_run_id"])}
    lost = runs["trial-0"]
    assert lost.data.tags["pid"] == dead_pid
    assert lost.info.status == "FAILED"
    assert lost.data.tags["stop_reason"] == "trial 0: its process died (killed by SIGKILL)"
    assert lost.data.tags["trial_state"] == "FAIL"
    assert runs["trial-1"].info.status == "FINISHED"


@pytest.mark.slow
def test_sigterm_to_the_worker_stops_its_trial_process(mlflow_uri: str, tmp_path: Path) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "tuning", "--model", "concat_cnn", "--limit", "600",
         "--max-epochs", "30", "--n-trials", "1", "--trial-process", "--experiment", "tune",
         "--study-name", "stopped"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    client = mlflow.MlflowClient()
    deadline = time.monotonic() + 300
    trial_run = None
    while trial_run is None and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(2)
        experiment = client.get_experiment_by_name("tune")
        if experiment is not None:
            found = client.search_runs([experiment.experiment_id],
                                       "tags.trial_number = '0' and metrics.loss >= 0")
            trial_run = found[0] if found else None  # its first epoch is logged
    assert trial_run is not None, worker.communicate()[1][-3000:]
    child = int(trial_run.data.tags["pid"])
    assert child != worker.pid
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=240)
    assert worker.returncode == 143, err[-3000:]
    assert "resume with --study-name stopped" in err
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the trial process is gone too
    run = client.get_run(trial_run.info.run_id)
    assert run.info.status == "KILLED" and run.data.tags["trial_state"] == "FAIL"
    (trial,) = study_trials("stopped", tmp_path)
    assert trial.state == TrialState.FAIL and trial.user_attrs[INTERRUPTED_ATTR]
