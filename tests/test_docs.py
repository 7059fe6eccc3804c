"""The README and docs/ say only what exists: every relative link (and its #anchor) leads
somewhere, every `python -m X` names a command that answers `--help`, every `mlflow run . -e
ENTRY -P name=...` names an MLproject entry point and its parameters; and the layout they
describe holds (opening a run loads the store, not the training stack)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
MODULE = re.compile(r"python3?(?: -[uOBIE]+)* -m ([A-Za-z_][\w.]*)")
MLFLOW_RUN = re.compile(r"mlflow run \.((?:[ \t]+(?:-e|-P|--[\w-]+)(?:[ \t]+[^\s`|]+)?)*)")


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lowercased, punctuation but '-' and '_' dropped,
    spaces to '-'."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        base = slug(line.lstrip("#"))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def test_the_readme_is_a_five_minute_read() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 220


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_exists(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target):  # http(s), mailto: not ours to check
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no file {file.relative_to(ROOT)})")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading with anchor #{anchor})")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def named_modules() -> dict[str, set[str]]:
    modules: dict[str, set[str]] = {}
    for page in PAGES:
        for name in MODULE.findall(page.read_text(encoding="utf-8")):
            modules.setdefault(name.rstrip("."), set()).add(page.name)
    return modules


def test_every_python_m_command_named_exists_and_answers_help() -> None:
    """One interpreter runs each named module as `python -m X --help` would (runpy), so the
    libraries are imported once; a module that does not exist or does not exit 0 is named."""
    modules = sorted(m for m in named_modules() if m.split(".")[0] in (
        "tracking", "tuning", "gradient_descent", "models"))
    assert "tracking.train" in modules and "tuning.optuna_resnet" in modules
    script = (
        "import runpy, sys, contextlib, io\n"
        "bad = []\n"
        f"for name in {modules!r}:\n"
        "    sys.argv = [name, '--help']\n"
        "    code = 0\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            runpy.run_module(name, run_name='__main__', alter_sys=True)\n"
        "        except SystemExit as stop:\n"
        "            code = stop.code or 0\n"
        "        except BaseException as err:\n"
        "            code = f'{type(err).__name__}: {err}'\n"
        "    if code != 0:\n"
        "        bad.append(f'{name}: {code}')\n"
        "print('\\n'.join(bad))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", f"commands named in the docs that fail --help: {done.stdout}"


def test_every_mlflow_run_names_an_entry_point_and_its_parameters() -> None:
    entries = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
    wrong, seen = [], 0
    for page in PAGES:
        for flags in MLFLOW_RUN.findall(page.read_text(encoding="utf-8")):
            seen += 1
            words = flags.split()
            entry = words[words.index("-e") + 1] if "-e" in words else "main"
            if entry not in entries:
                wrong.append(f"{page.name}: no entry point {entry!r}")
                continue
            known = set(entries[entry].get("parameters", {}))
            for i, word in enumerate(words):
                if word == "-P" and i + 1 < len(words):
                    name = words[i + 1].split("=")[0]
                    if name not in known:
                        wrong.append(f"{page.name}: entry {entry!r} has no parameter {name!r}")
    assert seen >= 3  # the README's own: the Quick start, training, the study
    assert not wrong, "; ".join(wrong)


def test_opening_a_run_loads_the_store_and_not_the_training_stack() -> None:
    """`tracking.store.lifecycle` (where a run is opened) loads four modules of the suite (itself,
    connect, ui, errors) besides the two package inits, and nothing of training, data,
    evaluation or the models."""
    loaded = modules_loaded_by("tracking.store.lifecycle")
    packages = {"tracking", "tracking.store", "mlflow"}
    assert set(loaded) - packages == {"tracking.store.lifecycle", "tracking.store.connect",
                                      "tracking.store.ui", "tracking.errors"}, loaded
    assert "keras" not in loaded and "tensorflow" not in loaded  # nor the backend
    numerics = modules_loaded_by("gradient_descent.core")
    assert "mlflow" not in numerics and "tracking" not in numerics, numerics


def modules_loaded_by(module: str) -> list[str]:
    """Top-level names of the suite's modules, and of keras, tensorflow and mlflow, that a
    fresh interpreter has loaded after `import module`."""
    code = (f"import sys, {module}\n"
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tracking', 'tuning', 'models', 'gradient_descent') or m in "
            "('keras', 'tensorflow', 'mlflow'))))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=True).stdout.split()
