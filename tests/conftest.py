"""Shared fixtures: every test that tracks gets a real MLflow store in its own temporary folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Quiet TensorFlow's start-up chatter before any test imports Keras.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session", autouse=True)
def image_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Folder data sets cache their decoded images here, not in the user's ~/.cache
    (subprocesses inherit the variable)."""
    folder = tmp_path_factory.mktemp("image-cache")
    previous = os.environ.get("KERAS_MLFLOW_SUITE_CACHE")
    os.environ["KERAS_MLFLOW_SUITE_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("KERAS_MLFLOW_SUITE_CACHE", None)
    else:
        os.environ["KERAS_MLFLOW_SUITE_CACHE"] = previous


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh SQLite MLflow store under tmp_path; the test runs with tmp_path as cwd."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
