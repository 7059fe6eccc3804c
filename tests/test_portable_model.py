"""A logged model of the user's own factory loads where the user's package is not installed:
the package travels in the model's code/ folder (MLflow's `code_paths`) and the served model
imports it before Keras loads the file (`tracking/serving/own_code.py`).

The slow test builds a fresh virtual environment (no system site packages) with only the
model's own requirements.txt, and loads and serves the model there from a folder outside the
project, with neither the project nor the user's package importable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
import requests
import yaml
from processes import free_port, running
from throwaway_package import package_on_path

from tracking.config import Config
from tracking.data.dataset import load_dataset
from tracking.serving.own_code import carried_code
from tracking.serving.served_model import FACTORY_MODULE, OWN_MODULES

IMAGE_SIZE, LIMIT = 16, 200
FACTORY = "mypkg.nets:small_net"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """`mypkg.nets:small_net` (a custom layer) trained 1 epoch through the real training path
    into a store of this module's own; yields the results, a local copy of the logged model's
    folder, a few test images and the probabilities this interpreter gets for them."""
    from tracking.training.loop import train

    folder = tmp_path_factory.mktemp("portable")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp, package_on_path(folder / "plugin"):
        mp.chdir(folder)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        try:
            results = train(Config(model=FACTORY, image_size=IMAGE_SIZE, limit=LIMIT, epochs=1,
                                   experiment="portable"))
            model_dir = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=results["model_uri"], dst_path=str(folder / "downloaded")))
            x = load_dataset("digits", image_size=IMAGE_SIZE, limit=LIMIT).x_test[:6]
            expected = np.asarray(mlflow.pyfunc.load_model(str(model_dir)).predict(
                x.astype(np.float64)))
            yield {"results": results, "model_dir": model_dir, "folder": folder, "x": x,
                   "expected": expected}
        finally:
            mlflow.set_tracking_uri(None)


def test_the_users_package_travels_in_the_models_code_folder(trained: dict) -> None:
    model_dir = trained["model_dir"]
    assert (model_dir / "code" / "mypkg" / "nets.py").is_file()
    assert (model_dir / "code" / "mypkg" / "__init__.py").is_file()
    assert not list((model_dir / "code").rglob("__pycache__"))
    # the factory module imports `from models import Recipe`: the suite's plain-Keras models/
    # travels too; nothing else of the suite does
    assert (model_dir / "code" / "models" / "spec.py").is_file()
    assert not (model_dir / "code" / "tracking").exists()
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())  # model_config: "config"
    pyfunc = mlmodel["flavors"]["python_function"]
    assert pyfunc["code"] == "code"
    assert pyfunc["config"] == {FACTORY_MODULE: "mypkg.nets", OWN_MODULES: ["mypkg.nets"]}
    requirements = (model_dir / "requirements.txt").read_text().split()
    assert f"keras=={keras.__version__}" in requirements
    assert not [r for r in requirements if r.startswith(("mypkg", "keras-mlflow-suite"))]
    assert trained["expected"].shape == (6, 10)


def fake_keras_file(path: Path, modules: list[str]) -> Path:
    """A `.keras` zip whose config names one object from each of `modules`."""
    layers = [{"module": m, "class_name": "Thing", "config": {}, "registered_name": None}
              for m in modules]
    config = {"module": "keras.src.models.functional", "class_name": "Functional",
              "config": {"layers": layers}, "registered_name": "Functional"}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
    return path


def test_keras_and_installed_distributions_are_requirements_not_copies(tmp_path: Path) -> None:
    from importlib.metadata import version

    keras_file = fake_keras_file(tmp_path / "m.keras", ["keras.layers", "sklearn.preprocessing"])
    carried = carried_code(keras_file, "keras.applications:MobileNetV2",
                           [f"keras=={keras.__version__}"], tmp_path / "stage")
    assert carried.code_paths == [] and carried.factory_module is None  # keras: nothing
    assert carried.requirements == [f"scikit-learn=={version('scikit-learn')}"]  # pinned
    assert carried.modules == ["sklearn.preprocessing"]


def test_a_class_of_the_main_script_cannot_travel_and_says_so(tmp_path: Path) -> None:
    keras_file = fake_keras_file(tmp_path / "m.keras", ["__main__"])
    with pytest.warns(UserWarning, match=r"cannot travel with it for __main__"):
        carried = carried_code(keras_file, None, [], tmp_path / "stage")
    assert carried.code_paths == [] and carried.modules == []


def clean_env(venv: Path) -> dict[str, str]:
    """This process's environment without what would let the fresh venv see the project,
    the user's package or this interpreter's packages."""
    # empty rather than absent: tests.processes.running lays these over os.environ, and
    # Python reads an empty PYTHONPATH or PYTHONHOME as unset
    return {**os.environ, "PYTHONPATH": "", "PYTHONHOME": "", "PYTHONSTARTUP": "",
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(venv), "PYTHONNOUSERSITE": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
            "KERAS_BACKEND": keras.backend.backend()}


IN_VENV = """
import importlib.util, json, sys
import numpy as np
missing = {name: importlib.util.find_spec(name) is None
           for name in ("mypkg", "tracking", "models", "tuning")}
import mlflow
model = mlflow.pyfunc.load_model(sys.argv[1])
probabilities = np.asarray(model.predict(np.load(sys.argv[2])))
np.save(sys.argv[3], probabilities)
print(json.dumps({"missing_before_load": missing, "prefix": sys.prefix}))
"""


@pytest.mark.slow
def test_the_model_loads_and_serves_in_a_fresh_venv_without_the_package(
        trained: dict, tmp_path: Path) -> None:
    started = time.monotonic()
    model_dir, x, expected = trained["model_dir"], trained["x"], trained["expected"]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    env = clean_env(venv)
    elsewhere = tmp_path / "elsewhere"  # outside the project: its packages are not on the path
    elsewhere.mkdir()
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", str(model_dir / "requirements.txt")],
        env=env, cwd=elsewhere, capture_output=True, text=True, timeout=1800)
    assert install.returncode == 0, install.stderr[-3000:]
    installed_seconds = time.monotonic() - started

    np.save(tmp_path / "x.npy", x.astype(np.float64))
    (tmp_path / "in_venv.py").write_text(IN_VENV)
    loaded = subprocess.run([str(python), str(tmp_path / "in_venv.py"), str(model_dir),
                             str(tmp_path / "x.npy"), str(tmp_path / "p.npy")],
                            env=env, cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    facts = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert all(facts["missing_before_load"].values()), facts  # neither package nor project
    assert Path(facts["prefix"]) == venv
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, atol=1e-5)

    port = free_port()
    cmd = [str(venv / "bin" / "mlflow"), "models", "serve", "-m", str(model_dir),
           "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    with running(cmd, tmp_path / "serve.log", env=env, cwd=elsewhere,
                 ready_url=f"http://127.0.0.1:{port}/ping", timeout=300):
        answer = requests.post(f"http://127.0.0.1:{port}/invocations",
                               json={"inputs": x.tolist()}, timeout=120)
    assert answer.status_code == 200, answer.text[:2000]
    served = np.asarray(answer.json()["predictions"], dtype=np.float64)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    print(f"\nfresh venv: installed in {installed_seconds:.0f} s, whole test "
          f"{time.monotonic() - started:.0f} s")
