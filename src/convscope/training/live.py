"""Live training curves in a notebook: one figure, redrawn after every epoch.

:class:`EpochPlot` is an ``on_epoch_end`` callback for
:func:`convscope.training.train` (the posts' ``EpochPlot``). It needs no
matplotlib backend and no ``%matplotlib`` magic: it renders the curves to PNG
and shows them through an IPython display handle that is updated in place.
"""

from __future__ import annotations

import io
from typing import Any

from torch import nn

from convscope.render.training import training_curves_figure
from convscope.training.loop import TrainState, validation_label
from convscope.training.recipes import Recipe


def _notebook_display() -> Any | None:
    """IPython's ``display`` when running inside an IPython shell, else ``None``."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return None
    return display if get_ipython() is not None else None


class EpochPlot:
    """Redraw one training-curves figure (loss, accuracy, LR) after every epoch.

    In Jupyter the figure appears under the cell after the first epoch and is
    replaced in place after each later one, so the cell ends with a single
    figure. Outside IPython (a script, or IPython not installed) nothing is shown;
    :attr:`png` holds the latest drawing either way. Combine it with persistence by
    passing a list of callbacks.

    Example (a notebook cell)::

        from pathlib import Path
        from convscope.data import load_split
        from convscope.models import build_model
        from convscope.training import get_recipe, init_weights, train
        from convscope.training.checkpoint import Checkpointer
        from convscope.training.live import EpochPlot

        recipe = get_recipe("fast").with_overrides(epochs=4)
        model = build_model("seed_cnn")
        init_weights(model, recipe.init, seed=0)
        state = train(
            model, load_split("train"), load_split("test"), recipe, seed=0,
            on_epoch_end=[Checkpointer(Path("runs/nb/checkpoint"), recipe=recipe, seed=0),
                          EpochPlot(recipe, title="Model A, fast recipe")],
        )

    Args:
        recipe: the run's recipe; gives the loss label (label smoothing) and the
            name of the validating set. ``None``: no smoothing, the test set.
        title: figure title.
        dpi: resolution of the PNG (the figure is 13 × 3.6 inches).

    Attributes:
        png: PNG bytes of the latest drawing (``None`` before the first epoch).
        updates: how many times the figure was drawn.
    """

    def __init__(self, recipe: Recipe | None = None, title: str = "", *, dpi: int = 80) -> None:
        self.title = title
        self.dpi = dpi
        self.label_smoothing = recipe.label_smoothing if recipe is not None else 0.0
        self.validation = validation_label(recipe) if recipe is not None else "test"
        self.png: bytes | None = None
        self.updates = 0
        self._handle: Any = None

    def __call__(self, state: TrainState, model: nn.Module | None = None, optimizer: Any = None) -> None:
        """Draw ``state.history`` / ``state.lr_history`` and show or update the figure."""
        figure = training_curves_figure(
            state.history, state.lr_history, self.title, label_smoothing=self.label_smoothing, validation=self.validation
        )
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=self.dpi, bbox_inches="tight")
        self.png = buffer.getvalue()
        self.updates += 1
        display = _notebook_display()
        if display is None:
            return
        last = state.history[-1] if state.history else None
        summary = "no epoch yet" if last is None else (
            f"epoch {last.epoch}: train {100 * last.train_accuracy:.2f} %, "
            f"{self.validation} {100 * last.held_out_accuracy:.2f} %"
        )
        bundle = {"image/png": self.png, "text/plain": f"<training curves, {summary}>"}
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)
