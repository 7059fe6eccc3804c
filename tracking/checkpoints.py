"""Per-epoch checkpoints a run can resume from, even after SIGKILL or a lost machine.

Each completed epoch k is written locally, atomically (temporary file + `os.replace`), then
uploaded to the run's artifacts as `checkpoints/epoch-000k/{model.keras,state.json}`:
the model (with optimizer state) first, the small state file last. A folder without a
readable state.json is incomplete and ignored, so a half-written upload never replaces a
good checkpoint. The best weights so far live beside them as
`checkpoints/best-epoch-000k.weights.h5`. Older folders are removed once a newer one is
complete; a run that finishes cleanly drops its checkpoints (its model is logged).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow

ARTIFACT_DIR = "checkpoints"
MODEL_FILE = "model.keras"
STATE_FILE = "state.json"


def atomic_save(path: Path, write: Callable[[str], None]) -> None:
    """Write `path` through `write(tmp_path)` so readers see the old file or the new one."""
    tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")  # keeps Keras's required suffix
    write(str(tmp))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _artifact_repo(run_id: str) -> Any:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(mlflow.get_run(run_id).info.artifact_uri)


class CheckpointStore:
    """Writes and uploads the checkpoints of one run; one instance per training process."""

    def __init__(self, run_id: str, every: int = 1) -> None:
        self.run_id = run_id
        self.every = every
        self.local = Path(tempfile.mkdtemp(prefix=f"ckpt-{run_id[:8]}-"))
        self.client = mlflow.MlflowClient()
        self.best_file: str | None = None
        self.latest_local: Path | None = None
        self._uploaded: list[str] = []

    def save_best(self, model: Any, epoch: int) -> None:
        name = f"best-epoch-{epoch:04d}.weights.h5"
        path = self.local / name
        atomic_save(path, model.save_weights)
        try:
            self.client.log_artifact(self.run_id, str(path), ARTIFACT_DIR)
        except Exception:  # noqa: BLE001 - server away: keep the file for recovery
            return
        previous, self.best_file = self.best_file, name
        if previous and previous != name:
            self._delete(f"{ARTIFACT_DIR}/{previous}")
        path.unlink(missing_ok=True)

    def save(self, model: Any, epoch: int, state: dict[str, Any]) -> None:
        """Checkpoint after `epoch` (1-based) completed: model + optimizer, then state."""
        if self.every <= 0 or epoch % self.every:
            return
        folder = self.local / f"epoch-{epoch:04d}"
        folder.mkdir(exist_ok=True)
        atomic_save(folder / MODEL_FILE, model.save)
        state = {**state, "epochs_done": epoch, "best_file": self.best_file,
                 "saved_at": time.time()}
        atomic_save(folder / STATE_FILE,
                    lambda p: Path(p).write_text(json.dumps(state, indent=1)))
        self.latest_local = folder
        target = f"{ARTIFACT_DIR}/{folder.name}"
        try:
            self.client.log_artifact(self.run_id, str(folder / MODEL_FILE), target)
            self.client.log_artifact(self.run_id, str(folder / STATE_FILE), target)  # completes
        except Exception:  # noqa: BLE001 - server away: the local copy stays for recovery
            self._drop_local_except(folder)
            return
        for old in self._uploaded:
            self._delete(old)
        self._uploaded = [target]
        self._drop_local_except(None)

    def _drop_local_except(self, keep: Path | None) -> None:
        for folder in self.local.glob("epoch-*"):
            if folder != keep:
                shutil.rmtree(folder, ignore_errors=True)
        if keep is None:
            self.latest_local = None

    def drop_all(self) -> None:
        """After a clean finish: the logged model supersedes the checkpoints."""
        self._delete(ARTIFACT_DIR)

    def close(self) -> None:
        shutil.rmtree(self.local, ignore_errors=True)

    def _delete(self, artifact_path: str) -> None:
        try:
            _artifact_repo(self.run_id).delete_artifacts(artifact_path)
        except Exception:  # some stores cannot delete; a stale file costs space only
            pass


def latest_checkpoint(run_id: str, into: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """Download the newest complete checkpoint of `run_id`; (model path, state) or None."""
    client = mlflow.MlflowClient()
    folders = sorted((f.path for f in client.list_artifacts(run_id, ARTIFACT_DIR)
                      if f.is_dir and Path(f.path).name.startswith("epoch-")), reverse=True)
    for folder in folders:
        try:
            state_path = client.download_artifacts(run_id, f"{folder}/{STATE_FILE}", str(into))
            state = json.loads(Path(state_path).read_text())
            model_path = client.download_artifacts(run_id, f"{folder}/{MODEL_FILE}", str(into))
        except Exception:  # incomplete or unreadable: try the one before
            continue
        return Path(model_path), state
    return None


def download_best_weights(run_id: str, name: str, into: str | Path) -> Path | None:
    try:
        return Path(mlflow.MlflowClient().download_artifacts(run_id, f"{ARTIFACT_DIR}/{name}",
                                                             str(into)))
    except Exception:
        return None
