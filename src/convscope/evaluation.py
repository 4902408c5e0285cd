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
    result.most_confused_pair()  # ConfusedPair(a=4, b=9, count=6, ...) for the shipped model

Any model and class count: class names come from the split (else the model's spec).
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

    def confused_pairs(self, k: int | None = None) -> list["ConfusedPair"]:
        """Class pairs ranked by how often the model confuses them (see :func:`confused_pairs`)."""
        pairs = confused_pairs(self.confusion, self.probabilities, self.labels)
        return pairs if k is None else pairs[:k]

    def most_confused_pair(self) -> "ConfusedPair":
        """The pair the model confuses most (see :func:`most_confused_pair`)."""
        return self.confused_pairs(1)[0]

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
            "most_confused_pair": self.most_confused_pair().to_dict(self.class_names) if len(self.class_names) > 1 else None,
            "misclassified": [int(i) for i in self.misclassified],
            **self.extra,
        }


@dataclass(frozen=True)
class ConfusedPair:
    """Two classes and how much the model mixes them up.

    Attributes:
        a, b: the classes, ``a < b``.
        count: images of either class predicted as the other (``C[a,b] + C[b,a]``).
        a_as_b, b_as_a: the two directions (``C[a,b]`` and ``C[b,a]``).
        soft: probability the model gives to the other class, summed over the
            images of both classes (``Σ_{true a} P(b) + Σ_{true b} P(a)``); breaks ties.
    """

    a: int
    b: int
    count: int
    a_as_b: int
    b_as_a: int
    soft: float

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"a": self.a, "b": self.b, "count": self.count, "a_as_b": self.a_as_b,
                               "b_as_a": self.b_as_a, "soft": round(float(self.soft), 6)}
        if class_names is not None:
            out["a_name"], out["b_name"] = str(class_names[self.a]), str(class_names[self.b])
        return out


def confused_pairs(
    confusion: np.ndarray, probabilities: np.ndarray | None = None, labels: np.ndarray | None = None
) -> list[ConfusedPair]:
    """Every unordered class pair, most confused first.

    Ranked by the symmetric off-diagonal count ``C[a,b] + C[b,a]`` (largest first);
    ties broken by the soft confusion (the probability mass each class's images put
    on the other class, when ``probabilities`` and ``labels`` are given), then by the
    class indices.

    Args:
        confusion: ``(C, C)`` counts, rows = true class, columns = predicted.
        probabilities: ``(N, C)`` softmax of the images (optional).
        labels: ``(N,)`` their true classes (with ``probabilities``).

    Raises:
        ValueError: fewer than two classes, or mismatched shapes.
    """
    matrix = np.asarray(confusion, dtype=np.int64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        raise ValueError(f"need a square confusion matrix of at least 2 classes; got shape {matrix.shape}")
    n = matrix.shape[0]
    soft = np.zeros((n, n), dtype=np.float64)
    if probabilities is not None and labels is not None:
        probs = np.asarray(probabilities, dtype=np.float64)
        labs = np.asarray(labels, dtype=np.int64)
        if probs.shape != (len(labs), n):
            raise ValueError(f"probabilities of shape {probs.shape} do not fit {len(labs)} labels and {n} classes")
        np.add.at(soft, labs, probs)  # soft[i, j] = Σ over images of class i of P(j)
    pairs = [
        ConfusedPair(a, b, int(matrix[a, b] + matrix[b, a]), int(matrix[a, b]), int(matrix[b, a]),
                     float(soft[a, b] + soft[b, a]))
        for a in range(n) for b in range(a + 1, n)
    ]
    pairs.sort(key=lambda p: (-p.count, -p.soft, p.a, p.b))
    return pairs


def most_confused_pair(
    confusion: np.ndarray, probabilities: np.ndarray | None = None, labels: np.ndarray | None = None
) -> ConfusedPair:
    """The class pair the model confuses most: the largest symmetric off-diagonal
    count of the confusion matrix (ties: the larger soft confusion; see
    :func:`confused_pairs`). 4 vs 9 for the shipped model on the MNIST test set."""
    return confused_pairs(confusion, probabilities, labels)[0]


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
    logits: torch.Tensor | None = None,
) -> Evaluation:
    """Run ``model`` over a whole split and collect the figures.

    Args:
        model: any model with a convscope spec (fed through the preprocessing it names).
        split: a :class:`convscope.data.Split` (anything with ``images`` uint8
            ``(N, H, W)`` / ``(N, H, W, 3)``, ``labels`` ``(N,)`` and optionally ``class_names``,
            ``dataset``, ``split``).
        batch_size: images per forward pass.
        progress: optional ``progress(done, total)`` callback (e.g. a rich bar).
        logits: the split's logits ``(N, classes)`` when a pass that also captured
            other layers already computed them (then ``model`` is not run).

    Returns:
        An :class:`Evaluation`; indices refer to the split's original order.
    """
    if logits is None:
        logits = predict_logits(model, split.images, batch_size=batch_size, progress=progress)
    elif tuple(logits.shape[:1]) != (len(split.labels),):
        raise ValueError(f"logits of {logits.shape[0]} images given for a split of {len(split.labels)}")
    class_names = getattr(split, "class_names", None)
    if class_names is None or len(class_names) != logits.shape[1]:
        from convscope.spec import SpecError, spec_of

        try:
            class_names = spec_of(model).class_names
        except SpecError:
            class_names = None
    return evaluation_from_logits(
        logits,
        split.labels,
        class_names,
        dataset=getattr(split, "dataset", None),
        split=getattr(split, "split", None),
    )


__all__ = ["ConfusedPair", "Evaluation", "confused_pairs", "evaluate_model", "evaluation_from_logits", "most_confused_pair"]
