"""The fair study on several workers sharing one Optuna storage on a real PostgreSQL server:
two workers at once do the work of one (equal budgets, each final run once, one report, one
promotion), a late worker leaves saying so, and a worker SIGKILLed mid-run is reclaimed."""

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
from processes import postgres_server, postgres_unavailable

REPO = Path(__file__).resolve().parents[1]
TINY = ["--models", "concat_cnn,vgg19", "--tune-budget", "2x1", "--seeds", "1", "--epochs",
        "1", "--limit", "200", "--promote", "true"]
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)

pytestmark = [pytest.mark.slow, pytest.mark.postgres,
              pytest.mark.skipif(bool(postgres_unavailable()),
                                 reason=postgres_unavailable() or "ok")]


def worker(tmp_path: Path, storage: str, name: str, experiment: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        [sys.executable, "-m", "tracking.study", *TINY, "--storage", storage, "--study-name",
         name, "--experiment", experiment, "--output", str(tmp_path / name)],
        env=env, cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finished(*workers: subprocess.Popen) -> list[str]:
    outputs = [w.communicate(timeout=1200)[0] for w in workers]
    for w, out in zip(workers, outputs, strict=True):
        assert w.returncode == 0, out[-4000:]
    return outputs


def counts(storage: str, name: str) -> dict[str, object]:
    """Per model: the tuning trials counted; the final tasks' run names and states."""
    tuning = {model: sorted(t.state.name for t in optuna.load_study(
        study_name=f"{name}.{model}", storage=storage).trials if t.state in COUNTED)
              for model in ("concat_cnn", "vgg19")}
    queue = optuna.load_study(study_name=name, storage=storage)
    tasks = sorted((t.user_attrs["task"], t.state.name) for t in queue.trials)
    return {"tuning": {m: len(s) for m, s in tuning.items()}, "tasks": tasks,
            "workers": len(queue.user_attrs["workers"])}


def study_runs(experiment: str) -> tuple[mlflow.entities.Run, list[mlflow.entities.Run]]:
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    (parent,) = client.search_runs([exp.experiment_id], "tags.run_kind = 'study'")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    return parent, runs


def test_two_workers_do_one_workers_study_and_a_late_one_leaves(mlflow_uri: str,
                                                               tmp_path: Path) -> None:
    with postgres_server("fair") as storage:
        started = time.monotonic()
        pair = finished(*(worker(tmp_path, storage, "two", "two-workers") for _ in range(2)))
        two_seconds = time.monotonic() - started
        (late,) = finished(worker(tmp_path, storage, "two", "two-workers"))
        started = time.monotonic()
        finished(worker(tmp_path, storage, "one", "one-worker"))
        one_seconds = time.monotonic() - started
        two, one = counts(storage, "two"), counts(storage, "one")
    print(f"fair study 2x1 of concat_cnn and vgg19: two workers {two_seconds:.0f} s, "
          f"one worker {one_seconds:.0f} s")

    assert "study two is complete; its report is on run" in late and "nothing left" in late
    assert two["tuning"] == one["tuning"] == {"concat_cnn": 2, "vgg19": 2}  # equal budgets
    assert two["tasks"] == one["tasks"] and len(two["tasks"]) == 4  # each final run once
    assert {state for _, state in two["tasks"]} == {"COMPLETE"}
    assert two["workers"] == 3 and one["workers"] == 1
    # one report, written by one of the two workers; the other says who writes it
    assert sum("# Model comparison" in out for out in pair) == 1, pair
    assert sum("another worker" in out and "writes the report" in out for out in pair) == 1
    assert (tmp_path / "two" / "comparison.md").exists()

    for experiment in ("two-workers", "one-worker"):
        parent, runs = study_runs(experiment)
        assert parent.info.status == "FINISHED"
        final = [r for r in runs if "study_variant" in r.data.tags]
        assert sorted(r.info.run_name for r in final) == [
            "concat_cnn-digits-recipe-seed1", "concat_cnn-digits-tuned-seed1",
            "vgg19-digits-recipe-seed1", "vgg19-digits-tuned-seed1"]
        assert {r.data.tags["mlflow.parentRunId"] for r in final} == {parent.info.run_id}
        tuning = [r for r in runs if r.data.tags.get("run_kind") == "tuning"]
        assert {r.data.tags["mlflow.parentRunId"] for r in tuning} == {parent.info.run_id}
        assert parent.data.tags["promotion"].startswith("digits-classifier version ")
    two_parent, _ = study_runs("two-workers")
    assert two_parent.data.metrics["workers_seen"] == 2
    versions = mlflow.MlflowClient().search_model_versions("name = 'digits-classifier'")
    assert len(versions) == 2  # one promotion per study


def test_a_killed_worker_is_reclaimed_and_the_study_completes(mlflow_uri: str,
                                                              tmp_path: Path) -> None:
    with postgres_server("killed") as storage:
        victim = worker(tmp_path, storage, "killed", "killed")
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # until a final run is under way
            time.sleep(1)
            try:
                trials = optuna.load_study(study_name="killed", storage=storage).trials
            except (KeyError, optuna.exceptions.StorageInternalError):
                continue  # not created yet, or the worker is creating Optuna's tables
            if any(t.state == TrialState.RUNNING for t in trials) and mlflow.search_runs(
                    search_all_experiments=True, output_format="list",
                    filter_string="tags.study_task != '' and attributes.status = 'RUNNING'"):
                break  # a task taken, and its MLflow run begun
        else:
            victim.kill()
            pytest.fail("no final run started")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        (out,) = finished(worker(tmp_path, storage, "killed", "killed"))
        trials = optuna.load_study(study_name="killed", storage=storage).trials
    lost = [t for t in trials if "lost" in t.user_attrs]
    assert len(lost) == 1 and "is gone" in lost[0].user_attrs["lost"]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    parent, runs = study_runs("killed")  # nothing left RUNNING
    assert parent.info.status == "FINISHED"
    killed = [r for r in runs if r.info.status == "KILLED" and "study_task" in r.data.tags]
    assert len(killed) == 1 and "worker lost" in killed[0].data.tags["stop_reason"]
    assert "Model comparison" in out
