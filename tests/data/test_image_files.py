"""Image files: one pixel limit for every image input (checked from the header before
decoding, overridable), one clear error for each bad file, float images with NaN/inf
refused, and a figure-sized ``original`` for huge inputs."""

from __future__ import annotations

import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from convscope.data.image_files import (
    DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, ImageFileError, max_pixels_limit, open_image_file,
)
from convscope.data.user_image import UserImageError, load_user_image
from convscope.photos import PhotoError, read_photo

sys.path.insert(0, str(Path(__file__).parent))  # helpers beside this file, in any pytest import mode
from datatest_helpers import run_limited  # noqa: E402


@pytest.fixture(autouse=True)
def _no_limit_from_the_environment(monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)


def _digit_page(width: int, height: int) -> Image.Image:
    """White paper with a thick dark '7' in the middle third (mode L)."""
    page = Image.new("L", (width, height), 245)
    draw = ImageDraw.Draw(page)
    x0, y0, x1, y1 = width * 0.4, height * 0.35, width * 0.6, height * 0.65
    stroke = max(2, int(min(width, height) * 0.03))
    draw.line([(x0, y0), (x1, y0), (x0 + (x1 - x0) * 0.3, y1)], fill=20, width=stroke)
    return page


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG with a valid header declaring width × height and a tiny, truncated IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)))


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> Path:
    """The issue's case: a ~0.1 MB PNG of 9000 × 9000 = 81 megapixels."""
    path = tmp_path_factory.mktemp("huge") / "page.png"
    _digit_page(9000, 9000).save(path, optimize=False, compress_level=9)
    return path


def test_a_huge_png_is_refused_from_its_header_with_the_way_out(huge_png, monkeypatch):
    assert huge_png.stat().st_size < 400_000
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self) or None)
    with pytest.raises(ImageFileError) as info:
        open_image_file(huge_png)
    message = str(info.value)
    assert message.startswith(f"{huge_png} is 9000x9000 = 81.0 megapixels, more than the 50 megapixel limit")
    assert f"{MAX_PIXELS_ENV}=81000000" in message and "decompression bomb" in message
    assert decoded == []  # refused before a single pixel was decoded
    with pytest.raises(UserImageError, match="81.0 megapixels"):
        load_user_image(huge_png)
    with pytest.raises(PhotoError, match="81.0 megapixels"):
        read_photo(huge_png)


def test_cli_predict_refuses_the_huge_png_in_bounded_memory(huge_png, tmp_path):
    out = tmp_path / "out"
    run = run_limited(["predict", str(huge_png), "--out", str(out)], {}, address_space=3 << 29)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr and "MemoryError" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "more than the 50 megapixel limit" in lines[0], run.stderr[-2000:]
    assert not out.exists() or not any(out.iterdir())


def test_the_limit_is_an_argument_or_an_environment_variable(tmp_path, monkeypatch):
    path = tmp_path / "digit.png"
    _digit_page(100, 100).save(path)
    assert open_image_file(path, max_pixels=10_000).size == (100, 100)  # exactly at the limit: fine
    with pytest.raises(ImageFileError, match="more than the 0.009999 megapixel limit"):
        open_image_file(path, max_pixels=9_999)
    monkeypatch.setenv(MAX_PIXELS_ENV, "9999")
    assert max_pixels_limit() == 9_999
    with pytest.raises(UserImageError, match=f"{MAX_PIXELS_ENV}=10000"):
        load_user_image(path)
    assert load_user_image(path, max_pixels=20_000).image.shape == (28, 28)  # the argument wins
    monkeypatch.setenv(MAX_PIXELS_ENV, "1e4")
    assert max_pixels_limit() == 10_000 and read_photo(path).shape == (100, 100)
    for bad in ("lots", "-5", "nan", "0"):
        monkeypatch.setenv(MAX_PIXELS_ENV, bad)
        with pytest.raises(ImageFileError, match=f"{MAX_PIXELS_ENV}=.* is not a positive number of pixels"):
            open_image_file(path)
    monkeypatch.delenv(MAX_PIXELS_ENV)
    assert max_pixels_limit() == DEFAULT_MAX_PIXELS == 50_000_000


def test_a_png_just_under_the_limit_works_and_its_original_is_figure_sized(tmp_path):
    path = tmp_path / "big.png"
    _digit_page(7000, 7000).save(path)  # 49 megapixels
    prepared = load_user_image(path)
    assert prepared.image.shape == (28, 28) and prepared.image.max() == 255
    assert max(prepared.original.shape) == 1024 and prepared.original.dtype == np.uint8
    assert prepared.original_scale == pytest.approx(1024 / 2048)  # of the 2048-px working copy
    # The reduced original still shows the digit where it was: dark ink in the middle.
    middle = prepared.original[350:700, 400:620]
    assert middle.min() < 100 and prepared.original[:100, :100].min() > 200
    top, left, bottom, right = prepared.crop_box
    assert 0.3 * 2048 < top < bottom < 0.7 * 2048 and 0.35 * 2048 < left < right < 0.65 * 2048


def test_a_small_file_keeps_its_original_unchanged(tmp_path):
    page = _digit_page(320, 260)
    path = tmp_path / "small.png"
    page.save(path)
    prepared = load_user_image(path)
    assert prepared.original_scale == 1.0
    np.testing.assert_array_equal(prepared.original, np.asarray(page))


def test_beyond_pillows_own_limit_the_message_is_ours(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 40_000, 40_000)  # 1.6 gigapixels in 70 bytes
    with pytest.raises(ImageFileError, match="1600.0 megapixels, more than the 50 megapixel limit"):
        open_image_file(bomb)
    # Even with our limit raised past it, Pillow's DecompressionBombError becomes one clear message.
    monkeypatch.setenv(MAX_PIXELS_ENV, str(4 * 10**9))
    with pytest.raises(ImageFileError, match="1600.0 megapixels, more than Pillow decodes at all"):
        open_image_file(bomb)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_float_tiff_with_non_finite_pixels_is_refused(tmp_path, bad):
    pixels = np.zeros((40, 40), dtype=np.float32)
    pixels[10:30, 18:22] = 1.0
    pixels[5, 5] = bad
    path = tmp_path / "float.tif"
    Image.fromarray(pixels, mode="F").save(path)
    assert Image.open(path).mode == "F"
    with pytest.raises(ImageFileError, match="holds 1 NaN or infinite pixel value"):
        open_image_file(path)
    with pytest.raises(UserImageError, match="NaN or infinite"):
        load_user_image(path)
    with pytest.raises(PhotoError, match="NaN or infinite"):
        read_photo(path)
    pixels[5, 5] = 0.0  # the same image, finite: a digit is found
    Image.fromarray(pixels, mode="F").save(path)
    assert load_user_image(path).image.max() == 255


def test_a_nan_array_is_refused_by_mnistify():
    from convscope.data.user_image import mnistify

    array = np.zeros((30, 30))
    array[10:20, 14:16] = 255
    array[0, 0] = np.nan
    with pytest.raises(UserImageError, match="NaN or infinite"):
        mnistify(array)


def test_a_16_bit_png_is_read(tmp_path):
    pixels = np.full((60, 60), 60000, dtype=np.uint16)
    pixels[15:45, 28:33] = 1000  # dark ink on light paper, 16-bit
    path = tmp_path / "deep.png"
    Image.fromarray(pixels).save(path)
    assert Image.open(path).mode.startswith("I;16")
    prepared = load_user_image(path)
    assert prepared.inverted and prepared.image.max() == 255


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a folder, not an image file"),
        (lambda p: p.write_bytes(b""), r"is empty \(0 bytes\)"),
        (lambda p: p.write_bytes(b"GIF89a this is not really a gif"), "cannot read image|not an image Pillow can read"),
        (lambda p: p.write_text("just some text\n"), "not an image Pillow can read"),
        (lambda p: _png_header_only(p, 50, 50), "cannot read image"),  # truncated pixel data
    ],
    ids=["missing", "folder", "empty", "bad-gif", "text", "truncated-png"],
)
def test_bad_files_give_one_clear_error(tmp_path, make, message):
    path = tmp_path / "input.png"
    make(path)
    with pytest.raises(ImageFileError, match=message) as info:
        open_image_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserImageError, match=str(path)):
        load_user_image(path)
