"""Working against a shared MLflow tracking server: fail fast, and open the UI on our metrics.

    python -m tracking.server check [--uri URI]             # exit 2, naming the URI, if unreachable
    python -m tracking.server ui [--experiment NAME]        # address of the runs table, key metrics

A team points every command of the suite at one server with
`MLFLOW_TRACKING_URI=http://host:5000`. MLflow's HTTP client retries a refused connection for
about four minutes by default; `fail_fast_http()` shortens that for our commands (only where
the user has not set the variables) and `check_tracking_uri()` checks that the server answers
before any work starts, so a wrong address is reported in seconds.

MLflow 3.17's UI opens an experiment on its GenAI view and shows no metric column until one is
picked. `publish_runs_view()` stores a shared view of the runs table (the experiment tag
`mlflow.sharedViewState.<key>`, the UI's own "share view" format) that shows the test metrics
first, sorted by test accuracy; `runs_table_url()` is the address that opens it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit, urlunsplit

# Set for our commands unless the user chose otherwise: 3 retries 0 s, 2 s and 4 s apart
# (MLflow: 7 retries with a backoff factor of 2, about four minutes) and 60 s per request.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
CHECK_TIMEOUT_SECONDS = 5.0  # how long check_tracking_uri waits for an answer
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store
VIEW_KEY = "key-metrics"  # name of the shared runs-table view
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
# runs-table columns of the shared view, in order (the UI's "type.`name`" column ids)
KEY_METRICS = ("test_accuracy", "test_f1_macro", "best_epoch", "epochs_run", "train_seconds")
KEY_PARAMS = ("model", "dataset", "seed", "effective_epochs", "effective_batch_size",
              "effective_learning_rate", "num_params")


class TrackingServerError(RuntimeError):
    """The tracking server cannot be used; the message names its (password-free) URI."""


def fail_fast_http() -> dict[str, str]:
    """Shorten MLflow's HTTP retries for this process where the user has not set them.

    Returns the variables it set. MLflow reads them at every request, so this works at any time.
    """
    chosen = {k: v for k, v in HTTP_DEFAULTS.items() if not os.environ.get(k)}
    os.environ.update(chosen)
    return chosen


def masked(uri: str) -> str:
    """`uri` without the password of its user part."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def check_tracking_uri(uri: str | None = None, timeout: float = CHECK_TIMEOUT_SECONDS) -> str:
    """Raise TrackingServerError unless the tracking store at `uri` answers within `timeout` s.

    `uri` defaults to MLflow's current one (MLFLOW_TRACKING_URI). An http(s) server must answer
    its `/health` endpoint (any answer below 500 counts: a login page still proves the address);
    a database URI (postgresql://, mysql://) must accept a connection. Local stores (sqlite,
    files) pass. Also calls `fail_fast_http()`. Returns the URI checked.
    """
    import mlflow

    fail_fast_http()
    uri = uri or mlflow.get_tracking_uri()
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        _check_http(uri, timeout)
    elif scheme.split("+")[0] in ("postgresql", "postgres", "mysql", "mssql"):
        _check_database(uri, timeout)
    return uri


def _check_http(uri: str, timeout: float) -> None:
    import requests

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


def _check_database(uri: str, timeout: float) -> None:
    import sqlalchemy

    seconds = max(1, int(timeout))
    connect_args = {"connect_timeout": seconds}
    engine = None
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=connect_args)
        with engine.connect():
            pass
    except Exception as err:  # drivers raise their own types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, ModuleNotFoundError) and "psycopg" in str(err):
            first += "; SQLAlchemy 2.1 reads postgresql:// as psycopg 3: write postgresql+psycopg2://"
        raise TrackingServerError(
            f"tracking database {masked(uri)} is not reachable within {seconds} s ({first})"
        ) from None
    finally:
        if engine is not None:
            engine.dispose()


# --------------------------------------------------------------------------- the UI


def ui_base_url(tracking_uri: str | None = None) -> str:
    """Where the UI of the tracking store is: the server itself, or `mlflow ui`'s default."""
    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    if urlsplit(uri).scheme.lower() in ("http", "https"):
        parts = urlsplit(uri)
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return LOCAL_UI


def column_id(kind: str, name: str) -> str:
    """A runs-table column id as the MLflow UI spells it: metrics.`test_accuracy`."""
    return f"{kind}.`{name}`"


def runs_view_state(expanded: Iterable[str] = ()) -> dict:
    """The shared view: key metrics then key params, best test accuracy first."""
    columns = ([column_id("metrics", m) for m in KEY_METRICS]
               + [column_id("params", p) for p in KEY_PARAMS])
    return {
        "searchFilter": "",
        "orderByKey": column_id("metrics", "test_accuracy"),
        "orderByAsc": False,
        "selectedColumns": columns,
        "columnOrder": columns,
        "runsExpanded": {run_id: True for run_id in expanded},
    }


def publish_runs_view(experiment_id: str, expanded: Iterable[str] = (),
                      key: str = VIEW_KEY) -> str:
    """Store the key-metrics view on the experiment (expanding the given parent runs)."""
    import mlflow

    mlflow.MlflowClient().set_experiment_tag(
        experiment_id, VIEW_TAG_PREFIX + key, json.dumps(runs_view_state(expanded)))
    return key


def runs_table_url(experiment_id: str, base_url: str | None = None,
                   view_key: str | None = VIEW_KEY) -> str:
    """Address of the experiment's training-runs table (not the GenAI view), optionally with
    a published view."""
    query = "workflowType=machine_learning"
    if view_key:
        query += f"&viewStateShareKey={view_key}"
    return f"{ui_base_url(base_url)}/#/experiments/{experiment_id}/runs?{query}"


def run_url(experiment_id: str, run_id: str, base_url: str | None = None) -> str:
    """Address of one run's page in the UI."""
    return f"{ui_base_url(base_url)}/#/experiments/{experiment_id}/runs/{run_id}"


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """`check`: exit 2 with the reason when the server is unreachable; `ui`: publish the view
    and print the runs-table address."""
    from tracking.config import Config

    parser = argparse.ArgumentParser(prog="python -m tracking.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="is the tracking server reachable?")
    check.add_argument("--uri", default=None, help="default: MLFLOW_TRACKING_URI")
    check.add_argument("--timeout", type=float, default=CHECK_TIMEOUT_SECONDS)
    ui = sub.add_parser("ui", help="publish the key-metrics view, print the runs-table address")
    ui.add_argument("--experiment", default=Config.__dataclass_fields__["experiment"].default)
    args = parser.parse_args(argv)
    try:
        uri = check_tracking_uri(getattr(args, "uri", None),
                                 getattr(args, "timeout", CHECK_TIMEOUT_SECONDS))
    except TrackingServerError as err:
        parser.exit(2, f"error: {err}\n")
    if args.command == "check":
        print(f"{masked(uri)} is reachable")
        return 0
    import mlflow

    experiment = mlflow.MlflowClient().get_experiment_by_name(args.experiment)
    if experiment is None:
        parser.exit(2, f"error: no experiment named {args.experiment!r} in {masked(uri)}\n")
    publish_runs_view(experiment.experiment_id)
    print(runs_table_url(experiment.experiment_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
