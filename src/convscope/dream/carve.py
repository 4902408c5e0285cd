"""The reference's single-map "pattern carving" (SEED-ALGORITHMS §6, first experiment).

Exactly as the reference:

1. downscale the photo to the model's input size (28×28, bicubic, antialiased),
   upscale that back to full size (bicubic, lossy) and keep the difference to the
   original — the lost detail;
2. loop ``rounds`` times (4): run the reference OIP ascent
   (:func:`convscope.optvis.ascent.reference_ascent`: unit-RMS gradient step,
   then per-image re-standardisation) on the 28×28 image for ``epochs`` steps;
   upscale the result to full size (bicubic); re-add the detail; downscale again.

The 28×28 image is dreamed in the model's standardised space and mapped back to
the small image's own mean and std before upscaling, so the re-added detail and
the dream share the photo's value range. The final image's value distribution is
then stretched for display (:func:`stretch`) — the pattern appears as a pale
ghost ("apparition") over the photo.
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
        pattern: ``(h, w)`` the final 28×28 dream (standardised, as the model sees it).
        upscaled: ``(H, W)`` the pattern upscaled to full size, in the photo's value range.
        image: ``(H, W)`` upscaled dream + the photo's lost detail (photo's value range).
        adjusted: ``(H, W)`` ``image`` with its value distribution stretched to 0..255.
        objective_before: the objective on the downscaled photo (standardised).
        objective_after: the objective on the final image, downscaled again.
        round_losses: objective at the end of each round's ascent.
        notes: things the user should know (e.g. the map never fired).
        parameters: the settings used.
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

    def to_dict(self) -> dict:
        return {
            "height": int(self.image.shape[-2]),
            "width": int(self.image.shape[-1]),
            "objective_before": self.objective_before,
            "objective_after": self.objective_after,
            "objective_gain": self.objective_after / self.objective_before if self.objective_before > 0 else None,
            "round_losses": self.round_losses,
            "notes": self.notes,
            "parameters": self.parameters,
        }


def stretch(image: torch.Tensor, low: float = 0.5, high: float = 99.5) -> torch.Tensor:
    """Adjust the width of the value distribution: map the ``low``/``high``
    percentiles to 0/255 and clip. ``(H, W)`` → ``(H, W)`` float 0..255."""
    flat = image.detach().reshape(-1).to(torch.float32)
    if flat.numel() > 1_000_000:  # quantile has a size limit; a strided sample is plenty
        flat = flat[:: flat.numel() // 1_000_000 + 1]
    lo, hi = torch.quantile(flat, torch.tensor([low / 100.0, high / 100.0]))
    span = float(hi - lo)
    if span < 1e-6:
        return torch.full_like(image, 128.0)
    return ((image - lo) / span * 255.0).clamp(0, 255)


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
    """Carve the pattern of ``objective`` into a gray photo (the reference's first dream).

    Args:
        model: the network.
        objective: usually one map, ``channel("Conv2D_3:56")``; any objective works.
        image: ``(H, W)`` gray (or luminance) in any value range, e.g. 0..255.
        rounds: downscale → ascent → upscale → re-add detail loops (reference: ≈ 4).
        epochs: reference ascent steps on the 28×28 image per round
            (4 × 150 = the OIP reference's 600 steps).
        epsilon: ascent step size on the unit-RMS gradient (reference 0.01).
        progress: ``progress(done_steps, total_steps)``.

    Returns:
        :class:`CarveResult` (pattern, upscaled dream, final image, stretched image).
    """
    from convscope.optvis.ascent import reference_ascent

    if rounds < 1 or epochs < 0:
        raise TilingError(f"rounds must be >= 1 and epochs >= 0; got {rounds}, {epochs}")
    gray = torch.as_tensor(image).detach().to(torch.float32)
    while gray.ndim > 2:
        gray = gray[0]
    height, width = gray.shape
    small_size = model_input_size(model)
    if height < small_size[0] or width < small_size[1]:
        raise TilingError(
            f"the image is {width}x{height} pixels, smaller than the model's {small_size[1]}x{small_size[0]} input"
        )
    device = next(model.parameters()).device
    full = gray.to(device)[None, None]

    small = resize(full, small_size)
    detail = full - resize(small, (height, width))
    notes: list[str] = []
    round_losses: list[float] = []
    before = None
    was_training = model.training
    model.eval()
    try:
        for round_index in range(rounds):
            mean, std = small.mean(), small.std(unbiased=False)
            start = standardize(small)
            if before is None:
                with torch.no_grad():
                    before = float(objective(model, start).sum())

            def round_progress(step: int, steps: int, _active: int, r: int = round_index) -> None:
                if progress is not None:
                    progress(r * epochs + step, rounds * epochs)

            with torch_threads(1) if device.type == "cpu" else contextlib.nullcontext():
                result = reference_ascent(model, objective, start, steps=epochs, epsilon=epsilon, progress=round_progress)
            pattern = result.images.to(device)
            round_losses.append(float(result.final_loss[0]))
            if result.status and result.status[0] == "dead":
                notes.append(
                    f"round {round_index + 1}: '{objective.name}' stayed at 0 on this image (a dead start); "
                    "try another map or photo"
                )
            upscaled = resize(pattern * (std + _EPS) + mean, (height, width))
            final = upscaled + detail
            small = resize(final, small_size)
        with torch.no_grad():
            after = float(objective(model, standardize(small)).sum())
    finally:
        model.train(was_training)

    final_2d = final[0, 0].cpu()
    return CarveResult(
        pattern=pattern[0, 0].cpu(),
        upscaled=upscaled[0, 0].cpu(),
        image=final_2d,
        adjusted=stretch(final_2d),
        objective_before=float(before),
        objective_after=after,
        round_losses=round_losses,
        notes=notes,
        parameters={"mode": "carve", "objective": objective.name, "rounds": rounds, "epochs": epochs, "epsilon": epsilon},
    )
