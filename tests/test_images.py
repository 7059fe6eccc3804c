"""Reading one image file as training, the cache and prediction all do: real files in the
odd shapes users bring (phone photos with EXIF rotation, 16-bit scans, transparency, CMYK)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tracking import predict
from tracking.data.dataset import load_dataset
from tracking.data.images import read_image

ORIENTATION = 0x0112  # the EXIF tag


def two_colour_photo(path: Path, orientation: int | None = None,
                     size: tuple[int, int] = (400, 300)) -> None:
    """A JPEG stored left half red, right half blue, optionally with an EXIF orientation."""
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    pixels[:, :size[0] // 2] = (220, 20, 20)
    pixels[:, size[0] // 2:] = (20, 20, 220)
    exif = Image.Exif()
    if orientation:
        exif[ORIENTATION] = orientation
    Image.fromarray(pixels).save(path, quality=95, exif=exif)


def sixteen_bit_png(path: Path, level: int, size: int = 40) -> None:
    Image.fromarray(np.full((size, size), level, np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"


def test_exif_orientation_stands_phone_photos_upright(tmp_path: Path) -> None:
    two_colour_photo(tmp_path / "plain.jpg")
    two_colour_photo(tmp_path / "rotated.jpg", orientation=6)  # shown turned 90 degrees right
    plain = read_image(tmp_path / "plain.jpg", 32).astype(int)
    rotated = read_image(tmp_path / "rotated.jpg", 32).astype(int)
    assert plain[:, :12, 0].mean() > 180 and plain[:, -12:, 2].mean() > 180  # red | blue
    assert rotated[:12, :, 0].mean() > 180 and rotated[-12:, :, 2].mean() > 180  # red over blue


def test_sixteen_bit_levels_follow_the_source(tmp_path: Path) -> None:
    for level in (0, 8_000, 40_000, 65_535):
        sixteen_bit_png(tmp_path / f"{level}.png", level)
        image = read_image(tmp_path / f"{level}.png", 16)
        assert image.dtype == np.uint8 and image.shape == (16, 16, 3)
        assert np.all(np.abs(image.astype(int) - level / 257) <= 1), (level, image[0, 0])
    # 32-bit integer images holding 16-bit levels (Pillow's mode for 16-bit PGM) read alike
    Image.fromarray(np.full((8, 8), 40_000, np.int32)).save(tmp_path / "i32.tif")
    assert np.all(read_image(tmp_path / "i32.tif", 8) == 156)
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(tmp_path / "half.tif")
    assert np.all(read_image(tmp_path / "half.tif", 8) == 128)  # float intensities in [0, 1]


def test_pixel_values_without_a_rule_are_refused_by_path(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8), 70_000, np.int32)).save(tmp_path / "wide.tif")
    Image.fromarray(np.full((8, 8), 3.5, np.float32)).save(tmp_path / "hdr.tif")
    with pytest.raises(ValueError, match=r"32-bit integer pixels range 70000\.\.70000"):
        read_image(tmp_path / "wide.tif", 8)
    with pytest.raises(ValueError, match=r"float pixels range 3\.5\.\.3\.5"):
        read_image(tmp_path / "hdr.tif", 8)
    with pytest.raises(predict.PredictError, match="cannot read image .*hdr.tif: float"):
        predict.read_images([tmp_path / "hdr.tif"], 8)


def test_sixteen_bit_classes_stay_apart_in_a_folder_data_set(tmp_path: Path) -> None:
    """The issue's case: two classes of 16-bit greyscale at levels 8,000 and 40,000, which
    used to load as 255 everywhere."""
    for name, level in (("dark", 8_000), ("light", 40_000)):
        (tmp_path / "scans" / name).mkdir(parents=True)
        for i in range(10):
            sixteen_bit_png(tmp_path / "scans" / name / f"{i}.png", level + 100 * i)
    d = load_dataset("folder", str(tmp_path / "scans"), image_size=16)
    x = np.concatenate([d.x_train, d.x_val, d.x_test]).astype(int)
    y = np.concatenate([d.y_train, d.y_val, d.y_test])
    assert d.class_names == ("dark", "light")
    assert set(np.unique(x[y == 0])) <= set(range(31, 36))  # 8,000..8,900 >> 8
    assert set(np.unique(x[y == 1])) <= set(range(156, 160))  # 40,000..40,900 >> 8


def test_transparency_palette_cmyk_and_grey_become_rgb(tmp_path: Path) -> None:
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[:, :5] = (0, 0, 255, 255)  # opaque blue | fully transparent black
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert tuple(read_image(tmp_path / "rgba.png", 10)[0, 0]) == (0, 0, 255)
    assert tuple(read_image(tmp_path / "rgba.png", 10)[0, 9]) == (255, 255, 255)  # on white
    Image.fromarray(rgba).convert("P").save(tmp_path / "palette.gif", transparency=0)
    assert read_image(tmp_path / "palette.gif", 10).shape == (10, 10, 3)
    Image.new("CMYK", (12, 12), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    red = read_image(tmp_path / "cmyk.jpg", 12).astype(int)
    assert red[..., 0].min() > 230 and red[..., 1:].max() < 25
    Image.new("L", (12, 12), 77).save(tmp_path / "grey.png")
    assert np.all(read_image(tmp_path / "grey.png", 6) == 77)
    Image.new("1", (12, 12), 1).save(tmp_path / "bilevel.png")
    assert np.all(read_image(tmp_path / "bilevel.png", 6) == 255)


def test_large_jpeg_is_decoded_at_reduced_scale_with_a_close_result(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    smooth.resize((1600, 1200), Image.BICUBIC).save(tmp_path / "big.jpg", quality=92)
    with Image.open(tmp_path / "big.jpg") as img:
        assert img.draft(None, (32, 32))[1][2:] == (200, 150)  # 1/8 scale suffices
        full = np.asarray(Image.open(tmp_path / "big.jpg").convert("RGB")
                          .resize((32, 32), Image.BILINEAR), dtype=int)
    fast = read_image(tmp_path / "big.jpg", 32).astype(int)
    assert np.abs(fast - full).mean() < 2.0


def test_prediction_reads_every_file_exactly_as_training(tmp_path: Path) -> None:
    """Byte for byte: the rows a folder data set trains on are the arrays prediction sends."""
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    rng = np.random.default_rng(2)
    paths = []
    for i in range(8):
        path = root / "a" / f"{i}.jpg"
        two_colour_photo(path, orientation=(6, 8, 3, None)[i % 4], size=(640 + 8 * i, 480))
        paths.append(path)
        path = root / "b" / f"{i}.png"
        if i % 2:
            sixteen_bit_png(path, int(rng.integers(0, 65_536)), size=50 + i)
        else:
            Image.fromarray(rng.integers(0, 256, (30 + i, 45, 4), dtype=np.uint8)).save(path)
        paths.append(path)
    d = load_dataset("folder", str(root), image_size=24, test_split=0.25, val_split=0.34)
    trained_on = np.concatenate([d.x_train, d.x_val, d.x_test])
    sent = predict.read_images(paths, 24)
    assert sorted(map(bytes, trained_on)) == sorted(map(bytes, sent))
