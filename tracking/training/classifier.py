"""Model assembly: the registered network behind a uint8 input, compiled with its recipe.

    config = Config(model="vgg19").resolved()
    model = compile_classifier(build_classifier(config, data), config, steps_per_epoch)

The logged model takes uint8 (N, S, S, 3) images and returns class probabilities: scaling by
1/255 and the training-only augmentation (random shifts, horizontal flips where the data set
allows them) are layers inside it, so they run on the accelerator and prediction needs no
preprocessing of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import keras
from keras import layers

from models import Recipe, build_model, model_label
from tracking.config import Config, ConfigError
from tracking.data.dataset import Dataset
from tracking.data.loaders import FLIP_SAFE
from tracking.precision import precision_policy


def build_classifier(config: Config, data: Dataset) -> keras.Model:
    """The registered model `config.model` with its recipe's options, for `data`'s image shape
    and classes, behind a uint8 input named `image`: Rescaling, then (when augmenting)
    RandomTranslation by up to the recipe's shift and, for data sets in FLIP_SAFE,
    RandomFlip("horizontal"), both seeded with `config.seed`; every layer under the run's
    precision policy (tracking.precision). Uncompiled."""
    config = config.resolved()
    with precision_policy(config.precision):
        core = build_model(config.model, data.image_shape, data.num_classes,
                           **config.recipe.model_options)
        inputs = keras.Input(data.image_shape, dtype="uint8", name="image")
        x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
        steps = []
        if config.shift:
            steps.append(layers.RandomTranslation(config.shift, config.shift,
                                                  fill_mode="constant", seed=config.seed,
                                                  name="random_shift"))
        if config.augment and config.dataset in FLIP_SAFE:
            steps.append(layers.RandomFlip("horizontal", seed=config.seed, name="random_flip"))
        if steps:
            x = keras.Sequential(steps, name="augment")(x)
        return allow_jit(keras.Model(inputs, core(x), name=model_label(config.model)))


def make_optimizer(recipe: Recipe, learning_rate: float, total_steps: int) -> keras.Optimizer:
    """The recipe's optimizer with linear warm-up to `learning_rate` over `warmup_fraction` of
    `total_steps`, then cosine decay to 0 (Loshchilov & Hutter, SGDR, ICLR 2017; Keras's
    CosineDecay with `warmup_target`)."""
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
    return keras.optimizers.AdamW(schedule, weight_decay=recipe.weight_decay)


def compile_classifier(model: keras.Model, config: Config, steps_per_epoch: int) -> keras.Model:
    """Compile for sparse integer labels with the recipe's optimizer and schedule, planned over
    `config.epochs` epochs of `steps_per_epoch` steps; `accuracy` as Keras's metric."""
    model.compile(
        optimizer=make_optimizer(config.recipe, config.learning_rate,
                                 steps_per_epoch * config.epochs),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def load_classifier(path: str | Path) -> keras.Model:
    """A saved classifier (weights, optimizer state and step), ready to train on (`allow_jit`)."""
    return allow_jit(keras.saving.load_model(path, safe_mode=True))  # no code in the file runs


def restore_seed_states(model: keras.Model, seeds: list[list[int]] | None) -> None:
    """Set the model's random generators to `seeds` (`seed_states` of the same architecture);
    None leaves them as they are."""
    if seeds is None:
        return
    generators = _seed_variables(model)
    if len(generators) != len(seeds):
        raise ValueError(f"{len(generators)} random generators in the model, the checkpoint "
                         f"holds {len(seeds)}")
    for variable, state in zip(generators, seeds, strict=True):
        variable.assign(keras.ops.convert_to_tensor(state, dtype=variable.dtype))


SEED_STATE = "seed_generator_state"  # the name of a keras.random.SeedGenerator's variable


def _seed_variables(model: keras.Model) -> list[keras.Variable]:
    return [v for v in model.variables if v.name == SEED_STATE]


def seed_states(model: keras.Model) -> list[list[int]]:
    """The state of every random generator in `model` (dropout masks, random shifts and flips),
    in the model's variable order. Keras saves these variables with a model but does not load
    them back (a reloaded model starts its generators afresh), so a checkpoint keeps them to
    resume with the very masks and shifts the uninterrupted run would have drawn."""
    return [[int(x) for x in keras.ops.convert_to_numpy(v).ravel()]
            for v in _seed_variables(model)]


def allow_jit(model: keras.Model) -> keras.Model:
    """Let JAX compile the training step of a model with random shifts.

    Keras marks RandomTranslation as unfit for XLA (TensorFlow's kernel for it is), and a model
    with one such layer then resolves `jit_compile="auto"` to False: under JAX that runs every
    training step op by op, dozens of times slower. The JAX implementation (an affine
    transform through `jax.scipy`) compiles fine, so under JAX the mark is lifted; on other
    backends nothing changes. The mark is not saved with a model: call this again after
    loading one (`load_classifier` does), before training it.
    """
    if keras.backend.backend() != "jax":
        return model
    pending = [model]
    while pending:
        layer = pending.pop()
        if isinstance(layer, keras.layers.RandomTranslation):
            layer.supports_jit = True
        pending.extend(getattr(layer, "layers", []))
    if getattr(model, "compiled", False):
        model.jit_compile = True
    return model


@contextlib.contextmanager
def distribution(config: Config) -> Iterator[int]:
    """Keras's distribution for the run (`config.distribute`); yields the number of devices
    and restores the default afterwards. Raises ConfigError when the batch does not split
    evenly over the devices."""
    if config.distribute == "none":
        yield 1
        return
    devices = keras.distribution.list_devices()
    if config.batch_size % len(devices):
        raise ConfigError(f"batch_size {config.batch_size} must be divisible by the "
                          f"{len(devices)} devices of data_parallel")
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    try:
        yield len(devices)
    finally:
        keras.distribution.set_distribution(None)
