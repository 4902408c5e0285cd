"""Three ways to apply a fixed-input-size model (28×28) to a large image.

Every way returns the objective's value and its gradient with respect to the
whole image ``(1, 1, H, W)``:

* ``"downscale"`` — the reference: resize the whole image to the model's input
  size (bicubic, antialiased) and run the full model on it; the gradient flows
  back through the resize. Dream patterns appear at the scale of the image.
* ``"tiles"`` — cut the image into input-size tiles (28×28), feed them as one
  batch (in bounded chunks, so a 4000×3000 photo works), sum the gradients back
  into place. The caller rolls the image randomly each step, so the seams move
  and do not persist. Works for any objective (dense layers, logits too).
* ``"fullconv"`` — run only the convolutional/pool layers on the whole image
  (the :class:`~convscope.probe.Probe` stops the forward pass at the objective's
  deepest layer): no tiles, no seams, one pass. Valid only when every layer the
  objective reads is a conv/pool layer (its output has maps); otherwise
  :class:`TilingError` says so.

All three feed the image as it is: the caller keeps the image in the model's
preprocessed (per-image standardised) space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from convscope.address import PSEUDO_LAYERS, layer_output_shapes
from convscope.optvis.objectives import Objective
from convscope.probe import Probe

TILINGS = ("downscale", "tiles", "fullconv")

#: default number of 28×28 tiles per forward/backward chunk (≈ 60 MB of activations
#: for Model A); bounds memory for very large photos.
DEFAULT_TILE_BATCH = 512

#: fullconv runs images with more pixels than this in horizontal stripes (exact,
#: see :func:`_striped_fullconv`); ≈ 800 MB of activations per stripe for Model A.
DEFAULT_STRIPE_PIXELS = 1_048_576


class TilingError(ValueError):
    """A tiling that cannot be used with this objective or image."""


def model_input_size(model: nn.Module) -> tuple[int, int]:
    """``(H, W)`` of the model's input (28×28 for the MNIST models)."""
    shape = tuple(getattr(model, "input_shape", (1, 28, 28)))
    return int(shape[-2]), int(shape[-1])


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of ``(N, C, H, W)`` to ``size = (H', W')``, antialiased when
    shrinking (as PIL's bicubic). Differentiable. Returns the input unchanged when
    the size already matches."""
    size = (int(size[0]), int(size[1]))
    if tuple(image.shape[-2:]) == size:
        return image
    shrinking = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    return F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=shrinking)


def check_tiling(model: nn.Module, objective: Objective, tiling: str) -> None:
    """Raise :class:`TilingError` when ``tiling`` is unknown or cannot serve ``objective``.

    ``fullconv`` needs every layer the objective reads to be a conv/pool layer
    (an output with maps, ``(C, H, W)``): dense layers and logits only exist for
    a 28×28 input.
    """
    if tiling not in TILINGS:
        raise TilingError(f"unknown tiling {tiling!r}; choose one of: {', '.join(TILINGS)}")
    if tiling != "fullconv":
        return
    if not objective.layers:
        return
    shapes = layer_output_shapes(model)
    dense = [name for name in objective.layers if name in PSEUDO_LAYERS or len(shapes.get(name, ())) != 3]
    if dense:
        conv = [name for name, shape in shapes.items() if len(shape) == 3 and "." not in name]
        raise TilingError(
            f"--tiling fullconv runs only the convolutional layers on the whole image, but the objective "
            f"'{objective.name}' reads {', '.join(dense)}, which exists only for a "
            f"{'x'.join(map(str, model_input_size(model)))} input; use --tiling tiles or downscale, "
            f"or an objective in {', '.join(conv)}"
        )


@dataclass(frozen=True)
class TileGrid:
    """How an ``H × W`` image is cut into ``rows × cols`` tiles of ``tile`` pixels
    (the bottom/right margin smaller than a tile is left out this step)."""

    rows: int
    cols: int
    tile: tuple[int, int]

    @property
    def count(self) -> int:
        return self.rows * self.cols


def tile_grid(height: int, width: int, tile: tuple[int, int]) -> TileGrid:
    """The tile grid for an image; raises :class:`TilingError` if it is smaller than a tile."""
    rows, cols = height // tile[0], width // tile[1]
    if rows == 0 or cols == 0:
        raise TilingError(f"image {height}x{width} is smaller than one {tile[0]}x{tile[1]} tile")
    return TileGrid(rows, cols, tile)


def to_tiles(image: torch.Tensor, grid: TileGrid) -> torch.Tensor:
    """``(1, C, H, W)`` → ``(rows·cols, C, th, tw)``, row-major."""
    th, tw = grid.tile
    channels = image.shape[1]
    cropped = image[0, :, : grid.rows * th, : grid.cols * tw]
    tiles = cropped.reshape(channels, grid.rows, th, grid.cols, tw).permute(1, 3, 0, 2, 4)
    return tiles.reshape(grid.count, channels, th, tw)


def from_tiles(tiles: torch.Tensor, grid: TileGrid, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`to_tiles`: ``(rows·cols, C, th, tw)`` → ``(1, C, H, W)``
    with zeros in the uncovered margin."""
    th, tw = grid.tile
    channels = tiles.shape[1]
    out = tiles.new_zeros((1, channels, height, width))
    block = tiles.reshape(grid.rows, grid.cols, channels, th, tw).permute(2, 0, 3, 1, 4)
    out[0, :, : grid.rows * th, : grid.cols * tw] = block.reshape(channels, grid.rows * th, grid.cols * tw)
    return out


@dataclass(frozen=True)
class _Geometry:
    """Vertical geometry of a valid-padding conv/pool stack up to one layer:
    output row ``o`` sees input rows ``[o·jump, o·jump + field)``."""

    jump: int
    field: int
    kernels: tuple[tuple[int, int], ...]  # (kernel, stride) per layer, for output sizes

    def output_rows(self, rows: int) -> int:
        for kernel, stride in self.kernels:
            rows = (rows - kernel) // stride + 1
        return rows


def _geometry(model: nn.Module, layer: str) -> _Geometry | None:
    """Geometry up to ``layer`` when every layer before it is a valid-padding
    conv / max-pool (or an element-wise module); ``None`` otherwise."""
    top = layer.split(".")[0]
    jump, field, kernels = 1, 1, []
    for name, child in model.named_children():
        leaves = [m for m in child.modules() if not any(True for _ in m.children())]
        for module in leaves:  # registration order = forward order in convscope's blocks
            if isinstance(module, nn.Conv2d):
                k, st, pad, dil = module.kernel_size[0], module.stride[0], module.padding, module.dilation[0]
                if isinstance(pad, str) and pad != "valid" or not isinstance(pad, str) and any(pad) or dil != 1:
                    return None
            elif isinstance(module, nn.MaxPool2d):
                k, st = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
                if _pair(module.padding) != 0 or _pair(module.dilation) != 1 or module.ceil_mode:
                    return None
            elif isinstance(module, (nn.ReLU, nn.Identity, nn.Dropout, nn.LeakyReLU, nn.Tanh, nn.Sigmoid)):
                k, st = 1, 1
            else:
                return None
            field += (k - 1) * jump
            jump *= st
            kernels.append((k, st))
        if name == top:
            return _Geometry(jump, field, tuple(kernels))
    return None


def _pair(value) -> int:
    return value[0] if isinstance(value, (tuple, list)) else value


def _stripes(geometry: _Geometry, height: int, width: int, budget: int) -> list[tuple[int, int, int, int]]:
    """``[(out_start, out_stop, in_start, in_stop), ...]`` covering every output row once."""
    total = geometry.output_rows(height)
    input_rows = max(geometry.field + geometry.jump, budget // max(1, width))
    per_stripe = max(1, (input_rows - geometry.field) // geometry.jump + 1)
    stripes = []
    for start in range(0, total, per_stripe):
        stop = min(total, start + per_stripe)
        stripes.append((start, stop, start * geometry.jump, (stop - 1) * geometry.jump + geometry.field))
    return stripes


def _striped_fullconv(
    model: nn.Module, objective: Objective, image: torch.Tensor, budget: int, need_gradient: bool
) -> tuple[float, torch.Tensor | None] | None:
    """fullconv on a large image in horizontal stripes, with bounded memory and the
    exact result of one whole-image pass.

    1. without gradients, run each stripe (its input rows plus the receptive-field
       halo) and assemble the objective layer's full output ``A``;
    2. score ``A`` once and take ``d score / d A`` (any objective of that layer);
    3. per stripe again, with gradients: backpropagate its rows of ``d score / d A``
       to its input rows and add them up (halos overlap).

    Costs one extra forward pass; used only for images over ``budget`` pixels.
    Returns ``None`` when the model/objective cannot be striped (the caller then
    runs the whole image at once).
    """
    if len(objective.layers) != 1:
        return None
    layer = objective.layers[0]
    geometry = _geometry(model, layer)
    height, width = image.shape[-2:]
    if geometry is None or height * width <= budget:
        return None
    stripes = _stripes(geometry, height, width, budget)
    if len(stripes) < 2:
        return None
    with torch.no_grad(), Probe(model, [layer]) as probe:
        pieces = [probe.run(image[..., a:b, :])[layer] for _, _, a, b in stripes]
    full = torch.cat(pieces, dim=2).float().requires_grad_(need_gradient)
    x = image.detach().clone().requires_grad_(need_gradient)
    with torch.set_grad_enabled(need_gradient):
        score = objective.score({layer: full}, x).sum()
    if not need_gradient:
        return float(score), None
    grad_full, grad_x = torch.autograd.grad(score, [full, x], allow_unused=True)
    grad = torch.zeros_like(image) if grad_x is None else grad_x.clone()
    with Probe(model, [layer]) as probe:
        for out_start, out_stop, in_start, in_stop in stripes:
            crop = image[..., in_start:in_stop, :].detach().clone().requires_grad_(True)
            out = probe.run(crop)[layer]
            (crop_grad,) = torch.autograd.grad(out, crop, grad_outputs=grad_full[:, :, out_start:out_stop].to(out.dtype))
            grad[..., in_start:in_stop, :] += crop_grad.float()
    return float(score.detach()), grad


def objective_and_gradient(
    model: nn.Module,
    objective: Objective,
    image: torch.Tensor,
    tiling: str,
    *,
    tile_batch: int = DEFAULT_TILE_BATCH,
    stripe_pixels: int = DEFAULT_STRIPE_PIXELS,
) -> tuple[float, torch.Tensor]:
    """Objective value and its gradient for a whole image.

    Args:
        model: the network (eval mode; its parameters are not differentiated).
        objective: what to increase.
        image: ``(1, 1, H, W)`` in the model's preprocessed space.
        tiling: ``"downscale"``, ``"tiles"`` or ``"fullconv"`` (see module doc).
        tile_batch: tiles per forward/backward chunk (memory bound) for ``tiles``.
        stripe_pixels: ``fullconv`` runs larger images in exact horizontal stripes
            of about this many pixels (memory bound; valid-padding conv stacks).

    Returns:
        ``(value, gradient)``: the objective (for tiles, the mean over tiles) and
        ``d value / d image`` of shape ``(1, 1, H, W)``.
    """
    check_tiling(model, objective, tiling)
    image = image.detach()
    if tiling == "downscale":
        x = image.clone().requires_grad_(True)
        score = objective(model, resize(x, model_input_size(model))).sum()
        (grad,) = torch.autograd.grad(score, x)
        return float(score.detach()), grad.float()
    if tiling == "fullconv":
        striped = _striped_fullconv(model, objective, image, stripe_pixels, need_gradient=True)
        if striped is not None:
            return striped  # type: ignore[return-value]
        x = image.clone().requires_grad_(True)
        with Probe(model, objective.layers) as probe:
            activations = probe.run(x)
        score = objective.score(activations, x).sum()
        (grad,) = torch.autograd.grad(score, x)
        return float(score.detach()), grad.float()
    # tiles
    height, width = image.shape[-2:]
    grid = tile_grid(height, width, model_input_size(model))
    tiles = to_tiles(image, grid)
    tile_grads = torch.empty_like(tiles)
    total = 0.0
    step = max(1, int(tile_batch))
    for start in range(0, grid.count, step):
        chunk = tiles[start : start + step].clone().requires_grad_(True)
        score = objective(model, chunk).sum() / grid.count
        (tile_grads[start : start + step],) = torch.autograd.grad(score, chunk)
        total += float(score.detach())
    return total, from_tiles(tile_grads, grid, height, width)


def evaluate(
    model: nn.Module, objective: Objective, image: torch.Tensor, tiling: str, *, tile_batch: int = DEFAULT_TILE_BATCH
) -> float:
    """The objective's value on ``image`` ``(1, 1, H, W)`` under ``tiling`` (no gradient).

    For ``tiles`` it is the mean over four tile-grid offsets (0, ¼, ½, ¾ of a tile
    along the diagonal): the dream is optimised under random rolls, so a single
    fixed grid would measure an arbitrary alignment.
    """
    check_tiling(model, objective, tiling)
    with torch.no_grad():
        if tiling == "downscale":
            return float(objective(model, resize(image, model_input_size(model))).sum())
        if tiling == "fullconv":
            striped = _striped_fullconv(model, objective, image, DEFAULT_STRIPE_PIXELS, need_gradient=False)
            return striped[0] if striped is not None else float(objective(model, image).sum())
        tile = model_input_size(model)
        grid = tile_grid(image.shape[-2], image.shape[-1], tile)
        step = max(1, int(tile_batch))
        scores = []
        for quarter in range(4):
            shift = (-(quarter * tile[0]) // 4, -(quarter * tile[1]) // 4)
            tiles = to_tiles(torch.roll(image, shifts=shift, dims=(-2, -1)), grid)
            scores.append(sum(float(objective(model, tiles[s : s + step]).sum()) for s in range(0, grid.count, step)) / grid.count)
        return sum(scores) / len(scores)
