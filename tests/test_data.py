"""Data loaders on real files: the bundled digits, IDX files and a folder of PNGs, its
on-disk cache, `--limit` and the check that every class fits every split."""

from __future__ import annotations

import gzip
import importlib
import json
import os
import re
import socket
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from tracking.data.dataset import data_digest, load_dataset
from tracking.data.loaders import DataError, load_folder, read_idx
from tracking.data.splits import SplitError, Splits, kept_rows
from tracking.machine import CACHE_ENV


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


def test_limit_keeps_a_part_of_the_own_test_split_or_all_of_it(tmp_path: Path) -> None:
    write_fashion(tmp_path / "fm", n_train=200, n_test=100)
    part = load_dataset("fashion_mnist", str(tmp_path / "fm"), limit=80)
    assert part.sizes()["test"] == 20  # limit // 4: a smoke run stays small
    whole = load_dataset("fashion_mnist", str(tmp_path / "fm"), limit=80, full_test=True)
    assert whole.sizes()["test"] == 100  # trained on a subset, scored on the official split
    assert whole.sizes()["train"] + whole.sizes()["val"] == 80
    np.testing.assert_array_equal(whole.y_train, part.y_train)  # the same subset either way


def test_idx_reader_rejects_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    write_idx(path, np.zeros((4, 3, 3)))
    raw = gzip.open(path).read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_fashion_missing_everywhere_names_the_places(tmp_path: Path, monkeypatch) -> None:
    import tracking.data.loaders as data

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


def test_a_named_folder_without_fashion_files_is_said(tmp_path: Path, monkeypatch,
                                                      capsys) -> None:
    """The files come from the next place searched, and stderr says so."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    write_fashion(tmp_path / "keras_home" / "datasets" / "fashion-mnist")
    (tmp_path / "empty").mkdir()
    d = load_dataset("fashion_mnist", str(tmp_path / "empty"), val_split=0.5)
    assert d.source == str(tmp_path / "keras_home" / "datasets" / "fashion-mnist")
    assert (f"warning: --data-dir {tmp_path / 'empty'} holds no Fashion-MNIST IDX files; "
            "reading them from") in capsys.readouterr().err


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


# --------------------------------------------------------------------------- folder cache


def cache_files(cache: Path) -> dict[str, int]:
    """The cache's .npy files by name, with their inode (a rebuilt file gets a new one)."""
    return {p.name: p.stat().st_ino for p in cache.glob("images-*.npy")}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


def test_folder_is_read_once_then_from_the_cache(tmp_path: Path,
                                                                cache: Path) -> None:
    write_folder(tmp_path / "imgs")
    first = load_dataset("folder", str(tmp_path / "imgs"), image_size=16, test_split=0.3)
    written = cache_files(cache)
    assert len(written) == 1 and len(list(cache.glob("images-*.json"))) == 1
    again = load_dataset("folder", str(tmp_path / "imgs"), image_size=16, test_split=0.3)
    assert cache_files(cache) == written  # the same file, not rebuilt
    np.testing.assert_array_equal(first.x_train, again.x_train)
    assert data_digest(first.x_train, first.y_train) == data_digest(again.x_train,
                                                                    again.y_train)
    load_dataset("folder", str(tmp_path / "imgs"), image_size=20)  # another size, another file
    assert len(cache_files(cache)) == 2


def test_touching_or_adding_a_file_invalidates_the_cache(tmp_path: Path, cache: Path) -> None:
    write_folder(tmp_path / "imgs")
    load_dataset("folder", str(tmp_path / "imgs"), image_size=16)
    before = set(cache_files(cache))
    touched = tmp_path / "imgs" / "dog" / "3.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    load_dataset("folder", str(tmp_path / "imgs"), image_size=16)
    after_touch = set(cache_files(cache))
    assert len(after_touch - before) == 1
    Image.new("RGB", (16, 16), (9, 9, 9)).save(tmp_path / "imgs" / "owl" / "new.png")
    d = load_dataset("folder", str(tmp_path / "imgs"), image_size=16)
    assert len(set(cache_files(cache)) - after_touch) == 1
    assert sum(d.sizes().values()) == 31


def test_a_truncated_or_altered_cache_is_rebuilt_not_trusted(tmp_path: Path, cache: Path,
                                                              capsys) -> None:
    write_folder(tmp_path / "imgs")
    good = load_dataset("folder", str(tmp_path / "imgs"), image_size=16)
    (npy,) = cache.glob("images-*.npy")
    size = npy.stat().st_size
    os.truncate(npy, size // 2)  # what a killed write would leave
    capsys.readouterr()
    rebuilt = load_dataset("folder", str(tmp_path / "imgs"), image_size=16)
    assert "instead of" in capsys.readouterr().err and npy.stat().st_size == size
    np.testing.assert_array_equal(good.x_train, rebuilt.x_train)
    with open(npy, "r+b") as f:  # same size, other bytes
        f.seek(size - 100)
        f.write(b"\xff" * 50)
    again = load_dataset("folder", str(tmp_path / "imgs"), image_size=16)
    assert "CRC-32 differs" in capsys.readouterr().err
    np.testing.assert_array_equal(good.x_test, again.x_test)
    npy.with_suffix(".json").unlink()  # killed between the data and its description
    load_dataset("folder", str(tmp_path / "imgs"), image_size=16)
    assert "unreadable or incomplete" in capsys.readouterr().err


def test_a_killed_builds_partial_file_is_removed(tmp_path: Path, cache: Path) -> None:
    write_folder(tmp_path / "imgs")
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    cache.mkdir()
    leftover = cache / f"images-x.npy.partial-{socket.gethostname()}-{dead.pid}"
    leftover.write_bytes(b"\0" * 1000)
    load_dataset("folder", str(tmp_path / "imgs"), image_size=16)
    assert not leftover.exists()


def test_limit_reads_only_the_files_it_keeps(tmp_path: Path, cache: Path) -> None:
    write_folder(tmp_path / "imgs", per_class=20)
    raw = load_folder(str(tmp_path / "imgs"))
    kept = kept_rows(raw.y, 21, 5, Splits(0.2, 0.2, own_test=False), raw.class_names, True)
    for i in sorted(set(range(len(raw.y))) - set(kept.tolist())):  # every other file: broken
        (raw.x.root / raw.x.files[i].path).write_bytes(b"not an image")
    d = load_dataset("folder", str(tmp_path / "imgs"), image_size=16, seed=5, limit=21)
    assert sum(d.sizes().values()) == 21
    assert [np.sum(np.concatenate([d.y_train, d.y_val, d.y_test]) == c) for c in range(3)] \
        == [7, 7, 7]  # stratified
    with pytest.raises(DataError, match="cannot read image"):  # the others are unreadable
        load_dataset("folder", str(tmp_path / "imgs"), image_size=16, seed=5)


def test_hidden_and_non_image_files_are_ignored(tmp_path: Path) -> None:
    write_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "cat" / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "imgs" / "cat" / "._0.png").write_bytes(b"AppleDouble")  # macOS metadata
    (tmp_path / "imgs" / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "imgs" / "dog" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "imgs" / "dog" / ".ipynb_checkpoints" / "x.png").write_bytes(b"broken")
    (tmp_path / "imgs" / "owl" / "UPPER.PNG").write_bytes(
        (tmp_path / "imgs" / "owl" / "0.png").read_bytes())
    d = load_dataset("folder", str(tmp_path / "imgs"), image_size=16)
    assert sum(d.sizes().values()) == 31 and not d.skipped
    assert dict(d.left_out) == {"cat/.DS_Store": "hidden", "cat/._0.png": "hidden",
                                "dog/notes.txt": "not an image",
                                "dog/.ipynb_checkpoints": "hidden"}


def test_every_file_is_read_or_listed_with_its_reason(tmp_path: Path) -> None:
    """Linked files and folders are followed, a loop is not walked twice, and every other entry
    (hidden, a suffix Pillow reads but the suite does not, no image at all, at the top of the
    folder) is listed: nothing vanishes without a word."""
    root = tmp_path / "imgs"
    write_folder(root, per_class=10)
    outside = tmp_path / "elsewhere"
    write_folder(outside, classes=("more",), per_class=4)
    (root / "cat" / "linked").symlink_to(outside / "more", target_is_directory=True)  # 4 more
    (root / "dog" / "link.png").symlink_to(root / "dog" / "0.png")  # a linked file: read
    (root / "owl" / "again").symlink_to(root / "owl", target_is_directory=True)  # a loop
    (root / "owl" / "photo.ico").write_bytes(b"\0")  # Pillow reads .ico; the suite does not
    (root / "owl" / ".hidden.png").write_bytes(b"\0")
    (root / "README.txt").write_text("class folders below")
    (root / "cat" / "also-dog").symlink_to(root / "dog", target_is_directory=True)
    (root / "dog" / "up").symlink_to(root, target_is_directory=True)  # the data folder ...
    (root / "owl" / "way-up").symlink_to(tmp_path, target_is_directory=True)  # ... and above
    (root / "owl-copy").symlink_to(root / "owl", target_is_directory=True)  # a class twice

    d = load_dataset("folder", str(root), image_size=16)
    assert sum(d.sizes().values()) == 10 + 4 + 10 + 1 + 10  # cat (+ linked), dog (+ link), owl
    reasons = dict(d.left_out)
    assert reasons == {"README.txt": "outside a class folder", "owl/again": "loop",
                       "owl/photo.ico": "other suffix", "owl/.hidden.png": "hidden",
                       "cat/also-dog": "loop",  # dog's folder is listed once, as dog
                       "dog/up": "loop", "owl/way-up": "loop", "owl-copy": "loop"}
    assert d.class_names == ("cat", "dog", "owl")  # no class from the linked copy
    on_disk = {str(f.relative_to(root)) for f in root.rglob("*") if not f.is_dir()}
    read = {f.path for f in load_folder(str(root)).x.files}
    assert on_disk <= read | set(reasons) | {"cat/linked", "owl-copy"}  # all accounted for


# --------------------------------------------------------------------------- class sizes


@pytest.mark.parametrize("counts, message", [
    ({"cat": 30, "dog": 30, "owl": 1},
     "class folder owl (1); with --test-split 0.2 --val-split 0.2 each class needs at least 7 "
     "images (its smallest share, 16%, must hold one): add images to it or remove it, or "
     "change --test-split/--val-split"),
    ({f"c{i:02d}": 3 for i in range(20)},
     "class folders c00 (3), c01 (3), c02 (3), c03 (3), c04 (3), c05 (3), c06 (3), c07 (3) "
     "and 12 more; with --test-split 0.2"),
])
def test_classes_too_small_to_split_are_named_before_any_image_is_read(
        tmp_path: Path, cache: Path, counts: dict[str, int], message: str) -> None:
    for name, n in counts.items():
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(n):  # unreadable: the check must come before reading
            (tmp_path / "imgs" / name / f"{i}.png").write_bytes(b"broken")
    with pytest.raises(SplitError) as err:
        load_dataset("folder", str(tmp_path / "imgs"))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not cache.exists()


def test_a_limit_too_small_to_split_says_how_far_to_raise_it() -> None:
    with pytest.raises(SplitError, match=r"classes 0 \(2\), 1 \(2\), .* needs at least 7 images"
                                         r".*raise --limit 20 to at least (\d+), or change") as err:
        load_dataset("digits", limit=20)
    enough = int(re.search(r"at least (\d+), or", str(err.value)).group(1))
    assert sum(load_dataset("digits", limit=enough).sizes().values()) == enough


@pytest.mark.parametrize("command", ["tracking.train", "tracking.study", "tuning.optuna_resnet"])
def test_every_command_exits_2_on_classes_too_small(mlflow_uri: str, capsys,
                                                    command: str) -> None:
    main = importlib.import_module(command).main
    with pytest.raises(SystemExit) as exit_info:
        main(["--dataset", "digits", "--limit", "20"])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"python -m {command}: error: too few images to put every class")
    assert "--limit 20" in last
    assert mlflow.search_runs(search_all_experiments=True).empty


# --------------------------------------------------------------------------- larger than memory


@pytest.mark.slow
def test_training_from_memory_mapped_splits_matches_training_from_memory(
        mlflow_uri: str, tmp_path: Path) -> None:
    """Splits too large for memory stay np.memmap files; a run on them is the same run."""
    from tracking.config import Config
    from tracking.training.loop import train

    digits = load_dataset("digits", image_size=8, limit=200)  # 8x8 digits as PNG files
    for i, (image, label) in enumerate(zip(np.concatenate([digits.x_train, digits.x_test]),
                                           np.concatenate([digits.y_train, digits.y_test]),
                                           strict=True)):
        (tmp_path / "digits" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "digits" / str(label) / f"{i}.png")
    config = Config(model="concat_cnn", dataset="folder", data_dir=str(tmp_path / "digits"),
                    epochs=2, batch_size=32, experiment="memmap")
    in_memory = load_for_test(config, in_memory=True)
    mapped = load_for_test(config, in_memory=False)
    assert all(isinstance(x, np.memmap) for x in (mapped.x_train, mapped.x_val, mapped.x_test))
    assert not isinstance(in_memory.x_train, np.memmap)
    np.testing.assert_array_equal(in_memory.x_train, mapped.x_train)
    a, b = train(config, in_memory), train(config, mapped)
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(a["history"][key], b["history"][key], rtol=1e-6)
    assert a["test_accuracy"] == b["test_accuracy"] and a["test_loss"] == pytest.approx(
        b["test_loss"], rel=1e-6)
    inputs = [mlflow.get_run(r["run_id"]).inputs.dataset_inputs for r in (a, b)]
    assert [d.dataset.digest for d in inputs[0]] == [d.dataset.digest for d in inputs[1]]


def load_for_test(config, in_memory: bool):
    return load_dataset(config.dataset, config.data_dir, config.image_size, config.test_split,
                        config.val_split, config.seed, in_memory=in_memory)


@pytest.mark.slow
def test_data_benchmark_measures_first_and_cached_loads(tmp_path: Path, monkeypatch) -> None:
    from tracking.benchmarks.data_loading import main as bench_main

    monkeypatch.chdir(tmp_path)
    assert bench_main(["--cases", "photos", "--photos", "16", "--megapixels", "0.3",
                       "--workdir", str(tmp_path), "--output", "b.json"]) == 0
    first, cached = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert first["images"] == cached["images"] == 16 and not first["memmap"]
    assert first["peak_rss"] >= first["baseline_rss"] > 0 and cached["seconds"] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["b.json"]  # its inputs are gone


# --------------------------------------------------------------------------- layouts

SPLIT_VALUES = {"train": 10, "val": 100, "validation": 100, "test": 200}  # each split's pixels


def write_images(folder: Path, n: int, value: int, prefix: str = "") -> None:
    """n small PNGs of one grey value (so a split's images can be told by their pixels)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (12, 10), (value, value, value)).save(folder / f"{prefix}{i}.png")


def write_split_folders(root: Path, counts: dict[str, dict[str, int]]) -> None:
    """root/<split>/<class>/<i>.png, `counts[split][class]` images each."""
    for split, classes in counts.items():
        for name, n in classes.items():
            write_images(root / split / name, n, SPLIT_VALUES[split.lower()])


def values(x: np.ndarray) -> set[int]:
    return set(np.unique(x).tolist())


@pytest.mark.parametrize("val_name", ["val", "validation", "Validation"])
def test_split_folders_keep_their_test_and_validation_splits(tmp_path: Path,
                                                             val_name: str) -> None:
    write_split_folders(tmp_path / "pets", {
        "train": {"cat": 10, "dog": 12, "owl": 8},
        val_name: {"cat": 3, "dog": 2, "owl": 2},
        "test": {"cat": 4, "dog": 5, "owl": 3},
    })
    d = load_dataset("folder", str(tmp_path / "pets"), image_size=8)
    assert d.class_names == ("cat", "dog", "owl")  # not ("test", "train", "val")
    assert d.sizes() == {"train": 30, "val": 7, "test": 12}
    assert [int(np.sum(d.y_test == k)) for k in range(3)] == [4, 5, 3]
    assert [int(np.sum(d.y_val == k)) for k in range(3)] == [3, 2, 2]
    assert values(d.x_train) == {10} and values(d.x_val) == {100} and values(d.x_test) == {200}
    assert d.layout == "split folders" and len(d.digest) == 16
    assert d.source == str((tmp_path / "pets").resolve())


def test_without_a_val_folder_val_split_carves_validation_from_train(tmp_path: Path) -> None:
    write_split_folders(tmp_path / "pets", {"train": {"cat": 10, "dog": 10},
                                            "test": {"cat": 4, "dog": 4}})
    d = load_dataset("folder", str(tmp_path / "pets"), image_size=8, val_split=0.3,
                     test_split=0.5)  # --test-split has nothing to do: test/ is given
    assert d.sizes() == {"train": 14, "val": 6, "test": 8}
    assert values(d.x_val) == {10} and values(d.x_test) == {200}  # validation from train
    assert [int(np.sum(d.y_val == k)) for k in range(2)] == [3, 3]  # stratified
    write_split_folders(tmp_path / "only", {"train": {"cat": 10, "dog": 10}})
    alone = load_dataset("folder", str(tmp_path / "only"), image_size=8)
    assert alone.sizes() == {"train": 12, "val": 4, "test": 4}  # both carved, as class folders


def test_limit_on_split_folders_keeps_a_stratified_part_of_the_given_test_split(
        tmp_path: Path) -> None:
    write_split_folders(tmp_path / "pets", {"train": {"cat": 20, "dog": 20, "owl": 20},
                                            "test": {"cat": 10, "dog": 10, "owl": 10}})
    d = load_dataset("folder", str(tmp_path / "pets"), image_size=8, limit=36)
    assert d.sizes()["train"] + d.sizes()["val"] == 36
    assert d.sizes()["test"] == 9 and values(d.x_test) == {200}  # limit // 4 of test/
    assert [int(np.sum(d.y_test == k)) for k in range(3)] == [3, 3, 3]
    whole = load_dataset("folder", str(tmp_path / "pets"), image_size=8, limit=36,
                         full_test=True)
    assert whole.sizes()["test"] == 30


@pytest.mark.parametrize("counts, message", [
    ({"train": {"cat": 9, "dog": 9}, "test": {"cat": 2, "dog": 2, "zebra": 2}},
     r"class zebra is in test/ but not in train/: a model cannot learn a class it never sees"),
    ({"train": {"cat": 9, "dog": 9}, "val": {"cat": 2}},
     r"class dog has no image in val/: every class needs images in every split"),
    ({"train": {"cat": 9, "dog": 9}, "cat": {"x": 2}},
     r"holds split folders \(train\) beside other folders \(cat\)"),
    ({"val": {"cat": 9, "dog": 9}, "test": {"cat": 2, "dog": 2}},
     r"holds split folders \(test, val\) but no train folder"),
    ({"train": {"cat": 9, "dog": 9}, "val": {"cat": 2, "dog": 2},
      "validation": {"cat": 2, "dog": 2}}, r"holds two val folders \(val, validation\)"),
])
def test_split_folder_mistakes_are_one_line_errors(tmp_path: Path, counts, message) -> None:
    for split, classes in counts.items():
        for name, n in classes.items():
            write_images(tmp_path / "d" / split / name, n, 50)
    with pytest.raises(DataError, match=message) as err:
        load_dataset("folder", str(tmp_path / "d"), image_size=8)
    assert "\n" not in str(err.value)


def write_manifest(root: Path, rows: list[dict[str, str]], name: str = "metadata.csv",
                   columns: tuple[str, ...] = ("file_name", "label", "split")) -> Path:
    """A manifest at root/name listing `rows` (only `columns`), and the PNG of each row
    that names one (a `split` value colours it: train 10, val 100, test 200)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join(row.get(c, "") for c in columns))
        if row.get("write", True) is not False:
            path = root / row["file_name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            value = SPLIT_VALUES.get(row.get("split", "train"), 10)
            Image.new("RGB", (9, 9), (value,) * 3).save(path)
    (root / name).write_text("\n".join(lines) + "\n")
    return root / name


def manifest_rows(per_split: dict[str, int], classes=("owl", "cat", "dog")) -> list[dict]:
    return [{"file_name": f"img/{split}-{name}-{i}.png", "label": name, "split": split}
            for split, n in per_split.items() for name in classes for i in range(n)]


def test_a_manifest_gives_labels_and_splits(tmp_path: Path) -> None:
    write_manifest(tmp_path / "m", manifest_rows({"train": 8, "validation": 2, "test": 3}))
    (tmp_path / "m" / "img" / "stray.png").write_bytes(b"not listed, not read")
    d = load_dataset("folder", str(tmp_path / "m"), image_size=8)
    assert d.class_names == ("cat", "dog", "owl") and d.layout == "manifest"
    assert d.sizes() == {"train": 24, "val": 6, "test": 9}
    assert values(d.x_train) == {10} and values(d.x_val) == {100} and values(d.x_test) == {200}
    assert d.source == str((tmp_path / "m").resolve()) and not d.left_out
    # without a split column every split is carved, as from class folders
    write_manifest(tmp_path / "n", manifest_rows({"train": 10}), columns=("file_name", "label"))
    carved = load_dataset("folder", str(tmp_path / "n"), image_size=8)
    assert carved.sizes() == {"train": 19, "val": 5, "test": 6}
    # a manifest of another name is named itself
    csv = write_manifest(tmp_path / "o", manifest_rows({"train": 8, "test": 2}), "labels.csv")
    named = load_dataset("folder", str(csv), image_size=8)
    assert named.sizes()["test"] == 6 and named.source == str(csv.resolve())


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows[4].update(file_name="img/gone.png", write=False),
     r"metadata.csv row 5 \(line 6\): no file img/gone.png \(looked for .*img/gone.png\)"),
    (lambda rows: rows[7].update(split="dev"),
     r"metadata.csv row 8 \(line 9\): split 'dev' is not one of train, val, validation, test"),
    (lambda rows: rows[2].update(label=""), r"row 3 \(line 4\): empty 'label'"),
    (lambda rows: rows[3].update(file_name=rows[0]["file_name"], write=False),
     r"row 4 \(line 5\): img/train-owl-0.png is listed again \(first in row 1\)"),
])
def test_manifest_mistakes_name_the_row(tmp_path: Path, change, message: str) -> None:
    rows = manifest_rows({"train": 8, "test": 2})
    change(rows)
    write_manifest(tmp_path / "m", rows)
    with pytest.raises(DataError, match=message) as err:
        load_dataset("folder", str(tmp_path / "m"), image_size=8)
    assert "\n" not in str(err.value)


def test_the_data_digest_follows_the_files_and_labels_not_the_place(tmp_path: Path) -> None:
    write_folder(tmp_path / "a" / "pets")
    a = load_folder(str(tmp_path / "a" / "pets"))
    import shutil
    shutil.copytree(tmp_path / "a" / "pets", tmp_path / "b" / "pets")
    assert load_folder(str(tmp_path / "b" / "pets")).digest == a.digest  # a copy: the same
    (tmp_path / "b" / "pets" / "dog" / "3.png").rename(tmp_path / "b" / "pets" / "cat" / "x.png")
    assert load_folder(str(tmp_path / "b" / "pets")).digest != a.digest  # one relabelled
    assert a.layout == "class folders" and a.source == str((tmp_path / "a" / "pets").resolve())


MANIFEST_MISTAKES = {
    "missing file": (lambda rows: rows[4].update(file_name="img/gone.png", write=False),
                     ("file_name", "label", "split"), "row 5 (line 6): no file img/gone.png"),
    "unknown split": (lambda rows: rows[7].update(split="holdout"),
                      ("file_name", "label", "split"), "split 'holdout' is not one of"),
    "no label column": (lambda rows: None, ("file_name", "split"),
                        "has no 'label' column (its columns: file_name, split)"),
}


@pytest.mark.parametrize("mistake", list(MANIFEST_MISTAKES))
def test_a_bad_manifest_exits_2_before_any_run(mlflow_uri: str, tmp_path: Path, capsys,
                                               mistake: str) -> None:
    from tracking.train import main

    change, columns, expected = MANIFEST_MISTAKES[mistake]
    rows = manifest_rows({"train": 8, "test": 2})
    change(rows)
    write_manifest(tmp_path / "m", rows, columns=columns)
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "concat_cnn", "--dataset", "folder", "--data-dir",
              str(tmp_path / "m"), "--epochs", "1", "--image-size", "16"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m tracking.train: error: manifest ")
    assert expected in err[-1]
    assert mlflow.search_runs(search_all_experiments=True).empty
