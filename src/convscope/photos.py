"""Reading photos for dreams (CLI and notebooks; engines never read files).

:func:`read_photo` opens any image Pillow can read and returns it as a uint8
array — ``(H, W, 3)`` RGB for colour photos, ``(H, W)`` for gray ones — with one
clear :class:`PhotoError` for a missing, empty or non-image file and for
decompression-bomb-sized images (more than :data:`MAX_PIXELS` pixels, checked
from the header before the pixels are decoded). EXIF orientation is applied and
transparency is composited onto white.

:func:`default_photo` is a real photograph that ships with matplotlib (Grace
Hopper, 512×600), so ``convscope dream`` works offline right after install.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Largest image accepted (pixels): a 12000×10000 photo; more is treated as a
#: decompression bomb (a small file that would expand to gigabytes).
MAX_PIXELS = 120_000_000

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


def read_photo(path: str | os.PathLike, *, gray: bool = False, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a photo file.

    Args:
        path: any image Pillow reads (PNG, JPEG, TIFF, BMP, WebP, …).
        gray: return luminance ``(H, W)`` even for colour files.
        max_pixels: refuse images with more pixels (decompression-bomb guard).

    Returns:
        uint8 ``(H, W, 3)`` (colour) or ``(H, W)`` (gray) array.

    Raises:
        PhotoError: missing, empty, not an image, unreadable or too large.
    """
    path = Path(path)
    if not path.exists():
        raise PhotoError(f"no such image file: {path}")
    if path.is_dir():
        raise PhotoError(f"{path} is a folder, not an image file")
    if path.stat().st_size == 0:
        raise PhotoError(f"{path} is empty (0 bytes); give a PNG or JPEG photo")
    try:
        with warnings.catch_warnings():
            # Pillow warns above its MAX_IMAGE_PIXELS (89 Mpx) and raises above twice
            # that; we check our own limit from the header before decoding instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise PhotoError(
                        f"{path} is {width}x{height} = {width * height / 1e6:.0f} megapixels, more than the "
                        f"{max_pixels / 1e6:.0f} megapixel limit (a possible decompression bomb); resize it first"
                    )
                image.load()
                return _to_array(image, gray)
    except PhotoError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PhotoError(
            f"{path} is larger than the {max_pixels / 1e6:.0f} megapixel limit (a possible decompression bomb: "
            f"{exc}); resize it first"
        ) from None
    except UnidentifiedImageError:
        raise PhotoError(f"{path} is not an image Pillow can read; give a PNG or JPEG photo") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PhotoError(f"cannot read image {path}: {exc}") from None


def default_photo_path() -> Path:
    """Path of the photograph that ships with matplotlib (Grace Hopper, 512×600 JPEG)."""
    from matplotlib import cbook

    return Path(cbook.get_sample_data(DEFAULT_PHOTO, asfileobj=False))


def default_photo(*, gray: bool = False) -> np.ndarray:
    """The embedded default photo as uint8 ``(600, 512, 3)`` (or ``(600, 512)`` gray)."""
    return read_photo(default_photo_path(), gray=gray)
