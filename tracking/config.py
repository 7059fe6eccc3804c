"""The one configuration object of a training run.

`Config` holds every setting with its default; the command line and the MLproject entry
point override it, and exactly its fields are logged as MLflow params. `None` for epochs,
batch size, learning rate or augmentation means "the model's recipe" (`models.MODELS[name]
.recipe`, or the `recipe` a caller puts in the config). `resolved()` fills them once; the
resolved values are what runs, and what is logged as `effective_*`.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field, fields, replace
from typing import Any

import keras

from models import MODELS, Recipe, UnknownModel
from models.registry import check_factory
from tracking.cli import unquote
from tracking.data.dataset import Dataset, load_dataset
from tracking.data.loaders import LOADERS
from tracking.errors import UsageError
from tracking.precision import PRECISIONS, resolve_precision

DISTRIBUTIONS = ("none", "data_parallel")
# the largest seed: scikit-learn's random_state takes 0..2**32-1, and tuning and the study add
# trial and run counts to a seed, so 31 bits leave room
MAX_SEED = 2**31 - 1
MAX_EXPERIMENT_NAME = 500  # MLflow's limit on an experiment's name
# pixels a side, above every keras.applications input (224-600): one 1024x1024x3 uint8 image is
# 3 MiB, so a few thousand already fill this project's 24 GiB machine
MAX_IMAGE_SIZE = 1024


class ConfigError(UsageError):
    """A setting is invalid; the message names it and what is allowed."""


@dataclass(frozen=True)
class Config:
    model: str = "vgg19"  # registry key in models.MODELS
    dataset: str = "digits"  # key in tracking.data.loaders.LOADERS
    data_dir: str = ""  # folder data, or where Fashion-MNIST's IDX files are ("" = defaults)
    epochs: int | None = None  # upper bound; early stopping may end sooner (None = recipe)
    batch_size: int | None = None  # None = recipe
    learning_rate: float | None = None  # peak learning rate (None = recipe)
    image_size: int = 32  # every image becomes image_size x image_size x 3
    patience: int = 5  # epochs without val_loss improvement before stopping
    seed: int = 0  # initial weights, shuffling and augmentation; the splits too, unless ...
    split_seed: int | None = None  # ... this is set: the splits' seed (None = seed)
    test_split: float = 0.2  # test share, for data sets without their own test split
    val_split: float = 0.2  # validation share of the training part
    augment: bool | None = None  # random shifts (+ flips where the data allow); None = recipe
    experiment: str = "keras-cnn-comparison"  # MLflow experiment name
    run_name: str = ""  # "" = <model>-<dataset>
    skip_bad_images: bool = False  # folder data: skip unreadable files instead of failing
    limit: int = 0  # keep at most this many images, split afterwards (0 = all); for smoke runs
    full_test: bool = False  # with limit: score on the data set's whole own test split
    evaluate_test: bool = True  # False in tuning trials: the test split is for the final report
    checkpoint_every: int = 1  # epochs between resumable checkpoints (0 = none)
    distribute: str = "none"  # "data_parallel": each batch split over all devices (JAX)
    deterministic: bool = False  # deterministic kernels where the backend has them
    precision: str = "auto"  # float32, mixed_bfloat16, mixed_float16; auto = measured per model
    system_metrics: bool = True  # CPU, memory (and GPU) use as MLflow system metrics
    # training defaults used for `None` above; None = the registry's (not a param: its fields
    # are logged as optimizer, weight_decay, warmup_fraction, augment_shift and arch_*)
    recipe: Recipe | None = field(default=None, metadata={"param": False})

    def __post_init__(self) -> None:
        try:
            MODELS.resolve(self.model)
        except UnknownModel as err:
            raise ConfigError(str(err)) from None
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
        if not _is_int(self.image_size) or not 8 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ConfigError(f"image_size must be an integer from 8 to {MAX_IMAGE_SIZE}, got "
                              f"{self.image_size!r}")
        smallest = MODELS[self.model].min_image_size
        if self.image_size < smallest:
            raise ConfigError(f"{self.model} needs image_size >= {smallest}, "
                              f"got {self.image_size}")
        if not _is_int(self.patience) or self.patience < 0:
            raise ConfigError(f"patience must be a non-negative integer, got {self.patience!r}")
        for name in ("seed", "split_seed"):
            value = getattr(self, name)
            if (value is not None or name == "seed") and (
                    not _is_int(value) or not 0 <= value <= MAX_SEED):
                raise ConfigError(f"{name} must be an integer from 0 to {MAX_SEED}, "
                                  f"got {value!r}")
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
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, "
                              f"got {self.precision!r}")
        if self.distribute not in DISTRIBUTIONS:
            raise ConfigError(f"distribute must be one of {', '.join(DISTRIBUTIONS)}, "
                              f"got {self.distribute!r}")
        if self.distribute != "none":
            if keras.backend.backend() != "jax":
                raise ConfigError(f"distribute={self.distribute} needs KERAS_BACKEND=jax, "
                                  f"not {keras.backend.backend()}")
        if not self.experiment or len(self.experiment) > MAX_EXPERIMENT_NAME:
            raise ConfigError(f"experiment name must have 1 to {MAX_EXPERIMENT_NAME} "
                              f"characters, got {len(self.experiment)}")
        if self.dataset == "folder" and not self.data_dir:
            raise ConfigError("dataset 'folder' needs data_dir: one subfolder of images per class")
        for name in ("augment", "deterministic", "skip_bad_images", "evaluate_test",
                     "full_test"):
            value = getattr(self, name)
            if not (isinstance(value, bool) or (name == "augment" and value is None)):
                raise ConfigError(f"{name} must be true or false, got {value!r}")
        if self.full_test and not self.limit:
            # without a limit every image of the test split is scored already: the flag would
            # be silently ignored, and a user who meant a subset would train on all of it
            raise ConfigError("full_test scores a --limit subset's runs on the whole test "
                              "split: give --limit N too (without a limit the whole test "
                              "split is scored already)")
        if self.recipe is not None and not isinstance(self.recipe, Recipe):
            raise ConfigError(f"recipe must be a models.Recipe, got {type(self.recipe).__name__}")

    @property
    def display_name(self) -> str:
        return self.run_name or f"{self.model}-{self.dataset}"

    def resolved(self) -> Config:
        """This config with every `None` (auto) filled from its recipe, and the recipe set:
        what runs. Idempotent."""
        recipe = self.recipe or MODELS[self.model].recipe
        return replace(
            self, recipe=recipe,
            epochs=self.epochs or recipe.epochs,
            batch_size=self.batch_size or recipe.batch_size,
            learning_rate=self.learning_rate or recipe.learning_rate,
            augment=recipe.augment if self.augment is None else self.augment,
            precision=resolve_precision(self.model, self.precision),
        )

    @property
    def data_seed(self) -> int:
        """The seed of this run's splits: `split_seed`, else `seed`. Runs with the same data
        seed (and data settings) test on the same images, so they can be paired image by
        image; a study that gives every run one split seed varies only the training seed."""
        return self.seed if self.split_seed is None else self.split_seed

    @property
    def shift(self) -> float:
        """Largest random shift of this (resolved) run: 0 without augmentation."""
        return self.recipe.shift if self.augment and self.recipe else 0.0

    def to_params(self) -> dict[str, str]:
        """Every field as an MLflow param, spelled as the command line takes it ("auto" = None)."""
        return {name: param_text(getattr(self, name)) for name in field_names()}


def param_text(value: Any) -> str:
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


AUTO_SPELLINGS = ("", "auto", "none")  # what the command line reads as None (`auto`)


def same_param(a: str, b: str) -> bool:
    """Whether two spellings of a param mean the same. `mlflow run` logs each MLproject value
    shell-quoted (`shlex.quote`: `'/data/bob'"'"'s data'`, `''` for an empty value), so both
    are unquoted as a shell would first; then equal ignoring case, both a spelling of auto,
    or equal as numbers."""
    a, b = shell_unquote(a).lower(), shell_unquote(b).lower()
    if a == b or (a in AUTO_SPELLINGS and b in AUTO_SPELLINGS):
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def shell_unquote(text: str) -> str:
    """`text` as one shell word reads it (`shlex.split`), else `text` with one pair of quotes
    removed (`tracking.cli.unquote`)."""
    try:
        words = shlex.split(text)
    except ValueError:  # unbalanced quotes: not shell syntax
        return unquote(text)
    if not words:
        return ""
    return words[0] if len(words) == 1 else unquote(text)


def field_names() -> list[str]:
    """The fields of Config that are logged as params (all but `recipe`)."""
    return [f.name for f in fields(Config) if f.metadata.get("param", True)]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_model(config: Config, data: Dataset) -> None:
    """For a model named by import path or entry point: build it once for `data`'s images and
    classes and raise ConfigError (one line) unless it is a keras.Model with one output per
    class. The built-in four are not built here."""
    if MODELS.source(config.model) == "builtin":
        return
    try:
        check_factory(config.model, MODELS[config.model], data.image_shape, data.num_classes)
    except UnknownModel as err:
        raise ConfigError(str(err)) from None


def load_for(config: Config) -> Dataset:
    """The data set a run of `config` trains on: its data set, folder, image size, splits, seed
    and limit (the one way from a Config to its data)."""
    return load_dataset(config.dataset, config.data_dir or None, config.image_size,
                        config.test_split, config.val_split, config.data_seed,
                        config.skip_bad_images, config.limit or None,
                        full_test=config.full_test)
