"""Logging a trained classifier as an MLflow model, and loading it back.

    info = log_classifier(model, data.x_test[:2])        # runs:/<run id>/model
    keras_model = load_logged_classifier("runs:/<run id>/model")

The logged model is `tracking/serving/served_model.py` (MLflow "models from code") with the Keras
classifier as its artifact: `mlflow.pyfunc.load_model(uri).predict(x)` and
`mlflow models serve -m uri` both check the input the same way (pixel values 0-255 as
float64 (N, S, S, 3), see that file) and return class probabilities. A model of the user's own
factory carries that factory's code or names its distribution (`tracking.serving.own_code`),
so it loads where the user's package is not installed.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow.entities import LoggedModelStatus
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo

from tracking.data.batches import predict_padded
from tracking.machine import model_requirements
from tracking.serving.own_code import carried_code
from tracking.serving.served_model import FACTORY_MODULE, KERAS_MODEL, OWN_MODULES

MODEL_NAME = "model"  # runs:/<run id>/model
SERVED_MODEL_CODE = Path(__file__).with_name("served_model.py")


def active_model_source() -> str | None:
    """The active run's `model_source` param (where its factory came from), if any."""
    run = mlflow.active_run()
    if run is None:
        return None
    return mlflow.MlflowClient().get_run(run.info.run_id).data.params.get("model_source")


def log_classifier(model: keras.Model, sample: np.ndarray, name: str = MODEL_NAME,
                   metadata: dict[str, Any] | None = None,
                   model_source: str | None = None) -> ModelInfo:
    """Log `model` to the active run as `name`; `sample` (a few uint8 (n, S, S, 3) images)
    gives the signature: float64 pixel values in, float32 probabilities (n, classes) out.
    `metadata` goes into the MLmodel file (e.g. the class names, in label order).
    `model_source` (`module:attribute` of the factory; the active run's `model_source` param
    when None) and the custom objects of the saved file decide the user's code that travels
    in the model's code/ folder or the requirements added (`tracking.serving.own_code`); the
    served model imports those modules before Keras loads the file."""
    with tempfile.TemporaryDirectory(prefix="classifier-") as folder, \
            warnings.catch_warnings():
        # "an input example was not provided": the signature is given, and an example would
        # make MLflow load the model again to check it, at every run's end
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        path = Path(folder) / "classifier.keras"
        # the same layers and weights, uncompiled: prediction needs no optimizer state, which
        # would double or triple the file (Keras 3's save has no include_optimizer)
        keras.Model(model.inputs, model.outputs, name=model.name).save(path)
        outputs = predict_padded(model, sample).astype(np.float32)
        requirements = model_requirements()
        carried = carried_code(path, model_source or active_model_source(), requirements,
                               Path(folder) / "code")
        config = ({FACTORY_MODULE: carried.factory_module, OWN_MODULES: carried.modules}
                  if carried.factory_module or carried.modules else None)
        return mlflow.pyfunc.log_model(
            name=name, python_model=str(SERVED_MODEL_CODE), artifacts={KERAS_MODEL: str(path)},
            signature=infer_signature(sample.astype(np.float64), outputs),
            pip_requirements=requirements + carried.requirements,
            code_paths=carried.code_paths or None, model_config=config, metadata=metadata)


def fail_pending_models(run_id: str) -> None:
    """Mark FAILED the logged models of run `run_id` still PENDING: a process stopped while
    logging one leaves it so (MLflow 3 creates the entity first, then uploads its files)."""
    client = mlflow.MlflowClient()
    experiment_id = client.get_run(run_id).info.experiment_id
    for model in client.search_logged_models(
            [experiment_id], filter_string=f"source_run_id = '{run_id}'"):
        if model.status == LoggedModelStatus.PENDING:
            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)


def load_logged_classifier(model_uri: str) -> keras.Model:
    """The Keras classifier inside a model logged by `log_classifier`."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().model
