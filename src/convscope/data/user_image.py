"""Turn a user's PNG/JPG (or any image array) into an MNIST-style 28×28 digit.

The MNIST digits were made this way (LeCun et al.): white ink on a black
background, the digit's bounding box scaled to fit a 20×20 box (keeping the
aspect ratio, anti-aliased), then placed in a 28×28 field so that the centre of
mass of the ink sits at the centre. :func:`mnistify` repeats those steps:

1. grayscale (an alpha channel is composited onto the colour that contrasts
   with the ink);
2. invert when the background (median of the border pixels) is light, so the
   ink is bright on dark;
3. subtract the background level and stretch the ink to 0..255;
4. crop to the ink (pixels above ``ink_threshold`` × the brightest ink);
5. resize so the longer side is ``box`` (20) pixels, keeping the aspect ratio;
6. paste into a ``size`` × ``size`` (28×28) field, shifted so the ink's centre
   of mass is at the centre.

Engines never read files; :func:`load_user_image` is for the CLI and notebooks.
It opens files through :func:`convscope.data.image_files.open_image_file` (one
pixel limit for every image input, checked before decoding), and works on a copy
at most :data:`WORKING_MAX_SIDE` pixels on its long side (the digit ends up 20
pixels tall anyway).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from convscope.data.image_files import ImageFileError, open_image_file, preview

#: Long side of the copy a user file is processed at (larger files are reduced first).
WORKING_MAX_SIDE = 2048
#: Long side of :attr:`PreparedImage.original` (kept for figures only).
ORIGINAL_MAX_SIDE = 1024


class UserImageError(ValueError):
    """A file that is not a readable image, or an image without any ink."""


@dataclass(frozen=True)
class PreparedImage:
    """A user image converted to MNIST style.

    Attributes:
        image: ``(28, 28)`` uint8, white ink on black, centred by mass.
        original: the input as a ``(H, W)`` uint8 grayscale array (before
            inversion), for figures: reduced to at most 1024 pixels on its long
            side, so drawing it stays cheap.
        inverted: whether the background was light and the image was inverted.
        crop_box: ``(top, left, bottom, right)`` of the ink in the input's pixel
            coordinates (bottom/right exclusive); multiply by ``original_scale``
            for ``original``'s.
        original_scale: ``original``'s size / the input's size (``1.0`` unless reduced).
    """

    image: np.ndarray
    original: np.ndarray
    inverted: bool
    crop_box: tuple[int, int, int, int]
    original_scale: float = 1.0


def _to_grayscale(image: Image.Image) -> np.ndarray:
    """PIL image of any mode → float ``(H, W)`` 0..255."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
        alpha = rgba[..., 3] / 255.0
        gray = np.asarray(image.convert("RGBA").convert("L"), dtype=np.float64)
        if alpha.min() < 1.0:
            opaque = alpha > 0.5
            # Composite onto the colour that contrasts with the (mostly opaque) ink.
            ink_level = gray[opaque].mean() if opaque.any() else 0.0
            background = 255.0 if ink_level < 128 else 0.0
            return gray * alpha + background * (1.0 - alpha)
        return gray
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        array = np.asarray(image, dtype=np.float64)
        if not np.isfinite(array).all():
            raise UserImageError("the image holds NaN or infinite pixel values; replace them with finite values")
        low, high = float(array.min()), float(array.max())
        return (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    return np.asarray(image.convert("L"), dtype=np.float64)


def mnistify(
    image: np.ndarray | Image.Image,
    *,
    size: int = 28,
    box: int = 20,
    ink_threshold: float = 0.2,
    invert: bool | None = None,
) -> PreparedImage:
    """Convert a grayscale / RGB(A) image to an MNIST-style digit.

    Args:
        image: a PIL image, or an array ``(H, W)`` / ``(H, W, 3|4)`` with values
            0..255 (any dtype).
        size: output side length (28).
        box: side of the box the digit is fitted into (20, as in MNIST).
        ink_threshold: pixels brighter than this fraction of the brightest ink
            (after background removal) count as ink for the crop.
        invert: force (``True``) or forbid (``False``) inversion; ``None`` decides
            from the border pixels (light background → invert).

    Returns:
        :class:`PreparedImage` with the ``(size, size)`` uint8 digit.

    Raises:
        UserImageError: the image is empty or holds no ink.
    """
    if isinstance(image, Image.Image):
        gray = _to_grayscale(image)
    else:
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[2] in (3, 4):
            mode = "RGBA" if array.shape[2] == 4 else "RGB"
            gray = _to_grayscale(Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode))
        elif array.ndim == 2:
            gray = array.astype(np.float64)
        else:
            raise UserImageError(f"expected an image of shape (H, W) or (H, W, 3/4); got {array.shape}")
    if gray.size == 0 or min(gray.shape) < 1:
        raise UserImageError("the image is empty (0 pixels)")
    if not np.isfinite(gray).all():
        raise UserImageError("the image holds NaN or infinite pixel values; replace them with finite values")
    original, original_scale = preview(np.clip(np.rint(gray), 0, 255).astype(np.uint8), ORIGINAL_MAX_SIDE)

    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    inverted = background > 127.5 if invert is None else bool(invert)
    ink = 255.0 - gray if inverted else gray.copy()
    ink_background = 255.0 - background if inverted else background
    ink = np.clip(ink - ink_background, 0.0, None)
    peak = float(ink.max())
    if peak <= 8.0:  # less than ~3 % contrast: no digit to find
        raise UserImageError(
            "no ink found: the image is uniform (or the digit has the same brightness as the background)"
        )
    ink = ink * (255.0 / peak)

    rows = np.flatnonzero((ink > ink_threshold * 255.0).any(axis=1))
    cols = np.flatnonzero((ink > ink_threshold * 255.0).any(axis=0))
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    crop = ink[top:bottom, left:right]
    height, width = crop.shape
    scale = box / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = Image.fromarray(crop.astype(np.float32), mode="F").resize((new_w, new_h), Image.Resampling.LANCZOS)
    small = np.clip(np.asarray(resized, dtype=np.float64), 0.0, 255.0)

    total = small.sum()
    if total <= 0:
        raise UserImageError("no ink left after resizing the digit to 20x20")
    ys, xs = np.indices(small.shape)
    com_y, com_x = float((ys * small).sum() / total), float((xs * small).sum() / total)
    centre = (size - 1) / 2.0
    off_y = int(np.clip(round(centre - com_y), 0, size - new_h))
    off_x = int(np.clip(round(centre - com_x), 0, size - new_w))
    canvas = np.zeros((size, size), dtype=np.float64)
    canvas[off_y : off_y + new_h, off_x : off_x + new_w] = small
    digit = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return PreparedImage(
        image=digit, original=original, inverted=inverted, crop_box=(top, left, bottom, right),
        original_scale=original_scale,
    )


def _working_copy(image: Image.Image, max_side: int = WORKING_MAX_SIDE) -> Image.Image:
    """``image`` reduced (area-averaged) to at most ``max_side`` pixels on its long side."""
    width, height = image.size
    if max(width, height) <= max_side:
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        image = image.convert("F")  # high-bit-depth gray: resample as float
    elif image.mode == "1":
        image = image.convert("L")
    elif image.mode in ("P", "PA"):
        image = image.convert("RGBA")  # Pillow resamples palettes by nearest neighbour only
    elif image.mode not in ("L", "LA", "RGB", "RGBA", "F"):
        image = image.convert("RGB")
    scale = max_side / max(width, height)
    return image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BOX)


def load_user_image(path: str | os.PathLike, *, max_pixels: int | None = None, **options) -> PreparedImage:
    """Read a PNG/JPG/... file and convert it with :func:`mnistify`.

    Args:
        path: the image file.
        max_pixels: pixel limit (``None``: ``$CONVSCOPE_MAX_PIXELS`` or 50 megapixels).
        **options: passed to :func:`mnistify`.

    Files larger than 2048 pixels on their long side are reduced to that size
    first; ``crop_box`` then refers to the reduced copy.

    Raises:
        UserImageError: missing, empty, unreadable or too large a file, NaN pixels,
            or no ink in it.
    """
    path = Path(path)
    if not path.exists():
        raise UserImageError(f"{path}: no such file (give an image file, or test:INDEX / train:INDEX)")
    try:
        image = open_image_file(path, max_pixels=max_pixels)
    except ImageFileError as exc:
        raise UserImageError(str(exc)) from None
    try:
        return mnistify(_working_copy(image), **options)
    except UserImageError as exc:
        raise UserImageError(f"{path}: {exc}") from None


def _pil_array(image: Image.Image, channels: int) -> np.ndarray:
    """PIL image → uint8 ``(H, W)`` (gray) or ``(H, W, 3)``; transparency onto white,
    high-bit-depth and float images scaled to 0..255."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return np.clip(np.rint(_to_grayscale(image)), 0, 255).astype(np.uint8) if channels == 1 else np.repeat(
            np.clip(np.rint(_to_grayscale(image)), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)


def convert_image(image: Image.Image | np.ndarray, spec) -> PreparedImage:
    """Convert an image to a model's input as its spec says (``spec.image_conversion``):

    * ``digit`` — MNIST's recipe (:func:`mnistify`), gray models;
    * ``resize`` — to exactly ``H×W`` (bicubic), gray or RGB as the model;
    * ``crop`` — scaled to cover ``H×W`` (bicubic), centre crop;
    * ``none`` — must already be ``H×W``.

    Returns a :class:`PreparedImage` whose ``image`` is ``(H, W)`` or ``(H, W, 3)`` uint8.

    Raises:
        UserImageError: the image does not fit (``none``) or holds no ink (``digit``).
    """
    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[2] in (3, 4):
            image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGBA" if array.shape[2] == 4 else "RGB")
        elif array.ndim == 2:
            image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L")
        else:
            raise UserImageError(f"expected an image of shape (H, W) or (H, W, 3/4); got {array.shape}")
    image = _working_copy(image)
    conversion = spec.image_conversion
    if conversion == "digit":
        if spec.size != (28, 28) or spec.channels != 1:
            return _digit_to_size(mnistify(image), spec)
        return mnistify(image)
    channels = spec.channels
    height, width = spec.size
    array = _pil_array(image, channels)
    original, scale = preview(array, ORIGINAL_MAX_SIDE)
    if conversion == "none":
        if array.shape[:2] != (height, width):
            raise UserImageError(
                f"the image is {array.shape[1]}×{array.shape[0]} but the model takes {width}×{height} and its spec says "
                "image_conversion 'none'; resize it first (or load the model with --image-conversion resize)"
            )
        return PreparedImage(image=array, original=original, inverted=False, crop_box=(0, 0, height, width), original_scale=scale)
    pil = Image.fromarray(array)
    box = (0, 0, array.shape[0], array.shape[1])
    if conversion == "crop":
        factor = max(width / pil.width, height / pil.height)
        scaled_w, scaled_h = max(width, round(pil.width * factor)), max(height, round(pil.height * factor))
        pil = pil.resize((scaled_w, scaled_h), Image.Resampling.BICUBIC)
        left, top = (scaled_w - width) // 2, (scaled_h - height) // 2
        pil = pil.crop((left, top, left + width, top + height))
        box = (round(top / factor), round(left / factor), round((top + height) / factor), round((left + width) / factor))
    elif pil.size != (width, height):
        pil = pil.resize((width, height), Image.Resampling.BICUBIC)
    return PreparedImage(image=np.asarray(pil, dtype=np.uint8), original=original, inverted=False, crop_box=box, original_scale=scale)


def _digit_to_size(prepared: PreparedImage, spec) -> PreparedImage:
    """An MNIST-style 28×28 digit resized to a gray model's other input size."""
    height, width = spec.size
    pil = Image.fromarray(prepared.image).resize((width, height), Image.Resampling.BICUBIC)
    return PreparedImage(np.asarray(pil, dtype=np.uint8), prepared.original, prepared.inverted, prepared.crop_box,
                         prepared.original_scale)


def load_image_for_model(path: str | os.PathLike, spec, *, max_pixels: int | None = None) -> PreparedImage:
    """Read an image file and convert it for a model (:func:`convert_image`).

    Raises:
        UserImageError: missing, empty, unreadable or too large a file, or an image
            the conversion refuses.
    """
    path = Path(path)
    if not path.exists():
        raise UserImageError(f"{path}: no such file (give an image file, a folder of images, or test:INDEX / train:INDEX)")
    try:
        image = open_image_file(path, max_pixels=max_pixels)
    except ImageFileError as exc:
        raise UserImageError(str(exc)) from None
    try:
        return convert_image(image, spec)
    except UserImageError as exc:
        raise UserImageError(f"{path}: {exc}") from None
