"""Turn uint8 images into the float tensors a model was trained on.

The method is part of every model's spec (:class:`convscope.spec.ModelSpec`), so later
analyses feed the model what it saw in training:

* ``"standardize"`` — the reference's choice: per image, subtract the mean and
  divide by the standard deviation (mean 0, std 1 per image, over all channels).
* ``"unit"`` — scale 0..255 to 0..1.
* ``"meanstd"`` — scale to 0..1, then per channel ``(x - mean[c]) / std[c]``.
* ``"raw"`` — the 0..255 values as floats.

Image layouts are checked against the model's ``(C, H, W)``: ``(H, W)``,
``(H, W, C)``, ``(N, H, W)``, ``(N, H, W, C)`` (channels last, as image files and
datasets store them) and ``(N, C, H, W)`` (channels first) are accepted when their
sizes fit; anything else is refused with a message, never reinterpreted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from convscope.spec import PREPROCESSINGS, ModelSpec

#: Kept for older callers: the method names.
PREPROCESSING = PREPROCESSINGS
_EPS = 1e-7


class ImageLayoutError(ValueError):
    """Images whose shape does not fit the model's input."""


def standardize(images: torch.Tensor) -> torch.Tensor:
    """Per-image standardisation of a float batch ``(N, ...)``: mean 0, std 1 each."""
    flat = images.reshape(images.shape[0], -1)
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, keepdim=True, unbiased=False)
    return ((flat - mean) / (std + _EPS)).reshape(images.shape)


def _as_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        images = np.asarray(images)
        if not images.flags.writeable:  # dataset arrays are read-only; torch warns on those
            images = images.copy()
    return torch.as_tensor(images)


def to_channels_first(
    images: np.ndarray | torch.Tensor, input_shape: Sequence[int] | None = None
) -> torch.Tensor:
    """Images in any accepted layout → ``(N, C, H, W)`` (same dtype, no scaling).

    Args:
        images: ``(H, W)``, ``(H, W, C)``, ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``.
        input_shape: the model's ``(C, H, W)``; ``None`` accepts gray ``(N, H, W)`` /
            ``(N, 1, H, W)`` of any size (the old MNIST-only behaviour).

    Raises:
        ImageLayoutError: the shape fits no layout of ``input_shape``; the message
            names the shape given and the shapes accepted.
    """
    tensor = _as_tensor(images)
    if input_shape is None:
        if tensor.ndim == 2:
            return tensor[None, None]
        if tensor.ndim == 3:
            return tensor[:, None]
        if tensor.ndim == 4 and tensor.shape[1] == 1:
            return tensor
        raise ImageLayoutError(f"expected gray images (H,W), (N,H,W) or (N,1,H,W); got shape {tuple(tensor.shape)}")
    c, h, w = (int(v) for v in input_shape)
    shape = tuple(tensor.shape)
    candidates: list[torch.Tensor] = []
    if tensor.ndim == 2 and c == 1 and shape == (h, w):
        candidates.append(tensor[None, None])
    elif tensor.ndim == 3:
        if shape == (h, w, c):
            candidates.append(tensor.permute(2, 0, 1)[None])
        if c == 1 and shape[1:] == (h, w):
            candidates.append(tensor[:, None])
        if shape == (c, h, w) and c != 1 and not candidates:
            candidates.append(tensor[None])
    elif tensor.ndim == 4:
        if shape[1:] == (c, h, w):
            candidates.append(tensor)
        if shape[1:] == (h, w, c) and not candidates:
            candidates.append(tensor.permute(0, 3, 1, 2))
    if not candidates:
        accepted = f"(N, {h}, {w})" if c == 1 else f"(N, {h}, {w}, {c})"
        raise ImageLayoutError(
            f"images of shape {shape} do not fit the model's input {c}×{h}×{w}: give {accepted} "
            f"(channels last, as image files are stored) or (N, {c}, {h}, {w}); other sizes or channel "
            "counts must be converted first (image files are converted as the model's spec says)"
        )
    return candidates[0]


def preprocess(
    images: np.ndarray | torch.Tensor,
    method: str | ModelSpec = "standardize",
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Convert uint8 images to model input.

    Args:
        images: uint8 images 0..255 in a layout :func:`to_channels_first` accepts
            (floats are taken as already on the 0..255 scale).
        method: a :class:`~convscope.spec.ModelSpec` (checks the layout against its
            input shape and uses its preprocessing), or a method name for gray
            images of any size.
        device: target device.
        dtype: target dtype.

    Returns:
        ``(N, C, H, W)`` float tensor.
    """
    spec = method if isinstance(method, ModelSpec) else None
    name = spec.preprocessing if spec is not None else method
    if name not in PREPROCESSINGS:
        raise ValueError(f"unknown preprocessing {name!r}; use one of {PREPROCESSINGS}")
    if spec is None and name == "meanstd":
        raise ValueError("preprocessing 'meanstd' needs the model's spec (its per-channel mean and std)")
    tensor = to_channels_first(images, spec.input_shape if spec is not None else None)
    tensor = tensor.to(device=device, dtype=dtype)
    if name == "unit":
        return tensor / 255.0
    if name == "raw":
        return tensor
    if name == "meanstd":
        assert spec is not None and spec.mean is not None and spec.std is not None
        mean = torch.tensor(spec.mean, device=tensor.device, dtype=dtype).reshape(1, -1, 1, 1)
        std = torch.tensor(spec.std, device=tensor.device, dtype=dtype).reshape(1, -1, 1, 1)
        return (tensor / 255.0 - mean) / std
    return standardize(tensor)


def to_pixels(inputs: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """Invert the spec's preprocessing where it can be inverted: model input
    ``(N, C, H, W)`` → float pixels on the 0..255 scale (not clipped).

    ``standardize`` cannot be inverted (each image's mean and std are lost); its
    inputs are returned as they are, like any standardised picture.
    """
    if spec.preprocessing == "unit":
        return inputs * 255.0
    if spec.preprocessing == "meanstd":
        assert spec.mean is not None and spec.std is not None
        mean = torch.tensor(spec.mean, device=inputs.device, dtype=inputs.dtype).reshape(1, -1, 1, 1)
        std = torch.tensor(spec.std, device=inputs.device, dtype=inputs.dtype).reshape(1, -1, 1, 1)
        return (inputs * std + mean) * 255.0
    return inputs


__all__ = ["ImageLayoutError", "PREPROCESSING", "preprocess", "standardize", "to_channels_first", "to_pixels"]
