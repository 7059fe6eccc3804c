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
    """The study's objective (`train_point`); a trial stopped by Ctrl-C or SIGTERM is marked
    INTERRUPTED_ATTR before Optuna fails it, so that a resumed study enqueues an interrupted
    baseline again (`open_study`), and its runs are tagged `trial_state` FAIL (Optuna calls
    no callback for a trial that Ctrl-C stops)."""
    try:
        return train_point(trial, **kwargs)
    except KeyboardInterrupt:
        trial.set_user_attr(INTERRUPTED_ATTR, True)
        tag_runs(trial_run_ids(trial), TrialState.FAIL)
        raise


def train_point(trial: optuna.Trial, *, study: optuna.Study, config: TuneConfig, base: Config,
                data: Dataset, worker: str, admitted: Callable[[], None]) -> float:
    """Train one point of the search space for each of the trial's seeds, each in a nested
    MLflow run; return the mean OBJECTIVE_METRIC. The trial's user attributes record its runs
    (RUN_IDS_ATTR; RUN_ID_ATTR and MODEL_URI_ATTR: the seed with the best value), the epochs
    and wall seconds it spent (BUDGET_ATTRS) and, with several seeds, their values."""
    admitted()  # the trial exists now: let the next worker in
    trial.set_user_attr("worker", worker)  # how many workers a study saw (tuning.report)
    point = suggest(trial, search_space(config.model, config.max_epochs))
    if point["batch_size"] > len(data.y_train):  # sizes above the split train the same batch
        trial.set_user_attr("effective_batch_size", len(data.y_train))
    tags = {"study_name": config.study_name, "trial_number": str(trial.number),
            "worker": worker}
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    retry_of = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    if retry_of is not None:
        tags["retry_of_trial"] = str(retry_of)
    if trial.user_attrs.get(BASELINE_ATTR):
        tags["baseline"] = "true"
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
