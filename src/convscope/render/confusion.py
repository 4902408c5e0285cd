"""The confusion matrix of an evaluation as a figure: counts in every cell, colour
by row-normalised fraction (so a 0.5 % error rate in a small class is as visible as
in a big one), class names on both axes, per-class accuracy beside each row."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from convscope.render.figure import new_subplots


def _percent(value: float, _pos: int | None = None) -> str:
    percent = 100 * value
    return f"{percent:.2g} %" if percent < 1 else f"{percent:.0f} %"


def confusion_figure(evaluation, *, title: str | None = None, cmap: str = "Blues") -> Figure:
    """Draw ``evaluation.confusion`` (rows = true class, columns = predicted).

    Args:
        evaluation: a :class:`convscope.evaluation.Evaluation` (uses ``confusion``,
            ``class_names``, ``accuracy``, ``per_class_accuracy``, ``dataset``, ``split``).
        title: figure title (default: accuracy and error count).
        cmap: matplotlib colormap for the row-normalised fractions.

    Returns:
        A matplotlib Figure (not saved, not shown). Off-diagonal cells are coloured
        on a log scale of the row fraction so that rare confusions stay visible;
        the diagonal is drawn in a separate green scale.
    """
    confusion = np.asarray(evaluation.confusion, dtype=np.int64)
    n = confusion.shape[0]
    names = [str(name) for name in evaluation.class_names]
    support = confusion.sum(axis=1, keepdims=True)
    fraction = confusion / np.maximum(support, 1)

    long_names = max((len(name) for name in names), default=1) > 3
    size = 0.62 * n + 2.6
    fig, ax = new_subplots(figsize=(size + 1.2, size), layout="constrained")

    off = np.where(np.eye(n, dtype=bool), np.nan, fraction)
    off = np.where(off > 0, off, np.nan)
    positive = off[np.isfinite(off)]
    # The smallest error sits a little above the bottom of the scale so even a single
    # mistake gets a visible tint (white = no mistakes).
    vmin = max(1e-5, float(positive.min()) / 3) if positive.size else 1e-4
    vmax = min(1.0, float(positive.max())) if positive.size else 1.0
    vmin = min(vmin, vmax / 10)  # at least one decade, never above 100 %
    off_image = ax.imshow(off, cmap=cmap, norm=LogNorm(vmin=vmin, vmax=vmax), interpolation="nearest")
    diag = np.where(np.eye(n, dtype=bool), fraction, np.nan)
    ax.imshow(diag, cmap="Greens", vmin=0.0, vmax=1.0, interpolation="nearest")

    # Grid lines between cells, light enough not to compete with the numbers.
    ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)

    font = 9 if n <= 10 else 7
    for true in range(n):
        for pred in range(n):
            count = confusion[true, pred]
            if count == 0 and true != pred:
                continue  # empty off-diagonal cells stay blank; a 0 on the diagonal is news
            if true == pred:
                colour = "white" if fraction[true, pred] > 0.6 else "black"
                weight = "bold"
            else:
                dark = np.isfinite(off[true, pred]) and np.log(off[true, pred] / vmin) > 0.6 * np.log(vmax / vmin)
                colour = "white" if dark else "black"
                weight = "normal"
            ax.text(pred, true, f"{count:,}", ha="center", va="center", fontsize=font, color=colour, weight=weight)

    ax.set_xticks(range(n), names, rotation=45 if long_names else 0, ha="right" if long_names else "center")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")

    # Per-class accuracy on the right of each row.
    right = ax.secondary_yaxis("right")
    right.set_yticks(
        range(n),
        [("—" if not np.isfinite(acc) else f"{100 * acc:.2f} %") for acc in evaluation.per_class_accuracy],
    )
    right.tick_params(length=0, labelsize=8)
    right.set_ylabel("per-class accuracy (recall)", fontsize=8)

    bar = fig.colorbar(off_image, ax=ax, shrink=0.7, pad=0.02)
    bar.set_label("errors: share of the true class (log scale)", fontsize=8)
    ticks = [m * 10.0**e for e in range(-6, 1) for m in (1, 2, 5) if vmin <= m * 10.0**e <= vmax]
    bar.set_ticks(ticks)
    bar.ax.yaxis.set_major_formatter(FuncFormatter(_percent))
    bar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda value, _pos: ""))
    bar.ax.tick_params(labelsize=7)

    if title is None:
        where = " ".join(str(part) for part in (getattr(evaluation, "dataset", None), getattr(evaluation, "split", None)) if part)
        total = int(confusion.sum())
        errors = total - int(np.trace(confusion))
        title = f"Confusion matrix{' — ' + where if where else ''}\naccuracy {100 * evaluation.accuracy:.2f} %, {errors:,} of {total:,} wrong"
    ax.set_title(title, fontsize=11)
    return fig


__all__ = ["confusion_figure"]
