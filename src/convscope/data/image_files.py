"""Open image files safely (minimal version; the reliability work extends it)."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 50_000_000


class ImageFileError(ValueError):
    """A missing, empty, unreadable or oversized image file."""


def open_image_file(path: str | os.PathLike, *, max_pixels: int | None = None) -> Image.Image:
    """Read an image file fully into memory; one clear error for any problem."""
    path = Path(path)
    limit = max_pixels or DEFAULT_MAX_PIXELS
    if not path.exists():
        raise ImageFileError(f"{path}: no such file")
    if path.is_dir():
        raise ImageFileError(f"{path} is a folder, not an image file")
    if path.stat().st_size == 0:
        raise ImageFileError(f"{path} is empty (0 bytes)")
    try:
        with Image.open(path) as handle:
            if handle.width * handle.height > limit:
                raise ImageFileError(f"{path} is {handle.width}×{handle.height}, more than the {limit:,}-pixel limit")
            handle.load()
            return handle.copy()
    except ImageFileError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageFileError(f"{path} is not an image Pillow can read (PNG, JPG, BMP, ...): {exc}") from None
