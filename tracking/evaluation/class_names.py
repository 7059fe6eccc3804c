"""A run's class names: the map from the label indices of its per-class metric keys, its
predictions table and its model's outputs to the names of the classes.

    log_class_names(("cat", "dog"))          # class_names.json: {"0": "cat", "1": "dog"}
    read_class_names(run_id)                 # ("cat", "dog"), or None for a run without it

`class_names_param` is the comma-joined param shown in the runs table, only where that is
exact (no name holds a comma and MLflow keeps the whole text).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

CLASS_NAMES_FILE = "class_names.json"  # {"<label index>": "<class name>"}


def class_names_param(class_names: Sequence[str]) -> dict[str, str]:
    """`class_names` comma-joined, only where that is exact: no name holds a comma and MLflow
    keeps the whole text (it would cut a longer one silently); else {}."""
    joined = ",".join(class_names)
    if any("," in name for name in class_names) or len(joined) > MAX_PARAM_VAL_LENGTH:
        return {}
    return {"class_names": joined}


def log_class_names(class_names: Sequence[str]) -> None:
    """Log `class_names.json` ({"<label index>": "<name>"}) to the active run: the map from
    the label indices of per-class metric keys and predictions to the class names."""
    mlflow.log_dict({str(i): str(name) for i, name in enumerate(class_names)}, CLASS_NAMES_FILE)


def read_class_names(run_id: str) -> tuple[str, ...] | None:
    """The class names run `run_id` logged in `class_names.json`, in label order; None when it
    logged none (runs from before the file existed). Raises ValueError on a malformed file."""
    with tempfile.TemporaryDirectory() as scratch:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=CLASS_NAMES_FILE, dst_path=scratch)
        except (MlflowException, OSError):
            return None
        mapping = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(mapping, dict) or set(mapping) != {str(i) for i in range(len(mapping))}:
        raise ValueError(f"{CLASS_NAMES_FILE} of run {run_id} is not a map from the indices "
                         "0..n-1 to names")
    return tuple(str(mapping[str(i)]) for i in range(len(mapping)))
