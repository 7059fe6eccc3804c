"""concat_cnn: the study's own CNN. Inception-style concatenation of parallel conv pairs
(Szegedy et al., "Going Deeper with Convolutions", CVPR 2015) in a small VGG-like stack.

    entry max-pool -> [block: parallel conv pairs, concatenated -> BN -> avg-pool] x N
    -> exit max-pool -> flatten -> Dense+Dropout -> Dense+Dropout -> classifier
"""

from __future__ import annotations

import keras
from keras import layers

from models._common import check_common, check_weights, dense_head

# filters of each block's conv pairs; each block halves the resolution (average pooling)
CONCAT_BLOCKS = (32, 64, 128)
# kernel size of each parallel pair inside a block
PAIR_KERNELS = (3, 5)
# Smallest image side that builds and trains: with the default entry_pool_strides=2 and the
# three CONCAT_BLOCKS, the entry max-pool, the average pools after blocks 1 and 2 and the exit
# max-pool each halve the side (2x2, "valid", rounding down): four halvings, 16 -> 8 -> 4 -> 2
# -> 1, while 15 -> 7 -> 3 -> 1 -> 0 leaves the exit pool nothing (8 fails there too). With
# entry_pool_strides=1 ("same") the entry pool keeps the side and 8 would do, but the limit is
# the model's, whatever its options, so it holds for the default.
CONCAT_MIN_SIZE = 16


def concat_block(
    x: keras.KerasTensor, block: int, filters: int, kernels: tuple[int, ...], bn_momentum: float,
    pool: bool,
) -> keras.KerasTensor:
    """Parallel pairs of convolutions (one pair per kernel size), concatenated, batch-normed."""
    branches = []
    for k in kernels:
        b = layers.Conv2D(filters, k, padding="same", activation="relu",
                          name=f"block{block}_pair{k}_conv1")(x)
        b = layers.Conv2D(filters, k, padding="same", activation="relu",
                          name=f"block{block}_pair{k}_conv2")(b)
        branches.append(b)
    x = layers.Concatenate(name=f"block{block}_concat")(branches)
    x = layers.BatchNormalization(momentum=bn_momentum, name=f"block{block}_bn")(x)
    if pool:
        x = layers.AveragePooling2D(2, name=f"block{block}_avgpool")(x)
    return x


def concat_cnn(
    input_shape: tuple[int, int, int] | None = None,
    classes: int = 10,
    weights: str | None = None,
    blocks: tuple[int, ...] = CONCAT_BLOCKS,
    kernels: tuple[int, ...] = PAIR_KERNELS,
    dense_units: tuple[int, int] = (256, 128),
    dropout: float = 0.3,
    bn_momentum: float = 0.9,
    entry_pool_strides: int = 2,
) -> keras.Model:
    """Build concat_cnn; `blocks` lists each block's filters, `dense_units` the two dense widths.

    The entry max-pool (2x2) halves the image before any convolution, as in the study;
    `entry_pool_strides=1` keeps the full resolution (a 2x2 max filter), for data whose
    detail the halving loses, at about four times the compute."""
    if input_shape is None:
        input_shape = (32, 32, 3)
    shape = check_common("concat_cnn", input_shape, classes, None, min_size=CONCAT_MIN_SIZE)
    check_weights("concat_cnn", weights)
    if len(dense_units) != 2:
        raise ValueError(f"concat_cnn: dense_units must hold two widths, got {dense_units!r}")
    inputs = keras.Input(shape, name="image")
    if entry_pool_strides not in (1, 2):
        raise ValueError(f"concat_cnn: entry_pool_strides must be 1 or 2, got "
                         f"{entry_pool_strides!r}")
    x = layers.MaxPooling2D(2, strides=entry_pool_strides,
                            padding="same" if entry_pool_strides == 1 else "valid",
                            name="entry_maxpool")(inputs)
    for block, filters in enumerate(blocks, start=1):
        # average pooling between blocks; the last block hands over to the exit max-pool
        x = concat_block(x, block, filters, tuple(kernels), bn_momentum, pool=block < len(blocks))
    x = layers.MaxPooling2D(2, name="exit_maxpool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = dense_head(x, classes, tuple(dense_units), dropout)
    model = keras.Model(inputs, x, name="concat_cnn")
    if weights is not None:
        model.load_weights(weights)
    return model
