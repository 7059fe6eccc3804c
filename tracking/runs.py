"""Housekeeping for runs that did not end cleanly.

    python -m tracking.runs stale [--experiment NAME] [--older-than MINUTES] [--mark]
    python -m tracking.runs upload mlflow-offline/<run_id>

`stale` lists RUNNING runs whose process is gone: on this host, by its recorded pid; on
others (or a run that never recorded its process, such as one `mlflow run` created before a
parameter check failed), when its last heartbeat (one per epoch; else its start) is older
than --older-than minutes. With
--mark they are set to KILLED (tag `stop_reason`), and can be continued with
`python -m tracking.train --resume RUN_ID`.

`upload` sends a run that finished while the tracking server was away (see
`tracking.training.offline`): its unsent metrics, evaluation, figures and model.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import mlflow

from tracking.cli import CommandParser, bad_input_exits
from tracking.store.lifecycle import HEARTBEAT_TAG, process_alive
from tracking.training.offline import AlreadyUploaded, upload_offline


def stale_runs(experiment_ids: Sequence[str], older_than_s: float) -> list[tuple[str, str]]:
    """(run id, why) for every RUNNING run whose process is gone."""
    client = mlflow.MlflowClient()
    found = []
    here = socket.gethostname()
    for run in client.search_runs(list(experiment_ids), "attributes.status = 'RUNNING'"):
        tags = run.data.tags
        pid = tags.get("pid")
        if tags.get("host") == here and pid and pid.isdigit():
            if pid != str(os.getpid()) and not process_alive(int(pid)):
                found.append((run.info.run_id, f"process {pid} on {here} is gone"))
            continue
        last = float(tags.get(HEARTBEAT_TAG, run.info.start_time / 1000))
        if time.time() - last > older_than_s:
            found.append((run.info.run_id, f"no heartbeat for {int(time.time() - last)} s"))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    p = CommandParser(prog="python -m tracking.runs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("stale", help="find (and --mark) RUNNING runs whose process died")
    s.add_argument("--experiment", action="append", default=[],
                   help="experiment name (repeatable; default: all)")
    s.add_argument("--older-than", type=float, default=30.0,
                   help="minutes without a heartbeat, for runs that recorded no process of "
                        "this host (default 30)")
    s.add_argument("--mark", action="store_true", help="set them KILLED")
    u = sub.add_parser("upload", help="send a run saved while the server was away")
    u.add_argument("folder")
    args = p.parse_args(argv)

    if args.command == "upload":
        state = Path(args.folder) / "state.json"
        if not state.is_file():
            p.error(f"{args.folder} holds no saved run (state.json missing)")
        try:
            json.loads(state.read_text())
        except (ValueError, OSError) as err:
            p.error(f"{state} is not a readable saved run ({err})")
        with bad_input_exits(p):
            pass  # the tracking store answers
        try:
            print(f"uploaded run {upload_offline(args.folder)}")
        except AlreadyUploaded as err:
            p.error(str(err))
        return 0

    if not args.older_than >= 0:
        p.error(f"--older-than must be minutes >= 0, got {args.older_than}")
    with bad_input_exits(p):
        client = mlflow.MlflowClient()
        if args.experiment:
            ids = []
            for name in args.experiment:
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    p.error(f"no experiment named {name!r}")
                ids.append(exp.experiment_id)
        else:
            ids = [e.experiment_id for e in client.search_experiments()]
    found = stale_runs(ids, args.older_than * 60)
    for run_id, why in found:
        print(f"{run_id}  {why}")
        if args.mark:
            client.set_tag(run_id, "stop_reason", f"process died ({why}); marked by tracking.runs")
            client.set_terminated(run_id, status="KILLED")
    if not found:
        print("no stale runs")
    elif args.mark:
        print(f"marked {len(found)} run(s) KILLED; one that saved a checkpoint continues with "
              "python -m tracking.train --resume RUN_ID")
    return 0


if __name__ == "__main__":
    sys.exit(main())
