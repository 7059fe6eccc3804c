"""Data sets as uint8 image arrays with stratified, seeded splits.

    from tracking.data import load_dataset
    data = load_dataset("digits", image_size=32, seed=0)
    data.x_train.shape  # (N, 32, 32, 3), uint8

Images are resized once, here, and stay uint8 until they reach the model (which scales
them on the accelerator). Adding a data set is one loader and one line in `LOADERS`.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits as sklearn_digits
from sklearn.model_selection import train_test_split

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
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# data sets whose classes keep their meaning under a left-right mirror (augmentation flips them)
FLIP_SAFE = {"fashion_mnist", "cifar10"}


class DataError(UsageError):
    """A data set cannot be found or read; the message says where and how to fix it."""


@dataclass(frozen=True)
class RawData:
    """What a loader returns: images (N, H, W[, C]) uint8, integer labels, and its test part."""

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    source: str
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dataset:
    """Train / validation / test splits of uint8 (N, S, S, 3) images with integer labels."""

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


def load_digits(data_dir: str | None = None, skip_bad_images: bool = False) -> RawData:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0-16): offline, always there."""
    bunch = sklearn_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return RawData(x, bunch.target.astype(np.int64), tuple(str(c) for c in range(10)),
                   "sklearn.datasets.load_digits")


def load_fashion_mnist(data_dir: str | None = None, skip_bad_images: bool = False) -> RawData:
    """Fashion-MNIST from local IDX files (see `fashion_search_dirs`), else keras.datasets."""
    searched = fashion_search_dirs(data_dir)
    for d in searched:
        if all((d / f).is_file() for f in FASHION_FILES.values()):
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


def load_mnist(data_dir: str | None = None, skip_bad_images: bool = False) -> RawData:
    """MNIST through keras.datasets (its cache or a download)."""
    return _from_keras("mnist", tuple(str(c) for c in range(10)))


def load_cifar10(data_dir: str | None = None, skip_bad_images: bool = False) -> RawData:
    """CIFAR-10 through keras.datasets (its cache or a download)."""
    return _from_keras("cifar10", CIFAR10_CLASSES)


def load_folder(data_dir: str | None = None, skip_bad_images: bool = False) -> RawData:
    """Images in `data_dir/<class name>/*.png|jpg|...`, the layout of
    `keras.utils.image_dataset_from_directory`. Every file is opened and decoded here, so a
    corrupt one is reported by path before training (or skipped and counted on request).
    Images keep their own size; `load_dataset` resizes each to the common size.
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
    images: list[np.ndarray] = []
    labels: list[int] = []
    skipped: list[str] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        count = 0
        for path in files:
            try:
                with Image.open(path) as img:
                    img.load()
                    images.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
            except Exception as err:
                if not skip_bad_images:
                    raise DataError(f"cannot read image {path}: {err} "
                                    "(fix or remove it, or pass --skip-bad-images)") from None
                skipped.append(str(path))
                continue
            labels.append(label)
            count += 1
        if count == 0:
            raise DataError(f"class folder {class_dir} has no readable images "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    return RawData(_stack_any_size(images), np.asarray(labels, np.int64),
                   tuple(p.name for p in class_dirs), str(root.resolve()), skipped=tuple(skipped))


def _stack_any_size(images: list[np.ndarray]) -> np.ndarray:
    """Stack same-sized images; images of mixed sizes become an object array (resized later)."""
    if len({im.shape for im in images}) == 1:
        return np.stack(images)
    out = np.empty(len(images), dtype=object)
    out[:] = images
    return out


LOADERS: dict[str, Callable[..., RawData]] = {
    "digits": load_digits,
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "folder": load_folder,
}


# --------------------------------------------------------------------------- preparation


def to_rgb_size(x: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W[, C]) uint8 images (or an object array of mixed sizes) -> (N, size, size, 3)."""
    def one(im: np.ndarray) -> np.ndarray:
        if im.ndim == 2:
            im = im[..., None]
        if im.shape[-1] == 1:
            im = np.repeat(im, 3, axis=-1)
        if im.shape[:2] != (size, size):
            im = np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR))
        return im

    if x.dtype == object or x.shape[1:3] != (size, size):
        return np.stack([one(im) for im in x]).astype(np.uint8)
    x = x if x.ndim == 4 else x[..., None]
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def check_labels(y: np.ndarray, num_classes: int, where: str) -> None:
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{where}: labels must lie in 0..{num_classes - 1}, "
                        f"found {int(y.min())}..{int(y.max())}")
    missing = sorted(set(range(num_classes)) - set(np.unique(y).tolist()))
    if missing:
        raise DataError(f"{where}: classes {missing} have no images")


def split_data(
    raw: RawData, test_split: float, val_split: float, seed: int
) -> tuple[np.ndarray, ...]:
    """Stratified, seeded splits: the data set's own test part when it has one."""
    x, y = raw.x, raw.y
    if raw.x_test is None:
        x, x_test, y, y_test = train_test_split(x, y, test_size=test_split, stratify=y,
                                                random_state=seed)
    else:
        x_test, y_test = raw.x_test, raw.y_test
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=val_split, stratify=y,
                                                      random_state=seed)
    return x_train, y_train, x_val, y_val, x_test, y_test


def load_dataset(
    name: str,
    data_dir: str | None = None,
    image_size: int = 32,
    test_split: float = 0.2,
    val_split: float = 0.2,
    seed: int = 0,
    skip_bad_images: bool = False,
    limit: int | None = None,
) -> Dataset:
    """Load data set `name`, split it and bring every image to (image_size, image_size, 3) uint8.

    `limit` keeps a stratified subset of at most that many training images (for smoke runs).
    Raises DataError with a one-line explanation when the data cannot be had.
    """
    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(LOADERS)}")
    raw = LOADERS[name](data_dir=data_dir, skip_bad_images=skip_bad_images)
    check_labels(raw.y, len(raw.class_names), name)
    if limit is not None and limit < len(raw.y):
        x_keep, _, y_keep, _ = train_test_split(raw.x, raw.y, train_size=limit, stratify=raw.y,
                                                random_state=seed)
        x_test, y_test = raw.x_test, raw.y_test
        if x_test is not None:  # keep the data set's own test part in proportion
            n = max(limit // 4, 2 * len(raw.class_names))
            x_test, y_test = x_test[:n], y_test[:n]
        raw = RawData(x_keep, y_keep, raw.class_names, raw.source, x_test, y_test, raw.skipped)
    x_train, y_train, x_val, y_val, x_test, y_test = split_data(raw, test_split, val_split, seed)
    return Dataset(
        name=name, class_names=raw.class_names, source=raw.source,
        x_train=to_rgb_size(x_train, image_size), y_train=np.asarray(y_train, np.int64),
        x_val=to_rgb_size(x_val, image_size), y_val=np.asarray(y_val, np.int64),
        x_test=to_rgb_size(x_test, image_size), y_test=np.asarray(y_test, np.int64),
        skipped=raw.skipped,
    )


def load_for(config: Config) -> Dataset:
    """The data set a run of `config` trains on: its data set, folder, image size, splits, seed
    and limit (the one way from a Config to its data)."""
    return load_dataset(config.dataset, config.data_dir or None, config.image_size,
                        config.test_split, config.val_split, config.data_seed,
                        config.skip_bad_images, config.limit or None)
