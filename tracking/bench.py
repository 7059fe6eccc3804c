"""Benchmark: does tracking cost training speed? Plain `model.fit` against our `train()`.

    python -m tracking.bench [--models concat_cnn,vgg19] [--dataset digits] [--batch-size N]
                             [--epochs N] [--limit N] [--repeats N] [--output bench.json]

For each model, in one process, on the same data, model, optimizer and batch size:
- plain: `model.fit` with no callbacks and no validation;
- tracked: `train()` with everything on (per-epoch metrics, checkpoints, evaluation, model).
Throughput is steady state: the first epoch (compilation) is left out and the median of the
others taken; the two are interleaved `--repeats` times and each side's best kept, so a noisy
neighbour hurts both alike. The tracked run's wall time is split into data loading,
compilation, training, evaluation and logging. Prints a table; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import keras
import mlflow

from tracking.callbacks import EpochTimer
from tracking.classifier import build_classifier, compile_classifier
from tracking.cli import bad_input_exits
from tracking.config import Config
from tracking.data import Dataset, load_for
from tracking.train import train


def plain_images_per_second(config: Config, data: Dataset) -> float:
    """Steady-state images/s of a bare model.fit on the same model and optimizer."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    steps = -(-len(data.y_train) // config.batch_size)
    model = compile_classifier(build_classifier(config, data), config, steps)
    timer = EpochTimer(len(data.y_train))
    model.fit(data.x_train, data.y_train, epochs=config.epochs, batch_size=config.batch_size,
              shuffle=True, verbose=0, callbacks=[timer])
    return len(data.y_train) / statistics.median(timer.epoch_seconds[1:])


def tracked_measurement(config: Config, data: Dataset) -> dict[str, Any]:
    """One fully tracked run; its steady-state images/s and wall-time split."""
    keras.backend.clear_session()
    t = time.perf_counter()
    results = train(config, data)
    wall = time.perf_counter() - t
    h = results["history"]
    epoch_s = h["epoch_seconds"]
    train_phase = [len(data.y_train) / ips for ips in h["train_images_per_second"]]
    steady = statistics.median(train_phase[1:])
    compile_s = max(train_phase[0] - steady, 0.0)
    timings = results["timings"]
    validation_s = sum(e - tp for e, tp in zip(epoch_s, train_phase, strict=True))
    fit_s = timings["fit_seconds"]
    split = {
        "data": timings["data_seconds"],
        "compilation": compile_s,
        "training": sum(train_phase) - compile_s,
        "validation_and_checkpoints": validation_s,
        "evaluation": timings["evaluate_seconds"],
        "logging": timings["log_setup_seconds"] + timings["log_model_seconds"]
        + max(fit_s - sum(epoch_s), 0.0),
    }
    split["other"] = max(wall - sum(split.values()), 0.0)
    return {"images_per_second": len(data.y_train) / steady, "wall_seconds": wall,
            "split": split, "run_id": results["run_id"],
            "test_accuracy": results.get("test_accuracy")}


def bench_model(config: Config, data: Dataset, repeats: int) -> dict[str, Any]:
    plain, tracked = [], []
    for _ in range(repeats):  # interleaved: drift on a shared machine hits both sides
        plain.append(plain_images_per_second(config, data))
        tracked.append(tracked_measurement(config, data))
    best = max(tracked, key=lambda r: r["images_per_second"])
    return {"model": config.model, "batch_size": config.batch_size, "epochs": config.epochs,
            "train_images": len(data.y_train),
            "plain_images_per_second": max(plain),
            "tracked_images_per_second": best["images_per_second"],
            "ratio": best["images_per_second"] / max(plain),
            "plain_all": plain, "tracked_all": [r["images_per_second"] for r in tracked],
            "tracked_wall_seconds": best["wall_seconds"], "split": best["split"],
            "test_accuracy": best["test_accuracy"]}


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'model':<12} {'batch':>5} {'plain img/s':>12} {'tracked img/s':>14} "
            f"{'ratio':>6}   wall split (s): data / compile / train / val+ckpt / eval / log")
    lines = [head, "-" * len(head)]
    for r in rows:
        s = r["split"]
        lines.append(
            f"{r['model']:<12} {r['batch_size']:>5} {r['plain_images_per_second']:>12.1f} "
            f"{r['tracked_images_per_second']:>14.1f} {r['ratio']:>6.3f}   "
            f"{s['data']:.1f} / {s['compilation']:.1f} / {s['training']:.1f} / "
            f"{s['validation_and_checkpoints']:.1f} / {s['evaluation']:.1f} / {s['logging']:.1f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tracking.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="concat_cnn",
                   help="comma-separated registry names (default concat_cnn)")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default="")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4, help="epochs per measurement (>= 2)")
    p.add_argument("--limit", type=int, default=0, help="training images (0 = all)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--output", default="bench.json")
    p.add_argument("--tracking-uri", default="",
                   help="store for the tracked runs (default: a temporary SQLite file)")
    args = p.parse_args(argv)
    if args.epochs < 2 or args.repeats < 1:
        p.error("--epochs must be >= 2 (the first is compilation) and --repeats >= 1")
    with bad_input_exits(p, check_tracking=False):
        configs = [Config(model=m.strip(), dataset=args.dataset, data_dir=args.data_dir,
                          batch_size=args.batch_size, epochs=args.epochs, limit=args.limit,
                          patience=args.epochs, experiment="bench").resolved()
                   for m in args.models.split(",")]
        data = load_for(configs[0])
    uri = args.tracking_uri or f"sqlite:///{tempfile.mkdtemp(prefix='bench-')}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    rows = [bench_model(c, data, args.repeats) for c in configs]
    print(f"backend={keras.backend.backend()} dataset={args.dataset} "
          f"train_images={len(data.y_train)} store={uri}")
    print(format_table(rows))
    with open(args.output, "w") as f:
        json.dump({"backend": keras.backend.backend(), "dataset": args.dataset,
                   "rows": rows}, f, indent=1)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
