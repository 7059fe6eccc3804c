"""One image file -> one uint8 (size, size, 3) array: the reading that training, the data
cache and prediction share, so a served model sees exactly the pixels it was trained on;
and which files of a folder count as images.

    from tracking.data.images import read_image
    read_image("photo.jpg", 32)  # (32, 32, 3) uint8

Steps, in order (Pillow does each): a JPEG is decoded at reduced scale when the target is
much smaller (`Image.draft`, libjpeg's DCT scaling: at least `size` pixels a side survive);
the EXIF orientation is applied (phone photos stand upright); the pixels are brought to
8-bit RGB by the rules of `to_rgb8`; the image is resized to size x size with Pillow's
bilinear filter (which averages over the whole footprint when shrinking). Only the first
frame of an animated or multi-page file is read. This module imports only NumPy and Pillow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps

# Bump when read_image's output for the same file changes: the data cache is keyed by it.
READER_VERSION = 1
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
BACKGROUND = (255, 255, 255)  # what transparent pixels become: white, as a viewer shows them


class ImageFile(NamedTuple):
    """An image file as found: its path relative to the data folder, size and mtime."""

    path: str  # POSIX-style, relative to the data folder
    size: int  # bytes
    mtime_ns: int


class LeftOut(NamedTuple):
    """A file or folder under a data folder that is not read, and why (`LEFT_OUT_REASONS`)."""

    path: str  # POSIX-style, relative to the data folder
    reason: str


LEFT_OUT_REASONS = {
    "hidden": "a leading dot (.DS_Store, ._IMG_1.JPG, .ipynb_checkpoints)",
    "other suffix": "Pillow may read it, but its suffix is not one the suite reads",
    "not an image": "a suffix no image reader knows",
    "loop": "a linked folder already listed above it (a loop, or a second way to it)",
    "unreadable folder": "the folder cannot be listed",
    "outside a class folder": "at the data folder's top, in no class",
}


def pillow_suffixes() -> frozenset[str]:
    """Every file suffix a Pillow plugin registers (lower case)."""
    Image.init()
    return frozenset(Image.registered_extensions())


def list_images(folder: Path, root: Path, seen: set[tuple[int, int]] | None = None
                ) -> tuple[list[ImageFile], list[LeftOut]]:
    """Image files under `folder` (recursively, sorted by path), relative to `root`, and every
    other entry found there with why it is left out (LeftOut, LEFT_OUT_REASONS): hidden files
    and folders, files whose suffix is not in IMAGE_SUFFIXES (any case; those Pillow could read
    are told apart), folders that cannot be listed. Linked files are read through their link
    (a broken one is kept, so that reading it reports it); linked folders are followed, each
    real folder once, so a loop or a second link to a folder already listed is left out, not
    walked forever; `seen`, the (device, inode) pairs of folders listed elsewhere (a data
    set's class folders), keeps a link to one of them from listing it a second time. Plain
    os.scandir: pathlib costs seconds per 100,000 files."""
    found: list[ImageFile] = []
    left: list[LeftOut] = []
    others = pillow_suffixes() - IMAGE_SUFFIXES
    start = os.stat(folder)
    seen = set() if seen is None else seen
    seen.add((start.st_dev, start.st_ino))
    for above in Path(folder).resolve().parents:  # a link up to here would walk it again
        st = os.stat(above)
        seen.add((st.st_dev, st.st_ino))
    pending = [os.fspath(folder)]
    while pending:
        directory = pending.pop()
        prefix = os.path.relpath(directory, root).replace(os.sep, "/") + "/"
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except OSError:
            left.append(LeftOut(prefix.rstrip("/"), "unreadable folder"))
            continue
        for entry in entries:
            relative = prefix + entry.name
            if entry.name.startswith("."):
                left.append(LeftOut(relative, "hidden"))
                continue
            try:
                is_dir = entry.is_dir()  # follows a link
            except OSError:
                is_dir = False
            if is_dir:
                st = os.stat(entry.path)
                if (st.st_dev, st.st_ino) in seen:
                    left.append(LeftOut(relative, "loop"))
                else:
                    seen.add((st.st_dev, st.st_ino))
                    pending.append(entry.path)
                continue
            suffix = os.path.splitext(entry.name)[1].lower()
            if suffix not in IMAGE_SUFFIXES:
                left.append(LeftOut(relative, "other suffix" if suffix in others
                                    else "not an image"))
                continue
            try:
                st = entry.stat()
            except OSError:  # a broken link: kept, so that reading it reports it
                found.append(ImageFile(relative, -1, 0))
                continue
            found.append(ImageFile(relative, st.st_size, st.st_mtime_ns))
    return sorted(found), sorted(left)


def read_image(path: str | Path, size: int) -> np.ndarray:
    """The image file at `path` as uint8 (size, size, 3).

    Raises OSError (missing, truncated or unknown file: Pillow's message) or ValueError
    (pixel values outside what `to_rgb8` reads); callers add the path to the message.
    """
    with Image.open(path) as img:
        img.draft(None, (size, size))  # JPEG only: decode at 1/2, 1/4 or 1/8 scale
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        return resized(to_rgb8(img), size)


def to_rgb8(img: Image.Image) -> Image.Image:
    """`img` as 8-bit RGB. Rules by Pillow mode:

    - 16-bit greyscale (`I;16*`): the high byte, value >> 8 (so 65,535 -> 255, 40,000 -> 156),
      as Pillow itself reads 16-bit colour PNGs and as scikit-image's `img_as_ubyte` does;
    - 32-bit integer (`I`): read as 16-bit levels, the same shift; values outside 0..65,535
      are refused (ValueError), there is no one right way to squeeze them;
    - 32-bit float (`F`): intensities in [0, 1] (the float-image convention), times 255,
      rounded; values outside [0, 1] or not finite are refused (ValueError);
    - with transparency (RGBA, LA, PA, palette with a transparent colour): composited onto
      white (`BACKGROUND`);
    - everything else (L, 1, P, CMYK, YCbCr, RGB): Pillow's `convert("RGB")`.
    """
    if img.mode in SIXTEEN_BIT_MODES or img.mode == "I":
        levels = np.asarray(img)
        if img.mode == "I" and levels.size and (levels.min() < 0 or levels.max() > 65535):
            raise ValueError(f"32-bit integer pixels range {levels.min()}..{levels.max()}; only "
                             "0..65535 (16-bit levels) can be read: save it with 8 or 16 bits")
        return Image.fromarray((levels.astype(np.uint32) >> 8).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if values.size and not (np.isfinite(values).all() and 0 <= values.min()
                                and values.max() <= 1):
            raise ValueError(f"float pixels range {values.min():g}..{values.max():g}; only "
                             "intensities in [0, 1] can be read: save it with 8 or 16 bits")
        return Image.fromarray(np.round(values * 255).astype(np.uint8)).convert("RGB")
    if img.mode in ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def resized(img: Image.Image, size: int) -> np.ndarray:
    """An 8-bit image brought to (size, size) with Pillow's bilinear filter, as uint8 array
    (N.B. the aspect ratio is not kept: every image fills the square)."""
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def to_rgb_size(x: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W[, C]) uint8 images (C = 1 or 3) -> (N, size, size, 3), each resized as
    `read_image` resizes a file. Returns `x` itself when it already has that shape."""
    x = x if x.ndim == 4 else x[..., None]
    if x.shape[1:3] != (size, size):
        mode = "L" if x.shape[-1] == 1 else "RGB"
        return np.stack([resized(Image.fromarray(im.squeeze(-1) if mode == "L" else im)
                                 .convert("RGB"), size) for im in x])
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x
