"""The decoded-image cache: a folder's images read once with `tracking.data.images.read_image`,
kept on disk as one uint8 .npy array that later runs read instead of decoding again.

    cached = cached_images(root, files, image_size)   # files: ImageFile list, in row order
    cached.shape        # (N, S, S, 3): uint8 images in the .npy file cached.path
    cached.unreadable   # {row: Pillow's message} for files that could not be read
    x = take(cached, rows, in_memory=True)  # those rows: an array, or a memory-mapped file

Where: $KERAS_MLFLOW_SUITE_CACHE, else $XDG_CACHE_HOME/keras-mlflow-suite, else
~/.cache/keras-mlflow-suite. Each (file list, image size) gets `images-<key>.npy` and
`images-<key>.json`; the key hashes every file's path under the folder, size and
modification time (in row order), the image size, `READER_VERSION` and Pillow's version, so a
changed, added or removed file makes a new key. The .json is written last and holds the
array's shape and CRC-32: a cache without it, with another shape, or whose bytes do not match
it (a killed write, a truncated or overwritten file) is rebuilt, never used. Delete the
folder to reclaim the space; nothing else is kept there.

The cache file is written and read with plain positioned reads and writes (`os.pwrite`,
`os.preadv`), not mapped: resident memory holds the images being copied out and no more.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import socket
import sys
import tempfile
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
from tqdm import tqdm

from tracking.data.images import READER_VERSION, ImageFile, read_image
from tracking.errors import UsageError
from tracking.machine import CACHE_ENV, cache_dir

CHUNK = 64  # files per decoding task: small enough for a smooth progress bar
READ_BLOCK = 16 << 20  # bytes per read while checking a cache's CRC-32
TAKE_BLOCK = 1024  # rows read in file order before they are written to their places


class CacheError(UsageError):
    """The cache folder cannot be written; the message names it and the variable to set."""


@dataclass(frozen=True)
class CachedImages:
    """A folder's images at one size in the cache file `path` (.npy, C order, uint8)."""

    path: Path
    offset: int  # bytes before the first image: the .npy header
    shape: tuple[int, int, int, int]  # (N, S, S, 3)
    unreadable: dict[int, str]  # row -> why its file could not be read (its row is zeros)

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:]))


def cache_key(files: Sequence[ImageFile], image_size: int) -> str:
    """SHA-256 (hex) of the file list (path, size, mtime in ns, in order), the image size, the
    reader's version and Pillow's version."""
    h = hashlib.sha256(json.dumps([image_size, READER_VERSION, PIL.__version__]).encode())
    for f in files:
        h.update(f"\n{f.path}\0{f.size}\0{f.mtime_ns}".encode())
    return h.hexdigest()


def cached_images(root: Path, files: Sequence[ImageFile], image_size: int,
                  stop_at_unreadable: bool = True) -> CachedImages:
    """The images of `files` (paths relative to `root`) at `image_size`, from the cache, or
    decoded now (in parallel, with a progress bar on a terminal) and cached.

    With `stop_at_unreadable`, decoding stops at the first unreadable file and nothing is
    cached (`path` does not exist): `unreadable` names it for the caller to report.
    Otherwise such files are recorded in `unreadable` (also in the cache) and left zeros.
    Raises CacheError when the cache folder cannot be written.
    """
    key = cache_key(files, image_size)
    npy = cache_dir() / f"images-{key[:32]}.npy"
    meta = npy.with_suffix(".json")
    shape = (len(files), image_size, image_size, 3)
    if npy.exists() or meta.exists():
        problem = cache_problem(npy, meta, key, shape)
        if problem is None:
            return open_cache(npy, meta)
        print(f"image cache {npy}: {problem}; rebuilding it", file=sys.stderr)
    try:
        unreadable = build(root, files, image_size, npy, meta, key, stop_at_unreadable)
    except OSError as err:
        raise CacheError(f"cannot write the image cache in {npy.parent} ({err}); set "
                         f"{CACHE_ENV} to a writable folder with space") from None
    if unreadable and stop_at_unreadable:
        return CachedImages(npy, 0, shape, unreadable)
    return open_cache(npy, meta)


def cache_problem(npy: Path, meta: Path, key: str, shape: tuple[int, ...]) -> str | None:
    """Why the cache files cannot be trusted, or None when they can (CRC-32 checked)."""
    try:
        info = json.loads(meta.read_text())
        if info.get("key") != key or tuple(info.get("shape", ())) != shape:
            return "its description does not match the files"
        if npy.stat().st_size != info["bytes"]:
            return f"{npy.stat().st_size} bytes instead of {info['bytes']} (an interrupted write?)"
        if file_crc32(npy) != info["crc32"]:
            return "its contents changed since it was written (CRC-32 differs)"
        if open_cache(npy, meta).shape != shape:
            return "its header does not match the files"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable or incomplete ({type(err).__name__}: {err})"
    return None


def file_crc32(path: Path) -> int:
    """CRC-32 of a file's bytes, read in blocks (plain reads: nothing stays mapped)."""
    crc = 0
    buffer = bytearray(READ_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            crc = zlib.crc32(view[:n], crc)
    return crc


def open_cache(npy: Path, meta: Path) -> CachedImages:
    """A checked cache file's description (its .npy header and the .json)."""
    with open(npy, "rb") as f:
        if np.lib.format.read_magic(f) != (1, 0):
            raise OSError(f"{npy}: not a version 1.0 .npy file")
        shape, _, _ = np.lib.format.read_array_header_1_0(f)
        offset = f.tell()
    unreadable = json.loads(meta.read_text())["unreadable"]
    return CachedImages(npy, offset, shape, {int(k): v for k, v in unreadable.items()})


def build(root: Path, files: Sequence[ImageFile], image_size: int, npy: Path, meta: Path,
          key: str, stop_at_unreadable: bool) -> dict[int, str]:
    """Decode every file into `<npy>.partial-<host>-<pid>`, then rename it to `npy` and write
    `meta` (also by rename): a killed build leaves no file that looks complete."""
    npy.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_partials(npy.parent)
    partial = npy.with_name(f"{npy.name}.partial-{socket.gethostname()}-{os.getpid()}")
    shape = (len(files), image_size, image_size, 3)
    print(f"reading {len(files)} images of {root} at {image_size}x{image_size} into "
          f"{npy}", file=sys.stderr)
    try:
        with open(partial, "wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "|u1", "fortran_order": False, "shape": shape})
            offset = f.tell()
            f.truncate(offset + int(np.prod(shape)))  # sparse: rows are written in place
            unreadable = decode_all(root, files, image_size, f.fileno(), offset,
                                    stop_at_unreadable)
        if unreadable and stop_at_unreadable:
            return unreadable
        info = {"key": key, "shape": list(shape), "bytes": partial.stat().st_size,
                "crc32": file_crc32(partial),
                "unreadable": {str(k): v for k, v in sorted(unreadable.items())},
                "root": str(root), "reader_version": READER_VERSION}
        os.replace(partial, npy)
        meta_partial = meta.with_name(partial.name + ".json")
        meta_partial.write_text(json.dumps(info, indent=1))
        os.replace(meta_partial, meta)
    finally:
        partial.unlink(missing_ok=True)
    return unreadable


def remove_dead_partials(directory: Path) -> None:
    """Delete partial files left by killed builds of this host (their pid is gone)."""
    host = socket.gethostname()
    for path in directory.glob(f"*.partial-{host}-*"):
        pid = path.name.rsplit("-", 1)[-1].split(".")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def decode_all(root: Path, files: Sequence[ImageFile], size: int, fd: int, offset: int,
               stop_at_unreadable: bool) -> dict[int, str]:
    """Write `read_image(root / files[i].path, size)` at row i of the array that starts at
    `offset` in file `fd`, in parallel threads (Pillow releases the GIL while decoding and
    resizing, os.pwrite while writing). Returns {row: message} of unreadable files; with
    `stop_at_unreadable` the first one ends the work early."""
    row_bytes = size * size * 3
    unreadable: dict[int, str] = {}
    stop = threading.Event()

    def chunk(start: int) -> int:
        for i in range(start, min(start + CHUNK, len(files))):
            if stop.is_set():
                break
            try:
                image = read_image(root / files[i].path, size)
            except Exception as err:  # Pillow raises many types for a bad file
                unreadable[i] = f"{type(err).__name__}: {err}".splitlines()[0]
                if stop_at_unreadable:
                    stop.set()
                continue
            os.pwrite(fd, image, offset + i * row_bytes)
        return min(CHUNK, len(files) - start)

    pool = concurrent.futures.ThreadPoolExecutor(min(len(os.sched_getaffinity(0)), 8))
    bar = tqdm(total=len(files), unit="img", desc="reading images", smoothing=0.1,
               disable=not sys.stderr.isatty())
    try:
        for done in concurrent.futures.as_completed(
                [pool.submit(chunk, start) for start in range(0, len(files), CHUNK)]):
            bar.update(done.result())
    finally:  # Ctrl-C: the running chunks stop at their next file, the queued ones never start
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return unreadable


def available_memory() -> int:
    """Bytes the kernel reports as available (MemAvailable), else the physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def take(cached: CachedImages, rows: np.ndarray, in_memory: bool) -> np.ndarray:
    """The cached images of `rows`, in that order: an in-memory array, or (not `in_memory`)
    a writable np.memmap over an unnamed temporary file in the cache folder, which the system
    removes when the array is gone. Copies through a block of `TAKE_BLOCK` rows, read in file
    order, so resident memory holds the result (or one block) only."""
    shape = (len(rows), *cached.shape[1:])
    row_bytes = cached.row_bytes
    block = np.empty((min(TAKE_BLOCK, len(rows)), *shape[1:]), np.uint8)
    out = np.empty(shape, np.uint8) if in_memory else None
    target = None if in_memory else tempfile.TemporaryFile(dir=cache_dir())
    with open(cached.path, "rb", buffering=0) as source:
        for start in range(0, len(rows), TAKE_BLOCK):
            part = rows[start:start + TAKE_BLOCK]
            into = out[start:start + len(part)] if in_memory else block[:len(part)]
            for j in np.argsort(part, kind="stable"):  # front to back through the file
                if os.preadv(source.fileno(), [into[j]],
                             cached.offset + int(part[j]) * row_bytes) != row_bytes:
                    raise OSError(f"{cached.path} is shorter than its header says")
            if target is not None:
                os.pwrite(target.fileno(), into, start * row_bytes)
    if target is None:
        return out
    with target:  # the mapping keeps the file's data; its descriptor can go
        return np.memmap(target, dtype=np.uint8, mode="r+", shape=shape)
