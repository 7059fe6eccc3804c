"""Per-epoch checkpoints a run can resume from, even after SIGKILL or a lost machine: writing
them in the background while training goes on, and finding the newest complete one (the
resume itself is `tracking.training.resume`).

Each completed epoch k is written locally, atomically (temporary file + `os.replace`), then
uploaded to the run's artifacts as `checkpoints/epoch-000k/{weights.npz,state.json}`: the
weights and optimizer variables (NumPy arrays) first, the small state file last. A folder
without a readable state.json is incomplete and ignored, so a half-written upload never
replaces a good checkpoint. The best weights so far live beside them as
`checkpoints/best-epoch-000k.weights.npz`. Older folders are removed once a newer one is
complete; a run that finishes cleanly drops its checkpoints (its model is logged).
Checkpoints of earlier versions (`model.keras`, `.weights.h5`) are still read.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from tracking.store.lifecycle import StopRun

ARTIFACT_DIR = "checkpoints"
WEIGHTS_FILE = "weights.npz"  # model weights and optimizer variables (NumPy arrays)
LEGACY_MODEL_FILE = "model.keras"  # checkpoints written before weights.npz: a whole model
STATE_FILE = "state.json"
BEST_SUFFIX = ".weights.npz"
LEGACY_BEST_SUFFIX = ".weights.h5"


# what a disk says when it will not take a file: full, read-only, no permission, a quota, too
# large (other OSErrors, e.g. a dropped connection to a server, mean the server is away)
DISK_ERRORS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT,
                         errno.EFBIG})


def disk_refused(err: BaseException) -> bool:
    """Whether `err` is a disk refusing a write (DISK_ERRORS), not a server being away."""
    return isinstance(err, OSError) and err.errno in DISK_ERRORS


class ArtifactsUnwritable(StopRun):
    """A checkpoint (or the model) could not be written to the run's artifact location: the
    disk is full, the mount read-only, a quota reached. Training stops at the epoch's end and
    the run ends FAILED with this reason as `stop_reason`."""

    status = "FAILED"


def atomic_save(path: Path, write: Callable[[str], None]) -> None:
    """Write `path` through `write(tmp_path)` so readers see the old file or the new one."""
    tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")  # keeps Keras's required suffix
    write(str(tmp))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _artifact_repo(run_id: str) -> Any:
    return get_artifact_repository(mlflow.get_run(run_id).info.artifact_uri)


def drop_checkpoints(run_id: str) -> None:
    """Delete run `run_id`'s checkpoints (a finished run's logged model supersedes them)."""
    try:
        _artifact_repo(run_id).delete_artifacts(ARTIFACT_DIR)
    except Exception:  # noqa: BLE001 - some stores cannot delete; stale files cost space only
        pass


class CheckpointStore:
    """Writes and uploads the checkpoints of one run; one instance per training process.

    `save` copies what it needs out of the model (milliseconds) and hands the writing and
    uploading to one background thread as one job per epoch (the best weights first, then the
    checkpoint), while training goes on: epoch k's job travels during epoch k + 1. At most one
    job waits: the next `save` first lets the previous finish. `close` (and so the end of a
    run, Ctrl-C and SIGTERM too) waits for the last one, so a run stopped by a signal leaves
    its last epoch's checkpoint complete; after SIGKILL the one in flight may be missing, and
    the resume starts one epoch earlier.
    """

    def __init__(self, run_id: str, every: int = 1) -> None:
        self.run_id = run_id
        self.every = every
        self.local = Path(tempfile.mkdtemp(prefix=f"ckpt-{run_id[:8]}-"))
        self.client = mlflow.MlflowClient()
        self.best_file: str | None = None
        self._uploaded: list[str] = []
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: Future | None = None
        self.failure = ""  # the first write the disk refused, in one line ("" = none)
        self.saved_epoch = 0  # the newest epoch with a complete checkpoint in the artifacts
        self.submitted_epoch = 0  # the newest epoch whose job `save` handed to the writer
        self.done_epoch = 0  # the newest epoch whose job ended (written, or failed)

    def save(self, model: keras.Model, epoch: int, state: dict[str, Any],
             best: bool = False) -> None:
        """After `epoch` (1-based) completed: when `best`, its weights as the best so far (the
        previous best is dropped); every `every` epochs a checkpoint (weights and optimizer
        state, then the state file: history, early stopping, random generators)."""
        checkpoint = self.every > 0 and epoch % self.every == 0
        best = best and self.every > 0
        if not (best or checkpoint):
            return
        # one copy of the weights serves both files, and one job per epoch means the next
        # epoch's save never waits for this epoch's best weights to be uploaded
        snap = snapshot(model) if checkpoint else {"w": model.get_weights()}
        self._submit(self._write_epoch, snap, epoch, state, best, checkpoint)
        self.submitted_epoch = epoch

    def _submit(self, job: Any, *args: Any) -> None:
        self.wait()
        self._pending = self._writer.submit(job, *args)

    def wait(self) -> None:
        """Until the job in flight is done (its failure is reported, never raised)."""
        if self._pending is not None:
            error = self._pending.exception()
            if error is not None:
                print(f"warning: a checkpoint was not saved ({type(error).__name__}: {error})",
                      file=sys.stderr)
            self._pending = None

    def _write_epoch(self, snap: dict[str, list[np.ndarray]], epoch: int,
                     state: dict[str, Any], best: bool, checkpoint: bool) -> None:
        try:
            self._write_epoch_files(snap, epoch, state, best, checkpoint)
        finally:
            self.done_epoch = epoch  # its metrics may go to the store now (MlflowMetrics)

    def _write_epoch_files(self, snap: dict[str, list[np.ndarray]], epoch: int,
                           state: dict[str, Any], best: bool, checkpoint: bool) -> None:
        if self.failure:
            return  # the disk refused an earlier write: training is stopping
        try:
            if best:
                self._write_best(snap["w"], epoch)
            if checkpoint:
                self._write_checkpoint(snap, epoch, state)
        except OSError as err:
            if not disk_refused(err):
                raise  # reported by `wait`, as any other failed save
            where = mlflow.get_run(self.run_id).info.artifact_uri
            self.failure = f"epoch {epoch}'s checkpoint refused ({err.strerror or err})"
            print(f"error: the checkpoint of epoch {epoch} could not be written to {where} "
                  f"({err.strerror or err}); training stops at the end of this epoch",
                  file=sys.stderr, flush=True)

    def _write_best(self, weights: list[np.ndarray], epoch: int) -> None:
        name = f"best-epoch-{epoch:04d}{BEST_SUFFIX}"
        path = self.local / name
        atomic_save(path, lambda p: _save_arrays(p, {"w": weights}))
        try:
            self.client.log_artifact(self.run_id, str(path), ARTIFACT_DIR)
        except Exception as err:  # noqa: BLE001 - server away: the previous best stays the best
            if disk_refused(err):
                raise  # the artifact location refused it (`_write_epoch` stops training)
            return
        previous, self.best_file = self.best_file, name
        if previous and previous != name:
            self._delete(f"{ARTIFACT_DIR}/{previous}")
        path.unlink(missing_ok=True)

    def _write_checkpoint(self, snap: dict[str, list[np.ndarray]], epoch: int,
                          state: dict[str, Any]) -> None:
        folder = self.local / f"epoch-{epoch:04d}"
        folder.mkdir(exist_ok=True)
        atomic_save(folder / WEIGHTS_FILE, lambda p: _save_arrays(p, snap))
        state = {**state, "epochs_done": epoch, "best_file": self.best_file,
                 "saved_at": time.time()}
        atomic_save(folder / STATE_FILE,
                    lambda p: Path(p).write_text(json.dumps(state, indent=1)))
        target = f"{ARTIFACT_DIR}/{folder.name}"
        try:
            self.client.log_artifact(self.run_id, str(folder / WEIGHTS_FILE), target)
            self.client.log_artifact(self.run_id, str(folder / STATE_FILE), target)  # completes
        except Exception as err:  # noqa: BLE001 - server away: the previous checkpoint stays
            shutil.rmtree(folder, ignore_errors=True)
            if disk_refused(err):
                self._delete(target)  # half a checkpoint; the previous one stays
                raise
            return
        for old in self._uploaded:
            self._delete(old)
        self._uploaded = [target]
        self.saved_epoch = epoch
        shutil.rmtree(folder, ignore_errors=True)

    def drop_all(self) -> None:
        """After a clean finish: the logged model supersedes the checkpoints."""
        self.wait()
        drop_checkpoints(self.run_id)

    def close(self) -> None:
        self.wait()
        self._writer.shutdown(wait=True)
        shutil.rmtree(self.local, ignore_errors=True)

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _delete(self, artifact_path: str) -> None:
        try:
            _artifact_repo(self.run_id).delete_artifacts(artifact_path)
        except Exception:  # some stores cannot delete; a stale file costs space only
            pass


def snapshot(model: keras.Model) -> dict[str, list[np.ndarray]]:
    """Copies of the model's weights (`get_weights` order) and its optimizer's variables."""
    return {"w": model.get_weights(),
            "o": [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]}


def restore(model: keras.Model, arrays: dict[str, list[np.ndarray]]) -> None:
    """Put a `snapshot` back into a compiled model of the same architecture (its optimizer is
    built first, so a resumed fit continues the step count and the schedule)."""
    model.set_weights(arrays["w"])
    model.optimizer.build(model.trainable_variables)
    variables = model.optimizer.variables
    if len(variables) != len(arrays["o"]):
        raise ValueError(f"the checkpoint holds {len(arrays['o'])} optimizer variables, the "
                         f"model's optimizer {len(variables)}")
    for variable, value in zip(variables, arrays["o"], strict=True):
        variable.assign(value)


def _save_arrays(path: str, arrays: dict[str, list[np.ndarray]]) -> None:
    with open(path, "wb") as f:  # an open file: np.savez would add ".npz" to a name
        np.savez(f, **{f"{group}{i}": a for group, values in arrays.items()
                       for i, a in enumerate(values)})


def load_arrays(path: str | Path) -> dict[str, list[np.ndarray]]:
    """The groups of arrays `_save_arrays` wrote (`w`: weights, `o`: optimizer), in order."""
    with np.load(path) as stored:
        groups: dict[str, list[np.ndarray]] = {}
        for key in sorted(stored.files, key=lambda k: (k[0], int(k[1:]))):
            groups.setdefault(key[0], []).append(stored[key])
    return groups


def latest_checkpoint(run_id: str, into: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """Download the newest complete checkpoint of `run_id`: (its weights.npz, or the
    model.keras of an older checkpoint, and its state), or None."""
    client = mlflow.MlflowClient()
    folders = sorted((f.path for f in client.list_artifacts(run_id, ARTIFACT_DIR)
                      if f.is_dir and Path(f.path).name.startswith("epoch-")), reverse=True)
    for folder in folders:
        try:
            state_path = client.download_artifacts(run_id, f"{folder}/{STATE_FILE}", str(into))
            state = json.loads(Path(state_path).read_text())
            names = {Path(f.path).name for f in client.list_artifacts(run_id, folder)}
            name = WEIGHTS_FILE if WEIGHTS_FILE in names else LEGACY_MODEL_FILE
            weights_path = client.download_artifacts(run_id, f"{folder}/{name}", str(into))
        except Exception:  # incomplete or unreadable: try the one before
            continue
        return Path(weights_path), state
    return None


def complete_checkpoints(run_id: str) -> list[str]:
    """Artifact paths of run `run_id`'s complete checkpoint folders (`epoch-NNNN` holding a
    state file), oldest first."""
    client = mlflow.MlflowClient()
    try:
        folders = sorted(f.path for f in client.list_artifacts(run_id, ARTIFACT_DIR)
                         if f.is_dir and Path(f.path).name.startswith("epoch-"))
        return [f for f in folders
                if STATE_FILE in {Path(a.path).name for a in client.list_artifacts(run_id, f)}]
    except Exception:  # noqa: BLE001 - an unreadable store holds no usable checkpoint
        return []


def download_best_weights(run_id: str, name: str, into: str | Path) -> Path | None:
    try:
        return Path(mlflow.MlflowClient().download_artifacts(run_id, f"{ARTIFACT_DIR}/{name}",
                                                             str(into)))
    except Exception:
        return None


