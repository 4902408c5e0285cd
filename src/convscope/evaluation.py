"""Evaluate a model on a dataset split: accuracy, per-class accuracy, confusion
matrix, predictions, probabilities and the indices of the misclassified images.

An engine: it runs the model through :func:`convscope.inference.predict_logits`
and returns numbers; it never touches the disk, prints or plots. Draw the confusion
matrix with :func:`convscope.render.confusion.confusion_figure`.

Example::

    from convscope.data import load_split
    from convscope.evaluation import evaluate_model
    from convscope.models import load_model

    result = evaluate_model(load_model(), load_split("test"))
    result.accuracy              # e.g. 0.994
    result.confusion[4, 9]       # true 4s predicted as 9
    result.misclassified[:5]     # test-set indices, original order
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from convscope.inference import predict_logits


@dataclass
class Evaluation:
    """The result of :func:`evaluate_model`.

    Attributes:
        accuracy: fraction of correctly classified images (0..1).
        per_class_accuracy: ``(C,)`` float64, recall of each true class (NaN for a
            class with no images).
        confusion: ``(C, C)`` int64 counts, rows = true class, columns = predicted.
        predictions: ``(N,)`` int64 arg-max class of each image.
        probabilities: ``(N, C)`` float32 softmax probabilities.
        labels: ``(N,)`` int64 true classes.
        misclassified: ``(M,)`` int64 indices (into the split, original order) of
            the images whose prediction differs from the label, ascending.
        class_names: the ``C`` class names.
        dataset: dataset name of the split (e.g. ``"mnist"``), if known.
        split: split name (``"test"`` / ``"train"``), if known.
    """

    accuracy: float
    per_class_accuracy: np.ndarray
    confusion: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray
    labels: np.ndarray
    misclassified: np.ndarray
    class_names: tuple[str, ...]
    dataset: str | None = None
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        """Number of evaluated images."""
        return int(len(self.labels))

    @property
    def num_errors(self) -> int:
        """Number of misclassified images."""
        return int(len(self.misclassified))

    def top_confusions(self, k: int = 5) -> list[tuple[int, int, int]]:
        """The ``k`` largest off-diagonal cells as ``(true, predicted, count)``, largest first."""
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        order = np.argsort(off, axis=None, kind="stable")[::-1]
        cells = []
        for flat in order[:k]:
            true, pred = np.unravel_index(flat, off.shape)
            if off[true, pred] == 0:
                break
            cells.append((int(true), int(pred), int(off[true, pred])))
        return cells

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: every figure plus the misclassified indices, but not
        the per-image predictions / probabilities (use the arrays for those)."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "num_images": self.num_images,
            "num_errors": self.num_errors,
            "accuracy": float(self.accuracy),
            "class_names": list(self.class_names),
            "per_class_accuracy": {
                name: (None if np.isnan(value) else float(value))
                for name, value in zip(self.class_names, self.per_class_accuracy)
            },
            "per_class_count": {name: int(n) for name, n in zip(self.class_names, self.confusion.sum(axis=1))},
            "confusion": self.confusion.tolist(),
            "confusion_axes": "rows = true class, columns = predicted class",
            "top_confusions": [
                {"true": self.class_names[t], "predicted": self.class_names[p], "count": n}
                for t, p, n in self.top_confusions()
            ],
            "misclassified": [int(i) for i in self.misclassified],
            **self.extra,
        }


def evaluation_from_logits(
    logits: torch.Tensor | np.ndarray,
    labels: np.ndarray | torch.Tensor,
    class_names: Sequence[str] | None = None,
    *,
    dataset: str | None = None,
    split: str | None = None,
) -> Evaluation:
    """Build an :class:`Evaluation` from logits ``(N, C)`` and true labels ``(N,)``.

    Useful when the logits are already at hand (e.g. a training loop's
    validation pass); :func:`evaluate_model` calls it.
    """
    logits_t = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits).float().cpu()
    if logits_t.ndim != 2:
        raise ValueError(f"logits must be (N, C); got shape {tuple(logits_t.shape)}")
    labels_np = np.asarray(labels, dtype=np.int64).reshape(-1)
    n, n_classes = logits_t.shape
    if len(labels_np) != n:
        raise ValueError(f"{n} logit rows but {len(labels_np)} labels")
    if labels_np.size and (labels_np.min() < 0 or labels_np.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}; found {labels_np.min()}..{labels_np.max()}")
    names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(n_classes))
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class names for {n_classes} classes")

    probabilities = torch.softmax(logits_t, dim=1).numpy().astype(np.float32)
    predictions = logits_t.argmax(dim=1).numpy().astype(np.int64)
    confusion = np.bincount(labels_np * n_classes + predictions, minlength=n_classes * n_classes)
    confusion = confusion.reshape(n_classes, n_classes).astype(np.int64)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan).astype(np.float64)
    correct = int(np.trace(confusion))
    accuracy = correct / n if n else float("nan")
    misclassified = np.flatnonzero(predictions != labels_np).astype(np.int64)
    return Evaluation(
        accuracy=float(accuracy),
        per_class_accuracy=per_class,
        confusion=confusion,
        predictions=predictions,
        probabilities=probabilities,
        labels=labels_np,
        misclassified=misclassified,
        class_names=names,
        dataset=dataset,
        split=split,
    )


def evaluate_model(
    model: nn.Module,
    split: Any,
    *,
    batch_size: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Run ``model`` over a whole split and collect the figures.

    Args:
        model: a convscope model (fed through the preprocessing in its config).
        split: a :class:`convscope.data.Split` (anything with ``images`` uint8
            ``(N, 28, 28)``, ``labels`` ``(N,)`` and optionally ``class_names``,
            ``dataset``, ``split``).
        batch_size: images per forward pass.
        progress: optional ``progress(done, total)`` callback (e.g. a rich bar).

    Returns:
        An :class:`Evaluation`; indices refer to the split's original order.
    """
    logits = predict_logits(model, split.images, batch_size=batch_size, progress=progress)
    class_names = getattr(split, "class_names", None)
    if class_names is None:
        config = getattr(model, "config", None)
        class_names = getattr(config, "class_names", None)
    return evaluation_from_logits(
        logits,
        split.labels,
        class_names,
        dataset=getattr(split, "dataset", None),
        split=getattr(split, "split", None),
    )


__all__ = ["Evaluation", "evaluate_model", "evaluation_from_logits"]
