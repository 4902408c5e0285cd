"""Draw OIPs: the final image (viridis, gray, contrast-enhanced), the evolution
strip of snapshots, loss curves, per-layer galleries with dead maps marked, the
2×5 class grid and strategy comparisons.

Renderers only draw: they take tensors / arrays and return matplotlib Figures
(built without pyplot, never shown or saved here). 28×28 images use
``interpolation="nearest"`` so the pixels stay visible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from convscope.render.figure import new_figure, new_subplots
from convscope.render.inside import _np  # tensor/array → float64 ndarray

DEAD_COLOR = "#ff3b30"
SILENT_COLOR = "#ff9500"


def _image(values) -> np.ndarray:
    """``(1, H, W)`` / ``(H, W)`` → ``(H, W)``; ``(3, H, W)`` → ``(H, W, 3)`` (colour)."""
    array = _np(values)
    if array.ndim == 3 and array.shape[0] == 3:
        return np.moveaxis(array, 0, -1)
    while array.ndim > 2:
        array = array[0]
    return array


def to_rgb(image, low: float | None = None, high: float | None = None) -> np.ndarray:
    """An RGB image in any value range (``(3, H, W)`` or ``(H, W, 3)``) → ``(H, W, 3)``
    in 0..1 for display: the joint min–max of all channels, or ``low..high`` percentiles."""
    array = _np(image)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = np.moveaxis(array, 0, -1)
    lo, hi = (float(array.min()), float(array.max())) if low is None else np.percentile(array, [low, high])
    return np.clip((array - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(array)


def contrast_enhance(image, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """Stretch the ``low``..``high`` percentile range to 0..1 (clipped) — the
    reference's "contrast-enhanced" view."""
    array = _image(image)
    lo, hi = np.percentile(array, [low, high])
    if hi <= lo:
        return np.zeros_like(array)
    return np.clip((array - lo) / (hi - lo), 0.0, 1.0)


def oip_views(image, *, title: str = "", subtitle: str = "") -> Figure:
    """The OIP in the reference's three views: viridis, gray, contrast-enhanced.

    Args:
        image: ``(1, H, W)`` or ``(H, W)`` (standardised values).
        title: e.g. ``"Conv2D_3:120"``.
        subtitle: e.g. the final loss.
    """
    array = _image(image)
    fig, axes = new_subplots(1, 3, figsize=(10.5, 3.8), layout="constrained")
    if array.ndim == 3:  # colour: the picture, stretched, and its channel mean
        views = [
            ("colour", to_rgb(array), None, None),
            ("contrast-enhanced", to_rgb(array, 2.0, 98.0), None, None),
            ("channel mean (viridis)", array.mean(axis=2), "viridis", "value (std units)"),
        ]
    else:
        views = [
            ("viridis", array, "viridis", "value (std units)"),
            ("gray", array, "gray", "value (std units)"),
            ("contrast-enhanced", contrast_enhance(array), "gray", "2–98 % stretched"),
        ]
    for ax, (name, data, cmap, label) in zip(axes, views):
        shown = ax.imshow(data, cmap=cmap, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if label is not None:
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03).set_label(label, fontsize=8)
    fig.suptitle(f"OIP {title}" + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
    return fig


def evolution_strip(snapshots, steps: Sequence[int], losses=None, *, title: str = "", cmap: str = "viridis") -> Figure:
    """The image at the reference's logarithmic report steps.

    Args:
        snapshots: ``(S, C, H, W)`` images of one member (C = 1 or 3).
        steps: the ``S`` step numbers.
        losses: optional ``(T,)`` loss history to print the loss under each panel.
    """
    frames = _np(snapshots)
    n = frames.shape[0]
    history = None if losses is None else _np(losses)
    fig, axes = new_subplots(1, n, figsize=(1.45 * n + 0.6, 2.3), layout="constrained")
    axes = np.atleast_1d(axes)
    for ax, frame, step in zip(axes, frames, steps):
        picture = _image(frame)
        ax.imshow(to_rgb(picture) if picture.ndim == 3 else picture, cmap=cmap, interpolation="nearest")
        label = f"step {step}"
        if history is not None and step < len(history):
            label += f"\nloss {history[step]:.3g}"
        ax.set_title(label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"evolution {title}".strip(), fontsize=10)
    return fig


def loss_curve(
    losses, *, title: str = "", converged_step: int | None = None, snapshot_steps: Sequence[int] = (),
    steps: Sequence[int] | None = None,
) -> Figure:
    """Loss (map mean activation) over the ascent steps for one member.

    Args:
        losses: ``(T,)`` the history.
        steps: the ``T`` step numbers when the history was recorded only every
            few steps (default: ``0..T-1``, one value per step).
    """
    history = _np(losses)
    x = np.arange(len(history)) if steps is None else np.asarray(list(steps))
    fig, ax = new_subplots(figsize=(6, 3.6), layout="constrained")
    ax.plot(x, history, color="#1f77b4", lw=1.6, label="loss")
    for step in snapshot_steps:
        hit = np.flatnonzero(x == step)
        if len(hit):
            ax.plot(step, history[hit[0]], "o", color="#444", ms=3)
    if converged_step is not None and converged_step >= 0:
        ax.axvline(converged_step, color="#2ca02c", ls="--", lw=1, label=f"converged (step {converged_step})")
    ax.set_xlabel("step")
    ax.set_ylabel("objective (mean activation)")
    ax.set_title(f"loss {title}".strip(), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def layer_loss_curves(
    losses, map_indices: Sequence[int], *, title: str = "", highlight: Sequence[int] = (),
    steps: Sequence[int] | None = None,
) -> Figure:
    """All members' loss histories ``(T, M)`` in one plot (thin lines), with the
    median in bold; ``steps``: the ``T`` step numbers if not ``0..T-1``."""
    history = _np(losses)
    x = np.arange(history.shape[0]) if steps is None else np.asarray(list(steps))
    fig, ax = new_subplots(figsize=(7, 4), layout="constrained")
    ax.plot(x, history, color="#1f77b4", alpha=0.15, lw=0.7)
    ax.plot(x, np.median(history, axis=1), color="k", lw=2, label="median over maps")
    maps = list(map_indices)
    for m in highlight:
        if m in maps:
            ax.plot(x, history[:, maps.index(m)], lw=1.5, label=f"map {m}")
    ax.set_xlabel("step")
    ax.set_ylabel("objective (mean activation)")
    ax.set_title(f"loss histories {title}".strip(), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _cross_out(ax, h: int, w: int) -> None:
    """Mark an ``h × w`` image cell as dead: red ✕ and frame."""
    ax.plot([-0.5, w - 0.5], [-0.5, h - 0.5], color=DEAD_COLOR, lw=1.5)
    ax.plot([-0.5, w - 0.5], [h - 0.5, -0.5], color=DEAD_COLOR, lw=1.5)
    ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor=DEAD_COLOR, lw=2.5))
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


def layer_gallery(
    images, map_indices: Sequence[int], final_loss, *, title: str = "", per_row: int | None = None, cmap: str = "viridis",
    fires_on_data: Sequence[bool] | None = None,
) -> Figure:
    """All OIPs of a layer in a grid; maps whose OIP stays at 0 are crossed out in red
    — or, when ``fires_on_data`` says the map did fire on some dataset image, framed
    in orange ("0 here, fires on data": its OIP search failed, the map is not dead).

    Each cell is coloured on its own value range (as a separate ``imshow`` would)
    and the cells are pasted into one mosaic drawn in a single axes — hundreds of
    subplots would take seconds to lay out and save.

    Args:
        images: ``(M, C, H, W)`` (C = 1: coloured with ``cmap``; C = 3: colour).
        map_indices: the ``M`` map numbers (cell labels).
        final_loss: ``(M,)``; a map with loss ≤ 0 is marked dead.
        fires_on_data: ``(M,)`` whether each map fires on some dataset image.
    """
    frames = _np(images)
    colour = frames.ndim == 4 and frames.shape[1] == 3
    frames = np.moveaxis(frames, 1, -1) if colour else frames.reshape(frames.shape[0], frames.shape[-2], frames.shape[-1])
    losses = _np(final_loss).reshape(-1)
    n, h, w = frames.shape[:3]
    fires = [False] * n if fires_on_data is None else [bool(f) for f in fires_on_data]
    per_row = per_row or (16 if n > 64 else 8 if n > 16 else max(1, n))
    rows = math.ceil(n / per_row)
    gap_x, gap_y = max(2, w // 8), max(6, h // 3)  # room between cells and for the labels
    cell_w, cell_h = w + gap_x, h + gap_y
    mosaic = np.ones((rows * cell_h, per_row * cell_w - gap_x, 4))
    colormap = colormaps.get_cmap(cmap)
    for i in range(n):
        frame = frames[i]
        top, left = (i // per_row) * cell_h + gap_y, (i % per_row) * cell_w
        if colour:
            mosaic[top : top + h, left : left + w, :3] = to_rgb(frame)
            continue
        lo, hi = float(frame.min()), float(frame.max())
        scaled = (frame - lo) / (hi - lo) if hi > lo else np.zeros_like(frame)
        mosaic[top : top + h, left : left + w] = colormap(scaled)
    fig, ax = new_subplots(figsize=(per_row * 0.95, rows * 1.1 + 0.5))
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    for i in range(n):
        top, left = (i // per_row) * cell_h + gap_y, (i % per_row) * cell_w
        zero = not losses[i] > 0
        dead = zero and not fires[i]
        edge = DEAD_COLOR if dead else SILENT_COLOR if zero else "black"
        ax.text(left + w / 2 - 0.5, top - 1.5, f"{map_indices[i]}", ha="center", va="bottom", fontsize=7, color=edge)
        box_x, box_y = [left - 0.5, left + w - 0.5], [top - 0.5, top + h - 0.5]
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, edgecolor=edge, lw=2.5 if zero else 0.6))
        if dead:
            ax.plot(box_x, box_y, color=DEAD_COLOR, lw=1.5)
            ax.plot(box_x, box_y[::-1], color=DEAD_COLOR, lw=1.5)
    ax.set_xlim(-1, mosaic.shape[1])
    ax.set_ylim(mosaic.shape[0], 0)
    alive = int((losses > 0).sum())
    silent = sum(1 for i in range(n) if not losses[i] > 0 and fires[i])
    legend = "red ✕: never fires" + (f"; orange: 0 here but fires on data ({silent})" if silent else "")
    fig.suptitle(f"{title} — {alive} of {n} maps reach a non-zero OIP ({legend})".strip(" —"), fontsize=11)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.55 / (rows * 1.1 + 0.5))
    return fig


def diversity_gallery(
    images, map_indices: Sequence[int], final_loss, similarity=None, *, title: str = "", maps_per_band: int = 16,
    cmap: str = "viridis",
) -> Figure:
    """Several OIPs per map (a diversity run): one row per map with its ``K`` members
    side by side, each titled with its final activation; dead members crossed out.

    Args:
        images: ``(M, K, 1, H, W)`` or ``(M, K, H, W)``.
        map_indices: the ``M`` map numbers (row labels).
        final_loss: ``(M, K)`` each member's final activation; ≤ 0 is marked dead.
        similarity: optional ``(M,)`` mean pairwise similarity of each map's members
            (printed under the row label).
        maps_per_band: rows per column band; more maps wrap into further bands.
    """
    frames = _np(images)
    if frames.ndim == 5:
        frames = np.moveaxis(frames, 2, -1) if frames.shape[2] == 3 else frames[:, :, 0]
    m, k = frames.shape[:2]
    losses = _np(final_loss).reshape(m, k)
    sims = None if similarity is None else _np(similarity).reshape(m)
    bands = math.ceil(m / maps_per_band)
    rows = math.ceil(m / bands)
    fig = new_figure(figsize=(max(5.0, bands * (k * 0.95 + 0.8)), rows * 1.1 + 0.9), layout="constrained")
    for band, sub in enumerate(np.atleast_1d(fig.subfigures(1, bands))):
        axes = sub.subplots(rows, k, squeeze=False)
        for row in range(rows):
            i = band * rows + row
            for j in range(k):
                ax = axes[row, j]
                if i >= m:
                    ax.axis("off")
                    continue
                picture = frames[i, j]
                ax.imshow(to_rgb(picture) if picture.ndim == 3 else picture, cmap=cmap, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                dead = not losses[i, j] > 0
                ax.set_title(f"#{j}: {losses[i, j]:.3g}", fontsize=7, color=DEAD_COLOR if dead else "black", pad=1.5)
                if dead:
                    _cross_out(ax, *picture.shape[:2])
            if i < m:
                label = f"map {map_indices[i]}" + ("" if sims is None else f"\nsim {sims[i]:.2f}")
                axes[row, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    alive = int((losses > 0).sum())
    summary = f"{alive} of {m * k} OIPs reach a non-zero activation (red ✕: never reacted)"
    fig.suptitle(f"{title}\n{summary}" if title else summary, fontsize=10)
    return fig


def class_grid(images, classes: Sequence[int | str], probabilities=None, logits=None, *, title: str = "", cmap: str = "viridis") -> Figure:
    """Class visualisations in a 2×5 grid (or ``ceil(C/5)`` rows), labelled with
    the class (its name) and, if given, the model's probability/logit for it;
    RGB models' patterns in colour."""
    frames = _np(images)
    n = frames.shape[0]
    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig, axes = new_subplots(rows, cols, figsize=(cols * 2.0, rows * 2.3 + 0.4), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    probs = None if probabilities is None else _np(probabilities)
    logit_values = None if logits is None else _np(logits)
    for i in range(n):
        ax = axes.flat[i]
        picture = _image(frames[i])
        ax.imshow(to_rgb(picture) if picture.ndim == 3 else picture, cmap=cmap, interpolation="nearest")
        label = f"class {classes[i]}"
        if logit_values is not None:
            label += f"\nlogit {logit_values[i]:.1f}"
        if probs is not None:
            label += f", p={probs[i]:.3f}"
        ax.set_title(label, fontsize=9)
    fig.suptitle(title or "class patterns (each logit maximised)", fontsize=11)
    return fig


def strategy_comparison(
    loss_a, loss_b, *, label_a: str = "strategy 0", label_b: str = "strategy 1", title: str = "",
    map_indices: Sequence[int] | None = None, label_top: int = 12,
) -> Figure:
    """Scatter of per-map final activation, strategy A vs B, with the diagonal.

    Maps dead under both sit at (0, 0): they are drawn as one marked point with
    their count (the axes start just below 0 so nothing hides on the frame). The
    ``label_top`` maps farthest from the diagonal are labelled with their index.
    """
    a, b = _np(loss_a).reshape(-1), _np(loss_b).reshape(-1)
    maps = list(range(len(a))) if map_indices is None else list(map_indices)
    fig, ax = new_subplots(figsize=(5.4, 5.2), layout="constrained")
    top = max(float(a.max(initial=0)), float(b.max(initial=0))) * 1.05 + 1e-9
    pad = 0.03 * top
    ax.plot([0, top], [0, top], color="#888", lw=1, ls="--", label="equal")
    both_dead = (a <= 0) & (b <= 0)
    ax.scatter(a[~both_dead], b[~both_dead], s=14, alpha=0.75, label="maps")
    if both_dead.any():
        ax.scatter([0], [0], s=60, marker="X", color=DEAD_COLOR, zorder=3,
                   label=f"dead under both ({int(both_dead.sum())}: {_short_list([maps[i] for i in np.flatnonzero(both_dead)])})")
    distance = np.abs(b - a)
    for i in np.argsort(-distance)[: max(0, label_top)]:
        if both_dead[i] or distance[i] <= 0:
            continue
        ax.annotate(str(maps[i]), (a[i], b[i]), textcoords="offset points", xytext=(3, 3), fontsize=7, color="#333")
    ax.set_xlim(-pad, top)
    ax.set_ylim(-pad, top)
    ax.set_xlabel(f"{label_a}: final activation")
    ax.set_ylabel(f"{label_b}: final activation")
    wins = int((b > a).sum())
    ax.set_title(f"{title}\n{label_b} higher on {wins} of {len(a)} maps (labels: map index)".strip(), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def _short_list(values: Sequence[int], limit: int = 6) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (" …" if len(values) > limit else "")
