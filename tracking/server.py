"""Working against a tracking server: is it reachable, and where is our runs table?

    python -m tracking.server check [--uri URI]        # exit 2, naming the URI, if unreachable
    python -m tracking.server ui [--experiment NAME] [--ui-url URL]   # the runs table's address

`check` is `tracking.store.connect.check_tracking_uri` on its own; `ui` publishes the key-metrics
view (`tracking.store.ui`) on the experiment (default: the one holding the newest training run,
wherever it is) and prints the address that opens it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import mlflow
from mlflow.entities import Experiment

from tracking.cli import CommandParser, number, unquote
from tracking.comparison.selection import is_training_run, search_finished
from tracking.store.connect import (
    CHECK_TIMEOUT_SECONDS,
    TrackingServerError,
    check_tracking_uri,
    masked,
)
from tracking.store.ui import UI_URL_ENV, publish_runs_view, runs_table_url


def main(argv: Sequence[str] | None = None) -> int:
    """`check`: exit 2 with the reason when the server is unreachable; `ui`: publish the view
    and print the runs-table address."""
    parser = CommandParser(prog="python -m tracking.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="is the tracking server reachable?")
    check.add_argument("--uri", default=None, help="default: MLFLOW_TRACKING_URI")
    check.add_argument("--timeout", type=number(float, "timeout", positive=True),
                       default=CHECK_TIMEOUT_SECONDS, help="seconds to wait for an answer (> 0)")
    ui = sub.add_parser("ui", help="publish the key-metrics view, print the runs-table address")
    ui.add_argument("--experiment", default="",
                    help="default: the experiment of the newest training run")
    ui.add_argument("--ui-url", default="",
                    help=f"where `mlflow ui` serves (default: the tracking server, "
                         f"${UI_URL_ENV} or http://127.0.0.1:5000)")
    args = parser.parse_args(argv)
    try:
        uri = check_tracking_uri(getattr(args, "uri", None),
                                 getattr(args, "timeout", CHECK_TIMEOUT_SECONDS))
    except TrackingServerError as err:
        parser.exit(2, f"error: {err}\n")
    if args.command == "check":
        print(f"{masked(uri)} is reachable")
        return 0
    client = mlflow.MlflowClient()
    name = unquote(args.experiment)
    experiment = (client.get_experiment_by_name(name) if name
                  else newest_training_experiment(client))
    if experiment is None:
        parser.exit(2, f"error: no experiment named {name!r} in {masked(uri)}\n" if name else
                    f"error: no training runs in {masked(uri)} yet; train one first "
                    "(mlflow run . -P model=vgg19)\n")
    publish_runs_view(experiment.experiment_id)
    print(runs_table_url(experiment.experiment_id, unquote(args.ui_url) or None))
    return 0


def newest_training_experiment(client: mlflow.MlflowClient) -> Experiment | None:
    """The experiment holding the newest finished training run, in any experiment."""
    ids = [e.experiment_id for e in client.search_experiments()]
    for run in search_finished(ids) if ids else []:  # newest first
        if is_training_run(run):
            return client.get_experiment(run.info.experiment_id)
    return None


if __name__ == "__main__":
    sys.exit(main())
