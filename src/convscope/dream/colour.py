"""Colour photos with a grayscale model: dream on luminance and keep the chroma.

The model sees one channel. For a colour photo :func:`dream_colour` converts it
to YCbCr (ITU-R BT.601, full range — the JPEG / PIL convention), dreams on Y and
recombines the dreamed Y with the original Cb and Cr (``color="luminance"``,
default), so colours stay where they were and only brightness carries the dream;
or returns the dreamed gray image (``color="gray"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

COLOR_MODES = ("luminance", "gray")
TONES = ("soft", "clip")
#: width (levels) of the soft shoulder at each end of 0..255
SOFT_KNEE = 24.0

# BT.601 full range (JPEG): Y, Cb, Cr from R, G, B in 0..255.
_RGB_TO_YCBCR = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=torch.float64
)
_YCBCR_OFFSET = torch.tensor([0.0, 128.0, 128.0], dtype=torch.float64)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """``(H, W, 3)`` RGB (0..255 floats) → ``(H, W, 3)`` YCbCr (0..255)."""
    matrix = _RGB_TO_YCBCR.to(rgb.device, torch.float64)
    return (rgb.to(torch.float64) @ matrix.T + _YCBCR_OFFSET.to(rgb.device)).to(torch.float32)


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """``(H, W, 3)`` YCbCr → RGB (0..255 floats, not clipped)."""
    matrix = torch.linalg.inv(_RGB_TO_YCBCR).to(ycbcr.device)
    return ((ycbcr.to(torch.float64) - _YCBCR_OFFSET.to(ycbcr.device)) @ matrix.T).to(torch.float32)


def soft_clip(values: torch.Tensor, knee: float = SOFT_KNEE) -> torch.Tensor:
    """Identity on ``[knee, 255 - knee]``; beyond, a tanh shoulder that approaches
    but never crosses 0 / 255 — dream texture in deep shadows and highlights keeps
    its shape instead of being cut flat (on the default photo: 9.8 % → 3.5 % of
    RGB values out of range, the rest from chroma outside the RGB gamut)."""
    low, high = knee, 255.0 - knee
    out = values.clone()
    above, below = values > high, values < low
    out[above] = high + knee * torch.tanh((values[above] - high) / knee)
    out[below] = low + knee * torch.tanh((values[below] - low) / knee)
    return out


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Round and clip floats (0..255 scale) to uint8."""
    return image.round().clamp(0, 255).to(torch.uint8)


@dataclass
class ColourDream:
    """A dreamed photo.

    Attributes:
        image: ``(H, W, 3)`` uint8 (luminance mode, colour input) or ``(H, W)`` uint8.
        luminance: ``(H, W)`` float dreamed luminance (0..255 scale, not clipped).
        clipped_fraction: fraction of output values that fell outside 0..255 and were clipped.
        result: the engine's result for the luminance (numbers, notes, settings).
    """

    image: torch.Tensor
    luminance: torch.Tensor
    clipped_fraction: float
    result: object


def split_luminance(photo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(H, W)`` gray or ``(H, W, 3)`` RGB (0..255) → ``(Y (H, W), CbCr (H, W, 2) or None)``."""
    photo = torch.as_tensor(photo).to(torch.float32)
    if photo.ndim == 2:
        return photo, None
    if photo.ndim == 3 and photo.shape[-1] == 3:
        ycbcr = rgb_to_ycbcr(photo)
        return ycbcr[..., 0], ycbcr[..., 1:]
    raise ValueError(f"expected a photo (H, W) or (H, W, 3); got shape {tuple(photo.shape)}")


def merge_luminance(
    luminance: torch.Tensor, chroma: torch.Tensor | None, color: str = "luminance", tone: str = "soft"
) -> torch.Tensor:
    """Dreamed Y ``(H, W)`` + original chroma → uint8 ``(H, W, 3)`` (or ``(H, W)`` for
    gray input or ``color="gray"``). ``tone="soft"`` compresses luminance beyond
    0..255 smoothly (:func:`soft_clip`), ``"clip"`` cuts it."""
    if color not in COLOR_MODES:
        raise ValueError(f"unknown colour mode {color!r}; choose one of: {', '.join(COLOR_MODES)}")
    if tone not in TONES:
        raise ValueError(f"unknown tone mapping {tone!r}; choose one of: {', '.join(TONES)}")
    if tone == "soft":
        luminance = soft_clip(luminance)
    if chroma is None or color == "gray":
        return to_uint8(luminance)
    ycbcr = torch.cat([luminance[..., None], chroma], dim=-1)
    return to_uint8(ycbcr_to_rgb(ycbcr))


def dream_colour(
    dream: Callable[[torch.Tensor], object],
    photo: torch.Tensor,
    *,
    color: str = "luminance",
    tone: str = "soft",
) -> ColourDream:
    """Dream on a photo's luminance and put the chroma back.

    Args:
        dream: ``dream(gray (H, W) float) -> result`` with ``result.image`` the dreamed
            gray image ``(H, W)`` in the same value range, e.g.
            ``lambda y: deep_dream(model, objective, y, tiling="fullconv")``.
        photo: ``(H, W)`` gray or ``(H, W, 3)`` RGB, 0..255 (uint8 or float).
        color: ``"luminance"`` (keep chroma) or ``"gray"``.
        tone: ``"soft"`` (smooth shoulder near 0 and 255) or ``"clip"``.
    """
    if color not in COLOR_MODES:
        raise ValueError(f"unknown colour mode {color!r}; choose one of: {', '.join(COLOR_MODES)}")
    luminance, chroma = split_luminance(photo)
    result = dream(luminance)
    dreamed = result.image.to(torch.float32).cpu()
    out = merge_luminance(dreamed, chroma, color, tone)
    toned = soft_clip(dreamed) if tone == "soft" else dreamed
    floats = toned if chroma is None or color == "gray" else ycbcr_to_rgb(torch.cat([toned[..., None], chroma], dim=-1))
    clipped = float(((floats < -0.5) | (floats > 255.5)).float().mean())
    return ColourDream(image=out, luminance=dreamed, clipped_fraction=clipped, result=result)
