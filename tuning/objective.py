"""One trial of a tuning study: train one point of the search space (per seed, each an MLflow
run nested under the worker's run), report each epoch to Optuna's pruner, record the trial's
runs and budget as user attributes. `tuning.study` runs the trials; the study's design (what
the objective is, how seeds are averaged, what the pruner sees) is described there.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import keras
import mlflow
import numpy as np
import optuna
import psutil
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from tracking.config import Config
from tracking.data.dataset import Dataset
from tracking.store.lifecycle import StopRun
from tracking.training.loop import train
from tuning.config import TuneConfig
from tuning.report import (
    BASELINE_ATTR,
    BUDGET_ATTRS,
    MODEL_URI_ATTR,
    OBJECTIVE_METRIC,
    RUN_IDS_ATTR,
    trial_run_ids,
)
from tuning.space import search_space, suggest, trial_config
from tuning.storage import RUN_ID_ATTR
from tuning.trial_process import (
    PEAK_RSS_ATTR,
    DataFiles,
    TrialJob,
    open_job_study,
    peak_rss_mib,
    read_data,
    run_trial_process,
)

WORKER_RSS_ATTR = "worker_rss_mib"  # trial user attribute: the worker's RSS after the trial
INTERRUPTED_ATTR = "interrupted"  # trial user attribute: Ctrl-C or SIGTERM stopped it
OPTIMIZE_LOGGER = "optuna.study._optimize"  # the logger of Optuna's "Trial N failed" records


class PrunedRun(StopRun):
    """The pruner stopped the trial: its MLflow run ends KILLED, the Optuna trial PRUNED."""
    status = "KILLED"


class TrialReporter(keras.callbacks.Callback):
    """Links the trial to its MLflow run, records OBJECTIVE_METRIC per epoch and, when it
    `reports`, tells the trial the per-epoch mean of this seed's value and the `earlier`
    seeds' values at that epoch (those that reached it), and prunes."""
    def __init__(self, trial: optuna.Trial, *, earlier: Sequence[Sequence[float]] = (),
                 reports: bool = True) -> None:
        super().__init__()
        self.trial, self.earlier, self.reports = trial, earlier, reports
        self.values: list[float] = []  # this seed's OBJECTIVE_METRIC per epoch
        self.run_id = ""

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.run_id = mlflow.active_run().info.run_id
        self.trial.set_user_attr(RUN_ID_ATTR, self.run_id)  # a lost worker's run is closed

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.values.append(float((logs or {})[OBJECTIVE_METRIC]))
        if not self.reports:
            return
        value = float(np.mean([self.values[-1], *(h[epoch] for h in self.earlier
                                                  if len(h) > epoch)]))
        self.trial.report(value, step=epoch + 1)
        if self.trial.should_prune():
            seeds = f" (mean of {len(self.earlier) + 1} seeds)" if self.earlier else ""
            raise PrunedRun(f"pruned at epoch {epoch + 1}: {OBJECTIVE_METRIC} {value:.4f}"
                            f"{seeds}", epoch + 1)


def objective(trial: optuna.Trial, **kwargs: Any) -> float:
    """The study's objective (`train_point`), recording the worker's resident memory after
    the trial (WORKER_RSS_ATTR, MiB); a trial stopped by Ctrl-C or SIGTERM is marked
    INTERRUPTED_ATTR before Optuna fails it, so that a resumed study enqueues an interrupted
    baseline again (`open_study`), and its runs are tagged `trial_state` FAIL (Optuna calls
    no callback for a trial that Ctrl-C stops)."""
    try:
        return train_point(trial, **kwargs)
    except KeyboardInterrupt:
        trial.set_user_attr(INTERRUPTED_ATTR, True)
        tag_runs(trial_run_ids(stored_trial(kwargs["study"], trial.number)), TrialState.FAIL)
        raise
    finally:  # how the worker's memory grows over trials (tuning.memory_benchmark)
        with contextlib.suppress(Exception):  # the storage may be what failed
            trial.set_user_attr(WORKER_RSS_ATTR, round(
                psutil.Process().memory_info().rss / 2**20, 1))


def train_point(trial: optuna.Trial, *, study: optuna.Study, config: TuneConfig, base: Config,
                data: Dataset, worker: str, admitted: Callable[[], None],
                data_files: DataFiles | None = None, parent_run_id: str = "") -> float:
    """Train one point of the search space for each of the trial's seeds, each in a nested
    MLflow run; return the mean OBJECTIVE_METRIC (`start_point`, then `train_seeds`, here or,
    given `data_files`, in a trial process of its own under run `parent_run_id`)."""
    point, tags = start_point(trial, study=study, config=config, data=data, worker=worker,
                              admitted=admitted)
    if data_files is None:
        return train_seeds(trial, point, tags, config=config, base=base, data=data)
    job = TrialJob(trial_id=trial._trial_id, trial_number=trial.number, point=point,
                   tags={**tags, MLFLOW_PARENT_RUN_ID: parent_run_id}, config=config,
                   base=base, pruner=study.pruner, data_dir=data_files.folder,
                   tracking_uri=mlflow.get_tracking_uri())
    return run_trial_process(train_in_child, job, study)


def train_in_child(job: TrialJob) -> float:
    """`train_seeds` of `job` in its trial process (`tuning.trial_process`): the same trial of
    the same study, reopened from the storage. Records the process's peak resident memory on
    the trial (PEAK_RSS_ATTR); a SIGTERM marks the trial interrupted, as in process."""
    study = open_job_study(job)
    trial = optuna.Trial(study, job.trial_id)
    try:
        return train_seeds(trial, job.point, job.tags, config=job.config, base=job.base,
                           data=read_data(job.data_dir))
    except KeyboardInterrupt:
        trial.set_user_attr(INTERRUPTED_ATTR, True)
        tag_runs(trial_run_ids(stored_trial(study, trial.number)), TrialState.FAIL)
        raise
    finally:
        trial.set_user_attr(PEAK_RSS_ATTR, round(peak_rss_mib(), 1))


def start_point(trial: optuna.Trial, *, study: optuna.Study, config: TuneConfig, data: Dataset,
                worker: str, admitted: Callable[[], None]) -> tuple[dict[str, Any],
                                                                    dict[str, str]]:
    """Let the next worker in, sample the trial's point of the search space and return it
    with the tags of the trial's runs (study, trial number, worker, a retry's original)."""
    admitted()  # the trial exists now: let the next worker in
    trial.set_user_attr("worker", worker)  # how many workers a study saw (tuning.report)
    point = suggest(trial, search_space(config.model, config.max_epochs))
    if point["batch_size"] > len(data.y_train):  # sizes above the split train the same batch
        trial.set_user_attr("effective_batch_size", len(data.y_train))
    tags = {"study_name": config.study_name, "trial_number": str(trial.number),
            "worker": worker}
    frozen = stored_trial(study, trial.number)
    retry_of = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    if retry_of is not None:
        tags["retry_of_trial"] = str(retry_of)
    if trial.user_attrs.get(BASELINE_ATTR):
        tags["baseline"] = "true"
    return point, tags


def stored_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial `number` as the storage holds it now (an `optuna.Trial`'s own attributes are a
    copy from its start: what a trial process wrote is only in the storage)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def train_seeds(trial: optuna.Trial, point: dict[str, Any], tags: dict[str, str], *,
                config: TuneConfig, base: Config, data: Dataset) -> float:
    """Train `point` for each of the trial's seeds, each in an MLflow run with `tags` (nested
    under the active run, or under the run that tag mlflow.parentRunId names); return the
    mean OBJECTIVE_METRIC. The trial's user attributes record its runs (RUN_IDS_ATTR;
    RUN_ID_ATTR and MODEL_URI_ATTR: the seed with the best value), the epochs and wall seconds
    it spent (BUDGET_ATTRS) and, with several seeds, their values. Raises optuna.TrialPruned."""
    several = config.seeds_per_trial > 1
    histories: list[list[float]] = []
    run_ids: list[str] = []
    results: list[dict[str, Any]] = []
    spent = {"epochs": 0, "seconds": 0.0}
    for k in range(config.seeds_per_trial):
        keras.backend.clear_session()
        seed = base.seed + k
        name = f"trial-{trial.number}" + (f"-seed{seed}" if several else "")
        reporter = TrialReporter(trial, earlier=histories,
                                 reports=k == config.seeds_per_trial - 1)
        started = time.monotonic()
        try:
            results.append(train(trial_config(replace(base, seed=seed), point, name), data,
                                 callbacks=[reporter], tags={**tags, "trial_seed": str(seed)}
                                 if several else tags))
        except PrunedRun as stop:
            raise optuna.TrialPruned(stop.reason) from None
        finally:
            spent["epochs"] += len(reporter.values)
            spent["seconds"] += time.monotonic() - started
            if reporter.run_id:
                run_ids.append(reporter.run_id)
            trial.set_user_attr(RUN_IDS_ATTR, run_ids)
            for key, attr in BUDGET_ATTRS.items():
                trial.set_user_attr(attr, spent[key])
        histories.append(reporter.values)
    values = [float(r[OBJECTIVE_METRIC]) for r in results]
    best = int(np.argmax(values))  # the seed whose model stands for the trial
    trial.set_user_attr(RUN_ID_ATTR, results[best]["run_id"])
    trial.set_user_attr("best_epoch", results[best]["best_epoch"])
    trial.set_user_attr("epochs_run", results[best]["epochs_run"])
    trial.set_user_attr(MODEL_URI_ATTR, results[best]["logged_model_uri"])
    if several:
        trial.set_user_attr("seed_values", values)
    return float(np.mean(values))


def tag_trial_state(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna callback: the trial's final state as tag `trial_state` on its MLflow runs."""
    tag_runs(trial_run_ids(trial), trial.state)


def tag_runs(run_ids: Sequence[str], state: TrialState) -> None:
    """Tag `trial_state` (an Optuna trial state's name) on a trial's MLflow runs."""
    for run_id in run_ids:
        mlflow.MlflowClient().set_tag(run_id, "trial_state", state.name)


class _InterruptedTrialRecords(logging.Filter):
    """Drops Optuna's two "Trial N failed" records of a trial stopped by Ctrl-C or SIGTERM
    (the first carries the whole traceback): the command prints one line on how to resume."""

    def __init__(self) -> None:
        super().__init__()
        self.trials: set[str] = set()  # "Trial N" of the interrupted trials

    def filter(self, record: logging.LogRecord) -> bool:
        trial = record.getMessage().split(" failed", 1)[0]
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            self.trials.add(trial)
        return trial not in self.trials


@contextlib.contextmanager
def quiet_interrupted_trials() -> Iterator[None]:
    """While the block runs, Optuna logs nothing about trials that Ctrl-C or SIGTERM stopped
    (they still end FAIL with INTERRUPTED_ATTR; other failures are logged as before)."""
    records = _InterruptedTrialRecords()
    logger = logging.getLogger(OPTIMIZE_LOGGER)
    logger.addFilter(records)
    try:
        yield
    finally:
        logger.removeFilter(records)
