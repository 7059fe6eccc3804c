"""Tracked training, evaluation and comparison of Keras image classifiers (MLflow, Optuna).

Importing the package quiets the libraries' start-up chatter, unless the user asked for it:
- MLflow's artifact-download progress bars (MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
  unless set);
- TensorFlow's C++ INFO and WARNING lines (TF_CPP_MIN_LOG_LEVEL=2 unless set). TensorFlow
  2.21 prints its start-up lines (oneDNN, CPU features, "Could not find cuda drivers") before
  its logging reads that variable, and on a machine without an NVIDIA driver it reports the
  failed CUDA initialisation as an error at the first operation. So when anything first
  imports `keras` or `tensorflow`, TensorFlow is imported and its devices listed with the
  process's stderr captured, and every captured line is written back except those known
  lines; a real error (or any line not on the list) still shows. Set TF_CPP_MIN_LOG_LEVEL=0
  to see everything. A command that needs no Keras (the store, the server, gradient descent)
  never loads TensorFlow: a finder on `sys.meta_path` (Python's import hook) waits for that
  first import.
"""

import importlib.abc
import os
import re
import sys
import tempfile

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# start-up lines TensorFlow prints whatever TF_CPP_MIN_LOG_LEVEL says
_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|I\d{4} [\d:.]+ +\d+ \S+\] "
    r"|To enable the following instructions: .* rebuild TensorFlow)")
# on a machine without an NVIDIA driver: CUDA cannot start, which is expected there
_NO_DRIVER_NOISE = re.compile(r"^E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit")


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow and list its devices with fd 2 captured; re-emit all but the noise."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow" or \
            os.environ["TF_CPP_MIN_LOG_LEVEL"] in ("0", "1") or "tensorflow" in sys.modules:
        return
    no_driver = not os.path.exists("/proc/driver/nvidia/version")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf  # noqa: PLC0415 - the import itself is what is captured

            tf.config.list_physical_devices()  # CUDA's initialisation happens here
        except Exception:  # noqa: BLE001 - whoever imports TensorFlow next sees the error
            pass
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        for line in captured.read().decode(errors="replace").splitlines(keepends=True):
            if not (_STARTUP_NOISE.match(line) or (no_driver and _NO_DRIVER_NOISE.match(line))):
                sys.stderr.write(line)
    sys.stderr.flush()


class _QuietFirstImport(importlib.abc.MetaPathFinder):
    """Runs `_import_tensorflow_quietly` at the first import of keras or tensorflow, then
    leaves the import to Python's own finders (and sys.meta_path)."""

    def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201 - importlib's API
        if name in ("keras", "tensorflow"):
            sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
            _import_tensorflow_quietly()
        return None


if "keras" not in sys.modules and "tensorflow" not in sys.modules:
    sys.meta_path.insert(0, _QuietFirstImport())
