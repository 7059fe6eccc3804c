"""Train one model with everything tracked in MLflow.

    python -m tracking.train --model vgg19 [--dataset digits] [--epochs N] ...
    python -m tracking.train --resume RUN_ID        # continue an interrupted run
    mlflow run . -P model=vgg19                      # the same, through the MLproject

`train(config) -> results` does the work and is what tuning and the study call; `main()`
only turns command-line flags into a `Config`. A run logs its whole config as params,
per-epoch metrics (step = epoch), test metrics and reports, figures and the model.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import keras
import mlflow

from models import MODELS
from tracking.cli import (
    auto_or_number,
    bad_input_exits,
    boolean,
    interrupt_status,
    number,
    sigterm_as_interrupt,
    unquote,
)
from tracking.config import Config
from tracking.data.batches import EpochBatches, full_batches
from tracking.data.dataset import LOADERS, Dataset, load_for
from tracking.precision import PRECISIONS
from tracking.store.connect import ensure_experiment
from tracking.store.lifecycle import launched_experiment, tracked_run
from tracking.store.ui import run_url
from tracking.training.callbacks import (
    Checkpointer,
    EpochHistory,
    EpochTimer,
    LearningRateMetric,
    MlflowMetrics,
    NanGuard,
    StopRun,
    Validation,
    best_epoch_of,
)
from tracking.training.checkpoints import (
    CheckpointStore,
    StartPoint,
    resume_config,
    resume_point,
)
from tracking.training.classifier import build_classifier, compile_classifier, distribution
from tracking.training.determinism import enable_determinism
from tracking.training.finish import finish_run
from tracking.training.offline import TrackingOffline, keep_offline_if_unreachable
from tracking.training.provenance import log_provenance, run_tags

RESUME_COMMAND = "python -m tracking.train --resume {run_id}"


@contextlib.contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Add the block's wall seconds (time.perf_counter) to `timings[key]`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - started


def train(
    config: Config,
    data: Dataset | None = None,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    tags: dict[str, str] | None = None,
    resume_run_id: str | None = None,
) -> dict[str, Any]:
    """Train `config.model` on `config.dataset` inside an MLflow run; return its results.

    Runs nested under the active run when there is one (tuning trials, the study).
    `data` defaults to `load_for(config)`; `callbacks` are extra Keras callbacks (e.g. a
    pruner), run after the suite's own; `tags` are set on the run. `resume_run_id` continues
    that run from its last checkpoint (`config` should then be `resume_config(run_id)`).
    Returns what `tracking.training.finish.finish_run` returns, with `timings` of each phase.
    A `StopRun` raised by a callback ends the run with its status and is re-raised; Ctrl-C or
    SIGTERM end it KILLED, resumable; a lost tracking server raises TrackingOffline.
    """
    requested = replace(config, experiment=launched_experiment(config.experiment))
    config, timings = requested.resolved(), {}
    with timed(timings, "data_seconds"):
        data = load_for(config) if data is None else data
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        enable_determinism()
    steps_per_epoch = full_batches(len(data.y_train), config.batch_size)
    with distribution(config) as devices:
        start = (resume_point(resume_run_id, config, data) if resume_run_id else StartPoint(
            compile_classifier(build_classifier(config, data), config, steps_per_epoch)))
        with tracked_run(config.experiment, config.display_name, tags=run_tags(config, tags),
                         run_id=resume_run_id, resume_command=RESUME_COMMAND,
                         system_metrics=config.system_metrics) as run, \
                CheckpointStore(run.info.run_id, config.checkpoint_every) as checkpoints:
            run_id, logged_before = run.info.run_id, set()
            with timed(timings, "log_setup_seconds"):
                if resume_run_id:
                    logged_before = start.continue_run(run_id)
                else:
                    log_provenance(requested, config, start.model, data, devices,
                                   steps_per_epoch)

            batches = EpochBatches(data.x_train, data.y_train, config.batch_size, config.seed,
                                   first_epoch=start.epochs_done)
            history, stopper = EpochHistory(start.history), start.early_stopper(config.patience)
            metrics = MlflowMetrics(run_id, skip_epochs=logged_before)
            with timed(timings, "fit_seconds"):
                if not start.finished_by(config):
                    start.model.fit(
                        batches, epochs=config.epochs, initial_epoch=start.epochs_done,
                        shuffle=False, verbose=1 if sys.stdout.isatty() else 2,
                        callbacks=[Validation(data.x_val, data.y_val), LearningRateMetric(),
                                   EpochTimer(batches.images_per_epoch), history, stopper,
                                   Checkpointer(checkpoints, stopper, history), metrics,
                                   NanGuard(), *callbacks])
                elif start.best_weights is not None:
                    start.model.set_weights(start.best_weights)

            best_epoch = best_epoch_of(stopper, history.epochs)
            with keep_offline_if_unreachable(run_id, start.model, history.epochs, best_epoch,
                                             metrics.pending):
                metrics.flush()
                results = finish_run(start.model, config, data, history.epochs, best_epoch,
                                     run_id, timings, again=resume_run_id is not None)
            checkpoints.drop_all()
    return results


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    d = Config()
    p = argparse.ArgumentParser(prog="python -m tracking.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=d.model, help=f"one of {', '.join(MODELS)}")
    p.add_argument("--dataset", default=d.dataset, help=f"one of {', '.join(LOADERS)}")
    p.add_argument("--data-dir", default=d.data_dir,
                   help="folder data set, or the folder holding Fashion-MNIST's IDX files")
    p.add_argument("--epochs", type=auto_or_number(int, "epochs"), default=d.epochs,
                   help="maximum epochs (default: the model's recipe)")
    p.add_argument("--batch-size", type=auto_or_number(int, "batch size"), default=d.batch_size,
                   help="default: the model's recipe")
    p.add_argument("--learning-rate", type=auto_or_number(float, "learning rate"),
                   default=d.learning_rate, help="peak learning rate (default: the recipe)")
    p.add_argument("--image-size", type=number(int, "image size"), default=d.image_size)
    p.add_argument("--patience", type=number(int, "patience"), default=d.patience,
                   help="early-stopping patience in epochs, on val_loss")
    p.add_argument("--seed", type=number(int, "seed"), default=d.seed)
    p.add_argument("--split-seed", type=auto_or_number(int, "split seed"), metavar="SEED",
                   default=d.split_seed, help="seed of the splits alone (default: --seed)")
    p.add_argument("--test-split", type=number(float, "test split"), default=d.test_split)
    p.add_argument("--val-split", type=number(float, "validation split"), default=d.val_split)
    p.add_argument("--augment", type=boolean("augment", auto=True), default=d.augment,
                   help="true, false or auto (the recipe)")
    p.add_argument("--experiment", default=d.experiment)
    p.add_argument("--run-name", default=d.run_name)
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip (and count) unreadable images in a folder data set")
    p.add_argument("--limit", type=number(int, "limit"), default=d.limit,
                   help="keep at most this many images, split afterwards (0 = all)")
    p.add_argument("--checkpoint-every", type=number(int, "checkpoint interval"),
                   default=d.checkpoint_every,
                   help="epochs between resumable checkpoints (0 = none)")
    p.add_argument("--deterministic", type=boolean("deterministic"), nargs="?", const=True,
                   default=d.deterministic,
                   help="deterministic kernels where the backend has them (see the README)")
    p.add_argument("--precision", default=d.precision,
                   help=f"one of {', '.join(PRECISIONS)} (auto: what was measured faster for the "
                        "model on this kind of device, else float32)")
    p.add_argument("--distribute", default=d.distribute,
                   help="none or data_parallel (JAX: each batch split over all devices)")
    p.add_argument("--no-system-metrics", dest="system_metrics", action="store_false",
                   help="do not log CPU, memory and GPU use (MLflow system metrics)")
    p.add_argument("--resume", default="", metavar="RUN_ID",
                   help="continue an interrupted run from its last checkpoint (its own settings)")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(**{k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__})


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: bad input exits with status 2 before any MLflow run exists."""
    parser = build_parser()
    args = parser.parse_args(argv)
    resume = unquote(args.resume)
    others = [t.split("=")[0] for t in (sys.argv[1:] if argv is None else argv)
              if t.startswith("-") and t.split("=")[0] not in ("--resume", "--")]
    if resume and others:
        parser.error(f"--resume continues run {resume} with its own settings: drop "
                     + ", ".join(others))
    with bad_input_exits(parser):
        config = resume_config(resume) if resume else config_from_args(args)
        ensure_experiment(launched_experiment(config.experiment))  # e.g. not a deleted one
        data = load_for(config)
    with sigterm_as_interrupt():
        try:
            results = train(config, data, resume_run_id=resume or None)
        except StopRun as stop:
            print(f"error: run stopped: {stop.reason}", file=sys.stderr)
            return 1
        except TrackingOffline:
            return 75  # EX_TEMPFAIL: done, but not yet in the tracking store
        except KeyboardInterrupt as stop:
            last = mlflow.last_active_run()
            run_id = resume or (last.info.run_id if last else "RUN_ID")
            then = (f"continue it with {RESUME_COMMAND.format(run_id=run_id)}"
                    if config.checkpoint_every else "it kept no checkpoint to continue from "
                    "(--checkpoint-every 0)")
            print(f"{str(stop) or 'interrupted'}: the run is marked KILLED; {then}",
                  file=sys.stderr)
            return interrupt_status(stop)
    summary = {k: results[k] for k in ("run_id", "best_epoch", "epochs_run")}
    if "test_accuracy" in results:
        summary["test_accuracy"] = round(results["test_accuracy"], 4)
    summary["train_seconds"] = round(results["train_seconds"], 1)
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    run = mlflow.get_run(results["run_id"]).info
    print(f"run page: {run_url(run.experiment_id, run.run_id)} (`mlflow ui` serves a local "
          "store there)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
