"""A to-do list shared by workers, kept in an Optuna storage as the trials of one study.

    queue = WorkQueue.open(storage_url, "fair-digits-3f2a9c1e")
    queue.enqueue_once([{"model": "vgg19", "seed": 1}, ...])   # the first worker's list wins
    while (task := queue.claim()) is not None:
        with task.heartbeat():
            ...                                                 # do it
        queue.finish(task, value=0.97)                          # or state=TrialState.FAIL

Optuna's own machinery, used the way its distributed tuning uses it: a task is a trial put in
the queue by `Study.enqueue_trial` (state WAITING, the task in its user attributes); a worker
takes it by moving it to RUNNING, which Optuna's RDB storage does for one caller only (the row
is locked for update and a trial no longer WAITING is refused), so each task is done once
however many workers ask at the same moment; `Study.tell` records its end (COMPLETE with a
value, or FAIL). A task whose worker died is failed and put back once more (`reclaim`): at once
when the worker ran on this host and its process is gone, else when its heartbeat (a user
attribute refreshed every `heartbeat_interval` s while the task runs) is older than
`grace_period` s, Optuna's heartbeat rule for trials. The queue's study attributes hold what
all workers share: the study's settings, its MLflow parent run, the workers seen and who
wrote the report (`claim_once`).

Why not `Study.ask`: it creates a new sampled trial when no task is waiting, so a worker
racing another for the last task would add an empty one.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tracking.store.lifecycle import process_alive
from tuning.storage import MAX_RETRIES, open_storage, storage_lock

TASK_ATTR = "task"  # user attribute of a task trial: the task as JSON
WORKER_ATTRS = ("host", "pid")  # user attributes of a running task: who runs it
HEARTBEAT_ATTR = "heartbeat"  # user attribute: Unix time of the last heartbeat
RETRY_ATTR = "retry_of"  # user attribute of a task put back: the failed trial's number
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


@dataclass(frozen=True)
class Task:
    """A claimed task: its trial number in the queue and what to do."""

    number: int
    trial_id: int
    spec: dict[str, Any]
    queue: WorkQueue

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[None]:
        """Refresh the task's heartbeat every heartbeat_interval s while the block runs."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.queue.heartbeat_interval):
                with contextlib.suppress(Exception):  # a missed beat is retried next time
                    self.queue.storage.set_trial_user_attr(self.trial_id, HEARTBEAT_ATTR,
                                                           time.time())

        thread = threading.Thread(target=beat, name=f"task-{self.number}-heartbeat",
                                  daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)


class WorkQueue:
    """The tasks of one study name in one Optuna storage (module docstring)."""

    def __init__(self, url: str, study: optuna.Study, heartbeat_interval: int,
                 grace_period: int) -> None:
        self.url, self.study = url, study
        self.storage = study._storage  # noqa: SLF001 - Optuna's public Study has no getter
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period

    @classmethod
    def open(cls, url: str, name: str, heartbeat_interval: int = 30,
             grace_period: int = 240) -> WorkQueue:
        """The queue `name` in the storage at `url`, created if missing."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = open_storage(url, heartbeat_interval, grace_period)
            with storage_lock(url):
                study = optuna.create_study(storage=storage, study_name=name,
                                            direction="maximize", load_if_exists=True)
        return cls(url, study, heartbeat_interval, grace_period)

    # ---------------------------------------------------------------- shared attributes

    def attrs(self) -> dict[str, Any]:
        return self.storage.get_study_user_attrs(self.study._study_id)  # noqa: SLF001

    def set_attr(self, key: str, value: Any) -> None:
        self.study.set_user_attr(key, value)

    def claim_once(self, key: str, value: str) -> bool:
        """Set attribute `key` to `value` unless some worker set it first; True for the one
        worker that did (under the storage lock)."""
        with storage_lock(self.url):
            if self.attrs().get(key) not in (None, value):
                return False
            self.set_attr(key, value)
            return True

    def add_worker(self, worker: str) -> int:
        """Record a worker (host-pid); the number of workers seen so far."""
        with storage_lock(self.url):
            seen = list(self.attrs().get("workers", []))
            if worker not in seen:
                seen.append(worker)
                self.set_attr("workers", seen)
            return len(seen)

    # ---------------------------------------------------------------- tasks

    def enqueue_once(self, tasks: Sequence[dict[str, Any]]) -> bool:
        """Put the tasks in the queue unless a worker already did; True if this call did."""
        with storage_lock(self.url):
            if self.attrs().get("tasks_total") is not None:
                return False
            for spec in tasks:
                self.study.enqueue_trial({}, user_attrs={TASK_ATTR: json.dumps(spec)},
                                         skip_if_exists=False)
            self.set_attr("tasks_total", len(tasks))
            return True

    def trials(self, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)

    def claim(self) -> Task | None:
        """Take the first waiting task (moving it to RUNNING, which only one worker can); None
        when none is waiting. Dead workers' tasks are put back first (`reclaim`)."""
        self.reclaim()
        for trial in self.trials((TrialState.WAITING,)):
            if self.storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):  # noqa: SLF001
                for key, value in zip(WORKER_ATTRS, (socket.gethostname(), os.getpid()),
                                      strict=True):
                    self.storage.set_trial_user_attr(trial._trial_id, key, value)  # noqa: SLF001
                self.storage.set_trial_user_attr(trial._trial_id, HEARTBEAT_ATTR, time.time())  # noqa: SLF001
                return Task(trial.number, trial._trial_id,  # noqa: SLF001
                            json.loads(trial.user_attrs[TASK_ATTR]), self)
        return None

    def finish(self, task: Task, value: float | None = None,
               state: TrialState = TrialState.COMPLETE, **attrs: Any) -> None:
        """Record the task's end: COMPLETE with `value`, or FAIL; `attrs` as user attributes."""
        for key, attr in attrs.items():
            self.storage.set_trial_user_attr(task.trial_id, key, attr)
        if state == TrialState.COMPLETE:
            self.study.tell(task.number, value)
        else:
            self.study.tell(task.number, state=state)

    def lost(self, trial: FrozenTrial) -> str:
        """Why the RUNNING `trial`'s worker counts as dead ("" while it is alive)."""
        host, pid = (trial.user_attrs.get(k) for k in WORKER_ATTRS)
        if host == socket.gethostname() and isinstance(pid, int) and pid != os.getpid() \
                and not process_alive(pid):
            return f"its worker's process {pid} on {host} is gone"
        beat = trial.user_attrs.get(HEARTBEAT_ATTR)
        if isinstance(beat, int | float) and time.time() - beat > self.grace_period:
            return f"its worker on {host} sent no heartbeat for {self.grace_period} s"
        return ""

    def reclaim(self) -> list[tuple[FrozenTrial, str]]:
        """Fail each RUNNING task whose worker is dead and put it back (at most MAX_RETRIES
        times a task); returns the failed trials and why."""
        failed = []
        with storage_lock(self.url):
            for trial in self.trials((TrialState.RUNNING,)):
                reason = self.lost(trial)
                if not reason:
                    continue
                self.storage.set_trial_user_attr(trial._trial_id, "lost", reason)  # noqa: SLF001
                self.study.tell(trial.number, state=TrialState.FAIL)
                retries = trial.user_attrs.get("retries", 0)
                if retries < MAX_RETRIES:
                    self.study.enqueue_trial({}, user_attrs={
                        TASK_ATTR: trial.user_attrs[TASK_ATTR], RETRY_ATTR: trial.number,
                        "retries": retries + 1}, skip_if_exists=False)
                failed.append((trial, reason))
        return failed

    def progress(self) -> dict[str, int]:
        """Counts of the queue's tasks: waiting, running, done (finished and not put back)."""
        trials = self.trials()
        retried = {t.user_attrs.get(RETRY_ATTR) for t in trials} - {None}
        return {"waiting": sum(t.state == TrialState.WAITING for t in trials),
                "running": sum(t.state == TrialState.RUNNING for t in trials),
                "done": sum(t.state in FINISHED and t.number not in retried for t in trials),
                "total": self.attrs().get("tasks_total", 0)}

    def results(self) -> list[FrozenTrial]:
        """Each task's last attempt (finished trials not put back), in queue order."""
        trials = self.trials()
        retried = {t.user_attrs.get(RETRY_ATTR) for t in trials} - {None}
        return [t for t in trials if t.state in FINISHED and t.number not in retried]
