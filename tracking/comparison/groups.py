"""What a comparison compares: one training run read back (`RunSummary`), the runs of one
model on one data set (`ModelGroup`, one per seed; in a fair study one for the model at its
recipe and one for it tuned), a model's inference latency and a tuning study's parent run."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
    # its per-class figures, one row per class in label order (columns: PER_CLASS_COLUMNS of
    # tracking.evaluation.evaluate, read by its read_per_class_metrics); None: it has none
    per_class: pd.DataFrame | None = None
    mistake_images: dict[int, np.ndarray] = field(default_factory=dict)  # test index -> image
    variant: str = ""  # its VARIANT_TAG: RECIPE or TUNED in a fair study, else ""
    best_val_accuracy: float | None = None  # validation accuracy of its restored epoch
    # what makes runs comparable (`assign_sections`, `budget_of`); `dataset` becomes the
    # label of the run's data identity
    data_source: str = ""  # the data_source param: a folder's path, or where files came from
    data_digest: str = ""  # the data_digest param: a folder's files and labels ("" if none)
    image_size: int | None = None
    limit: int = 0  # --limit: a subset of the images (a smoke run)
    epochs_bound: int | None = None  # the epochs it was allowed (effective_epochs)
    recipe_epochs: int | None = None  # its model's recipe's (registry)
    setting: str = ""  # how its settings depart from the recipe: `30 epochs, batch 128`
    epochs_set: bool = False  # its epochs are part of its own setting, not a cut budget


    @property
    def budget(self) -> str:
        """"" for a run at its full budget, else what cut it: `limit 200`, `2 epochs` (an
        epochs bound below its recipe's; the same words for every model, so runs all cut to
        one bound compare). A fair study's runs (`variant`) are never cut by epochs: a tuned
        run's epochs are a tuned setting (up to its study's max epochs), not a smaller
        budget, and the recipe runs set beside it are its references; nor is a run whose
        fewer epochs come with its own learning rate (`epochs_set`: a tuned
        setting trained by hand)."""
        parts = [f"limit {self.limit}"] if self.limit else []
        if (self.epochs_bound and self.recipe_epochs and self.epochs_bound < self.recipe_epochs
                and not self.variant and not self.epochs_set):
            parts.append(f"{self.epochs_bound} epochs")
        return ", ".join(parts)

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
    def budget(self) -> str:
        """Its runs' budget (`RunSummary.budget`: one per group)."""
        return self.runs[0].budget if self.runs else ""

    @property
    def test_digests(self) -> frozenset[str]:
        """The test splits its runs' predictions tables are about (runs without one: none)."""
        return frozenset(d for d in (r.test_digest for r in self.runs) if d)

    @property
    def label(self) -> str:
        """How the report names the group: the model, with its variant in a fair study or its
        own setting where it departs from the recipe (`(30 epochs)`), and its budget when cut
        (`[limit 200]`)."""
        detail = self.variant or (self.runs[0].setting if self.runs else "")
        name = f"{self.model} ({detail})" if detail else self.model
        return f"{name} [{self.budget}]" if self.budget else name

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

    def per_class(self, stat: str) -> np.ndarray | None:
        """(classes,) float64: per-class `stat` (a column of `RunSummary.per_class`, e.g. `f1`)
        averaged over the runs, NaN where no run has it; None where a run lacks its per-class
        table or the runs' class counts differ."""
        tables = [r.per_class for r in self.runs]
        if not tables or any(t is None for t in tables) or len({len(t) for t in tables}) != 1:
            return None
        values = np.stack([t[stat].to_numpy(dtype=np.float64) for t in tables])
        present = np.isfinite(values).any(axis=0)
        mean = np.full(values.shape[1], np.nan)
        mean[present] = np.nanmean(values[:, present], axis=0)
        return mean

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


OWN_DATA = ("folder", "arrays")  # the user's own data sets (folders, tracking.api's arrays)


def data_identity(s: RunSummary) -> tuple[str, str, str, tuple[str, ...], int | None]:
    """What a run's test accuracy is about: (data set, source, digest, class names, image
    size). The source (the `data_source` param) counts for the user's own data (`OWN_DATA`:
    two folders are two data sets, whatever their class names), and so does the digest of
    the files and labels (`data_digest`, logged by runs on folder data) wherever a run
    logged one: a folder whose files changed between two runs is two data sets too. A
    built-in data set is its name (Fashion-MNIST read from two places is one data set)."""
    source = s.data_source if s.dataset in OWN_DATA or s.data_digest else ""
    return s.dataset, source, s.data_digest, tuple(s.class_names), s.image_size


def pool_image_sizes(summaries: Sequence[RunSummary]) -> None:
    """Compare one data set's runs across image sizes (`tracking.compare
    --across-image-sizes`, e.g. ResNet-50 at 32 and at 64 px): the size leaves the data
    identity and joins each run's setting (`resnet50 (64px)`), and the runs pair image by
    image when they were scored on the same source test images: their predictions tables'
    `test_digest` (a digest of the resized images, so it differs between sizes) is replaced
    by a digest of the true labels in test order, which the same split of the same data set
    (same --split-seed, --limit, --full-test) gives at every size. Mutates the summaries."""
    for s in summaries:
        if s.image_size:
            s.setting = ", ".join(filter(None, [s.setting, f"{s.image_size}px"]))
        s.image_size = None
        if s.predictions is not None and len(s.predictions):
            labels = np.ascontiguousarray(s.predictions["true_label"].to_numpy(np.int64))
            digest = hashlib.md5(labels.tobytes(), usedforsecurity=False).hexdigest()[:8]
            s.predictions = s.predictions.assign(test_digest=f"labels-{digest}")


def assign_sections(summaries: Sequence[RunSummary]) -> None:
    """Set each summary's `dataset` to the label of its data identity (`data_identity`): the
    data set's name, and where two identities share it, what tells them apart (the folder's
    name, the image size, the class count; the first 8 digits of the data digest where that
    is still not enough), made safe for a file name. Runs of different identities are never
    grouped, ranked or drawn together."""
    identities = {id(s): data_identity(s) for s in summaries}
    by_name: dict[str, set] = {}
    for ident in identities.values():
        by_name.setdefault(ident[0], set()).add(ident)
    labels: dict[tuple, str] = {}
    for name, idents in by_name.items():
        plain: dict[tuple, str] = {}
        for ident in sorted(idents, key=repr):
            _, source, _, classes, size = ident
            parts = [name]
            if len(idents) > 1:
                if len({i[1] for i in idents}) > 1 and source:
                    parts.append(Path(source).name or source)
                if len({i[4] for i in idents}) > 1 and size:
                    parts.append(f"{size}px")
                if len({i[3] for i in idents}) > 1:
                    parts.append(f"{len(classes)}classes")
            plain[ident] = re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))
        for ident, label in plain.items():
            if ident[2] and list(plain.values()).count(label) > 1:  # same folder name, other files
                label += f"-{ident[2][:8]}"
            while label in labels.values():
                label += "-2"
            labels[ident] = label
    for s in summaries:
        s.dataset = labels[identities[id(s)]]


def group_runs(summaries: Sequence[RunSummary]) -> list[ModelGroup]:
    """One group per (data identity, model, variant or setting, budget): runs pooled over
    seeds only with runs of the same settings; best mean test accuracy first
    within a data identity (`assign_sections` labels them)."""
    assign_sections(summaries)
    groups: dict[tuple[str, str, str, str], list[RunSummary]] = {}
    for s in summaries:
        groups.setdefault((s.dataset, s.model, s.variant, s.budget, s.setting), []).append(s)
    out = [ModelGroup(d, m, sorted(runs, key=lambda r: (r.seed, r.run_id)), variant=v)
           for (d, m, v, _, _), runs in groups.items()]
    return sorted(out, key=lambda g: (g.dataset, -g.mean, g.model, g.variant, g.budget))


def left_out(groups: Sequence[ModelGroup], dataset: str, include_smoke: bool = False
             ) -> list[tuple[ModelGroup, str]]:
    """The groups of `dataset` kept out of its ranking, each with why in a few words:
    a smaller budget than the ranked runs' (`smoke run: limit 200`, `smoke run: 2 epochs`,
    unless `include_smoke`), or a test split none of the ranked runs was scored on (`other
    test split`: no image-by-image comparison, and a different test set)."""
    here = [g for g in groups if g.dataset == dataset]
    budgets = [g.budget for g in here]

    def size(budget: str) -> tuple[int, float, int]:  # most groups, then the larger budget
        run = next(g.runs[0] for g in here if g.budget == budget)
        # limit 0 is every image: the largest, not the smallest, limit
        return budgets.count(budget), run.limit or math.inf, run.epochs_bound or 0

    reference = "" if "" in budgets else max(sorted(set(budgets)), key=size)
    out = [] if include_smoke else [(g, f"smoke run: {g.budget}, the ranked runs' "
                                        f"{reference or 'full budget'}")
                                    for g in here if g.budget != reference]
    kept = [g for g in here if all(g is not o for o, _ in out)]
    splits = [g.test_digests for g in kept if g.test_digests]
    if splits:
        common = max(splits, key=lambda d: sum(bool(d & other) for other in splits))
        out += [(g, "other test split: scored on other test images than the ranked runs")
                for g in kept if g.test_digests and not g.test_digests & common]
    return out


def ranked_and_recipes(groups: Sequence[ModelGroup], dataset: str, include_smoke: bool = False
                       ) -> tuple[list[ModelGroup], list[ModelGroup]]:
    """(the groups of `dataset` ranked against each other, the recipe groups set beside
    them), without those `left_out` keeps out: where a fair study tuned models, the tuned
    groups are ranked and the recipe groups are their references; otherwise every group is
    ranked and there are no references."""
    out = [g for g, _ in left_out(groups, dataset, include_smoke)]
    here = [g for g in groups if g.dataset == dataset and all(g is not o for o in out)]
    if not any(g.variant == TUNED for g in here):
        return here, []
    return ([g for g in here if g.variant == TUNED], [g for g in here if g.variant != TUNED])
