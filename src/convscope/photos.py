"""Reading photos for dreams (CLI and notebooks; engines never read files).

:func:`read_photo` opens any image Pillow can read and returns it as a uint8
array — ``(H, W, 3)`` RGB for colour photos, ``(H, W)`` for gray ones — with one
clear :class:`PhotoError` for a missing, empty or non-image file, a float image
with NaN / infinite pixels, and decompression-bomb-sized images (more than the
pixel limit every image input shares, :data:`MAX_PIXELS` = 50 megapixels unless
``$CONVSCOPE_MAX_PIXELS`` says otherwise, checked from the header before the
pixels are decoded: :func:`convscope.data.image_files.open_image_file`). EXIF
orientation is applied and transparency is composited onto white.

:func:`default_photo` is a real photograph that ships with matplotlib (Grace
Hopper, 512×600), so ``convscope dream`` works offline right after install.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from convscope.data.image_files import DEFAULT_MAX_PIXELS, ImageFileError, open_image_file

#: The default pixel limit shared by every image input (50 megapixels; more is
#: treated as a decompression bomb). ``$CONVSCOPE_MAX_PIXELS`` overrides it.
MAX_PIXELS = DEFAULT_MAX_PIXELS

DEFAULT_PHOTO = "grace_hopper.jpg"


class PhotoError(ValueError):
    """A file that cannot be used as a photo (missing, empty, not an image, too large)."""


def _to_array(image: Image.Image, gray: bool) -> np.ndarray:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        data = np.asarray(image, dtype=np.float64)
        low, high = float(data.min()), float(data.max())
        scaled = (data - low) / (high - low) * 255.0 if high > low else np.zeros_like(data)
        return scaled.round().astype(np.uint8)
    if gray or image.mode in ("L", "1"):
        return np.array(image.convert("L"), dtype=np.uint8)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def read_photo(path: str | os.PathLike, *, gray: bool = False, max_pixels: int | None = None) -> np.ndarray:
    """Read a photo file.

    Args:
        path: any image Pillow reads (PNG, JPEG, TIFF, BMP, WebP, …).
        gray: return luminance ``(H, W)`` even for colour files.
        max_pixels: refuse images with more pixels (decompression-bomb guard);
            ``None``: ``$CONVSCOPE_MAX_PIXELS`` or :data:`MAX_PIXELS`.

    Returns:
        uint8 ``(H, W, 3)`` (colour) or ``(H, W)`` (gray) array.

    Raises:
        PhotoError: missing, empty, not an image, unreadable, too large, or NaN pixels.
    """
    path = Path(path)
    if not path.exists():
        raise PhotoError(f"no such image file: {path}")
    try:
        image = open_image_file(path, max_pixels=max_pixels)
    except ImageFileError as exc:
        raise PhotoError(str(exc)) from None
    try:
        return _to_array(image, gray)
    except (OSError, ValueError) as exc:
        raise PhotoError(f"cannot read image {path}: {exc}") from None


def default_photo_path() -> Path:
    """Path of the photograph that ships with matplotlib (Grace Hopper, 512×600 JPEG)."""
    from matplotlib import cbook

    return Path(cbook.get_sample_data(DEFAULT_PHOTO, asfileobj=False))


def default_photo(*, gray: bool = False) -> np.ndarray:
    """The embedded default photo as uint8 ``(600, 512, 3)`` (or ``(600, 512)`` gray)."""
    return read_photo(default_photo_path(), gray=gray)
