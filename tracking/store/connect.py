"""The tracking store: reached (or reported unreachable) in seconds, created safely, experiments
made ready for the UI.

    check_tracking_uri()           # TrackingServerError naming the URI when it does not answer
    prepare_store()                # a new SQLite store's tables, created once under a lock
    ensure_experiment("name")      # its id; created and tagged to open on the runs table

A team points every command of the suite at one server with
`MLFLOW_TRACKING_URI=http://host:5000`. MLflow's HTTP client retries a refused connection for
about four minutes by default; `fail_fast_http()` shortens that for our commands (only where
the user has not set the variables) and `check_tracking_uri()` checks that the server answers
before any work starts. MLflow creates a new SQLite store's tables on first use, and two
processes doing that at the same moment race (alembic migrations collide): `prepare_store()`
serialises the first use with a file lock beside the database.

Also here, because the Optuna storage uses them too: the password masker for URLs shown in
logs and tags, and the one database reachability check.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import mlflow
import requests
import sqlalchemy
from mlflow.exceptions import MlflowException
from sqlalchemy.pool import NullPool

from tracking.errors import UsageError
from tracking.store.ui import publish_runs_view

# Set for our commands unless the user chose otherwise: 3 retries 0 s, 2 s and 4 s apart
# (MLflow: 7 retries with a backoff factor of 2, about four minutes) and 60 s per request.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
CHECK_TIMEOUT_SECONDS = 5.0  # how long check_tracking_uri waits for an answer
# MLflow 3.17's UI opens an experiment on its GenAI (traces) view unless it is tagged so
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

_prepared: set[str] = set()


class TrackingServerError(UsageError):
    """The tracking server cannot be used; the message names its (password-free) URI."""


# --------------------------------------------------------------------------- addresses


def masked(url: str) -> str:
    """`url` without the password of its user part (`postgresql://u:***@host/db`)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def database_error(url: str, connect_args: dict[str, Any]) -> str | None:
    """None if the database at SQLAlchemy `url` takes a connection, else the first line of why
    not. `connect_args` go to the driver (e.g. `connect_timeout`: fail in seconds, not never)."""
    engine = None
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
        with engine.connect():
            return None
    except Exception as err:  # noqa: BLE001 - drivers raise their own types
        text = str(getattr(err, "orig", None) or err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        if isinstance(err, ModuleNotFoundError) and "psycopg" in str(err):
            first += "; SQLAlchemy 2.1 reads postgresql:// as psycopg 3: write postgresql+psycopg2://"
        return first
    finally:
        if engine is not None:
            engine.dispose()


# --------------------------------------------------------------------------- reaching it


def fail_fast_http() -> dict[str, str]:
    """Shorten MLflow's HTTP retries for this process where the user has not set them.

    Returns the variables it set. MLflow reads them at every request, so this works at any time.
    """
    chosen = {k: v for k, v in HTTP_DEFAULTS.items() if not os.environ.get(k)}
    os.environ.update(chosen)
    return chosen


def check_tracking_uri(uri: str | None = None, timeout: float = CHECK_TIMEOUT_SECONDS) -> str:
    """Raise TrackingServerError unless the tracking store at `uri` answers within `timeout` s.

    `uri` defaults to MLflow's current one (MLFLOW_TRACKING_URI). An http(s) server must answer
    its `/health` endpoint with 200 (or 401/403: a server behind a login); a database URI
    (postgresql://, mysql://) must accept a connection; any other store (sqlite, a folder) is
    opened (`prepare_store`: a new SQLite store gets its tables) and must answer a query. Also
    calls `fail_fast_http()`. Returns the URI checked.
    """
    fail_fast_http()
    uri = uri or mlflow.get_tracking_uri()
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        _check_http(uri, timeout)
    elif scheme.split("+")[0] in ("postgresql", "postgres", "mysql", "mssql"):
        seconds = max(1, int(timeout))
        problem = database_error(uri, {"connect_timeout": seconds})
        if problem is not None:
            raise TrackingServerError(
                f"tracking database {masked(uri)} is not reachable within {seconds} s "
                f"({problem})")
    else:
        try:
            prepare_store(uri)
        except Exception as err:  # noqa: BLE001 - files, SQLite and MLflow raise their own
            text = str(err).strip().splitlines()
            raise TrackingServerError(
                f"tracking store {masked(uri)} cannot be used: "
                f"{text[0] if text else type(err).__name__}") from None
    return uri


def _check_http(uri: str, timeout: float) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        answer = requests.get(url, timeout=timeout)
    except requests.exceptions.Timeout:
        raise TrackingServerError(
            f"MLflow tracking server {masked(uri)} did not answer within {timeout:g} s; "
            "is it running, and is MLFLOW_TRACKING_URI right?") from None
    except requests.exceptions.RequestException as err:
        reason = type(err).__name__
        if isinstance(err, requests.exceptions.ConnectionError):
            reason = "connection refused or host unknown"
        raise TrackingServerError(
            f"MLflow tracking server {masked(uri)} is not reachable ({reason}); start it "
            "(mlflow server ...) or point MLFLOW_TRACKING_URI at a running one") from None
    if answer.status_code >= 500:
        raise TrackingServerError(
            f"MLflow tracking server {masked(uri)} answered HTTP {answer.status_code} "
            f"at {url}; check the server's log")
    if answer.status_code not in (200, 401, 403):
        raise TrackingServerError(
            f"{masked(uri)} answers, but not as an MLflow tracking server (HTTP "
            f"{answer.status_code} at {url}); is MLFLOW_TRACKING_URI right?")


def tracking_reachable() -> bool:
    """Whether the tracking store answers a query now (no retries beyond MLflow's own)."""
    try:
        mlflow.MlflowClient().search_experiments(max_results=1)
    except Exception:  # noqa: BLE001 - any failure means we cannot log
        return False
    return True


# --------------------------------------------------------------------------- preparing it


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):]
    return None if path in ("", ":memory:") else Path(path)


def prepare_store(uri: str | None = None) -> str:
    """Make sure the tracking store at `uri` (default: MLflow's current) exists; return it."""
    uri = uri or mlflow.get_tracking_uri()
    if uri in _prepared:
        return uri
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{db}.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                mlflow.MlflowClient(uri).search_experiments(max_results=1)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    elif urlsplit(uri).scheme.lower() not in ("http", "https"):  # a folder, another database
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    _prepared.add(uri)
    return uri


class ArtifactLocationError(UsageError):
    """The experiment's artifact location cannot be written (read-only, no permission, full)."""


def local_artifact_path(uri: str) -> Path | None:
    """The folder a local artifact location (a path or file:// URI) names, else None (a
    server's, an object store's)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(uri)
    return None


def check_artifact_location(experiment_id: str) -> None:
    """Raise ArtifactLocationError (one line: the location and the OS's reason) when the
    experiment's artifact location is a local folder this process cannot write into; checked
    by creating and removing a file in it (or in its nearest existing parent: the location is
    made at the first artifact). Locations on a server or an object store are checked by
    their first write."""
    location = mlflow.MlflowClient().get_experiment(experiment_id).artifact_location
    folder = local_artifact_path(location)
    if folder is None:
        return
    probe_in = folder
    while not probe_in.exists() and probe_in.parent != probe_in:
        probe_in = probe_in.parent
    try:
        with tempfile.NamedTemporaryFile(dir=probe_in, prefix=".write-check-"):
            pass
    except OSError as err:
        raise ArtifactLocationError(
            f"cannot write to the artifact location {location} ({err.strerror or err}): "
            "checkpoints and the model could not be saved; make it writable, free space, or "
            "use an experiment whose artifact location can be written") from None


def ensure_experiment(name: str) -> str:
    """Id of experiment `name`, created (tagged to open on the runs table) if missing.

    Prepares the store first. Safe when several processes create it at once; a deleted
    experiment is refused (TrackingServerError).
    """
    prepare_store()
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            experiment_id = client.create_experiment(
                name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            publish_runs_view(experiment_id)  # the runs table opens on our key metrics
            return experiment_id
        except MlflowException:  # another process created it first
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage != "active":
        raise TrackingServerError(
            f"experiment {name!r} is deleted; restore it (mlflow experiments restore "
            f"--experiment-id {exp.experiment_id}) or choose another experiment name")
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id
