"""The tuning command line, shared by `python -m tuning` (any registered model) and
`python -m tuning.optuna_resnet` (ResNet-50 by default)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import mlflow

from models import MODELS
from tracking.cli import (
    CommandParser,
    bad_input_exits,
    boolean,
    interrupt_status,
    number,
    sigterm_as_interrupt,
)
from tracking.config import Config, check_model, load_for
from tracking.data.loaders import ARRAYS, LOADERS
from tracking.precision import PRECISIONS
from tracking.store.connect import check_artifact_location, ensure_experiment
from tracking.store.lifecycle import launched_experiment
from tracking.store.ui import run_url
from tuning.config import TuneConfig
from tuning.report import format_summary
from tuning.storage import StorageUnavailable, check_storage
from tuning.study import check_resume, create_study_only, run_tuning_study
from tuning.trial_process import check_trial_process

EPILOG = ("Every trial is a nested MLflow run of the study's parent run; the best trial's "
          "model is registered as <model>-tuned. Ctrl-C or SIGTERM stops the worker (its "
          "runs KILLED); the same command resumes the study. docs/tuning.md says how several "
          "workers share one study and what survives a database outage.")


def build_parser(prog: str, description: str, model: str | None) -> argparse.ArgumentParser:
    """The tuning flags; `model` is the default of --model (None: --model is required)."""
    d = TuneConfig()
    p = CommandParser(prog=prog, description=description, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=model, required=model is None,
                   help=f"one of {', '.join(MODELS)}, or a factory as module:attribute")
    p.add_argument("--dataset", default=d.dataset,
                   help=f"one of {', '.join(n for n in LOADERS if n != ARRAYS)}")
    p.add_argument("--data-dir", default=d.data_dir,
                   help="folder data set, or the folder holding Fashion-MNIST's IDX files")
    p.add_argument("--n-trials", type=number(int, "n-trials"), default=d.n_trials,
                   help="total trials of the study over all workers (complete + pruned)")
    p.add_argument("--timeout", type=number(float, "timeout"), default=d.timeout,
                   help="seconds after which no trial starts here (0 = none)")
    p.add_argument("--max-epochs", type=number(int, "max-epochs"), default=d.max_epochs,
                   help="upper bound of the tuned epochs")
    p.add_argument("--study-name", default=d.study_name,
                   help="default <model>-<dataset>; an existing study is resumed")
    p.add_argument("--storage", default=d.storage,
                   help="SQLAlchemy URL of the Optuna database (default: optuna.db next to the "
                        "MLflow store); postgresql://... for workers on several machines")
    p.add_argument("--seed", type=number(int, "seed"), default=d.seed)
    p.add_argument("--experiment", default=d.experiment,
                   help=f"MLflow experiment of the study's parent run and its trials (default "
                        f"{Config().experiment}, the training runs' own)")
    p.add_argument("--limit", type=number(int, "limit"), default=d.limit,
                   help="keep at most this many images, split afterwards (0 = all), for smoke runs")
    p.add_argument("--full-test", action="store_true",
                   help="with --limit: score on the data set's whole own test split "
                        "(Fashion-MNIST's 10,000) instead of a part in proportion")
    p.add_argument("--precision", default=d.precision,
                   help=f"one of {', '.join(PRECISIONS)}, for every trial")
    p.add_argument("--pruner", default=d.pruner, metavar="NAME",
                   help="median (few trials), hyperband (many trials) or none")
    p.add_argument("--seeds-per-trial", type=number(int, "seeds per trial"), metavar="K",
                   default=d.seeds_per_trial, help="seeds per trial; its value is their mean")
    p.add_argument("--trial-process", type=boolean("trial-process"), nargs="?", const=True,
                   default=d.trial_process, metavar="BOOL",
                   help="each trial in its own process (docs/tuning.md#each-trial-in-its-own-"
                        "process): flat worker memory, a crashed trial fails alone")
    p.add_argument("--create-only", action="store_true",
                   help="create the study and the MLflow tables, then exit (before workers)")
    # internals of the lost-worker retry, for tests (docs/tuning.md#many-workers-one-study)
    p.add_argument("--heartbeat-interval", type=number(int, "heartbeat interval"),
                   default=d.heartbeat_interval, help=argparse.SUPPRESS)
    p.add_argument("--grace-period", type=number(int, "grace period"),
                   default=d.grace_period, help=argparse.SUPPRESS)
    return p


def main(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Run the tuning command of `parser`: bad input exits with status 2 before any MLflow run
    exists; a database outage longer than tuning.storage allows exits with 1."""
    args = parser.parse_args(argv)
    with bad_input_exits(parser):
        config = TuneConfig(**{k: v for k, v in vars(args).items() if k != "create_only"})
        base = config.base_config()
        check_trial_process(config)
        check_storage(config.resolved().storage)
        check_resume(config)  # an existing study must have this search space
        # the experiment not deleted, its artifact location writable
        check_artifact_location(ensure_experiment(
            launched_experiment(config.resolved().experiment)))
        if args.create_only:
            print(create_study_only(config))
            return 0
        data = load_for(base)
        check_model(base, data)  # a factory by import path builds and fits the data
    with sigterm_as_interrupt(), bad_input_exits(parser, check_tracking=False):
        # a TuneError here: another worker created the study meanwhile; no run started
        try:
            summary = run_tuning_study(config, data=data)
        except StorageUnavailable as err:
            print(f"{parser.prog}: error: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as stop:
            print(f"interrupted: resume with --study-name {config.resolved().study_name}",
                  file=sys.stderr)
            return interrupt_status(stop)
    print(format_summary(summary))
    parent = mlflow.get_run(summary["parent_run_id"]).info
    print(f"run page of the study's parent run: {run_url(parent.experiment_id, parent.run_id)}",
          file=sys.stderr)
    return 0
