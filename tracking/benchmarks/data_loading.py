"""Benchmark: loading folder data sets, in time and resident memory. Not a test: it prints.

    python -m tracking.benchmarks.data_loading [--cases photos,fashion,large] [--photos 300]
        [--megapixels 6] [--copies 250000] [--large-limit 0] [--baseline-module old_data.py]

It builds its inputs in a temporary folder (deleted afterwards unless --keep), with its own
image cache there, and measures each load in a fresh child process, which reports wall
seconds, images/s, its resident memory after imports (the baseline) and at its peak (VmHWM),
and the peaks of anonymous and file-backed resident memory sampled every 20 ms (a
memory-mapped split shows as file-backed: page cache the kernel can drop).

1. photos: `--photos` JPEGs of `--megapixels` each in two class folders (every fourth with an
   EXIF rotation), `--image-size 32`: the first load, then the cached one. With
   `--baseline-module FILE` (another module with `load_dataset`: `git show
   4456ff0:tracking/data.py`, the version docs/benchmarks.md measured against, whose imports
   still resolve; later flat versions import modules that have since moved into wings)
   that one loads the first `--baseline-photos` photos too.
2. fashion: Fashion-MNIST's 70,000 images as PNG files in class folders, copied (shifted by
   a pixel per copy) up to `--copies` files, `--image-size 32`: first and cached load.
3. large: the same folder at `--image-size 224` with `--limit` so large that the arrays take
   more than half the machine's memory (`--large-limit`, 0 = computed), then one epoch of
   concat_cnn through the tracked `train()` (a temporary MLflow store).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tracking.cli import CommandParser

FASHION_NAMES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                 "sneaker", "bag", "boot")
ORIENTATION = 0x0112  # EXIF tag


# --------------------------------------------------------------------------- inputs


def make_photos(root: Path, count: int, megapixels: float, seed: int = 0) -> None:
    """`count` photo-like JPEGs (smooth colour fields plus sensor-like noise, quality 90) of
    about `megapixels` each, 4:3, half in `a/`, half in `b/`."""
    rng = np.random.default_rng(seed)
    height = int((megapixels * 1e6 * 3 / 4) ** 0.5)
    width = height * 4 // 3
    for i in range(count):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 200, (24, 32, 3), dtype=np.uint8))
        pixels = np.asarray(coarse.resize((width, height), Image.BICUBIC))
        pixels = pixels + rng.integers(0, 40, (height, width, 3), dtype=np.uint8)
        exif = Image.Exif()
        if i % 4 == 0:
            exif[ORIENTATION] = 6
        Image.fromarray(pixels).save(folder / f"IMG_{i:05d}.jpg", quality=90, exif=exif)


def make_fashion(root: Path, total: int) -> int:
    """Fashion-MNIST (train + test) as PNGs in class folders, repeated up to `total` files;
    copy k is shifted k pixels to the right (wrapping), so no two files are alike."""
    # tracking.data.dataset imports Keras (seconds): only the cases that need Fashion-MNIST pay
    from tracking.data.loaders import FASHION_FILES, fashion_search_dirs, read_idx

    found = next(d for d in fashion_search_dirs(None)
                 if all((d / f).is_file() for f in FASHION_FILES.values()))
    x = np.concatenate([read_idx(found / FASHION_FILES["x_train"]),
                        read_idx(found / FASHION_FILES["x_test"])])
    y = np.concatenate([read_idx(found / FASHION_FILES["y_train"]),
                        read_idx(found / FASHION_FILES["y_test"])])
    for name in FASHION_NAMES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for n in range(total):
        copy, i = divmod(n, len(x))
        image = np.roll(x[i], copy, axis=1) if copy else x[i]
        Image.fromarray(image).save(root / FASHION_NAMES[y[i]] / f"{copy}-{i:05d}.png")
    return total


# --------------------------------------------------------------------------- child process


def memory_now() -> dict[str, int]:
    """This process's VmRSS, VmHWM, RssAnon and RssFile in bytes (Linux /proc)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


class PeakSampler(threading.Thread):
    """Peak RssAnon and RssFile, sampled every 20 ms until `stop()`."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._done = threading.Event()

    def run(self) -> None:
        while True:
            self.sample()
            if self._done.wait(0.02):
                return

    def sample(self) -> None:
        now = memory_now()
        for key in self.peak:
            self.peak[key] = max(self.peak[key], now[key])

    def stop(self) -> dict[str, int]:
        self._done.set()
        self.join()
        self.sample()
        return self.peak


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One measured load (and, with --train-epoch, one tracked epoch); returns the figures."""
    # imported here, after the choice: the baseline is another implementation of
    # tracking.data.dataset
    if args.module:
        spec = importlib.util.spec_from_file_location("baseline_data", args.module)
        data_module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = data_module  # its dataclasses look themselves up there
        spec.loader.exec_module(data_module)
    else:
        import tracking.data.dataset as data_module
    baseline = memory_now()["VmRSS"]
    sampler = PeakSampler()
    sampler.start()
    started = time.perf_counter()
    data = data_module.load_dataset("folder", args.data_dir, image_size=args.image_size,
                                    limit=args.limit or None)
    seconds = time.perf_counter() - started
    images = sum(len(y) for y in (data.y_train, data.y_val, data.y_test))
    result = {"seconds": seconds, "images": images, "images_per_second": images / seconds,
              "baseline_rss": baseline, "peak_rss": memory_now()["VmHWM"],
              "memmap": isinstance(data.x_train, np.memmap),
              "array_bytes": int(sum(x.nbytes for x in (data.x_train, data.x_val, data.x_test))),
              **{f"peak_{k}": v for k, v in sampler.stop().items()}}
    if args.train_epoch:
        result["train"] = one_epoch(args, data)
    return result


def one_epoch(args: argparse.Namespace, data: Any) -> dict[str, Any]:
    """One tracked epoch of concat_cnn on `data`; its figures and the memory it took."""
    import mlflow  # here: only the large case trains, and the loads measure without them

    from tracking.config import Config
    from tracking.training.loop import train

    mlflow.set_tracking_uri(f"sqlite:///{args.store}")
    sampler = PeakSampler()
    sampler.start()
    config = Config(model="concat_cnn", dataset="folder", data_dir=args.data_dir,
                    image_size=args.image_size, limit=args.limit, epochs=1,
                    experiment="bench-data")
    started = time.perf_counter()
    results = train(config, data)
    return {"wall_seconds": time.perf_counter() - started,
            "train_seconds": results["train_seconds"],
            "train_images_per_second": results["history"]["train_images_per_second"][0],
            "test_accuracy": results.get("test_accuracy"),
            "peak_rss": memory_now()["VmHWM"],
            **{f"peak_{k}": v for k, v in sampler.stop().items()}}


# --------------------------------------------------------------------------- orchestration


def measure(name: str, data_dir: Path, image_size: int, cache: Path, *, limit: int = 0,
            module: str = "", train_epoch: bool = False, store: Path | None = None
            ) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter (so its peak memory is its own)."""
    cmd = [sys.executable, "-m", "tracking.benchmarks.data_loading", "--child",
           "--data-dir", str(data_dir), "--image-size", str(image_size), "--limit", str(limit)]
    cmd += ["--module", module] if module else []
    cmd += ["--train-epoch", "--store", str(store)] if train_epoch else []
    env = {**os.environ, "KERAS_MLFLOW_SUITE_CACHE": str(cache), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    if out.returncode:
        return {"name": name, "error": f"exit status {out.returncode}"}
    return {"name": name, "image_size": image_size, **json.loads(out.stdout.splitlines()[-1])}


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f}"


def format_row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['name']:<28} {r['error']}"
    line = (f"{r['name']:<28} {r['images']:>8,} {r['seconds']:>8.1f} "
            f"{r['images_per_second']:>9,.0f} {mib(r['peak_rss'] - r['baseline_rss']):>10} "
            f"{mib(r['peak_RssAnon']):>9} {mib(r['peak_RssFile']):>9} "
            f"{mib(r['array_bytes']):>9} {'yes' if r['memmap'] else 'no':>6}")
    if "train" in r:
        t = r["train"]
        line += (f"\n{'  + one concat_cnn epoch':<28} train {t['train_seconds']:.0f} s at "
                 f"{t['train_images_per_second']:.1f} img/s, wall {t['wall_seconds']:.0f} s, "
                 f"peak RssAnon {mib(t['peak_RssAnon'])} MiB, RssFile {mib(t['peak_RssFile'])}"
                 f" MiB, VmHWM {mib(t['peak_rss'])} MiB")
    return line


def large_limit(requested: int) -> int:
    """Images at 224x224x3 whose arrays exceed half of the machine's memory (by 10 %)."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return requested or int(total / 2 / (224 * 224 * 3) * 1.1)


def run_cases(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    cache, rows = work / "cache", []

    def report(row: dict[str, Any]) -> None:
        rows.append(row)
        print(format_row(row), flush=True)

    if "photos" in args.cases:
        make_photos(work / "photos", args.photos, args.megapixels)
        if args.baseline_module:
            make_photos(work / "photos_few", args.baseline_photos, args.megapixels)
            report(measure(f"photos x{args.baseline_photos}, baseline", work / "photos_few",
                           32, cache, module=args.baseline_module))
        report(measure(f"photos x{args.photos}, first", work / "photos", 32, cache))
        report(measure(f"photos x{args.photos}, cached", work / "photos", 32, cache))
    if "fashion" in args.cases or "large" in args.cases:
        started = time.perf_counter()
        make_fashion(work / "fashion", args.copies)
        print(f"(wrote {args.copies:,} PNG files in {time.perf_counter() - started:.0f} s)",
              flush=True)
    if "fashion" in args.cases:
        report(measure(f"fashion x{args.copies}, first", work / "fashion", 32, cache))
        report(measure(f"fashion x{args.copies}, cached", work / "fashion", 32, cache))
    if "large" in args.cases:
        limit = large_limit(args.large_limit)
        report(measure(f"fashion 224px limit {limit}", work / "fashion", 224, cache,
                       limit=limit, train_epoch=True, store=work / "mlflow.db"))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = CommandParser(prog="python -m tracking.benchmarks.data_loading",
        description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="photos,fashion,large")
    p.add_argument("--photos", type=int, default=300)
    p.add_argument("--megapixels", type=float, default=6.0)
    p.add_argument("--baseline-module", default="",
                   help="another module with load_dataset, timed on --baseline-photos photos")
    p.add_argument("--baseline-photos", type=int, default=60)
    p.add_argument("--copies", type=int, default=250_000, help="Fashion-MNIST files to write")
    p.add_argument("--large-limit", type=int, default=0, help="0 = above half the memory")
    p.add_argument("--workdir", default=None, help="parent of the temporary folder")
    p.add_argument("--keep", action="store_true", help="keep the inputs and the cache")
    p.add_argument("--output", default="bench_data.json")
    # the child process's own options
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data-dir", help=argparse.SUPPRESS)
    p.add_argument("--image-size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--module", default="", help=argparse.SUPPRESS)
    p.add_argument("--train-epoch", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-data-", dir=args.workdir))
    print(f"inputs and cache in {work}; load average {os.getloadavg()}", flush=True)
    print(f"{'case':<28} {'images':>8} {'seconds':>8} {'images/s':>9} {'peak+ MiB':>10} "
          f"{'anon MiB':>9} {'file MiB':>9} {'arr MiB':>9} {'memmap':>6}", flush=True)
    try:
        rows = run_cases(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    with open(args.output, "w") as f:
        json.dump({"load_average": os.getloadavg(), "cpus": os.cpu_count(), "rows": rows}, f,
                  indent=1)
    print(f"load average {os.getloadavg()}; wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
