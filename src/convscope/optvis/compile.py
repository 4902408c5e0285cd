"""The compile step: exact speed rewrites applied before an input-gradient
optimisation, where they are exact.

* :func:`~convscope.models.twin.gradient_twin` — a frozen, channels-last copy of the
  model with ReLU moved after max-pooling where nobody reads the block, and a fast
  input gradient for a 1-channel first convolution;
* :func:`~convscope.optvis.own_channel.own_channel_objective` — a batched map
  objective computes only each member's own map;
* :func:`~convscope.models.twin.input_extent` — feed the network only the part of
  the image the objective's layers can see.

Every rewrite gives the same values and gradients up to float rounding and is
skipped (falls back to the plain model) wherever it does not apply; the caller's
model is never modified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from convscope.models.twin import gradient_twin, input_extent
from convscope.optvis.objectives import Objective
from convscope.optvis.own_channel import own_channel_objective


@dataclass
class Compiled:
    """The model and objectives to optimise with, and the input extent.

    Attributes:
        model: the twin (or ``model`` itself when ``fast=False``).
        objectives: the (possibly rewritten) objectives, ``None`` kept as ``None``.
        extent: ``(h, w)`` of the input part to feed, or ``None`` for all of it.
    """

    model: nn.Module
    objectives: list[Objective | None]
    extent: tuple[int, int] | None


def compile_for_input_gradient(
    model: nn.Module,
    objectives: Sequence[Objective | None],
    image_size: Sequence[int],
    *,
    fast: bool = True,
    own_channel: bool = True,
    crop: bool = True,
) -> Compiled:
    """Apply the exact rewrites for optimising ``objectives`` on images of ``image_size`` ``(H, W)``.

    Args:
        model: the network (unchanged).
        objectives: the objectives that will be evaluated (``None`` entries allowed).
        image_size: ``(H, W)`` of the images.
        fast: ``False`` = no rewrites at all (the plain model, for checks).
        own_channel: rewrite batched map objectives to compute only their maps.
        crop: compute the input extent.
    """
    if not fast:
        return Compiled(model, list(objectives), None)
    rewritten = [
        None if objective is None else (own_channel_objective(model, objective) if own_channel else objective)
        for objective in objectives
    ]
    layers = tuple(dict.fromkeys(layer for objective in rewritten if objective is not None for layer in objective.layers))
    twin = gradient_twin(model, layers)
    size = (int(image_size[0]), int(image_size[1]))
    # the caller's model: the same geometry as the twin's, and its derivation is kept per model
    extent = input_extent(model, layers, size) if crop and layers else None
    if extent == size:
        extent = None
    return Compiled(twin, rewritten, extent)


__all__ = ["Compiled", "compile_for_input_gradient"]
