"""The fair study (--tune-budget): every model tuned with the same budget on one split, then
recipe and tuned over new seeds, its work shared by any number of workers through Optuna's
storage; the report and the promotion of its best tuned model."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import replace
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.trial import TrialState

from tracking.comparison.groups import TUNED
from tracking.comparison.promotion import PromoteError, format_promotion, promote
from tracking.comparison.report import Report, build_report, log_report
from tracking.config import ConfigError
from tracking.data.dataset import Dataset
from tracking.store.connect import ensure_experiment, masked
from tracking.store.lifecycle import RUN_KIND_TAG, StopRun, launched_experiment, tracked_run
from tracking.store.ui import publish_runs_view, runs_table_url
from tracking.study.config import STUDY_KIND, TASK_TAG, StudyConfig
from tracking.study.steps import final_runs, load, run_tuning, train_one
from tuning.storage import default_storage, storage_lock
from tuning.study import WAIT_POLL_SECONDS
from tuning.work_queue import TASK_ATTR, WorkQueue


def run_fair_study(config: StudyConfig, *, first_data: Dataset | None = None
                   ) -> dict[str, Any]:
    """One worker of the fair study `config.fair_study_name()` in `config.storage`: any number
    of workers, started anywhere with the same command, share its work through Optuna.

    1. Tuning: every model's study (`<name>.<model>`) in turn, its --tune-budget trials drawn
       by whichever worker is free (Optuna's own distributed tuning); a worker whose model has
       no trial left waits for the trials still running elsewhere (and reclaims those of dead
       workers), so every worker sees each study's final best trial.
    2. The final runs (every model at its recipe and tuned, over the seeds): a queue of tasks
       in the storage (`tuning.work_queue`), each taken by one worker, a dead worker's put back.
    3. The report and the promotion: once, by the worker that finds every task done first.
    Every MLflow run (tuning parents, trials, final runs) is nested under the study's one
    parent run, made by its first worker (under `mlflow run`: the launched run). A worker
    that comes after the report exits saying so. Returns what `run_comparison_study` returns,
    plus `nothing_to_do` (a line, else "") and `workers_seen`; report and promotion are None
    in a worker that did not write them. Raises ConfigError when the study in the storage
    was started with other settings.
    """
    started = time.monotonic()
    config = replace(config, experiment=launched_experiment(config.experiment))
    storage, name = config.storage or default_storage(), config.fair_study_name()
    queue = WorkQueue.open(storage, name)
    worker = f"{socket.gethostname()}-{os.getpid()}"
    parent_id = study_parent(queue, config, name)
    workers = queue.add_worker(worker)
    result: dict[str, Any] = {"parent_run_id": parent_id, "run_ids": [], "failed": {},
                              "tuning": {}, "report": None, "promotion": None,
                              "nothing_to_do": "", "workers_seen": workers, "study_name": name}
    if queue.attrs().get("report_done"):
        result["nothing_to_do"] = f"study {name} is complete; its report is on run {parent_id}"
        result["study_seconds"] = time.monotonic() - started
        return result
    data = first_data or load(config, config.split_seed)
    # one split for every study and run; the test split only for the final runs
    tuning = {m: run_tuning(config, parent_id, m, data, storage=storage,
                            study_name=f"{name}.{m}") for m in config.models}
    plan = [item for seed in config.seed_list() for item in final_runs(config, seed, tuning)]
    queue.enqueue_once([{"index": i, "run_name": c.run_name} for i, (c, _) in enumerate(plan)])
    while True:
        task = queue.claim()
        if task is None:
            progress = queue.progress()
            if progress["running"] == 0 and progress["waiting"] == 0:
                break
            time.sleep(WAIT_POLL_SECONDS)  # the others' runs; a dead worker's come back
            continue
        run_config, tags = plan[task.spec["index"]]
        tags = {**(tags or {}), MLFLOW_PARENT_RUN_ID: parent_id, TASK_TAG: str(task.number)}
        with task.heartbeat():
            try:
                run_id = train_one(run_config, data, tags)
            except StopRun as stop:
                queue.finish(task, state=TrialState.FAIL, stop_reason=stop.reason[:500])
            else:
                queue.finish(task, mlflow.get_run(run_id).data.metrics["test_accuracy"],
                             run_id=run_id)
    for trial in queue.results():
        spec = json.loads(trial.user_attrs[TASK_ATTR])
        if "run_id" in trial.user_attrs:
            result["run_ids"].append(trial.user_attrs["run_id"])
        else:
            result["failed"][spec["run_name"]] = trial.user_attrs.get(
                "stop_reason", trial.user_attrs.get("lost", "failed"))
    close_lost_runs(queue, parent_id)
    result["tuning"] = tuning
    if not queue.claim_once("report_by", worker):
        result["nothing_to_do"] = (f"study {name}: every run is done; another worker "
                                   f"({queue.attrs()['report_by']}) writes the report")
        result["study_seconds"] = time.monotonic() - started
        return result
    result["workers_seen"] = len(queue.attrs().get("workers", [worker]))
    with tracked_run(config.experiment, f"study-{config.dataset}", run_id=parent_id) as parent:
        experiment_id = parent.info.experiment_id
        log_budgets(tuning)
        if result["failed"]:
            mlflow.set_tag("failed_runs", "; ".join(f"{k}: {v}"
                                                    for k, v in result["failed"].items()))
        report = build_report([experiment_id], config.output, parent_run_id=parent_id,
                              title=f"{config.experiment} / study-{config.dataset}")
        log_report(report)
        if config.promote:
            result["promotion"] = promote_best(report)
        mlflow.log_metrics({"study_seconds": time.time() - queue.attrs()["started_at"],
                            "workers_seen": result["workers_seen"]})
        publish_runs_view(experiment_id, expanded=[parent_id])
        mlflow.set_tag("runs_table", runs_table_url(experiment_id))
    queue.set_attr("report_done", parent_id)
    result.update(report=report, study_seconds=time.monotonic() - started)
    return result


def study_parent(queue: WorkQueue, config: StudyConfig, name: str) -> str:
    """The fair study's MLflow parent run, made by its first worker (under the storage lock):
    the launched run under `mlflow run`, else a new run `study-<dataset>`. Raises ConfigError
    when the study was started with other settings."""
    settings = json.dumps(config.to_params(), sort_keys=True)
    client = mlflow.MlflowClient()
    launched = os.environ.pop("MLFLOW_RUN_ID", None)  # mlflow run's: not resumed by train()
    with storage_lock(queue.url):
        attrs = queue.attrs()
        if attrs.get("settings", settings) != settings:
            raise ConfigError(f"study {name} in {masked(queue.url)} was started with other "
                              "settings; give this one its own --study-name")
        parent_id = attrs.get("parent_run_id")
        if parent_id is None:
            tags = {RUN_KIND_TAG: STUDY_KIND, "dataset": config.dataset, "study_name": name,
                    "optuna_storage": masked(queue.url)}
            if launched:
                for key, value in tags.items():
                    client.set_tag(launched, key, value)
                parent_id = launched
            else:
                parent_id = client.create_run(ensure_experiment(config.experiment), tags=tags,
                                              run_name=f"study-{config.dataset}").info.run_id
            known = client.get_run(parent_id).data.params
            client.log_batch(parent_id, params=[Param(k, v) for k, v in {
                **config.to_params(), "study_name": name}.items() if k not in known])
            queue.set_attr("settings", settings)
            queue.set_attr("started_at", time.time())
            queue.set_attr("parent_run_id", parent_id)
        elif launched and launched != parent_id:  # another worker's mlflow run: a worker row
            client.set_tag(launched, MLFLOW_PARENT_RUN_ID, parent_id)
            client.set_tag(launched, RUN_KIND_TAG, "study_worker")
    return parent_id


def close_lost_runs(queue: WorkQueue, parent_id: str) -> None:
    """End KILLED, with stop_reason, the final runs whose task was reclaimed from a dead
    worker (MLflow's state for a run whose process was killed)."""
    client = mlflow.MlflowClient()
    lost = [t for t in queue.trials((TrialState.FAIL,)) if "lost" in t.user_attrs]
    experiment = client.get_run(parent_id).info.experiment_id if lost else ""
    for trial in lost:
        for run in client.search_runs([experiment], f"tags.{TASK_TAG} = '{trial.number}' and "
                                                    f"attributes.status = 'RUNNING'"):
            if run.data.tags.get(MLFLOW_PARENT_RUN_ID) == parent_id:
                client.set_tag(run.info.run_id, "stop_reason",
                               f"worker lost: {trial.user_attrs['lost']}")
                client.set_terminated(run.info.run_id, "KILLED")


def log_budgets(tuning: dict[str, dict[str, Any] | None]) -> None:
    """What each model's tuning study spent, as metrics of the study's run."""
    for model, summary in tuning.items():
        if summary is None:
            continue
        mlflow.log_metrics({f"{key}.{model}": float(summary[key]) for key in (
            "trials_complete", "trials_pruned", "trials_fail", "trial_epochs",
            "trial_seconds")})


def promote_best(report: Report) -> Any:
    """tracking.promote for the tuned model with the best mean validation accuracy (chosen
    on validation, so the test split judges it unbiased), with all its runs; the decision
    is tagged on the study's run. None when nothing was tuned or the promotion is refused
    (another test split than the champion's: the tag `promotion` says so)."""
    tuned = [g for g in report.groups if g.variant == TUNED
             and all(r.best_val_accuracy is not None for r in g.runs)]
    if not tuned:
        return None
    best = max(tuned, key=lambda g: np.mean([r.best_val_accuracy for r in g.runs]))
    lead = max(best.runs, key=lambda r: r.best_val_accuracy)
    try:
        promotion = promote(lead.run_id, [r.run_id for r in best.runs])
    except PromoteError as err:
        mlflow.set_tag("promotion", f"refused: {err}"[:5000])
        print(f"study: promotion refused: {err}", file=sys.stderr)
        return None
    mlflow.set_tag("promotion", format_promotion(promotion)[:5000])
    print(f"study: {format_promotion(promotion)}", file=sys.stderr)
    return promotion
