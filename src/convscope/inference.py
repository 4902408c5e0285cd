"""Batched inference over uint8 image arrays: the shared way to run a model on a
dataset split (evaluation, predictions, top-k, training's validation)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from convscope.data.preprocess import preprocess


def preprocessing_of(model: nn.Module) -> str:
    """The preprocessing recorded in the model's config (default ``standardize``)."""
    config = getattr(model, "config", None)
    return getattr(config, "preprocessing", None) or "standardize"


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for parameter-less models)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def to_input(model: nn.Module, images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images ``(N, 28, 28)`` / ``(28, 28)`` → model input ``(N, 1, 28, 28)``
    preprocessed the way ``model`` was trained, on the model's device."""
    return preprocess(images, preprocessing_of(model), device=model_device(model))


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Logits ``(N, classes)`` (on CPU) for uint8 images ``(N, 28, 28)``.

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
            chunks.append(model(batch).float().cpu())
            if progress is not None:
                progress(min(start + batch_size, total), total)
        return torch.cat(chunks) if chunks else torch.zeros((0, getattr(model, "num_classes", 10)))
    finally:
        model.train(was_training)


def accuracy(logits: torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    """Fraction of rows whose arg-max equals the label."""
    labels_t = torch.as_tensor(np.asarray(labels))
    return float((logits.argmax(dim=1) == labels_t).float().mean()) if len(labels_t) else float("nan")
