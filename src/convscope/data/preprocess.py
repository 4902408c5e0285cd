"""Turn uint8 images into the float tensors a model was trained on.

Two methods, recorded in every model's config so later analyses feed the model
what it saw in training:

* ``"standardize"`` — the reference's choice: per image, subtract the mean and
  divide by the standard deviation (mean 0, std 1 per image).
* ``"unit"`` — scale 0..255 to 0..1.
"""

from __future__ import annotations

import numpy as np
import torch

PREPROCESSING = ("standardize", "unit")
_EPS = 1e-7


def standardize(images: torch.Tensor) -> torch.Tensor:
    """Per-image standardisation of a float batch ``(N, ...)``: mean 0, std 1 each."""
    flat = images.reshape(images.shape[0], -1)
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, keepdim=True, unbiased=False)
    return ((flat - mean) / (std + _EPS)).reshape(images.shape)


def preprocess(
    images: np.ndarray | torch.Tensor,
    method: str = "standardize",
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Convert uint8 images to model input.

    Args:
        images: ``(H, W)``, ``(N, H, W)`` or ``(N, 1, H, W)``, uint8 0..255
            (floats are taken as already on the 0..255 scale).
        method: ``"standardize"`` or ``"unit"``.
        device: target device.
        dtype: target dtype.

    Returns:
        ``(N, 1, H, W)`` float tensor.
    """
    if method not in PREPROCESSING:
        raise ValueError(f"unknown preprocessing {method!r}; use one of {PREPROCESSING}")
    if not isinstance(images, torch.Tensor):
        images = np.asarray(images)
        if not images.flags.writeable:  # dataset arrays are read-only; torch warns on those
            images = images.copy()
    tensor = torch.as_tensor(images)
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim == 3:
        tensor = tensor[:, None]
    if tensor.ndim != 4:
        raise ValueError(f"expected images of shape (H,W), (N,H,W) or (N,1,H,W); got {tuple(tensor.shape)}")
    tensor = tensor.to(device=device, dtype=dtype)
    if method == "unit":
        return tensor / 255.0
    return standardize(tensor)
