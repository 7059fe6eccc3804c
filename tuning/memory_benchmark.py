"""How a tuning worker's memory grows over its trials, in process against in trial processes.

    python -m tuning.memory_benchmark [--model resnet50] [--trials 10] [--limit 300]

Runs the same small study twice, each in a fresh worker (`python -m tuning`, its own MLflow
store and Optuna storage in a temporary folder): once with every trial in the worker's process,
once with `--trial-process`. Each trial records the worker's resident memory after it
(`worker_rss_mib`, psutil) and, in trial processes, the child's peak (`ru_maxrss`). Prints per
trial the worker's RSS in both modes and the child's peak, then the growth from the first trial
to the last and the wall time of each mode (the cost of starting a process per trial). Every
trial trains 1 epoch on `--limit` digits (`--max-epochs 1`, no pruning), so the two studies
train the same number of epochs; their sampled settings differ only by what TPE proposes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import optuna

from tuning.objective import WORKER_RSS_ATTR
from tuning.trial_process import PEAK_RSS_ATTR

STUDY = "memory"


def run_worker(folder: Path, model: str, trials: int, limit: int, trial_process: bool,
               extra: Sequence[str] = ()) -> tuple[list[optuna.trial.FrozenTrial], float]:
    """One fresh worker's study in `folder`; its trials and wall seconds."""
    folder.mkdir(parents=True)
    command = [sys.executable, "-m", "tuning", "--model", model, "--n-trials", str(trials),
               "--max-epochs", "1", "--limit", str(limit), "--pruner", "none",
               "--study-name", STUDY, "--experiment", "memory-benchmark",
               "--trial-process", str(trial_process).lower(), *extra]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.monotonic()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{folder / 'optuna.db'}")
    return study.get_trials(deepcopy=False), seconds


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tuning.memory_benchmark",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--limit", type=int, default=300)
    args, extra = p.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="memory-benchmark-") as tmp:
        inside, inside_s = run_worker(Path(tmp, "in-process"), args.model, args.trials,
                                      args.limit, False, extra)
        child, child_s = run_worker(Path(tmp, "trial-process"), args.model, args.trials,
                                    args.limit, True, extra)
    print(f"{args.model}, {args.trials} trials of 1 epoch on {args.limit} digits; "
          "resident memory in MiB")
    print("| trial | worker, in process | worker, trial processes | trial process peak |")
    print("|---|---|---|---|")
    for a, b in zip(inside, child, strict=False):
        print(f"| {a.number} | {a.user_attrs.get(WORKER_RSS_ATTR, '?')} | "
              f"{b.user_attrs.get(WORKER_RSS_ATTR, '?')} | "
              f"{b.user_attrs.get(PEAK_RSS_ATTR, '?')} |")
    for name, trials, seconds in (("in process", inside, inside_s),
                                  ("trial processes", child, child_s)):
        rss = [t.user_attrs[WORKER_RSS_ATTR] for t in trials if WORKER_RSS_ATTR in t.user_attrs]
        growth = f"{rss[-1] - rss[0]:+.0f} MiB from trial 0 to {len(rss) - 1}" if rss else "?"
        print(f"{name}: worker {growth}; wall {seconds:.0f} s")
    print(f"wall time, trial processes / in process: {child_s / inside_s:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
