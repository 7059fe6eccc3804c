"""Data sets as uint8 image arrays with stratified, seeded splits.

    from tracking.data.dataset import load_dataset
    data = load_dataset("digits", image_size=32, seed=0)
    data.x_train.shape  # (N, 32, 32, 3), uint8

Images are resized once, here, and stay uint8 until they reach the model (which scales
them on the accelerator). Adding a data set is one loader and one line in `LOADERS`.
A folder data set (class folders, split folders or a manifest: `tracking.data.layouts`) is
listed, subsampled (`limit`) by its file list, and read through the on-disk cache of
`tracking.data.image_cache` (each file by `tracking.data.images.read_image`), every split's
files in one cache entry; splits too large for memory stay memory-mapped files. A split the
data set gives (Fashion-MNIST's test images, a folder's val/ or test/) is kept as that split;
only the others are carved (`tracking.data.splits.Splits`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from tracking.data.image_cache import CachedImages, available_memory, cached_images, take
from tracking.data.images import LeftOut, to_rgb_size
from tracking.data.loaders import LOADERS, DataError, ImageFiles, RawData
from tracking.data.splits import Splits, kept_rows, stratified_subset

DIGEST_ROWS = 1024  # images hashed into a split's digest (plus its shape and every label)


@dataclass(frozen=True)
class Dataset:
    """Train / validation / test splits of uint8 (N, S, S, 3) images with integer labels.

    The image arrays are np.ndarray, or for folder data too large for memory np.memmap files
    (read a batch at a time by `tracking.data.batches`)."""

    name: str
    class_names: tuple[str, ...]
    source: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    skipped: tuple[str, ...] = ()
    left_out: tuple[LeftOut, ...] = ()  # folder data: every file not read, and why
    layout: str = ""  # folder data: class folders, split folders or manifest
    digest: str = ""  # folder data: the identity of its files and labels (all, before limit)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def check_labels(y: np.ndarray, num_classes: int, where: str) -> None:
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{where}: labels must lie in 0..{num_classes - 1}, "
                        f"found {int(y.min())}..{int(y.max())}")
    missing = sorted(set(range(num_classes)) - set(np.unique(y).tolist()))
    if missing:
        raise DataError(f"{where}: classes {missing} have no images")


def data_digest(x: np.ndarray, y: np.ndarray) -> str:
    """8 hex digits of MD5 over the split's shape, dtype, every label and `DIGEST_ROWS`
    evenly spaced images: identifies the data wherever it is stored (in memory or in
    memory-mapped files), reading at most that many images. MLflow's own NumPy digest copies
    the whole array (`flatten`) to hash its first 10,000 values, which a memory-mapped split
    cannot afford."""
    h = hashlib.md5(usedforsecurity=False)
    h.update(repr((x.shape, str(x.dtype))).encode())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    picked = np.unique(np.linspace(0, len(x) - 1, min(len(x), DIGEST_ROWS)).astype(np.int64))
    for start in range(0, len(picked), 64):
        h.update(np.ascontiguousarray(x[picked[start:start + 64]]).tobytes())
    return h.hexdigest()[:8]


def read_folder(files: ImageFiles, image_size: int, skip_bad_images: bool
                ) -> tuple[CachedImages, np.ndarray, tuple[str, ...]]:
    """The files at `image_size` through the cache; the rows that were read, and the paths
    of those that were not (DataError for the first one unless `skip_bad_images`)."""
    cached = cached_images(files.root, files.files, image_size,
                           stop_at_unreadable=not skip_bad_images)
    if cached.unreadable and not skip_bad_images:
        row = min(cached.unreadable)
        raise DataError(f"cannot read image {files.root / files.files[row].path}: "
                        f"{cached.unreadable[row]} (fix or remove it, or pass "
                        "--skip-bad-images)")
    good = np.setdiff1d(np.arange(len(files)), list(cached.unreadable)).astype(np.int64)
    skipped = tuple(str(files.root / files.files[i].path) for i in sorted(cached.unreadable))
    return cached, good, skipped


def load_dataset(
    name: str,
    data_dir: str | None = None,
    image_size: int = 32,
    test_split: float = 0.2,
    val_split: float = 0.2,
    seed: int = 0,
    skip_bad_images: bool = False,
    limit: int | None = None,
    in_memory: bool | None = None,
    full_test: bool = False,
    raw: RawData | None = None,
) -> Dataset:
    """Load data set `name` (or the given `raw` data: arrays from `tracking.api`), split it
    and bring every image to (image_size, image_size, 3) uint8.

    `limit` keeps a stratified, seeded subset of at most that many images before splitting
    (for smoke runs; a folder's other files are never read). A split the data set gives
    (Fashion-MNIST's test images, a folder's val/ or test/ or a manifest's split column) is
    that split; then `limit` keeps `max(limit // 4, 2 * classes)` of it (the first ones of an
    array, a stratified, seeded subset of a folder's files), and `full_test` keeps the whole
    given test split (a model trained on a subset, scored on the official test split).
    Folder data: `in_memory` None keeps the splits in memory when they take at most half the
    available memory, else in memory-mapped files (np.memmap) in the cache folder; True or
    False forces either. Raises DataError (or SplitError) with a one-line explanation when
    the data cannot be had or split.
    """
    if raw is None and name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(LOADERS)}")
    raw = LOADERS[name](data_dir=data_dir) if raw is None else raw
    names, folder = raw.class_names, isinstance(raw.x, ImageFiles)
    check_labels(raw.y, len(names), name)
    splits = Splits(test_split, val_split, own_test=raw.x_test is not None,
                    own_val=raw.x_val is not None)
    splits.check(np.bincount(raw.y, minlength=len(names)), names, folder)
    # each part: (images or files, labels, the rows kept); "pool" is what splits are carved from
    keep = kept_rows(raw.y, limit, seed, splits, names, folder)
    parts = {"pool": (raw.x, raw.y, keep)}
    for part, x, labels in (("val", raw.x_val, raw.y_val), ("test", raw.x_test, raw.y_test)):
        if x is None:
            continue
        rows = np.arange(len(labels))
        if len(keep) < len(raw.y) and not (part == "test" and full_test):  # in proportion
            n = max(limit // 4, 2 * len(names))
            rows = stratified_subset(labels, n, seed) if folder else rows[:n]
            check_labels(labels[rows], len(names),
                         f"{name} {part} part ({len(rows)} of {len(labels)} images)")
        parts[part] = (x, labels, rows)
    y = {part: np.asarray(labels[rows], np.int64) for part, (_, labels, rows) in parts.items()}
    skipped: tuple[str, ...] = ()
    if folder:  # every part's files in one cache entry, in part order
        files = ImageFiles(raw.x.root, tuple(x.files[i] for x, _, rows in parts.values()
                                             for i in rows))
        cached, good, skipped = read_folder(files, image_size, skip_bad_images)
        start, at = 0, {}  # part -> rows of the cache holding its readable images
        for part, (_, _, rows) in parts.items():
            mine = good[(good >= start) & (good < start + len(rows))]
            at[part], y[part], start = mine, y[part][mine - start], start + len(rows)
        if skipped:
            splits.check(np.bincount(y["pool"], minlength=len(names)), names, folder,
                         fix="replace the unreadable files")
            for part in parts.keys() - {"pool"}:
                check_labels(y[part], len(names), f"{name} {part} part without its "
                             "unreadable files (replace them)")
        if in_memory is None:
            in_memory = len(good) * image_size ** 2 * 3 <= available_memory() // 2

    def images(part: str, index: np.ndarray | None = None) -> np.ndarray:
        """The part's kept images at `index` (all of them for None), resized."""
        if folder:
            rows = at[part] if index is None else at[part][index]
            return take(cached, rows, in_memory)
        x, _, rows = parts[part]
        return to_rgb_size(x[rows if index is None else rows[index]], image_size)

    train, val, test = splits.split(y["pool"], seed)
    x_val, y_val = (images("val"), y["val"]) if val is None else \
        (images("pool", val), y["pool"][val])
    x_test, y_test = (images("test"), y["test"]) if test is None else \
        (images("pool", test), y["pool"][test])
    return Dataset(
        name=name, class_names=names, source=raw.source,
        x_train=images("pool", train), y_train=y["pool"][train],
        x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test,
        skipped=skipped, left_out=raw.left_out, layout=raw.layout, digest=raw.digest,
    )
