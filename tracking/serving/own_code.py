"""The user's own code that travels with a logged model, so that it loads where the user's
package is not installed (a fresh virtual environment with only the model's requirements).

    carried = carried_code(keras_file, "mypkg.nets:build_net", requirements, stage)
    carried.code_paths      # [stage/"mypkg"]: MLflow copies it into the model's code/ folder
    carried.requirements    # extra pip requirements, e.g. ["keras-hub==0.21.0"]
    carried.modules         # what the served model imports before it loads the Keras file

The mechanism is MLflow's `code_paths` (the model's `code/` folder, put on sys.path by
`mlflow.pyfunc.load_model` and so by `mlflow models serve`) together with Keras's own
registration (`keras.saving.register_keras_serializable`): a custom layer is found at load by
its registered name once its module has been imported, and importing it is what the served
model does first (`tracking/serving/served_model.py`, from the model config's module lists).
Not models from code alone (that file is the suite's wrapper, one file; the user's layers are
a package of their own), and not pickling the classes (Keras's safe_mode loads no code).

Which modules: the factory's module (the run's `model_source`, `module:attribute`), every
module outside Keras that the saved `.keras` file's config names (custom layers, activations,
initializers: Keras records each object's `module`), and what the copied code itself imports
(found by reading its `import` statements). For each one's top-level package the rule is:

- Keras itself (`keras.applications:...`, `keras.layers`) and the standard library: nothing;
  Keras is already a requirement of every model and is never copied.
- An installed distribution whose files pip put in site-packages from an index (its RECORD
  lists the module and it has no PEP 610 `direct_url.json`): a pip requirement
  `name==version`, not a copy. A distribution may be large, compiled or depend on others,
  which a copy of its Python files would lose; a name already required (keras, tensorflow,
  numpy, mlflow) adds nothing.
- One installed from a VCS or an archive URL: the requirement `name @ url` (pip can fetch it
  again there).
- Anything pip cannot fetch again: a package or single module on sys.path that no
  distribution owns, an editable install (`pip install -e`, its RECORD lists no module) or one
  from a local folder (`file://`): its top-level package folder (or its single `.py` file) is
  copied, without `__pycache__`, and the distribution's own dependencies (`Requires-Dist`, not
  extras) become requirements pinned to the versions installed here.
- The suite's own `models` package (plain Keras by the import contract: a factory module's
  `from models import Recipe`): copied. `tracking`, `tuning`, `gradient_descent` are not
  (they need the whole suite): a module importing them does not import where the suite is
  absent, which is no loss for the factory's module (imported best-effort) as long as the
  custom layers live in modules that do import.
- A module with no file (`__main__`, a class typed in a notebook), or that the model names
  but is not found here: it cannot travel; a warning says so, and the model loads only where
  that module can be imported.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import shutil
import sys
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

KERAS_PACKAGES = frozenset({"keras"})  # never copied, never an extra requirement
COPY_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
SUITE_ROOT = Path(__file__).resolve().parents[2]  # the folder of the suite's packages
SUITE_PACKAGES = frozenset({"models", "tracking", "tuning", "gradient_descent"})
# plain Keras by the import contract (pyproject.toml): `from models import Recipe` in a
# user's factory module works where the suite is absent; the others need the whole suite
PORTABLE_SUITE_PACKAGES = frozenset({"models"})


@dataclass
class CarriedCode:
    """What travels with a model: `code_paths` (folders or files for MLflow's code/),
    `requirements` (extra pip requirements), `factory_module` and `modules` (imported by the
    served model before it loads the Keras file; the factory's module best-effort, the others
    must import), and `left_behind` (modules that cannot travel, with why)."""

    code_paths: list[str] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)
    factory_module: str | None = None
    modules: list[str] = field(default_factory=list)
    left_behind: list[str] = field(default_factory=list)


def saved_modules(keras_file: Path) -> list[str]:
    """The modules outside Keras (and builtins) that the `.keras` file's config names, in the
    order they appear: where its custom objects were defined."""
    config = json.loads(zipfile.ZipFile(keras_file).read("config.json"))
    found: dict[str, None] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            module = node.get("module")
            if isinstance(module, str) and "class_name" in node and not is_keras_or_std(module):
                found[module] = None
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return list(found)


def is_keras_or_std(module: str) -> bool:
    """Whether `module` is Keras's own or the standard library's (nothing to carry)."""
    top = module.split(".")[0]
    return top in KERAS_PACKAGES or top in sys.stdlib_module_names or top == "builtins"


def requirement_names(requirements: list[str]) -> set[str]:
    """The canonical project names of pip requirement lines."""
    names = set()
    for line in requirements:
        try:
            names.add(canonicalize_name(Requirement(line).name))
        except InvalidRequirement:
            continue
    return names


def module_location(top: str) -> Path | None:
    """The folder of package `top` (its single one, for a namespace package) or its `.py`
    file; None when it has none (`__main__`, a builtin, several namespace folders)."""
    module = sys.modules.get(top)
    spec = getattr(module, "__spec__", None) if module is not None else None
    if spec is None:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return None
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    if locations:
        return Path(locations[0]) if len(locations) == 1 else None
    if spec.origin and spec.origin.endswith(".py"):
        return Path(spec.origin)
    return None


def owning_distribution(top: str, location: Path,
                        offered: dict[str, list[str]] | None = None
                        ) -> tuple[importlib.metadata.Distribution, bool] | None:
    """The installed distribution that offers package `top` (`offered`: top-level name ->
    distributions, `importlib.metadata.packages_distributions()` by default), and whether pip
    put the module's own files in place (its RECORD lists them: not an editable install);
    None if no distribution offers it."""
    names = (importlib.metadata.packages_distributions() if offered is None else offered
             ).get(top) or []
    wanted = ((location / "__init__.py") if location.is_dir() else location).resolve()
    first = None
    for name in dict.fromkeys(names):
        for dist in importlib.metadata.distributions(name=name):
            first = first or dist
            try:
                relative = wanted.relative_to(Path(dist.locate_file("")).resolve())
            except (ValueError, OSError):
                continue
            if any(Path(path) == relative for path in dist.files or []):
                return dist, True
    return (first, False) if first is not None else None


def direct_url(dist: importlib.metadata.Distribution) -> dict[str, Any] | None:
    """The distribution's PEP 610 `direct_url.json` (how pip installed it from a URL)."""
    text = dist.read_text("direct_url.json")
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def url_requirement(name: str, origin: dict[str, Any]) -> str | None:
    """`name @ url` for a VCS or archive install, None for a local folder (`file://`)."""
    url = origin.get("url", "")
    if url.startswith("file:"):
        return None
    vcs = origin.get("vcs_info")
    if vcs:
        commit = vcs.get("commit_id")
        return f"{name} @ {vcs['vcs']}+{url}" + (f"@{commit}" if commit else "")
    return f"{name} @ {url}"


def pinned_dependencies(dist: importlib.metadata.Distribution) -> list[str]:
    """The distribution's own `Requires-Dist` (no extras), pinned to the versions installed
    here where installed, as written otherwise."""
    out = []
    for line in dist.requires or []:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            out.append(f"{req.name}=={importlib.metadata.version(req.name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{req.name}{req.specifier}")
    return out


def imported_tops(code: Path) -> list[str]:
    """The top-level packages the `.py` files under `code` (a folder or one file) import by
    absolute `import x` / `from x import y`, in order of appearance (relative ones are the
    package's own)."""
    files = sorted(code.rglob("*.py")) if code.is_dir() else [code]
    found: dict[str, None] = {}
    for file in files:
        try:
            tree = ast.parse(file.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(dict.fromkeys(alias.name.split(".")[0] for alias in node.names))
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found[node.module.split(".")[0]] = None
    return list(found)


def suite_package(top: str, location: Path) -> bool:
    """Whether `top` at `location` is one of this suite's own packages (not a user's
    package of the same name)."""
    return top in SUITE_PACKAGES and location.resolve() == (SUITE_ROOT / top).resolve()


def carried_code(keras_file: Path, model_source: str | None, requirements: list[str],
                 stage: Path) -> CarriedCode:
    """What travels with the model saved as `keras_file`, built by the factory
    `model_source` (`module:attribute`; None or `builtin` for the suite's own), by the rule
    in the module docstring. `requirements` are the model's pip requirements so far (a
    name there is not added again); folders to copy are staged under `stage`."""
    factory_module = None
    if model_source and model_source != "builtin" and ":" in model_source:
        factory_module = model_source.partition(":")[0]
        factory_module = None if is_keras_or_std(factory_module) else factory_module
    saved = saved_modules(keras_file)
    carried = CarriedCode(factory_module=factory_module,
                          modules=[m for m in saved if m.split(".")[0] != "__main__"])
    required = requirement_names(requirements)
    offered = importlib.metadata.packages_distributions()

    def require(line: str) -> None:
        name = canonicalize_name(Requirement(line).name)
        if name not in required:
            carried.requirements.append(line)
            required.add(name)

    # (top-level package, whether the model names it itself: else only the copied code
    # imports it, maybe optionally, and one that is not here is no loss to report)
    queue = [(m.split(".")[0], True) for m in dict.fromkeys([factory_module or "", *saved])
             if m]
    seen: set[str] = set()
    while queue:
        top, named = queue.pop(0)
        if top in seen or is_keras_or_std(top):
            continue
        seen.add(top)
        location = None if top == "__main__" else module_location(top)
        if location is None:
            if named:
                carried.left_behind.append(f"{top} (no file to copy)")
            continue
        if suite_package(top, location) and top not in PORTABLE_SUITE_PACKAGES:
            carried.left_behind.append(f"{top} (the suite's own: it loads where the suite "
                                       "is installed)")
            continue
        owner = None if suite_package(top, location) else owning_distribution(
            top, location, offered)
        if owner is not None and owner[1]:
            name = owner[0].metadata["Name"]
            origin = direct_url(owner[0])
            line = (url_requirement(name, origin) if origin is not None
                    else f"{name}=={owner[0].version}")
            if line is not None:
                require(line)
                continue
        stage.mkdir(parents=True, exist_ok=True)
        target = stage / location.name
        if location.is_dir():
            shutil.copytree(location, target, ignore=COPY_IGNORED)
        else:
            shutil.copy2(location, target)
        carried.code_paths.append(str(target))
        if owner is not None:  # editable or from a local folder: its dependencies too
            for line in pinned_dependencies(owner[0]):
                require(line)
        queue.extend((imported, False) for imported in imported_tops(target))
    if carried.left_behind:
        warnings.warn("the model's own code cannot travel with it for "
                      f"{', '.join(carried.left_behind)}: it loads only where that code "
                      "imports", stacklevel=2)
    return carried
