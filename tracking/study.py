"""The whole study in one command: every model, several seeds, optional tuning, one report.

    python -m tracking.study [--dataset fashion_mnist] [--seeds 3] [--tune]
    python -m tracking.study --tune-budget 6x8 --seeds 3 [--pruner hyperband]   # the fair one
    mlflow run . -e study -P dataset=fashion_mnist [-P seeds=3] [-P tune_budget=6x8]

One parent run (`study-<dataset>`, tagged `run_kind=study`) holds a nested training run per
model and seed (`<model>-<dataset>-seed<k>`, seeds 0..N-1, each model at its recipe). With
--tune the ResNet-50 study of `tuning.optuna_resnet` runs as well and is filed under the
parent. Last, `tracking.compare` judges the nested runs (mean ± sd per model, whether each
gap exceeds the seed-to-seed spread, every pair on the same test images, the classes each
model gets wrong) and the report (`comparison.md` and its figures) is logged to the parent
and written to --output.

The fair study (--tune-budget TRIALSxMAX_EPOCHS): every model gets one Optuna study with the
same number of trials, the same epoch bound, the same pruner and seeds per trial, all on one
data split (the splits of --split-seed, whose seed and the next seeds_per_trial - 1 the trials
train with); the trials never see the test split. Then every model is trained at its recipe
and at its best tuned setting over --seeds new seeds (after the tuning seeds), on that same
split, tagged `study_variant` recipe / tuned: the only runs scored on the test split. The
report ranks the tuned models, sets each against its recipe and says what each tuning study
spent; the tuned model with the best mean validation accuracy is then put to
`tracking.promote` (champion or challenger of `<dataset>-classifier`) unless --promote false.

--models, --epochs and --limit shrink the study for smoke tests. Bad settings exit with
status 2 before any run exists; a model whose training is stopped (a NaN loss) is reported and
the study goes on with the others.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow.entities import Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.trial import TrialState

from models import MODELS
from tracking.cli import (
    CommandParser,
    auto_or_number,
    bad_input_exits,
    boolean,
    interrupt_status,
    number,
    output_folder,
    sigterm_as_interrupt,
    unquote,
)
from tracking.comparison.groups import RECIPE, TUNED, VARIANT_TAG
from tracking.comparison.promotion import PromoteError, format_promotion, promote
from tracking.comparison.report import Report, build_report, log_report
from tracking.comparison.selection import CompareError
from tracking.config import Config, ConfigError, check_model, load_for, param_text
from tracking.data.dataset import Dataset
from tracking.store.connect import check_artifact_location, ensure_experiment, masked
from tracking.store.lifecycle import RUN_KIND_TAG, StopRun, launched_experiment, tracked_run
from tracking.store.ui import publish_runs_view, run_url, runs_table_url
from tracking.training.loop import train
from tracking.training.provenance import log_params_once
from tuning.config import PRUNERS, TuneConfig
from tuning.space import trial_config
from tuning.storage import check_storage, default_storage, storage_lock
from tuning.study import WAIT_POLL_SECONDS, run_tuning_study
from tuning.work_queue import TASK_ATTR, WorkQueue

STUDY_KIND = "study"  # value of the run_kind tag on the parent run
TASK_TAG = "study_task"  # a fair study's final run: its task's number in the work queue
DEFAULT_MODELS = tuple(MODELS)  # every registered model (the original four)
DEFAULT_OUTPUT = os.path.join("outputs", "study")
FAIR_OUTPUT = os.path.join("outputs", "fair_study")  # --tune-budget: not over a plain study's


@dataclass(frozen=True)
class StudyConfig:
    dataset: str = "digits"  # key in tracking.data.loaders.LOADERS
    data_dir: str = ""  # folder data, or where Fashion-MNIST's IDX files are
    models: tuple[str, ...] = DEFAULT_MODELS  # trained in this order for every seed
    seeds: int = 3  # runs per model, seeds 0..seeds-1: the error bars
    epochs: int | None = None  # None = each model's recipe (early stopping may end sooner)
    limit: int = 0  # keep at most this many images, split afterwards (0 = all); for smoke runs
    tune: bool = False  # also run the ResNet-50 Optuna study (tuning.optuna_resnet)
    tune_trials: int = 20  # its total trials
    tune_max_epochs: int = 10  # upper bound of its tuned epochs
    tune_model: str = "resnet50"  # the model tuned (another one only for quick tests)
    precision: str = "auto"  # Keras dtype policy of every run (tracking.precision)
    experiment: str = Config().experiment  # MLflow experiment
    output: str = DEFAULT_OUTPUT  # folder for comparison.md and the figures
    tune_budget: tuple[int, int] | None = None  # (trials, max epochs) per model: fair study
    pruner: str = "median"  # of every tuning study (tuning.config.PRUNERS)
    seeds_per_trial: int = 1  # seeds each trial trains (its value is their mean)
    split_seed: int = 0  # fair study: the one data split, and the tuning's first seed
    promote: bool = True  # fair study: champion or challenger for its best tuned model
    storage: str = ""  # fair study: the Optuna storage its workers share ("" = optuna.db)
    study_name: str = ""  # fair study: its name there ("" = fair-<dataset>-<settings digest>)
    # each tuning trial in its own process (tuning.trial_process); this worker's choice, not
    # part of the study's identity (to_params): workers may differ in it
    trial_process: bool = TuneConfig.trial_process

    def __post_init__(self) -> None:
        for name in ("seeds", "tune_trials", "tune_max_epochs", "seeds_per_trial"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.tune_budget is not None and (
                len(self.tune_budget) != 2 or any(
                    not isinstance(v, int) or isinstance(v, bool) or v < 1
                    for v in self.tune_budget)):
            raise ConfigError(f"tune_budget must be two positive integers (trials, max "
                              f"epochs), got {self.tune_budget!r}")
        if self.tune_budget is not None and self.tune:
            raise ConfigError("--tune (ResNet-50 alone) and --tune-budget (every model) "
                              "exclude each other")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"pruner must be one of {', '.join(PRUNERS)}, got "
                              f"{self.pruner!r}")
        if not isinstance(self.split_seed, int) or self.split_seed < 0:
            raise ConfigError(f"split_seed must be a non-negative integer, got "
                              f"{self.split_seed!r}")
        if not self.models:
            raise ConfigError("models must name at least one model")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"models must not repeat, got {','.join(self.models)}")

    @property
    def fair(self) -> bool:
        return self.tune_budget is not None

    def seed_list(self) -> list[int]:
        """The training seeds of the runs scored on the test split: 0..N-1, or in the fair
        study the N seeds after the tuning's (split_seed .. split_seed + seeds_per_trial - 1)."""
        first = self.split_seed + self.seeds_per_trial if self.fair else 0
        return list(range(first, first + self.seeds))

    def run_configs(self, seed: int, variant: str = "") -> list[Config]:
        """The training Config of every model for one seed (raises ConfigError on bad input);
        in the fair study all on the split of split_seed, named by `variant`."""
        fair = {"split_seed": self.split_seed} if self.fair else {}
        tail = f"-{variant}" if variant else ""
        return [Config(model=m, dataset=self.dataset, data_dir=self.data_dir, epochs=self.epochs,
                       seed=seed, limit=self.limit, experiment=self.experiment,
                       precision=self.precision, **fair,
                       run_name=f"{m}-{self.dataset}{tail}-seed{seed}") for m in self.models]

    def fair_study_name(self) -> str:
        """The fair study's name in its storage: --study-name, else one derived from every
        setting that changes its result, so workers started with one command meet."""
        if self.study_name:
            return self.study_name
        settings = json.dumps(self.to_params(), sort_keys=True).encode()
        return f"fair-{self.dataset}-{hashlib.md5(settings, usedforsecurity=False).hexdigest()[:8]}"

    def to_params(self) -> dict[str, str]:
        return {"dataset": self.dataset, "data_dir": self.data_dir,
                "models": ",".join(self.models), "seeds": str(self.seeds),
                "epochs": param_text(self.epochs), "limit": str(self.limit),
                "tune": param_text(self.tune), "tune_trials": str(self.tune_trials),
                "tune_max_epochs": str(self.tune_max_epochs), "tune_model": self.tune_model,
                "precision": self.precision,
                "tune_budget": "x".join(map(str, self.tune_budget or ())) or "none",
                "pruner": self.pruner, "seeds_per_trial": str(self.seeds_per_trial),
                "split_seed": str(self.split_seed),
                "final_seeds": ",".join(map(str, self.seed_list()))}


def load(config: StudyConfig, seed: int) -> Dataset:
    """The data of one seed's runs (the fair study: the one split, whatever the seed)."""
    return load_for(config.run_configs(seed)[0])


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


def train_one(run_config: Config, data: Dataset, tags: dict[str, str] | None) -> str:
    """One of the study's training runs (a fresh Keras session); its run id. Raises StopRun
    when the run was stopped (a NaN loss), said on stderr."""
    keras.backend.clear_session()
    print(f"study: training {run_config.run_name}", file=sys.stderr, flush=True)
    try:
        return train(run_config, data, tags=tags)["run_id"]
    except StopRun as stop:
        print(f"study: {run_config.run_name} stopped: {stop.reason}", file=sys.stderr)
        raise


# --------------------------------------------------------------------------- the fair study


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


def final_runs(config: StudyConfig, seed: int, tuning: dict[str, dict[str, Any] | None]
               ) -> list[tuple[Config, dict[str, str] | None]]:
    """(Config, tags) of one seed's runs: every model at its recipe; in the fair study also
    every model at its best tuned setting (when its study completed a trial)."""
    if not config.fair:
        return [(c, None) for c in config.run_configs(seed)]
    out = []
    for recipe, tuned in zip(config.run_configs(seed, RECIPE), config.run_configs(seed, TUNED),
                             strict=True):
        out.append((recipe, {VARIANT_TAG: RECIPE}))
        summary = tuning.get(recipe.model)
        if summary and summary.get("best_params"):
            # the study's epochs bound the tuned run, not --epochs (which shrinks recipes)
            point = dict(summary["best_params"])
            out.append((trial_config(replace(tuned, epochs=None), point, tuned.run_name),
                        {VARIANT_TAG: TUNED, "tuning_run_id": summary["parent_run_id"],
                         "tuned_trial": str(summary["best_trial"])}))
    return out


def log_budgets(tuning: dict[str, dict[str, Any] | None]) -> None:
    """What each model's tuning study spent, as metrics of the study's run."""
    for model, summary in tuning.items():
        if summary is None:
            continue
        mlflow.log_metrics({f"{key}.{model}": float(summary[key]) for key in (
            "trials_complete", "trials_pruned", "trials_fail", "trial_epochs",
            "trial_seconds")})


def run_tuning(config: StudyConfig, parent_run_id: str, model: str,
               data: Dataset | None = None, *, storage: str = "", study_name: str = ""
               ) -> dict[str, Any] | None:
    """The Optuna study of `model` (tuning.study), its run nested in the study's: in the fair
    study with its budget on the split of `data`, the test split left to the final runs, in
    the shared `storage` as `study_name`, waiting for the trials other workers still run.

    Returns its summary, None if tuning failed (the trained models still get their report;
    the reason is tagged on the study's run).
    """
    trials, max_epochs = config.tune_budget or (config.tune_trials, config.tune_max_epochs)
    tune = TuneConfig(model=model, dataset=config.dataset, data_dir=config.data_dir,
                      n_trials=trials, max_epochs=max_epochs,
                      study_name=study_name or f"{model}-{config.dataset}-study-"
                                               f"{parent_run_id[:8]}",
                      storage=storage, experiment=config.experiment, limit=config.limit,
                      precision=config.precision, pruner=config.pruner,
                      seeds_per_trial=config.seeds_per_trial,
                      seed=config.split_seed if config.fair else 0,
                      final_test=not config.fair, wait_for_running=config.fair,
                      trial_process=config.trial_process)
    print(f"study: tuning {tune.model} ({tune.n_trials} trial{'' if tune.n_trials == 1 else 's'})",
          file=sys.stderr, flush=True)
    client = mlflow.MlflowClient()  # the parent may be another worker's, not active here
    try:
        summary = run_tuning_study(tune, data=data, parent_run_id=parent_run_id)
    except Exception as err:  # noqa: BLE001 - the trained models still get their report
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:250]
        client.set_tag(parent_run_id, f"tuning_failed.{model}" if config.fair
                       else "tuning_failed", reason)
        print(f"study: tuning {model} failed ({reason}); reporting the training runs",
              file=sys.stderr)
        return None
    client.set_tag(parent_run_id, f"tuning_run_id.{model}" if config.fair else "tuning_run_id",
                   summary["parent_run_id"])
    return summary


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


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    d = StudyConfig()
    p = CommandParser(prog="python -m tracking.study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=d.dataset)
    p.add_argument("--data-dir", default=d.data_dir)
    p.add_argument("--seeds", type=number(int, "seeds"), default=d.seeds,
                   help="runs per model (seeds 0..N-1; the fair study: the N seeds after the "
                        "tuning's)")
    p.add_argument("--tune", type=boolean("tune"), nargs="?", const=True, default=d.tune,
                   help="also run the ResNet-50 Optuna study")
    p.add_argument("--tune-trials", type=number(int, "tune trials"), default=d.tune_trials)
    p.add_argument("--tune-max-epochs", type=number(int, "tune max epochs"),
                   default=d.tune_max_epochs)
    p.add_argument("--tune-model", default=d.tune_model, help=argparse.SUPPRESS)
    p.add_argument("--models", default=",".join(d.models),
                   help="comma-separated models (default: all four)")
    p.add_argument("--epochs", type=auto_or_number(int, "epochs"), default=d.epochs,
                   help="maximum epochs for every model (default: each recipe)")
    p.add_argument("--limit", type=number(int, "limit"), default=d.limit,
                   help="keep at most this many images, split afterwards (0 = all)")
    p.add_argument("--experiment", default=d.experiment,
                   help="MLflow experiment (with mlflow run: --experiment-name)")
    p.add_argument("--precision", default=d.precision,
                   help="float32, mixed_bfloat16, mixed_float16 or auto, for every run")
    p.add_argument("--output", default=None, type=report_folder,
                   help=f"folder for comparison.md and figures (default auto: {DEFAULT_OUTPUT}, "
                        f"with --tune-budget {FAIR_OUTPUT})")
    p.add_argument("--tune-budget", type=budget, default=d.tune_budget,
                   metavar="TRIALSxMAX_EPOCHS",
                   help="the fair study: every model tuned with this many trials of at most "
                        "this many epochs (e.g. 6x8), then recipe and tuned over --seeds")
    p.add_argument("--pruner", default=d.pruner,
                   help=f"of every tuning study: {', '.join(PRUNERS)}")
    p.add_argument("--seeds-per-trial", type=number(int, "seeds per trial"),
                   default=d.seeds_per_trial, help="seeds each tuning trial trains (mean)")
    p.add_argument("--split-seed", type=number(int, "split seed"), default=d.split_seed,
                   help="fair study: seed of the one data split (and the tuning's first seed)")
    p.add_argument("--promote", type=boolean("promote"), nargs="?", const=True,
                   default=d.promote,
                   help="fair study: champion or challenger for its best tuned model "
                        "(tracking.promote); false: register nothing")
    p.add_argument("--storage", default=d.storage, type=unquote,
                   help="fair study: the Optuna storage its workers share, e.g. "
                        "postgresql://user:pw@host/db (default: optuna.db next to the MLflow "
                        "store); start the same command on N machines, or N times")
    p.add_argument("--trial-process", type=boolean("trial-process"), nargs="?", const=True,
                   default=d.trial_process, metavar="BOOL",
                   help="each tuning trial in its own process (docs/tuning.md#each-trial-in-"
                        "its-own-process)")
    p.add_argument("--study-name", default=d.study_name, type=unquote,
                   help="fair study: its name in the storage (default: fair-<dataset>-<digest "
                        "of the settings>, so identical commands join one study)")
    return p


def budget(text: str) -> tuple[int, int] | None:
    """argparse type: TRIALSxMAX_EPOCHS (6x8) as (6, 8); "", none or 0 for no budget."""
    value = unquote(text).lower()
    if value in ("", "none", "0"):
        return None
    trials, _, epochs = value.partition("x")
    try:
        return int(trials), int(epochs)
    except ValueError:
        raise argparse.ArgumentTypeError(f"tune budget must be TRIALSxMAX_EPOCHS such as 6x8, "
                                         f"got {text!r}") from None


def default_output(tune_budget: tuple[int, int] | None) -> str:
    """The report folder when --output is auto: a fair study's apart from a plain study's."""
    return FAIR_OUTPUT if tune_budget else DEFAULT_OUTPUT


def report_folder(text: str) -> str | None:
    """argparse type of --output: "auto" (or empty) for the default folder, else a folder
    (`tracking.cli.output_folder`)."""
    return None if unquote(text).strip().lower() in ("", "auto") else output_folder(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: bad settings exit 2 before any run; prints the report's path and ranking."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with bad_input_exits(parser):
        models = tuple(m.strip() for m in unquote(args.models).split(",") if m.strip())
        config = StudyConfig(dataset=unquote(args.dataset), data_dir=unquote(args.data_dir),
                             models=models, seeds=args.seeds, epochs=args.epochs,
                             limit=args.limit, tune=args.tune, tune_trials=args.tune_trials,
                             tune_max_epochs=args.tune_max_epochs,
                             tune_model=unquote(args.tune_model),
                             precision=unquote(args.precision),
                             experiment=unquote(args.experiment),
                             output=args.output or default_output(args.tune_budget),
                             tune_budget=args.tune_budget, pruner=unquote(args.pruner),
                             seeds_per_trial=args.seeds_per_trial, split_seed=args.split_seed,
                             promote=args.promote, storage=unquote(args.storage),
                             study_name=unquote(args.study_name))
        if (config.storage or config.study_name) and not config.fair:
            raise ConfigError("--storage and --study-name are the fair study's: add "
                              "--tune-budget TRIALSxMAX_EPOCHS")
        if config.fair:
            check_storage(config.storage or default_storage())
        for seed in config.seed_list():
            config.run_configs(seed)  # validates every run before any starts
        # the experiment not deleted, its artifact location writable
        check_artifact_location(ensure_experiment(launched_experiment(config.experiment)))
        first = load(config, config.seed_list()[0])
        for run_config in config.run_configs(config.seed_list()[0]):
            check_model(run_config, first)  # a factory by import path builds and fits
    with sigterm_as_interrupt():  # `kill` ends the runs like Ctrl-C
        try:
            result = run_comparison_study(config, first_data=first)
        except KeyboardInterrupt as stop:
            print("interrupted: the study's runs are marked KILLED", file=sys.stderr)
            return interrupt_status(stop)
        except CompareError as err:  # every training run was stopped
            print(f"error: {err}", file=sys.stderr)
            return 1
    if result.get("nothing_to_do"):
        print(f"study: {result['nothing_to_do']}; this worker ({result['workers_seen']} seen) "
              "has nothing left to do", file=sys.stderr)
        return 0
    report = result["report"]
    print(report.markdown)
    if result["promotion"] is not None:
        print(format_promotion(result["promotion"]))
    runs = len(result["run_ids"])
    print(f"study: parent run {result['parent_run_id']}, {runs} run{'' if runs == 1 else 's'}, "
          f"{len(result['failed'])} stopped, {result['study_seconds']:.0f} s; "
          f"report {report.path.resolve()}", file=sys.stderr)
    parent = mlflow.get_run(result["parent_run_id"]).info
    print(f"run page of the study's parent run: {run_url(parent.experiment_id, parent.run_id)}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
