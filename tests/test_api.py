"""The Python API (tracking.api): the runnable example of docs/python-api.md, and bad input
before any run."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import numpy as np
import pytest

from tracking.api import train
from tracking.data.loaders import DataError

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def test_the_documented_example_runs(mlflow_uri: str, capsys) -> None:
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    namespace: dict = {"__name__": "__main__"}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - the docs' own example
    own, folder = namespace["result"], namespace["again"]
    run = mlflow.get_run(own["run_id"])
    assert run.data.params["dataset"] == "arrays"
    assert run.data.params["model"] == "local:build_net"
    assert run.data.params["data_source"].startswith("arrays ")
    assert 0.0 <= own["test_accuracy"] <= 1.0
    assert mlflow.get_run(folder["run_id"]).data.params["model"] == "concat_cnn"
    assert "registered for this process only" in capsys.readouterr().err


def test_bad_arrays_are_one_line_before_any_run(mlflow_uri: str) -> None:
    x = np.zeros((10, 8, 8, 2), np.uint8)
    with pytest.raises(DataError, match="must be images"):
        train(model="concat_cnn", data=(x, np.zeros(10, np.int64)), epochs=1)
    with pytest.raises(DataError, match="integer labels"):
        train(model="concat_cnn", data=(np.zeros((10, 8, 8)), np.zeros(10)), epochs=1)
    assert mlflow.search_runs(search_all_experiments=True).empty
