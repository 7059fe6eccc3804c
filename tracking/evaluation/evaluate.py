"""Test-split evaluation: what a practitioner reads off one pass of predictions, and the one
function that logs it (with its figures and tables) to the active MLflow run.

    ev = evaluate(model, data.x_test, data.y_test, data.class_names)
    log_evaluation(ev, data.class_names, images=data.x_test, test_digest=digest)

Metrics come from scikit-learn: classification report and confusion matrix, one-vs-rest ROC
and precision-recall curves (`roc_curve`, `precision_recall_curve`, `average_precision_score`),
top-k accuracy (`top_k_accuracy_score`), the multiclass Brier score (`brier_score_loss`) and
the reliability diagram (`calibration_curve`), from which the expected calibration error is
weighted. Per-class metric keys carry the class's label index (`test_f1_class_3`): names may
repeat after any cleaning, indices never do; `class_names.json` maps them back
(`tracking.training.provenance`).

Many classes: every run logs `per_class_metrics.csv` (PER_CLASS_FILE), one row per class with
its label index, name, support and the five per-class figures, the one source the comparison
report reads (`read_per_class_metrics`). Per-class metric keys are logged as well only up to
PER_CLASS_METRICS_MAX classes: five keys a class would give a 200-class run about 1,000 keys,
where MLflow's chart view stalls (mlflow issues 24012, 11927).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    auc,
    average_precision_score,
    brier_score_loss,
    classification_report,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_curve,
    top_k_accuracy_score,
)

from tracking.data.batches import PREDICT_BATCH, predict_padded
from tracking.evaluation.outcomes import log_outcomes
from tracking.evaluation.plots import (
    confusion_matrix_figure,
    reliability_diagram_figure,
    roc_pr_curves_figure,
)

ECE_BINS = 15  # equal-width confidence bins of the ECE and the reliability diagram
TOP_K = (2, 5)  # top-k accuracy for each k smaller than the number of classes
# at most this many classes get per-class metric keys (`<prefix>_<stat>_class_<index>`, five
# a class, for the UI's charts); above it only PER_CLASS_FILE holds the per-class figures
PER_CLASS_METRICS_MAX = 50
PER_CLASS_FILE = "per_class_metrics.csv"  # logged by every evaluation, whatever the classes
PER_CLASS_STATS = ("precision", "recall", "f1", "roc_auc", "average_precision")
PER_CLASS_COLUMNS = ("label", "class_name", "support", *PER_CLASS_STATS)


@dataclass(frozen=True)
class OneVsRest:
    """One class against the rest: ROC and precision-recall curves and their summaries."""

    fpr: np.ndarray
    tpr: np.ndarray
    roc_auc: float
    precision: np.ndarray
    recall: np.ndarray
    average_precision: float


@dataclass(frozen=True)
class Reliability:
    """Top-label reliability over ECE_BINS equal-width bins of confidence (the top class's
    probability); only non-empty bins: mean confidence, accuracy and image count of each."""

    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error, top-label, L1, bins weighted by their share of images
        (Guo et al. 2017, "On Calibration of Modern Neural Networks", eq. 3)."""
        weights = self.counts / max(int(self.counts.sum()), 1)
        return float(np.sum(weights * np.abs(self.accuracy - self.confidence)))


@dataclass(frozen=True)
class Evaluation:
    probabilities: np.ndarray  # (N, classes) float
    predictions: np.ndarray  # (N,) int64, argmax of probabilities
    labels: np.ndarray  # (N,) int64, true labels
    loss: float  # mean cross-entropy
    report: dict  # sklearn classification_report(output_dict=True)
    report_text: str
    confusion: np.ndarray  # counts, rows = true class
    per_class: dict[str, np.ndarray]  # precision, recall, f1, roc_auc, average_precision
    curves: tuple[OneVsRest | None, ...]  # per class; None where the class is absent
    top_k: dict[int, float]  # k -> top-k accuracy
    brier: float  # multiclass Brier score, in [0, 2]
    reliability: Reliability

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.predictions == self.labels))

    @property
    def confidence(self) -> np.ndarray:
        """(N,) probability of the predicted class."""
        return self.probabilities[np.arange(len(self.predictions)), self.predictions]


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
    """Every test metric of probabilities `probs` (N, classes) against labels `y` (N,) in
    0..classes-1. Raises ValueError when the shapes disagree."""
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y).astype(np.int64)
    if probs.ndim != 2 or probs.shape != (len(y), len(class_names)):
        raise ValueError(f"probabilities of shape {probs.shape} do not fit {len(y)} labels "
                         f"and {len(class_names)} classes")
    preds = probs.argmax(axis=1)
    labels = list(range(len(class_names)))
    kwargs = dict(labels=labels, target_names=[str(c) for c in class_names],
                  zero_division=0, digits=4)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y, preds, labels=labels, zero_division=0)
    curves = tuple(one_vs_rest(y == k, probs[:, k]) for k in labels)
    nan = float("nan")
    return Evaluation(
        probabilities=probs, predictions=preds, labels=y, loss=crossentropy(probs, y),
        report=classification_report(y, preds, output_dict=True, **kwargs),
        report_text=classification_report(y, preds, **kwargs),
        confusion=confusion_matrix(y, preds, labels=labels),
        per_class={"precision": precision, "recall": recall, "f1": f1,
                   "roc_auc": np.array([c.roc_auc if c else nan for c in curves]),
                   "average_precision": np.array([c.average_precision if c else nan
                                                  for c in curves])},
        curves=curves,
        top_k={k: float(top_k_accuracy_score(y, probs, k=k, labels=labels))
               for k in TOP_K if k < len(labels)},
        # float32 softmax rows sum to 1 within 1e-7, looser than brier_score_loss's check
        brier=float(brier_score_loss(y, probs / probs.sum(axis=1, keepdims=True),
                                     labels=labels, scale_by_half=False)),
        reliability=reliability(preds == y, probs.max(axis=1)),
    )


def one_vs_rest(positive: np.ndarray, score: np.ndarray) -> OneVsRest | None:
    """ROC and precision-recall of one class's probability; None when the test split lacks
    positives or negatives (both curves are undefined then)."""
    if positive.all() or not positive.any():
        return None
    fpr, tpr, _ = roc_curve(positive, score)
    precision, recall, _ = precision_recall_curve(positive, score)
    return OneVsRest(fpr, tpr, float(auc(fpr, tpr)), precision, recall,
                     float(average_precision_score(positive, score)))


def reliability(correct: np.ndarray, confidence: np.ndarray,
                bins: int = ECE_BINS) -> Reliability:
    """Reliability of confidences (N,) in [0, 1] against correctness (N,) bool, over `bins`
    equal-width bins (sklearn's calibration_curve, uniform strategy)."""
    confidence = np.clip(confidence, 0.0, 1.0)
    accuracy, mean_confidence = calibration_curve(correct.astype(int), confidence,
                                                  n_bins=bins, strategy="uniform")
    # calibration_curve returns no bin sizes: count with its own binning (bin i holds
    # (edge i, edge i+1], the first also 0), keeping the non-empty bins it reports
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], confidence), minlength=bins)
    counts = counts[counts > 0]
    assert len(counts) == len(accuracy), "binning differs from sklearn's calibration_curve"
    return Reliability(mean_confidence, accuracy, counts)


def evaluation_metrics(ev: Evaluation, prefix: str = "test") -> dict[str, float]:
    """Flat metrics: accuracy, loss, macro and weighted P/R/F1, macro ROC AUC and average
    precision (over the classes present), top-k accuracy, ECE, Brier score, and, for at most
    PER_CLASS_METRICS_MAX classes, per class (`<prefix>_<stat>_class_<label index>`) P/R/F1,
    ROC AUC and average precision (above it: `per_class_frame`, logged as PER_CLASS_FILE)."""
    metrics = {f"{prefix}_accuracy": ev.accuracy, f"{prefix}_loss": ev.loss}
    for avg, tag in (("macro avg", "macro"), ("weighted avg", "weighted")):
        for stat, short in (("precision", "precision"), ("recall", "recall"),
                            ("f1-score", "f1")):
            metrics[f"{prefix}_{short}_{tag}"] = float(ev.report[avg][stat])
    for stat in ("roc_auc", "average_precision"):
        values = ev.per_class[stat]
        if np.isfinite(values).any():
            metrics[f"{prefix}_{stat}_macro"] = float(np.nanmean(values))
    for k, value in ev.top_k.items():
        metrics[f"{prefix}_top_{k}_accuracy"] = value
    metrics[f"{prefix}_ece"] = ev.reliability.ece
    metrics[f"{prefix}_brier_score"] = ev.brier
    for stat, values in ev.per_class.items() if per_class_keys(len(ev.confusion)) else ():
        for index, value in enumerate(values):
            if np.isfinite(value):
                metrics[f"{prefix}_{stat}_class_{index}"] = float(value)
    return metrics


def per_class_keys(classes: int) -> bool:
    """Whether an evaluation of `classes` classes logs per-class metric keys."""
    return classes <= PER_CLASS_METRICS_MAX


def per_class_frame(ev: Evaluation, class_names: Sequence[str]) -> pd.DataFrame:
    """The per-class table, one row per class in label order, columns PER_CLASS_COLUMNS:
    `label` int64, `class_name` str, `support` int64 (test images of the class), and the
    PER_CLASS_STATS float64 (NaN for ROC AUC and average precision where the class is absent
    from the test split or is all of it). Raises ValueError when `class_names` does not fit."""
    classes = len(ev.confusion)
    if len(class_names) != classes:
        raise ValueError(f"{len(class_names)} class names for {classes} classes")
    return pd.DataFrame({
        "label": np.arange(classes, dtype=np.int64),
        "class_name": [str(c) for c in class_names],
        "support": ev.confusion.sum(axis=1).astype(np.int64),
        **{stat: np.asarray(ev.per_class[stat], dtype=np.float64) for stat in PER_CLASS_STATS},
    }, columns=list(PER_CLASS_COLUMNS))


def log_evaluation(ev: Evaluation, class_names: Sequence[str], title: str = "",
                   prefix: str = "test", images: np.ndarray | None = None,
                   test_digest: str = "", skip: Collection[str] = ()) -> dict[str, float]:
    """Log to the active run: the metrics (`evaluation_metrics`: per-class keys only up to
    PER_CLASS_METRICS_MAX classes), per_class_metrics.csv (`per_class_frame`, always),
    classification_report .txt/.json, confusion_matrix .csv/.png (above MAX_LABELLED_CLASSES
    the matrix beside its most frequent confusions), roc_pr_curves.png,
    reliability_diagram.png and the
    per-image predictions table with the mistakes (`tracking.evaluation.outcomes.log_outcomes`; the
    gallery and mistake images need `images`, the test split's (N, S, S, 3) uint8).
    Metrics named in `skip` (already logged) are not logged again. Returns the metrics."""
    metrics = evaluation_metrics(ev, prefix)
    mlflow.log_metrics({k: v for k, v in metrics.items() if k not in skip})
    mlflow.log_text(per_class_frame(ev, class_names).to_csv(index=False), PER_CLASS_FILE)
    mlflow.log_text(ev.report_text, "classification_report.txt")
    mlflow.log_dict(ev.report, "classification_report.json")
    mlflow.log_text(confusion_csv(ev.confusion, class_names), "confusion_matrix.csv")
    n = len(ev.labels)
    figures = {
        "confusion_matrix.png": confusion_matrix_figure(
            ev.confusion, class_names, title=f"{title} confusion matrix (test, n={n})"),
        "roc_pr_curves.png": roc_pr_curves_figure(
            ev.curves, class_names, title=f"{title} one-vs-rest curves (test, n={n})"),
        "reliability_diagram.png": reliability_diagram_figure(
            ev.reliability.confidence, ev.reliability.accuracy, ev.reliability.counts,
            ev.reliability.ece, bins=ECE_BINS, title=f"{title} reliability (test, n={n})"),
    }
    for name, fig in figures.items():
        mlflow.log_figure(fig, name)
        plt.close(fig)
    log_outcomes(ev.probabilities, ev.labels, class_names, images=images,
                 test_digest=test_digest, title=title)
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


def read_per_class_csv(text: str) -> pd.DataFrame:
    """Parse a logged per_class_metrics.csv into `per_class_frame`'s table (label order).
    Raises ValueError when a column is missing or the labels are not 0..n-1."""
    frame = pd.read_csv(io.StringIO(text), dtype={"class_name": str}, keep_default_na=False,
                        na_values={stat: ["", "NaN", "nan"] for stat in PER_CLASS_STATS})
    missing = [c for c in PER_CLASS_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{PER_CLASS_FILE} lacks the columns {', '.join(missing)}")
    frame = frame.sort_values("label", kind="stable").reset_index(drop=True)
    if frame["label"].tolist() != list(range(len(frame))):
        raise ValueError(f"{PER_CLASS_FILE}: labels are not 0..{len(frame) - 1}")
    return frame[list(PER_CLASS_COLUMNS)].astype(
        {"label": np.int64, "support": np.int64, **dict.fromkeys(PER_CLASS_STATS, np.float64)})


def read_per_class_metrics(run_id: str, metrics: Mapping[str, float] | None = None,
                           class_names: Sequence[str] = (),
                           prefix: str = "test") -> pd.DataFrame | None:
    """The per-class figures of run `run_id`, as `per_class_frame`'s table: its
    per_class_metrics.csv, else (a run from before the table) rebuilt from its per-class
    metric keys `<prefix>_<stat>_class_<index>` in `metrics` (the run's metrics), with
    `support` -1 (unknown) and the names from `class_names` (else the indices); None when it
    has neither. The one reader of per-class figures. Raises ValueError on a malformed table."""
    with tempfile.TemporaryDirectory() as scratch:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=PER_CLASS_FILE, dst_path=scratch)
            text = Path(path).read_text(encoding="utf-8")
        except (MlflowException, OSError):
            text = None
    if text is not None:
        return read_per_class_csv(text)
    found: dict[str, dict[int, float]] = {}
    for key, value in (metrics or {}).items():
        if not key.startswith(f"{prefix}_"):
            continue
        stat, marker, index = key.removeprefix(f"{prefix}_").rpartition("_class_")
        if marker and stat in PER_CLASS_STATS and index.isdigit():
            found.setdefault(stat, {})[int(index)] = float(value)
    if not found:
        return None
    classes = max(len(class_names), 1 + max(max(v) for v in found.values()))
    names = [str(class_names[k]) if k < len(class_names) else str(k) for k in range(classes)]
    return pd.DataFrame({
        "label": np.arange(classes, dtype=np.int64), "class_name": names,
        "support": np.full(classes, -1, dtype=np.int64),
        **{stat: np.array([found.get(stat, {}).get(k, np.nan) for k in range(classes)],
                          dtype=np.float64) for stat in PER_CLASS_STATS},
    }, columns=list(PER_CLASS_COLUMNS))
