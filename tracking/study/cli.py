"""The whole study in one command: every model, several seeds, optional tuning, one report.

    python -m tracking.study [--dataset fashion_mnist] [--seeds 3] [--tune]
    python -m tracking.study --tune-budget 6x8 --seeds 3 [--pruner hyperband]   # the fair one
    mlflow run . -e study -P dataset=fashion_mnist [-P seeds=3] [-P tune_budget=6x8]

One parent run (`study-<dataset>`, tagged `run_kind=study`) holds a nested training run per
model and seed (`<model>-<dataset>-seed<k>`, seeds 0..N-1, each model at its recipe). With
--tune the ResNet-50 study of `tuning.optuna_resnet` runs as well and is filed under the
parent. Last, `tracking.compare` judges the nested runs (mean ± sd per model, whether each
gap exceeds the seed-to-seed spread, every pair on the same test images, the classes each
model gets wrong) and the report (`comparison.md` and its figures) is logged to the parent
and written to --output.

The fair study (--tune-budget TRIALSxMAX_EPOCHS): every model gets one Optuna study with the
same number of trials, the same epoch bound, the same pruner and seeds per trial, all on one
data split (the splits of --split-seed, whose seed and the next seeds_per_trial - 1 the trials
train with); the trials never see the test split. Then every model is trained at its recipe
and at its best tuned setting over --seeds new seeds (after the tuning seeds), on that same
split, tagged `study_variant` recipe / tuned: the only runs scored on the test split. The
report ranks the tuned models, sets each against its recipe and says what each tuning study
spent; the tuned model with the best mean validation accuracy is then put to
`tracking.promote` (champion or challenger of `<dataset>-classifier`) unless --promote false.

--models, --epochs and --limit shrink the study for smoke tests. Bad settings exit with
status 2 before any run exists; a model whose training is stopped (a NaN loss) is reported and
the study goes on with the others.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import mlflow

from tracking.cli import (
    CommandParser,
    auto_or_number,
    bad_input_exits,
    boolean,
    interrupt_status,
    number,
    output_folder,
    sigterm_as_interrupt,
    unquote,
)
from tracking.comparison.promotion import format_promotion
from tracking.comparison.selection import CompareError
from tracking.config import ConfigError, check_model
from tracking.store.connect import check_artifact_location, ensure_experiment
from tracking.store.lifecycle import launched_experiment
from tracking.store.ui import run_url
from tracking.study.config import DEFAULT_OUTPUT, FAIR_OUTPUT, StudyConfig
from tracking.study.plain import run_comparison_study
from tracking.study.steps import load
from tuning.config import PRUNERS
from tuning.storage import check_storage, default_storage


def build_parser() -> argparse.ArgumentParser:
    d = StudyConfig()
    p = CommandParser(prog="python -m tracking.study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=d.dataset)
    p.add_argument("--data-dir", default=d.data_dir)
    p.add_argument("--seeds", type=number(int, "seeds"), default=d.seeds,
                   help="runs per model (seeds 0..N-1; the fair study: the N seeds after the "
                        "tuning's)")
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
                   help="keep at most this many images, split afterwards (0 = all)")
    p.add_argument("--experiment", default=d.experiment,
                   help="MLflow experiment (with mlflow run: --experiment-name)")
    p.add_argument("--precision", default=d.precision,
                   help="float32, mixed_bfloat16, mixed_float16 or auto, for every run")
    p.add_argument("--output", default=None, type=report_folder,
                   help=f"folder for comparison.md and figures (default auto: {DEFAULT_OUTPUT}, "
                        f"with --tune-budget {FAIR_OUTPUT})")
    p.add_argument("--tune-budget", type=budget, default=d.tune_budget,
                   metavar="TRIALSxMAX_EPOCHS",
                   help="the fair study: every model tuned with this many trials of at most "
                        "this many epochs (e.g. 6x8), then recipe and tuned over --seeds")
    p.add_argument("--pruner", default=d.pruner,
                   help=f"of every tuning study: {', '.join(PRUNERS)}")
    p.add_argument("--seeds-per-trial", type=number(int, "seeds per trial"),
                   default=d.seeds_per_trial, help="seeds each tuning trial trains (mean)")
    p.add_argument("--split-seed", type=number(int, "split seed"), default=d.split_seed,
                   help="fair study: seed of the one data split (and the tuning's first seed)")
    p.add_argument("--promote", type=boolean("promote"), nargs="?", const=True,
                   default=d.promote,
                   help="fair study: champion or challenger for its best tuned model "
                        "(tracking.promote); false: register nothing")
    p.add_argument("--storage", default=d.storage, type=unquote,
                   help="fair study: the Optuna storage its workers share, e.g. "
                        "postgresql://user:pw@host/db (default: optuna.db next to the MLflow "
                        "store); start the same command on N machines, or N times")
    p.add_argument("--trial-process", type=boolean("trial-process"), nargs="?", const=True,
                   default=d.trial_process, metavar="BOOL",
                   help="each tuning trial in its own process (docs/tuning.md#each-trial-in-"
                        "its-own-process)")
    p.add_argument("--study-name", default=d.study_name, type=unquote,
                   help="fair study: its name in the storage (default: fair-<dataset>-<digest "
                        "of the settings>, so identical commands join one study)")
    return p


def budget(text: str) -> tuple[int, int] | None:
    """argparse type: TRIALSxMAX_EPOCHS (6x8) as (6, 8); "", none or 0 for no budget."""
    value = unquote(text).lower()
    if value in ("", "none", "0"):
        return None
    trials, _, epochs = value.partition("x")
    try:
        return int(trials), int(epochs)
    except ValueError:
        raise argparse.ArgumentTypeError(f"tune budget must be TRIALSxMAX_EPOCHS such as 6x8, "
                                         f"got {text!r}") from None


def default_output(tune_budget: tuple[int, int] | None) -> str:
    """The report folder when --output is auto: a fair study's apart from a plain study's."""
    return FAIR_OUTPUT if tune_budget else DEFAULT_OUTPUT


def report_folder(text: str) -> str | None:
    """argparse type of --output: "auto" (or empty) for the default folder, else a folder
    (`tracking.cli.output_folder`)."""
    return None if unquote(text).strip().lower() in ("", "auto") else output_folder(text)


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
                             experiment=unquote(args.experiment),
                             output=args.output or default_output(args.tune_budget),
                             tune_budget=args.tune_budget, pruner=unquote(args.pruner),
                             seeds_per_trial=args.seeds_per_trial, split_seed=args.split_seed,
                             promote=args.promote, storage=unquote(args.storage),
                             study_name=unquote(args.study_name))
        if (config.storage or config.study_name) and not config.fair:
            raise ConfigError("--storage and --study-name are the fair study's: add "
                              "--tune-budget TRIALSxMAX_EPOCHS")
        if config.fair:
            check_storage(config.storage or default_storage())
        for seed in config.seed_list():
            config.run_configs(seed)  # validates every run before any starts
        # the experiment not deleted, its artifact location writable
        check_artifact_location(ensure_experiment(launched_experiment(config.experiment)))
        first = load(config, config.seed_list()[0])
        for run_config in config.run_configs(config.seed_list()[0]):
            check_model(run_config, first)  # a factory by import path builds and fits
    with sigterm_as_interrupt():  # `kill` ends the runs like Ctrl-C
        try:
            result = run_comparison_study(config, first_data=first)
        except KeyboardInterrupt as stop:
            print("interrupted: the study's runs are marked KILLED", file=sys.stderr)
            return interrupt_status(stop)
        except CompareError as err:  # every training run was stopped
            print(f"error: {err}", file=sys.stderr)
            return 1
    if result.get("nothing_to_do"):
        print(f"study: {result['nothing_to_do']}; this worker ({result['workers_seen']} seen) "
              "has nothing left to do", file=sys.stderr)
        return 0
    report = result["report"]
    print(report.markdown)
    if result["promotion"] is not None:
        print(format_promotion(result["promotion"]))
    runs = len(result["run_ids"])
    print(f"study: parent run {result['parent_run_id']}, {runs} run{'' if runs == 1 else 's'}, "
          f"{len(result['failed'])} stopped, {result['study_seconds']:.0f} s; "
          f"report {report.path.resolve()}", file=sys.stderr)
    parent = mlflow.get_run(result["parent_run_id"]).info
    print(f"run page of the study's parent run: {run_url(parent.experiment_id, parent.run_id)}",
          file=sys.stderr)
    return 0
