"""The tracking store: created once, safely, however many processes start together.

MLflow creates a new SQLite store's tables on first use, and two processes doing that at
the same moment race (alembic migrations collide). `prepare_store()` serialises the first
use with a file lock beside the database; afterwards it costs one lock and one query.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

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


__all__ = ["prepare_store", "sqlite_path"]
