"""Test-split evaluation: metrics, classification report and confusion matrix, and the one
function that logs them (with their figures) to the active MLflow run."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, confusion_matrix

from tracking.batches import PREDICT_BATCH, predict_padded
from tracking.plots import confusion_matrix_figure


@dataclass(frozen=True)
class Evaluation:
    probabilities: np.ndarray  # (N, classes)
    predictions: np.ndarray  # (N,)
    labels: np.ndarray  # (N,)
    loss: float  # mean cross-entropy
    report: dict  # sklearn classification_report(output_dict=True)
    report_text: str
    confusion: np.ndarray  # counts, rows = true class

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.predictions == self.labels))


def evaluate(
    model: keras.Model, x: np.ndarray, y: np.ndarray, class_names: Sequence[str],
    batch_size: int = PREDICT_BATCH,
) -> Evaluation:
    """One prediction pass over (x, y); everything else is derived from the probabilities."""
    return evaluation_from_probabilities(predict_padded(model, x, batch_size), y, class_names)


def crossentropy(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean sparse categorical cross-entropy of predicted probabilities (Keras's clipping)."""
    picked = np.clip(probs[np.arange(len(y)), np.asarray(y).astype(np.int64)], 1e-7, 1.0)
    return float(-np.mean(np.log(picked)))


def evaluation_from_probabilities(
    probs: np.ndarray, y: np.ndarray, class_names: Sequence[str]
) -> Evaluation:
    y = np.asarray(y).astype(np.int64)
    preds = probs.argmax(axis=1)
    labels = list(range(len(class_names)))
    names = [str(c) for c in class_names]
    kwargs = dict(labels=labels, target_names=names, zero_division=0, digits=4)
    return Evaluation(
        probabilities=probs, predictions=preds, labels=y, loss=crossentropy(probs, y),
        report=classification_report(y, preds, output_dict=True, **kwargs),
        report_text=classification_report(y, preds, **kwargs),
        confusion=confusion_matrix(y, preds, labels=labels),
    )


def metric_key(name: str) -> str:
    """A class name made safe for an MLflow metric key."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "class"


def evaluation_metrics(ev: Evaluation, class_names: Sequence[str],
                       prefix: str = "test") -> dict[str, float]:
    """Flat metrics: accuracy, loss, macro and weighted P/R/F1, and per-class P/R/F1."""
    metrics = {f"{prefix}_accuracy": ev.accuracy, f"{prefix}_loss": ev.loss}
    for avg, tag in (("macro avg", "macro"), ("weighted avg", "weighted")):
        for stat, short in (("precision", "precision"), ("recall", "recall"),
                            ("f1-score", "f1")):
            metrics[f"{prefix}_{short}_{tag}"] = float(ev.report[avg][stat])
    for name in class_names:
        row = ev.report[str(name)]
        for stat, short in (("precision", "precision"), ("recall", "recall"),
                            ("f1-score", "f1")):
            metrics[f"{prefix}_{short}_class_{metric_key(str(name))}"] = float(row[stat])
    return metrics


def log_evaluation(ev: Evaluation, class_names: Sequence[str], title: str = "",
                   prefix: str = "test") -> dict[str, float]:
    """Log metrics, report (.txt/.json), confusion matrix (.csv/.png) to the active run."""
    metrics = evaluation_metrics(ev, class_names, prefix)
    mlflow.log_metrics(metrics)
    mlflow.log_text(ev.report_text, "classification_report.txt")
    mlflow.log_dict(ev.report, "classification_report.json")
    mlflow.log_text(confusion_csv(ev.confusion, class_names), "confusion_matrix.csv")
    fig = confusion_matrix_figure(ev.confusion, class_names,
                                  title=f"{title} confusion matrix (test, n={len(ev.labels)})")
    mlflow.log_figure(fig, "confusion_matrix.png")
    plt.close(fig)
    return metrics


def confusion_csv(counts: np.ndarray, class_names: Sequence[str]) -> str:
    """A confusion matrix as CSV: rows = true class, columns = predicted, names as headers."""
    names = [str(c) for c in class_names]
    frame = pd.DataFrame(counts.astype(np.int64), index=pd.Index(names, name="true\\predicted"),
                         columns=names)
    return frame.to_csv()


def read_confusion_csv(text: str) -> tuple[list[str], np.ndarray]:
    """Parse a logged confusion_matrix.csv back into (class names, counts)."""
    frame = pd.read_csv(io.StringIO(text), index_col=0, dtype={0: str})
    return [str(c) for c in frame.columns], frame.to_numpy(dtype=np.int64)
