"""Attribution figures: input / map / overlay, every class on one scale, a
side-by-side comparison of methods, a gallery of images × methods, and the
sanity-check figure.

Inputs are drawn as they are — gray images in grayscale, RGB images in colour,
pixelated (``interpolation="nearest"``). An RGB attribution ``(3, H, W)`` is shown
as the sum over its channels (the usual choice: one signed number per pixel; the
per-channel values stay in the arrays). Signed maps use a diverging colormap
centred on 0 (red = raises the target, blue = lowers it); unsigned maps
(Grad-CAM) use a sequential one. Renderers never run a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import math

import numpy as np
from matplotlib import colormaps, colors
from matplotlib.figure import Figure

from convscope.render.figure import new_figure, new_subplots

SIGNED_CMAP = "RdBu_r"
UNSIGNED_CMAP = "inferno"


def _as_map(values) -> np.ndarray:
    """``(H, W)`` float array from a ``(C, H, W)`` / ``(1, H, W)`` / ``(H, W)`` tensor or array
    (channels are summed)."""
    array = values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)
    array = array.astype(np.float64)
    while array.ndim > 2:
        array = array.sum(axis=0)
    return array


def _as_image(image) -> np.ndarray:
    """A drawable picture: ``(H, W)`` gray or ``(H, W, 3)`` RGB.

    Accepts uint8 pictures ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)``, channels-first
    ``(1, H, W)`` / ``(3, H, W)``, or float model inputs ``(C, H, W)`` (an RGB one is
    stretched to 0..1 for display; a gray one is drawn with its own range)."""
    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3:
        if array.shape[-1] in (1, 3) and array.shape[0] not in (1, 3):
            array = np.moveaxis(array, -1, 0)  # channels last -> first
        if array.shape[0] == 1:
            return array[0]
        if array.shape[0] != 3:
            raise ValueError(f"cannot draw an image of shape {array.shape}: give (H, W), (H, W, 3) or (3, H, W)")
        rgb = np.moveaxis(array, 0, -1)
        if rgb.dtype == np.uint8:
            return rgb
        rgb = rgb.astype(np.float64)
        low, high = float(rgb.min()), float(rgb.max())
        return (rgb - low) / (high - low) if high > low else np.zeros_like(rgb)
    return array.reshape(array.shape[-2:])


def _scale(maps: Sequence[np.ndarray], signed: bool) -> tuple[float, float]:
    peak = max((float(np.abs(m).max()) for m in maps), default=0.0) or 1.0
    if signed:
        return -peak, peak
    low = min(float(m.min()) for m in maps)
    return (min(0.0, low), peak)


def _show_input(ax, image: np.ndarray, title: str) -> None:
    if image.ndim == 3:  # RGB, in colour
        ax.imshow(image, interpolation="nearest")
    else:
        ax.imshow(image, cmap="gray", interpolation="nearest", vmin=0 if image.dtype == np.uint8 else None,
                  vmax=255 if image.dtype == np.uint8 else None)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _show_map(ax, values: np.ndarray, signed: bool, vmin: float, vmax: float, title: str):
    cmap = SIGNED_CMAP if signed else UNSIGNED_CMAP
    artist = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return artist


def overlay_rgba(values: np.ndarray, signed: bool, vmin: float, vmax: float, max_alpha: float = 0.85) -> np.ndarray:
    """RGBA heatmap whose opacity grows with ``|value|`` (so the digit shows where
    the attribution is weak)."""
    cmap = colormaps.get_cmap(SIGNED_CMAP if signed else UNSIGNED_CMAP)
    norm = colors.Normalize(vmin=vmin, vmax=vmax)
    rgba = cmap(norm(values))
    reach = max(abs(vmin), abs(vmax)) or 1.0
    rgba[..., 3] = np.clip(np.abs(values) / reach, 0, 1) * max_alpha
    return rgba


def _show_overlay(ax, image: np.ndarray, values: np.ndarray, signed: bool, vmin: float, vmax: float, title: str) -> None:
    _show_input(ax, image, title)
    ax.imshow(overlay_rgba(values, signed, vmin, vmax), interpolation="nearest")


def explanation_figure(
    image,
    attribution,
    *,
    signed: bool = True,
    method_title: str = "attribution",
    target_text: str = "",
    image_title: str = "input",
    note: str = "",
) -> Figure:
    """Three panels: the input (gray or colour), the map with its colourbar, and the
    map over the input.

    Args:
        image: uint8 picture ``(H, W)`` / ``(H, W, 3)`` (or a float model input ``(C, H, W)``).
        attribution: ``(C, H, W)`` / ``(H, W)`` map (channels summed).
        signed: diverging colormap centred on 0, else sequential.
        method_title: method name for the titles.
        target_text: what was explained, e.g. ``"class 4"`` or ``"Conv2D_3:56"``.
        image_title: title of the input panel (source, label, prediction).
        note: an extra line under the title (e.g. the IG delta).
    """
    img, values = _as_image(image), _as_map(attribution)
    vmin, vmax = _scale([values], signed)
    fig, axes = new_subplots(1, 3, figsize=(9.6, 3.6), layout="constrained")
    _show_input(axes[0], img, image_title)
    artist = _show_map(axes[1], values, signed, vmin, vmax, method_title)
    fig.colorbar(artist, ax=axes[1], fraction=0.046, pad=0.04,
                 label="attribution (red +, blue −)" if signed else "attribution")
    _show_overlay(axes[2], img, values, signed, vmin, vmax, "overlay on input")
    title = f"{method_title} — {target_text}" if target_text else method_title
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=11)
    return fig


#: at most this many class panels in :func:`all_classes_figure` (the most probable ones)
MAX_CLASS_PANELS = 40


def class_label(index: int, class_names: Sequence[str] | None = None) -> str:
    """``"class 4"`` for digit names (or without names), ``"class 5 Sandal"`` otherwise."""
    name = class_names[index] if class_names is not None and 0 <= index < len(class_names) else str(index)
    return f"class {index}" if name == str(index) else f"class {index} {name}"


def all_classes_figure(
    image,
    attributions,
    *,
    probabilities: Sequence[float] | None = None,
    signed: bool = True,
    method_title: str = "attribution",
    image_title: str = "input",
    label: int | None = None,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """The input and one map per class side by side on ONE shared colour scale, so
    the maps can be compared directly (any number of classes: 5 per row up to 10
    classes, 8 per row beyond; above :data:`MAX_CLASS_PANELS` classes the most
    probable ones are drawn, in class order).

    Args:
        image: the input picture (gray or RGB).
        attributions: ``(K, C, H, W)`` / ``(K, H, W)`` maps, class k in row k.
        probabilities: ``(K,)`` softmax outputs, shown in the panel titles.
        signed: diverging colormap centred on 0, else sequential.
        label: true class (marked in the titles), if known.
        class_names: names for the titles (default: the class numbers).
    """
    img = _as_image(image)
    maps = [_as_map(a) for a in attributions]
    n = len(maps)
    shown = list(range(n))
    if n > MAX_CLASS_PANELS:
        order = np.argsort(-np.asarray(probabilities), kind="stable") if probabilities is not None else np.arange(n)
        shown = sorted(int(k) for k in order[:MAX_CLASS_PANELS])
    vmin, vmax = _scale([maps[k] for k in shown], signed)
    predicted = int(np.argmax(probabilities)) if probabilities is not None else None
    cols = min(len(shown), 5 if len(shown) <= 10 else 8)
    rows = max(1, math.ceil(len(shown) / cols))
    fig = new_figure(figsize=(2.2 * 1.6 + 2.2 * cols, 0.4 + 1.6 * rows + 0.2 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, cols + 2, width_ratios=[1.6, *([1] * cols), 0.08])
    _show_input(fig.add_subplot(grid[:, 0]), img, image_title)
    artist = None
    for slot, k in enumerate(shown):
        values = maps[k]
        ax = fig.add_subplot(grid[slot // cols, 1 + slot % cols])
        title = class_label(k, class_names)
        if probabilities is not None:
            title += f"  p={float(probabilities[k]):.3f}"
        artist = _show_map(ax, values, signed, vmin, vmax, title)
        if k == predicted:
            ax.set_title(title + " ◀", fontsize=9, color="tab:green", fontweight="bold")
        if label is not None and k == label:
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:orange")
                spine.set_linewidth(2.5)
    if artist is not None:
        fig.colorbar(artist, cax=fig.add_subplot(grid[:, cols + 1]), label="shared scale")
    legend = "green ◀ = predicted"
    if label is not None:
        legend += ", orange frame = true label"
    which = "every class" if len(shown) == n else f"the {len(shown)} most probable of {n} classes"
    fig.suptitle(f"{method_title} for {which}, one shared colour scale ({legend})", fontsize=11)
    return fig


def methods_figure(
    image,
    maps: Mapping[str, tuple[object, bool]],
    *,
    image_title: str = "input",
    target_text: str = "",
) -> Figure:
    """The input and several methods side by side: ``maps = {title: (map, signed)}``.
    Each method has its own symmetric scale (their units differ); top row the map,
    bottom row the overlay."""
    img = _as_image(image)
    n = len(maps)
    fig, axes = new_subplots(2, n + 1, figsize=(2.3 * (n + 1), 4.9), layout="constrained", squeeze=False)
    _show_input(axes[0, 0], img, image_title)
    axes[1, 0].axis("off")
    for i, (title, (values, signed)) in enumerate(maps.items(), start=1):
        array = _as_map(values)
        vmin, vmax = _scale([array], signed)
        artist = _show_map(axes[0, i], array, signed, vmin, vmax, title)
        fig.colorbar(artist, ax=axes[0, i], fraction=0.046, pad=0.03)
        _show_overlay(axes[1, i], img, array, signed, vmin, vmax, "overlay")
    fig.suptitle("attribution methods" + (f" — {target_text}" if target_text else ""), fontsize=11)
    return fig


def gallery_figure(
    images: Sequence[object],
    maps: Mapping[str, tuple[object, bool]],
    *,
    image_titles: Sequence[str] | None = None,
    title: str = "",
) -> Figure:
    """Several images × several methods: one row per image (the input, then each
    method's overlay on it). ``maps = {method title: (stack (N, C, H, W), signed)}``.
    Each panel has its own symmetric scale (methods' units differ, and so do
    images' ranges); the maps are drawn over the input so that where they fall
    on the object can be read directly."""
    n = len(images)
    columns = len(maps) + 1
    fig, axes = new_subplots(n, columns, figsize=(2.1 * columns, 2.2 * n + 0.6), layout="constrained", squeeze=False)
    for row, image in enumerate(images):
        img = _as_image(image)
        _show_input(axes[row, 0], img, image_titles[row] if image_titles is not None else "input")
        for col, (method_title, (stack, signed)) in enumerate(maps.items(), start=1):
            values = _as_map(stack[row])
            vmin, vmax = _scale([values], signed)
            _show_overlay(axes[row, col], img, values, signed, vmin, vmax, method_title if row == 0 else "")
    fig.suptitle(title or "attributions (each panel scaled to its own peak; red +, blue −)", fontsize=11)
    return fig


def sanity_figure(result, *, image=None, image_index: int = 0, image_title: str = "input") -> Figure:
    """The cascading randomisation test: similarity curves (Spearman of |attr|, SSIM)
    per method, and every method's |map| for one image at every stage (each map
    scaled to its own peak: the test is about structure, not size).

    Args:
        result: a :class:`convscope.explain.sanity.SanityResult`.
        image: the picture of ``image_index`` (gray or RGB; drawn at the row starts).
        image_index: which image's maps to show.
    """
    stages = result.stages
    labels = ["trained"] + [f"+{name}" for name in stages[1:]]
    methods = result.methods
    fig = new_figure(figsize=(max(10.0, 1.45 * (len(stages) + 1)), 3.6 + 1.45 * len(methods)), layout="constrained")
    outer = fig.add_gridspec(2, 1, height_ratios=[3.2, 1.45 * len(methods)])
    top = outer[0].subgridspec(1, 2)
    x = np.arange(len(stages))
    for col, (metric, values, name) in enumerate(
        [("spearman", result.spearman, "Spearman rank correlation of |attribution|"), ("ssim", result.ssim, "SSIM")]
    ):
        ax = fig.add_subplot(top[0, col])
        for method in methods:
            ax.plot(x, values[method], "o-", label=method)
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        lowest = min(min(v) for v in values.values())
        ax.set_ylim(min(0.0, lowest) - 0.05, 1.05)
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set(ylabel="similarity to trained-model map", title=name,
               xlabel="layers randomised (cumulative, from the top)")
        ax.grid(alpha=0.3)
        if col == 0:
            ax.legend(fontsize=8, loc="lower left", ncols=2)
    bottom = outer[1].subgridspec(len(methods), len(stages) + 1)
    for row, method in enumerate(methods):
        stack = result.maps[method][:, image_index]
        magnitudes = [np.abs(_as_map(s)) for s in stack]
        for col in range(len(stages) + 1):
            ax = fig.add_subplot(bottom[row, col])
            if col == 0:
                if image is not None:
                    _show_input(ax, _as_image(image), "")
                else:
                    ax.axis("off")
                ax.set_ylabel(method, fontsize=9)
                if row == 0:
                    ax.set_title(image_title, fontsize=8)
                continue
            # each stage scaled to its own peak: the test asks about structure, not size
            values = magnitudes[col - 1]
            ax.imshow(values, cmap="magma", vmin=0, vmax=float(values.max()) or 1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(labels[col - 1], fontsize=8)
    fig.suptitle(
        "Sanity check: cascading randomisation of the layers from the top (Adebayo et al. 2018)\n"
        "a method that explains the network should lose similarity as its layers are destroyed",
        fontsize=11,
    )
    return fig
