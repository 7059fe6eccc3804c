"""Benchmark: training precision (float32 against Keras's mixed policies) per model. Not a
test: it prints the tables docs/benchmarks.md keeps, and writes what it measured on this
machine to the calibration file `--precision auto` reads first (tracking.precision).

    python -m tracking.benchmarks.precision --calibrate [--models all] [--repeats 3]
    python -m tracking.benchmarks.precision [--models vgg19,resnet50] [--seeds 0,1,2]
        [--precisions float32,mixed_bfloat16] [--dataset digits] [--epochs 0] [--limit 0]

`--calibrate` measures speed alone, in minutes: per model, each precision's classifier is
built, compiled and fed exactly as the tracked loop does (`build_classifier`,
`compile_classifier`, `EpochBatches`; random uint8 images, since speed does not depend on their
content; no MLflow callbacks, whose cost is the same under either policy), warmed up by one
short fit (the compilation), then timed in `--repeats` fits of about `--chunk-seconds` each,
the precisions interleaved and their order alternating from repeat to repeat. Per model it
writes the images/s of every repeat, the per-repeat speed ratios against float32 and the
verdict (`tracking.precision.speed_verdict`) to the calibration file as soon as the model is
done: a stopped calibration keeps the models it finished, and running it again measures only
the rest (`--recalibrate` measures all again).

Without `--calibrate`, the 3-seed benchmark:
Every (model, seed) trains once per precision with `tracking.training.loop.train`, the precisions
interleaved (their order alternates from seed to seed), so a shared machine's load drifts over
both sides alike. Per run: the steady-state training speed (median `train_images_per_second`
of the epochs after the first, which compiles) and `test_accuracy`. Per (model, precision):
the median speed over seeds, its range, and the test accuracy's mean and sample standard
deviation. Per model and mixed policy: the speed ratio against float32 (median over seeds of
the per-seed ratio) and its range, and whether its mean accuracy lies within float32's seed
spread (mean +/- one standard deviation). `auto` may pick a policy that was faster on every
seed and by MIN_SPEEDUP in the median (`speed_verdict`: on a shared machine a median alone
moves by +/-10 %) with
its accuracy within that spread - the `auto candidate` column (issue 15). Runs go to the experiment
`--experiment` of the tracking store the environment names (MLFLOW_TRACKING_URI). Its
accuracy verdicts go to the calibration file too: the accuracy evidence `auto` reads for this
machine before the registry's (`ModelSpec.accuracy_held`).
"""

from __future__ import annotations

import gc
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
import numpy as np

from models import MODELS
from tracking.cli import CommandParser, bad_input_exits, interrupt_status, sigterm_as_interrupt
from tracking.config import Config
from tracking.data.batches import EpochBatches
from tracking.data.dataset import Dataset
from tracking.machine import processor_model
from tracking.precision import (
    PRECISIONS,
    calibration_path,
    device_kind,
    read_calibration,
    speed_verdict,
    write_calibration,
)
from tracking.training.classifier import build_classifier, compile_classifier
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
                entry["faster_every_seed"] = speed_verdict(ratios)
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


# seconds the calibration took per model on this project's 2-core Xeon (AMX, quiet), 3
# repeats of about 4 s per precision, 2026-12-02: the estimate printed before it starts
CALIBRATION_SECONDS = {"vgg19": 45.0, "resnet50": 110.0, "densenet121": 180.0,
                       "concat_cnn": 35.0}
CALIBRATION_CLASSES = 10
MAX_CHUNK_SECONDS = 600.0  # one timed fit: longer measures nothing more
ACCURACY_SEEDS = 3  # the registry's rule: seeds per policy behind an accuracy verdict


def random_dataset(image_size: int, images: int, seed: int = 0) -> Dataset:
    """Random uint8 images (images, image_size, image_size, 3) with labels over
    CALIBRATION_CLASSES classes, as every split: speed does not depend on the content."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (images, image_size, image_size, 3), dtype=np.uint8)
    y = np.arange(images, dtype=np.int64) % CALIBRATION_CLASSES
    return Dataset(name="digits", class_names=tuple(map(str, range(CALIBRATION_CLASSES))),
                   source="random images (precision calibration)", x_train=x, y_train=y,
                   x_val=x[:1], y_val=y[:1], x_test=x[:1], y_test=y[:1])


def _timed_fit(model: keras.Model, data: Dataset, batch_size: int, steps: int) -> float:
    """Seconds of one `fit` over `steps` full batches of `data` (the loop's EpochBatches)."""
    n = batch_size * steps
    batches = EpochBatches(data.x_train[:n], data.y_train[:n], batch_size, seed=0)
    start = time.perf_counter()
    model.fit(batches, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - start


def calibrate_model(model_name: str, precisions: Sequence[str], repeats: int,
                    image_size: int = 32, chunk_seconds: float = 4.0,
                    max_steps: int = 200) -> dict[str, Any]:
    """Speed of `model_name` in each of `precisions` (float32 first), interleaved: returns
    batch_size, image_size, steps (per timed fit), images_per_second (precision -> one value
    per repeat, images/s), speed_ratio (mixed policy -> per-repeat ratio against float32),
    faster (the policies `speed_verdict` calls faster) and seconds (wall time)."""
    began = time.perf_counter()
    models, batch_size = {}, 0
    for precision in precisions:
        config = Config(model=model_name, precision=precision, image_size=image_size,
                        checkpoint_every=0).resolved()
        batch_size = config.batch_size
        if not models:
            data = random_dataset(image_size, batch_size * (max_steps + 2))
        models[precision] = compile_classifier(build_classifier(config, data), config,
                                               max_steps)
        _timed_fit(models[precision], data, batch_size, 2)  # compiles the train step
    per_step = _timed_fit(models["float32"], data, batch_size, 2) / 2
    steps = int(min(max(round(chunk_seconds / per_step), 2), max_steps))
    speeds: dict[str, list[float]] = {p: [] for p in precisions}
    for repeat in range(repeats):
        for precision in (precisions if repeat % 2 == 0 else list(reversed(precisions))):
            seconds = _timed_fit(models[precision], data, batch_size, steps)
            speeds[precision].append(batch_size * steps / seconds)
    ratios = {p: [m / f for m, f in zip(speeds[p], speeds["float32"], strict=True)]
              for p in precisions if p != "float32"}
    del models
    keras.backend.clear_session()
    gc.collect()
    return {"batch_size": batch_size, "image_size": image_size, "steps": steps,
            "repeats": repeats, "images_per_second": speeds, "speed_ratio": ratios,
            "faster": [p for p, r in ratios.items() if speed_verdict(r)],
            "seconds": round(time.perf_counter() - began, 1),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def calibrate(models: Sequence[str], precisions: Sequence[str], repeats: int,
              image_size: int = 32, chunk_seconds: float = 4.0, redo: bool = False,
              say: Callable[[str], None] = print) -> Path:
    """Calibrate each of `models` not yet calibrated on this machine (all with `redo`),
    saying the plan and its estimated time first and a progress line per model; each model's
    entry is written as soon as it is done. Returns the calibration file's path."""
    done = (read_calibration() or {}).get("speed", {})
    todo = [m for m in models if redo or m not in done]
    path = calibration_path()
    estimate = sum(CALIBRATION_SECONDS.get(m, 120.0) for m in todo) * repeats / 3
    say(f"calibrating precision on {processor_model()} ({device_kind()}): {len(todo)} models "
        f"x {', '.join(precisions)}, one warm-up fit each (it compiles) then {repeats} "
        f"interleaved fits of about {chunk_seconds:g} s; about {estimate / 60:.0f} min on a "
        f"2-core CPU (less with a GPU); results: {path}")
    for model in models:
        if model not in todo:
            say(f"{model}: calibrated here before, kept (--recalibrate measures it again)")
    began = time.perf_counter()
    for i, model in enumerate(todo, 1):
        entry = calibrate_model(model, precisions, repeats, image_size, chunk_seconds)
        write_calibration({model: entry}, "speed")
        medians = ", ".join(f"{p} {statistics.median(v):.0f}"
                            for p, v in entry["images_per_second"].items())
        ratios = ", ".join(f"{p} {statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})"
                           for p, r in entry["speed_ratio"].items())
        elapsed = time.perf_counter() - began
        left = sum(CALIBRATION_SECONDS.get(m, 120.0) for m in todo[i:]) * repeats / 3
        left *= elapsed / max(sum(CALIBRATION_SECONDS.get(m, 120.0) for m in todo[:i])
                              * repeats / 3, 1.0)  # scaled by this machine's pace so far
        say(f"[{i}/{len(todo)}] {model}: images/s {medians}; against float32 {ratios}; "
            f"faster: {', '.join(entry['faster']) or 'none'} ({entry['seconds']:.0f} s"
            f"{f'; about {left / 60:.0f} min left' if i < len(todo) else ''})")
    return path


def record_accuracy(table: Sequence[dict[str, Any]], dataset: str) -> Path | None:
    """Write the 3-seed benchmark's accuracy verdicts (mixed policy -> held, evidence) to this
    machine's calibration file; None when the table has no mixed policy with float32 beside it."""
    update: dict[str, dict[str, Any]] = {}
    base = {e["model"]: e for e in table if e["precision"] == "float32"}
    for e in table:
        if "accuracy_within_spread" not in e or e["seeds"] < 2:
            continue
        f = base[e["model"]]
        update.setdefault(e["model"], {})[e["precision"]] = {
            "held": e["accuracy_within_spread"],
            "evidence": (f"{dataset}, {e['seeds']} seeds: {e['test_accuracy_mean']:.4f} against "
                         f"float32's {f['test_accuracy_mean']:.4f} +/- "
                         f"{f['test_accuracy_sd']:.4f}")}
    if not update:
        return None
    done = (read_calibration() or {}).get("accuracy", {})
    return write_calibration({m: {**done.get(m, {}), **v} for m, v in update.items()},
                             "accuracy")


def main(argv: Sequence[str] | None = None) -> int:
    parser = CommandParser(
        prog="python -m tracking.benchmarks.precision",
        description="Training speed (and, without --calibrate, test accuracy over seeds) per "
                    "model and precision, the precisions interleaved.")
    parser.add_argument("--calibrate", action="store_true",
                        help="measure speed alone on this machine, in minutes, for "
                             "--precision auto (written to the suite's cache folder)")
    parser.add_argument("--recalibrate", action="store_true",
                        help="with --calibrate: measure models calibrated here before again")
    parser.add_argument("--models", default="",
                        help="comma-separated registry names (default: vgg19; all four "
                             "with --calibrate)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="--calibrate: interleaved timed fits per precision")
    parser.add_argument("--chunk-seconds", type=float, default=4.0,
                        help="--calibrate: about this long per timed fit")
    parser.add_argument("--image-size", type=int, default=32, help="--calibrate: image side")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=0, help="0 = each model's recipe")
    parser.add_argument("--limit", type=int, default=0,
                        help="images kept before splitting (0 = all)")
    parser.add_argument("--experiment", default="precision")
    parser.add_argument("--output", default="outputs/bench_precision.json")
    args = parser.parse_args(argv)
    if args.models.strip() and not [m for m in args.models.split(",") if m.strip()]:
        parser.error(f"--models names no model: {args.models!r}")
    if args.recalibrate and not args.calibrate:
        parser.error("--recalibrate goes with --calibrate")
    models = [m.strip() for m in args.models.split(",") if m.strip()] or (
        list(MODELS) if args.calibrate else ["vgg19"])
    precisions = [p for p in args.precisions.split(",") if p]
    unknown = [m for m in models if m not in MODELS] + \
        [p for p in precisions if p not in PRECISIONS or p == "auto"]
    if unknown or "float32" not in precisions or len(precisions) < 2:
        parser.error(f"unknown models or precisions {unknown}, or float32 (the reference) or "
                     "a mixed policy missing")
    if args.repeats < 1 or not 0 < args.chunk_seconds <= MAX_CHUNK_SECONDS:
        parser.error("--repeats must be a positive integer and --chunk-seconds from 0 to "
                     f"{MAX_CHUNK_SECONDS:g}")
    if args.calibrate:
        try:  # the cache folder must take the file before minutes are spent measuring
            calibration_path().parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=calibration_path().parent):
                pass
        except OSError as err:
            parser.error(f"cannot write the calibration to {calibration_path().parent} "
                         f"({err.strerror or err}); set KERAS_MLFLOW_SUITE_CACHE to a "
                         "writable folder")
    precisions = ["float32", *[p for p in precisions if p != "float32"]]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, not {args.seeds!r}")
    # every run's settings checked before the first starts; a calibration logs no runs
    with bad_input_exits(parser, check_tracking=not args.calibrate):
        for model in models:
            Config(model=model, dataset=args.dataset, epochs=args.epochs or None,
                   limit=args.limit, experiment=args.experiment, image_size=args.image_size)
    with sigterm_as_interrupt():  # `kill` ends the run in progress KILLED, as Ctrl-C does
        try:
            if args.calibrate:
                path = calibrate(models, precisions, args.repeats, args.image_size,
                                 args.chunk_seconds, redo=args.recalibrate)
                print(f"written: {path}; --precision auto now reads it on this machine")
                return 0
            rows = measure(models, seeds, precisions, args.dataset, args.epochs or None,
                           args.experiment, args.limit)
        except KeyboardInterrupt as stop:
            print("interrupted: the models finished so far are kept" if args.calibrate else
                  "interrupted: the run in progress is marked KILLED", file=sys.stderr)
            return interrupt_status(stop)
    table = summarise(rows)
    print(f"device kind: {device_kind()}")
    print(markdown(table))
    if len(seeds) >= ACCURACY_SEEDS and not args.epochs and not args.limit:
        written = record_accuracy(table, args.dataset)
        if written:
            print(f"accuracy verdicts written to {written} (--precision auto reads them here)")
    else:
        print(f"accuracy verdicts not recorded for --precision auto: that takes {ACCURACY_SEEDS} "
              "or more seeds at the recipe's epochs on the whole data set")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"runs": rows, "summary": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
