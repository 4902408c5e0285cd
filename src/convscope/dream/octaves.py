"""Full DeepDream: octaves, random roll (jitter), whole-image gradient normalisation.

The algorithm the reference set out to reach (SEED-ALGORITHMS §6), for any model:

1. map the photo into the model's input space (:mod:`convscope.dream.space`: the
   reference standardises it, mean 0 and std 1; other models get their own
   preprocessing) and build ``octaves`` downscaled versions, each
   ``octave_scale`` smaller than the next; the smallest is never smaller than the
   model's input (its spec's ``H × W``);
2. estimate the memory the dream needs and choose stripes / tile chunks to stay
   within the budget, or refuse at once (:mod:`convscope.dream.memory`);
3. start at the smallest: for ``steps`` steps roll the image by a random offset
   (jitter), take the objective's gradient under the chosen tiling
   (:mod:`convscope.dream.tiling`), roll the gradient back, normalise it to unit
   RMS over the whole image, and step; keep the image in the model's input
   distribution (re-standardise, the reference's fix; or clip to the valid pixel
   range for models with fixed preprocessing);
4. the dream detail (image − that octave's photo) is upscaled to the next octave
   and added to the photo at that level — detail from the original is re-added
   at every level;
5. map the result back to the photo's value range.

Use :func:`deep_dream` (gray ``(H, W)`` or colour ``(H, W, 3)`` pixels) and
:mod:`convscope.dream.colour` for colour photos (a gray model dreams on the
luminance and the chroma is put back; an RGB model dreams in colour).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from convscope.dream.memory import MemoryPlan, default_budget, plan_memory
from convscope.dream.space import DreamSpace, as_photo, image_size
from convscope.dream.tiling import (
    DEFAULT_STRIPE_PIXELS,
    DEFAULT_TILE_BATCH,
    TilingError,
    check_tiling,
    evaluate,
    model_input_size,
    objective_and_gradient,
    resize,
    stripe_plan,
)
from convscope.models.twin import gradient_twin
from convscope.optvis.callbacks import OnScore
from convscope.optvis.core import NormalizedAscent, optimize
from convscope.optvis.objectives import Objective
from convscope.optvis.params import PixelImage
from convscope.optvis.transforms import Roll
from convscope.spec import spec_of

Progress = Callable[[int, int], None]

_EPS = 1e-7


@dataclass
class DreamResult:
    """A dream of one image.

    Attributes:
        image: ``(H, W)`` (gray model) or ``(H, W, 3)`` (RGB model) float, the dream
            in the input's value range (not clipped).
        standardized: the dream in the model's input space, ``(H, W)`` or ``(3, H, W)``.
        octave_sizes: ``[(h, w), ...]`` from smallest to largest (the last is the input size).
        objective_before: the objective on the standardised input (same tiling, full size).
        objective_after: the objective on the dream.
        values: objective value after every step (all octaves, in order).
        notes: things the user should know (e.g. octaves dropped because an octave
            would have been smaller than the model's input).
        parameters: the settings used (for JSON).
        space: the model's input space (channels, preprocessing, step unit).
        memory: the memory plan (estimate, budget, stripes / tile chunk).
    """

    image: torch.Tensor
    standardized: torch.Tensor
    octave_sizes: list[tuple[int, int]]
    objective_before: float
    objective_after: float
    values: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    space: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Numbers and settings as plain JSON-ready values."""
        return {
            "height": int(self.image.shape[-2]),
            "width": int(self.image.shape[-1]),
            "octave_sizes": [list(s) for s in self.octave_sizes],
            "objective_before": self.objective_before,
            "objective_after": self.objective_after,
            "objective_gain": self.objective_after / self.objective_before if self.objective_before > 0 else None,
            "values": self.values,
            "notes": self.notes,
            "parameters": self.parameters,
            "space": self.space,
            "memory": self.memory,
        }


def octave_sizes(
    height: int, width: int, octaves: int, scale: float, minimum: tuple[int, int] = (28, 28)
) -> tuple[list[tuple[int, int]], list[str]]:
    """Sizes of the octaves from smallest to largest (the last is ``(height, width)``).

    An octave is never smaller than ``minimum`` (the model's input): octaves that
    would be are dropped, and a note says so.

    Raises:
        TilingError: the image itself is smaller than ``minimum``, or bad arguments.
    """
    if isinstance(octaves, bool) or int(octaves) != octaves or octaves < 1:
        raise TilingError(f"octaves must be a whole number, at least 1; got {octaves}")
    if not math.isfinite(scale) or scale <= 1.0:
        raise TilingError(f"the octave scale must be a finite number > 1 (each octave that much smaller); got {scale}")
    if height < minimum[0] or width < minimum[1]:
        raise TilingError(
            f"the image is {width}x{height} pixels, smaller than the model's {minimum[1]}x{minimum[0]} input; "
            "use a larger image"
        )
    sizes: list[tuple[int, int]] = []
    for level in range(int(octaves)):
        factor = scale**level
        size = (int(round(height / factor)), int(round(width / factor)))
        if size[0] < minimum[0] or size[1] < minimum[1]:
            break
        sizes.append(size)
    notes = []
    if len(sizes) < octaves:
        notes.append(
            f"asked for {octaves} octaves at scale {scale:g}, but a {width}x{height} image allows only {len(sizes)}: "
            f"an octave is never smaller than the model's {minimum[1]}x{minimum[0]} input"
        )
    return sizes[::-1], notes


def prepare_model(model: nn.Module, read_layers: tuple[str, ...] | None = None) -> nn.Module:
    """The copy of ``model`` a dream runs on: a :func:`~convscope.models.twin.gradient_twin`
    (frozen, channels-last, exact rewrites that speed up the input gradient on CPU).
    The caller's model is not changed."""
    return gradient_twin(model, read_layers)


def _auto_jitter(size: tuple[int, int], tile: tuple[int, int]) -> int:
    # Up to one tile, so tile seams can land anywhere; less on small images.
    return max(1, min(max(tile), min(size) // 4))


class ClippedPixelImage(PixelImage):
    """Pixels kept inside ``[low, high]`` per channel after every step (a dream of a
    model with fixed preprocessing stays a valid picture: pixels 0..255).

    Args:
        initial: ``(n, C, H, W)``.
        low, high: ``(1, C, 1, 1)`` bounds in the model's input space.
    """

    def __init__(self, initial: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> None:
        super().__init__(initial, restandardize=False)
        self.low, self.high = low, high

    def commit(self, rows: torch.Tensor, leaves: list[torch.Tensor], new: list[torch.Tensor], moving: torch.Tensor) -> None:
        super().commit(rows, leaves, [torch.clamp(new[0], self.low, self.high)], moving)


def dream_step_loop(
    model: nn.Module,
    objective: Objective,
    image: torch.Tensor,
    *,
    steps: int,
    step_size: float,
    tiling: str,
    jitter: int | None,
    generator: torch.Generator,
    restandardize: bool = True,
    tile_batch: int = DEFAULT_TILE_BATCH,
    on_step: Callable[[float], None] | None = None,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    stripe_pixels: int | None = DEFAULT_STRIPE_PIXELS,
) -> torch.Tensor:
    """``steps`` ascent steps on one octave image ``(1, C, h, w)``; returns the new image.

    One call of the optimisation core (:func:`~convscope.optvis.core.optimize`):
    each step rolls the image by a random ``(dy, dx)`` in ``[-jitter, jitter]``
    (the :class:`~convscope.optvis.transforms.Roll` transform), takes the gradient
    under ``tiling`` (:class:`TilingScorer`), rolls it back (autograd through the
    roll), divides it by its RMS over the image, steps by ``step_size`` and
    re-standardises (``restandardize``, standardising models) or clips to
    ``bounds`` (``(low, high)`` per channel, models with fixed preprocessing).
    """
    tile = model_input_size(model)
    max_shift = _auto_jitter(tuple(image.shape[-2:]), tile) if jitter is None else int(jitter)
    if bounds is not None and restandardize:
        parametrisation: PixelImage = ClippedPixelImage(image, *bounds)
    else:
        parametrisation = PixelImage(image, restandardize=restandardize)
    run = optimize(
        model, objective, parametrisation, steps=steps,
        step_rule=NormalizedAscent(step_size), transforms=[Roll(max_shift)],
        callbacks=[OnScore(on_step)], generator=generator,
        scorer=TilingScorer(model, objective, tiling, tile_batch, stripe_pixels),
        pad_single=False, evaluate_last=False,
    )
    return run.parametrisation.current


class TilingScorer:
    """A scorer for :func:`~convscope.optvis.core.optimize` that evaluates one whole
    image ``(1, C, H, W)`` under a tiling and returns the gradient itself
    (:func:`~convscope.dream.tiling.objective_and_gradient`: striped full
    convolution, tiles in bounded chunks, or the downscaled image)."""

    differentiable = False

    def __init__(
        self, model: nn.Module, objective: Objective, tiling: str, tile_batch: int = DEFAULT_TILE_BATCH,
        stripe_pixels: int | None = DEFAULT_STRIPE_PIXELS,
    ) -> None:
        self.model = model
        self.layers = objective.layers
        self.tiling = tiling
        self.tile_batch = tile_batch
        self.stripe_pixels = stripe_pixels

    def __enter__(self) -> "TilingScorer":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def score(self, images: torch.Tensor, objective: Objective, need_gradient: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        options = dict(tile_batch=self.tile_batch, stripe_pixels=self.stripe_pixels)
        if need_gradient:
            value, gradient = objective_and_gradient(self.model, objective, images, self.tiling, **options)
            return torch.tensor([value], dtype=torch.float64), gradient
        value = evaluate(self.model, objective, images, self.tiling, **options)
        return torch.tensor([value], dtype=torch.float64), None


def check_dream_numbers(**values: float | int | None) -> None:
    """Refuse NaN, infinite and out-of-range dream settings with one message each.

    Known names: ``steps``, ``rounds``, ``epochs`` (whole numbers ≥ 0 / ≥ 1),
    ``step_size``, ``epsilon`` (finite, > 0), ``octave_scale`` (finite, > 1),
    ``jitter`` (whole number ≥ 0 or ``None``), ``tile_batch`` (whole number ≥ 1),
    ``zoom`` (finite, > 1), ``frames`` (whole number ≥ 1).
    """
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TilingError(f"{name} must be a number; got {value!r}")
        if not math.isfinite(value):
            raise TilingError(f"{name} must be a finite number; got {value}")
        whole = name in ("steps", "rounds", "epochs", "jitter", "tile_batch", "frames", "octaves")
        if whole and int(value) != value:
            raise TilingError(f"{name} must be a whole number; got {value}")
        minimum = {"steps": 0, "epochs": 0, "jitter": 0, "rounds": 1, "tile_batch": 1, "frames": 1, "octaves": 1}.get(name)
        if minimum is not None and value < minimum:
            raise TilingError(f"{name} must be at least {minimum}; got {value}")
        if name in ("step_size", "epsilon") and value <= 0:
            raise TilingError(f"{name} must be > 0; got {value}")
        if name in ("octave_scale", "zoom") and value <= 1:
            raise TilingError(f"{name} must be > 1; got {value}")


def plan_dream(
    model: nn.Module,
    objective: Objective,
    size: tuple[int, int],
    *,
    tiling: str = "fullconv",
    octave_scale: float = 1.4,
    tile_batch: int = DEFAULT_TILE_BATCH,
    memory_budget: int | None = None,
    prepared: bool = False,
) -> MemoryPlan:
    """The memory plan of a dream of a ``size`` ``(H, W)`` photo, before any image
    is allocated (:func:`~convscope.dream.memory.plan_memory`): the estimate, the
    budget, and the stripes / tile chunk that keep it within the budget.

    Args:
        model: the network (``prepared``: already the dream's twin).
        memory_budget: bytes (default: :func:`~convscope.dream.memory.default_budget`).

    Call :meth:`~convscope.dream.memory.MemoryPlan.check` to raise
    :class:`~convscope.dream.memory.DreamMemoryError` when it does not fit.
    """
    check_tiling(model, objective, tiling)
    twin = model if prepared else prepare_model(model, objective.layers)
    device = next(twin.parameters()).device if any(True for _ in twin.parameters()) else torch.device("cpu")
    budget = default_budget(device) if memory_budget is None else int(memory_budget)
    geometry = stripe_plan(twin, objective) if tiling == "fullconv" else None
    return plan_memory(twin, objective, tiling, size, spec_of(twin).channels, octave_scale=octave_scale,
                       tile_batch=tile_batch, budget=budget, geometry=geometry)


def deep_dream(
    model: nn.Module,
    objective: Objective,
    image: torch.Tensor,
    *,
    tiling: str = "fullconv",
    octaves: int = 4,
    octave_scale: float = 1.4,
    steps: int = 10,
    step_size: float = 0.05,
    jitter: int | None = None,
    restandardize: bool = True,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    tile_batch: int = DEFAULT_TILE_BATCH,
    bfloat16: bool = False,
    progress: Progress | None = None,
    memory_budget: int | None = None,
) -> DreamResult:
    """DeepDream of an image, in the model's own input space (:mod:`convscope.dream.space`).

    Args:
        model: the network (a frozen eval-mode copy is used; ``model`` is not changed).
            Its spec says the input size, channels and preprocessing.
        objective: what to increase, e.g. ``parse_objective("Conv2D_3")``.
        image: gray ``(H, W)`` (``(1, H, W)``, ``(1, 1, H, W)``) or colour ``(H, W, 3)``
            (``(3, H, W)``, ``(1, 3, H, W)``) pixels, at least the model's input size.
            A gray model dreams on a colour image's luminance; an RGB model on all
            three channels (a gray image repeated). Standardising models take any
            value range; others pixels on the 0..255 scale.
        tiling: ``"downscale"`` (reference), ``"tiles"`` or ``"fullconv"``.
        octaves: number of scales (dropped, with a note, where an octave would be
            smaller than the model's input).
        octave_scale: size ratio between neighbouring octaves (> 1).
        steps: ascent steps per octave.
        step_size: step per step along the unit-RMS gradient, in units of the
            image's standard deviation in the model's space (0.05: the photo stays
            recognisable after 4 octaves × 10 steps; 0.1 for a stronger dream).
        jitter: largest random roll in pixels per step (default: one tile, or a
            quarter of the smaller side for small images); 0 = none.
        restandardize: keep the image in the model's input distribution after
            every step: re-standardise it (standardising models, the reference) or
            clip it to the valid pixel range (other preprocessings).
        seed / generator: randomness for the rolls (a generator wins).
        tile_batch: tiles per chunk for ``tiling="tiles"`` (memory bound; lowered
            by the memory plan when needed).
        bfloat16: run the model under bfloat16 autocast (faster on CPUs with
            AVX512-BF16 / AMX and on GPUs; the image and the step stay float32).
        progress: ``progress(done_steps, total_steps)`` after every step (may raise
            :class:`~convscope.optvis.core.Cancelled` to stop).
        memory_budget: bytes the dream may use (default: 80 % of the memory the
            machine can still give, :func:`~convscope.dream.memory.default_budget`).
            Estimated before the first step: ``fullconv`` runs in stripes, ``tiles``
            in smaller chunks to fit, else :class:`~convscope.dream.memory.DreamMemoryError`.

    Returns:
        :class:`DreamResult` with the dream ``(H, W)`` / ``(H, W, 3)`` in the input's value range.

    Raises:
        TilingError: bad tiling for the objective (``fullconv`` with a dense
            objective), image smaller than the model's input, bad settings
            (NaN, infinite, out of range).
        DreamInputError: an image of another layout, or with NaN / infinite pixels.
        DreamMemoryError: the dream would not fit in ``memory_budget``.
    """
    check_tiling(model, objective, tiling)
    check_dream_numbers(steps=steps, step_size=step_size, octave_scale=octave_scale, jitter=jitter,
                        tile_batch=tile_batch, octaves=octaves)
    spec = spec_of(model)
    height, width = image_size(image)
    tile = model_input_size(model)
    sizes, notes = octave_sizes(height, width, octaves, octave_scale, tile)
    device = next(model.parameters()).device if any(True for _ in model.parameters()) else torch.device("cpu")
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(0 if seed is None else int(seed))

    # the memory plan comes first: nothing full-size is allocated before it
    model = prepare_model(model, objective.layers)
    plan = plan_dream(model, objective, (height, width), tiling=tiling, octave_scale=octave_scale,
                      tile_batch=tile_batch, memory_budget=memory_budget, prepared=True)
    plan.check()
    photo = as_photo(image, spec.channels).to(device=device, dtype=torch.float32)
    stripe_pixels = plan.stripe_pixels if plan.budget_bytes is not None else DEFAULT_STRIPE_PIXELS
    if plan.stripe_pixels is not None:
        notes.append(f"fullconv runs in stripes of about {plan.stripe_pixels:,} pixels to stay within the memory budget")
    if tiling == "tiles" and plan.tile_batch < int(tile_batch):
        notes.append(f"tiles run in chunks of {plan.tile_batch} to stay within the memory budget")
    tile_batch = plan.tile_batch

    space = DreamSpace.for_image(model, photo)
    if space.standardizes and float(space.std) < 1e-6:
        notes.append("the image is flat (constant); the dream starts from a uniform field")
    base = space.to_model(photo)
    bounds = space.bounds(base)

    bases = [resize(base, size) for size in sizes]
    values: list[float] = []
    total_steps = steps * len(sizes)
    epsilon = step_size * space.scale
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bfloat16 else contextlib.nullcontext()
    options = dict(tile_batch=tile_batch, stripe_pixels=stripe_pixels)
    with autocast:
        before = evaluate(model, objective, base, tiling, **options)
        detail = torch.zeros_like(bases[0])
        current = bases[0]

        def on_step(value: float) -> None:
            values.append(value)
            if progress is not None:
                progress(len(values), total_steps)

        for level, octave_base in enumerate(bases):
            if level > 0:
                detail = resize(detail, tuple(octave_base.shape[-2:]))
            current = octave_base + detail
            if bounds is not None and restandardize:
                current = torch.clamp(current, *bounds)
            current = dream_step_loop(
                model, objective, current, steps=steps, step_size=epsilon, tiling=tiling, jitter=jitter,
                generator=generator, restandardize=restandardize, tile_batch=tile_batch, on_step=on_step,
                bounds=bounds, stripe_pixels=stripe_pixels,
            )
            detail = current - octave_base
        after = evaluate(model, objective, current, tiling, **options)

    dreamed = current[0, 0] if spec.channels == 1 else current[0]
    parameters = {
        "objective": objective.name, "tiling": tiling, "octaves": len(sizes), "octaves_requested": octaves,
        "octave_scale": octave_scale, "steps": steps, "step_size": step_size,
        "jitter": jitter if jitter is not None else "auto", "restandardize": restandardize, "seed": seed,
        "bfloat16": bfloat16, "tile_batch": tile_batch,
    }
    return DreamResult(
        image=space.to_photo(current),
        standardized=dreamed,
        octave_sizes=sizes,
        objective_before=before,
        objective_after=after,
        values=values,
        notes=notes,
        parameters=parameters,
        space=space.describe(),
        memory=plan.to_dict(),
    )


def zoom_centre(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Magnify the centre of ``(H, W)`` or ``(H, W, C)`` by ``factor`` (crop, bicubic resize back)."""
    if factor <= 1.0:
        return image
    height, width = image.shape[:2]
    crop_h, crop_w = max(2, int(round(height / factor))), max(2, int(round(width / factor)))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    crop = image[top : top + crop_h, left : left + crop_w].to(torch.float32)
    chw = crop[None, None] if crop.ndim == 2 else crop.permute(2, 0, 1)[None]
    out = resize(chw, (height, width))[0]
    return out[0] if image.ndim == 2 else out.permute(1, 2, 0)


def zoom_frames(
    model: nn.Module,
    objective: Objective,
    image: torch.Tensor,
    frames: int,
    *,
    zoom: float = 1.05,
    progress: Progress | None = None,
    seed: int | None = 0,
    first: torch.Tensor | None = None,
    **dream_options,
) -> list[torch.Tensor]:
    """A zoom sequence: dream, zoom into the centre by ``zoom``, dream again, ….

    Args:
        image: gray ``(H, W)`` or colour ``(H, W, 3)`` pixels (as :func:`deep_dream`).
        frames: number of frames (the first is the dream of ``image``).
        zoom: magnification between frames (> 1).
        seed: frame ``i`` dreams with seed ``seed + i``.
        first: the dream of ``image`` with ``seed`` if already computed (frame 0
            is then not dreamed again).
        dream_options: passed to :func:`deep_dream` (tiling, octaves, steps, …).

    Returns:
        ``frames`` tensors ``(H, W)`` / ``(H, W, 3)`` in the input's value range.
    """
    check_dream_numbers(frames=frames, zoom=zoom)
    photo = as_photo(image, spec_of(model).channels)
    results: list[torch.Tensor] = []
    current = photo

    for index in range(frames):
        def frame_progress(done: int, total: int, index: int = index) -> None:
            if progress is not None:
                progress(index * total + done, frames * total)

        if index == 0 and first is not None:
            image_out = first.to(torch.float32).cpu()
        else:
            result = deep_dream(model, objective, current, progress=frame_progress,
                                seed=None if seed is None else seed + index, **dream_options)
            image_out = result.image.cpu()
        results.append(image_out)
        current = zoom_centre(image_out, zoom)
    return results
