"""The one configuration object of a training run.

`Config` holds every setting with its default; the command line and the MLproject entry
point override it, and exactly its fields are logged as MLflow params. `None` for epochs,
batch size or learning rate means "the model's recipe" (`tracking.recipes`); the resolved
numbers are what gets logged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

DISTRIBUTIONS = ("none", "data_parallel")


class ConfigError(ValueError):
    """A setting is invalid; the message names it and what is allowed."""


@dataclass(frozen=True)
class Config:
    model: str = "vgg19"  # registry key in models.MODELS
    dataset: str = "digits"  # key in tracking.data.LOADERS
    data_dir: str = ""  # folder data, or where Fashion-MNIST's IDX files are ("" = defaults)
    epochs: int | None = None  # upper bound; early stopping may end sooner (None = recipe)
    batch_size: int | None = None  # None = recipe
    learning_rate: float | None = None  # peak learning rate (None = recipe)
    image_size: int = 32  # every image becomes image_size x image_size x 3
    patience: int = 5  # epochs without val_loss improvement before stopping
    seed: int = 0  # splits, initial weights, shuffling and augmentation
    test_split: float = 0.2  # test share, for data sets without their own test split
    val_split: float = 0.2  # validation share of the training part
    augment: bool | None = None  # random shifts (+ flips where the data allow); None = recipe
    experiment: str = "keras-cnn-comparison"  # MLflow experiment name
    run_name: str = ""  # "" = <model>-<dataset>
    skip_bad_images: bool = False  # folder data: skip unreadable files instead of failing
    limit: int = 0  # keep at most this many training images (0 = all); for smoke runs
    evaluate_test: bool = True  # False in tuning trials: the test split is for the final report
    checkpoint_every: int = 1  # epochs between resumable checkpoints (0 = none)
    distribute: str = "none"  # "data_parallel": each batch split over all devices (JAX)

    def __post_init__(self) -> None:
        from models import MODELS
        from tracking.data import LOADERS

        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of: {', '.join(MODELS)}")
        if self.dataset not in LOADERS:
            raise ConfigError(
                f"unknown dataset {self.dataset!r}; choose one of: {', '.join(LOADERS)}"
            )
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value <= 0):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.learning_rate is not None and not (
            _is_number(self.learning_rate) and math.isfinite(self.learning_rate)
            and self.learning_rate > 0
        ):
            raise ConfigError(
                f"learning_rate must be a positive number, got {self.learning_rate!r}"
            )
        if not _is_int(self.image_size) or self.image_size < 8:
            raise ConfigError(f"image_size must be an integer >= 8, got {self.image_size!r}")
        if self.model in ("resnet50", "densenet121", "vgg19") and self.image_size < 32:
            raise ConfigError(f"{self.model} needs image_size >= 32, got {self.image_size}")
        if not _is_int(self.patience) or self.patience < 0:
            raise ConfigError(f"patience must be a non-negative integer, got {self.patience!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        for name in ("test_split", "val_split"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 < value < 1:
                raise ConfigError(f"{name} must lie strictly between 0 and 1, got {value!r}")
        if not _is_int(self.checkpoint_every) or self.checkpoint_every < 0:
            raise ConfigError(
                f"checkpoint_every must be a non-negative integer, got {self.checkpoint_every!r}"
            )
        if not _is_int(self.limit) or self.limit < 0:
            raise ConfigError(f"limit must be a non-negative integer, got {self.limit!r}")
        if self.distribute not in DISTRIBUTIONS:
            raise ConfigError(f"distribute must be one of {', '.join(DISTRIBUTIONS)}, "
                              f"got {self.distribute!r}")
        if self.distribute != "none":
            import keras

            if keras.backend.backend() != "jax":
                raise ConfigError(f"distribute={self.distribute} needs KERAS_BACKEND=jax, "
                                  f"not {keras.backend.backend()}")
        if not self.experiment:
            raise ConfigError("experiment name must not be empty")
        if self.dataset == "folder" and not self.data_dir:
            raise ConfigError("dataset 'folder' needs data_dir: one subfolder of images per class")

    @property
    def display_name(self) -> str:
        return self.run_name or f"{self.model}-{self.dataset}"

    def to_params(self) -> dict[str, str]:
        """Every field as an MLflow param, spelled as the command line takes it ("auto" = None)."""
        return {k: param_text(v) for k, v in asdict(self).items()}


def param_text(value: Any) -> str:
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def same_param(a: str, b: str) -> bool:
    """Whether two spellings of a param mean the same (`mlflow run` logs its own, quoted)."""
    a, b = a.strip("'\""), b.strip("'\"")
    if a.lower() == b.lower():
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def field_names() -> list[str]:
    return [f.name for f in fields(Config)]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
