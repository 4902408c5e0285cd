"""Pick misclassified images from an evaluation (engine)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Mistakes:
    """Selected misclassified images.

    Attributes:
        indices: ``(M,)`` indices into the split, most confident mistake first.
        labels, predictions: ``(M,)`` true / predicted classes.
        probabilities: ``(M, classes)`` softmax of each image.
        total_errors: all mistakes in the evaluation (before the filter / limit).
        pair: the ``(true, predicted)`` filter, or ``None``.
    """

    indices: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray
    total_errors: int
    pair: tuple[int, int] | None

    def to_dict(self, split: str = "test", class_names: tuple[str, ...] | None = None) -> dict:
        count = self.probabilities.shape[1] if self.probabilities.ndim == 2 else 0
        names = tuple(class_names) if class_names is not None and len(class_names) >= count else tuple(
            str(i) for i in range(count))
        return {
            "total_errors": self.total_errors,
            "pair": None if self.pair is None else {"true": self.pair[0], "predicted": self.pair[1]},
            "shown": len(self.indices),
            "mistakes": [
                {
                    "image": f"{split}:{int(i)}",
                    "true": names[int(t)],
                    "predicted": names[int(p)],
                    "p_predicted": float(prob[p]),
                    "p_true": float(prob[t]),
                }
                for i, t, p, prob in zip(self.indices, self.labels, self.predictions, self.probabilities)
            ],
        }


def select_mistakes(
    evaluation, *, pair: tuple[int, int] | None = None, limit: int | None = None, order: str = "confidence"
) -> Mistakes:
    """Misclassified images of an :class:`convscope.evaluation.Evaluation`.

    Args:
        evaluation: uses ``misclassified``, ``labels``, ``predictions``, ``probabilities``.
        pair: keep only ``(true, predicted)``, e.g. ``(4, 9)``.
        limit: at most this many (after ordering).
        order: ``"confidence"`` (highest P(predicted) first) or ``"index"``.
    """
    if order not in ("confidence", "index"):
        raise ValueError(f"order must be 'confidence' or 'index', not {order!r}")
    indices = np.asarray(evaluation.misclassified, dtype=np.int64)
    labels = np.asarray(evaluation.labels)[indices]
    predictions = np.asarray(evaluation.predictions)[indices]
    if pair is not None:
        keep = (labels == pair[0]) & (predictions == pair[1])
        indices, labels, predictions = indices[keep], labels[keep], predictions[keep]
    probabilities = np.asarray(evaluation.probabilities)[indices]
    if order == "confidence" and len(indices):
        ranking = np.argsort(-probabilities[np.arange(len(indices)), predictions], kind="stable")
        indices, labels, predictions, probabilities = (
            indices[ranking], labels[ranking], predictions[ranking], probabilities[ranking]
        )
    if limit is not None:
        indices, labels, predictions, probabilities = indices[:limit], labels[:limit], predictions[:limit], probabilities[:limit]
    return Mistakes(indices, labels, predictions, probabilities, int(len(evaluation.misclassified)), pair)
