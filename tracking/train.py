"""Train one model with everything tracked in MLflow.

    python -m tracking.train --model vgg19 [--dataset digits] [--epochs N] ...
    python -m tracking.train --resume RUN_ID        # continue an interrupted run
    mlflow run . -P model=vgg19                      # the same, through the MLproject

`main()` only turns command-line flags into a `Config` (bad input exits with status 2 before
any run exists); `tracking.training.loop.train(config) -> results` does the work, and is what
tuning and the study call too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import mlflow

from models import MODELS
from tracking.cli import (
    CommandParser,
    auto_or_number,
    bad_input_exits,
    boolean,
    interrupt_status,
    number,
    sigterm_as_interrupt,
    unquote,
)
from tracking.config import Config, check_model, load_for
from tracking.data.loaders import ARRAYS, LOADERS
from tracking.precision import PRECISIONS
from tracking.store.connect import check_artifact_location, ensure_experiment
from tracking.store.lifecycle import StopRun, TrackingOffline, launched_experiment
from tracking.store.ui import run_url
from tracking.training.checkpoints import complete_checkpoints
from tracking.training.loop import RESUME_COMMAND, train
from tracking.training.resume import resume_config


def build_parser() -> argparse.ArgumentParser:
    d = Config()
    p = CommandParser(prog="python -m tracking.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=d.model,
                   help=f"one of {', '.join(MODELS)}, or a factory as module:attribute "
                        "(e.g. keras.applications:EfficientNetV2B0)")
    p.add_argument("--dataset", default=d.dataset,
                   help=f"one of {', '.join(n for n in LOADERS if n != ARRAYS)}")
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
    p.add_argument("--full-test", action="store_true",
                   help="with --limit: score on the data set's whole own test split "
                        "(Fashion-MNIST's 10,000) instead of a part in proportion")
    p.add_argument("--checkpoint-every", type=number(int, "checkpoint interval"),
                   default=d.checkpoint_every,
                   help="epochs between resumable checkpoints (0 = none)")
    p.add_argument("--deterministic", type=boolean("deterministic"), nargs="?", const=True,
                   default=d.deterministic,
                   help="deterministic kernels where the backend has them "
                        "(docs/training.md#reproducibility)")
    p.add_argument("--precision", default=d.precision,
                   help=f"one of {', '.join(PRECISIONS)} (auto: what was measured faster for the "
                        "model on this kind of device, else float32)")
    p.add_argument("--distribute", default=d.distribute,
                   help="none or data_parallel (JAX: each batch split over all devices)")
    p.add_argument("--no-system-metrics", dest="system_metrics", action="store_false",
                   help="do not log CPU, memory and GPU use (MLflow system metrics)")
    p.add_argument("--resume", default=None, metavar="RUN_ID",
                   help="continue an interrupted run from its last checkpoint (its own settings)")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(**{k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__})


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: bad input exits with status 2 before any MLflow run exists."""
    parser = build_parser()
    args = parser.parse_args(argv)
    resume = "" if args.resume is None else unquote(args.resume)
    if args.resume is not None and not resume:
        # `--resume "$RUN_ID"` with the variable unset would otherwise start a fresh run
        parser.error("--resume needs a run id, got an empty value")
    others = [t.split("=")[0] for t in (sys.argv[1:] if argv is None else argv)
              if t.startswith("-") and t.split("=")[0] not in ("--resume", "--")]
    if resume and others:
        parser.error(f"--resume continues run {resume} with its own settings: drop "
                     + ", ".join(others))
    with bad_input_exits(parser):
        config = resume_config(resume) if resume else config_from_args(args)
        # the experiment not deleted, its artifact location writable
        check_artifact_location(ensure_experiment(launched_experiment(config.experiment)))
        data = load_for(config)
        check_model(config, data)  # a factory by import path builds and fits the data
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
            if not config.checkpoint_every:
                then = "it kept no checkpoint to continue from (--checkpoint-every 0)"
            elif run_id != "RUN_ID" and not complete_checkpoints(run_id):
                then = (f"it stopped before its first checkpoint (every "
                        f"{config.checkpoint_every} epochs), so there is nothing to continue "
                        "from: start it again")
            else:
                then = f"continue it with {RESUME_COMMAND.format(run_id=run_id)}"
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
