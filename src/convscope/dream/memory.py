"""How much memory a dream needs, decided before it starts.

A dream keeps a few full-size copies of the image (octave pyramid, the image,
its gradient, the rolled copy …) and, per step, the activations of the layers up
to the objective's for the backward pass. On a large photo the activations
dominate: ``fullconv`` on a 9000×9000 photo would need tens of gigabytes and die
after minutes of work. :func:`plan_memory` estimates the peak from the model's
own numbers — the bytes autograd saves for one forward/backward pass, measured
once on a small image and scaled by the pixel count — and then

* runs ``fullconv`` in exact horizontal stripes (:mod:`convscope.dream.tiling`)
  sized to the budget when the whole image would not fit,
* lowers the tile chunk of ``tiles`` to fit,
* or refuses with one :class:`DreamMemoryError` that says the estimate, the
  budget, and how to get under it (a smaller photo — the largest size that fits
  is named —, another tiling, a larger budget).

The budget defaults to 80 % of what the machine can still give this process:
the smaller of the available physical memory (``/proc/meminfo``), the room left
under the address-space and data limits (``ulimit -v``/``-d``), or the free
memory of a CUDA device. The estimate is an upper bound: on the shipped model
and the test zoo's RGB model it was 1.1–2.5 × the measured peak
(``benchmarks/dream_memory.py``); the checks are meant to turn a crash after
minutes into a clear message at once.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from convscope.optvis.objectives import Objective
from convscope.probe import Probe

#: Fraction of the free memory a dream may plan to use.
BUDGET_FRACTION = 0.8
#: Bytes per pixel per image channel (for the largest octave; the smaller octaves
#: add their share) that a dream step keeps besides the network's activations:
#: image, pyramid level, detail, gradient, rolled and normalised copies. Fitted
#: with ``benchmarks/dream_memory.py`` (gray and RGB models, 1 and 4 megapixels),
#: rounded up.
IMAGE_BYTES_PER_PIXEL_CHANNEL = 40
#: Bytes per pixel for the photo around the engine (uint8 photo, float colour
#: planes and chroma, the float and 8-bit results), fitted the same way.
PHOTO_BYTES_PER_PIXEL = 100
#: Activations are measured on a square image of at least this side.
CALIBRATION_SIDE = 128
#: Factor on the measured activation bytes (1: the measurement already over-counts a little; see the benchmark).
ACTIVATION_SLACK = 1.0


class DreamMemoryError(ValueError):
    """A dream that would need more memory than the budget allows."""


def gib(count: float) -> str:
    """``1.5 GB``-style text for a byte count."""
    if count >= 2**30:
        return f"{count / 2**30:.1f} GB"
    return f"{count / 2**20:.0f} MB"


def _read_meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _own_usage() -> dict[str, int]:
    """This process's ``VmSize`` and ``VmData`` in bytes (Linux), else empty."""
    usage: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                key = line.split(":", 1)[0]
                if key in ("VmSize", "VmData"):
                    usage[key] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return usage


def available_memory(device: torch.device | str | None = None) -> int | None:
    """Bytes this process can still allocate on ``device`` (``None`` = unknown).

    CPU: the smaller of the available physical memory and the room left under the
    soft ``RLIMIT_AS`` / ``RLIMIT_DATA`` limits. CUDA: the device's free memory.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
            return int(free)
        except Exception:  # noqa: BLE001 - no CUDA information: unknown
            return None
    if device.type != "cpu":
        return None
    candidates: list[int] = []
    physical = _read_meminfo_available()
    if physical is None:
        try:
            physical = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            physical = None
    if physical is not None:
        candidates.append(int(physical))
    try:
        import resource
    except ImportError:  # not POSIX
        resource = None  # type: ignore[assignment]
    if resource is not None:
        usage = _own_usage()
        for limit_name, used_key in (("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")):
            limit = getattr(resource, limit_name, None)
            if limit is None:
                continue
            soft, _hard = resource.getrlimit(limit)
            if soft != resource.RLIM_INFINITY and soft > 0:
                candidates.append(max(0, int(soft) - usage.get(used_key, 0)))
    return min(candidates) if candidates else None


def default_budget(device: torch.device | str | None = None) -> int | None:
    """:data:`BUDGET_FRACTION` of :func:`available_memory` (``None`` = unknown: no checks)."""
    free = available_memory(device)
    return None if free is None else int(free * BUDGET_FRACTION)


@dataclass(frozen=True)
class ActivationCost:
    """What one forward/backward pass of an objective costs, per unit of input.

    Attributes:
        per_pixel: bytes per input pixel of a whole-image (fullconv) pass with
            gradients: saved activations plus the two largest transients.
        per_pixel_no_grad: bytes per pixel of a pass without gradients.
        layer_per_pixel: bytes per input pixel of the objective's layer output
            (a striped pass keeps it whole, with its gradient).
        per_tile: bytes of one model-input-size tile with gradients (tiles).
    """

    per_pixel: float
    per_pixel_no_grad: float
    layer_per_pixel: float
    per_tile: float


def _pass_bytes(model: nn.Module, objective: Objective, image: torch.Tensor) -> tuple[int, int, int]:
    """``(saved bytes, largest tensor bytes, deepest layer output bytes)`` of one
    forward/backward pass of ``objective`` on ``image``."""
    seen: dict[int, int] = {}
    largest = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        try:
            key = tensor.untyped_storage().data_ptr()
            size = tensor.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):
            key, size = id(tensor), tensor.numel() * tensor.element_size()
        seen[key] = max(seen.get(key, 0), size)
        largest[0] = max(largest[0], size)
        return tensor

    x = image.detach().clone().requires_grad_(True)
    layers = list(objective.layers)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        if layers:
            with Probe(model, layers) as probe:
                activations = probe.run(x)
        else:
            activations = {}
        score = objective.score(activations, x).sum()
    layer_bytes = max((a.numel() * a.element_size() for a in activations.values()), default=0)
    if score.requires_grad:
        torch.autograd.grad(score, x, allow_unused=True)
    return sum(seen.values()), largest[0], layer_bytes


def activation_cost(model: nn.Module, objective: Objective, channels: int, input_size: tuple[int, int]) -> ActivationCost:
    """Measure :class:`ActivationCost` for ``objective`` on ``model`` (four small passes).

    The cost per tile is the difference between batches of 4 and 1 tiles, the
    cost per pixel the difference between two image sizes, divided by the added
    tiles / pixels: what stays constant (the weights autograd keeps) is left out."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(0)

    def total(shape: tuple[int, ...]) -> tuple[int, int, int]:
        saved, largest, layer_bytes = _pass_bytes(model, objective, torch.randn(shape, generator=generator).to(device))
        return saved + 2 * largest, largest, layer_bytes

    one, _, _ = total((1, channels, *input_size))
    four, _, _ = total((4, channels, *input_size))
    per_tile = max(four - one, 0) / 3 * ACTIVATION_SLACK
    per_pixel = per_pixel_no_grad = layer_per_pixel = 0.0
    if objective.layers and all(name not in ("logits", "probabilities") for name in objective.layers):
        small_side = max(CALIBRATION_SIDE // 2, max(input_size))
        large_side = 2 * small_side
        try:
            small, small_largest, small_layer = total((1, channels, small_side, small_side))
            large, large_largest, large_layer = total((1, channels, large_side, large_side))
        except Exception:  # noqa: BLE001 - a dense objective: no whole-image pass exists
            pass
        else:
            added = large_side**2 - small_side**2
            per_pixel = max(large - small, 0) / added * ACTIVATION_SLACK
            per_pixel_no_grad = 2 * max(large_largest - small_largest, 0) / added * ACTIVATION_SLACK
            layer_per_pixel = max(large_layer - small_layer, 0) / added
    return ActivationCost(per_pixel, per_pixel_no_grad, layer_per_pixel, per_tile)


@dataclass
class MemoryPlan:
    """How a dream will use memory.

    Attributes:
        tiling: the dream's tiling.
        height, width, channels: the largest octave (the photo's size).
        estimate_bytes: the estimated peak with the chosen settings.
        whole_bytes: the estimate without stripes / with the requested tile chunk.
        budget_bytes: the budget (``None``: unknown, nothing checked).
        stripe_pixels: ``fullconv``: stripe size in pixels (``None`` = the whole image at once).
        tile_batch: ``tiles``: tiles per chunk.
        fits: whether the estimate is within the budget.
        advice: what to change when it does not fit.
    """

    tiling: str
    height: int
    width: int
    channels: int
    estimate_bytes: int
    whole_bytes: int
    budget_bytes: int | None
    stripe_pixels: int | None
    tile_batch: int
    fits: bool = True
    advice: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "estimate_bytes": self.estimate_bytes, "whole_image_bytes": self.whole_bytes,
            "budget_bytes": self.budget_bytes, "stripe_pixels": self.stripe_pixels,
            "tile_batch": self.tile_batch, "fits": self.fits,
        }

    def check(self) -> None:
        """Raise :class:`DreamMemoryError` when the plan does not fit."""
        if not self.fits:
            raise DreamMemoryError(self.advice)


def _per_pixel_fixed(channels: int, octave_scale: float, extra_per_pixel: float) -> float:
    """Bytes per pixel of the largest octave kept besides the activations (pyramid included)."""
    pyramid = 1.0 / (1.0 - 1.0 / octave_scale**2) if octave_scale > 1 else 1.0
    return IMAGE_BYTES_PER_PIXEL_CHANNEL * channels * (1 + pyramid) / 2 + extra_per_pixel


@dataclass(frozen=True)
class _Shape:
    """One tiling's memory as a function of the pixel count ``p``:
    ``whole(p) = base + slope·p`` at the requested settings, and the least it can
    be made with stripes / a one-tile chunk: ``least_base + least_slope·p``."""

    slope: float
    base: float
    least_slope: float
    least_base: float


def _shape(tiling: str, channels: int, fixed_per_pixel: float, constant: float, cost: ActivationCost,
           striped: bool, batch: int, count: int, min_stripe: float) -> _Shape | None:
    image_copy = 4 * channels
    if tiling == "fullconv":
        if cost.per_pixel <= 0:
            return None  # the objective has no whole-image pass (a dense layer)
        whole = _Shape(fixed_per_pixel + cost.per_pixel, constant, fixed_per_pixel + cost.per_pixel, constant)
        if striped:
            return _Shape(whole.slope, constant, fixed_per_pixel + 3 * cost.layer_per_pixel,
                          constant + cost.per_pixel * min_stripe)
        return whole
    if tiling == "tiles":
        slope = fixed_per_pixel + 3 * image_copy
        return _Shape(slope, constant + cost.per_tile * min(batch, count), slope, constant + cost.per_tile)
    slope = fixed_per_pixel + 2 * image_copy
    return _Shape(slope, constant + cost.per_tile, slope, constant + cost.per_tile)


def plan_memory(
    model: nn.Module,
    objective: Objective,
    tiling: str,
    size: tuple[int, int],
    channels: int,
    *,
    octave_scale: float = 1.4,
    tile_batch: int = 512,
    budget: int | None = None,
    geometry: object | None = None,
    extra_per_pixel: float = PHOTO_BYTES_PER_PIXEL,
    cost: ActivationCost | None = None,
) -> MemoryPlan:
    """Estimate a dream's peak memory and choose stripes / tile chunks under ``budget``.

    Args:
        model: the network the dream runs on (its twin).
        objective: the dream's objective.
        tiling: ``"fullconv"``, ``"tiles"`` or ``"downscale"``.
        size: ``(H, W)`` of the largest octave.
        channels: image channels.
        octave_scale: pyramid ratio (smaller octaves are kept too; ``math.inf``: no pyramid).
        tile_batch: requested tiles per chunk (lowered to fit).
        budget: bytes the dream may use (``None``: unknown — no stripes are forced,
            nothing is refused).
        geometry: the stripe geometry (:func:`convscope.dream.tiling.stripe_plan`),
            ``None`` when ``fullconv`` cannot be striped.
        extra_per_pixel: bytes per pixel the caller keeps besides (the colour photo).
        cost: a measured :class:`ActivationCost` (measured here when ``None``).

    Returns:
        The :class:`MemoryPlan`; when it does not fit, its ``advice`` names the
        estimate, the budget, the largest photo that fits with this tiling and the
        other tilings that would fit.
    """
    from convscope.dream.tiling import model_input_size

    height, width = int(size[0]), int(size[1])
    pixels = height * width
    input_size = model_input_size(model)
    if cost is None:
        cost = activation_cost(model, objective, channels, input_size)
    fixed_per_pixel = _per_pixel_fixed(channels, octave_scale, extra_per_pixel)
    constant = 2.0 * sum(p.numel() * p.element_size() for p in model.parameters())
    batch = max(1, int(tile_batch))
    count = max(1, (height // input_size[0]) * (width // input_size[1]))
    min_stripe = float((getattr(geometry, "field", 1) + getattr(geometry, "jump", 1)) * width)

    def shape(name: str) -> _Shape | None:
        return _shape(name, channels, fixed_per_pixel, constant, cost, name == "fullconv" and geometry is not None,
                      batch, count, min_stripe)

    chosen = shape(tiling)
    assert chosen is not None, "fullconv needs an objective in conv/pool layers (check_tiling says so first)"
    whole = chosen.base + chosen.slope * pixels
    estimate = whole
    stripe_pixels: int | None = None
    if budget is not None and whole > budget:
        estimate = chosen.least_base + chosen.least_slope * pixels
        if estimate <= budget:
            if tiling == "fullconv":
                keep = constant + (fixed_per_pixel + 3 * cost.layer_per_pixel) * pixels
                stripe_pixels = int((budget - keep) / cost.per_pixel)
                estimate = keep + cost.per_pixel * stripe_pixels
            elif tiling == "tiles":
                batch = max(1, min(batch, int((budget - (constant + chosen.slope * pixels)) // max(cost.per_tile, 1.0))))
                estimate = constant + chosen.slope * pixels + cost.per_tile * min(batch, count)
    fits = budget is None or estimate <= budget
    advice = ""
    if not fits:
        assert budget is not None
        largest = max(0.0, (budget - chosen.least_base) / max(chosen.least_slope, 1e-9))
        ratio = math.sqrt(largest / pixels) if pixels else 0.0
        fit_w, fit_h = int(width * ratio), int(height * ratio)
        ways = []
        if fit_w >= input_size[1] and fit_h >= input_size[0]:
            ways.append(f"a photo of at most about {fit_w}x{fit_h} pixels")
        else:
            ways.append("a much smaller photo")
        for other in ("fullconv", "tiles", "downscale"):
            alternative = shape(other) if other != tiling else None
            if alternative is not None and alternative.least_base + alternative.least_slope * pixels <= budget:
                ways.append(f"--tiling {other}")
        ways.append("a larger budget (--memory-limit GB) on a machine with more free memory")
        advice = (
            f"this dream ({tiling} on {width}x{height} pixels, '{_short(objective.name)}') needs about "
            f"{gib(estimate)} of memory, but only about {gib(budget)} is available to it: use "
            + ", ".join(ways[:-1]) + f" or {ways[-1]}"
        )
    return MemoryPlan(
        tiling=tiling, height=height, width=width, channels=channels, estimate_bytes=int(estimate),
        whole_bytes=int(whole), budget_bytes=budget, stripe_pixels=stripe_pixels, tile_batch=batch, fits=fits,
        advice=advice,
    )


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + f"… ({len(text)} characters)"


def parse_budget(value: float | None, device: torch.device | str | None = None) -> int | None:
    """``memory_limit`` in GB (``None``: the machine's :func:`default_budget`) → bytes.

    Raises:
        DreamMemoryError: a limit that is not a positive finite number.
    """
    if value is None:
        return default_budget(device)
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise DreamMemoryError(f"the memory limit must be a positive number of GB; got {value}")
    return int(number * 2**30)


__all__ = [
    "ActivationCost", "BUDGET_FRACTION", "DreamMemoryError", "MemoryPlan", "activation_cost", "available_memory",
    "default_budget", "gib", "parse_budget", "plan_memory",
]

