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
from convscope.dream.space import DreamSpace, as_photo
from convscope.dream.tiling import DEFAULT_TILE_BATCH, check_tiling, model_input_size, resize, tile_grid, to_tiles
from convscope.optvis import objectives as obj
from convscope.probe import capture
from convscope.spec import spec_of


def guide_vector(model: nn.Module, guide: torch.Tensor, layer: str, tiling: str = "fullconv") -> torch.Tensor:
    """Mean activation per map of ``layer`` for a guide image → ``(C,)``.

    ``guide``: gray ``(H, W)`` or colour ``(H, W, 3)`` pixels (a gray model sees a
    colour guide's luminance, an RGB model a gray guide repeated in three channels),
    fed in the model's input space as the dream is."""
    device = next(model.parameters()).device
    photo = as_photo(torch.as_tensor(guide), spec_of(model).channels).to(device)
    space = DreamSpace.for_image(model, photo)
    x = standardize(photo[None, None]) if space.standardizes and photo.ndim == 2 else space.to_model(photo)
    size = model_input_size(model)
    if tiling == "downscale" or x.shape[-2] < size[0] or x.shape[-1] < size[1]:
        batches = [resize(x, size)]
    elif tiling == "tiles":
        tiles = to_tiles(x, tile_grid(x.shape[-2], x.shape[-1], size))
        batches = [tiles[start : start + DEFAULT_TILE_BATCH] for start in range(0, tiles.shape[0], DEFAULT_TILE_BATCH)]
    else:
        batches = [x]
    was_training = model.training
    model.eval()
    total: torch.Tensor | None = None
    count = 0
    try:
        with torch.no_grad():
            for batch in batches:
                for out in _outputs(model, batch, layer, tiling):
                    dims = (0, 2, 3) if out.ndim == 4 else (0,)
                    part = out.sum(dim=dims, dtype=torch.float64)
                    total = part if total is None else total + part
                    count += out.numel() // out.shape[1]
    finally:
        model.train(was_training)
    assert total is not None
    return (total / count).to(torch.float32)


def _outputs(model: nn.Module, x: torch.Tensor, layer: str, tiling: str):
    """The layer's outputs for ``x``: whole, or (fullconv on a large guide) stripe by
    stripe with bounded memory (exactly the rows of the whole output)."""
    from convscope.dream.tiling import DEFAULT_STRIPE_PIXELS, _stripe_output, _stripes, stripe_plan

    height, width = x.shape[-2:]
    geometry = stripe_plan(model, obj.layer(layer)) if tiling == "fullconv" and height * width > DEFAULT_STRIPE_PIXELS else None
    if geometry is None:
        yield capture(model, x, [layer], detach=True)[layer]
        return
    for stripe in _stripes(geometry, height, width, DEFAULT_STRIPE_PIXELS):
        piece = _stripe_output(capture(model, x[..., stripe[2] : stripe[3], :], [layer], detach=True)[layer], geometry, stripe)
        assert piece is not None
        yield piece


def guided_objective(
    model: nn.Module, guide: torch.Tensor, objective: obj.Objective, tiling: str = "fullconv"
) -> obj.Objective:
    """The objective "look like the guide in the objective's (deepest) layer".

    Args:
        guide: guide image, gray ``(H, W)`` or colour ``(H, W, 3)`` pixels.
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
