"""Figures without pyplot: every renderer builds its figure here.

``matplotlib.pyplot`` keeps global state (a figure registry, the current
figure, the backend). Renderers stay out of it: they build
:class:`matplotlib.figure.Figure` objects directly, so importing or calling
them never changes the user's backend (a Jupyter user's ``%matplotlib inline``
keeps working) and never leaves a figure open in pyplot's registry. Such a
figure is saved with ``fig.savefig(...)`` / :func:`convscope.io.save_figure`
(matplotlib switches to its Agg canvas just for the save) and freed by the
garbage collector like any other object.

In Jupyter a figure from :func:`new_figure` shows inline when it is the value
of a cell or passed to ``display()``: IPython's matplotlib integration renders
``Figure`` objects as PNG when it is active, and :meth:`NotebookFigure._repr_png_`
does the same when it is not (no ``%matplotlib``, or a widget backend).
"""

from __future__ import annotations

import io
from typing import Any

from matplotlib.figure import Figure


class NotebookFigure(Figure):
    """A plain :class:`~matplotlib.figure.Figure` that IPython can also show as PNG."""

    def _repr_png_(self) -> bytes:
        """PNG bytes (tight bounding box, the figure's dpi) for IPython's display."""
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()


def new_figure(**kwargs: Any) -> Figure:
    """A new figure outside pyplot; ``kwargs`` as for ``Figure`` (``figsize``, ``layout``, ...)."""
    return NotebookFigure(**kwargs)


def new_subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None,
                 layout: str | None = None, squeeze: bool = True, **subplot_kw: Any) -> tuple[Figure, Any]:
    """``plt.subplots`` without pyplot: ``(figure, axes)``.

    Args:
        nrows / ncols: grid of axes.
        figsize: inches ``(width, height)``; ``None`` = matplotlib's default.
        layout: ``"constrained"``, ``"tight"`` or ``None``.
        squeeze: as in ``plt.subplots`` (a single Axes, a 1-D or a 2-D array).
        subplot_kw: further ``Figure.subplots`` arguments (``width_ratios``, ``sharex``, ...).
    """
    figure = new_figure(figsize=figsize, layout=layout)
    return figure, figure.subplots(nrows, ncols, squeeze=squeeze, **subplot_kw)
