"""Full DeepDream: octaves, random roll (jitter), whole-image gradient normalisation.

The algorithm the reference set out to reach (SEED-ALGORITHMS §6):

1. standardise the photo (mean 0, std 1: the model's preprocessing) and build
   ``octaves`` downscaled versions, each ``octave_scale`` smaller than the next;
   the smallest is never smaller than the model's input (28×28);
2. start at the smallest: for ``steps`` steps roll the image by a random offset
   (jitter), take the objective's gradient under the chosen tiling
   (:mod:`convscope.dream.tiling`), roll the gradient back, normalise it to unit
   RMS over the whole image, and step; optionally re-standardise (the
   reference's fix that keeps the image in the model's input distribution);
3. the dream detail (image − that octave's photo) is upscaled to the next octave
   and added to the photo at that level — detail from the original is re-added
   at every level;
4. map the result back to the photo's value range (its mean and std).

Use :func:`deep_dream` (gray / luminance ``(H, W)`` in any value range, e.g.
0..255) and :mod:`convscope.dream.colour` for colour photos.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from convscope.data.preprocess import standardize
from convscope.dream.tiling import (
    DEFAULT_TILE_BATCH,
    TilingError,
    check_tiling,
    evaluate,
    model_input_size,
    objective_and_gradient,
    resize,
)
from convscope.models.twin import gradient_twin
from convscope.optvis.callbacks import OnScore
from convscope.optvis.core import NormalizedAscent, optimize
from convscope.optvis.objectives import Objective
from convscope.optvis.params import PixelImage
from convscope.optvis.transforms import Roll

Progress = Callable[[int, int], None]

_EPS = 1e-7


@dataclass
class DreamResult:
    """A dream of one gray/luminance image.

    Attributes:
        image: ``(H, W)`` float, the dream in the input's value range (not clipped).
        standardized: ``(H, W)`` the dream in the model's (standardised) space.
        octave_sizes: ``[(h, w), ...]`` from smallest to largest (the last is the input size).
        objective_before: the objective on the standardised input (same tiling, full size).
        objective_after: the objective on the dream.
        values: objective value after every step (all octaves, in order).
        notes: things the user should know (e.g. octaves dropped because an octave
            would have been smaller than the model's input).
        parameters: the settings used (for JSON).
    """

    image: torch.Tensor
    standardized: torch.Tensor
    octave_sizes: list[tuple[int, int]]
    objective_before: float
    objective_after: float
    values: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parameters: dict = field(default_factory=dict)

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
    if octaves < 1:
        raise TilingError(f"octaves must be at least 1; got {octaves}")
    if scale <= 1.0:
        raise TilingError(f"the octave scale must be > 1 (each octave that much smaller); got {scale}")
    if height < minimum[0] or width < minimum[1]:
        raise TilingError(
            f"the image is {width}x{height} pixels, smaller than the model's {minimum[1]}x{minimum[0]} input; "
            "use a larger image"
        )
    sizes: list[tuple[int, int]] = []
    for level in range(octaves):
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
) -> torch.Tensor:
    """``steps`` ascent steps on one octave image ``(1, C, h, w)``; returns the new image.

    One call of the optimisation core (:func:`~convscope.optvis.core.optimize`):
    each step rolls the image by a random ``(dy, dx)`` in ``[-jitter, jitter]``
    (the :class:`~convscope.optvis.transforms.Roll` transform), takes the gradient
    under ``tiling`` (:class:`TilingScorer`), rolls it back (autograd through the
    roll), divides it by its RMS over the image, steps by ``step_size`` and
    re-standardises (optional).
    """
    tile = model_input_size(model)
    max_shift = _auto_jitter(tuple(image.shape[-2:]), tile) if jitter is None else int(jitter)
    run = optimize(
        model, objective, PixelImage(image, restandardize=restandardize), steps=steps,
        step_rule=NormalizedAscent(step_size), transforms=[Roll(max_shift)],
        callbacks=[OnScore(on_step)], generator=generator, scorer=TilingScorer(model, objective, tiling, tile_batch),
        pad_single=False, evaluate_last=False,
    )
    return run.parametrisation.current


class TilingScorer:
    """A scorer for :func:`~convscope.optvis.core.optimize` that evaluates one whole
    image ``(1, C, H, W)`` under a tiling and returns the gradient itself
    (:func:`~convscope.dream.tiling.objective_and_gradient`: striped full
    convolution, tiles in bounded chunks, or the downscaled image)."""

    differentiable = False

    def __init__(self, model: nn.Module, objective: Objective, tiling: str, tile_batch: int = DEFAULT_TILE_BATCH) -> None:
        self.model = model
        self.layers = objective.layers
        self.tiling = tiling
        self.tile_batch = tile_batch

    def __enter__(self) -> "TilingScorer":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def score(self, images: torch.Tensor, objective: Objective, need_gradient: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        if need_gradient:
            value, gradient = objective_and_gradient(self.model, objective, images, self.tiling, tile_batch=self.tile_batch)
            return torch.tensor([value], dtype=torch.float64), gradient
        value = evaluate(self.model, objective, images, self.tiling, tile_batch=self.tile_batch)
        return torch.tensor([value], dtype=torch.float64), None


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
) -> DreamResult:
    """DeepDream of a gray (or luminance) image.

    Args:
        model: the network (a frozen eval-mode copy is used; ``model`` is not changed).
        objective: what to increase, e.g. ``parse_objective("Conv2D_3")``.
        image: ``(H, W)``, ``(1, H, W)`` or ``(1, 1, H, W)`` float, any value range
            (e.g. 0..255); at least the model's input size.
        tiling: ``"downscale"`` (reference), ``"tiles"`` or ``"fullconv"``.
        octaves: number of scales (dropped, with a note, where an octave would be
            smaller than the model's input).
        octave_scale: size ratio between neighbouring octaves (> 1).
        steps: ascent steps per octave.
        step_size: step in standardised units (the image has std 1) per step,
            along the unit-RMS gradient (0.05: the photo stays recognisable after
            4 octaves × 10 steps; 0.1 for a stronger dream).
        jitter: largest random roll in pixels per step (default: one tile, or a
            quarter of the smaller side for small images); 0 = none.
        restandardize: re-standardise the image after every step (reference).
        seed / generator: randomness for the rolls (a generator wins).
        tile_batch: tiles per chunk for ``tiling="tiles"`` (memory bound).
        bfloat16: run the model under bfloat16 autocast (faster on CPUs with
            AVX512-BF16 / AMX and on GPUs; the image and the step stay float32).
        progress: ``progress(done_steps, total_steps)`` after every step.

    Returns:
        :class:`DreamResult` with the dream ``(H, W)`` in the input's value range.

    Raises:
        TilingError: bad tiling for the objective (``fullconv`` with a dense
            objective), image smaller than the model's input, bad octave settings.
    """
    check_tiling(model, objective, tiling)
    if steps < 0 or not math.isfinite(step_size):
        raise TilingError("steps must be >= 0 and the step size finite")
    gray = torch.as_tensor(image).detach()
    while gray.ndim > 2:
        gray = gray[0]
    if gray.ndim != 2:
        raise TilingError(f"expected a gray image (H, W); got shape {tuple(torch.as_tensor(image).shape)}")
    device = next(model.parameters()).device if any(True for _ in model.parameters()) else torch.device("cpu")
    gray = gray.to(device=device, dtype=torch.float32)
    height, width = gray.shape
    tile = model_input_size(model)
    sizes, notes = octave_sizes(height, width, octaves, octave_scale, tile)
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(0 if seed is None else int(seed))

    mean = gray.mean()
    std = gray.std(unbiased=False)
    if float(std) < 1e-6:
        notes.append("the image is flat (constant); the dream starts from a uniform field")
    base = ((gray - mean) / (std + _EPS))[None, None]
    bases = [resize(base, size) for size in sizes]

    model = prepare_model(model, objective.layers)
    values: list[float] = []
    total_steps = steps * len(sizes)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bfloat16 else contextlib.nullcontext()
    with autocast:
        before = evaluate(model, objective, base, tiling, tile_batch=tile_batch)
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
            current = dream_step_loop(
                model, objective, current, steps=steps, step_size=step_size, tiling=tiling, jitter=jitter,
                generator=generator, restandardize=restandardize, tile_batch=tile_batch, on_step=on_step,
            )
            detail = current - octave_base
        after = evaluate(model, objective, current, tiling, tile_batch=tile_batch)

    dreamed = current[0, 0]
    parameters = {
        "objective": objective.name, "tiling": tiling, "octaves": len(sizes), "octaves_requested": octaves,
        "octave_scale": octave_scale, "steps": steps, "step_size": step_size,
        "jitter": jitter if jitter is not None else "auto", "restandardize": restandardize, "seed": seed,
        "bfloat16": bfloat16,
    }
    return DreamResult(
        image=dreamed * std + mean,
        standardized=dreamed,
        octave_sizes=sizes,
        objective_before=before,
        objective_after=after,
        values=values,
        notes=notes,
        parameters=parameters,
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
    **dream_options,
) -> list[torch.Tensor]:
    """A zoom sequence: dream, zoom into the centre by ``zoom``, dream again, ….

    Args:
        image: ``(H, W)`` gray in any value range.
        frames: number of frames (the first is the dream of ``image``).
        zoom: magnification between frames (> 1).
        dream_options: passed to :func:`deep_dream` (tiling, octaves, steps, …).

    Returns:
        ``frames`` tensors ``(H, W)`` in the input's value range.
    """
    if frames < 1:
        raise TilingError(f"need at least one zoom frame; got {frames}")
    if zoom <= 1.0:
        raise TilingError(f"the zoom per frame must be > 1; got {zoom}")
    gray = torch.as_tensor(image, dtype=torch.float32)
    while gray.ndim > 2:
        gray = gray[0]
    results: list[torch.Tensor] = []
    current = gray
    steps_per_frame: list[int] = []

    for index in range(frames):
        def frame_progress(done: int, total: int, index: int = index) -> None:
            if not steps_per_frame:
                steps_per_frame.append(total)
            if progress is not None:
                progress(index * steps_per_frame[0] + done, frames * steps_per_frame[0])

        result = deep_dream(model, objective, current, progress=frame_progress, seed=None if seed is None else seed + index, **dream_options)
        results.append(result.image)
        current = zoom_centre(result.image, zoom)
    return results
