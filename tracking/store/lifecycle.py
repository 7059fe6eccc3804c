"""The life of an MLflow run, in one place: start or continue it, end it with its true status.

    with tracked_run("my-experiment", "vgg19-digits", tags=tags) as run:
        ...                                   # FINISHED when the block ends normally

Every entry point that owns a run uses this: training (`tracking.train`), the study's parent
run (`tracking.study`) and each tuning worker's parent run (`tuning.study`). How the block
ends decides the run's status (MLflow's run states):

| the block                         | status            | tags                                  |
|-----------------------------------|-------------------|---------------------------------------|
| ends normally                     | FINISHED          |                                       |
| raises StopRun (NaN loss, pruned) | the StopRun's     | stop_reason, stop_epoch               |
| Ctrl-C or SIGTERM                 | KILLED            | stop_reason (+ resume_command)        |
| raises TrackingOffline            | left RUNNING      | (the server is away: nothing to tell) |
| raises anything else              | FAILED            | stop_reason (the error's first line)  |

Under `mlflow run` the run already exists (MLFLOW_RUN_ID) and this continues it: pass
`launched_experiment(name)` as the experiment so the two agree.

`system_metrics=True` starts MLflow's own system-metrics logging with the run
(`mlflow.start_run(log_system_metrics=True)`, psutil; GPUs through nvidia-ml-py where
installed): `system/cpu_utilization_percentage`, `system/system_memory_usage_megabytes` and
`_percentage`, disk and network, and per GPU `system/gpu_<i>_utilization_percentage`,
`_memory_usage_megabytes`, `_memory_usage_percentage`, `_power_usage_watts`; one sample every
10 s (MLflow's default; `MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL` changes it), step = sample.
None leaves it to MLflow (`MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING`, off by default).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import mlflow
from mlflow.tracking import fluent

from tracking.store.connect import ensure_experiment

# The run's vocabulary: tags that say what a run is and whether its process lives
MAX_TAG_LENGTH = 250  # stop_reason is shown in the UI's run header: keep it short
HEARTBEAT_TAG = "heartbeat"  # unix seconds of the last completed epoch; see tracking.runs
RUN_KIND_TAG = "run_kind"  # comparison / study / tuning parent runs carry it; training runs not
TRIAL_TAG = "trial_number"  # set on every tuning trial's run
HOST_TAG, PID_TAG = "host", "pid"  # where the run's process is (tracking.runs stale, resume)


class StopRun(Exception):  # noqa: N818 - a signal, not an error, for the caller
    """Raised inside training to end the run early with a given MLflow status and reason."""

    status = "KILLED"

    def __init__(self, reason: str, epoch: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.epoch = epoch


class TrackingOffline(RuntimeError):
    """The tracking server went away; the run's results were saved to this folder."""


def forget_active_run() -> None:
    """Drop the in-process active run without telling the (unreachable) server."""
    try:
        fluent._active_run_stack.get().clear()
    except Exception:  # noqa: BLE001 - internals differ across versions; nothing to lose
        pass


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (signal 0: no signal is sent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def live_process(tags: dict[str, str]) -> str:
    """"process P on HOST" when the run whose `run_tags` these are still has its process
    alive on this host (other than this process), else ""."""
    pid, host = tags.get(PID_TAG, ""), tags.get(HOST_TAG)
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return ""
    return f"process {pid} on {host}" if process_alive(int(pid)) else ""


def launched_experiment(default: str) -> str:
    """The experiment of the run `mlflow run` launched this process for (MLFLOW_RUN_ID), when
    there is one and no run is active yet; else `default`."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id or mlflow.active_run() is not None:
        return default
    client = mlflow.MlflowClient()
    return client.get_experiment(client.get_run(run_id).info.experiment_id).name


@contextlib.contextmanager
def tracked_run(experiment: str, run_name: str, *, tags: dict[str, str] | None = None,
                run_id: str | None = None, resume_command: str | None = None,
                system_metrics: bool | None = None) -> Iterator[mlflow.ActiveRun]:
    """Start a run in `experiment` (created if missing), nested under the active run if there
    is one, or continue run `run_id`; end it with the status its block earned (module
    docstring). `tags` are set either way (a continued run gets this process's host and pid);
    `resume_command` ("... {run_id}") is tagged on a run ended by Ctrl-C or SIGTERM;
    `system_metrics` as in the module docstring."""
    if run_id:
        run = mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
    else:
        run = mlflow.start_run(experiment_id=ensure_experiment(experiment), run_name=run_name,
                               nested=mlflow.active_run() is not None, tags=tags,
                               log_system_metrics=system_metrics)
    if tags and (run_id or os.environ.get("MLFLOW_RUN_ID") == run.info.run_id):
        mlflow.set_tags(tags)
    status: str | None = "FAILED"
    try:
        yield run
        status = "FINISHED"
    except StopRun as stop:
        status = stop.status
        mlflow.set_tags({"stop_reason": stop.reason[:MAX_TAG_LENGTH],
                         **({"stop_epoch": str(stop.epoch)} if stop.epoch else {})})
        raise
    except KeyboardInterrupt as stop:
        status = "KILLED"
        mlflow.set_tags({"stop_reason": str(stop) or "interrupted (Ctrl-C)",
                         **({"resume_command": resume_command.format(run_id=run.info.run_id)}
                            if resume_command else {})})
        raise
    except TrackingOffline:
        status = None
        raise
    except Exception as err:
        with contextlib.suppress(Exception):  # the store itself may be what failed
            if "stop_reason" not in mlflow.get_run(run.info.run_id).data.tags:
                first = (str(err).strip().splitlines() or [""])[0]
                mlflow.set_tag("stop_reason", f"{type(err).__name__}: {first}"[:MAX_TAG_LENGTH])
        raise
    finally:
        while (active := mlflow.active_run()) is not None and active.info.run_id != run.info.run_id:
            mlflow.end_run(status="FAILED")  # a nested run its failure left open
        if status is None:
            forget_active_run()
        else:
            mlflow.end_run(status=status)

