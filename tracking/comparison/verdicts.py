"""Verdicts on a comparison: is a gap between two models larger than their seed-to-seed
spread, is every pair of models separated on the same test images (paired tests, Holm's
correction: `tracking.comparison.paired`), which models no other beats on both accuracy and a cost
(Pareto), which classes does each model get wrong, and which test images do all of them get
wrong. Statistics from SciPy and statsmodels."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from tracking.comparison.groups import ModelGroup, RunSummary
from tracking.comparison.paired import ALPHA, PairedResult, correctness, holm, paired_difference
from tracking.evaluation.outcomes import probabilities_of

TOP_CLASSES = 3  # classes named per model in the per-class view


def gap_verdict(better: ModelGroup, worse: ModelGroup) -> str:
    """One sentence: is the accuracy gap between two models larger than their spread?

    The rule: with several runs each, the gap must exceed the sum of the two standard
    deviations (one-sd bands that do not overlap) and Welch's t-test must give p < 0.05; a gap
    that passes only the first is reported as not yet significant.
    With a single run on either side there is no spread to compare against.
    """
    gap = better.mean - worse.mean
    head = f"**{better.label}** over **{worse.label}**: {pct(gap)} points"
    if better.n < 2 or worse.n < 2:
        singles = [g.label for g in (better, worse) if g.n < 2]
        return (f"{head}; {' and '.join(singles)} "
                f"{'has' if len(singles) == 1 else 'have'} a single run, so the seed-to-seed "
                "spread is unknown and this gap may be noise.")
    spread = (better.std or 0.0) + (worse.std or 0.0)
    p = _welch_p(better.accuracies, worse.accuracies)
    p_text = f", Welch's t-test p = {p:.2g}" if p is not None else ""
    if gap > spread and (p is None or p < 0.05):
        return (f"{head}, more than the spread (sd {pct(better.std)} + {pct(worse.std)} = "
                f"{pct(spread)}{p_text}): the gap holds across {better.n} and {worse.n} runs.")
    if gap > spread:
        return (f"{head}, more than the spread (sd {pct(better.std)} + {pct(worse.std)} = "
                f"{pct(spread)}) but not significant at 5%{p_text} with {better.n} and "
                f"{worse.n} runs: more seeds would settle it.")
    return (f"{head}, within the spread (sd {pct(better.std)} + {pct(worse.std)} = "
            f"{pct(spread)}{p_text}): these runs do not separate the two models.")


def _welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    if np.std(a) < 1e-12 and np.std(b) < 1e-12:
        return None
    with warnings.catch_warnings():  # identical accuracies (a common case) are not a problem
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def pct(value: float | None) -> str:
    """An accuracy difference in percentage points."""
    return "?" if value is None else f"{100 * value:.2f}"


# --------------------------------------------------------------------------- paired tests


@dataclass
class PairVerdict:
    """Model `a` against model `b` on the test split they share most runs on."""

    a: ModelGroup
    b: ModelGroup
    result: PairedResult | None  # None: no test split with predictions tables of both
    split: str = ""  # its digest
    p_holm: float | None = None  # the p-value after Holm's correction over the family

    @property
    def unpaired_reason(self) -> str:
        """Why there is no paired result, as it is: a side without predictions tables, or
        both with tables on different test splits."""
        missing = [g.label for g in (self.a, self.b)
                   if not any(r.predictions is not None for r in g.runs)]
        if missing:
            return (f"{' and '.join(missing)} logged no predictions table (an older run): "
                    "not paired")
        return "their test splits differ (other test images): not paired"

    @property
    def separated(self) -> bool:
        """Corrected p below ALPHA and an interval that leaves out zero."""
        r = self.result
        return (r is not None and self.p_holm is not None and self.p_holm < ALPHA
                and (r.ci_low > 0 or r.ci_high < 0))


def shared_split(a: ModelGroup, b: ModelGroup
                 ) -> tuple[str, list[RunSummary], list[RunSummary]] | None:
    """(digest, a's runs on it, b's runs on it) for the test split with the most runs of the
    smaller side (then of both), among the runs that logged predictions; None if none."""
    def on(group: ModelGroup, digest: str) -> list[RunSummary]:
        return [r for r in group.runs if r.predictions is not None and r.test_digest == digest]

    digests = ({r.test_digest for r in a.runs if r.predictions is not None}
               & {r.test_digest for r in b.runs if r.predictions is not None}) - {None}
    if not digests:
        return None
    best = max(sorted(digests), key=lambda d: (min(len(on(a, d)), len(on(b, d))),
                                               len(on(a, d)) + len(on(b, d))))
    return best, on(a, best), on(b, best)


def judge_pair(a: ModelGroup, b: ModelGroup) -> PairVerdict:
    """The paired test of a against b (tracking.comparison.paired), uncorrected."""
    found = shared_split(a, b)
    if found is None:
        return PairVerdict(a, b, None)
    digest, runs_a, runs_b = found
    result = paired_difference(correctness([r.predictions for r in runs_a]),
                               correctness([r.predictions for r in runs_b]),
                               [r.test_accuracy for r in runs_a],
                               [r.test_accuracy for r in runs_b])
    return PairVerdict(a, b, result, digest)


def corrected(verdicts: list[PairVerdict]) -> list[PairVerdict]:
    """`verdicts` with Holm's correction over those that have a p-value."""
    tested = [v for v in verdicts if v.result is not None]
    for v, p in zip(tested, holm([v.result.p_value for v in tested]), strict=True):
        v.p_holm = p
    return verdicts


def paired_verdicts(ranked: Sequence[ModelGroup]) -> list[PairVerdict]:
    """Every pair of `ranked` (better-ranked first), judged on the same test images, p-values
    corrected across all pairs (Holm)."""
    return corrected([judge_pair(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1:]])


def needed_text(verdict: PairVerdict) -> str:
    """What would separate a pair that is not: test images and runs per model."""
    r = verdict.result
    if r is None or r.difference == 0:
        return "no difference to separate"
    parts = []
    if r.images_needed is not None:
        parts.append(f"about {_count(r.images_needed)} test images (here {r.images})")
    if r.seeds_needed is not None:
        parts.append(f"about {_count(r.seeds_needed)} runs per model (here "
                     f"{r.runs_a} and {r.runs_b})")
    if not parts:
        return "the runs' spread is unknown"
    return " or ".join(parts) + " would separate a difference this size"


def _count(n: float) -> str:
    return f"{math.ceil(n):,}" if n < 1e6 else "more than a million"


# --------------------------------------------------------------------------- cost


def dominators(accuracy: Sequence[float], costs: Sequence[Sequence[float | None]]
               ) -> list[list[int]]:
    """For each model i, the models j that dominate it: at least as accurate and at most as
    costly on every cost both know (`costs[i]`, lower is better; None = not measured),
    strictly better on one. Two models with no known cost in common are not compared."""
    out: list[list[int]] = []
    for i in range(len(accuracy)):
        beaten_by = []
        for j in range(len(accuracy)):
            pairs = [(cj, ci) for cj, ci in zip(costs[j], costs[i], strict=True)
                     if cj is not None and ci is not None]
            if (j != i and pairs and accuracy[j] >= accuracy[i]
                    and all(cj <= ci for cj, ci in pairs)
                    and (accuracy[j] > accuracy[i] or any(cj < ci for cj, ci in pairs))):
                beaten_by.append(j)
        out.append(beaten_by)
    return out


# --------------------------------------------------------------------------- per class


def miss_rates(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, missed, missed share) per true class of a confusion matrix."""
    totals = cm.sum(axis=1)
    wrong = totals - np.diag(cm)
    return totals, wrong, wrong / np.maximum(totals, 1)


def most_missed(cm: np.ndarray, top: int = TOP_CLASSES) -> list[int]:
    """The classes with the highest share of their test images missed, at most `top`: ties
    go to the class with more misses (more evidence), then to the lower label."""
    _, wrong, rate = miss_rates(cm)
    order = np.lexsort((np.arange(len(rate)), -wrong, -rate))
    return [int(i) for i in order if wrong[i] > 0][:top]


def class_error_sentence(group: ModelGroup) -> str:
    """Which classes a model gets wrong most (by share missed; the count said), and what it
    takes them for, in plain words."""
    cm = group.confusion()
    names = group.runs[0].class_names
    if cm is None or len(names) != cm.shape[0]:
        return f"**{group.label}**: no confusion matrix was logged."
    over = f" (summed over {group.n} runs)" if group.n > 1 else ""
    totals, wrong, rate = miss_rates(cm)
    if wrong.sum() == 0:
        return f"**{group.label}** classified every test image correctly{over}."
    parts = []
    for i in most_missed(cm):
        row = cm[i].copy()
        row[i] = 0
        j = int(np.argmax(row))
        parts.append(f"`{names[i]}` ({int(wrong[i])} of {int(totals[i])} missed, "
                     f"{100 * rate[i]:.0f}%, mostly taken for `{names[j]}`: {int(row[j])})")
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return (f"**{group.label}** gets {listed} wrong most{over}; "
            f"{int(wrong.sum())} of {int(totals.sum())} test images wrong in all.")


def hardest_for_all(groups: Sequence[ModelGroup]) -> list[str]:
    """Classes among the most-missed (by share) of every model."""
    common: set[str] | None = None
    for g in groups:
        cm = g.confusion()
        if cm is None or len(g.runs[0].class_names) != cm.shape[0]:
            return []
        top = {g.runs[0].class_names[i] for i in most_missed(cm)}
        common = top if common is None else common & top
    return sorted(common or [])


# --------------------------------------------------------------------------- per image


@dataclass
class SharedMistakes:
    """Test images that every compared model gets wrong, on one test split they all used."""

    test_digest: str
    test_size: int
    runs: list[RunSummary]
    indices: list[int]  # most confidently wrong first (mean over the runs)
    true_labels: list[int]
    predicted: dict[str, list[int]]  # per model: its most frequent wrong label per image


def shared_mistakes(groups: Sequence[ModelGroup]) -> list[SharedMistakes]:
    """For each test split (by digest) that the runs of every model in `groups` share (one
    data set; a seed draws its own split), the images all of those runs get wrong. [] when
    fewer than two models or some model's runs logged no predictions table."""
    if len(groups) < 2 or any(r.predictions is None for g in groups for r in g.runs):
        return []
    by_split: dict[str, list[RunSummary]] = {}
    for g in groups:
        for r in g.runs:
            by_split.setdefault(r.test_digest or "", []).append(r)
    models = {g.model for g in groups}
    out = []
    for digest, runs in by_split.items():
        if {r.model for r in runs} != models:
            continue
        frames = [r.predictions for r in runs]
        wrong = np.logical_and.reduce(
            [f["predicted_label"].to_numpy() != f["true_label"].to_numpy() for f in frames])
        confidence = np.mean([probabilities_of(f).max(axis=1) for f in frames], axis=0)
        indices = np.flatnonzero(wrong)
        indices = indices[np.argsort(-confidence[indices], kind="stable")]
        predicted = {}
        for model in sorted(models, key=[g.model for g in groups].index):
            labels = np.stack([f["predicted_label"].to_numpy()[indices]
                               for f, r in zip(frames, runs, strict=True) if r.model == model])
            predicted[model] = [int(np.bincount(column).argmax()) for column in labels.T]
        out.append(SharedMistakes(digest, len(frames[0]), runs, [int(i) for i in indices],
                                  [int(frames[0]["true_label"].iloc[i]) for i in indices],
                                  predicted))
    return out
