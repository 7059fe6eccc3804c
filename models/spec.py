"""What the registry knows of a model besides its factory: the facts the rest of the suite reads.

`Recipe` is the training setting measured to train the model from scratch; `SearchSpace` is
what a tuning study may vary around it. Both are plain data (no Keras objects, no tracking):
`tracking.training.classifier` turns a recipe into an optimizer and `tuning.study` a search space
into Optuna distributions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import keras

ModelFactory = Callable[..., keras.Model]
OPTIMIZERS = ("sgd", "adam", "adamw")
# kinds of device whose speed under a mixed policy behaves alike (tracking.precision tells
# them apart): GPUs with native bfloat16 (compute capability 8.0, Ampere, and later) and older
# ones; CPUs with AMX tiles, with AVX-512 BF16 vector instructions only, and without either
DEVICE_KINDS = ("gpu_bf16", "gpu", "cpu_amx", "cpu_avx512_bf16", "cpu")
MIXED_PRECISIONS = ("mixed_bfloat16", "mixed_float16")  # Keras's mixed dtype policies


def options(**kw: Any) -> Mapping[str, Any]:
    """Read-only architecture options for a factory (a recipe is shared, so it must not change)."""
    return MappingProxyType(kw)


@dataclass(frozen=True)
class Recipe:
    """Training defaults of one model: what `auto` means for it.

    The learning rate is the peak of a linear warm-up (`warmup_fraction` of all steps) followed
    by cosine decay to zero; `weight_decay` is decoupled (AdamW) or SGD's own.
    """

    optimizer: str = "adamw"  # one of OPTIMIZERS
    learning_rate: float = 1e-3  # peak, after warm-up
    weight_decay: float = 1e-4  # decoupled (adamw) or SGD's weight decay; 0 = none
    epochs: int = 15  # upper bound; early stopping may end sooner
    batch_size: int = 64
    warmup_fraction: float = 0.1  # share of all steps spent warming up linearly
    augment: bool = True  # random shifts (+ horizontal flips where the data allow)
    shift: float = 0.1  # largest random shift, as a fraction of the image side (0 = none)
    model_options: Mapping[str, Any] = field(default_factory=options)  # factory keywords

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of "
                             f"{', '.join(OPTIMIZERS)}")


@dataclass(frozen=True)
class SearchSpace:
    """Ranges a tuning study searches for one model; epochs run from `min_epochs` to the
    study's --max-epochs. A range of None is not tuned (the recipe's value is used)."""

    batch_sizes: tuple[int, ...] = (16, 32, 64, 128, 256, 512)  # categorical
    learning_rate: tuple[float, float] = (1e-4, 1e-2)  # log-uniform
    weight_decay: tuple[float, float] | None = None  # log-uniform, when tuned
    shift: tuple[float, float] | None = None  # uniform: strength of the random shifts
    min_epochs: int = 2


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: the factory and the facts that sit beside it."""

    factory: ModelFactory  # (input_shape, classes, **model_options) -> uncompiled keras.Model
    recipe: Recipe  # training defaults (`auto`)
    min_image_size: int  # smallest image side the factory accepts
    search: SearchSpace = SearchSpace()  # what tuning varies
    # mixed policy -> where its test accuracy was measured equal to float32's for this model
    # (3 seeds, mean within float32's seed spread: tracking.benchmarks.precision); a policy
    # without such evidence is never picked by `--precision auto`, however fast
    accuracy_held: Mapping[str, str] = field(default_factory=options)
    # device kind (DEVICE_KINDS) -> mixed policy measured faster than float32 on every seed
    # there; `--precision auto` picks it where this machine has no calibration of its own
    # (tracking.precision); each policy must also be in accuracy_held
    faster_precision: Mapping[str, str] = field(default_factory=options)

    def __post_init__(self) -> None:
        for policy in self.accuracy_held:
            if policy not in MIXED_PRECISIONS:
                raise ValueError(f"accuracy_held: {policy!r} is not one of "
                                 f"{', '.join(MIXED_PRECISIONS)}")
        for kind, policy in self.faster_precision.items():
            if kind not in DEVICE_KINDS:
                raise ValueError(f"faster_precision: unknown device kind {kind!r}; choose one "
                                 f"of {', '.join(DEVICE_KINDS)}")
            if policy not in self.accuracy_held:
                raise ValueError(f"faster_precision: {policy!r} on {kind} has no accuracy "
                                 "evidence (accuracy_held): speed alone never switches precision")
