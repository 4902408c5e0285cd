"""Strategy 1 (coarse-to-fine, planned by the reference) and class visualisations.

Strategy 1 evolves the image over resolution stages: at stage ``s`` the image is
held at ``resolutions[s] × resolutions[s]`` pixels, upscaled (bicubic,
antialiased) to the model's 28×28 for the forward pass, and updated with the
reference step (unit-RMS gradient, re-standardise). Between stages the image is
upscaled to the next resolution and enriched with fresh random fluctuations on
that stage's length scale, so fine structure is added only once the coarse
layout is in place. Default: 7×7 (20 steps) → 14×14 (40) → 28×28 (80) → 28×28
final (400), i.e. the same 540-step budget order as strategy 0's 600.

Class visualisation (reference §5): maximise each logit (softmax bypassed) with
per-step random jitter (±``jitter`` pixels), then a second pass seeded with the
first pass's result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from convscope.data.preprocess import standardize
from convscope.device import model_device
from convscope.models.twin import gradient_twin
from convscope.optvis import objectives as obj
from convscope.optvis.ascent import AscentResult, ProgressFn, reference_ascent
from convscope.optvis.callbacks import ProgressCallback
from convscope.optvis.core import NormalizedAscent, optimize
from convscope.optvis.params import UpscaledImage
from convscope.optvis.init import random_fluctuations, random_initial_images, unit_generator, unit_initial_images, upscale
from convscope.spec import model_output, spec_of

DEFAULT_RESOLUTIONS: tuple[int, ...] = (7, 14, 28, 28)
DEFAULT_STAGE_STEPS: tuple[int, ...] = (20, 40, 80, 400)


@dataclass
class CoarseToFineResult:
    """What :func:`coarse_to_fine_ascent` returns.

    Attributes:
        images: ``(N, C, H, W)`` final images (standardised).
        losses: ``(total_steps + 1, N)`` objective history (at model resolution).
        stage_images: one ``(N, C, H, W)`` tensor per stage end (upscaled).
        stage_starts: step index at which each stage began.
        final_loss: ``(N,)``.
        params: parameters used.
    """

    images: torch.Tensor
    losses: torch.Tensor
    stage_images: list[torch.Tensor]
    stage_starts: list[int]
    final_loss: torch.Tensor
    params: dict


def coarse_to_fine_ascent(
    model: nn.Module,
    objective: obj.Objective,
    n: int,
    *,
    resolutions: Sequence[int] | None = None,
    stage_steps: Sequence[int] = DEFAULT_STAGE_STEPS,
    enrich_weight: float = 0.5,
    epsilon: float = 0.01,
    size: int | tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
    generators: Sequence[torch.Generator] | None = None,
    initial: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
    channels: int | None = None,
) -> CoarseToFineResult:
    """Strategy 1 for a batch of ``n`` members (``objective`` may be batched).

    Args:
        model: the network.
        objective: scores ``(n,)`` at model resolution.
        n: number of members.
        resolutions: image height per stage (must not decrease; the width keeps the
            input's aspect). Default: a quarter, half, full, full of the input height
            (7, 14, 28, 28 for 28×28).
        stage_steps: ascent steps per stage.
        enrich_weight: weight of the fresh fluctuations added when the resolution
            grows (relative to the standardised image, std 1). At the first stage
            the image is 3×3-scale plus first-resolution fluctuations.
        epsilon: step size (unit-RMS gradient, as strategy 0).
        size: the model's input ``H`` or ``(H, W)`` (default: its spec).
        generator: randomness shared by the batch.
        generators: one generator per member instead (its start and fresh
            fluctuations then depend on that member only).
        initial: optional ``(n, C, r0, w0)`` first-stage image instead of random.
        channels: image channels (default: the spec's).

    Returns:
        :class:`CoarseToFineResult`.
    """
    spec = spec_of(model)
    full = spec.size if size is None else ((size, size) if isinstance(size, int) else (int(size[0]), int(size[1])))
    channels = spec.channels if channels is None else channels
    if resolutions is None:
        resolutions = DEFAULT_RESOLUTIONS if full[0] == 28 else (max(1, full[0] // 4), max(1, full[0] // 2), full[0], full[0])
    if generators is not None and len(generators) != n:
        raise ValueError(f"{len(generators)} generators for {n} members")
    if len(resolutions) != len(stage_steps) or not resolutions:
        raise ValueError("give one step count per resolution stage (at least one stage)")
    if any(b < a for a, b in zip(resolutions, resolutions[1:])):
        raise ValueError(f"resolutions must not decrease; got {list(resolutions)}")
    device = model_device(model)
    model = gradient_twin(model, objective.layers)
    def shape_at(resolution: int) -> tuple[int, int]:
        return (resolution, max(1, round(resolution * full[1] / full[0])))

    def draw(count_scale: int, size_hw: tuple[int, int], first_stage: bool) -> torch.Tensor:
        """Fluctuations for every member: the start (two scales) or a stage's fresh detail."""
        sources = [(1, g) for g in generators] if generators is not None else [(n, generator)]
        parts = []
        for count, g in sources:
            if first_stage:
                parts.append(random_initial_images(count, scales=(3, count_scale), weights=(0.5, 0.5), size=size_hw,
                                                   channels=channels, generator=g))
            else:
                parts.append(random_fluctuations(count, count_scale, size=size_hw, channels=channels, generator=g))
        return torch.cat(parts)

    first = resolutions[0]
    if initial is None:
        image = draw(first, shape_at(first), True)
    else:
        image = standardize(initial.float())
    image = image.to(device)
    total = sum(stage_steps)
    losses = torch.zeros((total + 1, n), dtype=torch.float64)
    stage_images: list[torch.Tensor] = []
    stage_starts: list[int] = []
    step = 0
    for stage, (resolution, n_steps) in enumerate(zip(resolutions, stage_steps)):
        if tuple(image.shape[-2:]) != shape_at(resolution):
            image = upscale(image, shape_at(resolution))
            fresh = draw(resolution, shape_at(resolution), False).to(device)
            image = standardize(image + enrich_weight * fresh)
        stage_starts.append(step)
        offset = step

        def stage_progress(done: int, _steps: int, _active: int, offset: int = offset) -> None:
            if progress is not None:
                progress(offset + done, total, n)

        run = optimize(
            model, objective, UpscaledImage(image, full), steps=n_steps, step_rule=NormalizedAscent(epsilon),
            callbacks=[ProgressCallback(stage_progress)], freeze=False, pad_single=False,
        )
        losses[step : step + n_steps] = run.losses[:n_steps]
        step += n_steps
        image = run.parametrisation.current
        stage_images.append(_to_size(image, full).detach().cpu())
    final = _to_size(image, full)
    losses[step] = run.losses[n_steps]
    final = standardize(final).detach().cpu()
    params = {
        "algorithm": "strategy 1 (coarse-to-fine)",
        "resolutions": list(resolutions),
        "stage_steps": list(stage_steps),
        "enrich_weight": enrich_weight,
        "epsilon": epsilon,
        "objective": objective.name,
    }
    return CoarseToFineResult(final, losses, stage_images, stage_starts, losses[step].clone(), params)


def _to_size(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return upscale(image, size) if tuple(image.shape[-2:]) != tuple(size) else image


@dataclass
class ClassPatterns:
    """Class visualisations: ``images (C, 1, 28, 28)`` after the second pass,
    ``first_pass (C, 1, 28, 28)``, ``logits (C,)`` final own-class logit,
    ``probabilities (C,)`` softmax probability of the own class, and both passes'
    :class:`AscentResult` s."""

    images: torch.Tensor
    first_pass: torch.Tensor
    logits: torch.Tensor
    probabilities: torch.Tensor
    passes: list[AscentResult]
    params: dict


def class_patterns(
    model: nn.Module,
    classes: Sequence[int] | None = None,
    *,
    steps: int = 300,
    epsilon: float = 0.01,
    jitter: int = 1,
    passes: int = 2,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> ClassPatterns:
    """Maximise each class logit (reference §5): noise start, ``steps`` reference
    steps with random ±``jitter`` px roll per step (1 px ≈ 4 % of 28), then a
    second pass seeded with the first pass's result.

    Returns:
        :class:`ClassPatterns` with one image per class, in ``classes`` order.
    """
    spec = spec_of(model)
    n_classes = spec.num_classes
    chosen = list(range(n_classes)) if classes is None else [int(c) for c in classes]
    bad = [c for c in chosen if not 0 <= c < n_classes]
    if bad:
        raise ValueError(f"the model has {n_classes} classes (0..{n_classes - 1}); got {bad}")
    # each class's start depends on (seed, class) only; the jitter is shared by the batch
    generator = unit_generator(seed, "logits", "jitter")
    device = model_device(model)
    start = unit_initial_images(seed, "logits", chosen, size=spec.size, channels=spec.channels).to(device)
    objective = obj.class_logits(chosen)
    results = []
    for _ in range(max(1, passes)):
        result = reference_ascent(
            model, objective, start, steps=steps, epsilon=epsilon, jitter=jitter, generator=generator, progress=progress
        )
        results.append(result)
        start = result.images.to(device)
    with torch.no_grad():
        logits = model_output(model(results[-1].images.to(device))).float().cpu()
    index = torch.arange(len(chosen))
    own = logits[index, torch.tensor(chosen)]
    probabilities = torch.softmax(logits, dim=1)[index, torch.tensor(chosen)]
    params = {"classes": chosen, "steps": steps, "epsilon": epsilon, "jitter": jitter, "passes": passes, "seed": seed}
    return ClassPatterns(results[-1].images, results[0].images, own, probabilities, results, params)


__all__ = ["ClassPatterns", "CoarseToFineResult", "class_patterns", "coarse_to_fine_ascent"]
