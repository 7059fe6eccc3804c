"""Small helpers shared by the factories: argument checks, heads and batch-norm settings."""

from __future__ import annotations

import os

import keras
from keras import layers

POOLINGS = (None, "avg", "max")


def check_common(
    name: str, input_shape: tuple[int, ...] | None, classes: int, pooling: str | None,
    min_size: int,
) -> tuple[int, int, int]:
    """Validate the Keras-applications-style arguments; return the input shape to use."""
    if input_shape is None:
        input_shape = (224, 224, 3)
    if len(input_shape) != 3 or any(int(d) <= 0 for d in input_shape):
        raise ValueError(
            f"{name}: input_shape must be (height, width, channels), got {input_shape}"
        )
    if min(input_shape[:2]) < min_size:
        raise ValueError(
            f"{name}: input images must be at least {min_size}x{min_size}, got {input_shape}"
        )
    if not isinstance(classes, int) or classes < 2:
        raise ValueError(f"{name}: classes must be an integer >= 2, got {classes!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"{name}: pooling must be one of {POOLINGS}, got {pooling!r}")
    return (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))


def check_weights(name: str, weights: str | None) -> None:
    """Only None (random init) or a local weights file: nothing is downloaded at run time."""
    if weights is None:
        return
    if not isinstance(weights, (str, os.PathLike)) or not os.path.isfile(weights):
        raise ValueError(
            f"{name}: weights must be None or the path of a weights file, got {weights!r} "
            "(no weights are downloaded)"
        )


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> None:
    """Set every BatchNormalization layer's moving-average momentum.

    Keras's default 0.99 suits ImageNet-sized epochs; with a few dozen steps per epoch the
    moving statistics lag far behind the weights and validation looks like chance.
    """
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = momentum


def dense_head(
    x: keras.KerasTensor, classes: int, units: tuple[int, ...], dropout: float,
    activation: str = "softmax",
) -> keras.KerasTensor:
    """Fully connected head: Dense+ReLU+Dropout for each width in `units`, then the classifier."""
    for i, width in enumerate(units, start=1):
        x = layers.Dense(width, activation="relu", name=f"fc{i}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    # float32 output keeps the softmax stable under mixed precision
    return layers.Dense(classes, activation=activation, dtype="float32", name="predictions")(x)
