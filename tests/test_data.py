"""Data loaders on real files: the bundled digits, IDX files and a folder of PNGs."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tracking.data import DataError, load_dataset, read_idx


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fashion(root: Path, n_train: int = 60, n_test: int = 20) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(root / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    write_idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)


def write_folder(root: Path, classes=("cat", "dog", "owl"), per_class: int = 10) -> None:
    rng = np.random.default_rng(1)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            size = (20, 24) if i % 2 else (16, 16)  # mixed sizes are resized once
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png")


def test_digits_splits_are_stratified_uint8_and_seeded() -> None:
    d = load_dataset("digits", image_size=32, seed=3)
    assert d.x_train.dtype == np.uint8 and d.x_train.shape[1:] == (32, 32, 3)
    assert sum(d.sizes().values()) == 1797
    assert abs(d.sizes()["test"] - 0.2 * 1797) <= 1
    assert abs(d.sizes()["val"] - 0.2 * (1797 - d.sizes()["test"])) <= 1
    # stratified: every class in every split, in similar shares
    for y in (d.y_train, d.y_val, d.y_test):
        assert set(np.unique(y)) == set(range(10))
    again = load_dataset("digits", image_size=32, seed=3)
    np.testing.assert_array_equal(d.y_test, again.y_test)
    other = load_dataset("digits", image_size=32, seed=4)
    assert not np.array_equal(d.y_test, other.y_test)


def test_fashion_mnist_from_idx_files(tmp_path: Path) -> None:
    write_fashion(tmp_path / "fm")
    d = load_dataset("fashion_mnist", str(tmp_path / "fm"), image_size=32, val_split=0.5)
    assert d.source == str(tmp_path / "fm")
    assert d.sizes() == {"train": 30, "val": 30, "test": 20}  # its own test split
    assert d.x_test.shape == (20, 32, 32, 3)
    assert d.class_names[0] == "T-shirt/top"


def test_idx_reader_rejects_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    write_idx(path, np.zeros((4, 3, 3)))
    raw = gzip.open(path).read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_fashion_missing_everywhere_names_the_places(tmp_path: Path, monkeypatch) -> None:
    import tracking.data as data

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", str(tmp_path / "no_debian"))
    # keras.datasets then tries the network, which this machine does not reach
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", str(tmp_path / "empty"))
    message = str(err.value)
    assert str(tmp_path / "empty") in message and "keras_home" in message
    assert "dataset-fashion-mnist" in message


def test_folder_of_pngs(tmp_path: Path) -> None:
    write_folder(tmp_path / "imgs")
    d = load_dataset("folder", str(tmp_path / "imgs"), image_size=16, test_split=0.3)
    assert d.class_names == ("cat", "dog", "owl")
    assert d.x_train.shape[1:] == (16, 16, 3)
    assert sum(d.sizes().values()) == 30


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("folder", str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="at least two class subfolders"):
        load_dataset("folder", str(tmp_path / "empty"))
    write_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "ghost").mkdir()
    with pytest.raises(DataError, match="ghost has no readable images"):
        load_dataset("folder", str(tmp_path / "imgs"))


def test_corrupt_image_reported_by_path_or_skipped(tmp_path: Path) -> None:
    write_folder(tmp_path / "imgs")
    bad = tmp_path / "imgs" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(DataError, match="broken.png"):
        load_dataset("folder", str(tmp_path / "imgs"))
    d = load_dataset("folder", str(tmp_path / "imgs"), skip_bad_images=True)
    assert d.skipped == (str(bad),)
    assert sum(d.sizes().values()) == 30
