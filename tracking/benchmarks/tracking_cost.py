"""Benchmark: what does our tracking cost against what a user would otherwise run?

    python -m tracking.benchmarks.tracking_cost [--models concat_cnn,vgg19] [--dataset digits]
        [--batch-size N] [--epochs 10] [--limit N] [--repeats 2] [--output outputs/bench.json]

For each model, in one process, on the same data (in memory), model, optimizer, batch size
and epochs, three sides, interleaved `--repeats` times (their order rotating each repeat, so a
noisy neighbour hurts every side alike):

- bare: `model.fit(x, y, validation_data=...)`, then `model.evaluate` on the test split;
- autolog: the same under `mlflow.keras.autolog()` (MLflow's own Keras integration: params,
  per-epoch metrics, the model), logging to the same kind of store as ours;
- ours: `tracking.training.loop.train` with everything on (per-epoch metrics and checkpoints,
  the test evaluation, reports and figures, the logged model).

Per side: end-to-end wall seconds (data in memory to the model logged; bare logs nothing) and
steady-state seconds per epoch, validation included, on one clock: `EpochTimer`'s epoch
starts, so an epoch lasts from its start to the next one's, every callback included. Steady
state is the median of the epochs after the first (which compiles). Ratios are speed ratios,
other side's seconds over ours (1.0 = as fast; below 1 = ours slower), from the median over
repeats. Prints a table; writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import mlflow

from tracking.cli import CommandParser, bad_input_exits
from tracking.config import Config, load_for
from tracking.data.dataset import Dataset
from tracking.store.connect import check_tracking_uri, ensure_experiment
from tracking.training.callbacks import EpochTimer
from tracking.training.classifier import build_classifier, compile_classifier
from tracking.training.loop import train

SIDES = ("bare", "autolog", "ours")


def _compiled(config: Config, data: Dataset) -> keras.Model:
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    steps = -(-len(data.y_train) // config.batch_size)  # fit's ragged last batch included
    return compile_classifier(build_classifier(config, data), config, steps)


def _fit_and_evaluate(model: keras.Model, config: Config, data: Dataset,
                      timer: EpochTimer) -> None:
    model.fit(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
              epochs=config.epochs, batch_size=config.batch_size, shuffle=True, verbose=0,
              callbacks=[timer])
    model.evaluate(data.x_test, data.y_test, batch_size=config.batch_size, verbose=0)


def bare(config: Config, data: Dataset, timer: EpochTimer) -> None:
    """Plain Keras: fit with validation, then evaluate."""
    _fit_and_evaluate(_compiled(config, data), config, data, timer)


def autolog(config: Config, data: Dataset, timer: EpochTimer) -> None:
    """The same fit and evaluation under `mlflow.keras.autolog()` in a run of its own."""
    mlflow.keras.autolog(log_models=True, silent=True)
    try:
        # not mlflow.set_experiment: it exports MLFLOW_EXPERIMENT_ID to every later subprocess
        with mlflow.start_run(experiment_id=ensure_experiment(config.experiment),
                              run_name=f"{config.model}-autolog"):
            _fit_and_evaluate(_compiled(config, data), config, data, timer)
    finally:
        mlflow.keras.autolog(disable=True)


def ours(config: Config, data: Dataset, timer: EpochTimer) -> None:
    """`tracking.training.loop.train`, everything on; the timer runs after the suite's callbacks."""
    keras.backend.clear_session()
    train(config, data, callbacks=[timer])


def measure(side: Callable[[Config, Dataset, EpochTimer], None], config: Config,
            data: Dataset) -> dict[str, float]:
    """One run of `side`: wall seconds and steady-state seconds per epoch."""
    timer = EpochTimer(len(data.y_train))
    started = time.perf_counter()
    side(config, data, timer)
    wall = time.perf_counter() - started
    epochs = timer.epoch_durations()
    return {"wall_seconds": wall, "epoch_seconds": statistics.median(epochs[1:]),
            "first_epoch_seconds": epochs[0]}


def bench_model(config: Config, data: Dataset, repeats: int) -> dict[str, Any]:
    """Every side `repeats` times, interleaved; medians per side and the speed ratios."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in SIDES}
    sides = {"bare": bare, "autolog": autolog, "ours": ours}
    for r in range(repeats):
        order = SIDES[r % len(SIDES):] + SIDES[:r % len(SIDES)]
        for name in order:
            runs[name].append(measure(sides[name], config, data))
    row: dict[str, Any] = {"model": config.model, "batch_size": config.batch_size,
                           "epochs": config.epochs, "train_images": len(data.y_train),
                           "repeats": repeats, "runs": runs}
    for name in SIDES:
        for key in ("wall_seconds", "epoch_seconds"):
            row[f"{name}_{key}"] = statistics.median(m[key] for m in runs[name])
    for other in ("bare", "autolog"):
        for key in ("wall_seconds", "epoch_seconds"):
            row[f"ours_vs_{other}_{key.split('_')[0]}"] = \
                row[f"{other}_{key}"] / row[f"ours_{key}"]
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'model':<12} {'batch':>5} {'epochs':>6}   "
            f"{'wall s (bare / autolog / ours)':>32}   {'s/epoch (bare / autolog / ours)':>32}"
            f"   speed ours vs bare, vs autolog: wall; epoch")
    lines = [head, "-" * len(head)]
    for r in rows:
        walls = " / ".join(f"{r[f'{s}_wall_seconds']:.1f}" for s in SIDES)
        epochs = " / ".join(f"{r[f'{s}_epoch_seconds']:.2f}" for s in SIDES)
        lines.append(
            f"{r['model']:<12} {r['batch_size']:>5} {r['epochs']:>6}   {walls:>32}   "
            f"{epochs:>32}   {r['ours_vs_bare_wall']:.3f}, {r['ours_vs_autolog_wall']:.3f}; "
            f"{r['ours_vs_bare_epoch']:.3f}, {r['ours_vs_autolog_epoch']:.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = CommandParser(prog="python -m tracking.benchmarks.tracking_cost",
        description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="concat_cnn",
                   help="comma-separated registry names (default concat_cnn)")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default="")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10, help="epochs per measurement (>= 3)")
    p.add_argument("--limit", type=int, default=0, help="images kept before splitting (0 = all)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--output", default="outputs/bench.json")
    p.add_argument("--tracking-uri", default="",
                   help="store for the logged runs (default: a temporary SQLite file)")
    args = p.parse_args(argv)
    if args.epochs < 3 or args.repeats < 1:
        p.error("--epochs must be >= 3 (the first compiles, the median needs two more) and "
                "--repeats >= 1")
    with bad_input_exits(p, check_tracking=False):  # the store is --tracking-uri's, if any
        if args.tracking_uri:
            check_tracking_uri(args.tracking_uri)
        configs = [Config(model=m.strip(), dataset=args.dataset, data_dir=args.data_dir,
                          batch_size=args.batch_size, epochs=args.epochs, limit=args.limit,
                          patience=args.epochs, experiment="bench").resolved()
                   for m in args.models.split(",")]
        data = load_for(configs[0])
    with contextlib.ExitStack() as stack:  # a temporary store goes with its folder
        uri = args.tracking_uri or "sqlite:///{}/mlflow.db".format(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        mlflow.set_tracking_uri(uri)
        rows = [bench_model(c, data, args.repeats) for c in configs]
    print(f"backend={keras.backend.backend()} dataset={args.dataset} "
          f"train_images={len(data.y_train)} store={args.tracking_uri or 'temporary, deleted'}")
    print(format_table(rows))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"backend": keras.backend.backend(),
                                             "dataset": args.dataset, "rows": rows}, indent=1))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
