"""Colour photos for any model.

A gray model sees one channel. For a colour photo :func:`dream_colour` converts
it to YCbCr (ITU-R BT.601, full range — the JPEG / PIL convention), dreams on Y
and recombines the dreamed Y with the original Cb and Cr (``color="luminance"``,
default), so colours stay where they were and only brightness carries the dream;
or returns the dreamed gray image (``color="gray"``).

An RGB model dreams on all three channels in its own input space
(:mod:`convscope.dream.space`); :func:`colour_dream` picks the right way for a
model, and :func:`colour_zoom_frames` makes a zoom sequence in colour (the
chroma of a gray model's frames zooms with them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

COLOR_MODES = ("luminance", "gray")
TONES = ("soft", "clip")
#: width (levels) of the soft shoulder at each end of 0..255
SOFT_KNEE = 24.0

# BT.601 full range (JPEG): Y, Cb, Cr from R, G, B in 0..255.
_RGB_TO_YCBCR = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=torch.float64
)
_YCBCR_OFFSET = torch.tensor([0.0, 128.0, 128.0], dtype=torch.float64)


#: pixels converted per block (float64 temporaries stay ≈ 50 MB on a 50-megapixel photo)
_BLOCK_PIXELS = 1 << 21


def _blockwise(values: torch.Tensor, convert: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply a per-pixel ``(n, 3) -> (n, 3)`` float64 conversion in blocks of pixels, float32 out."""
    flat = values.reshape(-1, 3)
    out = torch.empty(flat.shape, dtype=torch.float32, device=values.device)
    for start in range(0, flat.shape[0], _BLOCK_PIXELS):
        out[start : start + _BLOCK_PIXELS] = convert(flat[start : start + _BLOCK_PIXELS].to(torch.float64)).to(torch.float32)
    return out.reshape(values.shape)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """``(H, W, 3)`` RGB (0..255 floats) → ``(H, W, 3)`` YCbCr (0..255)."""
    matrix = _RGB_TO_YCBCR.to(rgb.device, torch.float64)
    offset = _YCBCR_OFFSET.to(rgb.device)
    return _blockwise(rgb, lambda block: block @ matrix.T + offset)


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """``(H, W, 3)`` YCbCr → RGB (0..255 floats, not clipped)."""
    matrix = torch.linalg.inv(_RGB_TO_YCBCR).to(ycbcr.device)
    offset = _YCBCR_OFFSET.to(ycbcr.device)
    return _blockwise(ycbcr, lambda block: (block - offset) @ matrix.T)


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
        image: ``(H, W, 3)`` uint8 (colour) or ``(H, W)`` uint8 (gray photo or ``color="gray"``).
        luminance: ``(H, W)`` float dreamed luminance (0..255 scale, not clipped).
        clipped_fraction: fraction of output values that fell outside 0..255 and were clipped.
        result: the engine's result (numbers, notes, settings).
        dreamed: the engine's float dream: ``(H, W)`` luminance (gray model) or
            ``(H, W, 3)`` RGB (RGB model), 0..255 scale, not clipped.
    """

    image: torch.Tensor
    luminance: torch.Tensor
    clipped_fraction: float
    result: object
    dreamed: torch.Tensor | None = None


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
    if dreamed.ndim == 3:  # an RGB model dreamed the luminance repeated in three channels
        image, dreamed_luminance, clipped = _rgb_out(dreamed, color, tone)
        return ColourDream(image=image, luminance=dreamed_luminance, clipped_fraction=clipped, result=result,
                           dreamed=dreamed)
    out = merge_luminance(dreamed, chroma, color, tone)
    toned = soft_clip(dreamed) if tone == "soft" else dreamed
    floats = toned if chroma is None or color == "gray" else ycbcr_to_rgb(torch.cat([toned[..., None], chroma], dim=-1))
    clipped = float(((floats < -0.5) | (floats > 255.5)).float().mean())
    return ColourDream(image=out, luminance=dreamed, clipped_fraction=clipped, result=result, dreamed=dreamed)


def _check_modes(color: str, tone: str) -> None:
    if color not in COLOR_MODES:
        raise ValueError(f"unknown colour mode {color!r}; choose one of: {', '.join(COLOR_MODES)}")
    if tone not in TONES:
        raise ValueError(f"unknown tone mapping {tone!r}; choose one of: {', '.join(TONES)}")


def _rgb_out(dreamed: torch.Tensor, color: str, tone: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """An RGB model's float dream ``(H, W, 3)`` → ``(uint8 image, luminance, clipped fraction)``."""
    luminance = rgb_to_ycbcr(dreamed)[..., 0]
    if color == "gray":
        toned = soft_clip(luminance) if tone == "soft" else luminance
    else:
        toned = soft_clip(dreamed) if tone == "soft" else dreamed
    clipped = float(((toned < -0.5) | (toned > 255.5)).float().mean())
    return to_uint8(toned), luminance, clipped


def colour_dream(
    model: nn.Module,
    dream: Callable[[torch.Tensor], object],
    photo: torch.Tensor,
    *,
    color: str = "luminance",
    tone: str = "soft",
) -> ColourDream:
    """Dream a photo the way ``model`` sees it, and return it as 8-bit pixels.

    A gray model dreams on the photo's luminance and the chroma is put back
    (:func:`dream_colour`); an RGB model dreams on all three channels (a gray photo
    repeated into three) and ``color="gray"`` returns the dream's luminance.

    Args:
        model: the network (its spec's channel count decides).
        dream: ``dream(pixels) -> result`` with ``result.image`` the float dream of
            ``pixels`` (``(H, W)`` for a gray model, ``(H, W, 3)`` for an RGB one),
            e.g. ``lambda x: deep_dream(model, objective, x)``.
        photo: ``(H, W)`` gray or ``(H, W, 3)`` RGB, 0..255 (uint8 or float).
        color: ``"luminance"`` (keep the colours) or ``"gray"``.
        tone: ``"soft"`` (smooth shoulder near 0 and 255) or ``"clip"``.
    """
    from convscope.dream.space import as_photo
    from convscope.spec import spec_of

    _check_modes(color, tone)
    if spec_of(model).channels == 1:
        return dream_colour(dream, as_photo(photo, 3) if torch.as_tensor(photo).ndim == 3 else as_photo(photo, 1),
                            color=color, tone=tone)
    result = dream(as_photo(photo, 3))
    dreamed = result.image.to(torch.float32).cpu()  # type: ignore[attr-defined]
    image, luminance, clipped = _rgb_out(dreamed, color, tone)
    return ColourDream(image=image, luminance=luminance, clipped_fraction=clipped, result=result, dreamed=dreamed)


def colour_zoom_frames(
    model: nn.Module,
    objective,
    photo: torch.Tensor,
    frames: int,
    *,
    zoom: float = 1.05,
    color: str = "luminance",
    tone: str = "soft",
    seed: int | None = 0,
    first: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
    **dream_options,
) -> list[torch.Tensor]:
    """A zoom sequence of 8-bit colour frames: dream, zoom into the centre, dream again.

    A gray model dreams the luminance and the photo's chroma zooms with the frames
    (frame ``i`` shows the chroma's centre magnified ``zoom**i``); an RGB model
    dreams and zooms in colour.

    Args:
        model, objective: as for :func:`~convscope.dream.octaves.deep_dream`.
        photo: ``(H, W)`` gray or ``(H, W, 3)`` RGB, 0..255.
        frames: number of frames (frame 0 is the dream of ``photo`` with ``seed``).
        zoom: magnification between frames (> 1).
        color, tone: as :func:`colour_dream`.
        first: the float dream of ``photo`` (:attr:`ColourDream.dreamed`) if already
            computed with the same settings and ``seed``: frame 0 is not dreamed again.
        progress: ``progress(done_steps, total_steps)``.
        dream_options: passed to :func:`~convscope.dream.octaves.deep_dream`.

    Returns:
        ``frames`` uint8 tensors ``(H, W, 3)`` (or ``(H, W)``: gray photo / ``color="gray"``).
    """
    from convscope.dream.octaves import zoom_centre, zoom_frames
    from convscope.dream.space import as_photo
    from convscope.spec import spec_of

    _check_modes(color, tone)
    pixels = torch.as_tensor(photo)
    options = dict(zoom=zoom, seed=seed, first=first, progress=progress, **dream_options)
    if spec_of(model).channels == 1:
        luminance, chroma = split_luminance(as_photo(pixels, 3) if pixels.ndim == 3 else as_photo(pixels, 1))
        zoomed = zoom_frames(model, objective, luminance, frames, **options)
        return [
            merge_luminance(frame.cpu(), None if chroma is None else zoom_centre(chroma, zoom**index), color, tone)
            for index, frame in enumerate(zoomed)
        ]
    zoomed = zoom_frames(model, objective, as_photo(pixels, 3), frames, **options)
    return [_rgb_out(frame.to(torch.float32).cpu(), color, tone)[0] for frame in zoomed]
