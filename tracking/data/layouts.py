"""The layouts a folder data set may come in, listed (not read) into one `Listing`: every image
file with its label and its split, the class names, what was left out and why, and a digest
of the whole (the data set's identity).

    listing = list_layout("photos/")   # Listing: files, labels (N,) int64, parts (N,) int8
    listing.layout                     # "class folders", "split folders" or "manifest"
    listing.digest                     # 16 hex digits over every file's path, size, label, split

Three layouts, told apart in this order:

- a manifest: `ROOT/metadata.csv` (Hugging Face `imagefolder`'s name), or `--data-dir` naming
  a .csv file itself. Columns `file_name` (a path relative to the csv's folder), `label`
  (the class name) and optionally `split` (`train`, `val` or `validation`, `test`); other
  columns are ignored. A missing column or file, an empty label, an unknown split name or a
  file listed twice is a DataError naming the row.
- split folders: every folder at ROOT's top is a split name (`train`, `val` or
  `validation`, `test`, in any case) and `train` is one of them, each holding one folder per
  class (the layout of TFDS `ImageFolder` and Hugging Face `imagefolder`). A top mixing
  split folders and other folders is a DataError: a class may not be named like a split.
- class folders: one folder per class at ROOT's top (`keras.utils.image_dataset_from_directory`).

Class names are the sorted union over the splits. With given splits, every class must be
in train and in every other given split (DataError, one line, naming the class and the
split), as the carved splits must hold every class (`tracking.data.splits`). A split that
is not given is carved from train by `tracking.data.dataset.load_dataset` (--test-split,
--val-split). Which files of a class folder count is `tracking.data.images.list_images`'s.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from tracking.data.images import IMAGE_SUFFIXES, ImageFile, LeftOut, list_images
from tracking.errors import UsageError

MANIFEST = "metadata.csv"  # at a data folder's top: the folder is read through it
FILE_COLUMN, LABEL_COLUMN, SPLIT_COLUMN = "file_name", "label", "split"
PARTS = ("train", "val", "test")  # the values of Listing.parts: 0, 1, 2
SPLIT_NAMES = {"train": 0, "val": 1, "validation": 1, "test": 2}  # spelling -> part
CLASS_FOLDERS, SPLIT_FOLDERS, MANIFEST_LAYOUT = "class folders", "split folders", "manifest"
Classes = dict[str, list[ImageFile]]  # class name -> its files


class DataError(UsageError):
    """A data set cannot be found or read; the message says where and how to fix it."""


@dataclass(frozen=True)
class Listing:
    """A folder data set as listed: files in row order (by split, then class, then path),
    their labels and splits, nothing read yet."""

    root: Path  # the files' paths are relative to it
    source: str  # what was read: the folder (resolved), or the manifest's resolved path
    layout: str  # CLASS_FOLDERS, SPLIT_FOLDERS or MANIFEST_LAYOUT
    files: tuple[ImageFile, ...]
    labels: np.ndarray  # (N,) int64 into class_names
    parts: np.ndarray  # (N,) int8 into PARTS: 0 train (the pool the other splits are carved from)
    class_names: tuple[str, ...]
    left_out: tuple[LeftOut, ...]  # entries not read, and why (none for a manifest)
    digest: str  # identity_digest of the above

    def given(self, part: str) -> bool:
        """Whether the layout gives split `part` (else it is carved from train)."""
        return bool(np.any(self.parts == PARTS.index(part)))

    def rows(self, part: str) -> np.ndarray:
        """Row numbers (int64) of split `part`."""
        return np.flatnonzero(self.parts == PARTS.index(part))


def identity_digest(files: tuple[ImageFile, ...], labels: np.ndarray, parts: np.ndarray,
                    class_names: tuple[str, ...]) -> str:
    """16 hex digits of SHA-256 over the class names and every file's split, class name,
    path (relative to the data folder) and size in bytes, in row order: the same files with
    the same labels in the same splits give the same digest wherever the folder lies and
    whenever they were copied (no modification time); an added, removed, resized, moved or
    relabelled file gives another."""
    h = hashlib.sha256("\0".join(class_names).encode())
    for f, label, part in zip(files, labels.tolist(), parts.tolist(), strict=True):
        h.update(f"\n{PARTS[part]}\0{class_names[label]}\0{f.path}\0{f.size}".encode())
    return h.hexdigest()[:16]


def list_layout(data_dir: str) -> Listing:
    """The data set at `data_dir` in whichever layout it has (module docstring). Raises
    DataError (one line) when it is missing, has fewer than two classes, a class without
    images, or a split without a class train has (or the reverse)."""
    path = Path(data_dir)
    if path.is_file() and path.suffix.lower() == ".csv":
        return read_manifest(path)
    if not path.is_dir():
        raise DataError(f"data folder {path} does not exist or is not a folder")
    if (path / MANIFEST).is_file():
        return read_manifest(path / MANIFEST)
    left: list[LeftOut] = []
    # the data folder and every folder above it: a link to any of them would walk the data
    # folder (or more) into a class; and each class folder once (a linked copy is no class)
    above = [path.resolve(), *path.resolve().parents]
    seen = {(st.st_dev, st.st_ino) for st in map(os.stat, above)}
    top = subfolders(path, path, seen, left)
    splits = [d for d in top if d.name.lower() in SPLIT_NAMES]
    if not splits:
        return finish(path, str(path.resolve()), CLASS_FOLDERS,
                      {"train": class_files(top, path, seen, left)}, left, {"train": "train"})
    others = [d.name for d in top if d not in splits]
    if others or "train" not in [d.name.lower() for d in splits]:
        raise DataError(
            f"data folder {path} holds split folders ({', '.join(d.name for d in splits)}) "
            + (f"beside other folders ({', '.join(others[:5])}): a split layout has only "
               "train, val or validation, and test at its top (move the class folders into "
               "them, or rename a class folder named like a split)" if others else
               "but no train folder: the other splits are checked against train's classes"))
    given: dict[str, Path] = {}
    for folder in splits:
        part = PARTS[SPLIT_NAMES[folder.name.lower()]]
        if part in given:
            raise DataError(f"data folder {path} holds two {part} folders "
                            f"({given[part].name}, {folder.name}): keep one")
        given[part] = folder
    # every split's class folders first, so a link from one split into another's class
    # folder is the second way to it (a loop), whichever split is walked first
    class_dirs = {part: subfolders(folder, path, seen, left) for part, folder in given.items()}
    return finish(path, str(path.resolve()), SPLIT_FOLDERS,
                  {part: class_files(dirs, path, seen, left) for part, dirs in class_dirs.items()},
                  left, {part: f"{folder.name}/" for part, folder in given.items()})


def subfolders(folder: Path, root: Path, seen: set[tuple[int, int]], left: list[LeftOut]
               ) -> list[Path]:
    """The folders at `folder`'s top, sorted by name; every other entry there goes to
    `left` with its reason (hidden, outside a class folder, loop: a folder already in
    `seen`, the (device, inode) pairs of the folders listed so far, to which these are
    added)."""
    out = []
    for entry in sorted(folder.iterdir()):
        relative = entry.relative_to(root).as_posix()
        if entry.name.startswith("."):
            left.append(LeftOut(relative, "hidden"))
        elif entry.is_dir():
            st = os.stat(entry)
            if (st.st_dev, st.st_ino) in seen:
                left.append(LeftOut(relative, "loop"))
                continue
            seen.add((st.st_dev, st.st_ino))
            out.append(entry)
        else:
            left.append(LeftOut(relative, "outside a class folder"))
    return out


def class_files(class_dirs: list[Path], root: Path, seen: set[tuple[int, int]],
                left: list[LeftOut]) -> Classes:
    """Each class folder's image files (`list_images`, paths relative to `root`), by class
    name; what they leave out goes to `left`. DataError for a class folder without images."""
    out: Classes = {}
    for class_dir in class_dirs:
        found, skipped = list_images(class_dir, root, seen)
        if not found:
            raise DataError(f"class folder {class_dir} has no readable images "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        out[class_dir.name] = found
        left += skipped
    return out


def finish(root: Path, source: str, layout: str, parts: dict[str, Classes],
           left: list[LeftOut], where: dict[str, str]) -> Listing:
    """One Listing from each given split's files by class: the class names (sorted union),
    checked so that every class is in train and in every other given split. `where` names
    each given split's place for the messages (`test/`, `the manifest's 'test' rows`)."""
    names = tuple(sorted(set().union(*(set(classes) for classes in parts.values()))))
    if len(names) < 2:
        kind = "labels" if layout == MANIFEST_LAYOUT else "subfolders"
        raise DataError(f"data folder {root} must hold at least two class {kind}, "
                        f"found {len(names)}")
    for part, classes in parts.items():
        if part == "train":
            continue
        extra = sorted(set(classes) - set(parts["train"]))
        if extra:
            raise DataError(f"{root}: class {', '.join(extra[:5])} is in {where[part]} but "
                            f"not in {where['train']}: a model cannot learn a class it never "
                            "sees; add its training images or remove it")
        missing = sorted(set(names) - set(classes))
        if missing:
            raise DataError(f"{root}: class {', '.join(missing[:5])} has no image in "
                            f"{where[part]}: every class needs images in every split (add "
                            f"them, or drop that split to carve it from train)")
    files: list[ImageFile] = []
    labels: list[int] = []
    splits: list[int] = []
    for part in PARTS:
        for label, name in enumerate(names):
            found = parts.get(part, {}).get(name, [])
            files += found
            labels += [label] * len(found)
            splits += [PARTS.index(part)] * len(found)
    y, p, files_ = np.asarray(labels, np.int64), np.asarray(splits, np.int8), tuple(files)
    return Listing(root, source, layout, files_, y, p, names, tuple(sorted(left)),
                   identity_digest(files_, y, p, names))


def read_manifest(csv_path: Path) -> Listing:
    """The data set a manifest lists (module docstring): rows sorted by split, class and path.
    Raises DataError naming the row (its number among the data rows, and its line) for a
    missing file, an empty label, an unknown split or a file listed twice, and naming the
    columns when `file_name` or `label` is absent."""
    root = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            for column in (FILE_COLUMN, LABEL_COLUMN):
                if column not in columns:
                    raise DataError(
                        f"manifest {csv_path} has no {column!r} column (its columns: "
                        f"{', '.join(columns) or 'none'}): name the image paths' column "
                        f"{FILE_COLUMN!r} and the class column {LABEL_COLUMN!r}")
            reader.fieldnames = columns
            rows = [(number, reader.line_num, row)
                    for number, row in enumerate(reader, start=1)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read manifest {csv_path}: {err}") from None
    parts: dict[str, Classes] = {}
    first_row: dict[str, int] = {}
    for number, line, row in rows:
        at = f"manifest {csv_path} row {number} (line {line})"
        name = (row.get(FILE_COLUMN) or "").strip()
        label = (row.get(LABEL_COLUMN) or "").strip()
        split = (row.get(SPLIT_COLUMN) or "").strip().lower() \
            if SPLIT_COLUMN in columns else "train"
        if not name or PurePosixPath(name).is_absolute():
            raise DataError(f"{at}: {FILE_COLUMN} must be a path relative to the manifest's "
                            f"folder, got {name!r}")
        path = PurePosixPath(name).as_posix()
        if path in first_row:
            raise DataError(f"{at}: {path} is listed again (first in row {first_row[path]}): "
                            "list each file once")
        first_row[path] = number
        try:
            st = os.stat(root / path)
            if not os.path.isfile(root / path):
                raise FileNotFoundError
        except OSError:
            raise DataError(f"{at}: no file {path} (looked for {root / path}): fix the "
                            "path or remove the row") from None
        if not label:
            raise DataError(f"{at}: empty {LABEL_COLUMN!r}: give every file its class")
        if split not in SPLIT_NAMES:
            raise DataError(f"{at}: split {split!r} is not one of "
                            f"{', '.join(SPLIT_NAMES)}")
        part = PARTS[SPLIT_NAMES[split]]
        parts.setdefault(part, {}).setdefault(label, []).append(
            ImageFile(path, st.st_size, st.st_mtime_ns))
    if not rows:
        raise DataError(f"manifest {csv_path} lists no files")
    if "train" not in parts:
        raise DataError(f"manifest {csv_path} has no row of split 'train': the other splits "
                        "are checked against train's classes")
    parts = {part: {name: sorted(found) for name, found in classes.items()}
             for part, classes in parts.items()}
    source = csv_path.resolve()
    return finish(root, str(source if csv_path.name != MANIFEST else source.parent),
                  MANIFEST_LAYOUT, parts, [],
                  {part: f"the manifest's {part!r} rows" for part in parts})
