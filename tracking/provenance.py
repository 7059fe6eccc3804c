"""What a run records about where it came from: settings, code, libraries, data, model.

    tags = run_tags(config, extra)                     # at the run's start
    log_provenance(requested, config, model, data, devices=1, steps_per_epoch=26)

Params: every Config field as requested ("auto" where left to the recipe, as `mlflow run` logs
them too), the values that ran (`effective_epochs`, `effective_batch_size`,
`effective_learning_rate`, `effective_augment`) and the recipe (`optimizer`, `weight_decay`,
`warmup_fraction`, `augment_shift`, `arch_*`), the model's size, library versions, split
sizes and class names. The three splits are logged as MLflow dataset inputs with digests.
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
import subprocess
import warnings
from typing import Any

import keras
import mlflow

from tracking.config import Config, param_text, same_param
from tracking.data import Dataset, data_digest

LIBRARIES = ("keras", "mlflow", "tensorflow", "jax", "torch", "numpy", "scikit-learn")
BACKEND_LIBRARY = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def git_commit() -> str | None:
    """The commit of the checkout this code runs from, or None outside a git checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def library_versions() -> dict[str, str]:
    """`keras_backend` and `<library>_version` for each installed library of LIBRARIES."""
    versions = {"keras_backend": keras.backend.backend()}
    for lib in LIBRARIES:
        try:
            versions[f"{lib.replace('-', '_')}_version"] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def model_requirements() -> list[str]:
    """Pinned requirements of the logged model (keras, the backend, numpy): MLflow then needs
    no slow inference subprocess to guess them."""
    libs = ["keras", BACKEND_LIBRARY.get(keras.backend.backend(), "tensorflow"), "numpy"]
    reqs = []
    for lib in libs:
        try:
            reqs.append(f"{lib}=={importlib.metadata.version(lib)}")
        except importlib.metadata.PackageNotFoundError:
            reqs.append(lib)
    return reqs


def run_tags(config: Config, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Tags set when a run starts: model, dataset, host and pid (for `tracking.runs stale`),
    `git_commit`, and the caller's own."""
    tags = {"model": config.model, "dataset": config.dataset, "host": socket.gethostname(),
            "pid": str(os.getpid()), **(extra or {})}
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    return tags


def run_params(requested: Config, config: Config, model: keras.Model, data: Dataset,
               devices: int, steps_per_epoch: int) -> dict[str, Any]:
    """Every param of a training run: `requested` as given, `config` as resolved and run."""
    recipe = config.recipe
    return {
        **requested.to_params(),
        **{f"effective_{k}": param_text(getattr(config, k))
           for k in ("epochs", "batch_size", "learning_rate", "augment")},
        "optimizer": recipe.optimizer,
        "weight_decay": recipe.weight_decay,
        "warmup_fraction": recipe.warmup_fraction,
        "augment_shift": config.shift,
        **{f"arch_{k}": v for k, v in recipe.model_options.items()},
        "num_params": model.count_params(),
        "num_devices": devices,
        "steps_per_epoch": steps_per_epoch,
        **library_versions(),
        "train_size": len(data.y_train), "val_size": len(data.y_val),
        "test_size": len(data.y_test), "num_classes": data.num_classes,
        "class_names": ",".join(data.class_names),
        "skipped_images": len(data.skipped),
        "data_source": data.source,
    }


def log_params_once(params: dict[str, Any]) -> None:
    """Log params to the active run, skipping those already logged with the same meaning.

    `mlflow run` logs the entry point's parameters itself (quoted, as typed); logging them
    again with another spelling would be refused as a change. Raises ValueError when a param
    was logged with another meaning.
    """
    run = mlflow.active_run()
    existing = mlflow.MlflowClient().get_run(run.info.run_id).data.params
    fresh = {}
    for key, value in params.items():
        text = param_text(value)
        if key not in existing:
            fresh[key] = text
        elif not same_param(existing[key], text):
            raise ValueError(f"param {key} was logged as {existing[key]!r}, now {text!r}")
    if fresh:
        mlflow.log_params(fresh)


def log_data_inputs(data: Dataset, image_size: int) -> None:
    """Log the three splits as MLflow dataset inputs (each with its digest), named
    `<data set>-<size>px-<training|validation|test>`."""
    # a plain name such as "sklearn.datasets.load_digits" is no path: let MLflow record the code
    source = data.source if os.path.exists(data.source) else None
    for context, x, y in (("training", data.x_train, data.y_train),
                          ("validation", data.x_val, data.y_val),
                          ("test", data.x_test, data.y_test)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "source ... in multiple ways"
            ds = mlflow.data.from_numpy(x, targets=y, source=source, digest=data_digest(x, y),
                                        name=f"{data.name}-{image_size}px-{context}")
        mlflow.log_input(ds, context=context)


def model_summary(model: keras.Model) -> str:
    """Keras's layer-by-layer summary, nested models expanded, as text."""
    lines: list[str] = []
    model.summary(print_fn=lambda line, *a, **k: lines.append(line), expand_nested=True,
                  line_length=120)
    return "\n".join(lines)


def log_provenance(requested: Config, config: Config, model: keras.Model, data: Dataset,
                   devices: int, steps_per_epoch: int) -> None:
    """Everything a new run logs before training: params (`run_params`), the skipped images,
    the data inputs and `model_summary.txt`."""
    log_params_once(run_params(requested, config, model, data, devices, steps_per_epoch))
    if data.skipped:
        mlflow.log_text("\n".join(data.skipped) + "\n", "skipped_images.txt")
    log_data_inputs(data, config.image_size)
    mlflow.log_text(model_summary(model), "model_summary.txt")
