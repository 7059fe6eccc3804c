"""The whole study's entry (`run_comparison_study`), and the plain study it runs unless
--tune-budget asks for the fair one: every model at its recipe over seeds 0..N-1 under one parent
run, optionally the ResNet-50 Optuna study, then the report."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import keras
import mlflow

from tracking.comparison.report import build_report, log_report
from tracking.data.dataset import Dataset
from tracking.store.lifecycle import RUN_KIND_TAG, StopRun, launched_experiment, tracked_run
from tracking.store.ui import publish_runs_view, runs_table_url
from tracking.study.config import STUDY_KIND, StudyConfig
from tracking.study.fair import run_fair_study
from tracking.study.steps import final_runs, load, run_tuning, train_one
from tracking.training.provenance import log_params_once


def run_comparison_study(config: StudyConfig, *, first_data: Dataset | None = None
                         ) -> dict[str, Any]:
    """Train every model for every seed under one parent run, optionally tune, then compare.

    Under `mlflow run` the launched run (MLFLOW_RUN_ID) is the parent. `first_data` is the
    first seed's data (the fair study's one split). Returns parent_run_id, run_ids, failed
    ({run name: reason}), tuning (the ResNet-50 study's summary or None; in the fair study
    {model: summary or None}), report (the tracking.comparison.report.Report), promotion (the
    fair study's tracking.comparison.promotion.Promotion, or None) and study_seconds.
    """
    if config.fair:
        return run_fair_study(config, first_data=first_data)
    started = time.monotonic()
    config = replace(config, experiment=launched_experiment(config.experiment))
    run_ids: list[str] = []
    failed: dict[str, str] = {}
    tuning: Any = None
    tags = {RUN_KIND_TAG: STUDY_KIND, "dataset": config.dataset}
    with tracked_run(config.experiment, f"study-{config.dataset}", tags=tags) as parent:
        parent_id, experiment_id = parent.info.run_id, parent.info.experiment_id
        log_params_once(config.to_params())
        for seed in config.seed_list():
            data = first_data if seed == 0 and first_data is not None else load(config, seed)
            for run_config, tags in final_runs(config, seed, {}):
                try:
                    run_ids.append(train_one(run_config, data, tags))
                except StopRun as stop:
                    failed[run_config.run_name] = stop.reason
        if failed:
            mlflow.set_tag("failed_runs", "; ".join(f"{k}: {v}" for k, v in failed.items()))
        if config.tune:
            keras.backend.clear_session()
            tuning = run_tuning(config, parent_id, config.tune_model)
        report = build_report([experiment_id], config.output, parent_run_id=parent_id,
                              title=f"{config.experiment} / study-{config.dataset}")
        log_report(report)
        mlflow.log_metric("study_seconds", time.monotonic() - started)
        publish_runs_view(experiment_id, expanded=[parent_id])
        mlflow.set_tag("runs_table", runs_table_url(experiment_id))
    return {"parent_run_id": parent_id, "run_ids": run_ids, "failed": failed,
            "tuning": tuning, "report": report, "promotion": None,
            "study_seconds": time.monotonic() - started}
