"""A throwaway package of the user's own: `mypkg.nets`, with a custom Keras layer registered
at import (`keras.saving.register_keras_serializable`) and factories, written to a folder and
put on sys.path (not installed). Used by the plugin and the portable-model tests."""

from __future__ import annotations

import contextlib
import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

PACKAGE = '''
import keras
from models import Recipe


@keras.saving.register_keras_serializable(package="mypkg")
class Doubled(keras.layers.Layer):
    """A custom layer: the package's own code, registered as Keras-serializable."""

    def call(self, x):
        return x * 2.0


def build_net(input_shape, classes, width=8):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(width, 3, activation="relu")(inputs)
    x = Doubled()(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))


def small_net(input_shape, classes):
    return build_net(input_shape, classes, width=4)


small_net.recipe = Recipe(optimizer="adam", learning_rate=3e-3, epochs=2, batch_size=16)
small_net.min_image_size = 8


def wrong_output(input_shape, classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


NOT_A_FACTORY = 42
'''


def write_package(root: Path) -> Path:
    """`root/mypkg/{__init__,nets}.py`; returns `root` (the folder to put on sys.path)."""
    (root / "mypkg").mkdir(parents=True)
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "nets.py").write_text(textwrap.dedent(PACKAGE))
    return root


@contextlib.contextmanager
def package_on_path(root: Path) -> Iterator[str]:
    """`mypkg.nets` written under `root` and importable inside the block; yields its module
    name. After it: off sys.path, out of sys.modules and out of the registry's cache."""
    from models import MODELS

    write_package(root)
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield "mypkg.nets"
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(root))
        for name in [n for n in list(MODELS._specs) if n.startswith("mypkg")]:
            del MODELS[name]
        for module in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
            del sys.modules[module]
