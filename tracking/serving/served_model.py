"""The code of every logged model (MLflow "models from code"): a trained classifier behind one
input check, the same in process (`mlflow.pyfunc.load_model`) and over HTTP
(`mlflow models serve`).

MLflow runs this file when it loads a logged model, so it imports only MLflow, Keras and NumPy
(no `tracking`): a model served in a fresh environment needs nothing of this project. A model
of the user's own factory imports the user's modules first (`import_own_code`, from the model
config that `tracking.serving.own_code` wrote: its custom layers register with Keras at import),
from the model's code/ folder, which MLflow puts on sys.path, or from a required distribution.

Input: pixel values 0-255 as a float64 array (N, S, S, 3), S the run's image size, as the
images were in training (before the model's own 1/255 scaling); over HTTP, JSON numbers in
any of MLflow's forms (`inputs`, `instances`). The signature says float64 because MLflow's
JSON parser casts to the signature's dtype: with uint8 there, floats in 0..1 became 0, an
all-black image, predicted confidently. So values are checked here instead, and a batch that
is not whole numbers in 0..255 (e.g. images already scaled to 0..1) is refused with an
error (HTTP 400) that says what the model takes. A single image needs its batch axis
(1, S, S, 3); MLflow refuses other shapes (HTTP 400) before this code runs.
Output: float32 probabilities (N, classes).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

KERAS_MODEL = "keras_model"  # the artifact holding the trained classifier (.keras file)
# model config keys: the factory's module (imported if it can be) and the modules the Keras
# file's custom objects come from (they must import: Keras finds those classes no other way)
FACTORY_MODULE = "factory_module"
OWN_MODULES = "own_modules"


def import_own_code(config: Mapping[str, Any] | None) -> None:
    """Import the model's own modules named in its model `config` before Keras loads the
    file: the factory's module best-effort (a warning when it does not import, e.g. it
    imports the suite), then every module of the file's custom objects, raising
    MlflowException with what failed and where that code should have come from."""
    config = config or {}
    own = list(config.get(OWN_MODULES) or [])
    factory = config.get(FACTORY_MODULE)
    if factory and factory not in own:
        try:
            importlib.import_module(factory)
        except Exception as err:  # noqa: BLE001 - whatever the user's module raises
            warnings.warn(f"the model's factory module {factory} does not import here "
                          f"({type(err).__name__}: {err}); loading with the modules its "
                          f"layers come from ({', '.join(own) or 'none'})", stacklevel=2)
    for module in own:
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - whatever the user's module raises
            raise MlflowException(
                f"the model's own code {module} does not import here ({type(err).__name__}: "
                f"{err}); it travels in the model's code/ folder, or its distribution is in "
                "the model's requirements.txt") from err


def pixel_batch(values: Any, image_shape: tuple[int, ...]) -> np.ndarray:
    """`values` as the uint8 (N, S, S, 3) batch the classifier takes; raises MlflowException
    (INVALID_PARAMETER_VALUE, HTTP 400) naming the shape and range it takes otherwise."""
    takes = (f"the model takes pixel values 0-255 (whole numbers, as read from image files) "
             f"in an array of shape (N, {', '.join(map(str, image_shape))})")
    x = np.asarray(values.to_numpy() if hasattr(values, "to_numpy") else values)
    if x.ndim != len(image_shape) + 1 or tuple(x.shape[1:]) != tuple(image_shape):
        raise MlflowException(f"{takes}; got shape {x.shape}", INVALID_PARAMETER_VALUE)
    try:
        x = x.astype(np.float64)
    except (TypeError, ValueError):
        raise MlflowException(f"{takes}; got values of type {x.dtype}",
                              INVALID_PARAMETER_VALUE) from None
    if x.size and not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 255
                       and np.array_equal(x, np.round(x))):
        low, high = float(np.nanmin(x)), float(np.nanmax(x))
        hint = ("; values in 0..1 look scaled already: multiply them by 255"
                if 0 <= low and high <= 1 else "")
        raise MlflowException(f"{takes}; got values from {low:g} to {high:g} that are not "
                              f"all whole numbers in 0..255{hint}", INVALID_PARAMETER_VALUE)
    return x.astype(np.uint8)


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """A Keras classifier of uint8 images (its first layers scale them) behind `pixel_batch`."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        import_own_code(context.model_config)
        self.model = keras.saving.load_model(context.artifacts[KERAS_MODEL], safe_mode=True)

    # np.ndarray is a hint MLflow takes without inferring a schema of its own from it: this
    # model's schema is the logged signature (a DataFrame from `dataframe_split` arrives too)
    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: np.ndarray,
                params: dict[str, Any] | None = None) -> np.ndarray:
        batch = pixel_batch(model_input, tuple(self.model.input_shape[1:]))
        if not len(batch):  # no images, no probabilities (Keras's predict fails on none)
            return np.zeros((0, self.model.output_shape[-1]), np.float32)
        return np.asarray(self.model.predict(batch, verbose=0), dtype=np.float32)


mlflow.models.set_model(ImageClassifier())
