"""Each trial in its own process (`--trial-process`): the worker samples the trial's point,
then a child process trains it and exits, so whatever a training leaves behind (Keras's and
TensorFlow's graphs and caches, which `keras.backend.clear_session` does not all free: optuna
issues 1178 and 3050, tensorflow issue 36465; JAX's compile cache) goes with the child, and a
trial that crashes its process (a segfault, the OOM killer) fails alone.

    value = run_trial_process(train_in_child, TrialJob(...), study)   # tuning.objective

The child is started with multiprocessing's "spawn" (a fresh interpreter: a forked copy of a
process that has initialised TensorFlow or JAX is not safe to use). It opens the study in the
same storage and reports to the same trial (`optuna.Trial(study, trial_id)`), so the pruner,
the trial's states and its user attributes are exactly as in process; its MLflow runs are
nested under the worker's parent run by tag (`mlflow.parentRunId`) and carry the child's own
pid, which is what a later worker's `reclaim_dead_trials` checks. The data go to the child
once per worker as .npy files that it maps copy-on-write (`numpy.load(mmap_mode="c")`), not
through a pipe per trial.

Signals: the child runs in its own process group, so Ctrl-C in the terminal reaches the worker
alone, which passes it on as one SIGTERM (the child's runs end KILLED, its trial FAIL with
`interrupted`, as in process) and waits for the child; a child whose worker is gone (SIGKILL)
stops itself the same way. A child that dies without an answer fails its trial with the reason
(`stop_reason` on its runs, which are ended FAILED) and the worker goes on to the next trial.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from models import MODELS
from tracking.config import Config
from tracking.data.dataset import Dataset
from tracking.store.lifecycle import StopRun
from tuning.config import TuneConfig, TuneError
from tuning.report import trial_run_ids

CHILD_STOP_SECONDS = 120  # how long a stopped child may take to end its runs before SIGKILL
ORPHAN_POLL_SECONDS = 2.0  # how often a child looks whether its worker is still there
ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
PEAK_RSS_ATTR = "trial_process_peak_rss_mib"  # trial user attribute: the child's peak RSS


class TrialProcessFailed(StopRun):
    """A trial's process ended without a value (an exception in it, or its death): the trial
    FAILs, the worker goes on (Optuna's `catch`)."""

    status = "FAILED"


@dataclass(frozen=True)
class TrialJob:
    """What a trial's process needs, sent to it pickled."""

    trial_id: int
    trial_number: int
    point: dict[str, Any]
    tags: dict[str, str]
    config: TuneConfig
    base: Config
    pruner: optuna.pruners.BasePruner
    data_dir: str  # DataFiles.folder
    tracking_uri: str


class DataFiles:
    """A Dataset written once as .npy files (the arrays) and a pickle (the rest), for the
    worker's trial processes to map; the folder is removed on `close`."""

    def __init__(self, data: Dataset) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="trial-data-")
        self.folder = self._folder.name
        for name in ARRAYS:
            np.save(Path(self.folder, f"{name}.npy"), getattr(data, name))
        rest = {f.name: getattr(data, f.name) for f in fields(data) if f.name not in ARRAYS}
        Path(self.folder, "rest.pickle").write_bytes(pickle.dumps(rest))

    def close(self) -> None:
        self._folder.cleanup()


def read_data(folder: str) -> Dataset:
    """The Dataset a DataFiles folder holds, its arrays mapped copy-on-write."""
    rest = pickle.loads(Path(folder, "rest.pickle").read_bytes())
    arrays = {name: np.load(Path(folder, f"{name}.npy"), mmap_mode="c") for name in ARRAYS}
    return Dataset(**rest, **arrays)


def run_trial_process(target: Callable[[TrialJob], float], job: TrialJob,
                      study: optuna.Study) -> float:
    """`target(job)` in a child process (module docstring); return its value.

    `target` is a module-level function (the child imports it by name), e.g.
    `tuning.objective.train_in_child`. Raises optuna.TrialPruned when the pruner stopped the
    trial; TrialProcessFailed when the child ended without a value (an exception in it, a
    SIGTERM sent to it alone, or its death; its runs still RUNNING are ended FAILED with
    `stop_reason`); KeyboardInterrupt, after stopping the child, when the worker is
    interrupted.
    """
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=child_main, args=(send, target, job),
                            name=f"trial-{job.trial_number}", daemon=False)
    child.start()
    send.close()
    answer: tuple[str, Any] | None = None
    try:
        while answer is None and (child.is_alive() or receive.poll()):
            if receive.poll(1.0):
                try:
                    answer = receive.recv()
                except EOFError:
                    break
        child.join()
    except BaseException:  # Ctrl-C or SIGTERM in the worker: stop the child, then go
        stop_child(child)
        raise
    finally:
        receive.close()
    if answer is not None and answer[0] == "value":
        return float(answer[1])
    if answer is not None and answer[0] == "pruned":
        raise optuna.TrialPruned(answer[1])
    if answer is not None:
        reason = answer[1]
    else:
        reason = (f"trial {job.trial_number}: its process died "
                  f"({exit_reason(child.exitcode)})")
    close_runs(study, job, reason)
    raise TrialProcessFailed(reason)


def stop_child(child: multiprocessing.process.BaseProcess) -> None:
    """SIGTERM the child (it ends its runs KILLED), SIGKILL it if it is not gone in time."""
    if child.is_alive():
        child.terminate()
        child.join(CHILD_STOP_SECONDS)
    if child.is_alive():
        child.kill()
        child.join()


def exit_reason(code: int | None) -> str:
    """`code` of multiprocessing (negative: the signal) in words."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def close_runs(study: optuna.Study, job: TrialJob, reason: str) -> None:
    """End the MLflow runs of the job's trial still RUNNING as FAILED, with `stop_reason`:
    those the trial records and those its tags find under the parent run (a process can die
    after starting a run and before the trial hears of it)."""
    client = mlflow.MlflowClient()
    stored = next(t for t in study.get_trials(deepcopy=False) if t.number == job.trial_number)
    run_ids = set(trial_run_ids(stored))
    parent = job.tags[MLFLOW_PARENT_RUN_ID]
    try:
        experiment = client.get_run(parent).info.experiment_id
        run_ids.update(r.info.run_id for r in client.search_runs(
            [experiment], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent}' and "
                          f"tags.trial_number = '{job.trial_number}' and "
                          f"attributes.status = 'RUNNING'"))
    except MlflowException as err:
        print(f"warning: could not look for the runs of trial {job.trial_number}: {err}",
              file=sys.stderr)
    for run_id in sorted(run_ids):
        try:
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_tag(run_id, "stop_reason", reason[:5000])
                client.set_tag(run_id, "trial_state", optuna.trial.TrialState.FAIL.name)
                client.set_terminated(run_id, "FAILED")
        except MlflowException as err:
            print(f"warning: could not close run {run_id} of trial {job.trial_number}: "
                  f"{err}", file=sys.stderr)


def _stop_when_orphaned(parent: int) -> None:
    """In the child: SIGTERM to itself once its worker is gone (its runs then end KILLED)."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB (`resource.getrusage`; Linux: kB)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def child_main(answer: Connection, target: Callable[[TrialJob], float], job: TrialJob) -> None:
    """The trial process: run `target(job)` and send the worker ("value", v), ("pruned",
    reason) or ("stopped" / "error", one line)."""
    os.setpgrp()  # Ctrl-C reaches the worker only; it passes it on as one SIGTERM
    # under `mlflow run` the launched run is the worker's; a run this process starts is new
    os.environ.pop("MLFLOW_RUN_ID", None)
    threading.Thread(target=_stop_when_orphaned, args=(os.getppid(),), daemon=True).start()
    from tracking.cli import sigterm_as_interrupt

    mlflow.set_tracking_uri(job.tracking_uri)
    message: tuple[str, Any]
    with sigterm_as_interrupt():
        try:
            message = ("value", target(job))
        except optuna.TrialPruned as pruned:
            message = ("pruned", str(pruned))
        except KeyboardInterrupt as stop:
            message = ("stopped", f"trial {job.trial_number}: its process was stopped "
                                  f"({stop or 'SIGINT'})")
        except BaseException as err:  # noqa: BLE001 - a failure of the trial, not the worker
            traceback.print_exc()
            message = ("error", f"trial {job.trial_number} failed in its process: "
                                f"{type(err).__name__}: {err}".splitlines()[0])
    try:
        answer.send(message)
        answer.close()
    except OSError:  # the worker is gone (its trial is reclaimed by the next worker)
        pass


def open_job_study(job: TrialJob) -> optuna.Study:
    """In the child: the job's study, in its storage, with its pruner (and a sampler that is
    never asked: the worker sampled the point)."""
    from tuning.storage import open_storage

    config = job.config
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = open_storage(config.storage, config.heartbeat_interval, config.grace_period)
    return optuna.load_study(study_name=config.study_name, storage=storage,
                             sampler=optuna.samplers.RandomSampler(), pruner=job.pruner)


def check_trial_process(config: TuneConfig) -> None:
    """Raise TuneError where trials cannot run in a process of their own: a model registered
    in this process only (`MODELS[name] = spec`, `tracking.api`'s `local:` names), which a new
    process cannot import."""
    if config.trial_process and MODELS.in_this_process_only(config.model):
        raise TuneError(f"model {config.model} is registered in this process only, which a "
                        "trial process cannot see: give it as module:attribute or an entry "
                        "point, or turn trial_process off (--trial-process false)")
