"""Data sets as uint8 image arrays with stratified, seeded splits.

    from tracking.data.dataset import load_dataset
    data = load_dataset("digits", image_size=32, seed=0)
    data.x_train.shape  # (N, 32, 32, 3), uint8

Images are resized once, here, and stay uint8 until they reach the model (which scales
them on the accelerator). Adding a data set is one loader and one line in `LOADERS`.
A folder data set is listed here, subsampled (`limit`) by its file list, and read through the
on-disk cache of `tracking.data.image_cache` (each file by `tracking.data.images.read_image`); splits
too large for memory stay memory-mapped files.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
from sklearn.datasets import load_digits as sklearn_digits

from tracking.data.image_cache import CachedImages, available_memory, cached_images, take
from tracking.data.images import IMAGE_SUFFIXES, ImageFile, list_images, to_rgb_size
from tracking.data.splits import Splits, kept_rows
from tracking.errors import UsageError

if TYPE_CHECKING:  # tracking.config imports this module (for LOADERS)
    from tracking.config import Config

FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
DEBIAN_FASHION_DIR = "/usr/share/datasets/fashion-mnist"
DIGEST_ROWS = 1024  # images hashed into a split's digest (plus its shape and every label)
# data sets whose classes keep their meaning under a left-right mirror (augmentation flips them)
FLIP_SAFE = {"fashion_mnist", "cifar10"}


class DataError(UsageError):
    """A data set cannot be found or read; the message says where and how to fix it."""


@dataclass(frozen=True)
class ImageFiles:
    """A folder's image files, not read yet: `load_dataset` reads those it keeps."""

    root: Path
    files: tuple[ImageFile, ...]

    def __len__(self) -> int:
        return len(self.files)


@dataclass(frozen=True)
class RawData:
    """What a loader returns: images (N, H, W[, C]) uint8 or files, integer labels, and its
    test part."""

    x: np.ndarray | ImageFiles
    y: np.ndarray
    class_names: tuple[str, ...]
    source: str
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


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

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


# --------------------------------------------------------------------------- loaders


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped), as used by MNIST and Fashion-MNIST."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    count = int(np.prod(dims))
    offset = 4 + 4 * ndim
    if len(data) - offset < count:
        raise DataError(f"{path} is truncated: {len(data) - offset} of {count} bytes")
    return np.frombuffer(data, np.uint8, count=count, offset=offset).reshape(dims)


def fashion_search_dirs(data_dir: str | None) -> list[Path]:
    """Where Fashion-MNIST's IDX files are looked for, in order."""
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    dirs = [keras_home / "datasets" / "fashion-mnist", Path(DEBIAN_FASHION_DIR)]
    return ([Path(data_dir)] if data_dir else []) + dirs


def load_digits(data_dir: str | None = None) -> RawData:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0-16): offline, always there."""
    bunch = sklearn_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return RawData(x, bunch.target.astype(np.int64), tuple(str(c) for c in range(10)),
                   "sklearn.datasets.load_digits")


def load_fashion_mnist(data_dir: str | None = None) -> RawData:
    """Fashion-MNIST from local IDX files (see `fashion_search_dirs`), else keras.datasets."""
    searched = fashion_search_dirs(data_dir)
    for d in searched:
        if all((d / f).is_file() for f in FASHION_FILES.values()):
            if data_dir and d != Path(data_dir) and Path(data_dir).resolve() != Path.cwd():
                # the folder you run from is what `mlflow run` passes when none was named
                print(f"warning: --data-dir {data_dir} holds no Fashion-MNIST IDX files; "
                      f"reading them from {d}", file=sys.stderr)
            arrays = {k: read_idx(d / f) for k, f in FASHION_FILES.items()}
            return RawData(arrays["x_train"], arrays["y_train"].astype(np.int64), FASHION_CLASSES,
                           str(d), arrays["x_test"], arrays["y_test"].astype(np.int64))
    try:
        return _from_keras("fashion_mnist", FASHION_CLASSES)
    except DataError as err:
        places = ", ".join(str(d) for d in searched)
        raise DataError(
            f"Fashion-MNIST not found: looked for {', '.join(FASHION_FILES.values())} in {places}, "
            f"and the download failed ({err}). Install Debian's dataset-fashion-mnist package or "
            "pass --data-dir DIR holding the four files."
        ) from None


def _from_keras(name: str, class_names: tuple[str, ...]) -> RawData:
    try:
        (x, y), (xt, yt) = getattr(keras.datasets, name).load_data()
    except Exception as err:  # network errors come in many types
        raise DataError(
            f"keras.datasets.{name} could not be loaded (offline? {type(err).__name__}: {err}); "
            f"put its file in $KERAS_HOME/datasets (default ~/.keras/datasets) and retry"
        ) from None
    return RawData(x, y.reshape(-1).astype(np.int64), class_names, f"keras.datasets.{name}",
                   xt, yt.reshape(-1).astype(np.int64))


def load_mnist(data_dir: str | None = None) -> RawData:
    """MNIST through keras.datasets (its cache or a download)."""
    return _from_keras("mnist", tuple(str(c) for c in range(10)))


def load_cifar10(data_dir: str | None = None) -> RawData:
    """CIFAR-10 through keras.datasets (its cache or a download)."""
    return _from_keras("cifar10", CIFAR10_CLASSES)


def load_folder(data_dir: str | None = None) -> RawData:
    """Images in `data_dir/<class name>/**/*.png|jpg|...`, the layout of
    `keras.utils.image_dataset_from_directory`: listed here (see `tracking.data.images.list_images`
    for what counts), read by `load_dataset` once it knows which files it keeps.
    """
    if not data_dir:
        raise DataError(
            "--dataset folder needs --data-dir PATH (one subfolder of images per class)"
        )
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist or is not a folder")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(f"data folder {root} must hold at least two class subfolders, "
                        f"found {len(class_dirs)}")
    files: list[ImageFile] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        found = list_images(class_dir, root)
        if not found:
            raise DataError(f"class folder {class_dir} has no readable images "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        files += found
        labels += [label] * len(found)
    return RawData(ImageFiles(root, tuple(files)), np.asarray(labels, np.int64),
                   tuple(p.name for p in class_dirs), str(root.resolve()))


LOADERS: dict[str, Callable[..., RawData]] = {
    "digits": load_digits,
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "folder": load_folder,
}


# --------------------------------------------------------------------------- preparation


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
) -> Dataset:
    """Load data set `name`, split it and bring every image to (image_size, image_size, 3) uint8.

    `limit` keeps a stratified, seeded subset of at most that many images before splitting
    (for smoke runs; a folder's other files are never read). Folder data: `in_memory` None
    keeps the splits in memory when they take at most half the available memory, else in
    memory-mapped files (np.memmap) in the cache folder; True or False forces either.
    Raises DataError with a one-line explanation when the data cannot be had or split.
    """
    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(LOADERS)}")
    raw = LOADERS[name](data_dir=data_dir)
    names, folder = raw.class_names, isinstance(raw.x, ImageFiles)
    check_labels(raw.y, len(names), name)
    splits = Splits(test_split, val_split, own_test=raw.x_test is not None)
    splits.check(np.bincount(raw.y, minlength=len(names)), names, folder)
    keep = kept_rows(raw.y, limit, seed, splits, names, folder)
    x_test, y_test = raw.x_test, raw.y_test
    if x_test is not None and len(keep) < len(raw.y):  # its own test part, in proportion
        n = max(limit // 4, 2 * len(names))
        x_test, y_test = x_test[:n], y_test[:n]
        check_labels(y_test, len(names), f"{name} test part (first {n} images)")
    y, skipped = raw.y[keep], ()
    if folder:
        files = ImageFiles(raw.x.root, tuple(raw.x.files[i] for i in keep))
        rows, good, skipped = read_folder(files, image_size, skip_bad_images)
        y = y[good]
        if skipped:
            splits.check(np.bincount(y, minlength=len(names)), names, folder,
                         fix="replace the unreadable files")
        if in_memory is None:
            in_memory = len(good) * image_size ** 2 * 3 <= available_memory() // 2
    else:
        rows, good = raw.x[keep], np.arange(len(keep))
    train, val, test = splits.split(y, seed)

    def images(part: np.ndarray) -> np.ndarray:
        if folder:
            return take(rows, good[part], in_memory)
        return to_rgb_size(rows[part], image_size)

    if test is not None:
        x_test, y_test = images(test), y[test]
    return Dataset(
        name=name, class_names=names, source=raw.source,
        x_train=images(train), y_train=np.asarray(y[train], np.int64),
        x_val=images(val), y_val=np.asarray(y[val], np.int64),
        x_test=to_rgb_size(x_test, image_size), y_test=np.asarray(y_test, np.int64),
        skipped=skipped,
    )


def load_for(config: Config) -> Dataset:
    """The data set a run of `config` trains on: its data set, folder, image size, splits, seed
    and limit (the one way from a Config to its data)."""
    return load_dataset(config.dataset, config.data_dir or None, config.image_size,
                        config.test_split, config.val_split, config.data_seed,
                        config.skip_bad_images, config.limit or None)
