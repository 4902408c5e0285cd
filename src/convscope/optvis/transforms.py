"""Transforms for :func:`~convscope.optvis.core.optimize`: small callables
``transform(images, generator) -> images`` applied to the rendered images
``(n, C, H, W)`` before every forward pass (transformation robustness). Each is
differentiable, so the gradient flows back through it; one implementation each.

* :class:`Roll` — jitter: the whole batch rolled by one random ``(dy, dx)`` (the
  reference's per-step jitter; also the DeepDream roll).
* :class:`RandomAffine` — per image a random shift, scale and rotation (bilinear,
  reflected edges); :func:`random_scale` and :func:`random_rotate` are its one-axis
  cases.
* :class:`GaussianBlur` — a 3×3 Gaussian blur (:func:`gaussian_blur`, also used by
  the periodic-blur callback).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def random_roll(images: torch.Tensor, max_shift: int, generator: torch.Generator | None) -> tuple[torch.Tensor, tuple[int, int]]:
    """Roll the batch by one random ``(dy, dx)`` in ``[-max_shift, max_shift]``."""
    shift = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator)
    dy, dx = int(shift[0]), int(shift[1])
    return torch.roll(images, shifts=(dy, dx), dims=(-2, -1)), (dy, dx)


@dataclass
class Roll:
    """Jitter: roll the whole batch by one random ``(dy, dx)`` in ``[-max_shift, max_shift]``
    per call (two random integers drawn from the generator; none when 0)."""

    max_shift: int

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.max_shift <= 0:
            return images
        return random_roll(images, self.max_shift, generator)[0]


def random_transform(images: torch.Tensor, generator: torch.Generator | None, *, shift: int = 2,
                     scale: tuple[float, float] = (0.9, 1.1), degrees: float = 10.0) -> torch.Tensor:
    """Transformation robustness: per image a random shift (±``shift`` px), scale and
    rotation (±``degrees``), bilinear, edges padded by reflection. ``(N, C, H, W)``."""
    n, _, h, w = images.shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    factor = scale[0] + torch.rand(n, generator=generator) * (scale[1] - scale[0])
    offset = (torch.randint(-shift, shift + 1, (n, 2), generator=generator).float()) * 2 / torch.tensor([w, h])
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack([torch.stack([cos, -sin, offset[:, 0]], 1), torch.stack([sin, cos, offset[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


@dataclass
class RandomAffine:
    """Per image a random shift (±``shift`` px), scale in ``scale`` and rotation
    (±``degrees``) — :func:`random_transform`."""

    shift: int = 2
    scale: tuple[float, float] = (0.9, 1.1)
    degrees: float = 10.0

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return random_transform(images, generator, shift=self.shift, scale=self.scale, degrees=self.degrees)


def random_scale(low: float = 0.9, high: float = 1.1) -> RandomAffine:
    """Per image a random zoom in ``[low, high]`` (no shift, no rotation)."""
    return RandomAffine(shift=0, scale=(low, high), degrees=0.0)


def random_rotate(degrees: float = 10.0) -> RandomAffine:
    """Per image a random rotation in ``±degrees`` (no shift, no zoom)."""
    return RandomAffine(shift=0, scale=(1.0, 1.0), degrees=degrees)


def gaussian_blur(images: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """3×3 Gaussian blur per image and channel (reflected edges). ``(N, C, H, W)``."""
    x = torch.tensor([-1.0, 0.0, 1.0])
    kernel_1d = torch.exp(-(x**2) / (2 * sigma**2))
    kernel_1d = kernel_1d / kernel_1d.sum()
    kernel = (kernel_1d[:, None] * kernel_1d[None, :]).to(images)[None, None]
    channels = images.shape[1]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, kernel.expand(channels, 1, 3, 3), groups=channels)


@dataclass
class GaussianBlur:
    """Blur the seen image every step (a smoothness prior, Lucid-style)."""

    sigma: float = 0.5

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return gaussian_blur(images, self.sigma)


__all__ = ["GaussianBlur", "RandomAffine", "Roll", "gaussian_blur", "random_roll", "random_rotate", "random_scale", "random_transform"]
