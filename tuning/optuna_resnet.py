"""Tune ResNet-50's epochs, batch size and learning rate with Optuna; every trial an MLflow run.

In the original comparison ResNet-50 came last (test accuracy 0.95 against 0.98 to 0.99 for the
others) and its epochs and batch size were the suspects. This study answers that question:

    python -m tuning.optuna_resnet --n-trials 20 --max-epochs 10      # digits, files in the cwd
    python -m tuning.optuna_resnet --study-name resnet50-digits ...   # resume (same total)
    mlflow run . -e tune -P n_trials=20 --experiment-name resnet50-tuning

What is tuned is `search_space` below: epochs (up to --max-epochs), batch size (powers of two)
and the peak learning rate (log-uniform). The original setting, 5 epochs at batch 128 with the
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

Resuming: a new study keeps what it searches as its user attribute `search_space` (model, data
set and each parameter's range, `space_record`). A command that finds the study existing, a
resume or another worker, must search the same space, or it stops with status 2 before any
run starts, naming the study, both spaces and the flag to fix (or: use a new --study-name).
A study from before that attribute is checked against its trials' parameter ranges (its model
and data set cannot be checked); it is accepted as it is and not stamped.

Database outages (PostgreSQL and other servers; a SQLite file has none): a worker waits out a
server that is away for up to STORAGE_OUTAGE_SECONDS, e.g. a restart. `OutageTolerantStorage`
wraps every method of Optuna's RDBStorage, each one transaction, in a retry (`OutageGuard`)
that runs it again whole on a lost or refused connection (OperationalError, also behind
Optuna's StorageInternalError), backing off from 0.5 s to STORAGE_RETRY_MAX_DELAY;
`pool_pre_ping` replaces the connections the server dropped. So creating a trial, the reports
and pruning checks inside a training trial, telling its result, reading the study and the
heartbeats all pause instead of failing the trial; taking the admission lock waits likewise.
One warning line says when an outage starts, one line when it ends. An outage that lasts
longer stops the worker with a one-line error and status 1 (its runs end FAILED; a trial it
left running is failed and retried by the next worker after the grace period); a heartbeat
that gives up is only skipped. A write that reached the database just as its connection
broke is run again: in that narrow window a trial could be created twice (the copy, never
started, stays RUNNING and takes a place of --n-trials) or told twice (Optuna's
UpdateFinishedTrialError stops the worker).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import inspect
import os
import signal
import socket
import sys
import threading
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
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool
from tqdm import tqdm

from tracking.callbacks import StopRun
from tracking.cli import number
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


def search_space(max_epochs: int) -> dict[str, BaseDistribution]:
    """What is tuned: the Config fields a trial overrides, as Optuna distributions."""
    return {"epochs": IntDistribution(min(MIN_EPOCHS, max_epochs), max_epochs),
            "batch_size": CategoricalDistribution(BATCH_SIZES),
            "learning_rate": FloatDistribution(*LEARNING_RATES, log=True)}


def suggest(trial: optuna.Trial, max_epochs: int) -> dict[str, Any]:
    """One point of the search space."""
    space: dict[str, Any] = search_space(max_epochs)
    epochs, rate = space["epochs"], space["learning_rate"]
    return {
        "epochs": trial.suggest_int("epochs", epochs.low, epochs.high),
        "batch_size": trial.suggest_categorical("batch_size", space["batch_size"].choices),
        "learning_rate": trial.suggest_float("learning_rate", rate.low, rate.high, log=rate.log),
    }


def describe(distribution: BaseDistribution) -> str:
    """`2..10`, `16,32,64` or `0.0001..0.01 log`: how the study records and reports a range."""
    if isinstance(distribution, CategoricalDistribution):
        return ",".join(map(str, distribution.choices))
    if isinstance(distribution, IntDistribution | FloatDistribution):
        text = f"{distribution.low!r}..{distribution.high!r}"
        return text + " log" if distribution.log else text
    return repr(distribution)


def space_record(config: TuneConfig) -> dict[str, str]:
    """What a study is about, kept as its user attribute SPACE_ATTR: resuming it must match."""
    return {"model": config.model, "dataset": config.dataset,
            **{name: describe(d) for name, d in search_space(config.max_epochs).items()}}


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
STORAGE_OUTAGE_SECONDS = 60  # a worker waits this long for its database server to come back
STORAGE_RETRY_MAX_DELAY = 5  # seconds between tries during an outage, at most (from 0.5)
LOCK_KEY = zlib.crc32(b"tuning.optuna_resnet")  # PostgreSQL advisory lock id of this module
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)  # what --n-trials counts
RUN_ID_ATTR = "mlflow_run_id"  # trial user attribute linking a trial to its MLflow run
MODEL_URI_ATTR = "mlflow_model_uri"  # trial user attribute: the logged model (models:/...)
BASELINE_ATTR = "baseline"  # trial user attribute marking the enqueued reference setting
SPACE_ATTR = "search_space"  # study user attribute: space_record() of the command that made it


class TuneError(ValueError):
    """A tuning setting is invalid; the message says which and what is allowed."""


class StorageUnavailable(RuntimeError):
    """The Optuna database stayed unreachable for longer than STORAGE_OUTAGE_SECONDS."""


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


def causes(err: BaseException) -> Iterator[BaseException]:
    """`err`, then what it was raised from or while handling, and so on."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__


def outage_cause(err: BaseException) -> str | None:
    """The database error behind `err` (Optuna wraps them) if it is a lost or refused
    connection, the server shutting down or starting up; None for any other error."""
    for cause in causes(err):
        if isinstance(cause, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError) or (
                isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.connection_invalidated):
            lines = str(getattr(cause, "orig", None) or cause).strip().splitlines()
            return lines[0] if lines else type(cause).__name__
    return None


class OutageGuard:
    """Runs storage operations again while the database server is away, with a backoff from
    0.5 s to STORAGE_RETRY_MAX_DELAY, for STORAGE_OUTAGE_SECONDS from the outage's first error
    (one clock per database, shared by the threads); then raises StorageUnavailable, and fails
    at once while the server stays away. Prints one line when an outage starts and one when
    it ends."""

    def __init__(self, url: str) -> None:
        self.shown = masked(url).replace("postgresql+psycopg2://", "postgresql://", 1)
        self._lock = threading.Lock()
        self._down_since: float | None = None

    def call(self, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        delay = 0.5
        while True:
            try:
                result = operation(*args, **kwargs)
            except Exception as err:
                cause = outage_cause(err)
                if cause is None:
                    raise
                now = time.monotonic()
                with self._lock:
                    if self._down_since is None:
                        self._down_since = now
                        print(f"warning: storage {self.shown} unavailable ({cause}); "
                              f"retrying for up to {STORAGE_OUTAGE_SECONDS} s",
                              file=sys.stderr, flush=True)
                    waited = now - self._down_since
                if waited >= STORAGE_OUTAGE_SECONDS:
                    raise StorageUnavailable(
                        f"storage {self.shown} unavailable for {waited:.0f} s ({cause}); "
                        "start the worker again when the database is back (a trial it left "
                        "running is then failed and retried)") from err
                time.sleep(min(delay, STORAGE_OUTAGE_SECONDS - waited))
                delay = min(2 * delay, STORAGE_RETRY_MAX_DELAY)
                continue
            if self._down_since is not None:
                with self._lock:
                    if self._down_since is not None:
                        print(f"storage {self.shown} available again after "
                              f"{time.monotonic() - self._down_since:.0f} s",
                              file=sys.stderr, flush=True)
                        self._down_since = None
            return result


_GUARDS: dict[str, OutageGuard] = {}
_GUARDS_LOCK = threading.Lock()


def outage_guard(url: str) -> OutageGuard:
    """The one OutageGuard of this process for the database at `url`."""
    key = with_driver(url)
    with _GUARDS_LOCK:
        return _GUARDS.setdefault(key, OutageGuard(key))


_in_guarded_call = threading.local()


def _guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: RDBStorage, *args: Any, **kwargs: Any) -> Any:
        if getattr(_in_guarded_call, "active", False):  # the outermost call retries, whole
            return method(self, *args, **kwargs)
        _in_guarded_call.active = True
        try:
            return outage_guard(self.url).call(method, self, *args, **kwargs)
        finally:
            _in_guarded_call.active = False
    return call


class OutageTolerantStorage(RDBStorage):
    """RDBStorage whose every operation waits out a short outage of the database server.

    Each method of RDBStorage (those Optuna's cache calls included) is one transaction: after
    a connection error it was rolled back, so it is run again whole, on a fresh connection.
    The heartbeat thread never dies of an outage: a heartbeat that gives up is skipped."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            _guarded(RDBStorage.record_heartbeat)(self, trial_id)
        except StorageUnavailable:
            pass  # the worker's own storage calls stop it; the next heartbeat may get through


for _name, _method in vars(RDBStorage).items():
    if (inspect.isfunction(_method) and not _name.startswith("__")
            and _name not in vars(OutageTolerantStorage)):
        setattr(OutageTolerantStorage, _name, _guarded(_method))
del _name, _method


@contextlib.contextmanager
def storage_lock(url: str) -> Iterator[None]:
    """Serialise workers sharing `url`: a PostgreSQL advisory lock, for SQLite a lock on the
    database's folder (not the file: closing a second descriptor of the file would drop
    SQLite's own locks). Other databases get no lock: run --create-only before the workers.
    Taking the PostgreSQL lock waits out an outage (OutageGuard); a server that restarts while
    the lock is held has released it, so a failed unlock after an outage is no error."""

    parsed = make_url(with_driver(url))
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        engine = sqlalchemy.create_engine(parsed, poolclass=NullPool,
                                          connect_args=_connect_args(url),
                                          isolation_level="AUTOCOMMIT")
        lock, unlock = (sqlalchemy.text(f"SELECT pg_advisory_{op}(:k)")
                        for op in ("lock", "unlock"))

        def acquire() -> sqlalchemy.Connection:
            conn = engine.connect()
            try:
                conn.execute(lock, {"k": LOCK_KEY})
            except BaseException:
                with contextlib.suppress(SQLAlchemyError):
                    conn.close()
                raise
            return conn

        try:
            conn = outage_guard(url).call(acquire)
            try:
                yield
            finally:
                try:
                    conn.execute(unlock, {"k": LOCK_KEY})
                except SQLAlchemyError as err:
                    if outage_cause(err) is None:
                        raise
                finally:
                    with contextlib.suppress(SQLAlchemyError):
                        conn.close()
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
    """The study's storage; on a database server (not a SQLite file) it outlives outages."""
    engine_kwargs: dict[str, Any] = {"connect_args": _connect_args(config.storage)}
    kind = RDBStorage
    if not config.storage.startswith("sqlite"):
        engine_kwargs["pool_pre_ping"] = True  # replace connections the server has closed
        kind = OutageTolerantStorage
    return kind(with_driver(config.storage), engine_kwargs=engine_kwargs,
                heartbeat_interval=config.heartbeat_interval, grace_period=config.grace_period,
                heartbeat_stale_trial_callback=RetryLostTrial(max_retry=MAX_RETRIES))


def default_pruner() -> optuna.pruners.BasePruner:
    # steps are epochs counted from 1, and the MedianPruner may prune from step n_warmup_steps
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                       n_warmup_steps=PRUNER_WARMUP_EPOCHS + 1)


def check_search_space(study: optuna.Study, config: TuneConfig) -> None:
    """Raise TuneError unless `config` searches the space `study` was created with (its
    SPACE_ATTR). A study from before that attribute is checked against its trials'
    distributions, which say nothing of the model and data set."""
    asked = space_record(config)
    recorded = study.user_attrs.get(SPACE_ATTR)
    if recorded is None:
        seen: dict[str, set[str]] = {}
        for trial in study.get_trials(deepcopy=False):
            for name, distribution in trial.distributions.items():
                seen.setdefault(name, set()).add(describe(distribution))
        recorded = {name: " and ".join(sorted(texts)) for name, texts in seen.items()}
        differ = [k for k in recorded if recorded[k] != asked.get(k)]
    else:
        differ = [k for k in {**recorded, **asked} if recorded.get(k) != asked.get(k)]
    if not differ:
        return
    hints = []
    for key in differ:
        value = str(recorded.get(key, "(none)"))
        low, _, high = value.partition("..")
        if key in ("model", "dataset"):
            hints.append(f"--{key} {value}")
        elif key == "epochs" and low.isdigit() and high.isdigit():
            hints.append(f"--max-epochs {high}" if int(low) == min(MIN_EPOCHS, int(high))
                         else f"MIN_EPOCHS = {low} and --max-epochs {high}")
        else:
            constant = {"batch_size": "BATCH_SIZES", "learning_rate": "LEARNING_RATES"}
            hints.append(f"{constant.get(key, key)} {value} in tuning/optuna_resnet.py")

    def show(space: dict[str, Any]) -> str:
        return ", ".join(f"{k} {space.get(k, '(none)')}" for k in differ)

    raise TuneError(f"study {config.study_name!r} in {masked(config.storage)} was created with "
                    f"{show(recorded)}, this command asks for {show(asked)}: use a new "
                    f"--study-name, or resume with the same settings ({'; '.join(hints)})")


def check_resume(config: TuneConfig) -> None:
    """If the study exists, check_search_space (main's check before loading data and starting
    runs; open_study checks again under the lock)."""
    config = config.resolved()
    with warnings.catch_warnings(), storage_lock(config.storage):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = open_storage(config)
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
    seed: `seed` plus the trials already in the study, so a resumed study or a second worker
    does not replay the first one's random proposals.
    """
    storage = open_storage(config)
    existing = optuna.create_study(storage=storage, study_name=config.study_name,
                                   direction="maximize", load_if_exists=True)
    if existing.trials or SPACE_ATTR in existing.user_attrs:
        check_search_space(existing, config)
    else:  # new (or empty and from before the attribute)
        existing.set_user_attr(SPACE_ATTR, space_record(config))
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

    One parent MLflow run for this process (nested in the caller's active run, if any);
    every trial a nested run. `pruner` replaces the
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

        # under a caller's active run (tracking.study), the study's run is its child
        parent = mlflow.start_run(experiment_id=experiment_id, run_name=config.study_name,
                                  nested=mlflow.active_run() is not None)
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
                "objective": OBJECTIVE_METRIC,
                **{f"space_{name}": describe(distribution)
                   for name, distribution in search_space(config.max_epochs).items()},
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
        except Exception as err:
            lost = next((e for e in causes(err) if isinstance(e, StorageUnavailable)), None)
            if lost is None:
                raise
            mlflow.set_tag("stop_reason", str(lost))
            if lost is err:
                raise
            # Optuna, failing to record the trial's end, may raise something else on top
            raise StorageUnavailable(str(lost)) from err
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


def build_parser() -> argparse.ArgumentParser:
    d = TuneConfig()
    p = argparse.ArgumentParser(prog="python -m tuning.optuna_resnet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=d.dataset)
    p.add_argument("--data-dir", default=d.data_dir)
    p.add_argument("--n-trials", type=number(int, "n-trials"), default=d.n_trials,
                   help="total trials of the study over all workers (complete + pruned)")
    p.add_argument("--timeout", type=number(float, "timeout"), default=d.timeout,
                   help="seconds after which this worker starts no new trial (0 = none)")
    p.add_argument("--max-epochs", type=number(int, "max-epochs"), default=d.max_epochs,
                   help="upper bound of the tuned epochs")
    p.add_argument("--study-name", default=d.study_name,
                   help="default <model>-<dataset>; an existing study is resumed")
    p.add_argument("--storage", default=d.storage,
                   help="SQLAlchemy URL of the Optuna database (default: optuna.db next to the "
                        "MLflow store); postgresql://... for workers on several machines")
    p.add_argument("--seed", type=number(int, "seed"), default=d.seed)
    p.add_argument("--experiment", default=d.experiment, help="default <model>-tuning")
    p.add_argument("--create-only", action="store_true",
                   help="create the study and the MLflow tables, then exit (before workers)")
    # for tests and smoke runs
    p.add_argument("--model", default=d.model, help=argparse.SUPPRESS)
    p.add_argument("--limit", type=number(int, "limit"), default=d.limit, help=argparse.SUPPRESS)
    p.add_argument("--heartbeat-interval", type=number(int, "heartbeat interval"),
                   default=d.heartbeat_interval, help=argparse.SUPPRESS)
    p.add_argument("--grace-period", type=number(int, "grace period"),
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
        check_resume(config)  # an existing study must have this search space
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
    except TuneError as err:  # another worker created the study meanwhile; no run started
        parser.error(str(err))
    except StorageUnavailable as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
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
