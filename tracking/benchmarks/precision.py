"""Benchmark: training precision (float32 against Keras's mixed policies) per model, through
the tracked loop. Not a test: it prints the table docs/benchmarks.md keeps, from which
`ModelSpec.faster_precision` (what `--precision auto` picks) is set.

    python -m tracking.benchmarks.precision [--models vgg19,resnet50] [--seeds 0,1,2]
        [--precisions float32,mixed_bfloat16] [--dataset digits] [--epochs 0] [--limit 0]

Every (model, seed) trains once per precision with `tracking.training.loop.train`, the precisions
interleaved (their order alternates from seed to seed), so a shared machine's load drifts over
both sides alike. Per run: the steady-state training speed (median `train_images_per_second`
of the epochs after the first, which compiles) and `test_accuracy`. Per (model, precision):
the median speed over seeds, its range, and the test accuracy's mean and sample standard
deviation. Per model and mixed policy: the speed ratio against float32 (median over seeds of
the per-seed ratio) and its range, and whether its mean accuracy lies within float32's seed
spread (mean +/- one standard deviation). `auto` may pick a policy that was faster on every
seed (each per-seed ratio above 1: on a shared machine a median alone moves by +/-10 %) with
its accuracy within that spread - the `auto candidate` column (issue 15). Runs go to the experiment
`--experiment` of the tracking store the environment names (MLFLOW_TRACKING_URI).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow

from models import MODELS
from tracking.cli import CommandParser, bad_input_exits, interrupt_status, sigterm_as_interrupt
from tracking.config import Config
from tracking.precision import PRECISIONS, device_kind
from tracking.training.loop import train

SPEED_METRIC = "train_images_per_second"


def steady_speed(run_id: str) -> float:
    """Median of the run's per-epoch `train_images_per_second` after epoch 1 (all epochs when
    only one ran), images/s."""
    history = mlflow.MlflowClient().get_metric_history(run_id, SPEED_METRIC)
    values = [m.value for m in sorted(history, key=lambda m: m.step)]
    return statistics.median(values[1:] or values)


def measure(models: Sequence[str], seeds: Sequence[int], precisions: Sequence[str],
            dataset: str, epochs: int | None, experiment: str,
            limit: int = 0) -> list[dict[str, Any]]:
    """One tracked training per (model, seed, precision), precisions interleaved; returns a
    row per run: model, seed, precision, run_id, images_per_second, test_accuracy,
    train_seconds."""
    rows = []
    for model in models:
        for i, seed in enumerate(seeds):
            order = list(precisions) if i % 2 == 0 else list(reversed(precisions))
            for precision in order:
                results = train(Config(model=model, dataset=dataset, seed=seed, epochs=epochs,
                                       precision=precision, experiment=experiment, limit=limit,
                                       run_name=f"{model}-{precision}-seed{seed}"))
                metrics = mlflow.MlflowClient().get_run(results["run_id"]).data.metrics
                rows.append({"model": model, "seed": seed, "precision": precision,
                             "run_id": results["run_id"],
                             "images_per_second": steady_speed(results["run_id"]),
                             "test_accuracy": metrics["test_accuracy"],
                             "train_seconds": metrics["train_seconds"]})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, precision): seeds, median and range of images/s, test accuracy mean and
    sample standard deviation; for a mixed policy also `speed_ratio` (median per-seed ratio
    against float32), `speed_ratio_min` / `_max`, `faster_every_seed`,
    `accuracy_within_spread` and `auto_candidate` (both)."""
    table = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        base = {r["seed"]: r for r in mine if r["precision"] == "float32"}
        base_acc = [r["test_accuracy"] for r in base.values()]
        for precision in dict.fromkeys(r["precision"] for r in mine):
            runs = [r for r in mine if r["precision"] == precision]
            speeds = [r["images_per_second"] for r in runs]
            accs = [r["test_accuracy"] for r in runs]
            entry: dict[str, Any] = {
                "model": model, "precision": precision, "seeds": len(runs),
                "images_per_second": statistics.median(speeds),
                "images_per_second_min": min(speeds), "images_per_second_max": max(speeds),
                "test_accuracy_mean": statistics.fmean(accs),
                "test_accuracy_sd": statistics.stdev(accs) if len(accs) > 1 else 0.0}
            if precision != "float32" and base:
                ratios = [r["images_per_second"] / base[r["seed"]]["images_per_second"]
                          for r in runs if r["seed"] in base]
                spread = statistics.stdev(base_acc) if len(base_acc) > 1 else 0.0
                entry["speed_ratio"] = statistics.median(ratios)
                entry["speed_ratio_min"], entry["speed_ratio_max"] = min(ratios), max(ratios)
                entry["faster_every_seed"] = min(ratios) > 1
                entry["accuracy_within_spread"] = (
                    entry["test_accuracy_mean"] >= statistics.fmean(base_acc) - spread)
                entry["auto_candidate"] = (entry["faster_every_seed"]
                                           and entry["accuracy_within_spread"])
            table.append(entry)
    return table


def markdown(table: Sequence[dict[str, Any]]) -> str:
    """The summary as a Markdown table."""
    lines = ["| model | precision | seeds | images/s median (range) | test accuracy mean +/- sd "
             "| speed vs float32: median (per-seed range) | accuracy within float32's spread "
             "| auto candidate |",
             "|---|---|---|---|---|---|---|---|"]
    words = {True: "yes", False: "no"}
    for e in table:
        ratio = (f"{e['speed_ratio']:.2f}x ({e['speed_ratio_min']:.2f}-"
                 f"{e['speed_ratio_max']:.2f})" if "speed_ratio" in e else "1")
        lines.append(f"| {e['model']} | {e['precision']} | {e['seeds']} | "
                     f"{e['images_per_second']:.0f} ({e['images_per_second_min']:.0f}-"
                     f"{e['images_per_second_max']:.0f}) | {e['test_accuracy_mean']:.4f} +/- "
                     f"{e['test_accuracy_sd']:.4f} | {ratio} | "
                     f"{words.get(e.get('accuracy_within_spread'), '-')} | "
                     f"{words.get(e.get('auto_candidate'), '-')} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = CommandParser(
        prog="python -m tracking.benchmarks.precision",
        description="Training speed and test accuracy per model and precision, interleaved "
                    "over seeds, through the tracked loop.")
    parser.add_argument("--models", default="vgg19", help="comma-separated registry names")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=0, help="0 = each model's recipe")
    parser.add_argument("--limit", type=int, default=0,
                        help="images kept before splitting (0 = all)")
    parser.add_argument("--experiment", default="precision")
    parser.add_argument("--output", default="outputs/bench_precision.json")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    precisions = [p for p in args.precisions.split(",") if p]
    unknown = [m for m in models if m not in MODELS] + \
        [p for p in precisions if p not in PRECISIONS or p == "auto"]
    if unknown or "float32" not in precisions:
        parser.error(f"unknown models or precisions {unknown}, or float32 (the reference) "
                     "missing")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, not {args.seeds!r}")
    with bad_input_exits(parser):  # every run's settings checked before the first starts
        for model in models:
            Config(model=model, dataset=args.dataset, epochs=args.epochs or None,
                   limit=args.limit, experiment=args.experiment)
    with sigterm_as_interrupt():  # `kill` ends the run in progress KILLED, as Ctrl-C does
        try:
            rows = measure(models, seeds, precisions, args.dataset, args.epochs or None,
                           args.experiment, args.limit)
        except KeyboardInterrupt as stop:
            print("interrupted: the run in progress is marked KILLED", file=sys.stderr)
            return interrupt_status(stop)
    table = summarise(rows)
    print(f"device kind: {device_kind()}")
    print(markdown(table))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"runs": rows, "summary": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
