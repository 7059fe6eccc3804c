"""What a model said about each test image: the predictions table, its worst mistakes, and
the readers that comparisons (and paired tests between runs) use.

    log_outcomes(probs, y_test, class_names, images=x_test, test_digest=digest)
    frame = read_predictions(run_id)          # one row per test image
    images = read_mistake_images(run_id)      # {test index: uint8 image}

`predictions.json` is an MLflow table (`mlflow.log_table`: the UI shows it in the run's
artifacts), one row per test image in test-split order, columns:

| column              | meaning                                                           |
|---------------------|-------------------------------------------------------------------|
| `index`             | position in the test split (0-based)                              |
| `true_label`        | the label index (names: the run's `class_names.json`)             |
| `predicted_label`   | argmax of the probabilities                                       |
| `probability_<k>`   | predicted probability of class k, one column per class            |
| `test_digest`       | the test split's digest, as in the run's MLflow dataset input     |

Two runs' tables may be paired row by row only when their `test_digest` agree.
`misclassified_images.npz` holds the wrongly classified test images themselves (`index`,
`images` uint8 (n, S, S, 3)), most confident mistakes first, at most MAX_MISTAKE_IMAGES and
MAX_MISTAKE_BYTES, so that a report can show them without the data set.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.exceptions import MlflowException

from tracking.errors import UsageError
from tracking.evaluation.plots import class_labels, image_gallery_figure

PREDICTIONS_FILE = "predictions.json"
MISTAKES_FILE = "misclassified_images.npz"
GALLERY_FILE = "misclassified_examples.png"
GALLERY_SIZE = 24  # mistakes shown in the gallery (4 rows of 6)
MAX_MISTAKE_IMAGES = 1000  # images kept in MISTAKES_FILE ...
MAX_MISTAKE_BYTES = 16_000_000  # ... and at most this many bytes of pixels
COLUMNS = ("index", "true_label", "predicted_label")


class PredictionsError(UsageError):
    """A run has no (readable) predictions table; the message names the run."""


def probability_column(label: int) -> str:
    return f"probability_{label}"


def predictions_frame(probs: np.ndarray, labels: np.ndarray, test_digest: str) -> pd.DataFrame:
    """The predictions table of probabilities (N, classes) and true labels (N,)."""
    return pd.DataFrame({
        "index": np.arange(len(labels)), "true_label": labels.astype(np.int64),
        "predicted_label": probs.argmax(axis=1).astype(np.int64),
        **{probability_column(k): probs[:, k].astype(np.float32) for k in range(probs.shape[1])},
        "test_digest": [test_digest] * len(labels)})


def worst_mistakes(probs: np.ndarray, labels: np.ndarray, n: int | None = None) -> np.ndarray:
    """Indices of the wrongly classified images, most confident (highest probability of the
    predicted class) first, ties in test order; at most `n`."""
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probs[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:n]


def mistakes_gallery_figure(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                            images: np.ndarray, title: str = "") -> Figure:
    """The GALLERY_SIZE most confident mistakes among `images` (N, S, S, 3) uint8, each with
    its true class, predicted class and that class's probability, most confident first."""
    worst = worst_mistakes(probs, labels)
    shown = worst[:GALLERY_SIZE]
    names, families, note = class_labels([str(c) for c in class_names])
    predicted = probs.argmax(axis=1)
    captions = [f"true {names[labels[i]]}\npredicted {names[predicted[i]]}\n"
                f"p = {probs[i, predicted[i]]:.3f}" for i in shown]
    found = (f"{len(shown)} of {len(worst)} wrong" if len(worst) else "none, every image right")
    return image_gallery_figure(
        images[shown], captions, families=families,
        title=f"{title} most confident mistakes: {found} (test, n={len(labels)})"
              + (f"; {note}" if note else ""))


def log_outcomes(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *,
                 images: np.ndarray | None = None, test_digest: str = "",
                 title: str = "") -> None:
    """Log `predictions.json` to the active run and, given the test images (N, S, S, 3) uint8,
    the gallery of the GALLERY_SIZE most confident mistakes (`misclassified_examples.png`:
    true class, predicted class and its probability) and `misclassified_images.npz`."""
    frame = predictions_frame(probs, labels, test_digest)
    run_id = mlflow.active_run().info.run_id
    if PREDICTIONS_FILE in {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}:
        # log_table appends to an existing table; an evaluation logged again (a tuning study
        # reported by a later worker, an upload after an outage) replaces it, in log_table's
        # own format (the run already carries its table tag)
        mlflow.log_text(frame.to_json(orient="split", index=False), PREDICTIONS_FILE)
    else:
        mlflow.log_table(frame, PREDICTIONS_FILE)
    if images is None:
        return
    worst = worst_mistakes(probs, labels)
    fig = mistakes_gallery_figure(probs, labels, class_names, images, title=title)
    mlflow.log_figure(fig, GALLERY_FILE)
    plt.close(fig)
    per_image = max(int(images[0].nbytes), 1) if len(images) else 1
    kept = worst[:min(MAX_MISTAKE_IMAGES, MAX_MISTAKE_BYTES // per_image)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / MISTAKES_FILE
        np.savez_compressed(path, index=kept.astype(np.int64), images=images[kept])
        mlflow.log_artifact(str(path))


def read_predictions(run_id: str) -> pd.DataFrame:
    """The predictions table of run `run_id`, sorted by `index` (columns: module docstring).

    Raises PredictionsError when the run has none or it lacks a column.
    """
    client = mlflow.MlflowClient()
    try:
        run = client.get_run(run_id)
        frame = client.load_table(run.info.experiment_id, PREDICTIONS_FILE, run_ids=[run_id])
    except MlflowException as err:
        raise PredictionsError(f"run {run_id} has no readable {PREDICTIONS_FILE}: "
                               f"{str(err).strip().splitlines()[0]}") from None
    missing = [c for c in (*COLUMNS, "test_digest", probability_column(0))
               if c not in frame.columns]
    if missing:
        raise PredictionsError(f"{PREDICTIONS_FILE} of run {run_id} lacks {', '.join(missing)}")
    frame["test_digest"] = frame["test_digest"].astype(str)
    return frame.sort_values("index", kind="stable").reset_index(drop=True)


def probabilities_of(frame: pd.DataFrame) -> np.ndarray:
    """(N, classes) probabilities of a predictions table, in label order."""
    count = sum(c.startswith("probability_") for c in frame.columns)
    return frame[[probability_column(k) for k in range(count)]].to_numpy(dtype=np.float64)


def read_mistake_images(run_id: str, scratch: str | Path) -> dict[int, np.ndarray]:
    """{test index: uint8 image} of the mistakes run `run_id` logged ({} when none)."""
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=MISTAKES_FILE,
                                                   dst_path=str(scratch))
    except (MlflowException, OSError):
        return {}
    with np.load(path) as stored:
        return {int(i): image for i, image in zip(stored["index"], stored["images"],
                                                  strict=True)}
