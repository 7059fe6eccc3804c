"""Model registry: one name per architecture, one door in.

    from models import build_model, MODELS
    model = build_model("vgg19", input_shape=(32, 32, 3), num_classes=10, batch_norm=True)

Every factory is pure: it takes the input shape, the class count and architecture options
and returns an uncompiled `keras.Model` named after its registry key. No data, no
compiling, no tracking in here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from models.applications import densenet121, resnet50
from models.concat_cnn import concat_cnn
from models.vgg19 import vgg19

ModelFactory = Callable[..., keras.Model]

MODELS: dict[str, ModelFactory] = {
    "vgg19": vgg19,
    "resnet50": resnet50,
    "densenet121": densenet121,
    "concat_cnn": concat_cnn,
}


def build_model(
    name: str, input_shape: tuple[int, int, int], num_classes: int, **options: Any
) -> keras.Model:
    """Build the registered model `name` for `input_shape` images and `num_classes` classes.

    `options` go to the factory (architecture switches such as `batch_norm` or `dropout`).
    Raises ValueError for an unknown name, listing the valid ones.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name](input_shape=tuple(input_shape), classes=num_classes, **options)


__all__ = ["MODELS", "build_model", "concat_cnn", "densenet121", "resnet50", "vgg19"]
