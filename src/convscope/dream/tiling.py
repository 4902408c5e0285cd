"""Three ways to apply a fixed-input-size model (its spec's ``H × W``, 28×28 for the
MNIST models) to a large image.

Every way returns the objective's value and its gradient with respect to the
whole image ``(1, C, H, W)`` (gray or colour, in the model's input space):

* ``"downscale"`` — the reference: resize the whole image to the model's input
  size (bicubic, antialiased) and run the full model on it; the gradient flows
  back through the resize. Dream patterns appear at the scale of the image.
* ``"tiles"`` — cut the image into input-size tiles, feed them as one batch (in
  bounded chunks, so a 4000×3000 photo works), sum the gradients back into place.
  The caller rolls the image randomly each step, so the seams move and do not
  persist. Works for any objective (dense layers, logits too).
* ``"fullconv"`` — run only the layers up to the objective's deepest one on the
  whole image (the :class:`~convscope.probe.Probe` stops the forward pass there):
  no tiles, no seams, one pass. Valid only when every layer the objective reads
  is a conv/pool layer (its output has maps); otherwise :class:`TilingError` says
  so. Large images run in exact horizontal stripes when the layers before the
  objective's are convolutions, poolings and pointwise modules (any padding,
  stride, dilation; checked numerically once per model and layer).

All three feed the image as it is: the caller keeps the image in the model's
preprocessed space (:mod:`convscope.dream.space`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from convscope.address import PSEUDO_LAYERS, canonical_layer, find_module, layer_output_shapes
from convscope.optvis.objectives import Objective
from convscope.probe import Probe
from convscope.spec import spec_of

TILINGS = ("downscale", "tiles", "fullconv")

#: default number of input-size tiles per forward/backward chunk (≈ 60 MB of
#: activations for Model A); bounds memory for very large photos (the dream's memory
#: plan lowers it where a budget requires: :mod:`convscope.dream.memory`).
DEFAULT_TILE_BATCH = 512

#: fullconv called directly runs images with more pixels than this in horizontal
#: stripes (exact, see :func:`_striped_fullconv`); ≈ 800 MB of activations per stripe
#: for Model A. A dream chooses its stripes from its memory plan instead.
DEFAULT_STRIPE_PIXELS = 1_048_576


class TilingError(ValueError):
    """A tiling that cannot be used with this objective or image."""


def model_input_size(model: nn.Module) -> tuple[int, int]:
    """``(H, W)`` of the model's input, from its spec (28×28 for the MNIST models).

    Raises:
        SpecError: the model has no spec (:func:`convscope.wrap` attaches one).
    """
    return spec_of(model).size


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
    dense = [
        name for name in objective.layers
        if name in PSEUDO_LAYERS or len(shapes.get(canonical_layer(model, name), ())) != 3
    ]
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
    """Vertical geometry of a conv/pool stack up to one layer: output row ``o``
    depends on input rows ``[o·jump + start, o·jump + start + field)`` (``start`` < 0
    with padding: the rows above the image are padding).

    ``kernels`` holds ``(kernel, stride, padding, dilation)`` per spatial layer, for
    output sizes."""

    jump: int
    field: int
    kernels: tuple[tuple[int, int, int, int], ...]
    start: int = 0

    def output_rows(self, rows: int) -> int:
        for kernel, stride, padding, dilation in self.kernels:
            rows = (rows + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
        return rows


class _Reached(BaseException):
    """Stops the geometry trace's forward pass at the layer (a BaseException, so a
    model's own ``except Exception`` cannot swallow it)."""


#: Modules that act on every pixel on its own (in eval mode): they leave the geometry alone.
_POINTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
    nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout2d,
    nn.BatchNorm2d,
)

_GEOMETRY_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict[str, _Geometry | None]]" = weakref.WeakKeyDictionary()


def _called_leaves(model: nn.Module, layer: str) -> list[nn.Module] | None:
    """The leaf modules the forward pass calls before ``layer``'s output is complete,
    in call order (one forward pass on zeros of the spec's input shape)."""
    target = find_module(model, layer)
    calls: list[nn.Module] = []

    def hook(module: nn.Module, _inputs: object, _output: object) -> None:
        if next(module.children(), None) is None:
            calls.append(module)
        if module is target:
            raise _Reached

    handles = [module.register_forward_hook(hook) for module in model.modules()]
    shape = spec_of(model).input_shape
    try:
        parameter = next(model.parameters(), None)
        zeros = torch.zeros((1, *shape), device=parameter.device if parameter is not None else None)
        with torch.no_grad():
            model(zeros)
    except _Reached:
        return calls
    except Exception:  # noqa: BLE001 - any failure: no geometry, the caller runs the whole image
        return None
    finally:
        for handle in handles:
            handle.remove()
    return None


def _row_parameters(module: nn.Module) -> tuple[int, int, int, int] | None:
    """``(kernel, stride, padding, dilation)`` along rows for a conv/pool module,
    ``(1, 1, 0, 1)`` for a pointwise module, ``None`` for anything else."""
    if isinstance(module, nn.Conv2d):
        kernel, stride, dilation = module.kernel_size[0], module.stride[0], module.dilation[0]
        padding = module.padding
        if isinstance(padding, str):
            padding = 0 if padding == "valid" else (dilation * (kernel - 1)) // 2
        else:
            padding = padding[0]
        return kernel, stride, padding, dilation
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        if module.ceil_mode:
            return None
        kernel = _pair(module.kernel_size)
        stride = _pair(module.stride or module.kernel_size)
        dilation = _pair(getattr(module, "dilation", 1))
        return kernel, stride, _pair(module.padding), dilation
    if isinstance(module, _POINTWISE):
        return 1, 1, 0, 1
    return None


def _geometry(model: nn.Module, layer: str) -> _Geometry | None:
    """Row geometry up to ``layer`` when the modules the forward pass calls before it
    are convolutions, poolings (any stride, padding, dilation) and pointwise
    modules; checked numerically (:func:`_verify_stripes`). ``None`` when the model
    cannot be cut into stripes exactly (the caller then runs the whole image)."""
    cached = _GEOMETRY_CACHE.get(model)
    if cached is not None and layer in cached:
        return cached[layer]
    geometry = _trace_geometry(model, layer)
    if geometry is not None and not _verify_stripes(model, layer, geometry):
        geometry = None
    try:
        _GEOMETRY_CACHE.setdefault(model, {})[layer] = geometry
    except TypeError:  # not weakly referenceable: no cache
        pass
    return geometry


def _trace_geometry(model: nn.Module, layer: str) -> _Geometry | None:
    leaves = _called_leaves(model, layer)
    if not leaves:
        return None
    jump, field, start, kernels = 1, 1, 0, []
    for module in leaves:
        parameters = _row_parameters(module)
        if parameters is None:
            return None
        kernel, stride, padding, dilation = parameters
        if (kernel, stride, padding, dilation) == (1, 1, 0, 1):
            continue
        start -= padding * jump
        field += dilation * (kernel - 1) * jump
        jump *= stride
        kernels.append((kernel, stride, padding, dilation))
    return _Geometry(jump, field, tuple(kernels), start)


def _verify_stripes(model: nn.Module, layer: str, geometry: _Geometry) -> bool:
    """Striped and whole-image outputs of ``layer`` agree on a random image (the
    geometry cannot see functional operations in ``forward``; this check can)."""
    spec = spec_of(model)
    height = 3 * geometry.field + 8 * geometry.jump
    width = max(spec.width, 2 * geometry.field)
    parameter = next(model.parameters(), None)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn((1, spec.channels, height, width), generator=generator)
    if parameter is not None:
        image = image.to(parameter.device)
    try:
        stripes = _stripes(geometry, height, width, (geometry.field + geometry.jump) * width)
        if len(stripes) < 3:
            return False
        with torch.no_grad(), Probe(model, [layer]) as probe:
            whole = probe.run(image)[layer]
            pieces = [_stripe_output(probe.run(image[..., a:b, :])[layer], geometry, s) for s in stripes
                      for a, b in [(s[2], s[3])]]
    except Exception:  # noqa: BLE001 - a model that cannot run on stripes is run whole
        return False
    if any(piece is None for piece in pieces) or whole.ndim != 4:
        return False
    joined = torch.cat(pieces, dim=2)  # type: ignore[arg-type]
    scale = float(whole.abs().max()) or 1.0
    return joined.shape == whole.shape and bool(torch.allclose(joined, whole, rtol=1e-4, atol=1e-5 * scale))


def _stripe_output(output: torch.Tensor, geometry: _Geometry, stripe: tuple[int, int, int, int]) -> torch.Tensor | None:
    """The rows ``[out_start, out_stop)`` of the full output, from the output of the
    stripe's input rows (``None`` if the stripe did not produce them)."""
    out_start, out_stop, in_start, _ = stripe
    skip = out_start - in_start // geometry.jump
    piece = output[:, :, skip : skip + out_stop - out_start]
    return piece if piece.shape[2] == out_stop - out_start and skip >= 0 else None


def _pair(value) -> int:
    return value[0] if isinstance(value, (tuple, list)) else value


def _stripes(geometry: _Geometry, height: int, width: int, budget: int) -> list[tuple[int, int, int, int]]:
    """``[(out_start, out_stop, in_start, in_stop), ...]`` covering every output row
    once; ``in_start`` is a multiple of the jump (so the stripe's rows line up with
    the whole image's) and each stripe's input holds every row its outputs read."""
    total = geometry.output_rows(height)
    input_rows = max(geometry.field + geometry.jump, budget // max(1, width))
    per_stripe = max(1, (input_rows - geometry.field) // geometry.jump + 1)
    stripes = []
    for start in range(0, total, per_stripe):
        stop = min(total, start + per_stripe)
        need_start = start * geometry.jump + geometry.start
        need_stop = (stop - 1) * geometry.jump + geometry.start + geometry.field
        in_start = max(0, (need_start // geometry.jump) * geometry.jump)
        stripes.append((start, stop, in_start, min(height, need_stop)))
    return stripes


def stripe_plan(model: nn.Module, objective: Objective) -> _Geometry | None:
    """The row geometry that lets ``fullconv`` run ``objective`` in exact stripes,
    or ``None`` (several layers, a dense layer, or a model that is not a conv/pool
    stack up to the layer)."""
    if len(objective.layers) != 1 or objective.layers[0] in PSEUDO_LAYERS:
        return None
    return _geometry(model, canonical_layer(model, objective.layers[0]))


def _striped_fullconv(
    model: nn.Module, objective: Objective, image: torch.Tensor, budget: int | None, need_gradient: bool
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
    height, width = image.shape[-2:]
    if budget is None or height * width <= budget:
        return None
    geometry = stripe_plan(model, objective)
    if geometry is None:
        return None
    layer = objective.layers[0]
    stripes = _stripes(geometry, height, width, budget)
    if len(stripes) < 2:
        return None
    with torch.no_grad(), Probe(model, [layer]) as probe:
        pieces = [_stripe_output(probe.run(image[..., a:b, :])[layer], geometry, s) for s in stripes for a, b in [(s[2], s[3])]]
    if any(piece is None for piece in pieces):
        return None
    full = torch.cat(pieces, dim=2).float().requires_grad_(need_gradient)  # type: ignore[arg-type]
    del pieces
    x = image.detach().clone().requires_grad_(need_gradient)
    with torch.set_grad_enabled(need_gradient):
        score = objective.score({layer: full}, x).sum()
    if not need_gradient:
        return float(score), None
    grad_full, grad_x = torch.autograd.grad(score, [full, x], allow_unused=True)
    del full
    grad = torch.zeros_like(image) if grad_x is None else grad_x.clone()
    with Probe(model, [layer]) as probe:
        for stripe in stripes:
            out_start, out_stop, in_start, in_stop = stripe
            crop = image[..., in_start:in_stop, :].detach().clone().requires_grad_(True)
            out = _stripe_output(probe.run(crop)[layer], geometry, stripe)
            assert out is not None
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
    stripe_pixels: int | None = DEFAULT_STRIPE_PIXELS,
) -> tuple[float, torch.Tensor]:
    """Objective value and its gradient for a whole image.

    Args:
        model: the network (eval mode; its parameters are not differentiated).
        objective: what to increase.
        image: ``(1, C, H, W)`` in the model's preprocessed space.
        tiling: ``"downscale"``, ``"tiles"`` or ``"fullconv"`` (see module doc).
        tile_batch: tiles per forward/backward chunk (memory bound) for ``tiles``.
        stripe_pixels: ``fullconv`` runs larger images in exact horizontal stripes
            of about this many pixels (memory bound; conv/pool stacks up to the
            objective's layer); ``None``: always the whole image at once.

    Returns:
        ``(value, gradient)``: the objective (for tiles, the mean over tiles) and
        ``d value / d image`` of shape ``(1, C, H, W)``.
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
    model: nn.Module,
    objective: Objective,
    image: torch.Tensor,
    tiling: str,
    *,
    tile_batch: int = DEFAULT_TILE_BATCH,
    stripe_pixels: int | None = DEFAULT_STRIPE_PIXELS,
) -> float:
    """The objective's value on ``image`` ``(1, C, H, W)`` under ``tiling`` (no gradient).

    For ``tiles`` it is the mean over four tile-grid offsets (0, ¼, ½, ¾ of a tile
    along the diagonal): the dream is optimised under random rolls, so a single
    fixed grid would measure an arbitrary alignment.
    """
    check_tiling(model, objective, tiling)
    with torch.no_grad():
        if tiling == "downscale":
            return float(objective(model, resize(image, model_input_size(model))).sum())
        if tiling == "fullconv":
            striped = _striped_fullconv(model, objective, image, stripe_pixels, need_gradient=False)
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
