"""The whole study in one command: every model, several seeds, optional tuning, one report.

    python -m tracking.study [--dataset fashion_mnist] [--seeds 3] [--tune]
    mlflow run . -e study -P dataset=fashion_mnist [-P seeds=3] [-P tune=true]

One parent run (`study-<dataset>`, tagged `run_kind=study`) holds a nested training run per
model and seed (`<model>-<dataset>-seed<k>`, seeds 0..N-1, each model at its recipe). With
--tune the ResNet-50 study of `tuning.optuna_resnet` runs as well and is filed under the
parent. Last, `tracking.compare` judges the nested runs (mean ± sd per model, whether each
gap exceeds the seed-to-seed spread, the classes each model gets wrong) and the report
(`comparison.md` and its figures) is logged to the parent and written to --output.

--models, --epochs and --limit shrink the study for smoke tests. Bad settings exit with
status 2 before any run exists; a model whose training is stopped (a NaN loss) is reported and
the study goes on with the others.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import keras
import mlflow

from models import MODELS
from tracking.callbacks import StopRun
from tracking.cli import (
    auto_or_number,
    bad_input_exits,
    boolean,
    interrupt_status,
    number,
    sigterm_as_interrupt,
    unquote,
)
from tracking.compare import RUN_KIND_TAG, CompareError, build_report, log_report
from tracking.config import Config, ConfigError, param_text
from tracking.data import Dataset, load_for
from tracking.provenance import log_params_once
from tracking.run import launched_experiment, tracked_run
from tracking.train import train
from tracking.ui import publish_runs_view, runs_table_url
from tuning.study import TuneConfig
from tuning.study import run_study as run_tuning_study

STUDY_KIND = "study"  # value of the run_kind tag on the parent run
DEFAULT_MODELS = tuple(MODELS)  # every registered model (the original four)
DEFAULT_OUTPUT = os.path.join("outputs", "study")


@dataclass(frozen=True)
class StudyConfig:
    dataset: str = "digits"  # key in tracking.data.LOADERS
    data_dir: str = ""  # folder data, or where Fashion-MNIST's IDX files are
    models: tuple[str, ...] = DEFAULT_MODELS  # trained in this order for every seed
    seeds: int = 3  # runs per model, seeds 0..seeds-1: the error bars
    epochs: int | None = None  # None = each model's recipe (early stopping may end sooner)
    limit: int = 0  # keep at most this many training images (0 = all); for smoke runs
    tune: bool = False  # also run the ResNet-50 Optuna study (tuning.optuna_resnet)
    tune_trials: int = 20  # its total trials
    tune_max_epochs: int = 10  # upper bound of its tuned epochs
    tune_model: str = "resnet50"  # the model tuned (another one only for quick tests)
    precision: str = "auto"  # Keras dtype policy of every run (tracking.precision)
    experiment: str = Config().experiment  # MLflow experiment
    output: str = DEFAULT_OUTPUT  # folder for comparison.md and the figures

    def __post_init__(self) -> None:
        for name in ("seeds", "tune_trials", "tune_max_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not self.models:
            raise ConfigError("models must name at least one model")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"models must not repeat, got {','.join(self.models)}")

    def run_configs(self, seed: int) -> list[Config]:
        """The training Config of every model for one seed (raises ConfigError on bad input)."""
        return [Config(model=m, dataset=self.dataset, data_dir=self.data_dir, epochs=self.epochs,
                       seed=seed, limit=self.limit, experiment=self.experiment,
                       precision=self.precision,
                       run_name=f"{m}-{self.dataset}-seed{seed}") for m in self.models]

    def to_params(self) -> dict[str, str]:
        return {"dataset": self.dataset, "data_dir": self.data_dir,
                "models": ",".join(self.models), "seeds": str(self.seeds),
                "epochs": param_text(self.epochs), "limit": str(self.limit),
                "tune": param_text(self.tune), "tune_trials": str(self.tune_trials),
                "tune_max_epochs": str(self.tune_max_epochs), "tune_model": self.tune_model,
                "precision": self.precision}


def load(config: StudyConfig, seed: int) -> Dataset:
    return load_for(config.run_configs(seed)[0])


def run_study(config: StudyConfig, *, first_data: Dataset | None = None) -> dict[str, Any]:
    """Train every model for every seed under one parent run, optionally tune, then compare.

    Under `mlflow run` the launched run (MLFLOW_RUN_ID) is the parent. Returns parent_run_id,
    run_ids, failed ({run name: reason}), tuning (its summary or None), report (the
    tracking.compare.Report) and study_seconds.
    """
    started = time.monotonic()
    config = replace(config, experiment=launched_experiment(config.experiment))
    run_ids: list[str] = []
    failed: dict[str, str] = {}
    tuning = None
    tags = {RUN_KIND_TAG: STUDY_KIND, "dataset": config.dataset}
    with tracked_run(config.experiment, f"study-{config.dataset}", tags=tags) as parent:
        parent_id, experiment_id = parent.info.run_id, parent.info.experiment_id
        log_params_once(config.to_params())
        for seed in range(config.seeds):
            data = first_data if seed == 0 and first_data is not None else load(config, seed)
            for run_config in config.run_configs(seed):
                keras.backend.clear_session()
                print(f"study: training {run_config.run_name}", file=sys.stderr, flush=True)
                try:
                    run_ids.append(train(run_config, data)["run_id"])
                except StopRun as stop:
                    failed[run_config.run_name] = stop.reason
                    print(f"study: {run_config.run_name} stopped: {stop.reason}",
                          file=sys.stderr)
        if failed:
            mlflow.set_tag("failed_runs", "; ".join(f"{k}: {v}" for k, v in failed.items()))
        if config.tune:
            keras.backend.clear_session()
            tuning = run_tuning(config, parent_id)
        report = build_report([experiment_id], config.output, parent_run_id=parent_id,
                              title=f"{config.experiment} / study-{config.dataset}")
        log_report(report)
        mlflow.log_metric("study_seconds", time.monotonic() - started)
        publish_runs_view(experiment_id, expanded=[parent_id])
        mlflow.set_tag("runs_table", runs_table_url(experiment_id))
    return {"parent_run_id": parent_id, "run_ids": run_ids, "failed": failed,
            "tuning": tuning, "report": report, "study_seconds": time.monotonic() - started}


def run_tuning(config: StudyConfig, parent_run_id: str) -> dict[str, Any] | None:
    """The Optuna study of `config.tune_model` (tuning.study), its run nested in the study's.

    Returns its summary, None if tuning failed (the trained models still get their report;
    the reason is tagged on the study's run).
    """
    tune = TuneConfig(model=config.tune_model, dataset=config.dataset, data_dir=config.data_dir,
                      n_trials=config.tune_trials, max_epochs=config.tune_max_epochs,
                      study_name=f"{config.tune_model}-{config.dataset}-study-"
                                 f"{parent_run_id[:8]}",
                      experiment=config.experiment, limit=config.limit,
                      precision=config.precision)
    print(f"study: tuning {tune.model} ({tune.n_trials} trials)", file=sys.stderr, flush=True)
    try:
        summary = run_tuning_study(tune)
    except Exception as err:  # noqa: BLE001 - the trained models still get their report
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:250]
        mlflow.set_tag("tuning_failed", reason)
        print(f"study: tuning failed ({reason}); reporting the training runs",
              file=sys.stderr)
        return None
    mlflow.set_tag("tuning_run_id", summary["parent_run_id"])
    return summary


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    d = StudyConfig()
    p = argparse.ArgumentParser(prog="python -m tracking.study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=d.dataset)
    p.add_argument("--data-dir", default=d.data_dir)
    p.add_argument("--seeds", type=number(int, "seeds"), default=d.seeds,
                   help="runs per model (seeds 0..N-1)")
    p.add_argument("--tune", type=boolean("tune"), nargs="?", const=True, default=d.tune,
                   help="also run the ResNet-50 Optuna study")
    p.add_argument("--tune-trials", type=number(int, "tune trials"), default=d.tune_trials)
    p.add_argument("--tune-max-epochs", type=number(int, "tune max epochs"),
                   default=d.tune_max_epochs)
    p.add_argument("--tune-model", default=d.tune_model, help=argparse.SUPPRESS)
    p.add_argument("--models", default=",".join(d.models),
                   help="comma-separated models (default: all four)")
    p.add_argument("--epochs", type=auto_or_number(int, "epochs"), default=d.epochs,
                   help="maximum epochs for every model (default: each recipe)")
    p.add_argument("--limit", type=number(int, "limit"), default=d.limit,
                   help="keep at most this many training images (0 = all)")
    p.add_argument("--experiment", default=d.experiment,
                   help="MLflow experiment (with mlflow run: --experiment-name)")
    p.add_argument("--precision", default=d.precision,
                   help="float32, mixed_bfloat16, mixed_float16 or auto, for every run")
    p.add_argument("--output", default=d.output, help="folder for comparison.md and figures")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: bad settings exit 2 before any run; prints the report's path and ranking."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with bad_input_exits(parser):
        models = tuple(m.strip() for m in unquote(args.models).split(",") if m.strip())
        config = StudyConfig(dataset=unquote(args.dataset), data_dir=unquote(args.data_dir),
                             models=models, seeds=args.seeds, epochs=args.epochs,
                             limit=args.limit, tune=args.tune, tune_trials=args.tune_trials,
                             tune_max_epochs=args.tune_max_epochs,
                             tune_model=unquote(args.tune_model),
                             precision=unquote(args.precision),
                             experiment=unquote(args.experiment), output=args.output)
        for seed in range(config.seeds):
            config.run_configs(seed)  # validates every run before any starts
        first = load(config, 0)
    with sigterm_as_interrupt():  # `kill` ends the runs like Ctrl-C
        try:
            result = run_study(config, first_data=first)
        except KeyboardInterrupt as stop:
            print("interrupted: the study's runs are marked KILLED", file=sys.stderr)
            return interrupt_status(stop)
        except CompareError as err:  # every training run was stopped
            print(f"error: {err}", file=sys.stderr)
            return 1
    report = result["report"]
    print(report.markdown)
    print(f"study: parent run {result['parent_run_id']}, {len(result['run_ids'])} runs, "
          f"{len(result['failed'])} stopped, {result['study_seconds']:.0f} s; "
          f"report {report.path.resolve()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
