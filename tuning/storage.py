"""The Optuna database behind a study, made to survive what shared databases do.

    storage = open_storage(url, heartbeat_interval=60, grace_period=240)
    with storage_lock(url):            # one worker at a time: create, enqueue, admit a trial
        ...

- **Where**: `default_storage()` is `optuna.db` next to a SQLite MLflow store, else in the
  working directory; any SQLAlchemy URL works (`postgresql://` means psycopg2, `with_driver`).
  `check_storage` refuses an unknown scheme, a non-URL or a server that does not answer within
  CONNECT_TIMEOUT_SECONDS, before any run starts.
- **Outages** (PostgreSQL and other servers; a SQLite file has none): `OutageTolerantStorage`
  wraps every method of Optuna's RDBStorage, each one transaction, in a retry (`OutageGuard`)
  that runs it again whole on a lost or refused connection (OperationalError, also behind
  Optuna's StorageInternalError), backing off from 0.5 s to STORAGE_RETRY_MAX_DELAY, for up
  to STORAGE_OUTAGE_SECONDS; `pool_pre_ping` replaces the connections the server dropped.
  One warning line says when an outage starts, one line when it ends. A longer outage raises
  StorageUnavailable (the worker stops, status 1); a heartbeat that gives up is only skipped.
  A write that reached the database just as its connection broke is run again: in that
  narrow window a trial could be created twice (the copy, never started, stays RUNNING and
  takes a place of --n-trials) or told twice (Optuna's UpdateFinishedTrialError stops the
  worker).
- **Workers together**: `storage_lock` serialises study creation, the baseline, the MLflow
  tables and the admission of each trial (PostgreSQL advisory lock; for SQLite a lock on its
  folder); on other databases run `--create-only` once before starting workers.
- **Lost workers**: trials send heartbeats; a trial silent for the grace period belongs to a
  dead worker and is failed and retried (at most MAX_RETRIES times) by the next worker, which
  first closes the MLflow runs the dead one left RUNNING as FAILED (`RetryLostTrial`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import os
import socket
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import mlflow
import optuna
import sqlalchemy
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from tracking.errors import UsageError
from tracking.store.connect import database_error, masked
from tracking.store.lifecycle import HOST_TAG, PID_TAG, process_alive

MAX_RETRIES = 2  # a dead worker's trial is run again at most this often
CONNECT_TIMEOUT_SECONDS = 3  # an unreachable database server is reported after this long
STORAGE_OUTAGE_SECONDS = 60  # a worker waits this long for its database server to come back
STORAGE_RETRY_MAX_DELAY = 5  # seconds between tries during an outage, at most (from 0.5)
LOCK_KEY = zlib.crc32(b"tuning.optuna_resnet")  # PostgreSQL advisory lock id (kept: workers of
# older versions on the same database must still exclude each other)
RUN_ID_ATTR = "mlflow_run_id"  # trial user attribute linking a trial to its MLflow run


class StorageError(UsageError):
    """The storage URL is wrong or its database does not answer; the message says which."""


class StorageUnavailable(RuntimeError):
    """The Optuna database stayed unreachable for longer than STORAGE_OUTAGE_SECONDS."""


def default_storage() -> str:
    """`optuna.db` in the folder of a SQLite MLflow store, else in the working directory."""
    tracking = mlflow.get_tracking_uri()
    if tracking.startswith("sqlite:"):
        database = make_url(tracking).database
        if database and database != ":memory:":
            return f"sqlite:///{os.path.join(os.path.dirname(database), 'optuna.db')}"
    return "sqlite:///optuna.db"


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
    """Raise StorageError unless `url` is a database URL whose server answers within seconds."""
    hint = "e.g. sqlite:///optuna.db or postgresql://USER:PASSWORD@HOST/DATABASE"
    try:
        parsed = make_url(with_driver(url))
        parsed.get_dialect()
    except NoSuchModuleError:  # before its base class, ArgumentError
        raise StorageError(f"unknown storage scheme {url.split(':', 1)[0]!r}; {hint}") from None
    except ArgumentError:
        raise StorageError(f"storage {url!r} is not a database URL; {hint}") from None
    except ImportError as err:
        raise StorageError(f"storage {masked(url)} needs a database driver: {err}") from None
    problem = database_error(with_driver(url), _connect_args(url))
    if problem is not None:
        raise StorageError(f"cannot reach storage {masked(url)}: {problem}")


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
    """Optuna's retry of a trial whose worker was lost, after closing the MLflow runs that
    worker left RUNNING (its trial run and its parent run) as KILLED, MLflow's state for a run
    whose process was killed, with `stop_reason`. Optuna calls it for a trial whose heartbeats
    stopped for the grace period; `reclaim_dead_trials` for one whose process is gone."""

    def __init__(self, max_retry: int | None = None,
                 reason: str = "stopped sending heartbeats") -> None:
        super().__init__(max_retry=max_retry)
        self.reason = reason

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id:
            client = mlflow.MlflowClient()
            reason = f"worker lost: trial {trial.number} {self.reason}"
            try:
                run = client.get_run(run_id)
                client.set_tag(run_id, "trial_state", TrialState.FAIL.name)
                for rid in (run_id, run.data.tags.get(MLFLOW_PARENT_RUN_ID)):
                    if rid and client.get_run(rid).info.status == "RUNNING":
                        client.set_tag(rid, "stop_reason", reason)
                        client.set_terminated(rid, "KILLED")
            except MlflowException as err:  # e.g. this worker tracks to another MLflow store
                print(f"warning: could not close the runs of trial {trial.number}: {err}",
                      file=sys.stderr)
        super().__call__(study, trial)


def trial_process(trial: FrozenTrial) -> tuple[str, int] | None:
    """(host, pid) of the worker running `trial`, from its MLflow run's tags; None when the
    trial has no run yet or the run cannot be read."""
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    if not run_id:
        return None
    try:
        tags = mlflow.MlflowClient().get_run(run_id).data.tags
    except MlflowException:
        return None
    pid = tags.get(PID_TAG, "")
    return (tags[HOST_TAG], int(pid)) if HOST_TAG in tags and pid.isdigit() else None


def reclaim_dead_trials(study: optuna.Study) -> list[int]:
    """Fail and retry, at once, each RUNNING trial whose worker ran on this host and whose
    process is gone (SIGKILL, the OOM killer, a closed terminal): Optuna's heartbeat would
    reclaim it only after its grace period, and a worker started again right away would find
    the study's total taken and stop short. Returns the numbers of the trials reclaimed.
    Call under `storage_lock`."""
    here, reclaimed = socket.gethostname(), []
    retry = RetryLostTrial(max_retry=MAX_RETRIES, reason="lost its process")
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        where = trial_process(trial)
        if where is None or where[0] != here or where[1] == os.getpid() or \
                process_alive(where[1]):
            continue
        study.tell(trial.number, state=TrialState.FAIL)
        retry(study, study.get_trials(deepcopy=False)[trial.number])
        reclaimed.append(trial.number)
    return reclaimed


def open_storage(url: str, heartbeat_interval: int, grace_period: int) -> RDBStorage:
    """The study's storage at `url`, with heartbeats every `heartbeat_interval` s and lost
    trials retried after `grace_period` s; on a database server (not a SQLite file) it
    outlives outages."""
    engine_kwargs: dict[str, Any] = {"connect_args": _connect_args(url)}
    kind = RDBStorage
    if not url.startswith("sqlite"):
        engine_kwargs["pool_pre_ping"] = True  # replace connections the server has closed
        kind = OutageTolerantStorage
    return kind(with_driver(url), engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                heartbeat_stale_trial_callback=RetryLostTrial(max_retry=MAX_RETRIES))
