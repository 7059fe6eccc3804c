"""The tracking store: created once, safely, however many processes start together.

MLflow creates a new SQLite store's tables on first use, and two processes doing that at
the same moment race (alembic migrations collide). `prepare_store()` serialises the first
use with a file lock beside the database; afterwards it costs one lock and one query.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

# MLflow 3.17's UI opens an experiment on its GenAI (traces) view unless it is tagged so
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

_prepared: set[str] = set()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):]
    return None if path in ("", ":memory:") else Path(path)


def prepare_store(uri: str | None = None) -> str:
    """Make sure the tracking store at `uri` (default: MLflow's current) exists; return it."""
    import mlflow

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
    _prepared.add(uri)
    return uri




def ensure_experiment(name: str) -> str:
    """Id of experiment `name`, created (tagged to open on the runs table) if missing.

    Safe when several processes create it at once; a deleted experiment is refused.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from tracking.server import publish_runs_view

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
        raise MlflowException(
            f"experiment {name!r} is deleted; restore it or choose another experiment name")
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id
