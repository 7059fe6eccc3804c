"""ResNet-50 and DenseNet-121 from `keras.applications`, untrained and headless, each with a
fully connected head of our own.

- ResNet-50: He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016).
- DenseNet-121: Huang et al., "Densely Connected Convolutional Networks" (CVPR 2017).
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from models._common import check_common, check_weights, dense_head, set_batchnorm_momentum

# keras.applications refuses smaller inputs for these backbones
APPLICATIONS_MIN_SIZE = 32


def _with_head(
    backbone_fn: Callable[..., keras.Model],
    name: str,
    input_shape: tuple[int, int, int] | None,
    classes: int,
    weights: str | None,
    head_units: tuple[int, ...],
    dropout: float,
    bn_momentum: float,
) -> keras.Model:
    shape = check_common(name, input_shape, classes, "avg", min_size=APPLICATIONS_MIN_SIZE)
    check_weights(name, weights)
    inputs = keras.Input(shape, name="image")
    # include_top=False, weights=None: no ImageNet download, our own head below
    backbone = backbone_fn(include_top=False, weights=None, input_tensor=inputs, pooling="avg")
    x = dense_head(backbone.output, classes, tuple(head_units), dropout)
    model = keras.Model(inputs, x, name=name)
    set_batchnorm_momentum(model, bn_momentum)
    if weights is not None:
        model.load_weights(weights)
    return model


def resnet50(
    input_shape: tuple[int, int, int] | None = None,
    classes: int = 1000,
    weights: str | None = None,
    head_units: tuple[int, ...] = (256,),
    dropout: float = 0.3,
    bn_momentum: float = 0.9,
) -> keras.Model:
    """ResNet-50 backbone (global average pooled) + Dense head of `head_units` + classifier."""
    return _with_head(keras.applications.ResNet50, "resnet50", input_shape, classes, weights,
                      head_units, dropout, bn_momentum)


def densenet121(
    input_shape: tuple[int, int, int] | None = None,
    classes: int = 1000,
    weights: str | None = None,
    head_units: tuple[int, ...] = (256,),
    dropout: float = 0.3,
    bn_momentum: float = 0.9,
) -> keras.Model:
    """DenseNet-121 backbone (global average pooled) + Dense head of `head_units` + classifier."""
    return _with_head(keras.applications.DenseNet121, "densenet121", input_shape, classes,
                      weights, head_units, dropout, bn_momentum)


__all__ = ["densenet121", "resnet50"]
