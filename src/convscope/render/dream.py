"""Drawing dreams (no model is run here): the reference's carving panels and a
before/after figure for DeepDreams, for gray and colour dreams of any size (large
photos are drawn from a preview of at most :data:`PREVIEW_SIDE` pixels a side).
Returns matplotlib Figures (built without pyplot)."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from convscope.render.figure import new_figure

#: Longest side drawn into a figure; larger photos are shown from a reduced preview.
PREVIEW_SIDE = 1600


def _array(image) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dtype == torch.bfloat16:
            image = image.float()
        image = image.numpy()
    return np.asarray(image)


def _preview(data: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    """``data`` ``(H, W)`` / ``(H, W, C)`` reduced (area average) so its longest side is at most ``side``."""
    height, width = data.shape[:2]
    factor = int(np.ceil(max(height, width) / side))
    if factor <= 1:
        return data
    rows, cols = height // factor * factor, width // factor * factor
    cropped = data[:rows, :cols].astype(np.float32)
    shape = (rows // factor, factor, cols // factor, factor) + data.shape[2:]
    reduced = cropped.reshape(shape).mean(axis=(1, 3))
    return reduced.round().astype(data.dtype) if data.dtype == np.uint8 else reduced


def _display_colour(pattern: np.ndarray) -> np.ndarray:
    """A colour pattern in any value range ``(h, w, 3)`` → uint8, stretched over its own range."""
    low, high = np.percentile(pattern, [0.5, 99.5])
    span = max(float(high - low), 1e-6)
    return (np.clip((pattern - low) / span, 0, 1) * 255).round().astype(np.uint8)


def _show(axis, image, title: str, cmap: str | None = "gray", vmin=None, vmax=None) -> None:
    data = _preview(_array(image))
    if data.ndim == 3 or cmap is None:
        if data.dtype != np.uint8:
            data = np.clip(np.round(data), 0, 255).astype(np.uint8)
        axis.imshow(data, interpolation="nearest")
    else:
        axis.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    axis.set_title(title, fontsize=9)
    axis.set_xticks([])
    axis.set_yticks([])


def carve_panels(result, photo=None, *, title: str | None = None, input_size: tuple[int, int] | None = None) -> Figure:
    """The reference's panels for one carved map.

    Args:
        result: a :class:`~convscope.dream.carve.CarveResult` (gray ``(h, w)`` or
            colour ``(h, w, 3)`` pattern).
        photo: optional original photo (uint8 ``(H, W)`` or ``(H, W, 3)``) shown first.
        title: figure title (default: the objective and its gain).
        input_size: the model's ``(h, w)`` for the labels (default: the pattern's size).

    Panels: [photo], the input-size pattern in viridis and in gray (a colour
    pattern: in colour, stretched over its range, and its channel mean in viridis),
    the upscaled dream, and the final image with the detail re-added and its value
    distribution stretched.
    """
    panels = 4 + (photo is not None)
    figure = new_figure(figsize=(2.6 * panels, 3.1), layout="constrained")
    axes = figure.subplots(1, panels)
    index = 0
    if photo is not None:
        _show(axes[0], photo, "photo", cmap=None if _array(photo).ndim == 3 else "gray", vmin=0, vmax=255)
        index = 1
    pattern = _array(result.pattern).astype(np.float32)
    height, width = input_size or pattern.shape[:2]
    size = f"{height}×{width}"
    if pattern.ndim == 3:
        _show(axes[index], pattern.mean(axis=-1), f"{size} pattern (channel mean)", cmap="viridis")
        _show(axes[index + 1], _display_colour(pattern), f"{size} pattern (colour)", cmap=None)
        _show(axes[index + 2], result.upscaled, "upscaled dream", cmap=None)
        _show(axes[index + 3], result.adjusted, "detail re-added, width adjusted", cmap=None)
    else:
        _show(axes[index], pattern, f"{size} pattern (viridis)", cmap="viridis")
        _show(axes[index + 1], pattern, f"{size} pattern (gray)", cmap="gray")
        _show(axes[index + 2], result.upscaled, "upscaled dream", cmap="gray")
        _show(axes[index + 3], result.adjusted, "detail re-added, width adjusted", cmap="gray", vmin=0, vmax=255)
    if title is None:
        objective = str(result.parameters.get("objective", ""))
        objective = objective if len(objective) <= 60 else objective[:59] + "…"
        title = f"pattern carving: {objective}   objective {result.objective_before:.3g} → {result.objective_after:.3g}"
    figure.suptitle(title, fontsize=10)
    return figure


def dream_comparison(photo, dreamed, *, title: str = "", labels: tuple[str, str] = ("photo", "dream")) -> Figure:
    """Photo and dream side by side (uint8 ``(H, W)`` or ``(H, W, 3)`` each)."""
    first, second = _preview(_array(photo)), _preview(_array(dreamed))
    height, width = first.shape[:2]
    figure = new_figure(figsize=(2 * 4.0 * width / max(height, width) + 0.4, 4.3), layout="constrained")
    axes = figure.subplots(1, 2)
    for axis, image, label in zip(axes, (first, second), labels):
        _show(axis, image, label, cmap=None if image.ndim == 3 else "gray", vmin=0, vmax=255)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def dream_values(values, octave_steps: int, *, title: str = "objective per step") -> Figure:
    """The objective after every step, with the octave boundaries marked."""
    figure = new_figure(figsize=(5, 3), layout="constrained")
    axis = figure.subplots()
    data = _array(values) if len(values) else np.zeros(0)
    axis.plot(np.arange(1, len(data) + 1), data, lw=1.2)
    if octave_steps > 0:
        for boundary in range(octave_steps, len(data), octave_steps):
            axis.axvline(boundary + 0.5, color="0.7", lw=0.8, ls="--")
    axis.set_xlabel("step (dashed: next octave)")
    axis.set_ylabel("objective")
    axis.set_title(title, fontsize=10)
    return figure


def image_row(images, labels, *, title: str = "", height_inches: float = 3.2) -> Figure:
    """Several photos/dreams in one row with a label each (uint8 ``(H, W)`` / ``(H, W, 3)``)."""
    arrays = [_preview(_array(image)) for image in images]
    widths = [a.shape[1] / a.shape[0] for a in arrays]
    figure = new_figure(figsize=(height_inches * sum(widths) + 0.2, height_inches + 0.45), layout="constrained")
    axes = figure.subplots(1, len(arrays), width_ratios=widths, squeeze=False)[0]
    for axis, array, label in zip(axes, arrays, labels):
        _show(axis, array, label, cmap=None if array.ndim == 3 else "gray", vmin=0, vmax=255)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure
