"""Batched inference over uint8 image arrays: the shared way to run a model on a
dataset split (evaluation, predictions, top-k, training's validation)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from convscope.data.preprocess import preprocess
from convscope.device import model_device
from convscope.spec import model_output, spec_of


def to_input(model: nn.Module, images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images → model input ``(N, C, H, W)`` preprocessed the way ``model`` was
    trained (its spec), on the model's device.

    ``images``: ``(H, W)`` / ``(N, H, W)`` for a gray model, ``(H, W, C)`` /
    ``(N, H, W, C)`` channels last, or ``(N, C, H, W)``; sizes must equal the spec's
    (:class:`~convscope.data.preprocess.ImageLayoutError` otherwise).
    """
    return preprocess(images, spec_of(model), device=model_device(model))


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Logits ``(N, classes)`` (on CPU) for uint8 images (any layout :func:`to_input` takes).

    Args:
        model: the network (put in eval mode for the call, restored afterwards).
        images: uint8 images.
        batch_size: images per forward pass.
        progress: optional ``progress(done, total)`` callback.
    """
    was_training = model.training
    model.eval()
    try:
        chunks = []
        total = len(images)
        for start in range(0, total, batch_size):
            batch = to_input(model, images[start : start + batch_size])
            chunks.append(model_output(model(batch)).float().cpu())
            if progress is not None:
                progress(min(start + batch_size, total), total)
        return torch.cat(chunks) if chunks else torch.zeros((0, spec_of(model).num_classes))
    finally:
        model.train(was_training)


def accuracy(logits: torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    """Fraction of rows whose arg-max equals the label."""
    labels_t = torch.as_tensor(np.asarray(labels))
    return float((logits.argmax(dim=1) == labels_t).float().mean()) if len(labels_t) else float("nan")
