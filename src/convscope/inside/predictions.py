"""Class probabilities for images (engine)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from convscope.inference import predict_logits


@dataclass(frozen=True)
class Prediction:
    """The model's verdict on one image.

    Attributes:
        probabilities: ``(classes,)`` softmax, float32 CPU.
        logits: ``(classes,)`` raw outputs.
        class_names: the class names.
    """

    probabilities: torch.Tensor
    logits: torch.Tensor
    class_names: tuple[str, ...]

    @property
    def predicted(self) -> int:
        return int(self.probabilities.argmax())

    def top(self, k: int = 3) -> list[tuple[int, float]]:
        """The ``k`` most probable classes as ``(class, probability)``, most probable first."""
        k = max(1, min(k, len(self.probabilities)))
        values, indices = torch.topk(self.probabilities, k)
        return [(int(i), float(v)) for v, i in zip(values, indices)]

    def to_dict(self, k: int = 3) -> dict:
        return {
            "predicted": self.predicted,
            "predicted_name": self.class_names[self.predicted],
            "probabilities": [float(p) for p in self.probabilities],
            "logits": [float(v) for v in self.logits],
            "top": [{"class": c, "name": self.class_names[c], "probability": p} for c, p in self.top(k)],
        }


def _class_names(model: nn.Module, n: int) -> tuple[str, ...]:
    from convscope.spec import SpecError, spec_of

    try:
        names = spec_of(model).class_names
    except SpecError:
        names = ()
    return tuple(names) if len(names) == n else tuple(str(i) for i in range(n))


def predict_images(
    model: nn.Module, images: np.ndarray | torch.Tensor, class_names: Sequence[str] | None = None
) -> list[Prediction]:
    """Predictions for uint8 images in any layout :func:`convscope.inference.to_input`
    takes (``(N, H, W)``, ``(N, H, W, 3)``, or one image); class names default to
    the model's spec."""
    from convscope.spec import SpecError, spec_of

    try:
        single = images.ndim == (2 if spec_of(model).is_gray else 3)
    except SpecError:
        single = images.ndim == 2
    images = images[None] if single else images
    logits = predict_logits(model, images)
    probabilities = torch.softmax(logits, dim=1)
    names = tuple(class_names) if class_names is not None else _class_names(model, logits.shape[1])
    return [Prediction(p, l, names) for p, l in zip(probabilities, logits)]
