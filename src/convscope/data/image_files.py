"""Open image files safely: one pixel limit for every image input, checked from the
header before any pixel is decoded, and one clear :class:`ImageFileError` for
everything that can go wrong (missing, folder, empty, unreadable, truncated, too
many pixels, NaN / infinite pixels in a float image).

Used by the user-image loader (``predict``, ``activations`` … on a PNG) and by the
photo reader of ``dream``; engines never read files.

The limit is :data:`DEFAULT_MAX_PIXELS` (50 megapixels, e.g. 8660×5773), raised or
lowered by the ``max_pixels`` argument or the ``CONVSCOPE_MAX_PIXELS`` environment
variable.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

#: Largest image accepted by default (pixels): 50 megapixels.
DEFAULT_MAX_PIXELS = 50_000_000
#: Environment variable that overrides the limit (a whole number of pixels, e.g. 120000000).
MAX_PIXELS_ENV = "CONVSCOPE_MAX_PIXELS"


class ImageFileError(ValueError):
    """An image file that is missing, empty, unreadable, too large or holds non-finite pixels."""


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: ``max_pixels`` if given, else ``$CONVSCOPE_MAX_PIXELS``,
    else :data:`DEFAULT_MAX_PIXELS`.

    Raises:
        ImageFileError: ``$CONVSCOPE_MAX_PIXELS`` is not a positive whole number.
    """
    if max_pixels is not None:
        if int(max_pixels) < 1:
            raise ImageFileError(f"max_pixels must be at least 1, not {max_pixels}")
        return int(max_pixels)
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = float(text)  # "120000000", "120e6"
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 1:
        raise ImageFileError(
            f"{MAX_PIXELS_ENV}={text[:40]!r} is not a positive number of pixels; set it to e.g. 120000000 or unset it"
        )
    return int(value)


def _too_large(path: Path, width: int, height: int, limit: int) -> ImageFileError:
    return ImageFileError(
        f"{path} is {width}x{height} = {width * height / 1e6:.1f} megapixels, more than the "
        f"{limit / 1e6:g} megapixel limit for image inputs (a possible decompression bomb). Resize it, or raise "
        f"the limit with {MAX_PIXELS_ENV}={max(width * height, limit + 1)} (or max_pixels=...) if you trust the file"
    )


def open_image_file(path: str | os.PathLike, *, max_pixels: int | None = None) -> Image.Image:
    """Open and decode an image file, refusing anything unsafe or unreadable.

    The width × height from the file's header is checked against the limit before
    any pixel is decoded; Pillow's own decompression-bomb warning and error never
    escape. Float images (mode ``F``) must hold finite pixels.

    Args:
        path: any image Pillow reads (PNG, JPEG, TIFF, BMP, WebP, …).
        max_pixels: the pixel limit; ``None`` = ``$CONVSCOPE_MAX_PIXELS`` or
            :data:`DEFAULT_MAX_PIXELS`.

    Returns:
        The decoded image (first frame), in the file's own mode; the file is closed.

    Raises:
        ImageFileError: missing file, a folder, an empty or unreadable file, a
            truncated image, more pixels than the limit, or NaN / infinite pixels.
    """
    path = Path(path)
    limit = max_pixels_limit(max_pixels)
    if not path.exists():
        raise ImageFileError(f"{path}: no such file")
    if path.is_dir():
        raise ImageFileError(f"{path} is a folder, not an image file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if size == 0:
        raise ImageFileError(f"{path} is empty (0 bytes); give a PNG or JPEG image")
    return _decode(path, path, limit)


def _decode(source, path: object, limit: int) -> Image.Image:
    """Decode ``source`` (a path or a binary file object) named ``path`` in messages."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own MAX_IMAGE_PIXELS and raises above twice that;
            # our limit, checked from the header below, comes first.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                if width * height > limit:
                    raise _too_large(path, width, height, limit)
                if width < 1 or height < 1:
                    raise ImageFileError(f"{path} has no pixels ({width}x{height})")
                image.load()
    except ImageFileError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow refuses in open(), before we see the size
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found[1]) if found else None
        if pixels is None or pixels > limit:
            what = f"{pixels / 1e6:.1f} megapixels" if pixels else "more pixels"
            raise ImageFileError(
                f"{path} has {what}, more than the {limit / 1e6:g} megapixel limit for image inputs "
                "(a possible decompression bomb). Resize it first"
            ) from None
        raise ImageFileError(
            f"{path} has {pixels / 1e6:.1f} megapixels, more than Pillow decodes at all "
            f"({2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} megapixels). Resize it first"
        ) from None
    except UnidentifiedImageError:
        raise ImageFileError(f"{path} is not an image Pillow can read; give a PNG, JPEG, BMP or TIFF file") from None
    except MemoryError:
        raise ImageFileError(f"{path}: not enough memory to decode it; resize it first") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated / corrupt data, odd modes
        raise ImageFileError(f"cannot read image {path}: {exc or type(exc).__name__}") from None
    if image.mode == "F":
        pixels = np.asarray(image)
        if not np.isfinite(pixels).all():
            bad = int((~np.isfinite(pixels)).sum())
            raise ImageFileError(
                f"{path} holds {bad:,} NaN or infinite pixel value(s) (a float image); they cannot be shown or "
                "analysed: replace them with finite values"
            )
    return image


def open_image_bytes(data: bytes, *, max_pixels: int | None = None, name: str = "the upload") -> Image.Image:
    """:func:`open_image_file` for an image held in memory (an HTTP upload): the same
    pixel limit checked from the header before decoding, the same errors, with
    ``name`` in the messages.

    Raises:
        ImageFileError: empty data, not an image, truncated, too many pixels, NaN pixels.
    """
    import io

    limit = max_pixels_limit(max_pixels)
    if not data:
        raise ImageFileError(f"{name} is empty (0 bytes); give a PNG or JPEG image")
    return _decode(io.BytesIO(data), name, limit)


def preview(gray: np.ndarray, max_side: int = 1024) -> tuple[np.ndarray, float]:
    """A copy of the uint8 ``(H, W)`` image at most ``max_side`` pixels on its long side
    (area-averaged), and the scale used (``1.0`` when it already fits)."""
    height, width = gray.shape[:2]
    long_side = max(height, width)
    if long_side <= max_side:
        return gray, 1.0
    scale = max_side / long_side
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(np.ascontiguousarray(gray)).resize(size, Image.Resampling.BOX)
    return np.asarray(small), scale


__all__ = [
    "DEFAULT_MAX_PIXELS", "ImageFileError", "MAX_PIXELS_ENV", "max_pixels_limit", "open_image_bytes", "open_image_file",
    "preview",
]
