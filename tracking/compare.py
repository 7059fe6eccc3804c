"""Compare trained models honestly: one report from the runs of an MLflow experiment.

    python -m tracking.compare [--experiment NAME] [--filter "params.dataset = 'digits'"]
                               [--parent RUN_ID] [--output DIR] [--ui-url URL]
    mlflow run . -e compare [-P filter="..."] --experiment-name NAME

Where: the named --experiment, else (under `mlflow run`) the launched run's, else every
experiment. Which runs: without --filter, the latest finished run of each model (per data set)
outside fair studies (a data set only a fair study trained on: its latest recipe and tuned
runs); with --filter (an MLflow search filter), every finished run it selects; with --parent, every
finished run nested under that run (a study's). Only training runs count: a run needs the
`model` param and the `test_accuracy` metric; comparison and study runs and tuning trials are
skipped. A tuning study's parent run among the selected runs gets a section of its own.

The report (--output, default outputs/comparison): `comparison.md` with a table per data set
(test accuracy, macro F1, best epoch / epochs run, training time, images per second, size,
the runs by id), the ranking with a verdict on each gap (does it exceed the run-to-run
spread?), every pair of models judged on the same test images (McNemar's exact test or a
paired bootstrap, Holm's correction: tracking.comparison.paired), in a fair study each model at its
recipe against it tuned, accuracy against parameters, training seconds and inference latency
(measured here, --no-latency to skip) with the dominated models marked, the calibration and
ranking metrics side by side (ROC AUC, average precision, top-k accuracy, ECE, Brier score),
which classes each model gets wrong most (by share) and which test images every model gets
wrong (from the runs' predictions tables, on a test split they share);
`accuracy_by_model.png`, `curves_by_model.png`, `confusion_matrices.png`,
`reliability_by_model.png`, `common_mistakes_<dataset>.png` and
`accuracy_vs_cost_<dataset>.png`. Everything is logged to a run of its own tagged
`run_kind=comparison`. With no finished runs to compare it exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import mlflow
from mlflow.exceptions import MlflowException

from tracking.cli import CommandParser, bad_input_exits, output_folder, unquote
from tracking.comparison.report import DEFAULT_OUTPUT, build_report, log_report
from tracking.comparison.selection import (
    ALL_EXPERIMENTS,
    CompareError,
    default_experiment,
    experiment_ids,
)
from tracking.config import Config
from tracking.store.lifecycle import RUN_KIND_TAG, tracked_run
from tracking.store.ui import UI_URL_ENV, publish_runs_view, runs_table_url


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="python -m tracking.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="",
                   help="experiment name (default: every experiment, or the launched run's "
                        "under mlflow run)")
    p.add_argument("--filter", default="", dest="filter_string",
                   help="MLflow search filter; every finished run it selects is compared")
    p.add_argument("--parent", default="", help="compare every run nested under this run id")
    p.add_argument("--output", default=DEFAULT_OUTPUT, type=output_folder,
                   help="folder for the report")
    p.add_argument("--no-log", action="store_true", help="write the files only, log no run")
    p.add_argument("--include-smoke", action="store_true",
                   help="rank smoke runs (--limit, or epochs cut below the recipe's) beside "
                        "full ones, each budget its own row (default: listed as left out)")
    p.add_argument("--across-image-sizes", action="store_true",
                   help="compare runs that differ only in --image-size in one section, paired "
                        "on the same source test images (e.g. ResNet-50 at 32 and 64 px)")
    p.add_argument("--no-latency", dest="latency", action="store_false",
                   help="do not load the models to measure their inference latency")
    p.add_argument("--ui-url", default="",
                   help=f"where the MLflow UI is, for the links (default: the tracking server, "
                        f"${UI_URL_ENV} or http://127.0.0.1:5000)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: exit 2 with a message when there is nothing to compare."""
    parser = build_parser()
    args = parser.parse_args(argv)
    filter_string, parent = args.filter_string.strip(), unquote(args.parent)
    ui_url = unquote(args.ui_url) or None
    with bad_input_exits(parser):
        name = unquote(args.experiment) or default_experiment()
        ids = experiment_ids(name)
        try:
            report = build_report(ids, args.output, filter_string=filter_string,
                                  parent_run_id=parent, title=name or ALL_EXPERIMENTS,
                                  ui_base=ui_url, latency=args.latency,
                                  include_smoke=args.include_smoke,
                                  across_image_sizes=args.across_image_sizes)
        except MlflowException as err:  # a malformed --filter
            raise CompareError(f"cannot search runs with filter {filter_string!r}: "
                               f"{str(err).splitlines()[0]}") from None
    compared = {r.experiment_id for g in report.groups for r in g.runs}
    home = ids[0] if name else compared.pop() if len(compared) == 1 else None
    if not args.no_log:
        datasets = "-".join(dict.fromkeys(g.dataset for g in report.groups))
        # tags, not params: under `mlflow run` the entry point's params are already logged
        tags = {RUN_KIND_TAG: "comparison",
                "compare_filter": filter_string or "(latest run of each model)",
                "compare_parent": parent or "(none)"}
        log_to = name or (mlflow.MlflowClient().get_experiment(home).name if home
                          else Config().experiment)
        with tracked_run(log_to, f"comparison-{datasets}", tags=tags) as run:
            log_report(report)
        home = run.info.experiment_id
    print(report.markdown)
    print(f"report: {report.path.resolve()}", file=sys.stderr)
    # the runs table of every experiment holding a compared run (the report's run links open
    # those), else of the one the comparison was logged to
    client = mlflow.MlflowClient()
    for experiment_id in sorted({r.experiment_id for g in report.groups for r in g.runs}
                                or ({home} if home else set()), key=lambda e: (len(e), e)):
        publish_runs_view(experiment_id)
        print(f"runs table of {client.get_experiment(experiment_id).name!r}: "
              f"{runs_table_url(experiment_id, ui_url)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
