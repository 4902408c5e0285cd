"""Draw what :mod:`convscope.inside` computed: activation grids, kernel grids,
probability bars, class-pattern comparisons, top-k galleries and mistakes.

Renderers only draw: they take arrays / result dataclasses and return matplotlib
Figures (built without pyplot, never shown, never saved here). Inputs of any size
are drawn pixelated (``interpolation="nearest"``): gray images with a colormap
(``input_cmap``, gray by default), RGB images ``(H, W, 3)`` as they are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib import colors as mcolors
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from convscope.render.figure import new_figure, new_subplots

#: Colormaps offered for activation grids (the reference's plus gray).
COLORMAPS = ("viridis", "magma", "inferno", "jet", "gray", "binary")
#: Colormaps offered for gray input images.
INPUT_COLORMAPS = ("gray", "gray_r", "binary", "viridis", "magma", "inferno", "jet")
SCALINGS = ("raw", "reference")
COLOR_SCALES = ("shared", "per-map")
#: Outline colours of the class-comparison marks: active in every A and in no B (red),
#: the reverse (cyan), in every A and in some but not every B (yellow), the reverse (magenta).
MARK_A, MARK_B = "#ff3b30", "#00e5ff"
MARK_A_SOME, MARK_B_SOME = "#ffd60a", "#ff4fd8"
#: Outline of a selected map / unit in an activation grid.
MARK_SELECTED = "#ff3b30"


def _np(values) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def is_rgb(image) -> bool:
    """Whether ``image`` is a channels-last colour image ``(H, W, 3)``."""
    shape = np.shape(image)
    return len(shape) == 3 and shape[-1] == 3


def input_size_text(image) -> str:
    """``"28×28"`` / ``"32×32 RGB"`` for titles."""
    shape = np.shape(image)
    return f"{shape[0]}×{shape[1]}" + (" RGB" if is_rgb(image) else "")


def as_maps(values) -> np.ndarray:
    """``(C, H, W)`` maps stay; ``(F,)`` dense vectors become ``(F, 1, 1)`` one-pixel maps."""
    array = _np(values)
    if array.ndim == 1:
        return array[:, None, None]
    if array.ndim != 3:
        raise ValueError(f"expected (C, H, W) maps or an (F,) vector; got shape {array.shape}")
    return array


def default_per_row(count: int, height: int, width: int) -> int:
    """Maps per grid row that give a roughly square grid: ⌈√(N·H/W)⌉ (10 for a
    100-node dense layer, 12 for 128 maps of 3×3)."""
    return max(1, min(count, math.ceil(math.sqrt(count * height / max(1, width)))))


def reference_scale_maps(maps: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Display option B of the reference, on ``(C, H, W)`` maps: per map standardise,
    ×64 + 128, clip to 0..255 (dense vectors are standardised as one map)."""
    maps = as_maps(maps)
    if maps.shape[1:] == (1, 1):
        flat = maps.reshape(1, -1)
    else:
        flat = maps.reshape(maps.shape[0], -1)
    scaled = (flat - flat.mean(1, keepdims=True)) / (flat.std(1, keepdims=True) + eps) * 64.0 + 128.0
    return np.clip(scaled, 0.0, 255.0).reshape(maps.shape)


def mosaic(maps: np.ndarray, per_row: int) -> np.ndarray:
    """Tile ``(C, H, W)`` maps into one ``(rows·H, per_row·W)`` array, NaN in unused cells."""
    count, height, width = maps.shape
    per_row = max(1, min(per_row, count))
    rows = math.ceil(count / per_row)
    canvas = np.full((rows * height, per_row * width), np.nan)
    for index in range(count):
        r, c = divmod(index, per_row)
        canvas[r * height : (r + 1) * height, c * width : (c + 1) * width] = maps[index]
    return canvas


def _grid_lines(ax: Axes, rows: int, cols: int, height: int, width: int, color: str = "white", lw: float = 0.6) -> None:
    """Thin lines between the cells of a grid (one collection: fast with many cells)."""
    right, bottom = cols * width - 0.5, rows * height - 0.5
    segments = [[(-0.5, r * height - 0.5), (right, r * height - 0.5)] for r in range(1, rows)]
    segments += [[(c * width - 0.5, -0.5), (c * width - 0.5, bottom)] for c in range(1, cols)]
    if segments:
        ax.add_collection(LineCollection(segments, colors=color, linewidths=lw), autolim=False)


def _outline_cells(ax: Axes, cells: Sequence[tuple[float, float]], colour: str, lw: float, size: float = 0.84) -> None:
    """Outline unit cells whose top-left corners are ``cells`` (one collection per colour)."""
    if len(cells):
        boxes = [Rectangle((x, y), size, size) for x, y in cells]
        ax.add_collection(PatchCollection(boxes, facecolor="none", edgecolor=colour, linewidths=lw), autolim=False)


def _grid_ticks(ax: Axes, count: int, per_row: int, height: int, width: int, fontsize: float = 7) -> None:
    rows = math.ceil(count / per_row)
    step = max(1, rows // 16)
    ax.set_yticks([r * height + (height - 1) / 2 for r in range(0, rows, step)])
    ax.set_yticklabels([str(r * per_row) for r in range(0, rows, step)], fontsize=fontsize)
    cstep = max(1, per_row // 16)
    ax.set_xticks([c * width + (width - 1) / 2 for c in range(0, per_row, cstep)])
    ax.set_xticklabels([f"+{c}" for c in range(0, per_row, cstep)], fontsize=fontsize)
    ax.tick_params(length=0, pad=1.5)


def draw_activation_grid(
    ax: Axes,
    values,
    *,
    per_row: int = 8,
    cmap: str = "viridis",
    scaling: str = "raw",
    color_scale: str = "shared",
    vmin: float | None = None,
    vmax: float | None = None,
    marks: Sequence[tuple[np.ndarray, str]] = (),
    line_color: str = "white",
    ticks: bool = True,
    mark_width: float = 1.1,
):
    """Draw all maps of one layer (or all nodes of a dense layer) into ``ax``.

    Args:
        ax: target axes.
        values: ``(C, H, W)`` maps or ``(F,)`` dense nodes (one 1×1 cell each).
        per_row: maps per grid row.
        cmap: one of :data:`COLORMAPS` (any matplotlib name works).
        scaling: ``"raw"`` values, or ``"reference"``: per map standardised ×64+128, clipped 0..255.
        color_scale: ``"shared"`` — one scale for all maps; ``"per-map"`` — each map
            stretched from its own min (0) to its max (1).
        vmin, vmax: fix the shared scale (e.g. to compare several images).
        marks: ``(mask, colour)`` pairs; mask ``(C, H, W)`` / ``(F,)`` bool — each true
            position is outlined.
        line_color: colour of the thin lines between maps.
        ticks: label rows with their first map index and columns with +offsets.
        mark_width: line width of the outlines.

    Returns:
        The ``AxesImage`` (for a colourbar).
    """
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, not {scaling!r}")
    if color_scale not in COLOR_SCALES:
        raise ValueError(f"color_scale must be one of {COLOR_SCALES}, not {color_scale!r}")
    maps = as_maps(values)
    if scaling == "reference":
        maps = reference_scale_maps(maps)
    count, height, width = maps.shape
    if color_scale == "per-map":
        low = maps.reshape(count, -1).min(1)[:, None, None]
        span = maps.reshape(count, -1).max(1)[:, None, None] - low
        maps = np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0)
        vmin, vmax = 0.0, 1.0
    elif scaling == "reference":
        vmin = 0.0 if vmin is None else vmin
        vmax = 255.0 if vmax is None else vmax
    else:
        vmin = min(0.0, float(np.nanmin(maps))) if vmin is None else vmin
        vmax = float(np.nanmax(maps)) if vmax is None else vmax
        if vmax <= vmin:
            vmax = vmin + 1.0
    per_row = max(1, min(per_row, count))
    rows = math.ceil(count / per_row)
    colormap = colormaps.get_cmap(cmap).with_extremes(bad="#d9d9d9")
    image = ax.imshow(mosaic(maps, per_row), cmap=colormap, vmin=vmin, vmax=vmax, interpolation="nearest",
                      aspect="equal")
    lw = 0.5 if max(height, width) > 1 else 0.3
    _grid_lines(ax, rows, per_row, height, width, color=line_color, lw=lw)
    for mask, colour in marks:
        positions = np.argwhere(as_maps(np.asarray(mask, dtype=float)) > 0)
        cells = []
        for map_index, row, col in positions:
            r, c = divmod(int(map_index), per_row)
            cells.append((c * width + col - 0.5 + 0.08, r * height + row - 0.5 + 0.08))
        _outline_cells(ax, cells, colour, mark_width)
    if ticks:
        _grid_ticks(ax, count, per_row, height, width)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    return image


def draw_input(ax: Axes, image, title: str | None = None, fontsize: float = 9, cmap: str = "gray") -> None:
    """A uint8 input image, pixelated, no ticks: gray ``(H, W)`` with ``cmap``
    (0..255), RGB ``(H, W, 3)`` as it is."""
    array = np.asarray(image)
    if is_rgb(array):
        ax.imshow(array.astype(np.uint8), interpolation="nearest")
    else:
        ax.imshow(array, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def _draw_original(ax: Axes, original, fontsize: float = 9) -> None:
    array = np.asarray(original)
    if is_rgb(array):
        ax.imshow(array.astype(np.uint8), interpolation="nearest")
    else:
        ax.imshow(array, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("your file", fontsize=fontsize)


def _scale_label(scaling: str, color_scale: str) -> str:
    if color_scale == "per-map":
        return "per-map scale (0 = map min, 1 = map max)"
    if scaling == "reference":
        return "standardised per map ×64+128, clipped"
    return "activation (raw)"


def activation_grid_figure(
    values,
    *,
    layer: str = "",
    image=None,
    image_title: str | None = None,
    original=None,
    per_row: int | None = None,
    cmap: str = "viridis",
    scaling: str = "raw",
    color_scale: str = "shared",
    title: str | None = None,
    input_cmap: str = "gray",
    first: int | None = None,
    marks: Sequence[tuple[np.ndarray, str]] = (),
) -> Figure:
    """All maps / nodes of one layer for one image, with the input beside it.

    Args:
        values: ``(C, H, W)`` or ``(F,)`` activations of one image.
        layer: layer name for the title.
        image: the uint8 input the model saw, ``(H, W)`` or ``(H, W, 3)`` (drawn on the left).
        image_title: caption of the input (source, label, prediction).
        original: a user file's pixels, gray or RGB (drawn above the input, so the
            user sees the conversion), or ``None``.
        per_row: maps per row (default 8; 10 for a 100-node dense layer).
        cmap, scaling, color_scale: see :func:`draw_activation_grid`.
        title: figure title (default: layer, shape, value range).
        input_cmap: colormap of a gray input (RGB inputs are drawn as they are).
        first: draw only the first ``first`` maps / nodes (all when ``None``).
        marks: ``(mask, colour)`` outlines, masks shaped like ``values``.

    Returns:
        A matplotlib Figure.
    """
    all_maps = as_maps(values)
    total = all_maps.shape[0]
    shown_count = total if first is None else max(1, min(int(first), total))
    maps = all_maps[:shown_count]
    marks = [(as_maps(np.asarray(mask, dtype=float))[:shown_count], colour) for mask, colour in marks]
    count, height, width = maps.shape
    dense = (height, width) == (1, 1)
    if per_row is None:
        per_row = (10 if count <= 100 else math.ceil(math.sqrt(count))) if dense else 8
    per_row = max(1, min(per_row, count))
    rows = math.ceil(count / per_row)
    grid_aspect = (rows * height) / (per_row * width)
    grid_w = 6.4 if not dense else min(6.4, 0.45 * per_row + 1)
    grid_h = max(2.2, min(14.0, grid_w * grid_aspect))
    side = 2.4 if image is not None else 0.0
    fig = new_figure(figsize=(grid_w + side + 1.2, grid_h + 1.1), layout="constrained")
    if image is not None:
        gs = fig.add_gridspec(2 if original is not None else 1, 2, width_ratios=[side, grid_w + 1.0])
        if original is not None:
            _draw_original(fig.add_subplot(gs[0, 0]), original)
            ax_img = fig.add_subplot(gs[1, 0])
        else:
            ax_img = fig.add_subplot(gs[0, 0])
        draw_input(ax_img, image, image_title or f"input ({input_size_text(image)})", cmap=input_cmap)
        ax = fig.add_subplot(gs[:, 1])
    else:
        ax = fig.add_subplot(1, 1, 1)
    vmin = vmax = None
    if shown_count < total and scaling == "raw" and color_scale == "shared":
        # the scale of the whole layer, so that a partial grid reads like the full one
        vmin, vmax = min(0.0, float(all_maps.min())), float(all_maps.max())
    shown = draw_activation_grid(ax, maps, per_row=per_row, cmap=cmap, scaling=scaling, color_scale=color_scale,
                                 marks=marks, vmin=vmin, vmax=vmax)
    bar = fig.colorbar(shown, ax=ax, shrink=0.8 if grid_h > 3 else 1.0, pad=0.02)
    bar.set_label(_scale_label(scaling, color_scale), fontsize=8)
    bar.ax.tick_params(labelsize=7)
    unit = "nodes" if dense else f"maps of {height}×{width}"
    kind = f"{count} {unit}" if count == total else f"first {count} of {total} {unit}"
    ax.set_xlabel(f"{'node' if dense else 'map'} index = row label + column offset", fontsize=7)
    raw = _np(values)
    active = float((raw > 0).mean()) * 100.0
    fig.suptitle(
        title or f"{layer}: {kind} — max {raw.max():.3g}, {active:.0f}% of units > 0",
        fontsize=11,
    )
    return fig


def _rgb_kernel_tiles(weights: np.ndarray, limit: float) -> np.ndarray:
    """``(out, 3, kh, kw)`` → ``(out, kh, kw, 3)`` colours in 0..1, 0.5 = weight 0
    (one symmetric scale shared by all kernels and channels)."""
    return np.clip(0.5 + weights.transpose(0, 2, 3, 1) / (2.0 * limit), 0.0, 1.0)


def kernel_grid_figure(bank, *, cmap: str = "RdBu_r", per_row: int = 8, title: str | None = None,
                       color: bool = True) -> Figure:
    """Raw kernel weights with one shared symmetric scale.

    Args:
        bank: a :class:`convscope.inside.filters.FilterBank` (or anything with
            ``weights`` ``(out, in, kh, kw)`` and ``layer``).
        cmap: diverging colormap (0 = white for ``RdBu_r``).
        per_row: kernels per row for one- and three-channel inputs.
        title: figure title.
        color: draw kernels on three input channels (the first conv of an RGB
            model) as colour images: channel = colour, mid-gray = weight 0.

    Returns:
        One input channel: a grid of ``out`` kernels. Three channels with ``color``:
        a grid of ``out`` colour kernels. Otherwise an ``out × in`` grid (row =
        output map, column = input map).
    """
    weights = _np(bank.weights)
    out_ch, in_ch, kh, kw = weights.shape
    limit = float(np.abs(weights).max()) or 1.0
    norm = mcolors.TwoSlopeNorm(vmin=-limit, vcenter=0.0, vmax=limit)
    layer = getattr(bank, "layer", "")
    if in_ch == 3 and color:
        tiles = _rgb_kernel_tiles(weights, limit)
        per_row = max(1, min(per_row, out_ch))
        rows = math.ceil(out_ch / per_row)
        canvas = np.ones((rows * (kh + 1) - 1, per_row * (kw + 1) - 1, 3))
        for index in range(out_ch):
            r, c = divmod(index, per_row)
            canvas[r * (kh + 1) : r * (kh + 1) + kh, c * (kw + 1) : c * (kw + 1) + kw] = tiles[index]
        fig, ax = new_subplots(figsize=(1.0 + 0.75 * per_row, 1.1 + 0.75 * rows), layout="constrained")
        ax.imshow(canvas, interpolation="nearest")
        ax.set_yticks([r * (kh + 1) + (kh - 1) / 2 for r in range(rows)])
        ax.set_yticklabels([str(r * per_row) for r in range(rows)], fontsize=8)
        ax.set_xticks([c * (kw + 1) + (kw - 1) / 2 for c in range(per_row)])
        ax.set_xticklabels([f"+{c}" for c in range(per_row)], fontsize=8)
        ax.tick_params(length=0)
        ax.set_xlabel("kernel index = row label + column offset; colour = input channel (R, G, B), "
                      "mid-gray = 0, brighter = positive", fontsize=7)
        fig.suptitle(title or f"{layer} kernels in colour: {out_ch} of 3×{kh}×{kw}, |w| ≤ {limit:.3g}", fontsize=11)
        return fig
    if in_ch == 1:
        maps = weights[:, 0]
        per_row = max(1, min(per_row, out_ch))
        rows = math.ceil(out_ch / per_row)
        fig, ax = new_subplots(figsize=(1.0 + 0.75 * per_row, 0.9 + 0.75 * rows), layout="constrained")
        shown = ax.imshow(mosaic(maps, per_row), cmap=cmap, norm=norm, interpolation="nearest")
        _grid_lines(ax, rows, per_row, kh, kw, color="#555555", lw=0.8)
        _grid_ticks(ax, out_ch, per_row, kh, kw, fontsize=8)
        ax.set_xlabel("kernel index = row label + column offset", fontsize=8)
    else:
        canvas = weights.transpose(0, 2, 1, 3).reshape(out_ch * kh, in_ch * kw)
        width_in = min(16.0, 1.5 + in_ch * kw * 0.045)
        height_in = min(30.0, 1.0 + out_ch * kh * 0.045)
        fig, ax = new_subplots(figsize=(width_in + 1.0, height_in), layout="constrained")
        shown = ax.imshow(canvas, cmap=cmap, norm=norm, interpolation="nearest")
        _grid_lines(ax, out_ch, in_ch, kh, kw, color="#8c8c8c", lw=0.35)
        ystep, xstep = (8 if out_ch > 16 else 1), (8 if in_ch > 16 else 1)
        ax.set_yticks([o * kh + (kh - 1) / 2 for o in range(0, out_ch, ystep)])
        ax.set_yticklabels([str(o) for o in range(0, out_ch, ystep)], fontsize=7)
        ax.set_xticks([i * kw + (kw - 1) / 2 for i in range(0, in_ch, xstep)])
        ax.set_xticklabels([str(i) for i in range(0, in_ch, xstep)], fontsize=7)
        ax.set_ylabel("output map", fontsize=9)
        ax.set_xlabel("input map", fontsize=9)
        ax.tick_params(length=0)
    bar = fig.colorbar(shown, ax=ax, shrink=0.6, pad=0.02)
    bar.set_label("weight (shared symmetric scale)", fontsize=8)
    fig.suptitle(title or f"{layer} kernels: {out_ch}×{in_ch} of {kh}×{kw}, |w| ≤ {limit:.3g}", fontsize=11)
    return fig


def _names(class_names: Sequence[str] | None, count: int) -> list[str]:
    names = list(class_names) if class_names is not None else []
    return names if len(names) == count else [str(i) for i in range(count)]


def draw_probability_bars(
    ax: Axes, probabilities, *, label: int | None = None, class_names: Sequence[str] | None = None,
    fontsize: float = 8, annotate: bool = True,
) -> None:
    """Horizontal bars of the class probabilities; predicted class in orange, true class labelled."""
    probs = _np(probabilities)
    names = _names(class_names, len(probs))
    predicted = int(probs.argmax())
    colours = ["#f28e2b" if i == predicted else "#4e79a7" for i in range(len(probs))]
    many = len(probs) > 30
    ax.barh(range(len(probs)), probs, color=colours, height=0.75)
    ax.set_xlim(0, 1.0)
    ax.set_ylim(len(probs) - 0.5, -0.5)
    ax.set_yticks(range(len(probs)))
    ax.set_yticklabels([f"{n}{' (true)' if label is not None and i == label else ''}" for i, n in enumerate(names)],
                       fontsize=max(4.0, fontsize - 2) if many else fontsize)
    ax.tick_params(axis="x", labelsize=fontsize - 1)
    ax.grid(axis="x", alpha=0.3)
    if annotate:
        for i, p in enumerate(probs):
            if p >= (0.02 if many else 0.005):
                ax.text(min(p + 0.02, 0.80), i, f"{p:.1%}" if p < 0.9995 else "100%", va="center",
                        fontsize=fontsize - 1)


def probability_figure(
    probabilities, *, image=None, label: int | None = None, source: str = "", class_names: Sequence[str] | None = None,
    original=None, input_cmap: str = "gray",
) -> Figure:
    """Probability bars for one image, the input (gray or RGB) beside them."""
    probs = _np(probabilities)
    predicted = int(probs.argmax())
    names = _names(class_names, len(probs))
    columns = 1 + (image is not None) + (original is not None)
    longest = max((len(n) for n in names), default=1)
    height = max(3.4, 0.22 * len(probs) + 1.2)
    fig = new_figure(figsize=(2.6 * (columns - 1) + 4.4 + 0.05 * max(0, longest - 6), height), layout="constrained")
    gs = fig.add_gridspec(1, columns, width_ratios=[1.0] * (columns - 1) + [1.8])
    col = 0
    if original is not None:
        _draw_original(fig.add_subplot(gs[0, col]), original)
        col += 1
    if image is not None:
        draw_input(fig.add_subplot(gs[0, col]), image, f"what the model sees ({input_size_text(image)})", cmap=input_cmap)
        col += 1
    ax = fig.add_subplot(gs[0, col])
    draw_probability_bars(ax, probs, label=label, class_names=names)
    ax.set_xlabel("probability", fontsize=8)
    truth = f", true {names[label]}" if label is not None and 0 <= label < len(names) else ""
    fig.suptitle(f"{source}: predicted {names[predicted]} ({probs[predicted]:.1%}){truth}", fontsize=11)
    return fig


def class_rows_figure(
    rows: Sequence[dict],
    layers: Sequence[str],
    *,
    marks: dict[str, Sequence[tuple[np.ndarray, str]]] | None = None,
    per_row: int | Mapping[str, int] | None = None,
    cmap: str = "viridis",
    title: str = "",
    legend: Sequence[tuple[str, str]] = (),
    class_names: Sequence[str] | None = None,
    input_cmap: str = "gray",
) -> Figure:
    """Several images side by side: input | one grid per layer | probability bars.

    Args:
        rows: one dict per image with ``image`` (uint8, gray or RGB), ``caption`` (str),
            ``activations`` (``{layer: (C,H,W) or (F,)}``), ``probabilities`` and
            optional ``label``.
        layers: the layers to show, in order (one column each).
        marks: ``{layer: [(mask, colour), ...]}`` outlined in every row.
        per_row: maps per grid row: one number for every layer, or ``{layer: n}``;
            default :func:`default_per_row` (a roughly square grid: 12 for 128 maps
            of 3×3, 10 for 100 dense nodes). Each unit is drawn at least about
            0.09 inch wide so that the outlines can be checked.
        cmap: colormap; each layer column shares one raw colour scale across rows.
        title: figure title.
        legend: ``(colour, text)`` entries explaining the marks.
        class_names: names of the classes for the bars.
        input_cmap: colormap of gray inputs (RGB inputs are drawn as they are).
    """
    marks = marks or {}
    shapes = {layer: as_maps(rows[0]["activations"][layer]).shape for layer in layers}
    if isinstance(per_row, Mapping):
        chosen = dict(per_row)
    else:
        chosen = {layer: int(per_row) for layer in layers} if per_row is not None else {}
    for layer, (count, height, width) in shapes.items():
        chosen[layer] = max(1, min(count, chosen.get(layer) or default_per_row(count, height, width)))
    limits = {layer: max(float(_np(row["activations"][layer]).max()) for row in rows) for layer in layers}
    unit = 0.09  # inches per unit in the tallest grid (≥ 13 px at 150 dpi: outlines stay checkable)
    grid_units = {}
    for layer in layers:
        count, height, width = shapes[layer]
        grid_rows = math.ceil(count / chosen[layer])
        grid_units[layer] = (grid_rows * height, chosen[layer] * width)
    row_h = min(3.6, max(1.9, unit * max(h for h, _ in grid_units.values())))
    widths = [min(2.4, row_h * 0.9)]
    for layer in layers:
        h, w = grid_units[layer]
        widths.append(min(1.6 * row_h, max(1.0, row_h * w / h)))
    names = _names(class_names, len(_np(rows[0]["probabilities"])))
    widths.append(1.5 + 0.06 * max(0, max(len(n) for n in names) - 4))
    fig = new_figure(figsize=(sum(widths) + 1.0, row_h * len(rows) + 1.4), layout="constrained")
    gs = fig.add_gridspec(len(rows), len(widths), width_ratios=widths)
    shown_per_layer = {}
    for r, row in enumerate(rows):
        draw_input(fig.add_subplot(gs[r, 0]), row["image"], row.get("caption"), fontsize=8, cmap=input_cmap)
        for c, layer in enumerate(layers, start=1):
            ax = fig.add_subplot(gs[r, c])
            shown_per_layer[layer] = draw_activation_grid(
                ax, row["activations"][layer], per_row=chosen[layer], cmap=cmap, vmin=0.0,
                vmax=limits[layer] or 1.0, marks=marks.get(layer, ()), ticks=False,
                line_color="#777777",
            )
            if r == 0:
                ax.set_title(f"{layer} (raw, shared scale, {chosen[layer]} per row)", fontsize=9)
        ax_p = fig.add_subplot(gs[r, len(widths) - 1])
        draw_probability_bars(ax_p, row["probabilities"], label=row.get("label"), class_names=names, fontsize=7)
        if r == 0:
            ax_p.set_title("probabilities", fontsize=9)
    for layer, shown in shown_per_layer.items():
        bar = fig.colorbar(shown, ax=fig.axes[1 + list(layers).index(layer)::len(widths)], shrink=0.5, pad=0.01,
                           location="bottom", aspect=30)
        bar.ax.tick_params(labelsize=7)
        bar.set_label(f"{layer} activation", fontsize=7)
    if legend:
        handles = [Rectangle((0, 0), 1, 1, fill=False, edgecolor=colour, lw=1.5) for colour, _ in legend]
        fig.legend(handles, [text for _, text in legend], loc="outside lower center", ncols=min(2, len(legend)),
                   fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    return fig


def separation_figure(separations: Sequence, *, top: int = 10, cmap: str = "viridis",
                      class_names: Sequence[str] | None = None, per_row: int | Mapping[str, int] | None = None) -> Figure:
    """Whole-split class statistics: mean of class A, mean of class B, Cohen's d
    (diverging, symmetric) with the ``top`` |d| positions outlined, one row per layer.

    Args:
        separations: :class:`convscope.inside.class_patterns.Separation` objects.
        top: how many of the largest |d| positions to outline.
        cmap: colormap of the class means.
        class_names: names of the classes.
        per_row: maps per grid row (one number or ``{layer: n}``; default
            :func:`default_per_row`).
    """
    names = class_names
    fig = new_figure(figsize=(13.5, 3.3 * len(separations) + 0.8), layout="constrained")
    gs = fig.add_gridspec(len(separations), 3)

    def name_of(index: int) -> str:
        return names[index] if names is not None and 0 <= index < len(names) else str(index)

    for r, sep in enumerate(separations):
        a_name, b_name = name_of(sep.class_a), name_of(sep.class_b)
        count, height, width = as_maps(sep.cohens_d).shape
        if isinstance(per_row, Mapping):
            pr = per_row.get(sep.layer) or default_per_row(count, height, width)
        else:
            pr = per_row or default_per_row(count, height, width)
        pr = max(1, min(int(pr), count))
        vmax = max(float(_np(sep.mean_a).max()), float(_np(sep.mean_b).max())) or 1.0
        d = _np(sep.cohens_d)
        flat_order = np.argsort(-np.abs(d).reshape(-1), kind="stable")[:top]
        pos_mask = np.zeros(d.size, bool)
        neg_mask = np.zeros(d.size, bool)
        pos_mask[flat_order[d.reshape(-1)[flat_order] > 0]] = True
        neg_mask[flat_order[d.reshape(-1)[flat_order] < 0]] = True
        marks = [(pos_mask.reshape(d.shape), MARK_A), (neg_mask.reshape(d.shape), MARK_B)]
        for c, (values, label) in enumerate(
            [(sep.mean_a, f"mean over {sep.count_a} '{a_name}'"), (sep.mean_b, f"mean over {sep.count_b} '{b_name}'")]
        ):
            ax = fig.add_subplot(gs[r, c])
            shown = draw_activation_grid(ax, values, per_row=pr, cmap=cmap, vmin=0.0, vmax=vmax, marks=marks,
                                         ticks=True, line_color="#777777")
            ax.set_title(f"{sep.layer}: {label}", fontsize=9)
            fig.colorbar(shown, ax=ax, shrink=0.8, pad=0.02).ax.tick_params(labelsize=7)
        ax = fig.add_subplot(gs[r, 2])
        limit = float(np.abs(d).max()) or 1.0
        shown = ax.imshow(mosaic(as_maps(d), pr), cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        _grid_lines(ax, math.ceil(count / pr), pr, height, width, color="#999999", lw=0.4)
        _grid_ticks(ax, count, pr, height, width)
        cells = []
        for map_index, row, col in np.argwhere(as_maps((pos_mask | neg_mask).reshape(d.shape).astype(float)) > 0):
            rr, cc = divmod(int(map_index), pr)
            cells.append((cc * width + col - 0.42, rr * height + row - 0.42))
        _outline_cells(ax, cells, "#000000", 1.1)
        ax.set_title(f"{sep.layer}: Cohen's d ({a_name} − {b_name}), top {top} |d| outlined", fontsize=9)
        bar = fig.colorbar(shown, ax=ax, shrink=0.8, pad=0.02)
        bar.set_label(f"d  (red: stronger for {a_name}, blue: for {b_name})", fontsize=7)
        bar.ax.tick_params(labelsize=7)
    handles = [Rectangle((0, 0), 1, 1, fill=False, edgecolor=MARK_A, lw=1.5),
               Rectangle((0, 0), 1, 1, fill=False, edgecolor=MARK_B, lw=1.5)]
    first = separations[0]
    a_name, b_name = name_of(first.class_a), name_of(first.class_b)
    fig.legend(handles, [f"top |d|, favours {a_name}", f"top |d|, favours {b_name}"], loc="outside lower center",
               ncols=2, fontsize=8, frameon=False)
    fig.suptitle(f"Which positions separate '{a_name}' from '{b_name}' over the whole split", fontsize=11)
    return fig


def _as_rgb_float(image, cmap: str) -> np.ndarray:
    """A uint8 image → ``(H, W, 3)`` floats in 0..1 (gray through ``cmap``)."""
    array = np.asarray(image)
    if is_rgb(array):
        return array.astype(np.float64) / 255.0
    return colormaps.get_cmap(cmap)(array.astype(np.float64) / 255.0)[..., :3]


def topk_gallery_figure(
    topk, images, *, maps: Sequence[int] | None = None, per_row: int = 8, split: str = "test",
    title: str | None = None, input_cmap: str = "gray", field_note: str | None = None,
) -> Figure:
    """For each map: its top-k images as a small block, the maximal unit's
    receptive field outlined (spatial layers).

    Args:
        topk: a :class:`convscope.inside.topk.TopK`.
        images: the uint8 ``(N, H, W)`` or ``(N, H, W, 3)`` images that
            ``topk.indices`` point into.
        maps: which maps to show (default: all).
        per_row: map blocks per row.
        split: name used in the title.
        title: figure title.
        input_cmap: colormap of gray images (RGB images are drawn as they are).
        field_note: how the receptive fields were found (added to the title).
    """
    maps = list(range(topk.values.shape[0])) if maps is None else list(maps)
    k = topk.k
    cols = math.ceil(math.sqrt(k))
    rows_k = math.ceil(k / cols)
    size_h, size_w = int(np.shape(images)[1]), int(np.shape(images)[2])
    gap = max(2, size_w // 14)
    block_w, block_h = cols * (size_w + gap) - gap, rows_k * (size_h + gap) - gap
    per_row = max(1, min(per_row, len(maps)))
    block_rows = math.ceil(len(maps) / per_row)
    pad_x, pad_y = max(10, size_w // 3), max(14, size_h // 2)
    canvas = np.ones((block_rows * (block_h + pad_y), per_row * (block_w + pad_x), 3))
    fig_w = min(18.0, 1.0 + per_row * block_w / 48)
    fig_h = 1.0 + block_rows * (block_h + pad_y) / (per_row * (block_w + pad_x)) * (fig_w - 1.0)
    fig, ax = new_subplots(figsize=(fig_w, fig_h), layout="constrained")
    rects = []
    for slot, map_index in enumerate(maps):
        br, bc = divmod(slot, per_row)
        y0, x0 = br * (block_h + pad_y) + pad_y, bc * (block_w + pad_x)
        if float(topk.values[map_index, 0]) <= 0.0:
            # never positive: its "top" images are arbitrary, so show none.
            ax.text(x0 + block_w / 2, y0 + block_h / 2, "never > 0\n(dead map)", ha="center", va="center",
                    fontsize=7, color="#777777")
            ax.text(x0 + block_w / 2, y0 - 2, f"map {map_index}", ha="center", va="bottom", fontsize=6.5)
            continue
        for j in range(k):
            r, c = divmod(j, cols)
            top, left = y0 + r * (size_h + gap), x0 + c * (size_w + gap)
            canvas[top : top + size_h, left : left + size_w] = _as_rgb_float(images[int(topk.indices[map_index, j])],
                                                                            input_cmap)
            if topk.rectangles is not None:
                t, l, b, rr = (int(v) for v in topk.rectangles[map_index, j])
                if (t, l, b, rr) != (0, 0, size_h, size_w):
                    rects.append((left + l - 0.5, top + t - 0.5, rr - l, b - t))
        ax.text(x0 + block_w / 2, y0 - 2, f"map {map_index}  max {float(topk.values[map_index, 0]):.2f}",
                ha="center", va="bottom", fontsize=6.5)
    ax.imshow(canvas, interpolation="nearest")
    for x, y, w, h in rects:
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="#ff9f1c", lw=0.7))
    ax.set_axis_off()
    rf = "; orange: receptive field of the maximal unit" if rects else ""
    if rects and field_note:
        rf += f" ({field_note})"
    ax.set_title(
        title or f"{topk.layer}: top {k} of {topk.num_images} {split} images per map (by max activation){rf}",
        fontsize=10,
    )
    return fig


def mistakes_figure(
    mistakes, images, *, per_row: int = 10, split: str = "test", class_names: Sequence[str] | None = None,
    title: str | None = None, input_cmap: str = "gray",
) -> Figure:
    """Gallery of misclassified images: ``split:index``, true → predicted with P(predicted), P(true).

    Args:
        mistakes: a :class:`convscope.inside.mistakes.Mistakes`.
        images: the uint8 ``(N, H, W)`` or ``(N, H, W, 3)`` split images.
        per_row: images per row.
        split: split name for the captions.
        class_names: the class names.
        title: figure title.
        input_cmap: colormap of gray images.
    """
    n = len(mistakes.indices)
    count = int(np.shape(mistakes.probabilities)[1]) if np.ndim(mistakes.probabilities) == 2 else 0
    names = _names(class_names, count) if count else list(class_names or [])
    if n == 0:
        fig, ax = new_subplots(figsize=(5, 1.5))
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no misclassified images match", ha="center", va="center", fontsize=11)
        return fig
    per_row = max(1, min(per_row, n))
    rows = math.ceil(n / per_row)
    longest = max(len(name) for name in names)
    cell_w = 1.25 + 0.05 * max(0, 2 * longest - 6)
    fig, axes = new_subplots(rows, per_row, figsize=(cell_w * per_row + 0.3, 1.55 * rows + 0.7), squeeze=False,
                             layout="constrained")
    for slot, ax in enumerate(axes.flat):
        if slot >= n:
            ax.set_axis_off()
            continue
        index, true, pred = int(mistakes.indices[slot]), int(mistakes.labels[slot]), int(mistakes.predictions[slot])
        probs = mistakes.probabilities[slot]
        draw_input(ax, images[index], cmap=input_cmap)
        ax.set_title(f"{split}:{index}\n{names[true]}→{names[pred]} {probs[pred]:.0%} (true {probs[true]:.0%})",
                     fontsize=6.5)
    pair = ""
    if mistakes.pair is not None:
        pair = f" with true {names[mistakes.pair[0]]}, predicted {names[mistakes.pair[1]]}"
    fig.suptitle(title or f"{n} of {mistakes.total_errors} misclassified {split} images{pair} "
                 "(most confident first; true→predicted P(pred) (P(true)))", fontsize=10)
    return fig
