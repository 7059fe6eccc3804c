"""Paired statistics on constructed prediction tables, against values computed by hand."""

from __future__ import annotations

from math import comb

import numpy as np
import pandas as pd
import pytest

from tracking.comparison.groups import ModelGroup, RunSummary
from tracking.comparison.paired import (
    BOOTSTRAP_REPLICATES,
    PairingError,
    bootstrap_difference,
    correctness,
    holm,
    images_needed,
    mcnemar_test,
    seeds_needed,
)
from tracking.comparison.verdicts import dominators, judge_pair, needed_text, paired_verdicts
from tracking.evaluation.outcomes import predictions_frame

N = 100  # test images of the constructed split
LABELS = np.arange(N) % 10


def frame(wrong: list[int] | range, digest: str = "split-a") -> pd.DataFrame:
    """A predictions table of the constructed split, wrong exactly on the images `wrong`."""
    predicted = LABELS.copy()
    predicted[list(wrong)] = (LABELS[list(wrong)] + 1) % 10
    probs = np.full((N, 10), 0.01)
    probs[np.arange(N), predicted] = 0.91
    return predictions_frame(probs, LABELS, digest)


def group(model: str, frames: list[pd.DataFrame]) -> ModelGroup:
    runs = [RunSummary(run_id=f"{model}{i}", experiment_id="0", run_name="", model=model,
                       dataset="digits", seed=str(i),
                       test_accuracy=float(np.mean(f["predicted_label"] == f["true_label"])),
                       f1_macro=None, best_epoch=None, epochs_run=None, train_seconds=None,
                       images_per_second=None, num_params=None, class_names=[],
                       confusion=None, predictions=f) for i, f in enumerate(frames)]
    return ModelGroup("digits", model, runs)


def test_mcnemar_exact_on_a_known_discordant_count() -> None:
    """a misses images 10 and 11, b misses 0-9: 10 discordant pairs for a, 2 for b."""
    a, b = group("a", [frame([10, 11])]), group("b", [frame(range(10))])
    verdict = judge_pair(a, b)
    r = verdict.result
    assert r.test == "McNemar exact" and r.discordant == (10, 2)
    # two-sided exact binomial test: 2 P(X <= 2), X ~ Binomial(12, 1/2)
    assert r.p_value == pytest.approx(2 * sum(comb(12, k) for k in range(3)) / 2**12)
    assert r.p_value == pytest.approx(158 / 4096)
    assert r.difference == pytest.approx(0.08) and (r.runs_a, r.runs_b, r.images) == (1, 1, N)
    p, counts = mcnemar_test(correctness([frame([10, 11])])[0],
                             correctness([frame(range(10))])[0])
    assert counts == (10, 2) and p == pytest.approx(158 / 4096)


def test_bootstrap_over_images_matches_the_hand_computed_spread() -> None:
    # 10 images only a gets right, 2 only b: per-image differences d with mean 0.08 and
    # variance 0.12 - 0.08**2; the bootstrap interval is about 0.08 +- 1.96 sd(d) / sqrt(N)
    a, b = correctness([frame([10, 11])]), correctness([frame(range(10))])
    low, high, _ = bootstrap_difference(a, b)
    half = 1.96 * np.sqrt((0.12 - 0.08**2) / N)
    assert low == pytest.approx(0.08 - half, abs=0.011)
    assert high == pytest.approx(0.08 + half, abs=0.011)


def test_bootstrap_p_value_is_the_share_of_replicates_without_a_discordant_image() -> None:
    # every discordant image favours a (5 of 100): a replicate is <= 0 exactly when it draws
    # none of them, probability 0.95**100; the p-value is twice that share
    a, b = correctness([frame([])]), correctness([frame(range(5))])
    low, high, p = bootstrap_difference(a, b)
    assert p == pytest.approx(2 * 0.95**N, abs=0.004)
    assert low >= 0 and high == pytest.approx(0.10, abs=0.011)
    same = correctness([frame(range(5))])
    assert bootstrap_difference(same, same) == (0.0, 0.0, 1.0)


def test_bootstrap_resamples_the_runs_too() -> None:
    """a's two runs: one right on every image, one wrong on every image; b always right.
    Resampling a's runs gives a mean correctness of 1, 1/2 or 0 (probabilities 1/4, 1/2,
    1/4) on every image, whatever images are drawn: differences 0, -1/2, -1."""
    a = correctness([frame([]), frame(range(N))])
    b = correctness([frame([])])
    low, high, p = bootstrap_difference(a, b)
    assert (low, high) == (-1.0, 0.0)
    share_at_zero = 1 / 4
    assert p == pytest.approx(2 * share_at_zero, abs=0.03)


def test_runs_on_other_splits_are_not_paired() -> None:
    with pytest.raises(PairingError, match="different test splits"):
        correctness([frame([]), frame([], digest="split-b")])
    a = group("a", [frame([], digest="split-a")])
    b = group("b", [frame([], digest="split-b")])
    assert judge_pair(a, b).result is None
    # the split both have most runs on is the one paired
    c = group("c", [frame([], "split-a"), frame(range(3), "split-b"), frame(range(5), "split-b")])
    d = group("d", [frame(range(4), "split-b"), frame(range(6), "split-b")])
    verdict = judge_pair(c, d)
    assert verdict.split == "split-b" and verdict.result.runs_a == 2
    assert verdict.result.test == "paired bootstrap"


def test_holm_orders_and_corrects_every_pair() -> None:
    # sorted: 0.005 x 4, 0.01 x 3, 0.03 x 2, 0.04 x 1, each at least the one before
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == []
    groups = [group("a", [frame([])]), group("b", [frame(range(8))]),
              group("c", [frame(range(30))])]
    verdicts = paired_verdicts(groups)
    assert [(v.a.model, v.b.model) for v in verdicts] == [("a", "b"), ("a", "c"), ("b", "c")]
    raw = [v.result.p_value for v in verdicts]
    assert [v.p_holm for v in verdicts] == pytest.approx(holm(raw))
    # McNemar: a-c 30 discordant images, all a's (p = 2 / 2**30), smallest: times 3; b-c 22
    # (2 / 2**22), times 2; a-b 8 (2 / 2**8), the largest: times 1
    assert verdicts[1].p_holm == pytest.approx(3 * 2 / 2**30)
    assert verdicts[2].p_holm == pytest.approx(2 * 2 / 2**22)
    assert verdicts[0].p_holm == pytest.approx(2 / 2**8)
    assert verdicts[1].separated and verdicts[0].separated


def test_sample_sizes_that_would_separate_a_difference() -> None:
    # effect size 0.2: the normal approximation gives ((1.96 + 0.8416) / 0.2)**2 = 196.2
    # images; the t-test's answer is a little larger
    rng = np.random.default_rng(0)
    d = np.zeros(1000)
    d[:600] = 1
    d[600:] = -1
    d = d[rng.permutation(1000)]  # mean 0.2, sd ~0.98: effect ~0.204
    a = np.stack([d > 0])
    b = np.stack([d < 0])
    n = images_needed(a, b)
    effect = 0.2 / np.std(d, ddof=1)
    assert ((1.959964 + 0.841621) / effect) ** 2 < n < ((1.959964 + 0.841621) / effect) ** 2 + 3
    assert images_needed(a, a) is None
    # seeds: a difference of one pooled sd needs about 17 runs per model (two-sample t-test)
    assert seeds_needed([0.90, 0.91, 0.92], [0.89, 0.90, 0.91]) == pytest.approx(16.7, abs=0.1)
    assert seeds_needed([0.9], [0.8, 0.81]) is None
    verdict = judge_pair(group("a", [frame(range(2))]), group("b", [frame(range(4))]))
    assert not verdict.separated
    assert "test images (here 100) would separate" in needed_text(verdict)


def test_dominated_models_are_marked_per_cost_and_jointly() -> None:
    accuracy = [0.99, 0.98, 0.97, 0.99]
    costs = [[10, 5], [5, 5], [20, 1], [10, None]]
    # jointly: on the costs both know (model 3's second is unknown)
    assert dominators(accuracy, costs) == [[], [], [3], []]
    assert dominators(accuracy, [[c[0]] for c in costs]) == [[], [], [0, 1, 3], []]
    assert dominators(accuracy, [[c[1]] for c in costs]) == [[], [0], [], []]
    assert dominators([0.9, 0.8], [[None], [1]]) == [[], []]  # nothing known in common
    assert dominators([0.9, 0.9], [[1], [1]]) == [[], []]  # a tie dominates nobody
    assert BOOTSTRAP_REPLICATES >= 1000
