"""The confusion matrix of an evaluation as a figure: counts in every cell, colour
by row-normalised fraction (so a 0.5 % error rate in a small class is as visible as
in a big one), class names on both axes, per-class accuracy beside each row."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

from convscope.render.figure import new_subplots


def _percent(value: float, _pos: int | None = None) -> str:
    percent = 100 * value
    return f"{percent:.2g} %" if percent < 1 else f"{percent:.0f} %"


#: Above this many classes the counts are not written into the cells (they would not fit).
MAX_ANNOTATED_CLASSES = 30


def confusion_figure(evaluation, *, title: str | None = None, cmap: str = "Blues",
                     highlight: tuple[int, int] | None = None) -> Figure:
    """Draw ``evaluation.confusion`` (rows = true class, columns = predicted).

    Args:
        evaluation: a :class:`convscope.evaluation.Evaluation` (uses ``confusion``,
            ``class_names``, ``accuracy``, ``per_class_accuracy``, ``dataset``, ``split``).
        title: figure title (default: accuracy and error count).
        cmap: matplotlib colormap for the row-normalised fractions.
        highlight: a class pair ``(a, b)`` whose two off-diagonal cells are outlined
            (e.g. the most confused pair).

    Returns:
        A matplotlib Figure (not saved, not shown). Off-diagonal cells are coloured
        on a log scale of the row fraction so that rare confusions stay visible;
        the diagonal is drawn in a separate green scale. Any class count: up to
        :data:`MAX_ANNOTATED_CLASSES` classes every non-zero count is written in its
        cell; the figure grows with the class count up to a limit, and long class
        names are turned.
    """
    confusion = np.asarray(evaluation.confusion, dtype=np.int64)
    n = confusion.shape[0]
    names = [str(name) for name in evaluation.class_names]
    if len(names) != n:
        names = [str(i) for i in range(n)]
    shown_names = [name if len(name) <= 24 else name[:22] + "…" for name in names]
    support = confusion.sum(axis=1, keepdims=True)
    fraction = confusion / np.maximum(support, 1)

    long_names = max((len(name) for name in shown_names), default=1) > 3
    annotate = n <= MAX_ANNOTATED_CLASSES
    cell = 0.62 if n <= 10 else 0.42 if annotate else 0.14
    label_room = 0.07 * max((len(name) for name in shown_names), default=1) if long_names else 0.0
    size = min(22.0, cell * n + 2.6 + label_room)
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

    font = 9 if n <= 10 else 7 if n <= 20 else 5.5
    for true in range(n if annotate else 0):
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

    tick_font = 10 if n <= 10 else 8 if n <= 30 else max(3.0, 8 - n / 25)
    step = 1 if n <= 120 else int(np.ceil(n / 120))
    ticks = list(range(0, n, step))
    ax.set_xticks(ticks, [shown_names[i] for i in ticks], rotation=45 if long_names or n > 30 else 0,
                  ha="right" if long_names or n > 30 else "center", fontsize=tick_font)
    ax.set_yticks(ticks, [shown_names[i] for i in ticks], fontsize=tick_font)
    if highlight is not None:
        a, b = highlight
        for row, col in ((a, b), (b, a)):
            ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="#d62728", lw=2.0, zorder=5))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")

    # Per-class accuracy on the right of each row.
    right = ax.secondary_yaxis("right")
    accuracies = list(evaluation.per_class_accuracy)
    right.set_yticks(
        ticks,
        [("—" if not np.isfinite(accuracies[i]) else f"{100 * accuracies[i]:.2f} %") for i in ticks],
    )
    right.tick_params(length=0, labelsize=8 if n <= 30 else tick_font)
    right.set_ylabel("per-class accuracy (recall)", fontsize=8)

    bar = fig.colorbar(off_image, ax=ax, shrink=0.7, pad=0.02)
    bar.set_label("errors: share of the true class (log scale)", fontsize=8)
    ticks = [m * 10.0**e for e in range(-6, 1) for m in (1, 2, 5) if vmin <= m * 10.0**e <= vmax]
    bar.set_ticks(ticks)
    bar.ax.yaxis.set_major_formatter(FuncFormatter(_percent))
    bar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda value, _pos: ""))
    bar.ax.tick_params(labelsize=7)

    if title is None:
        dataset = str(getattr(evaluation, "dataset", None) or "")
        if "/" in dataset or len(dataset) > 40:
            dataset = dataset.rstrip("/").rsplit("/", 1)[-1][:40]
        where = " ".join(part for part in (dataset, str(getattr(evaluation, "split", None) or "")) if part)
        total = int(confusion.sum())
        errors = total - int(np.trace(confusion))
        title = f"Confusion matrix{' — ' + where if where else ''}\naccuracy {100 * evaluation.accuracy:.2f} %, {errors:,} of {total:,} wrong"
        if highlight is not None:
            title += f"; outlined: {names[highlight[0]]} vs {names[highlight[1]]}"
        if not annotate:
            title += f"\n({n} classes: counts are in the JSON, not in the cells)"
    ax.set_title(title, fontsize=11)
    return fig


__all__ = ["confusion_figure"]
