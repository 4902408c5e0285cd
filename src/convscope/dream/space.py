"""Where a dream happens: the model's own input space, for any model.

A dream changes a photo in the space the model sees it in, as the model's spec
says (:class:`convscope.spec.ModelSpec`):

* **channels** — a gray model (1 channel) dreams on the photo's luminance (a colour
  photo's Y, ITU-R BT.601; :mod:`convscope.dream.colour` puts the colour back); an
  RGB model dreams on all three channels (a gray photo is repeated into three).
* **preprocessing** — ``"standardize"`` (the reference models): the image is
  standardised with its own mean and std, dreamed, re-standardised after every
  step (the reference's fix that keeps it in the model's input distribution) and
  mapped back to the photo's mean and std. ``"unit"``, ``"meanstd"``, ``"raw"``:
  the photo (0..255) is preprocessed exactly as the model was trained
  (:func:`convscope.data.preprocess.preprocess`), dreamed, kept inside the valid
  pixel range after every step (clipped: 0..255 mapped through the preprocessing),
  and mapped back with :func:`~convscope.data.preprocess.to_pixels`.

The step size of a dream is given in units of the image's standard deviation in
that space (1 for standardised images), so ``step_size=0.05`` means the same
visible change for every preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convscope.spec import ModelSpec, spec_of

_EPS = 1e-7
# BT.601 luma weights (the Y of JPEG's YCbCr; the same as convscope.dream.colour)
_LUMA = (0.299, 0.587, 0.114)


class DreamInputError(ValueError):
    """An image that cannot be dreamed (wrong layout, non-finite values, too small)."""


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """``(H, W, 3)`` RGB → ``(H, W)`` BT.601 luminance (float64 arithmetic, float32 out),
    in row blocks so a large photo needs little extra memory."""
    from convscope.dream.colour import rgb_to_ycbcr

    return rgb_to_ycbcr(rgb)[..., 0]


def _layout(image: torch.Tensor) -> torch.Tensor:
    """A view of ``image`` as ``(H, W)`` or ``(H, W, 3)`` (no copy, no conversion)."""
    tensor = torch.as_tensor(image).detach()
    shape = tuple(tensor.shape)
    if tensor.ndim == 4 and tensor.shape[0] == 1 and tensor.shape[1] in (1, 3):
        tensor = tensor[0]
    if tensor.ndim == 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    elif tensor.ndim == 3 and tensor.shape[0] == 3 and tensor.shape[-1] != 3:
        tensor = tensor.permute(1, 2, 0)
    if not (tensor.ndim == 2 or (tensor.ndim == 3 and tensor.shape[-1] == 3)):
        raise DreamInputError(
            f"cannot dream an image of shape {shape}: give (H, W) gray or (H, W, 3) colour pixels "
            "(or (1, C, H, W) channels first)"
        )
    return tensor


def image_size(image: torch.Tensor) -> tuple[int, int]:
    """``(H, W)`` of an image in any layout :func:`as_photo` accepts (nothing is copied)."""
    tensor = _layout(image)
    return int(tensor.shape[0]), int(tensor.shape[1])


def as_photo(image: torch.Tensor, channels: int) -> torch.Tensor:
    """An image in any accepted layout → the dream's photo layout for a model with
    ``channels`` input channels: ``(H, W)`` (gray) or ``(H, W, 3)`` (RGB), float32.

    Accepted: ``(H, W)``, ``(1, H, W)``, ``(1, 1, H, W)`` gray; ``(H, W, 3)``,
    ``(3, H, W)``, ``(1, 3, H, W)`` colour. A colour image for a gray model becomes
    its luminance; a gray image for an RGB model is repeated into three channels.

    Raises:
        DreamInputError: another layout, or NaN / infinite values.
    """
    tensor = _layout(image).to(torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise DreamInputError(f"the image holds {bad:,} NaN or infinite value(s); replace them with finite pixel values")
    if channels == 1:
        return luminance(tensor) if tensor.ndim == 3 else tensor
    if tensor.ndim == 2:
        return tensor[..., None].expand(*tensor.shape, 3).contiguous()
    return tensor


@dataclass
class DreamSpace:
    """The mapping between a photo and the model's input for one dream.

    Build it with :meth:`for_image`; then :meth:`to_model` / :meth:`to_photo` map
    ``(H, W)`` / ``(H, W, C)`` pixels to ``(1, C, H, W)`` model input and back (any
    size: octaves, tiles and carving use it on resized images too), and
    :meth:`keep` is applied after every step.

    Attributes:
        spec: the model's spec.
        mean, std: ``standardize`` only — the photo's own mean and std (over all
            channels), kept for the way back.
        scale: the standard deviation of the photo in the model's space (exactly
            1 for ``standardize``): dream steps are ``step_size * scale``.
    """

    spec: ModelSpec
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    scale: float = 1.0

    @property
    def channels(self) -> int:
        return self.spec.channels

    @property
    def standardizes(self) -> bool:
        """True when the model standardises each image (re-standardise after each step)."""
        return self.spec.preprocessing == "standardize"

    @classmethod
    def for_image(cls, model: nn.Module, photo: torch.Tensor) -> "DreamSpace":
        """The space for dreaming ``photo`` (``(H, W)`` / ``(H, W, C)``, see :func:`as_photo`)."""
        spec = spec_of(model)
        if spec.preprocessing == "standardize":
            # exactly as the reference dream: float32 mean and population std of the whole image
            return cls(spec, photo.mean(), photo.std(unbiased=False), 1.0)
        space = cls(spec)
        chw = space.to_model(photo)
        space.scale = max(float(chw.std(unbiased=False)), 1e-6)
        return space

    def to_model(self, photo: torch.Tensor) -> torch.Tensor:
        """``(H, W)`` / ``(H, W, C)`` pixels → ``(1, C, H, W)`` model input."""
        chw = photo[None, None] if photo.ndim == 2 else photo.permute(2, 0, 1)[None]
        name = self.spec.preprocessing
        if name == "standardize":
            assert self.mean is not None and self.std is not None
            return (chw - self.mean) / (self.std + _EPS)
        if name == "unit":
            return chw / 255.0
        if name == "raw":
            return chw
        mean, std = self._mean_std(chw)
        return (chw / 255.0 - mean) / std

    def to_photo(self, x: torch.Tensor) -> torch.Tensor:
        """``(1, C, H, W)`` / ``(C, H, W)`` model input → ``(H, W)`` / ``(H, W, C)`` pixels
        (float, not clipped)."""
        chw = x[0] if x.ndim == 4 else x
        name = self.spec.preprocessing
        if name == "standardize":
            assert self.mean is not None and self.std is not None
            pixels = chw * self.std + self.mean
        elif name == "unit":
            pixels = chw * 255.0
        elif name == "raw":
            pixels = chw
        else:
            mean, std = self._mean_std(chw[None])
            pixels = ((chw[None] * std + mean) * 255.0)[0]
        return pixels[0] if pixels.shape[0] == 1 else pixels.permute(1, 2, 0)

    def bounds(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(low, high)`` per channel ``(1, C, 1, 1)``: pixels 0 and 255 in the model's
        space; ``None`` for ``standardize`` (no fixed range)."""
        name = self.spec.preprocessing
        if name == "standardize":
            return None
        low = torch.zeros((1, self.channels, 1, 1), dtype=like.dtype, device=like.device)
        high = torch.full_like(low, 255.0)
        if name == "unit":
            return low / 255.0, high / 255.0
        if name == "raw":
            return low, high
        mean, std = self._mean_std(like)
        return (low - mean) / std, (high / 255.0 - mean) / std

    def _mean_std(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.spec.mean is not None and self.spec.std is not None
        mean = torch.tensor(self.spec.mean, dtype=like.dtype, device=like.device).reshape(1, -1, 1, 1)
        std = torch.tensor(self.spec.std, dtype=like.dtype, device=like.device).reshape(1, -1, 1, 1)
        return mean, std

    def describe(self) -> dict:
        """The space's facts for JSON."""
        return {
            "channels": self.channels,
            "preprocessing": self.spec.preprocessing,
            "keep_in_range": "restandardize" if self.standardizes else "clip to pixels 0..255",
            "step_unit": self.scale,
        }


__all__ = ["DreamInputError", "DreamSpace", "as_photo", "image_size", "luminance"]
