"""Initial images for OIP ascent: random fluctuations on several length scales.

The reference (SEED-ALGORITHMS §4.1): fill grids of size 3×3, 7×7, 14×14 and
28×28 with uniform random values in [-1, 1], upscale each to 28×28 by
antialiased bicubic interpolation, add them with weights, standardise per image.
Any number of scales is allowed here, any image size and channel count.

**Per-unit randomness.** A unit's random start depends on ``(seed, layer, unit)``
only — never on which other units share its batch — through :func:`unit_generator`
(a ``torch.Generator`` seeded from a hash of the three). So map 120 gets the same
start alone, in a batch of four, or in a chunk on another machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from convscope.data.preprocess import standardize

#: The reference's length scales and its default weights.
REFERENCE_SCALES: tuple[int, ...] = (3, 7, 14, 28)
REFERENCE_WEIGHTS: tuple[float, ...] = (0.5, 0.5, 0.5, 0.5)
#: "Large-scale only" weights the reference also used.
LONG_SCALE_WEIGHTS: tuple[float, ...] = (0.2, 0.2, 0.0, 0.0)


def unit_seed(seed: int, layer: str, unit: int | str) -> int:
    """A 63-bit seed derived from ``(seed, layer, unit)`` (SHA-256; stable across
    processes, machines and Python versions)."""
    digest = hashlib.sha256(f"convscope:{int(seed)}:{layer}:{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def unit_generator(seed: int, layer: str, unit: int | str) -> torch.Generator:
    """A fresh ``torch.Generator`` for one unit (see :func:`unit_seed`)."""
    return torch.Generator().manual_seed(unit_seed(seed, layer, unit))


def reference_scales(size: int) -> tuple[int, ...]:
    """The reference's length scales 3, 7, 14, 28 of a 28-pixel image, scaled to
    ``size`` pixels (``(3, 7, 14, 28)`` for 28; ``(3, 8, 16, 32)`` for 32)."""
    if size == 28:
        return REFERENCE_SCALES
    return tuple(dict.fromkeys(max(1, round(s * size / 28)) for s in REFERENCE_SCALES))


def unit_initial_images(
    seed: int,
    layer: str,
    units: Sequence[int | str] | torch.Tensor,
    *,
    scales: Sequence[int] | None = None,
    weights: Sequence[float] = REFERENCE_WEIGHTS,
    size: int | tuple[int, int] = 28,
    channels: int = 1,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One standardised random start per unit ``(M, channels, H, W)``; unit ``u``'s
    image depends on ``(seed, layer, u)`` only. ``scales`` default: the reference's
    scales for this size (:func:`reference_scales`)."""
    height = size if isinstance(size, int) else size[0]
    scales = tuple(scales) if scales is not None else reference_scales(int(height))
    if len(weights) != len(scales):
        raise ValueError(f"{len(scales)} scales but {len(weights)} weights; give one weight per scale")
    images = [
        random_initial_images(1, scales=scales, weights=weights, size=size, channels=channels,
                              generator=unit_generator(seed, layer, u), dtype=dtype)
        for u in (units.tolist() if isinstance(units, torch.Tensor) else units)
    ]
    if not images:
        h, w = (size, size) if isinstance(size, int) else size
        return torch.zeros((0, channels, h, w), dtype=dtype)
    return torch.cat(images)


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
    size: int | tuple[int, int] = 28,
    channels: int = 1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform [-1, 1] values on a ``scale × scale`` grid upscaled to ``size``
    (``H`` or ``(H, W)``): ``(n, channels, H, W)``."""
    grid = torch.rand((n, channels, scale, scale), generator=generator, dtype=dtype) * 2 - 1
    return upscale(grid, size)


def random_initial_images(
    n: int,
    *,
    scales: Sequence[int] = REFERENCE_SCALES,
    weights: Sequence[float] = REFERENCE_WEIGHTS,
    size: int | tuple[int, int] = 28,
    channels: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``n`` standardised initial images ``(n, channels, H, W)`` (``size`` = ``H`` or ``(H, W)``).

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
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    total = torch.zeros((n, channels, height, width), dtype=dtype)
    for scale, weight in zip(scales, weights):
        if weight == 0:
            continue
        if scale < 1:
            raise ValueError(f"scales must be >= 1; got {scale}")
        total += weight * random_fluctuations(n, scale, size=(height, width), channels=channels, generator=generator, dtype=dtype)
    return standardize(total).to(device=device)
