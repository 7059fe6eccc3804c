"""What a comparison compares: one training run read back (`RunSummary`), the runs of one
model on one data set (`ModelGroup`, one per seed; in a fair study one for the model at its
recipe and one for it tuned), a model's inference latency and a tuning study's parent run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

TUNED_METRIC = "tuned_test_accuracy"  # a tuning study's parent run logs it
VARIANT_TAG = "study_variant"  # on a fair study's final runs: RECIPE or TUNED
RECIPE, TUNED = "recipe", "tuned"

# the calibration and ranking metrics a comparison shows side by side, with their headings
QUALITY_METRICS = {
    "test_roc_auc_macro": "ROC AUC (macro)",
    "test_average_precision_macro": "Average precision (macro)",
    "test_top_2_accuracy": "Top-2 accuracy",
    "test_top_5_accuracy": "Top-5 accuracy",
    "test_ece": "ECE",
    "test_brier_score": "Brier score",
}


@dataclass
class RunSummary:
    """What the report needs of one training run."""

    run_id: str
    experiment_id: str
    run_name: str
    model: str
    dataset: str
    seed: str
    test_accuracy: float
    f1_macro: float | None
    best_epoch: int | None
    epochs_run: int | None
    train_seconds: float | None
    images_per_second: float | None
    num_params: int | None
    class_names: list[str]
    confusion: np.ndarray | None
    curves: dict[str, list[float]] = field(default_factory=dict)
    quality: dict[str, float] = field(default_factory=dict)  # QUALITY_METRICS it logged
    predictions: pd.DataFrame | None = None  # its predictions table (tracking.evaluation.outcomes)
    mistake_images: dict[int, np.ndarray] = field(default_factory=dict)  # test index -> image
    variant: str = ""  # its VARIANT_TAG: RECIPE or TUNED in a fair study, else ""
    best_val_accuracy: float | None = None  # validation accuracy of its restored epoch

    @property
    def test_digest(self) -> str | None:
        """The digest of the test split its predictions table is about."""
        if self.predictions is None or not len(self.predictions):
            return None
        return str(self.predictions["test_digest"].iloc[0])


@dataclass
class Latency:
    """Inference cost of one model, measured in the report's process
    (tracking.comparison.latency)."""

    ms_per_image: float  # batch of 1: median wall milliseconds per call
    images_per_second: float  # at `batch` images per call
    batch: int
    device: str  # where it was measured (the backend's device, the CPU or GPU model)


@dataclass
class ModelGroup:
    """The runs of one model on one data set (one per seed, or a single run); in a fair study
    the model at its recipe and the model tuned are two groups (`variant`)."""

    dataset: str
    model: str
    runs: list[RunSummary]
    variant: str = ""  # the runs' VARIANT_TAG
    latency: Latency | None = None  # measured by the report, when the runs logged a model

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def label(self) -> str:
        """How the report names the group: the model, with its variant in a fair study."""
        return f"{self.model} ({self.variant})" if self.variant else self.model

    @property
    def accuracies(self) -> list[float]:
        return [r.test_accuracy for r in self.runs]

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float | None:
        """Sample standard deviation of the test accuracy; None for a single run."""
        return float(np.std(self.accuracies, ddof=1)) if self.n > 1 else None

    def mean_of(self, attribute: str) -> float | None:
        values = [getattr(r, attribute) for r in self.runs if getattr(r, attribute) is not None]
        return float(np.mean(values)) if values else None

    def quality_values(self, metric: str) -> list[float]:
        """The runs' values of one of QUALITY_METRICS (those that logged it)."""
        return [r.quality[metric] for r in self.runs if metric in r.quality]

    def confusion(self) -> np.ndarray | None:
        """Counts summed over the runs (None if a run lacks its matrix or the classes differ)."""
        mats = [r.confusion for r in self.runs]
        if any(m is None for m in mats) or len({m.shape for m in mats}) != 1:
            return None
        return np.sum(mats, axis=0)


@dataclass
class TuningSummary:
    """A tuning study's parent run: the tuned model against the original setting."""

    run_id: str
    experiment_id: str
    model: str
    dataset: str
    study_name: str
    params: dict[str, str]
    metrics: dict[str, float]


def group_runs(summaries: Sequence[RunSummary]) -> list[ModelGroup]:
    """One group per (data set, model, variant), best mean test accuracy first within a data
    set."""
    groups: dict[tuple[str, str, str], list[RunSummary]] = {}
    for s in summaries:
        groups.setdefault((s.dataset, s.model, s.variant), []).append(s)
    out = [ModelGroup(d, m, sorted(runs, key=lambda r: (r.seed, r.run_id)), variant=v)
           for (d, m, v), runs in groups.items()]
    return sorted(out, key=lambda g: (g.dataset, -g.mean, g.model, g.variant))


def ranked_and_recipes(groups: Sequence[ModelGroup], dataset: str
                       ) -> tuple[list[ModelGroup], list[ModelGroup]]:
    """(the groups of `dataset` ranked against each other, the recipe groups set beside
    them): where a fair study tuned models, the tuned groups are ranked and the recipe groups
    are their references; otherwise every group is ranked and there are no references."""
    here = [g for g in groups if g.dataset == dataset]
    if not any(g.variant == TUNED for g in here):
        return here, []
    return ([g for g in here if g.variant == TUNED], [g for g in here if g.variant != TUNED])
