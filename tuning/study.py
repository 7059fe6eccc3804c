"""An Optuna study over one registered model's training settings; every trial an MLflow run.

    summary = run_tuning_study(TuneConfig(model="densenet121", n_trials=20, max_epochs=10))

What is tuned is the model's search space (`tuning.space`). Trial 0 is the original study's
setting, 5 epochs at batch 128 with the recipe's learning rate, enqueued when the study is
created. The objective is `val_accuracy` at the
restored best epoch; trials never touch the test split (`tuning.report` scores the best
trial's model once, at the end, unless `final_test` is off: the fair study's final runs alone
see it). With `seeds_per_trial` K a trial trains seeds seed..seed+K-1 one after another (all on
the splits of `seed`), its value is their mean, and the pruner is asked during the last seed
with the per-epoch mean across the K seeds (the earlier seeds' values at that epoch, from
their histories), so one lucky seed neither picks the winner nor saves a trial.

Each trial is `tracking.training.loop.train` (the same code as a normal run) in an MLflow run nested
under one parent run per worker process (`tracking.store.lifecycle.tracked_run`), tagged
`study_name`,
`trial_number` and `trial_state`; a pruned trial's run ends KILLED. The sampler is a seeded TPE
(`seed` plus the trials already in the study, so a resumed study or a second worker does not
replay proposals); the pruner (`pruner`) Optuna's MedianPruner on the per-epoch validation
accuracy (a trial with fewer epochs simply stops reporting earlier, and the median at epoch k
is over the completed trials that reached epoch k), its HyperbandPruner (epochs as the
resource, up to max_epochs), or none. A study records what it searches (`space_record`) and
refuses to be resumed with another space. One trial is `tuning.objective`; the storage and
its resilience are `tuning.storage`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from typing import Any

import mlflow
import optuna
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.trial import TrialState
from tqdm import tqdm

from tracking.cli import raise_if_interrupted
from tracking.config import load_for
from tracking.data.dataset import Dataset
from tracking.store.connect import ensure_experiment, masked
from tracking.store.lifecycle import RUN_KIND_TAG, StopRun, launched_experiment, tracked_run
from tracking.training.provenance import log_params_once
from tuning.config import PRUNERS, TuneConfig, TuneError
from tuning.objective import (
    INTERRUPTED_ATTR,
    objective,
    quiet_interrupted_trials,
    tag_trial_state,
)
from tuning.report import (
    BASELINE_ATTR,
    OBJECTIVE_METRIC,
    report_study,
)
from tuning.space import (
    SPACE_ATTR,
    baseline_params,
    check_search_space,
    describe,
    search_space,
    space_record,
)
from tuning.storage import (
    StorageUnavailable,
    causes,
    open_storage,
    reclaim_dead_trials,
    storage_lock,
    trial_process,
)
from tuning.trial_process import DataFiles, check_trial_process

TPE_STARTUP_TRIALS = 4  # random trials before TPE models the results (its default 10 is a CPU day)
# the sampler's settings, stated rather than left to the installed Optuna's defaults (5.0 made
# TPE multivariate with constant liar): logged on every study's parent run (`sampler_settings`)
TPE_SETTINGS = {"n_startup_trials": TPE_STARTUP_TRIALS, "multivariate": True,
                "constant_liar": True}
PRUNER_STARTUP_TRIALS = 2  # no pruning until this many trials have completed
PRUNER_WARMUP_EPOCHS = 2  # nor during a trial's first epochs (learning-rate warm-up)
MAX_FAILURES_IN_A_ROW = 3  # a worker whose trials keep failing (e.g. NaN loss) stops
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)  # what --n-trials counts
WAIT_POLL_SECONDS = 5  # wait_for_running: how often a worker looks at the others' trials
HYPERBAND_REDUCTION = 3  # Optuna's default: a third of a bracket's trials go on each rung
TUNING_KIND = "tuning"  # run_kind tag of a study's parent run (tracking.compare skips it)


def default_pruner() -> optuna.pruners.BasePruner:
    # steps are epochs counted from 1, and the MedianPruner may prune from step n_warmup_steps
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                       n_warmup_steps=PRUNER_WARMUP_EPOCHS + 1)


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    """Optuna's pruner `name` (one of PRUNERS) for trials of at most `max_epochs` epochs.

    median: `default_pruner`. hyperband: HyperbandPruner (Li et al. 2018) with epochs as the
    resource, from the warm-up's end (or max_epochs, if smaller) to max_epochs. none: NopPruner.
    """
    if name == "median":
        return default_pruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=min(PRUNER_WARMUP_EPOCHS + 1, max_epochs), max_resource=max_epochs,
            reduction_factor=HYPERBAND_REDUCTION)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise TuneError(f"pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


# --------------------------------------------------------------------------- the study


def _storage(config: TuneConfig) -> optuna.storages.RDBStorage:
    return open_storage(config.storage, config.heartbeat_interval, config.grace_period)


def check_resume(config: TuneConfig) -> None:
    """If the study exists, check_search_space (main's check before loading data and starting
    runs; open_study checks again under the lock)."""
    config = config.resolved()
    with warnings.catch_warnings(), storage_lock(config.storage):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = _storage(config)
        try:
            try:
                study = optuna.load_study(study_name=config.study_name, storage=storage)
            except KeyError:  # no such study yet
                return
            check_search_space(study, config)
        finally:
            storage.engine.dispose()


def open_study(config: TuneConfig, pruner: optuna.pruners.BasePruner | None = None,
               ) -> tuple[optuna.Study, int]:
    """Create or load the study (call under `storage_lock`); enqueue the baseline into a new one.

    A new study records its search space (SPACE_ATTR); an existing one must have been created
    with the space this config searches (else TuneError). Returns the study and its sampler's
    seed: `seed` plus the trials already in the study.
    """
    storage = _storage(config)
    existing = optuna.create_study(storage=storage, study_name=config.study_name,
                                   direction="maximize", load_if_exists=True)
    if existing.trials or SPACE_ATTR in existing.user_attrs:
        check_search_space(existing, config)
    else:  # new (or empty and from before the attribute)
        existing.set_user_attr(SPACE_ATTR, space_record(config))
    sampler_seed = config.seed + len(existing.trials)
    study = optuna.load_study(
        study_name=config.study_name, storage=storage,
        sampler=optuna.samplers.TPESampler(seed=sampler_seed, **TPE_SETTINGS),
        pruner=pruner if pruner is not None else make_pruner(config.pruner, config.max_epochs),
    )
    baselines = [t for t in existing.trials if t.user_attrs.get(BASELINE_ATTR)]
    if all(t.state == TrialState.FAIL and t.user_attrs.get(INTERRUPTED_ATTR)
           for t in baselines):  # a new study, or its baseline was interrupted: (again)
        study.enqueue_trial(baseline_params(config.model, config.max_epochs),
                            user_attrs={BASELINE_ATTR: True})
    return study, sampler_seed


def sampler_settings(study: optuna.Study) -> dict[str, str]:
    """What the study samples and prunes with, as params: `sampler` and its TPE_SETTINGS,
    `pruner` and its settings (Hyperband's resources and reduction factor, the median
    pruner's start-up trials and warm-up steps), and `optuna_version`."""
    pruner = study.pruner
    settings = {"sampler": type(study.sampler).__name__,
                **{f"sampler_{k}": str(v) for k, v in TPE_SETTINGS.items()},
                "pruner": type(pruner).__name__, "optuna_version": optuna.__version__}
    for name in ("min_resource", "max_resource", "reduction_factor", "n_startup_trials",
                 "n_warmup_steps"):
        value = getattr(pruner, f"_{name}", None)  # Optuna keeps its settings private
        if value is not None:
            settings[f"pruner_{name}"] = str(value)
    return settings


def room_for_trial(study: optuna.Study, n_trials: int) -> bool:
    """Whether the study's total allows one more trial (call under `storage_lock`)."""
    optuna.storages.fail_stale_trials(study)  # a dead worker's trial must not hold a place
    taken = study.get_trials(deepcopy=False, states=(*COUNTED_STATES, TrialState.RUNNING))
    return len(taken) < n_trials


def create_study_only(config: TuneConfig) -> str:
    """Create the study (with its baseline) and the MLflow experiment, start no run."""
    config = config.resolved()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        with storage_lock(config.storage):
            study, _ = open_study(config)
            ensure_experiment(config.experiment)
    return (f"study {config.study_name} ready in {masked(config.storage)} "
            f"({len(study.trials)} trial{'' if len(study.trials) == 1 else 's'} so far); "
            f"experiment {config.experiment}")


# --------------------------------------------------------------------------- the loop


def run_trials(study: optuna.Study, config: TuneConfig, run_trial: Callable[..., float],
               started: float, reclaimed: list[int] | None = None) -> list[TrialState]:
    """This worker's loop: admit a trial under the storage lock while the study's total and
    the timeout allow, run it; stop after MAX_FAILURES_IN_A_ROW failures. Before each
    admission, trials whose worker process on this host is gone are failed and retried
    (`reclaim_dead_trials`; their numbers appended to `reclaimed`). Returns the states of the
    trials it ran."""
    states: list[TrialState] = []
    reclaimed = [] if reclaimed is None else reclaimed
    done = len(study.get_trials(deepcopy=False, states=COUNTED_STATES))
    with tqdm(total=config.n_trials, initial=min(done, config.n_trials), unit="trial",
              desc=config.study_name, file=sys.stderr, disable=not sys.stderr.isatty()) as bar:
        while not (config.timeout and time.monotonic() - started >= config.timeout):
            raise_if_interrupted()  # a Ctrl-C that landed in gc after the last trial
            wait = False
            with contextlib.ExitStack() as gate, quiet_interrupted_trials():
                # gate: the storage lock, held until the trial exists
                gate.enter_context(storage_lock(config.storage))
                reclaimed += reclaim_dead_trials(study)
                if not room_for_trial(study, config.n_trials):
                    wait = config.wait_for_running and bool(
                        study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
                    if not wait:
                        say_who_is_running(study, config.grace_period)
                        break
                if not wait:
                    study.optimize(partial(run_trial, admitted=gate.close), n_trials=1,
                                   catch=(StopRun,), gc_after_trial=True, callbacks=[
                                       tag_trial_state, lambda _, t: states.append(t.state)])
            if wait:  # the others' last trials: their best may change what this worker reports
                time.sleep(WAIT_POLL_SECONDS)
                continue
            done = len(study.get_trials(deepcopy=False, states=COUNTED_STATES))
            bar.update(min(done, config.n_trials) - bar.n)
            if states[-MAX_FAILURES_IN_A_ROW:] == [TrialState.FAIL] * MAX_FAILURES_IN_A_ROW:
                mlflow.set_tag("stop_reason", f"{MAX_FAILURES_IN_A_ROW} failed trials in a "
                                              "row (see their stop_reason)")
                break
    return states


def say_who_is_running(study: optuna.Study, grace_period: int) -> None:
    """One line on stderr when the study's total is taken by trials still RUNNING elsewhere:
    they complete the study, or, if their worker was lost, the next worker started after the
    grace period retries them."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return
    where = []
    for trial in running:
        process = trial_process(trial)
        where.append(f"trial {trial.number}" + (f" (pid {process[1]} on {process[0]})"
                                                 if process else ""))
    print(f"nothing left to start here: {', '.join(where)} still running in another worker; "
          f"if that worker was lost, run this command again after {grace_period} s (the grace "
          "period) and the trial is retried", file=sys.stderr)


@contextlib.contextmanager
def trial_data_files(data: Dataset) -> Iterator[DataFiles]:
    """The worker's data as files for its trial processes, removed when it is done."""
    files = DataFiles(data)
    try:
        yield files
    finally:
        files.close()


def run_tuning_study(config: TuneConfig, *, data: Dataset | None = None,
                     pruner: optuna.pruners.BasePruner | None = None,
                     parent_run_id: str | None = None) -> dict[str, Any]:
    """Run trials of the study until its total or this worker's timeout, then report.

    One parent MLflow run for this process (nested in the caller's active run, if any, or
    under `parent_run_id`: a fair study's run that other workers share); every trial a nested
    run. `pruner` replaces the default MedianPruner (tests force pruning
    with it). Returns the report's summary (`tuning.report.report_study`) plus parent_run_id,
    worker_trials, study_seconds, study_name and storage. Raises StorageUnavailable when the
    database stays away too long.
    """
    config = config.resolved()
    check_trial_process(config)
    config = replace(config, experiment=launched_experiment(config.experiment))
    base = config.base_config()
    data = load_for(base) if data is None else data
    started = time.monotonic()
    worker = f"{socket.gethostname()}-{os.getpid()}"
    with warnings.catch_warnings():
        # heartbeats, the retry callback and the matplotlib plots are "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        with storage_lock(config.storage):
            study, sampler_seed = open_study(config, pruner)
            ensure_experiment(config.experiment)
        tags = {"study_name": config.study_name, "worker": worker,
                "optuna_storage": masked(config.storage), "model": config.model,
                "dataset": config.dataset, RUN_KIND_TAG: TUNING_KIND,
                **({MLFLOW_PARENT_RUN_ID: parent_run_id} if parent_run_id else {})}
        with tracked_run(config.experiment, config.study_name, tags=tags) as parent, \
                contextlib.ExitStack() as resources:
            log_params_once({
                "model": config.model, "dataset": config.dataset, "data_dir": config.data_dir,
                "limit": config.limit, "seed": config.seed, "n_trials": config.n_trials,
                "max_epochs": config.max_epochs, "timeout": config.timeout,
                "sampler_seed": sampler_seed, **sampler_settings(study),
                "objective": OBJECTIVE_METRIC, "seeds_per_trial": config.seeds_per_trial,
                "final_test": config.final_test,
                **{f"space_{name}": describe(distribution) for name, distribution
                   in search_space(config.model, config.max_epochs).items()},
                "heartbeat_interval": config.heartbeat_interval,
                "grace_period": config.grace_period, "trial_process": config.trial_process,
            })
            data_files = resources.enter_context(trial_data_files(data)) \
                if config.trial_process else None
            run_trial = partial(objective, study=study, config=config, base=base, data=data,
                                worker=worker, data_files=data_files,
                                parent_run_id=parent.info.run_id)
            reclaimed: list[int] = []
            try:
                states = run_trials(study, config, run_trial, started, reclaimed)
            except Exception as err:
                lost = next((e for e in causes(err)
                             if isinstance(e, StorageUnavailable)), None)
                if lost is None or lost is err:
                    raise
                # Optuna, failing to record the trial's end, may raise something else on top
                raise StorageUnavailable(str(lost)) from err
            summary = report_study(study, config.model, config.study_name, data,
                                   final_test=config.final_test)
            if reclaimed:
                mlflow.set_tag("reclaimed_trials", ",".join(map(str, reclaimed)))
            summary.update(parent_run_id=parent.info.run_id, worker_trials=len(states),
                           reclaimed_trials=reclaimed,
                           study_seconds=time.monotonic() - started,
                           study_name=config.study_name, storage=masked(config.storage))
            mlflow.log_metrics({"worker_trials": len(states),
                                "study_seconds": summary["study_seconds"]})
    return summary
