"""Working against a tracking server: is it reachable, and where is our runs table?

    python -m tracking.server check [--uri URI]        # exit 2, naming the URI, if unreachable
    python -m tracking.server ui [--experiment NAME]   # address of the runs table, key metrics

`check` is `tracking.store.check_tracking_uri` on its own; `ui` publishes the key-metrics view
(`tracking.ui`) on the experiment and prints the address that opens it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import mlflow

from tracking.config import Config
from tracking.store import CHECK_TIMEOUT_SECONDS, TrackingServerError, check_tracking_uri, masked
from tracking.ui import publish_runs_view, runs_table_url


def main(argv: Sequence[str] | None = None) -> int:
    """`check`: exit 2 with the reason when the server is unreachable; `ui`: publish the view
    and print the runs-table address."""
    parser = argparse.ArgumentParser(prog="python -m tracking.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="is the tracking server reachable?")
    check.add_argument("--uri", default=None, help="default: MLFLOW_TRACKING_URI")
    check.add_argument("--timeout", type=float, default=CHECK_TIMEOUT_SECONDS)
    ui = sub.add_parser("ui", help="publish the key-metrics view, print the runs-table address")
    ui.add_argument("--experiment", default=Config().experiment)
    args = parser.parse_args(argv)
    try:
        uri = check_tracking_uri(getattr(args, "uri", None),
                                 getattr(args, "timeout", CHECK_TIMEOUT_SECONDS))
    except TrackingServerError as err:
        parser.exit(2, f"error: {err}\n")
    if args.command == "check":
        print(f"{masked(uri)} is reachable")
        return 0
    experiment = mlflow.MlflowClient().get_experiment_by_name(args.experiment)
    if experiment is None:
        parser.exit(2, f"error: no experiment named {args.experiment!r} in {masked(uri)}\n")
    publish_runs_view(experiment.experiment_id)
    print(runs_table_url(experiment.experiment_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
