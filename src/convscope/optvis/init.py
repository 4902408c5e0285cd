"""Initial images for OIP ascent: random fluctuations on several length scales.

The reference (SEED-ALGORITHMS §4.1): fill grids of size 3×3, 7×7, 14×14 and
28×28 with uniform random values in [-1, 1], upscale each to 28×28 by
antialiased bicubic interpolation, add them with weights, standardise per image.
Any number of scales is allowed here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from convscope.data.preprocess import standardize

#: The reference's length scales and its default weights.
REFERENCE_SCALES: tuple[int, ...] = (3, 7, 14, 28)
REFERENCE_WEIGHTS: tuple[float, ...] = (0.5, 0.5, 0.5, 0.5)
#: "Large-scale only" weights the reference also used.
LONG_SCALE_WEIGHTS: tuple[float, ...] = (0.2, 0.2, 0.0, 0.0)


def upscale(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bicubic, antialiased resize of ``(N, C, h, w)`` to ``size`` (the reference's upscaling)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == size:
        return images.clone()
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)


def random_fluctuations(
    n: int,
    scale: int,
    *,
    size: int = 28,
    channels: int = 1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform [-1, 1] values on a ``scale × scale`` grid upscaled to ``size``: ``(n, channels, size, size)``."""
    grid = torch.rand((n, channels, scale, scale), generator=generator, dtype=dtype) * 2 - 1
    return upscale(grid, size)


def random_initial_images(
    n: int,
    *,
    scales: Sequence[int] = REFERENCE_SCALES,
    weights: Sequence[float] = REFERENCE_WEIGHTS,
    size: int = 28,
    channels: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``n`` standardised initial images ``(n, channels, size, size)``.

    Args:
        n: number of images.
        scales: grid sizes of the fluctuations (reference: 3, 7, 14, 28).
        weights: one weight per scale (reference: 0.5 each; (0.2, 0.2, 0, 0) for
            large scales only). A scale with weight 0 draws no random numbers.
        size: output height and width.
        generator: the randomness (pass a seeded ``torch.Generator`` to repeat a run).

    Returns:
        Images with mean 0 and std 1 each.
    """
    if len(scales) != len(weights):
        raise ValueError(f"{len(scales)} scales but {len(weights)} weights; give one weight per scale")
    if not any(w != 0 for w in weights):
        raise ValueError("at least one scale needs a non-zero weight")
    total = torch.zeros((n, channels, size, size), dtype=dtype)
    for scale, weight in zip(scales, weights):
        if weight == 0:
            continue
        if scale < 1:
            raise ValueError(f"scales must be >= 1; got {scale}")
        total += weight * random_fluctuations(n, scale, size=size, channels=channels, generator=generator, dtype=dtype)
    return standardize(total).to(device=device)
