"""The reference's single-map "pattern carving" (SEED-ALGORITHMS §6, first experiment),
on any model.

Exactly as the reference:

1. downscale the photo to the model's input size (28×28 for the MNIST models;
   bicubic, antialiased), upscale that back to full size (bicubic, lossy) and keep
   the difference to the original — the lost detail;
2. loop ``rounds`` times (4): run the reference OIP ascent (the optimisation core:
   unit-RMS gradient step, then per-image re-standardisation) on the input-size
   image for ``epochs`` steps; upscale the result to full size (bicubic); re-add
   the detail; downscale again.

For a standardising model (the reference) the small image is dreamed in the
model's standardised space and mapped back to its own mean and std before
upscaling, so the re-added detail and the dream share the photo's value range.
A model with fixed preprocessing (``unit``, ``meanstd``, ``raw``) carves in its
own input space, clipped to the valid pixel range after every step. A gray model
carves a photo's luminance, an RGB model all three channels. The final image's
value distribution is then stretched for display (:func:`stretch`) — the pattern
appears as a pale ghost ("apparition") over the photo.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from convscope.data.preprocess import standardize
from convscope.device import torch_threads
from convscope.dream.tiling import TilingError, model_input_size, resize
from convscope.optvis.objectives import Objective

_EPS = 1e-7


@dataclass
class CarveResult:
    """The reference's carving of one objective into a photo.

    Attributes:
        pattern: the final input-size dream in the model's input space (as the model
            sees it): ``(h, w)`` for a gray model, ``(h, w, 3)`` for an RGB model.
        upscaled: ``(H, W)`` / ``(H, W, 3)`` the pattern upscaled to full size, in the photo's value range.
        image: ``(H, W)`` / ``(H, W, 3)`` upscaled dream + the photo's lost detail (photo's value range).
        adjusted: ``image`` with its value distribution stretched to 0..255.
        objective_before: the objective on the downscaled photo (model space).
        objective_after: the objective on the final image, downscaled again.
        round_losses: objective at the end of each round's ascent.
        notes: things the user should know (e.g. the map never fired).
        parameters: the settings used.
        space: the model's input space (channels, preprocessing).
    """

    pattern: torch.Tensor
    upscaled: torch.Tensor
    image: torch.Tensor
    adjusted: torch.Tensor
    objective_before: float
    objective_after: float
    round_losses: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    space: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "height": int(self.image.shape[0]),
            "width": int(self.image.shape[1]),
            "objective_before": self.objective_before,
            "objective_after": self.objective_after,
            "objective_gain": self.objective_after / self.objective_before if self.objective_before > 0 else None,
            "round_losses": self.round_losses,
            "notes": self.notes,
            "parameters": self.parameters,
            "space": self.space,
        }


def stretch(image: torch.Tensor, low: float = 0.5, high: float = 99.5) -> torch.Tensor:
    """Adjust the width of the value distribution: map the ``low``/``high``
    percentiles (over all values, all channels) to 0/255 and clip.
    ``(H, W)`` / ``(H, W, C)`` → the same shape, float 0..255."""
    flat = image.detach().reshape(-1).to(torch.float32)
    if flat.numel() > 1_000_000:  # quantile has a size limit; a strided sample is plenty
        flat = flat[:: flat.numel() // 1_000_000 + 1]
    lo, hi = torch.quantile(flat, torch.tensor([low / 100.0, high / 100.0]))
    span = float(hi - lo)
    if span < 1e-6:
        return torch.full_like(image, 128.0)
    return ((image - lo) / span * 255.0).clamp(0, 255)


def _ascent(
    model: nn.Module, objective: Objective, start: torch.Tensor, *, steps: int, epsilon: float,
    bounds: tuple[torch.Tensor, torch.Tensor] | None, progress: Callable[[int, int, int], None],
) -> tuple[torch.Tensor, float, str]:
    """The reference ascent on one input-size image ``(1, C, h, w)`` for any model:
    the optimisation core with pixels re-standardised (standardising models) or
    clipped to ``bounds`` (fixed preprocessing). ``(image, final loss, status)``."""
    from convscope.dream.octaves import ClippedPixelImage
    from convscope.optvis.callbacks import DeadMembers, ProgressCallback
    from convscope.optvis.compile import compile_for_input_gradient
    from convscope.optvis.core import NormalizedAscent, optimize
    from convscope.optvis.params import PixelImage

    # input_extent probes with one channel: only gray models may be cropped
    compiled = compile_for_input_gradient(model, [objective], tuple(start.shape[-2:]), crop=start.shape[1] == 1)
    parametrisation = PixelImage(start, restandardize=True) if bounds is None else ClippedPixelImage(start, *bounds)
    run = optimize(
        compiled.model, compiled.objectives[0], parametrisation, steps=steps, step_rule=NormalizedAscent(epsilon),
        callbacks=[DeadMembers(10), ProgressCallback(progress)], extent=compiled.extent, pad_single=True,
    )
    return run.images, float(run.final_loss[0]), run.status[0]


def carve(
    model: nn.Module,
    objective: Objective,
    image: torch.Tensor,
    *,
    rounds: int = 4,
    epochs: int = 150,
    epsilon: float = 0.01,
    progress: Callable[[int, int], None] | None = None,
) -> CarveResult:
    """Carve the pattern of ``objective`` into a photo (the reference's first dream), on any model.

    Args:
        model: the network; its spec says the input size, channels and preprocessing.
        objective: usually one map, ``channel("Conv2D_3:56")``; any objective works.
        image: gray ``(H, W)`` or colour ``(H, W, 3)`` pixels (as
            :func:`~convscope.dream.octaves.deep_dream`: a gray model carves the
            luminance, an RGB model all three channels), at least the input size.
        rounds: downscale → ascent → upscale → re-add detail loops (reference: ≈ 4).
        epochs: reference ascent steps on the input-size image per round
            (4 × 150 = the OIP reference's 600 steps).
        epsilon: ascent step size on the unit-RMS gradient (reference 0.01), in
            units of the small image's standard deviation in the model's space.
        progress: ``progress(done_steps, total_steps)``.

    Returns:
        :class:`CarveResult` (pattern, upscaled dream, final image, stretched image).

    Raises:
        TilingError: bad settings, or an image smaller than the model's input.
        DreamInputError: an image of another layout, or with NaN / infinite pixels.
    """
    from convscope.dream.octaves import check_dream_numbers
    from convscope.dream.space import DreamSpace, as_photo
    from convscope.optvis.ascent import reference_ascent
    from convscope.spec import spec_of

    check_dream_numbers(rounds=rounds, epochs=epochs, epsilon=epsilon)
    spec = spec_of(model)
    photo = as_photo(image, spec.channels)
    height, width = photo.shape[:2]
    small_size = model_input_size(model)
    if height < small_size[0] or width < small_size[1]:
        raise TilingError(
            f"the image is {width}x{height} pixels, smaller than the model's {small_size[1]}x{small_size[0]} input"
        )
    device = next(model.parameters()).device
    photo = photo.to(device)
    space = DreamSpace.for_image(model, photo)
    reference = space.standardizes and spec.channels == 1
    # standardising models: carve the pixels, standardise each small image (the reference);
    # others: carve in the model's own space, clipped to the valid pixel range
    full = (photo[None, None] if spec.channels == 1 else photo.permute(2, 0, 1)[None]) if space.standardizes else space.to_model(photo)
    bounds = space.bounds(full)

    small = resize(full, small_size)
    detail = full - resize(small, (height, width))
    notes: list[str] = []
    round_losses: list[float] = []
    before = None
    was_training = model.training
    model.eval()
    try:
        for round_index in range(rounds):
            if space.standardizes:
                mean, std = small.mean(), small.std(unbiased=False)
                start = standardize(small)
                step = epsilon
            else:
                start = torch.clamp(small, *bounds) if bounds is not None else small
                step = epsilon * max(float(start.std(unbiased=False)), 1e-6)
            if before is None:
                with torch.no_grad():
                    before = float(objective(model, start).sum())

            def round_progress(step_done: int, steps: int, _active: int, r: int = round_index) -> None:
                if progress is not None:
                    progress(r * epochs + step_done, rounds * epochs)

            with torch_threads(1) if device.type == "cpu" else contextlib.nullcontext():
                if reference:
                    result = reference_ascent(model, objective, start, steps=epochs, epsilon=epsilon, progress=round_progress)
                    pattern, loss, status = result.images.to(device), float(result.final_loss[0]), result.status[0]
                else:
                    pattern, loss, status = _ascent(model, objective, start, steps=epochs, epsilon=step, bounds=bounds,
                                                    progress=round_progress)
                    pattern = pattern.to(device)
            round_losses.append(loss)
            if status == "dead":
                notes.append(
                    f"round {round_index + 1}: '{objective.name}' stayed at 0 on this image (a dead start); "
                    "try another map or photo"
                )
            carved = pattern * (std + _EPS) + mean if space.standardizes else pattern
            upscaled = resize(carved, (height, width))
            final = upscaled + detail
            small = resize(final, small_size)
        with torch.no_grad():
            after_input = standardize(small) if space.standardizes else (torch.clamp(small, *bounds) if bounds is not None else small)
            after = float(objective(model, after_input).sum())
    finally:
        model.train(was_training)

    def to_photo(x: torch.Tensor) -> torch.Tensor:
        if space.standardizes:
            return x[0, 0].cpu() if spec.channels == 1 else x[0].permute(1, 2, 0).cpu()
        return space.to_photo(x).cpu()

    final_image = to_photo(final)
    pattern_out = pattern[0, 0].cpu() if spec.channels == 1 else pattern[0].permute(1, 2, 0).cpu()
    return CarveResult(
        pattern=pattern_out,
        upscaled=to_photo(upscaled),
        image=final_image,
        adjusted=stretch(final_image),
        objective_before=float(before),
        objective_after=after,
        round_losses=round_losses,
        notes=notes,
        parameters={"mode": "carve", "objective": objective.name, "rounds": rounds, "epochs": epochs, "epsilon": epsilon},
        space=space.describe(),
    )
