"""What a run records about where it came from: settings, code, libraries, machine, data, model.

    tags = run_tags(config, extra)                     # at the run's start
    log_provenance(requested, config, model, data, devices=1, steps_per_epoch=26)

Params: every Config field as requested ("auto" where left to the recipe, as `mlflow run` logs
them too), the values that ran (`effective_epochs`, `effective_batch_size`,
`effective_learning_rate`, `effective_augment`) and the recipe (`optimizer`, `weight_decay`,
`warmup_fraction`, `augment_shift`, `arch_*`), the model's size, library versions, the machine
(`python_version`, `cpu_model`, `cpu_count`, `keras_devices`, and `accelerator`,
`accelerator_driver`, `accelerator_memory_mb` where nvidia-ml-py finds a GPU), split sizes and
`class_names` (only where a comma-joined list is exact: `class_names.json` always is).
The data's identity: `data_dir` (as given), `data_source` (the folder or file read) and, for
folder data, `data_digest` (`tracking.data.layouts.identity_digest`: every file's path, size,
label and split) and `data_layout` (class folders, split folders or manifest).
Tags: `mlflow.source.git.commit` (the commit of the checkout this code runs from: MLflow's own
name, so it is the one commit tag) and `git_dirty`. Artifacts: `class_names.json`,
`packages.txt` (every installed distribution, as `pip freeze` lists them), `git_diff.patch`
(when the tree is dirty), `model_summary.txt`. The three splits are logged as MLflow dataset
inputs with digests.
"""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow.exceptions import MlflowException

from models import MODELS
from models.registry import distribution_of
from tracking.config import Config, param_text, same_param
from tracking.data.dataset import Dataset, data_digest
from tracking.data.images import LeftOut
from tracking.evaluation.class_names import class_names_param, log_class_names
from tracking.machine import installed_packages, library_versions, machine
from tracking.precision import choose_precision

COMMIT_TAG = "mlflow.source.git.commit"  # MLflow's own tag; we set it for every entry point
DIRTY_TAG = "git_dirty"
MAX_DIFF_CHARS = 5_000_000  # a larger diff is cut, and the file says so


@dataclass(frozen=True)
class SourceState:
    """The git state of a checkout: HEAD's commit, whether the tree differs from it, and the
    difference (`git diff HEAD`, untracked files listed above it; "" when clean)."""

    commit: str
    dirty: bool
    diff: str


def source_state(folder: str | Path | None = None) -> SourceState | None:
    """The git state of the checkout holding `folder` (default: this code's), or None outside
    a git checkout or without git."""
    cwd = str(folder or Path(__file__).resolve().parent)

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=30, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = git("status", "--porcelain").strip()
        diff = git("diff", "HEAD") if changed else ""
        untracked = git("ls-files", "--others", "--exclude-standard").split() if changed else []
    except (OSError, subprocess.SubprocessError):
        return None
    if untracked:  # text before the first "diff --git" line is ignored by git apply and patch
        diff = "".join(f"# untracked, not in this diff: {p}\n" for p in untracked) + diff
    if len(diff) > MAX_DIFF_CHARS:
        diff = (diff[:MAX_DIFF_CHARS]
                + f"\n# cut at {MAX_DIFF_CHARS} of {len(diff)} characters\n")
    return SourceState(commit, bool(changed), diff)


def run_tags(config: Config, extra: dict[str, str] | None = None,
             source: SourceState | None = None) -> dict[str, str]:
    """Tags set when a run starts: model, dataset, host and pid (for `tracking.runs stale`),
    the code's commit and `git_dirty` (`source`, default this checkout's), and the caller's
    own."""
    tags = {"model": config.model, "dataset": config.dataset, "host": socket.gethostname(),
            "pid": str(os.getpid()), **(extra or {})}
    source = source or source_state()
    if source:
        tags[COMMIT_TAG] = source.commit
        tags[DIRTY_TAG] = str(source.dirty).lower()
    return tags


def run_params(requested: Config, config: Config, model: keras.Model, data: Dataset,
               devices: int, steps_per_epoch: int) -> dict[str, Any]:
    """Every param of a training run: `requested` as given, `config` as resolved and run."""
    recipe, choice = config.recipe, choose_precision(requested.model, requested.precision)
    return {
        **requested.to_params(),
        **{f"effective_{k}": param_text(getattr(config, k))
           for k in ("epochs", "batch_size", "learning_rate", "augment", "precision")},
        **model_origin(config.model),
        "device_kind": choice.kind,
        "precision_reason": choice.reason,
        "optimizer": recipe.optimizer,
        "weight_decay": recipe.weight_decay,
        "warmup_fraction": recipe.warmup_fraction,
        "augment_shift": config.shift,
        **{f"arch_{k}": v for k, v in recipe.model_options.items()},
        "num_params": model.count_params(),
        "num_devices": devices,
        "steps_per_epoch": steps_per_epoch,
        **library_versions(),
        **machine(),
        "train_size": len(data.y_train), "val_size": len(data.y_val),
        "test_size": len(data.y_test), "num_classes": data.num_classes,
        **class_names_param(data.class_names),
        "skipped_images": len(data.skipped),
        "left_out_files": len(data.left_out),
        "data_source": data.source,
        **({"data_digest": data.digest} if data.digest else {}),
        **({"data_layout": data.layout} if data.layout else {}),
        "train_pixel_mean": round(pixel_mean(data.x_train), 2),
        "train_image_mean_range": ",".join(f"{v:.1f}" for v in image_mean_range(data.x_train)),
    }


def _sample_rows(n: int, sample: int) -> np.ndarray:
    """At most `sample` row numbers of n, evenly spaced (a memory-mapped split is not read
    whole)."""
    return np.unique(np.linspace(0, n - 1, num=min(sample, n), dtype=np.int64))


def model_origin(model: str) -> dict[str, str]:
    """Params saying where the model's factory came from, so that a resume or a comparison
    finds it again: `model_source` (`builtin`, or its `module:attribute`) and, for a factory
    of an installed distribution, `model_package` (`name==version`)."""
    source = MODELS.source(model)
    out = {"model_source": source}
    if source != "builtin":
        found = distribution_of(source.split(":")[0])
        out["model_package"] = f"{found[0]}=={found[1]}" if found else "(not installed)"
    return out


LEFT_OUT_FILE = "left_out_files.csv"  # artifact: path,reason of every entry not read


def left_out_csv(items: Sequence[LeftOut]) -> str:
    """`path,reason` lines (CSV, with a header) of the entries a folder data set left out."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows(items)
    return out.getvalue()


def pixel_mean(images: np.ndarray, sample: int = 1000) -> float:
    """Mean pixel value (0-255) of uint8 images (N, S, S, 3), over at most `sample` of them
    evenly spaced."""
    return float(np.mean(images[_sample_rows(len(images), sample)], dtype=np.float64))


def image_mean_range(images: np.ndarray, sample: int = 1000) -> tuple[float, float]:
    """(lowest, highest) mean pixel value (0-255) of one image, over at most `sample` of the
    uint8 images (N, S, S, 3) evenly spaced: the training images' spread of brightness, what
    `tracking.predict` compares a new image with (a class darker or lighter than the rest is
    inside it)."""
    means = images[_sample_rows(len(images), sample)].mean(axis=(1, 2, 3), dtype=np.float64)
    return float(means.min()), float(means.max())


def log_params_once(params: dict[str, Any]) -> None:
    """Log params to the active run, skipping those already logged with the same meaning.

    `mlflow run` logs the entry point's parameters itself, as the user typed them (shell-quoted;
    a `type: path` parameter before MLflow made it absolute); MLflow refuses to change a logged
    value. A value that ran differently from that spelling (`-P data_dir=pets` ran as
    `/home/u/pets`) is logged beside it as `effective_<key>`.
    """
    run = mlflow.active_run()
    existing = mlflow.MlflowClient().get_run(run.info.run_id).data.params
    fresh = {}
    for key, value in params.items():
        text = param_text(value)
        if key not in existing:
            fresh[key] = text
        elif not same_param(existing[key], text) and f"effective_{key}" not in existing:
            fresh[f"effective_{key}"] = text
    if fresh:
        mlflow.log_params(fresh)


def log_data_inputs(data: Dataset, image_size: int) -> None:
    """Log the three splits as MLflow dataset inputs (each with its digest), named
    `<data set>-<size>px-<training|validation|test>`."""
    # a plain name such as "sklearn.datasets.load_digits" is no path: let MLflow record the code
    source = data.source if os.path.exists(data.source) else None
    for context, x, y in (("training", data.x_train, data.y_train),
                          ("validation", data.x_val, data.y_val),
                          ("test", data.x_test, data.y_test)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "source ... in multiple ways"
            ds = mlflow.data.from_numpy(x, targets=y, source=source, digest=data_digest(x, y),
                                        name=f"{data.name}-{image_size}px-{context}")
        for attempt in range(3):  # processes logging one data set at once race for its row
            try:
                mlflow.log_input(ds, context=context)
                break
            except MlflowException as err:
                # the row another process just created is found on the next try (SQLite's and
                # PostgreSQL's unique-constraint message)
                if attempt == 2 or "unique" not in str(err).lower():
                    raise
                time.sleep(0.2 * (attempt + 1))


def model_summary(model: keras.Model) -> str:
    """Keras's layer-by-layer summary, nested models expanded, as text."""
    lines: list[str] = []
    model.summary(print_fn=lambda line, *a, **k: lines.append(line), expand_nested=True,
                  line_length=120)
    return "\n".join(lines)


def log_provenance(requested: Config, config: Config, model: keras.Model, data: Dataset,
                   devices: int, steps_per_epoch: int,
                   source: SourceState | None = None) -> None:
    """Everything a new run logs before training: params (`run_params`), the skipped images,
    the data inputs, `class_names.json`, `packages.txt`, `git_diff.patch` when the checkout
    (`source`, default this code's) is dirty, and `model_summary.txt`."""
    log_params_once(run_params(requested, config, model, data, devices, steps_per_epoch))
    if data.skipped:
        mlflow.log_text("\n".join(data.skipped) + "\n", "skipped_images.txt")
    if data.left_out:
        mlflow.log_text(left_out_csv(data.left_out), LEFT_OUT_FILE)
        counts = Counter(item.reason for item in data.left_out)
        print(f"data: {len(data.left_out)} files or folders under {data.source} not read ("
              + ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
              + f"): listed in the run's {LEFT_OUT_FILE}", file=sys.stderr)
    log_data_inputs(data, config.image_size)
    log_class_names(data.class_names)
    mlflow.log_text(installed_packages(), "packages.txt")
    log_git_diff(source or source_state())
    mlflow.log_text(model_summary(model), "model_summary.txt")


def log_git_diff(source: SourceState | None) -> None:
    """Log `git_diff.patch` (the uncommitted changes) to the active run when `source` is a
    dirty checkout."""
    if source and source.dirty:
        mlflow.log_text(source.diff, "git_diff.patch")
