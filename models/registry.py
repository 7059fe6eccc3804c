"""The model registry: the built-in four, the short names installed packages offer, and any
factory named by its import path.

    MODELS["vgg19"]                              # a built-in ModelSpec
    MODELS["mypkg.nets:build_net"]               # imported, checked and cached on first use
    MODELS["keras.applications:EfficientNetV2B0"]
    "vgg19" in MODELS, list(MODELS)              # names: built-ins, then entry points

A name with a colon is `module:attribute` (Hydra's `_target_` and LightningCLI's `class_path`
name a callable by its import path the same way; the colon keeps the module apart from the
attribute, as Python's entry points write it). Installed packages offer short names through
the entry-point group ENTRY_POINT_GROUP (`[project.entry-points."keras_mlflow_suite.models"]`
in their pyproject.toml: `mynet = "mypkg.nets:build_net"`), listed beside the built-ins.

The call contract is `keras.applications`': `factory(input_shape=..., classes=...,
**options)` returning an uncompiled `keras.Model` with `classes` outputs. A factory that
takes `include_top` and `weights` (every `keras.applications` model) is called headless and
untrained (`include_top=False, weights=None, pooling="avg"`) and given the suite's dense head.
A factory may carry its `recipe` (Recipe), `search_space` (SearchSpace) and `min_image_size`
(int) as attributes, or be a ModelSpec itself; what it lacks takes DEFAULT_RECIPE,
SearchSpace() and DEFAULT_MIN_IMAGE_SIZE, said once on stderr. A name that does not import,
is not callable or carries attributes of the wrong type raises UnknownModel with one line.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import sys
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import keras

from models._common import dense_head
from models.spec import ModelSpec, Recipe, SearchSpace

ENTRY_POINT_GROUP = "keras_mlflow_suite.models"
DEFAULT_RECIPE = Recipe()  # AdamW 1e-3, 15 epochs, batch 64, shifts and flips
DEFAULT_MIN_IMAGE_SIZE = 32  # what keras.applications' backbones accept at the least
HEAD_UNITS, HEAD_DROPOUT = (256,), 0.3  # the head the built-in applications get


class UnknownModel(KeyError):
    """A model name that resolves to no usable factory; str() is the one-line reason."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown model"


def is_import_path(name: str) -> bool:
    """Whether `name` is `module:attribute` rather than a registry name."""
    return ":" in name


def model_label(name: str) -> str:
    """`name` where a colon cannot go (a registered model's, a Keras model's name):
    `mypkg.nets:build_net` -> `mypkg.nets.build_net`; registry names as they are."""
    return name.replace(":", ".")


def distribution_of(module: str) -> tuple[str, str] | None:
    """(distribution, version) of the installed package that holds `module`, or None (a
    module on sys.path that no installed distribution owns)."""
    top = module.split(".")[0]
    names = importlib.metadata.packages_distributions().get(top)
    if not names:
        return None
    try:
        return names[0], importlib.metadata.version(names[0])
    except importlib.metadata.PackageNotFoundError:
        return None


def applications_factory(app: Callable[..., keras.Model], name: str) -> Callable[..., keras.Model]:
    """`app` (a keras.applications-style constructor) headless, untrained and global-average
    pooled, with the suite's dense head of HEAD_UNITS (float32 softmax output)."""

    def factory(input_shape: tuple[int, int, int], classes: int, **options: Any) -> keras.Model:
        inputs = keras.Input(input_shape, name="image")
        backbone = app(include_top=False, weights=None, input_tensor=inputs, pooling="avg",
                       **options)
        return keras.Model(inputs, dense_head(backbone.output, classes, HEAD_UNITS,
                                              HEAD_DROPOUT), name=model_label(name))

    return factory


def spec_from_factory(obj: Any, name: str, say: Callable[[str], None] | None = None
                      ) -> ModelSpec:
    """The ModelSpec of factory `obj` (found as `name`) by the rules in the module docstring;
    `say` hears the one line about defaults (stderr by default)."""
    if isinstance(obj, ModelSpec):
        return obj
    if not callable(obj):
        raise UnknownModel(f"model {name!r} is a {type(obj).__name__}, not a callable factory "
                           "(input_shape=..., classes=...) -> keras.Model")
    facts = {"recipe": (Recipe, DEFAULT_RECIPE), "search_space": (SearchSpace, SearchSpace()),
             "min_image_size": (int, DEFAULT_MIN_IMAGE_SIZE)}
    values, defaulted = {}, []
    for attr, (kind, default) in facts.items():
        value = getattr(obj, attr, None)
        if value is None:
            values[attr], _ = default, defaulted.append(attr)
        elif not isinstance(value, kind) or isinstance(value, bool):
            raise UnknownModel(f"model {name!r}: its {attr} is a {type(value).__name__}, not a "
                               f"{kind.__name__}")
        else:
            values[attr] = value
    if defaulted:
        (say or (lambda line: print(line, file=sys.stderr)))(
            f"note: {name} carries no {', '.join(defaulted)}: using the defaults (AdamW 1e-3, "
            f"15 epochs, batch 64; the default search space; images of at least "
            f"{DEFAULT_MIN_IMAGE_SIZE} px)")
    try:
        parameters = inspect.signature(obj).parameters
    except (TypeError, ValueError):  # a builtin without a signature: call it as it is
        parameters = {}
    factory = (applications_factory(obj, name)
               if "include_top" in parameters and "weights" in parameters else obj)
    return ModelSpec(factory, recipe=values["recipe"], min_image_size=values["min_image_size"],
                     search=values["search_space"])


def import_factory(path: str) -> Any:
    """The object `module:attribute` names (the attribute may be dotted)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise UnknownModel(f"model {path!r}: write module:attribute, e.g. mypkg.nets:build_net")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - whatever the user's module raises on import
        raise UnknownModel(f"model {path!r}: cannot import {module_name} "
                           f"({type(err).__name__}: {err})") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise UnknownModel(f"model {path!r}: {module_name} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    return obj


def check_factory(name: str, spec: ModelSpec, input_shape: tuple[int, int, int],
                  classes: int) -> None:
    """Build `name` once for `input_shape` images and `classes` classes: raise UnknownModel
    (one line) when the factory fails, returns no keras.Model, or not `classes` outputs."""
    try:
        model = spec.factory(input_shape=tuple(input_shape), classes=classes,
                             **spec.recipe.model_options)
    except Exception as err:  # noqa: BLE001 - whatever the user's factory raises
        raise UnknownModel(f"model {name!r} failed to build for {input_shape} images and "
                           f"{classes} classes ({type(err).__name__}: {err})") from None
    if not isinstance(model, keras.Model):
        raise UnknownModel(f"model {name!r} returned a {type(model).__name__}, not a "
                           "keras.Model")
    shape = tuple(model.output_shape) if not isinstance(model.output_shape, list) else ()
    if len(shape) != 2 or shape[-1] != classes:
        raise UnknownModel(f"model {name!r} outputs {model.output_shape}, not (None, "
                           f"{classes}): one probability per class")


class ModelRegistry(MutableMapping[str, ModelSpec]):
    """Name -> ModelSpec: the built-ins, entry points and import paths (module docstring)."""

    def __init__(self, builtins: dict[str, ModelSpec]) -> None:
        self._specs: dict[str, ModelSpec] = dict(builtins)
        self._builtin_names = tuple(builtins)
        self._builtins = dict(builtins)
        self._set_here: set[str] = set()  # names given a spec in this process (`reg[n] = s`)

    def entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        """The short names installed packages offer (ENTRY_POINT_GROUP)."""
        return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
                if ep.name not in self._builtin_names}

    def resolve(self, name: str) -> ModelSpec:
        """The spec of `name`, found and cached on first use; raises UnknownModel."""
        if name in self._specs:
            return self._specs[name]
        if is_import_path(name):
            spec = spec_from_factory(import_factory(name), name)
        elif name in (offered := self.entry_points()):
            try:
                obj = offered[name].load()
            except Exception as err:  # noqa: BLE001 - the offering package's import failed
                raise UnknownModel(f"model {name!r} ({offered[name].value}): cannot load "
                                   f"({type(err).__name__}: {err})") from None
            spec = spec_from_factory(obj, name)
        else:
            raise UnknownModel(f"unknown model {name!r}; choose one of: {', '.join(self)}, "
                               "or name a factory as module:attribute")
        self._specs[name] = spec
        return spec

    def source(self, name: str) -> str:
        """Where `name`'s factory comes from: `builtin`, an entry point's `module:attribute`,
        or the import path itself."""
        if name in self._builtin_names:
            return "builtin"
        offered = self.entry_points()
        return offered[name].value if name in offered else name

    def __getitem__(self, name: str) -> ModelSpec:
        return self.resolve(name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.resolve(name)
        except UnknownModel:
            return False
        return True

    def __setitem__(self, name: str, spec: ModelSpec) -> None:
        self._specs[name] = spec
        if self._builtins.get(name) is spec:  # a built-in put back (e.g. by a test's undo)
            self._set_here.discard(name)
        else:
            self._set_here.add(name)

    def __delitem__(self, name: str) -> None:
        del self._specs[name]
        self._set_here.discard(name)

    def in_this_process_only(self, name: str) -> bool:
        """Whether `name` was given its spec in this process (`registry[name] = spec`), so
        that a new Python process (a trial process) would not find the same factory; a
        built-in, an entry point and an import path resolve the same anywhere."""
        return name in self._set_here

    def __iter__(self) -> Iterator[str]:
        """The names to list: the built-ins (and any set here), then entry points; import
        paths resolved so far are not listed."""
        names = [n for n in self._specs if not is_import_path(n)]
        return iter(dict.fromkeys([*names, *self.entry_points()]))

    def __len__(self) -> int:
        return len(list(iter(self)))
