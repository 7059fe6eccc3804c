"""The MLflow UI: where our runs are shown, and a runs-table view that opens on our metrics.

MLflow 3.17's UI opens an experiment on its GenAI view and shows no metric column until one is
picked. `publish_runs_view()` stores a shared view of the runs table (the experiment tag
`mlflow.sharedViewState.<key>`, the UI's own "share view" format) that shows the test metrics
first, sorted by test accuracy; `runs_table_url()` is the address that opens it, `run_url()`
one run's page (a training run, a tuning or study parent), `registered_model_url()` a
registered model or one of its versions. `python -m tracking.server ui` prints the first.

Every address carries `workflowType=machine_learning`, the query parameter by which the UI
chooses its "Model training" pages over its GenAI ones (seen in MLflow 3.17.2 in headless
Chromium: without it a run page and a registered model open with the GenAI side bar of
traces, prompts and AI Gateway; tests/test_ui.py checks every address the commands print).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from urllib.parse import quote, urlsplit, urlunsplit

import mlflow

LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store by default
UI_URL_ENV = "SUITE_UI_URL"  # where the UI of a local store is, when not LOCAL_UI
ML_PAGES = "workflowType=machine_learning"  # the UI's "Model training" pages, not GenAI's
VIEW_KEY = "key-metrics"  # name of the shared runs-table view
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
# runs-table columns of the shared view, in order (the UI's "type.`name`" column ids)
KEY_METRICS = ("test_accuracy", "test_f1_macro", "best_epoch", "epochs_run", "train_seconds")
KEY_PARAMS = ("model", "dataset", "seed", "effective_epochs", "effective_batch_size",
              "effective_learning_rate", "num_params")


def ui_base_url(ui_url: str | None = None) -> str:
    """Where the UI of the tracking store is: `ui_url` when given; else the tracking server
    itself (an http(s) MLFLOW_TRACKING_URI, password left out); else $SUITE_UI_URL; else
    `mlflow ui`'s default, http://127.0.0.1:5000. For a local store (sqlite, files) the UI is
    wherever the user runs `mlflow ui --port N`: say so with --ui-url or SUITE_UI_URL."""
    uri = ui_url or mlflow.get_tracking_uri()
    if urlsplit(uri).scheme.lower() in ("http", "https"):
        parts = urlsplit(uri)
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return os.environ.get(UI_URL_ENV) or LOCAL_UI


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
    mlflow.MlflowClient().set_experiment_tag(
        experiment_id, VIEW_TAG_PREFIX + key, json.dumps(runs_view_state(expanded)))
    return key


def runs_table_url(experiment_id: str, base_url: str | None = None,
                   view_key: str | None = VIEW_KEY) -> str:
    """Address of the experiment's training-runs table (not the GenAI view), optionally with
    a published view."""
    query = ML_PAGES
    if view_key:
        query += f"&viewStateShareKey={view_key}"
    return f"{ui_base_url(base_url)}/#/experiments/{experiment_id}/runs?{query}"


def run_url(experiment_id: str, run_id: str, base_url: str | None = None) -> str:
    """Address of one run's page in the UI (its Overview lists the run's logged models)."""
    return f"{ui_base_url(base_url)}/#/experiments/{experiment_id}/runs/{run_id}?{ML_PAGES}"


def registered_model_url(name: str, version: str | int | None = None,
                         base_url: str | None = None) -> str:
    """Address of a registered model's page in the UI, or of one of its versions."""
    path = f"/#/models/{quote(name, safe='')}"
    if version is not None:
        path += f"/versions/{version}"
    return f"{ui_base_url(base_url)}{path}?{ML_PAGES}"
