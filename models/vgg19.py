"""VGG19, written out: Simonyan & Zisserman, "Very Deep Convolutional Networks for
Large-Scale Image Recognition" (ICLR 2015).

Same signature as `keras.applications.VGG19` (include_top, weights, input_tensor,
input_shape, pooling, classes, classifier_activation), plus the switches needed to train it
from scratch on small data sets: batch normalisation after every convolution and a
narrower, configurable dense top.
"""

from __future__ import annotations

import keras
from keras import layers

from models._common import check_common, check_weights, dense_head, set_batchnorm_momentum

# (convolutions per block, filters): 16 conv layers, the architecture as data
VGG19_BLOCKS = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))
# five 2x2 poolings: a smaller image would pool away to nothing
VGG19_MIN_SIZE = 32


def vgg_block(
    x: keras.KerasTensor, block: int, convs: int, filters: int, batch_norm: bool
) -> keras.KerasTensor:
    """`convs` 3x3 convolutions (each optionally batch-normalised) then 2x2 max pooling."""
    for i in range(1, convs + 1):
        name = f"block{block}_conv{i}"
        if batch_norm:
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
            x = layers.BatchNormalization(name=f"{name}_bn")(x)
            x = layers.Activation("relu", name=f"{name}_relu")(x)
        else:
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=name)(x)
    return layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)


def vgg19(
    include_top: bool = True,
    weights: str | None = None,
    input_tensor: keras.KerasTensor | None = None,
    input_shape: tuple[int, int, int] | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str = "softmax",
    batch_norm: bool = False,
    bn_momentum: float = 0.99,
    dense_units: int = 4096,
    dropout: float = 0.5,
    name: str = "vgg19",
) -> keras.Model:
    """VGG19 with Keras-applications-style options.

    include_top: the flatten + two dense layers (`dense_units` wide, `dropout` after each) +
    classifier; without it, `pooling` (None, "avg" or "max") applies to the last block.
    weights: None (random init) or the path of a weights file to load.
    batch_norm: BatchNormalization after every convolution (`bn_momentum` for its averages).
    """
    shape = check_common(name, input_shape, classes, pooling, min_size=VGG19_MIN_SIZE)
    check_weights(name, weights)
    inputs = input_tensor if input_tensor is not None else keras.Input(shape, name="image")

    x = inputs
    for block, (convs, filters) in enumerate(VGG19_BLOCKS, start=1):
        x = vgg_block(x, block, convs, filters, batch_norm)

    if include_top:
        x = layers.Flatten(name="flatten")(x)
        x = dense_head(x, classes, (dense_units, dense_units), dropout, classifier_activation)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)

    model = keras.Model(inputs, x, name=name)
    if batch_norm:
        set_batchnorm_momentum(model, bn_momentum)
    if weights is not None:
        model.load_weights(weights)
    return model
