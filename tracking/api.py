"""The suite from Python, for notebooks and scripts: one tracked training run per call.

    from tracking.api import Config, train

    train(Config(model="mypkg.nets:build_net", epochs=3))          # a factory by import path
    train(model=build_net, data=(x, y), epochs=3)                   # a factory object, arrays
    train(model="concat_cnn", data="photos/", image_size=64)        # a folder data set
    train(Config(model="resnet50"), data=(x, y, x_test, y_test))    # arrays with a test split

Each call is `python -m tracking.train` without the command line: the same `Config`, checks,
MLflow run (params, per-epoch curves, test metrics, the model) and results. The names live
here, not in `tracking/__init__.py`: `tracking.train` is already the command's module, and
importing the package must not load Keras (`tracking/__init__.py`).

A factory object is used by its import path (`module:qualname`) when that path imports back
to the same object, so its runs resume and compare like those of `--model module:attribute`;
a factory defined in a notebook or a function (`__main__`, `<locals>`) is registered for this
process only as `local:<name>` (said once on stderr): its runs train, log and compare, but a
resume in another process cannot import it.

Arrays are images (N, H, W) or (N, H, W, 1 | 3), uint8 or numbers in 0..255, and integer
labels (N,) in 0..K-1; the suite splits them as it splits a built-in data set (`--test-split`,
`--val-split`, `--limit`, seeded and stratified) unless a test split is given, and brings
every image to `image_size` x `image_size` x 3. The run's data set is `arrays` and its
`data_source` `arrays <digest>` (`tracking.data.dataset.data_digest` of images and labels), so
two different arrays are never the same data set to the comparison or the registry.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models import MODELS
from models.registry import UnknownModel, import_factory, spec_from_factory
from tracking.config import Config, ConfigError, check_model, load_for
from tracking.data.dataset import Dataset, data_digest, load_dataset
from tracking.data.loaders import ARRAYS, DataError, RawData

__all__ = ["Config", "train", "arrays_dataset"]

ArrayData = tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def factory_name(factory: Callable[..., Any]) -> str:
    """The registry name of a factory object: its import path `module:qualname`, or
    `local:<qualname>` registered for this process when that path does not import back to
    `factory` (module docstring).
    Raises ConfigError when `factory` is not callable or fails the registry's checks."""
    if not callable(factory):
        raise ConfigError(f"model must be a name, an import path or a callable, got "
                          f"{type(factory).__name__}")
    module = getattr(factory, "__module__", None) or "__main__"
    name = f"{module}:{getattr(factory, '__qualname__', type(factory).__name__)}"
    try:  # __main__ is another module in the next process: never an import path
        if module != "__main__" and import_factory(name) is factory:
            return name
    except UnknownModel:
        pass
    # not importable: a name of its own (Keras and MLflow names may not start with "_")
    name = "local:" + re.sub(r"[^A-Za-z0-9_.]", "", name.partition(":")[2].replace(
        "<locals>.", "")).lstrip("_.") or "local:factory"
    try:
        MODELS[name] = spec_from_factory(factory, name)
    except UnknownModel as err:
        raise ConfigError(str(err)) from None
    print(f"model {name}: registered for this process only (not importable by that path): "
          "its runs cannot be resumed from another process", file=sys.stderr)
    return name


def arrays_dataset(data: ArrayData, config: Config,
                   class_names: Sequence[str] | None = None) -> Dataset:
    """A `Dataset` from arrays (x, y) or (x, y, x_test, y_test), split and sized as `config`
    says (`load_dataset`'s rules). Raises DataError (one line) on wrong shapes or labels."""
    if not isinstance(data, tuple) or len(data) not in (2, 4):
        raise DataError("data arrays must be (x, y) or (x, y, x_test, y_test)")
    x, y, *test = (np.asarray(part) for part in data)
    parts = [("x", x, "y", y)] + ([("x_test", test[0], "y_test", test[1])] if test else [])
    for x_name, images, y_name, labels in parts:
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
            raise DataError(f"{x_name} must be images (N, H, W) or (N, H, W, 1 or 3), got "
                            f"shape {images.shape}")
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{y_name} must be integer labels of shape ({len(images)},), got "
                            f"{labels.dtype} {labels.shape}")
        if images.dtype != np.uint8 and not (images.size and np.isfinite(images).all()
                                             and 0 <= images.min() and images.max() <= 255):
            raise DataError(f"{x_name} must be uint8 or numbers in 0..255 (pixel values)")
    classes = int(max(y.max(), test[1].max() if test else 0)) + 1 if len(y) else 0
    names = tuple(str(c) for c in class_names) if class_names is not None \
        else tuple(str(k) for k in range(classes))
    if len(names) < classes or len(set(names)) != len(names):
        raise DataError(f"class_names must name each of the {classes} classes once, got "
                        f"{len(names)} names")
    as_uint8 = [np.asarray(np.rint(a), np.uint8) if a.dtype != np.uint8 else a
                for a in (x, *test[:1])]
    raw = RawData(x=as_uint8[0], y=y.astype(np.int64), class_names=names,
                  source=f"arrays {data_digest(x, y)}",
                  x_test=as_uint8[1] if test else None,
                  y_test=test[1].astype(np.int64) if test else None)
    return load_dataset(ARRAYS, None, config.image_size, config.test_split, config.val_split,
                        config.data_seed, limit=config.limit or None,
                        full_test=config.full_test, raw=raw)


def train(config: Config | None = None, *, model: str | Callable[..., Any] | None = None,
          data: ArrayData | str | Path | Dataset | None = None,
          class_names: Sequence[str] | None = None, **settings: Any) -> dict[str, Any]:
    """Train and track one run; return its results (`run_id`, `test_accuracy`, `best_epoch`,
    `epochs_run`, `train_seconds`, ... as `tracking.training.loop.train` returns them).

    `config` (default `Config()`) with `settings` (any Config field: epochs=3, seed=1, ...)
    replaced; `model` a registry name, an import path or a factory object; `data` arrays
    (module docstring), a folder (one subfolder of images per class), a `Dataset`, or None for
    `config.dataset`. Raises ConfigError or DataError (subclasses of
    `tracking.errors.UsageError`, one-line messages) before any run exists when the settings,
    the model or the data are wrong; `tracking.store.lifecycle.StopRun` when a callback
    stopped the run (a NaN loss).
    """
    from tracking.training.loop import train as train_run  # noqa: PLC0415 - loads Keras

    config = config or Config()
    if model is not None:
        settings["model"] = model if isinstance(model, str) else factory_name(model)
    dataset: Dataset | None = None
    if isinstance(data, str | Path):
        settings.update(dataset="folder", data_dir=str(data))
    elif isinstance(data, Dataset):
        dataset = data
    elif data is not None:
        settings["dataset"] = ARRAYS
    try:
        config = replace(config, **settings)
    except TypeError as err:  # an unknown setting
        raise ConfigError(f"unknown setting: {err}") from None
    if data is not None and not isinstance(data, str | Path | Dataset):
        dataset = arrays_dataset(data, config.resolved(), class_names)
    dataset = dataset if dataset is not None else load_for(config.resolved())
    check_model(config.resolved(), dataset)
    return train_run(config, dataset)
