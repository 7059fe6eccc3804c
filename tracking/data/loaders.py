"""The data sets the suite knows, one loader each: name -> images and labels, not split yet.

    raw = LOADERS["fashion_mnist"](data_dir=None)   # RawData: x (N, 28, 28) uint8, y, its test part
    raw = LOADERS["folder"](data_dir="photos/")     # RawData: x the image files, not read yet

A folder may be laid out as class folders, split folders (train/val/test) or a manifest
(metadata.csv): `tracking.data.layouts` lists each, and defines `DataError`, which this module
passes on (`from tracking.data.loaders import DataError` stays the way to import it).

Adding a data set is one loader (a function `(data_dir: str | None) -> RawData`) and one line
in `LOADERS`. `tracking.data.dataset.load_dataset` splits and resizes what a loader returns.
Fashion-MNIST is read from its IDX files (Keras's cache, Debian's `dataset-fashion-mnist` under
/usr/share/datasets/fashion-mnist, or --data-dir); MNIST and CIFAR-10 come through
`keras.datasets` (its cache or a download); digits is scikit-learn's embedded `load_digits`.
"""

from __future__ import annotations

import gzip
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from sklearn.datasets import load_digits as sklearn_digits

from tracking.data.images import ImageFile, LeftOut
from tracking.data.layouts import DataError, list_layout

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


# data sets whose classes keep their meaning under a left-right mirror (augmentation flips them)
FLIP_SAFE = {"fashion_mnist", "cifar10"}


@dataclass(frozen=True)
class ImageFiles:
    """A folder's image files, not read yet: `load_dataset` reads those it keeps."""

    root: Path
    files: tuple[ImageFile, ...]

    def __len__(self) -> int:
        return len(self.files)


@dataclass(frozen=True)
class RawData:
    """What a loader returns: images (N, H, W[, C]) uint8 or files, integer labels (N,)
    int64, and the validation and test parts the data set gives (None: `load_dataset`
    carves them from x, y with --val-split, --test-split)."""

    x: np.ndarray | ImageFiles
    y: np.ndarray
    class_names: tuple[str, ...]
    source: str
    x_test: np.ndarray | ImageFiles | None = None
    y_test: np.ndarray | None = None
    left_out: tuple[LeftOut, ...] = ()  # folder data: every entry not read, and why
    x_val: ImageFiles | None = None  # folder data: a given validation split
    y_val: np.ndarray | None = None
    layout: str = ""  # folder data: how it was laid out (tracking.data.layouts)
    digest: str = ""  # folder data: its identity, `tracking.data.layouts.identity_digest`


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
    """A folder data set in any layout `tracking.data.layouts` knows (class folders, split
    folders, a manifest), listed there: its train files as x, y, a given validation or test
    split as x_val, x_test (files too), read by `load_dataset` once it knows which files it
    keeps. Raises DataError (one line) when it cannot be listed."""
    if not data_dir:
        raise DataError(
            "--dataset folder needs --data-dir PATH (one subfolder of images per class, split "
            "folders train/val/test, or a metadata.csv)"
        )
    listing = list_layout(data_dir)

    def part(name: str) -> tuple[ImageFiles | None, np.ndarray | None]:
        if not listing.given(name):
            return None, None
        rows = listing.rows(name)
        return (ImageFiles(listing.root, tuple(listing.files[i] for i in rows)),
                listing.labels[rows])

    (x, y), (x_val, y_val), (x_test, y_test) = (part(name) for name in ("train", "val", "test"))
    return RawData(x, y, listing.class_names, listing.source, x_test, y_test,
                   listing.left_out, x_val, y_val, listing.layout, listing.digest)


ARRAYS = "arrays"  # the data set of arrays given from Python (tracking.api), never loaded


def load_arrays(data_dir: str | None = None) -> RawData:
    """Arrays exist only in the Python process that gave them: say so (a resume of such a run,
    or --dataset arrays on a command line)."""
    raise DataError("dataset 'arrays' is given from Python: tracking.api.train(..., "
                    "data=(x, y)); its runs cannot be loaded again from the command line")


LOADERS: dict[str, Callable[..., RawData]] = {
    "digits": load_digits,
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "folder": load_folder,
    ARRAYS: load_arrays,
}
