"""Small images for the atlas, drawn straight from arrays (no matplotlib figure).

The atlas holds hundreds of small pictures (one OIP, evolution strip, top-k strip
and deconvnet per map); drawing each as a matplotlib figure would take minutes,
so they are coloured with a colormap lookup table and encoded by Pillow here
(≈ 1 ms each). Every function returns PNG bytes; the HTML embeds them as data URIs.

Colour scales are explicit (``vmin``/``vmax`` arguments) so that images meant to
be compared share one scale, and :func:`legend_gradient` gives the CSS gradient
for the matching legend.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from convscope.io import close_figure

#: Receptive-field outline colour (the same orange as the look-inside renderer).
FIELD_COLOUR = (255, 159, 28)
#: Background of gaps between tiles.
GAP_COLOUR = (230, 232, 236)


def _lut(cmap: str) -> np.ndarray:
    """``(256, 3)`` uint8 colour table of a matplotlib colormap."""
    from matplotlib import colormaps

    table = colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3]
    return (table * 255.0 + 0.5).astype(np.uint8)


_LUTS: dict[str, np.ndarray] = {}


def lut(cmap: str) -> np.ndarray:
    """Cached :func:`_lut`."""
    if cmap not in _LUTS:
        _LUTS[cmap] = _lut(cmap)
    return _LUTS[cmap]


#: Colour levels of a colormapped picture; palette index 255 is the gap colour.
LEVELS = 255


def _palette(cmap: str) -> list[int]:
    """A 256-entry PNG palette: ``cmap`` sampled at 255 levels, then the gap colour."""
    from matplotlib import colormaps

    table = (colormaps[cmap](np.linspace(0.0, 1.0, LEVELS))[:, :3] * 255.0 + 0.5).astype(np.uint8)
    return table.reshape(-1).tolist() + list(GAP_COLOUR)


_PALETTES: dict[str, list[int]] = {}


def level_index(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Palette indices ``(H, W)`` uint8 of ``values`` on ``[vmin, vmax]`` (clipped; NaN → gap)."""
    values = np.asarray(values, dtype=np.float64)
    span = vmax - vmin if vmax > vmin else 1.0
    scaled = np.clip((values - vmin) / span, 0.0, 1.0)
    index = np.nan_to_num(scaled * (LEVELS - 1), nan=0.0).round().astype(np.uint8)
    index[np.isnan(values)] = LEVELS
    return index


def colour_png(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> bytes:
    """A colormapped picture as an indexed (palette) PNG — a third of the bytes of RGB."""
    if cmap not in _PALETTES:
        _PALETTES[cmap] = _palette(cmap)
    image = Image.fromarray(level_index(values, vmin, vmax), mode="P")
    image.putpalette(_PALETTES[cmap])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode ``(H, W, 3)`` / ``(H, W)`` uint8 as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def data_uri(png: bytes, mime: str = "image/png") -> str:
    """``data:`` URI of encoded image bytes (the atlas is one self-contained file)."""
    return f"data:{mime};base64," + base64.b64encode(png).decode("ascii")


def map_png(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> bytes:
    """One ``(H, W)`` map through a colormap on a fixed scale."""
    return colour_png(values, cmap, vmin, vmax)


def mosaic(maps: np.ndarray, per_row: int, gap: int = 1) -> np.ndarray:
    """Tile ``(C, H, W)`` maps into one array with ``gap``-pixel NaN lines between
    them: ``(rows·(H+gap)−gap, per_row·(W+gap)−gap)``."""
    count, height, width = maps.shape
    per_row = max(1, min(per_row, count))
    rows = math.ceil(count / per_row)
    canvas = np.full((rows * (height + gap) - gap, per_row * (width + gap) - gap), np.nan)
    for index in range(count):
        r, c = divmod(index, per_row)
        top, left = r * (height + gap), c * (width + gap)
        canvas[top : top + height, left : left + width] = maps[index]
    return canvas


def grid_png(maps: np.ndarray, cmap: str, vmin: float, vmax: float, per_row: int = 8) -> bytes:
    """All maps of a layer (``(C, H, W)``, or ``(F,)`` nodes as 1×1 cells) in one
    image on one colour scale, with 1-pixel gaps."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim == 1:
        side = int(round(math.sqrt(maps.size)))
        if side * side == maps.size:  # e.g. 100 nodes: one 10×10 block, no gaps
            return colour_png(maps.reshape(side, side), cmap, vmin, vmax)
        rows = math.ceil(maps.size / per_row)  # e.g. 128 nodes: an 8×16 block, unused cells gray
        block = np.full(rows * per_row, np.nan)
        block[: maps.size] = maps
        return colour_png(block.reshape(rows, per_row), cmap, vmin, vmax)
    return colour_png(mosaic(maps, per_row), cmap, vmin, vmax)


def strip_png(frames: Sequence[np.ndarray], cmap: str, vmin: float, vmax: float, gap: int = 1) -> bytes:
    """Frames ``(H, W)`` side by side (an evolution strip), one colour scale."""
    stack = np.stack([np.asarray(f, dtype=np.float64) for f in frames])
    return colour_png(mosaic(stack, len(stack), gap), cmap, vmin, vmax)


def digits_with_fields_png(
    images: Sequence[np.ndarray],
    rectangles: Sequence[Sequence[int]] | None,
    *,
    zoom: int = 3,
    gap: int = 3,
) -> bytes:
    """Digits side by side, enlarged ``zoom``× (nearest), each with its receptive
    field ``(top, left, bottom, right)`` outlined in orange (skipped where the
    field is the whole image). An indexed PNG: 255 gray levels + the outline colour."""
    first = np.asarray(images[0])
    height, width = first.shape[0] * zoom, first.shape[1] * zoom
    canvas = np.full((height, len(images) * (width + gap) - gap), LEVELS - 1, dtype=np.uint8)  # white gaps
    for j, image in enumerate(images):
        levels = (np.asarray(image, dtype=np.float64) * (LEVELS - 1) / 255.0).round().astype(np.uint8)
        canvas[:, j * (width + gap) : j * (width + gap) + width] = np.kron(levels, np.ones((zoom, zoom), np.uint8))
    picture = Image.fromarray(canvas, mode="P")
    gray = np.linspace(0, 255, LEVELS).round().astype(np.uint8)
    picture.putpalette(np.repeat(gray[:, None], 3, axis=1).reshape(-1).tolist() + list(FIELD_COLOUR))
    if rectangles is not None:
        draw = ImageDraw.Draw(picture)
        h, w = first.shape
        for j, rect in enumerate(rectangles):
            top, left, bottom, right = (int(v) for v in rect)
            if (top, left, bottom, right) != (0, 0, h, w):
                x0 = j * (width + gap)
                draw.rectangle([x0 + left * zoom, top * zoom, x0 + right * zoom - 1, bottom * zoom - 1],
                               outline=LEVELS, width=1)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def signed_png(values: np.ndarray, limit: float | None = None, cmap: str = "RdBu_r") -> bytes:
    """A signed map on a symmetric diverging scale ``[-limit, limit]`` (0 = white);
    ``limit`` defaults to the map's own largest magnitude."""
    values = np.asarray(values, dtype=np.float64)
    limit = float(np.abs(values).max()) if limit is None else float(limit)
    limit = limit or 1.0
    return map_png(values, cmap, -limit, limit)


def jpeg_bytes(image: np.ndarray, quality: int = 88) -> bytes:
    """A photo as JPEG (smaller than PNG for photographs)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.asarray(image, dtype=np.uint8))).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def figure_png(figure, dpi: int = 110) -> bytes:
    """Render a matplotlib Figure to PNG bytes and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    close_figure(figure)
    return buffer.getvalue()


def legend_gradient(cmap: str, stops: int = 9) -> str:
    """CSS ``linear-gradient`` showing ``cmap`` left (low) to right (high)."""
    table = lut(cmap)
    parts = []
    for i in range(stops):
        r, g, b = table[round(i * 255 / (stops - 1))]
        parts.append(f"rgb({r},{g},{b}) {100 * i / (stops - 1):.0f}%")
    return "linear-gradient(to right, " + ", ".join(parts) + ")"


def picture_png(image: np.ndarray) -> bytes:
    """A dataset image, uint8 ``(H, W)`` (gray) or ``(H, W, 3)`` (colour), as PNG."""
    return png_bytes(np.asarray(image, dtype=np.uint8))


def _rgb_levels(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """``(3, H, W)`` floats on ``[vmin, vmax]`` → ``(H, W, 3)`` uint8 (clipped)."""
    values = np.asarray(values, dtype=np.float64)
    scaled = np.clip((values - vmin) / ((vmax - vmin) or 1.0), 0.0, 1.0)
    return (np.moveaxis(np.nan_to_num(scaled), 0, -1) * 255.0 + 0.5).astype(np.uint8)


def input_png(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> bytes:
    """A picture in the model's input space (an OIP, a class pattern): ``(1, H, W)`` /
    ``(H, W)`` through ``cmap``, ``(3, H, W)`` as colour, both on the fixed scale."""
    values = np.asarray(values)
    if values.ndim == 3 and values.shape[0] == 3:
        return png_bytes(_rgb_levels(values, vmin, vmax))
    while values.ndim > 2:
        values = values[0]
    return colour_png(values, cmap, vmin, vmax)


def input_strip_png(frames: Sequence[np.ndarray], cmap: str, vmin: float, vmax: float, gap: int = 1) -> bytes:
    """Input-space frames ``(C, H, W)`` side by side (an evolution strip), one scale."""
    frames = [np.asarray(f) for f in frames]
    if frames[0].ndim == 3 and frames[0].shape[0] == 3:
        h, w = frames[0].shape[1:]
        canvas = np.full((h, len(frames) * (w + gap) - gap, 3), GAP_COLOUR, dtype=np.uint8)
        for j, frame in enumerate(frames):
            canvas[:, j * (w + gap) : j * (w + gap) + w] = _rgb_levels(frame, vmin, vmax)
        return png_bytes(canvas)
    return strip_png([f.reshape(f.shape[-2:]) for f in frames], cmap, vmin, vmax, gap)


def pictures_with_fields_png(
    images: Sequence[np.ndarray], rectangles: Sequence[Sequence[int]] | None, *, zoom: int | None = None, gap: int = 3,
) -> bytes:
    """Dataset images side by side, enlarged (nearest) to about 84 px, each with its
    receptive field outlined in orange; gray images as an indexed PNG
    (:func:`digits_with_fields_png`), colour ones as RGB."""
    first = np.asarray(images[0])
    zoom = zoom or max(1, round(84 / max(first.shape[:2])))
    if first.ndim == 2:
        return digits_with_fields_png(images, rectangles, zoom=zoom, gap=gap)
    h, w = first.shape[:2]
    height, width = h * zoom, w * zoom
    canvas = np.full((height, len(images) * (width + gap) - gap, 3), 255, dtype=np.uint8)
    for j, image in enumerate(images):
        big = np.repeat(np.repeat(np.asarray(image, dtype=np.uint8), zoom, axis=0), zoom, axis=1)
        canvas[:, j * (width + gap) : j * (width + gap) + width] = big
    picture = Image.fromarray(canvas)
    if rectangles is not None:
        draw = ImageDraw.Draw(picture)
        for j, rect in enumerate(rectangles):
            top, left, bottom, right = (int(v) for v in rect)
            if (top, left, bottom, right) != (0, 0, h, w):
                x0 = j * (width + gap)
                draw.rectangle([x0 + left * zoom, top * zoom, x0 + right * zoom - 1, bottom * zoom - 1],
                               outline=FIELD_COLOUR, width=1)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
