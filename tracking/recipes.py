"""Per-model training defaults that were measured to train, not assumed.

A recipe fills whatever the user left open (epochs, batch size, learning rate,
augmentation) and adds architecture options for the factory. The learning rate is the
peak of a linear warm-up followed by cosine decay to zero over the planned steps.
Figures behind each choice are in docs/benchmarks.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import keras

from tracking.config import Config

OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class Recipe:
    optimizer: str = "adamw"  # one of OPTIMIZERS
    learning_rate: float = 1e-3  # peak, after warm-up
    weight_decay: float = 1e-4  # decoupled (adamw) or L2-free SGD weight decay
    epochs: int = 15  # upper bound; early stopping may end sooner
    batch_size: int = 64
    warmup_fraction: float = 0.1  # share of all steps spent warming up linearly
    augment: bool = True  # random shifts (+ horizontal flips where the data allow)
    shift: float = 0.1  # largest random shift, as a fraction of the image side (0 = none)
    model_options: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))


def _options(**kw: Any) -> MappingProxyType:
    return MappingProxyType(kw)


RECIPES: dict[str, Recipe] = {
    # plain VGG19 with Adam at 1e-3 stays at chance: batch norm after every conv fixes it
    "vgg19": Recipe(optimizer="sgd", learning_rate=0.05, weight_decay=5e-4, epochs=10,
                    model_options=_options(batch_norm=True, bn_momentum=0.9, dense_units=256,
                                           dropout=0.3)),
    "resnet50": Recipe(optimizer="adamw", learning_rate=1e-3, epochs=15),
    "densenet121": Recipe(optimizer="adamw", learning_rate=1e-3, epochs=15),
    "concat_cnn": Recipe(optimizer="adamw", learning_rate=2e-3, epochs=15),
}

# data sets whose classes keep their meaning under a left-right mirror
FLIP_SAFE = {"fashion_mnist", "cifar10"}


def resolve(config: Config) -> Config:
    """Fill the settings left to the recipe; the result is what runs and what is logged."""
    recipe = RECIPES[config.model]
    return replace(
        config,
        epochs=config.epochs or recipe.epochs,
        batch_size=config.batch_size or recipe.batch_size,
        learning_rate=config.learning_rate or recipe.learning_rate,
        augment=recipe.augment if config.augment is None else config.augment,
    )


def make_optimizer(recipe: Recipe, learning_rate: float, total_steps: int) -> keras.Optimizer:
    """The recipe's optimizer with linear warm-up to `learning_rate`, then cosine decay."""
    warmup = int(total_steps * recipe.warmup_fraction)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else learning_rate,
        decay_steps=max(total_steps - warmup, 1),
        alpha=0.0,
        warmup_target=learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                    weight_decay=recipe.weight_decay or None)
    if recipe.optimizer == "adam":
        return keras.optimizers.Adam(schedule)
    if recipe.optimizer == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; choose one of {OPTIMIZERS}")
