"""Which images go where: a stratified, seeded subset (`--limit`), the stratified, seeded
training / validation / test split, and the check, before any image is read, that every class
has enough images to appear in every split (else SplitError, exit status 2, naming the
classes, their counts, the minimum and what to change).

    splits = Splits(test_split=0.2, val_split=0.2, own_test=False)
    splits.min_class_size                     # 7: the smallest share (16 %) must hold one
    keep = kept_rows(y, limit, seed, splits, class_names, folder=True)
    train, val, test = splits.split(y[keep], seed)   # row numbers into y[keep]

A data set that gives its own test split (Fashion-MNIST, a folder's test/) or validation split
(a folder's val/) has only the others carved: `own_test`, `own_val`, and `split` returns None
for a given one.

The splits are scikit-learn's `train_test_split` (stratified); a subset too close to the
whole for it uses `sklearn.utils.resample`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils import resample

from tracking.errors import UsageError


class SplitError(UsageError):
    """The images cannot be split so that every class is in every split."""


@dataclass(frozen=True)
class Splits:
    """The shares of the three splits, and what every class needs to appear in each."""

    test_split: float
    val_split: float
    own_test: bool  # the data set brings its test part: the test split is not carved
    own_val: bool = False  # the data set brings its validation part: not carved either

    @property
    def shares(self) -> dict[str, float]:
        """The share of the images (those the splits are carved from) each carved split
        and training get, in the order training, validation, test."""
        rest = 1.0 if self.own_test else 1.0 - self.test_split
        shares = {"training": rest if self.own_val else rest * (1 - self.val_split)}
        if not self.own_val:
            shares["validation"] = rest * self.val_split
        if not self.own_test:
            shares["test"] = self.test_split
        return shares

    @property
    def carved(self) -> list[tuple[str, float]]:
        """The flags of the splits carved here, with their values: `[("--test-split", 0.2),
        ("--val-split", 0.2)]` when the data set gives neither."""
        return ([] if self.own_test else [("--test-split", self.test_split)]) + \
            ([] if self.own_val else [("--val-split", self.val_split)])

    @property
    def min_class_size(self) -> int:
        """Images a class needs so that its smallest share is at least one image."""
        return math.ceil(1 / min(self.shares.values()) - 1e-9)

    def check(self, counts: np.ndarray, names: Sequence[str], folder: bool,
              fix: str = "") -> None:
        """Raise SplitError, naming the classes and what to change, when a class has fewer
        than `min_class_size` images. `counts`: images per class; `fix`: what else would
        help (raising --limit, say)."""
        small = [i for i in np.argsort(counts, kind="stable") if counts[i] < self.min_class_size]
        if not small:
            return
        noun = {(True, False): "class folder", (True, True): "class folders",
                (False, False): "class", (False, True): "classes"}[folder, len(small) > 1]
        listed = ", ".join(f"{names[i]} ({counts[i]})" for i in small[:8])
        more = f" and {len(small) - 8} more" if len(small) > 8 else ""
        flags = " ".join(f"{flag} {value:g}" for flag, value in self.carved) or "its own splits"
        them = "them" if len(small) > 1 else "it"
        fix = fix or (f"add images to {them} or remove {them}" if folder else "use more images")
        change = "/".join(flag for flag, _ in self.carved)
        parts = list(self.shares)
        where = f"{', '.join(parts[:-1])} and {parts[-1]}" if len(parts) > 1 else parts[0]
        raise SplitError(
            f"too few images to put every class in {where}: "
            f"{noun} {listed}{more}; with {flags} each class "
            f"needs at least {self.min_class_size} images (its smallest share, "
            f"{min(self.shares.values()):.0%}, must hold one): {fix}"
            + (f", or change {change}" if change else ""))

    def split(self, y: np.ndarray, seed: int
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Row numbers (int64) into `y` of training, validation and test (None for a split
        the data set gives), each stratified by `y` and seeded; SplitError when a split
        misses a class."""
        rows, val, test = np.arange(len(y)), None, None
        try:
            if not self.own_test:
                rows, test = train_test_split(rows, test_size=self.test_split, stratify=y,
                                              random_state=seed)
            if not self.own_val:
                rows, val = train_test_split(rows, test_size=self.val_split, stratify=y[rows],
                                             random_state=seed)
        except ValueError as err:  # rounding on tiny data sets: the shares above are not enough
            raise SplitError(f"cannot split {len(y)} images so that every class is in every "
                             f"split ({err}): use more images per class") from None
        train = rows
        carved = [part for part in (train, val, test) if part is not None]
        for part, part_rows in zip(self.shares, carved, strict=True):
            missing = np.setdiff1d(np.unique(y), y[part_rows])
            if missing.size:
                raise SplitError(f"the {part} split has no image of classes "
                                 f"{missing.tolist()}: use more images per class")
        return train, val, test


def kept_rows(y: np.ndarray, limit: int | None, seed: int, splits: Splits,
              names: tuple[str, ...], folder: bool) -> np.ndarray:
    """Row numbers of a stratified, seeded subset of at most `limit` images (all rows when
    there is no limit), checked to leave every class enough images for every split."""
    if not limit or limit >= len(y):
        return np.arange(len(y))
    counts = np.bincount(y, minlength=len(names))
    rows = stratified_subset(y, limit, seed)
    # a stratified subset of n keeps at least (count * n) // len(y) of a class
    needed = math.ceil(splits.min_class_size * len(y) / counts.min())
    splits.check(np.bincount(y[rows], minlength=len(names)), names, folder,
                 fix=f"raise --limit {limit} to at least {needed}")
    return rows


def stratified_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Row numbers (int64) of a stratified, seeded subset of `n` of the labels `y` (N,), all
    rows when n >= N: what `--limit` keeps, and the part of a given validation or test split
    of folder data it keeps."""
    if n >= len(y):
        return np.arange(len(y))
    if min(n, len(y) - n) >= len(np.unique(y)):
        return np.asarray(train_test_split(np.arange(len(y)), train_size=n, stratify=y,
                                           random_state=seed)[0], np.int64)
    # train_test_split needs a row of every class on both sides; resample does not
    return np.asarray(resample(np.arange(len(y)), replace=False, n_samples=n, stratify=y,
                               random_state=seed), np.int64)
