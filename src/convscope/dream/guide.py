"""Guided dreams: dream toward the features of another image.

The guide image is run through the model (same tiling as the dream) and its
activations in the objective's layer are averaged over positions (and tiles)
into one vector ``g`` over the layer's maps. The dream objective becomes the
direction ``g / |g|`` in that layer's map space
(:func:`convscope.optvis.objectives.direction`): the dream grows the features
that the guide image has, in the proportions it has them.
"""

from __future__ import annotations

import torch
from torch import nn

from convscope.data.preprocess import standardize
from convscope.dream.tiling import check_tiling, model_input_size, resize, tile_grid, to_tiles
from convscope.optvis import objectives as obj
from convscope.probe import capture


def guide_vector(model: nn.Module, guide: torch.Tensor, layer: str, tiling: str = "fullconv") -> torch.Tensor:
    """Mean activation per map of ``layer`` for a gray guide image ``(H, W)`` → ``(C,)``."""
    gray = torch.as_tensor(guide, dtype=torch.float32)
    while gray.ndim > 2:
        gray = gray[0]
    device = next(model.parameters()).device
    x = standardize(gray.to(device)[None, None])
    size = model_input_size(model)
    if tiling == "downscale" or x.shape[-2] < size[0] or x.shape[-1] < size[1]:
        x = resize(x, size)
    elif tiling == "tiles":
        x = to_tiles(x, tile_grid(x.shape[-2], x.shape[-1], size))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = capture(model, x, [layer], detach=True)[layer]
    finally:
        model.train(was_training)
    if out.ndim == 4:
        return out.mean(dim=(0, 2, 3))
    return out.mean(dim=0)


def guided_objective(
    model: nn.Module, guide: torch.Tensor, objective: obj.Objective, tiling: str = "fullconv"
) -> obj.Objective:
    """The objective "look like the guide in the objective's (deepest) layer".

    Args:
        guide: gray guide image ``(H, W)`` (any value range).
        objective: the user's objective; only its layer is used (the deepest if several).
        tiling: how the guide is fed (as for the dream).

    Raises:
        ValueError: the objective reads no layer, or the guide does not activate it.
    """
    if not objective.layers:
        raise ValueError("a guide needs an objective that reads a layer, e.g. 'Conv2D_3'")
    check_tiling(model, objective, tiling)
    order = [name for name, _ in model.named_modules()]
    layer = max(objective.layers, key=lambda name: order.index(name) if name in order else len(order))
    vector = guide_vector(model, guide, layer, tiling)
    norm = float(vector.norm())
    if norm <= 0:
        raise ValueError(f"the guide image does not activate {layer} at all; choose another guide or layer")
    guided = obj.direction(layer, vector / norm)
    return obj.Objective(guided.fn, guided.layers, f"guide({layer})")
