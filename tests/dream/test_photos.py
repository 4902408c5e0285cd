"""Reading photos: clear errors for bad files, the embedded default photo."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convscope.photos import PhotoError, default_photo, read_photo


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims ``width × height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_default_photo_ships_with_matplotlib() -> None:
    photo = default_photo()
    assert photo.shape == (600, 512, 3) and photo.dtype == np.uint8
    assert 40 < photo.mean() < 220 and photo.std() > 30  # a real photo, not blank
    assert default_photo(gray=True).shape == (600, 512)


def test_reads_colour_gray_and_transparent_images(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert np.array_equal(read_photo(tmp_path / "a.png"), rgb)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    assert read_photo(tmp_path / "g.png").shape == (40, 50)
    rgba = np.zeros((30, 30, 4), dtype=np.uint8)  # fully transparent → white
    Image.fromarray(rgba).save(tmp_path / "t.png")
    assert read_photo(tmp_path / "t.png").min() == 255


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("notes.txt", b"this is not an image\n", "not an image"),
        ("empty.png", b"", "empty"),
        ("broken.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 40, "cannot read image|not an image"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PhotoError, match=message):
        read_photo(path)


def test_missing_file_and_decompression_bomb(tmp_path: Path) -> None:
    with pytest.raises(PhotoError, match="no such image file"):
        read_photo(tmp_path / "nope.png")
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 40_000, 40_000)  # 1.6 gigapixels in ~60 bytes
    assert bomb.stat().st_size < 100
    with pytest.raises(PhotoError, match="megapixel limit.*decompression bomb"):
        read_photo(bomb)
    small = tmp_path / "small.png"
    Image.new("L", (100, 100)).save(small)
    with pytest.raises(PhotoError, match="decompression bomb"):
        read_photo(small, max_pixels=5_000)


def test_a_float_image_with_nan_pixels_is_refused(tmp_path: Path) -> None:
    """A 32-bit float TIFF with one NaN is not read as a black photo (issue 14)."""
    data = np.linspace(0, 1, 40 * 50, dtype=np.float32).reshape(40, 50)
    Image.fromarray(data, mode="F").save(tmp_path / "fine.tif")
    assert read_photo(tmp_path / "fine.tif").std() > 50  # scaled to 0..255, not black
    data[7, 9] = np.nan
    Image.fromarray(data, mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(PhotoError, match="NaN or infinite"):
        read_photo(tmp_path / "nan.tif")
    data[7, 9] = np.inf
    Image.fromarray(data, mode="F").save(tmp_path / "inf.tif")
    with pytest.raises(PhotoError, match="NaN or infinite"):
        read_photo(tmp_path / "inf.tif")
