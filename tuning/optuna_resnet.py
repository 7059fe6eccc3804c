"""Tune ResNet-50's epochs, batch size and learning rate with Optuna; every trial an MLflow run.

In the original comparison ResNet-50 came last (test accuracy 0.95 against 0.98 to 0.99 for the
others) and its epochs and batch size were the suspects. This study answers that question:

    python -m tuning.optuna_resnet --n-trials 20 --max-epochs 10      # digits, files in the cwd
    python -m tuning.optuna_resnet --study-name resnet50-digits ...   # resume (same total)
    mlflow run . -e tune -P n_trials=20 --experiment-name resnet50-tuning

What is tuned is `suggest` below: epochs (up to --max-epochs), batch size (powers of two) and
the peak learning rate (log-uniform). The original setting, 5 epochs at batch 128 with the
recipe's learning rate, is enqueued as the study's first trial, so the study always holds it.
Validation accuracy is the objective; the test split is touched once, at the end, to compare
the best trial's logged model with the baseline trial's.

Every trial is `tracking.train.train` (the same code as a normal run) in an MLflow run nested
under one parent run per worker process, tagged `study_name`, `trial_number` and `trial_state`.
Pruned trials end as KILLED runs tagged `trial_state=PRUNED`. The parent ends with the best
parameters (`best_*`), `trials.csv`, the optimisation plots, `tuned_test_accuracy` next to
`baseline_test_accuracy`, and the best model registered as `<model>-tuned`.

Pruning: a MedianPruner on the per-epoch validation accuracy. Each trial reports one value per
epoch, so a trial with fewer epochs simply stops reporting earlier, and the median at epoch k
is taken over the completed trials that reached epoch k: epochs being tuned needs no special
handling. A trial is stopped when its best accuracy so far is below that median, but never
before `PRUNER_STARTUP_TRIALS` trials have completed nor in its first `PRUNER_WARMUP_EPOCHS`
epochs (warm-up, where accuracy says little). A HyperbandPruner would split a study of tens
of trials into brackets of a few trials each, too few to compare within.

Storage: an Optuna database (default `optuna.db` next to a SQLite MLflow store, else in the
cwd) holds the study, so `--study-name` resumes it and `optuna-dashboard <storage>` shows it.
`--n-trials` is the study's total (complete + pruned), not this process's share. With
`--storage postgresql://...` any number of workers on any machines share one study: start the
same command on each. Trials send heartbeats; the trial of a worker that dies is failed and
retried by the next worker (its MLflow runs are closed as FAILED). Study creation, the
baseline, the MLflow tables and the admission of each trial are serialised by a lock in the
storage (PostgreSQL advisory lock; for SQLite a lock on its folder); on other databases run
`--create-only` once before starting workers. Every worker finishes by reporting the study as
it stands then into its own parent run; the last to finish sees every trial, and the registry
gets a new version only when the best trial changed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import socket
import sys
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import keras
import mlflow
import optuna
import sqlalchemy
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool
from tqdm import tqdm

from tracking.callbacks import StopRun
from tracking.config import Config, ConfigError
from tracking.data import DataError, Dataset, load_dataset
from tracking.evaluate import Evaluation, evaluate, evaluation_metrics, log_evaluation
from tracking.recipes import RECIPES
from tracking.train import adopt_launched_run_experiment, ensure_experiment, log_params_once, train

# --------------------------------------------------------------------------- search space

OBJECTIVE_METRIC = "val_accuracy"  # maximised; the pruning callback reports the same key per epoch
MIN_EPOCHS = 2  # lower bound of the epochs; the upper bound is --max-epochs
BATCH_SIZES = (16, 32, 64, 128, 256, 512)
LEARNING_RATES = (1e-4, 1e-2)  # log-uniform range of the peak learning rate
BASELINE_EPOCHS = 5  # the original study's setting, enqueued as trial 0 ...
BASELINE_BATCH_SIZE = 128  # ... with the model recipe's learning rate


def suggest(trial: optuna.Trial, max_epochs: int) -> dict[str, Any]:
    """One point of the search space: the Config fields a trial overrides."""
    return {
        "epochs": trial.suggest_int("epochs", min(MIN_EPOCHS, max_epochs), max_epochs),
        "batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES),
        "learning_rate": trial.suggest_float("learning_rate", *LEARNING_RATES, log=True),
    }


def baseline_params(model: str, max_epochs: int) -> dict[str, Any]:
    return {"epochs": min(BASELINE_EPOCHS, max_epochs), "batch_size": BASELINE_BATCH_SIZE,
            "learning_rate": RECIPES[model].learning_rate}


# --------------------------------------------------------------------------- defaults

TPE_STARTUP_TRIALS = 4  # random trials before TPE models the results (its default 10 is a CPU day)
PRUNER_STARTUP_TRIALS = 2  # no pruning until this many trials have completed
PRUNER_WARMUP_EPOCHS = 2  # nor during a trial's first epochs (learning-rate warm-up)
MAX_RETRIES = 2  # a dead worker's trial is run again at most this often
MAX_FAILURES_IN_A_ROW = 3  # a worker whose trials keep failing (e.g. NaN loss) stops
CONNECT_TIMEOUT_SECONDS = 3  # an unreachable database server is reported after this long
LOCK_KEY = zlib.crc32(b"tuning.optuna_resnet")  # PostgreSQL advisory lock id of this module
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)  # what --n-trials counts
RUN_ID_ATTR = "mlflow_run_id"  # trial user attribute linking a trial to its MLflow run
MODEL_URI_ATTR = "mlflow_model_uri"  # trial user attribute: the logged model (models:/...)
BASELINE_ATTR = "baseline"  # trial user attribute marking the enqueued reference setting


class TuneError(ValueError):
    """A tuning setting is invalid; the message says which and what is allowed."""


@dataclass(frozen=True)
class TuneConfig:
    model: str = "resnet50"  # registry key in models.MODELS (other models: for quick tests)
    dataset: str = "digits"  # key in tracking.data.LOADERS
    data_dir: str = ""  # folder data, or where Fashion-MNIST's IDX files are
    n_trials: int = 20  # total trials of the study (complete + pruned), over all workers
    timeout: float = 0.0  # seconds after which this worker starts no new trial (0 = none)
    max_epochs: int = 10  # upper bound of the tuned epochs
    study_name: str = ""  # "" = <model>-<dataset>
    storage: str = ""  # SQLAlchemy URL; "" = optuna.db next to a SQLite MLflow store
    seed: int = 0  # data splits, initial weights and the sampler
    experiment: str = ""  # MLflow experiment; "" = <model>-tuning
    limit: int = 0  # keep at most this many training images (0 = all); for smoke runs
    heartbeat_interval: int = 60  # seconds between a running trial's heartbeats
    grace_period: int = 240  # a trial silent for this long belongs to a dead worker

    def __post_init__(self) -> None:
        for name in ("n_trials", "max_epochs", "heartbeat_interval", "grace_period"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise TuneError(f"{name} must be a positive integer, got {value!r}")
        if not self.timeout >= 0:
            raise TuneError(f"timeout must be a number of seconds >= 0, got {self.timeout!r}")

    def resolved(self) -> TuneConfig:
        """Fill study name, storage and experiment left empty."""
        return replace(self, study_name=self.study_name or f"{self.model}-{self.dataset}",
                       storage=self.storage or default_storage(),
                       experiment=self.experiment or f"{self.model}-tuning")

    def base_config(self) -> Config:
        """The training Config every trial starts from (raises ConfigError on bad input)."""
        return Config(model=self.model, dataset=self.dataset, data_dir=self.data_dir,
                      seed=self.seed, experiment=self.resolved().experiment,
                      limit=self.limit, evaluate_test=False,
                      checkpoint_every=0)  # a lost trial is retried whole, never resumed


# --------------------------------------------------------------------------- storage


def default_storage() -> str:
    """`optuna.db` in the folder of a SQLite MLflow store, else in the working directory."""
    tracking = mlflow.get_tracking_uri()
    if tracking.startswith("sqlite:"):
        database = make_url(tracking).database
        if database and database != ":memory:":
            return f"sqlite:///{os.path.join(os.path.dirname(database), 'optuna.db')}"
    return "sqlite:///optuna.db"


def masked(url: str) -> str:
    """The storage URL without its password, for logs and tags."""
    return make_url(url).render_as_string(hide_password=True)


def with_driver(url: str) -> str:
    """`postgresql://` means psycopg2, this project's dependency (SQLAlchemy 2.1 would pick
    psycopg 3); name a driver (`postgresql+psycopg://`) to choose another."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def _connect_args(url: str) -> dict[str, Any]:
    backend = make_url(url).get_backend_name()
    if backend in ("postgresql", "mysql"):
        return {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    if backend == "sqlite":  # several writers (workers, heartbeats) wait for each other
        return {"timeout": 30}
    return {}


def check_storage(url: str) -> None:
    """Raise TuneError unless `url` is a database URL whose server answers within seconds."""
    hint = "e.g. sqlite:///optuna.db or postgresql://USER:PASSWORD@HOST/DATABASE"
    try:
        parsed = make_url(with_driver(url))
        parsed.get_dialect()
    except NoSuchModuleError:  # before its base class, ArgumentError
        raise TuneError(f"unknown storage scheme {url.split(':', 1)[0]!r}; {hint}") from None
    except ArgumentError:
        raise TuneError(f"storage {url!r} is not a database URL; {hint}") from None
    try:
        engine = sqlalchemy.create_engine(parsed, poolclass=NullPool,
                                          connect_args=_connect_args(url))
    except ImportError as err:
        raise TuneError(f"storage {masked(url)} needs a database driver: {err}") from None
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as err:
        cause = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise TuneError(f"cannot reach storage {masked(url)}: {cause}") from None
    finally:
        engine.dispose()


@contextlib.contextmanager
def storage_lock(url: str) -> Iterator[None]:
    """Serialise workers sharing `url`: a PostgreSQL advisory lock, for SQLite a lock on the
    database's folder (not the file: closing a second descriptor of the file would drop
    SQLite's own locks). Other databases get no lock: run --create-only before the workers."""

    parsed = make_url(with_driver(url))
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        engine = sqlalchemy.create_engine(parsed, poolclass=NullPool,
                                          connect_args=_connect_args(url),
                                          isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"),
                                 {"k": LOCK_KEY})
        finally:
            engine.dispose()
    elif backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        fd = os.open(os.path.dirname(os.path.abspath(parsed.database)), os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock
    else:
        yield


class RetryLostTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a trial whose worker stopped sending heartbeats, after closing the
    MLflow runs that worker left RUNNING (its trial run and its parent run) as FAILED."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id:
            client = mlflow.MlflowClient()
            reason = f"worker lost: trial {trial.number} stopped sending heartbeats"
            try:
                run = client.get_run(run_id)
                client.set_tag(run_id, "trial_state", TrialState.FAIL.name)
                for rid in (run_id, run.data.tags.get(MLFLOW_PARENT_RUN_ID)):
                    if rid and client.get_run(rid).info.status == "RUNNING":
                        client.set_tag(rid, "stop_reason", reason)
                        client.set_terminated(rid, "FAILED")
            except MlflowException as err:  # e.g. this worker tracks to another MLflow store
                print(f"warning: could not close the runs of trial {trial.number}: {err}",
                      file=sys.stderr)
        super().__call__(study, trial)


def open_storage(config: TuneConfig) -> RDBStorage:
    engine_kwargs: dict[str, Any] = {"connect_args": _connect_args(config.storage)}
    if not config.storage.startswith("sqlite"):
        engine_kwargs["pool_pre_ping"] = True  # survive the server closing idle connections
    return RDBStorage(with_driver(config.storage), engine_kwargs=engine_kwargs,
                      heartbeat_interval=config.heartbeat_interval,
                      grace_period=config.grace_period,
                      heartbeat_stale_trial_callback=RetryLostTrial(max_retry=MAX_RETRIES))


def default_pruner() -> optuna.pruners.BasePruner:
    # steps are epochs counted from 1, and the MedianPruner may prune from step n_warmup_steps
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                       n_warmup_steps=PRUNER_WARMUP_EPOCHS + 1)


def open_study(config: TuneConfig, pruner: optuna.pruners.BasePruner | None = None,
               ) -> tuple[optuna.Study, int]:
    """Create or load the study (call under `storage_lock`); enqueue the baseline into a new one.

    Returns the study and its sampler's seed: `seed` plus the trials already in the study, so
    a resumed study or a second worker does not replay the first one's random proposals.
    """
    storage = open_storage(config)
    existing = optuna.create_study(storage=storage, study_name=config.study_name,
                                   direction="maximize", load_if_exists=True)
    sampler_seed = config.seed + len(existing.trials)
    study = optuna.load_study(
        study_name=config.study_name, storage=storage,
        sampler=optuna.samplers.TPESampler(seed=sampler_seed,
                                           n_startup_trials=TPE_STARTUP_TRIALS),
        pruner=pruner if pruner is not None else default_pruner(),
    )
    if not existing.trials:
        study.enqueue_trial(baseline_params(config.model, config.max_epochs),
                            user_attrs={BASELINE_ATTR: True})
    return study, sampler_seed


def room_for_trial(study: optuna.Study, n_trials: int) -> bool:
    """Whether the study's total allows one more trial (call under `storage_lock`)."""
    optuna.storages.fail_stale_trials(study)  # a dead worker's trial must not hold a place
    taken = study.get_trials(deepcopy=False, states=(*COUNTED_STATES, TrialState.RUNNING))
    return len(taken) < n_trials


# --------------------------------------------------------------------------- trials


class PrunedRun(StopRun):
    """The pruner stopped the trial: its MLflow run ends KILLED, the Optuna trial PRUNED."""
    status = "KILLED"


class TrialReporter(keras.callbacks.Callback):
    """Links the trial to its MLflow run, reports OBJECTIVE_METRIC per epoch and prunes."""
    def __init__(self, trial: optuna.Trial) -> None:
        super().__init__()
        self.trial = trial

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.trial.set_user_attr(RUN_ID_ATTR, mlflow.active_run().info.run_id)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = float((logs or {})[OBJECTIVE_METRIC])
        self.trial.report(value, step=epoch + 1)
        if self.trial.should_prune():
            raise PrunedRun(f"pruned at epoch {epoch + 1}: {OBJECTIVE_METRIC} {value:.4f}",
                            epoch + 1)


def objective(trial: optuna.Trial, *, study: optuna.Study, config: TuneConfig, base: Config,
              data: Dataset, worker: str, admitted: Callable[[], None]) -> float:
    """Train one point of the search space in a nested MLflow run; return OBJECTIVE_METRIC."""
    admitted()  # the trial exists now: let the next worker in
    keras.backend.clear_session()
    trial_config = replace(base, **suggest(trial, config.max_epochs),
                           run_name=f"trial-{trial.number}")
    tags = {"study_name": config.study_name, "trial_number": str(trial.number),
            "worker": worker}
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    retry_of = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    if retry_of is not None:
        tags["retry_of_trial"] = str(retry_of)
    if trial.user_attrs.get(BASELINE_ATTR):
        tags["baseline"] = "true"
    try:
        results = train(trial_config, data, callbacks=[TrialReporter(trial)], tags=tags)
    except PrunedRun as stop:
        raise optuna.TrialPruned(stop.reason) from None
    trial.set_user_attr("best_epoch", results["best_epoch"])
    trial.set_user_attr("epochs_run", results["epochs_run"])
    trial.set_user_attr(MODEL_URI_ATTR, results["logged_model_uri"])
    return float(results[OBJECTIVE_METRIC])


def tag_trial_state(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna callback: the trial's final state as tag `trial_state` on its MLflow run."""
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    if run_id:
        mlflow.MlflowClient().set_tag(run_id, "trial_state", trial.state.name)


# --------------------------------------------------------------------------- report


def counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {state.name.lower(): sum(t.state == state for t in trials)
            for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                          TrialState.RUNNING, TrialState.WAITING)}


def log_plots(study: optuna.Study) -> None:
    """Optimisation history, per-epoch curves and (from 2 complete trials) importances."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    plots = {"optimization_history": vis.plot_optimization_history,
             "intermediate_values": vis.plot_intermediate_values}
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if complete >= 2:
        plots["param_importances"] = vis.plot_param_importances
    else:
        mlflow.set_tag("param_importances_skipped", f"{complete} complete trials, needs 2")
    for name, plot in plots.items():
        try:
            ax = plot(study)
        except (ValueError, RuntimeError) as err:  # e.g. importances of too uniform a study
            mlflow.set_tag(f"{name}_skipped", str(err).splitlines()[0][:250])
            continue
        fig = ax.figure
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        mlflow.log_figure(fig, f"{name}.png")
        plt.close(fig)


def evaluate_trial_model(run_id: str, data: Dataset) -> Evaluation:
    """Evaluation of the model logged by run `run_id` on the test split."""
    keras.backend.clear_session()
    model = mlflow.keras.load_model(f"runs:/{run_id}/model")
    return evaluate(model, data.x_test, data.y_test, data.class_names)


def register_best(name: str, trial: FrozenTrial, tags: dict[str, str]) -> ModelVersion:
    """Register the trial's logged model as a version of `name`, unless it already is one."""
    run_id = trial.user_attrs[RUN_ID_ATTR]
    existing = mlflow.MlflowClient().search_model_versions(
        f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        return existing[0]
    return mlflow.register_model(trial.user_attrs[MODEL_URI_ATTR], name, tags=tags)


def report_study(study: optuna.Study, config: TuneConfig, data: Dataset) -> dict[str, Any]:
    """Log the study as it stands into the active (parent) run; return the summary."""
    summary: dict[str, Any] = {f"trials_{k}": v for k, v in counts(study).items()}
    mlflow.log_metrics(summary)
    mlflow.log_text(study.trials_dataframe().to_csv(index=False), "trials.csv")
    log_plots(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return summary
    best = study.best_trial
    best_run = best.user_attrs[RUN_ID_ATTR]
    summary.update(best_trial=best.number, best_run_id=best_run, best_params=best.params,
                   best_value=best.value)
    mlflow.log_params({f"best_{k}": v for k, v in best.params.items()})
    mlflow.log_metric(f"best_{OBJECTIVE_METRIC}", best.value)
    mlflow.set_tags({"best_trial_number": str(best.number), "best_run_id": best_run})

    tuned = evaluate_trial_model(best_run, data)
    title = f"{config.study_name} trial {best.number}"
    test = {"tuned_test_accuracy": tuned.accuracy}
    log_evaluation(tuned, data.class_names, title=title, prefix="tuned_test")
    baseline = next((t for t in complete if t.user_attrs.get(BASELINE_ATTR)), None)
    if baseline is not None:
        ev = tuned if baseline.number == best.number else evaluate_trial_model(
            baseline.user_attrs[RUN_ID_ATTR], data)
        mlflow.log_metrics(evaluation_metrics(ev, data.class_names, prefix="baseline_test"))
        test["baseline_test_accuracy"] = ev.accuracy
        summary["baseline_trial"] = baseline.number
    summary.update(test)

    version = register_best(f"{config.model}-tuned", best, {
        "study_name": config.study_name, "trial_number": str(best.number),
        OBJECTIVE_METRIC: f"{best.value:.4f}", "test_accuracy": f"{tuned.accuracy:.4f}"})
    summary["registered_model"] = f"{version.name}/{version.version}"
    mlflow.set_tag("registered_model", summary["registered_model"])
    return summary


# --------------------------------------------------------------------------- study


def run_study(config: TuneConfig, *, data: Dataset | None = None,
              pruner: optuna.pruners.BasePruner | None = None) -> dict[str, Any]:
    """Run trials of the study until its total or this worker's timeout, then report.

    One parent MLflow run for this process; every trial a nested run. `pruner` replaces the
    default MedianPruner (tests force pruning with it). Returns the report's summary plus
    parent_run_id, worker_trials and study_seconds.
    """
    config = config.resolved()
    base = adopt_launched_run_experiment(config.base_config())
    config = replace(config, experiment=base.experiment)
    if data is None:
        data = load_dataset(base.dataset, base.data_dir or None, base.image_size,
                            base.test_split, base.val_split, base.seed, base.skip_bad_images,
                            base.limit or None)
    started = time.monotonic()
    worker = f"{socket.gethostname()}-{os.getpid()}"
    with warnings.catch_warnings():
        # heartbeats, the retry callback and the matplotlib plots are "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        with storage_lock(config.storage):
            study, sampler_seed = open_study(config, pruner)
            experiment_id = ensure_experiment(base.experiment)

        parent = mlflow.start_run(experiment_id=experiment_id, run_name=config.study_name)
        status = "FAILED"
        try:
            mlflow.set_tags({"study_name": config.study_name, "worker": worker,
                             "optuna_storage": masked(config.storage), "model": config.model,
                             "dataset": config.dataset})
            log_params_once({
                "model": config.model, "dataset": config.dataset, "data_dir": config.data_dir,
                "limit": config.limit, "seed": config.seed, "n_trials": config.n_trials,
                "max_epochs": config.max_epochs, "timeout": config.timeout,
                "sampler_seed": sampler_seed, "pruner": type(study.pruner).__name__,
                "objective": OBJECTIVE_METRIC, "space_batch_size": ",".join(map(str, BATCH_SIZES)),
                "space_epochs": f"{min(MIN_EPOCHS, config.max_epochs)}..{config.max_epochs}",
                "space_learning_rate": f"{LEARNING_RATES[0]}..{LEARNING_RATES[1]} log",
                "heartbeat_interval": config.heartbeat_interval,
                "grace_period": config.grace_period,
            })
            run_trial = partial(objective, study=study, config=config, base=base, data=data,
                                worker=worker)
            states: list[TrialState] = []  # of this worker's trials
            done = len(study.get_trials(deepcopy=False, states=COUNTED_STATES))
            with tqdm(total=config.n_trials, initial=min(done, config.n_trials),
                      unit="trial", desc=config.study_name, file=sys.stderr,
                      disable=not sys.stderr.isatty()) as bar:
                while not (config.timeout and time.monotonic() - started >= config.timeout):
                    with contextlib.ExitStack() as gate:  # held until the trial exists
                        gate.enter_context(storage_lock(config.storage))
                        if not room_for_trial(study, config.n_trials):
                            break
                        study.optimize(partial(run_trial, admitted=gate.close), n_trials=1,
                                       catch=(StopRun,), gc_after_trial=True, callbacks=[
                                           tag_trial_state, lambda _, t: states.append(t.state)])
                    done = len(study.get_trials(deepcopy=False, states=COUNTED_STATES))
                    bar.update(min(done, config.n_trials) - bar.n)
                    if states[-MAX_FAILURES_IN_A_ROW:] == [TrialState.FAIL] * MAX_FAILURES_IN_A_ROW:
                        mlflow.set_tag("stop_reason", f"{MAX_FAILURES_IN_A_ROW} failed trials in "
                                                      "a row (see their stop_reason)")
                        break
            summary = report_study(study, config, data)
            summary.update(parent_run_id=parent.info.run_id, worker_trials=len(states),
                           study_seconds=time.monotonic() - started,
                           study_name=config.study_name, storage=masked(config.storage))
            mlflow.log_metrics({"worker_trials": len(states),
                                "study_seconds": summary["study_seconds"]})
            status = "FINISHED"
            return summary
        except KeyboardInterrupt as stop:
            status = "KILLED"
            mlflow.set_tag("stop_reason", str(stop) or "interrupted (Ctrl-C)")
            raise
        finally:
            mlflow.end_run(status=status)


def create_study_only(config: TuneConfig) -> str:
    """Create the study (with its baseline) and the MLflow experiment, start no run."""
    config = config.resolved()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        with storage_lock(config.storage):
            study, _ = open_study(config)
            ensure_experiment(config.experiment)
    return (f"study {config.study_name} ready in {masked(config.storage)} "
            f"({len(study.trials)} trials); experiment {config.experiment}")


# --------------------------------------------------------------------------- command line


def _number(kind: type, name: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
    return parse


def build_parser() -> argparse.ArgumentParser:
    d = TuneConfig()
    p = argparse.ArgumentParser(prog="python -m tuning.optuna_resnet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=d.dataset)
    p.add_argument("--data-dir", default=d.data_dir)
    p.add_argument("--n-trials", type=_number(int, "n-trials"), default=d.n_trials,
                   help="total trials of the study over all workers (complete + pruned)")
    p.add_argument("--timeout", type=_number(float, "timeout"), default=d.timeout,
                   help="seconds after which this worker starts no new trial (0 = none)")
    p.add_argument("--max-epochs", type=_number(int, "max-epochs"), default=d.max_epochs,
                   help="upper bound of the tuned epochs")
    p.add_argument("--study-name", default=d.study_name,
                   help="default <model>-<dataset>; an existing study is resumed")
    p.add_argument("--storage", default=d.storage,
                   help="SQLAlchemy URL of the Optuna database (default: optuna.db next to the "
                        "MLflow store); postgresql://... for workers on several machines")
    p.add_argument("--seed", type=_number(int, "seed"), default=d.seed)
    p.add_argument("--experiment", default=d.experiment, help="default <model>-tuning")
    p.add_argument("--create-only", action="store_true",
                   help="create the study and the MLflow tables, then exit (before workers)")
    # for tests and smoke runs
    p.add_argument("--model", default=d.model, help=argparse.SUPPRESS)
    p.add_argument("--limit", type=_number(int, "limit"), default=d.limit, help=argparse.SUPPRESS)
    p.add_argument("--heartbeat-interval", type=_number(int, "heartbeat interval"),
                   default=d.heartbeat_interval, help=argparse.SUPPRESS)
    p.add_argument("--grace-period", type=_number(int, "grace period"),
                   default=d.grace_period, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: bad input exits with status 2 before any MLflow run exists."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = TuneConfig(**{k: v for k, v in vars(args).items() if k != "create_only"})
        base = config.base_config()
        check_storage(config.resolved().storage)
        if args.create_only:
            print(create_study_only(config))
            return 0
        data = load_dataset(base.dataset, base.data_dir or None, base.image_size,
                            base.test_split, base.val_split, base.seed, base.skip_bad_images,
                            base.limit or None)
    except (TuneError, ConfigError, DataError) as err:
        parser.error(str(err))
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        summary = run_study(config, data=data)
    except KeyboardInterrupt:
        print(f"interrupted: resume with --study-name {config.resolved().study_name}",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(format_summary(summary))
    return 0


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM (a scheduler's preemption) ends the trial and the runs as Ctrl-C does."""
    raise KeyboardInterrupt("stopped by SIGTERM")


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"study {s['study_name']} ({s['storage']}): {s['trials_complete']} complete, "
             f"{s['trials_pruned']} pruned, {s['trials_fail']} failed; this worker ran "
             f"{s['worker_trials']} in {s['study_seconds']:.0f} s; parent run "
             f"{s['parent_run_id']}"]
    if "best_trial" in s:
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in s["best_params"].items())
        lines.append(f"best trial {s['best_trial']}: {params}; {OBJECTIVE_METRIC} "
                     f"{s['best_value']:.4f}; registered {s['registered_model']}")
        test = f"test accuracy: tuned {s['tuned_test_accuracy']:.4f}"
        if "baseline_test_accuracy" in s:
            test += f", baseline (trial {s['baseline_trial']}) {s['baseline_test_accuracy']:.4f}"
        lines.append(test)
    else:
        lines.append("no trial has completed yet: nothing to compare or register")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
