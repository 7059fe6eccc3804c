"""Paired statistics between two models tested on the same test images.

    a = correctness(frames_of_model_a)            # (runs, images) bool, one test split
    b = correctness(frames_of_model_b)
    result = paired_difference(a, b)              # difference, 95% CI, p-value, test used
    corrected = holm([r.p_value for r in results])

The inputs are the runs' predictions tables (`tracking.evaluation.outcomes.read_predictions`), all
on one test split: same `test_digest`, same images in the same order, so image j of one run is
image j of every other. What is computed:

- McNemar's exact test (statsmodels `mcnemar(exact=True)`: the two-sided binomial test of
  the discordant pairs) when each model has a single run;
- with several runs (seeds), a paired bootstrap over seeds and images jointly: each replicate
  draws the test images with replacement (the same draw for both models: the pairing) and,
  independently, each model's runs with replacement, and takes the difference of the two
  mean accuracies; the 95% interval is the percentile interval of BOOTSTRAP_REPLICATES
  replicates (NumPy's seeded generator, so a report is reproducible) and the p-value its
  inversion, 2 x the smaller share of replicates on either side of zero (Davison & Hinkley
  1997, ch. 4; +1 in numerator and denominator so it is never 0). SciPy's
  `stats.bootstrap` resamples one level only; these two levels are written here;
- Holm's correction across every pair of a comparison (statsmodels `multipletests`);
- how many test images or seeds would separate a difference of the observed size at 5% with
  80% power: statsmodels' power of the paired t-test on the per-image differences (the normal
  approximation of McNemar's test) for images, and of Welch's two-sample t-test on the
  per-run accuracies for seeds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower

from tracking.errors import UsageError

ALPHA = 0.05  # significance level of every verdict (after Holm's correction)
POWER = 0.8  # for the sample sizes that would separate a difference
CONFIDENCE = 0.95  # of the bootstrap interval
BOOTSTRAP_REPLICATES = 10_000
BOOTSTRAP_SEED = 0  # the same figures every time the report is built
_CHUNK = 500  # replicates drawn at once (memory: chunk x images floats)
MAX_NEEDED = 10_000_000  # beyond this a sample size is reported as "more than"


class PairingError(UsageError):
    """Runs cannot be paired: their test splits differ (by digest) or their tables do."""


@dataclass
class PairedResult:
    """One model against another on one test split (difference = a - b, in accuracy)."""

    runs_a: int
    runs_b: int
    images: int
    difference: float  # mean test accuracy of a's runs minus b's, on this split
    ci_low: float
    ci_high: float
    p_value: float
    test: str  # "McNemar exact" or "paired bootstrap"
    discordant: tuple[int, int] | None = None  # McNemar: (a right b wrong, a wrong b right)
    images_needed: float | None = None  # test images that would separate this difference
    seeds_needed: float | None = None  # runs per model that would (None: unknown)


def correctness(frames: Sequence[pd.DataFrame]) -> np.ndarray:
    """(runs, images) bool: whether each run got each test image right.

    `frames` are predictions tables (columns `true_label`, `predicted_label`, `test_digest`,
    sorted by `index`) of one test split. Raises PairingError when their digests, sizes or
    true labels differ.
    """
    if not frames:
        raise PairingError("no predictions tables to pair")
    digests = {str(f["test_digest"].iloc[0]) if len(f) else "" for f in frames}
    if len(digests) != 1:
        raise PairingError(f"the runs were tested on different test splits "
                           f"({', '.join(sorted(digests))}): only runs on one split pair")
    truth = frames[0]["true_label"].to_numpy()
    for f in frames[1:]:
        if len(f) != len(truth) or not np.array_equal(f["true_label"].to_numpy(), truth):
            raise PairingError("the predictions tables of one test split disagree on the "
                               "images or their labels")
    return np.stack([f["predicted_label"].to_numpy() == truth for f in frames])


def mcnemar_test(a: np.ndarray, b: np.ndarray) -> tuple[float, tuple[int, int]]:
    """McNemar's exact test of two single runs' correctness (N,) on the same images:
    (two-sided p-value, (a right and b wrong, a wrong and b right))."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))],
             [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    return float(mcnemar(table, exact=True).pvalue), (table[0][1], table[1][0])


def bootstrap_difference(a: np.ndarray, b: np.ndarray, *,
                         replicates: int = BOOTSTRAP_REPLICATES, seed: int = BOOTSTRAP_SEED,
                         confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Paired bootstrap of mean accuracy(a) - mean accuracy(b) over runs and images jointly
    (module docstring). `a` (runs_a, N) and `b` (runs_b, N) are correctness matrices on the
    same N images. Returns (interval low, interval high, two-sided p-value)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    diffs = np.empty(replicates)
    for start in range(0, replicates, _CHUNK):
        k = min(_CHUNK, replicates - start)
        # per image, the mean correctness over each model's resampled runs: (k, N)
        per_image = (rng.multinomial(len(a), np.full(len(a), 1 / len(a)), size=k) @ a / len(a)
                     - rng.multinomial(len(b), np.full(len(b), 1 / len(b)), size=k) @ b / len(b))
        images = rng.integers(0, n, size=(k, n))  # one draw of images for both: the pairing
        diffs[start:start + k] = np.take_along_axis(per_image, images, axis=1).mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    side = min(np.count_nonzero(diffs <= 0), np.count_nonzero(diffs >= 0))
    return float(low), float(high), float(min(1.0, 2 * (side + 1) / (replicates + 1)))


def images_needed(a: np.ndarray, b: np.ndarray) -> float | None:
    """Test images that would separate the observed difference at ALPHA with POWER: the
    paired t-test's sample size (statsmodels TTestPower) for the per-image differences in
    correctness (each averaged over the runs). None when there is no difference."""
    d = np.asarray(a, float).mean(axis=0) - np.asarray(b, float).mean(axis=0)
    return _solve(TTestPower(), float(np.mean(d)), float(np.std(d, ddof=1)))


def seeds_needed(accuracies_a: Sequence[float], accuracies_b: Sequence[float]) -> float | None:
    """Runs per model that would separate the two mean accuracies at ALPHA with POWER:
    Welch/Student two-sample t-test's sample size (statsmodels TTestIndPower) with the pooled
    seed-to-seed standard deviation. None with fewer than 2 runs on a side or no spread."""
    if len(accuracies_a) < 2 or len(accuracies_b) < 2:
        return None
    pooled = math.sqrt((np.var(accuracies_a, ddof=1) + np.var(accuracies_b, ddof=1)) / 2)
    return _solve(TTestIndPower(), float(np.mean(accuracies_a) - np.mean(accuracies_b)),
                  pooled)


def _solve(power: TTestPower | TTestIndPower, difference: float, sd: float) -> float | None:
    if difference == 0 or not sd > 0:
        return None
    effect = abs(difference) / sd
    if effect < 1e-3:  # the solver's search would not end in a sensible range
        return float(MAX_NEEDED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a failed search is answered below
        n = float(np.squeeze(power.solve_power(effect_size=effect, alpha=ALPHA, power=POWER,
                                               alternative="two-sided")))
    if not math.isfinite(n):  # no root above the solver's lower bound: 2 samples suffice
        return 2.0 if power.power(effect, 2, ALPHA) >= POWER else None
    return min(max(n, 2.0), float(MAX_NEEDED))


def paired_difference(a: np.ndarray, b: np.ndarray, accuracies_a: Sequence[float] = (),
                      accuracies_b: Sequence[float] = ()) -> PairedResult:
    """Judge model a against model b on one test split from their correctness matrices
    (runs, N): McNemar's exact test when both have one run, else the paired bootstrap's
    p-value; the bootstrap interval either way. `accuracies_*` (each run's test accuracy)
    give the seeds needed; default: the rows' means."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    if a.shape[1] != b.shape[1]:
        raise PairingError(f"{a.shape[1]} and {b.shape[1]} test images: not the same split")
    low, high, p_boot = bootstrap_difference(a, b)
    accuracies_a = list(accuracies_a) or list(a.mean(axis=1))
    accuracies_b = list(accuracies_b) or list(b.mean(axis=1))
    result = PairedResult(runs_a=len(a), runs_b=len(b), images=a.shape[1],
                          difference=float(a.mean() - b.mean()), ci_low=low, ci_high=high,
                          p_value=p_boot, test="paired bootstrap",
                          images_needed=images_needed(a, b),
                          seeds_needed=seeds_needed(accuracies_a, accuracies_b))
    if len(a) == 1 and len(b) == 1:
        result.p_value, result.discordant = mcnemar_test(a[0], b[0])
        result.test = "McNemar exact"
    return result


def chance_p_value(correct: int, total: int, num_classes: int) -> float:
    """Whether `correct` right answers out of `total` beat guessing among `num_classes`
    classes: SciPy's exact one-sided binomial test against 1/num_classes."""
    return float(stats.binomtest(correct, total, 1 / num_classes, alternative="greater").pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down correction of `p_values` (statsmodels multipletests), in their order."""
    if not p_values:
        return []
    return [float(p) for p in multipletests(list(p_values), alpha=ALPHA, method="holm")[1]]
