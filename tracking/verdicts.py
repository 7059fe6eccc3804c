"""Verdicts on a comparison: is a gap between two models larger than their seed-to-seed
spread, and which classes does each model get wrong. Statistics from SciPy."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

from tracking.groups import ModelGroup

TOP_CLASSES = 3  # classes named per model in the per-class view


def gap_verdict(better: ModelGroup, worse: ModelGroup) -> str:
    """One sentence: is the accuracy gap between two models larger than their spread?

    The rule: with several runs each, the gap must exceed the sum of the two standard
    deviations (one-sd bands that do not overlap) and Welch's t-test must give p < 0.05; a gap
    that passes only the first is reported as not yet significant.
    With a single run on either side there is no spread to compare against.
    """
    gap = better.mean - worse.mean
    head = f"**{better.model}** over **{worse.model}**: {pct(gap)} points"
    if better.n < 2 or worse.n < 2:
        singles = [g.model for g in (better, worse) if g.n < 2]
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


# --------------------------------------------------------------------------- per class


def class_error_sentence(group: ModelGroup) -> str:
    """Which classes a model gets wrong most, and what it takes them for, in plain words."""
    cm = group.confusion()
    names = group.runs[0].class_names
    if cm is None or len(names) != cm.shape[0]:
        return f"**{group.model}**: no confusion matrix was logged."
    over = f" (summed over {group.n} runs)" if group.n > 1 else ""
    totals = cm.sum(axis=1)
    wrong = totals - np.diag(cm)
    if wrong.sum() == 0:
        return f"**{group.model}** classified every test image correctly{over}."
    order = [i for i in np.argsort(-wrong, kind="stable") if wrong[i] > 0][:TOP_CLASSES]
    parts = []
    for i in order:
        row = cm[i].copy()
        row[i] = 0
        j = int(np.argmax(row))
        parts.append(f"`{names[i]}` ({int(wrong[i])} of {int(totals[i])} missed, "
                     f"{100 * wrong[i] / max(totals[i], 1):.0f}%, mostly taken for "
                     f"`{names[j]}`: {int(row[j])})")
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return (f"**{group.model}** gets {listed} wrong most{over}; "
            f"{int(wrong.sum())} of {int(totals.sum())} test images wrong in all.")


def hardest_for_all(groups: Sequence[ModelGroup]) -> list[str]:
    """Classes among the most-missed of every model."""
    common: set[str] | None = None
    for g in groups:
        cm = g.confusion()
        if cm is None:
            return []
        if len(g.runs[0].class_names) != cm.shape[0]:
            return []
        wrong = cm.sum(axis=1) - np.diag(cm)
        top = {g.runs[0].class_names[i] for i in np.argsort(-wrong, kind="stable")[:TOP_CLASSES]
               if wrong[i] > 0}
        common = top if common is None else common & top
    return sorted(common or [])
