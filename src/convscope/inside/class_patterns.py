"""Class patterns (reference §3): which map positions / dense nodes tell two classes apart.

* :func:`pattern_categories` — for a few example images of classes A and B, the
  positions active in every A image and in no B image, those active in every A and
  in some (not every) B image, and the two reverses, as in the reference's
  side-by-side grids (:func:`pattern_marks` gives the first pair).
* :func:`class_separation` — over a whole split: class-mean activation per
  position and Cohen's d between the two classes, ranked.
* :func:`pick_examples` — clear and ambiguous examples chosen from the model's
  probabilities (the reference's test indices do not hold those digits in the real
  MNIST file, so examples are selected from data + model instead).
* :func:`compare_classes` — all of the above in one pass over the images; without
  classes it compares the model's most confused pair on those images.

Works on any model: the class count comes from the model's outputs, class names
from the caller (the model's spec).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from convscope.address import resolve_address
from convscope.inside.activations import layer_activations


def pattern_marks(
    acts_a: torch.Tensor, acts_b: torch.Tensor, *, threshold: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions active in all A and in no B, and the reverse.

    Args:
        acts_a: ``(nA, ...)`` activations of the class-A images (one layer).
        acts_b: ``(nB, ...)`` activations of the class-B images.
        threshold: a unit counts as active when its value is ``> threshold``
            (0 for post-ReLU layers: any response).

    Returns:
        ``(a_only, b_only)`` boolean tensors of the per-image shape.
    """
    marks = pattern_categories(acts_a, acts_b, threshold=threshold)
    return marks.a_only, marks.b_only


@dataclass(frozen=True)
class PatternMarks:
    """Four disjoint position categories for a few example images of two classes.

    Attributes (boolean tensors of the per-image shape):
        a_only: active in every A image and in no B image.
        b_only: active in every B image and in no A image.
        a_all_b_some: active in every A image and in some, but not every, B image.
        b_all_a_some: active in every B image and in some, but not every, A image.
    """

    a_only: torch.Tensor
    b_only: torch.Tensor
    a_all_b_some: torch.Tensor
    b_all_a_some: torch.Tensor


def pattern_categories(acts_a: torch.Tensor, acts_b: torch.Tensor, *, threshold: float = 0.0) -> PatternMarks:
    """The four categories of :class:`PatternMarks`.

    Args:
        acts_a: ``(nA, ...)`` activations of the class-A images (one layer).
        acts_b: ``(nB, ...)`` activations of the class-B images.
        threshold: a unit counts as active when its value is ``> threshold``.
    """
    active_a, active_b = acts_a > threshold, acts_b > threshold
    all_a, any_a = active_a.all(dim=0), active_a.any(dim=0)
    all_b, any_b = active_b.all(dim=0), active_b.any(dim=0)
    return PatternMarks(
        a_only=all_a & ~any_b,
        b_only=all_b & ~any_a,
        a_all_b_some=all_a & any_b & ~all_b,
        b_all_a_some=all_b & any_a & ~all_a,
    )


@dataclass(frozen=True)
class Separation:
    """How strongly each position / node of one layer separates class A from B.

    Attributes:
        layer: layer name.
        class_a, class_b: the two classes.
        class_means: ``(classes, ...)`` mean activation of every class (NaN where a
            class has no images).
        mean_a, mean_b, std_a, std_b: per-position statistics of the two classes.
        cohens_d: ``(...)`` (mean_a − mean_b) / pooled std; 0 where both classes are
            constant (e.g. a dead unit). Positive: stronger for A.
        count_a, count_b: images per class.
    """

    layer: str
    class_a: int
    class_b: int
    class_means: torch.Tensor
    mean_a: torch.Tensor
    mean_b: torch.Tensor
    std_a: torch.Tensor
    std_b: torch.Tensor
    cohens_d: torch.Tensor
    count_a: int
    count_b: int

    def ranking(self, top: int = 20) -> list[dict]:
        """The ``top`` positions with the largest |d|, as JSON-ready rows (address, map,
        row/col, d, both means, which class it favours), largest |d| first."""
        flat = self.cohens_d.reshape(-1)
        order = torch.sort(flat.abs(), descending=True, stable=True).indices[: max(0, top)]
        shape = tuple(self.cohens_d.shape)
        rows = []
        for rank, index in enumerate(order.tolist(), start=1):
            coords = np.unravel_index(index, shape)
            map_index = int(coords[0])
            entry = {"rank": rank, "map": map_index}
            address = f"{self.layer}:{map_index}"
            if len(shape) == 3:
                entry["row"], entry["col"] = int(coords[1]), int(coords[2])
                address += f"@{entry['row']},{entry['col']}"
            d = float(flat[index])
            entry.update(
                address=address,
                cohens_d=d,
                mean_a=float(self.mean_a.reshape(-1)[index]),
                mean_b=float(self.mean_b.reshape(-1)[index]),
                favours=self.class_a if d > 0 else self.class_b,
            )
            rows.append(entry)
        return rows


def class_separation(
    activations: torch.Tensor, labels: np.ndarray | torch.Tensor, class_a: int, class_b: int, *, layer: str = "",
    num_classes: int | None = None,
) -> Separation:
    """Class means and Cohen's d between two classes for every position of a layer.

    Args:
        activations: ``(N, ...)`` one layer's activations for N images.
        labels: ``(N,)`` true classes.
        class_a, class_b: the classes to separate.
        layer: name recorded in the result.
        num_classes: rows of ``class_means`` (default: the largest label + 1).

    Raises:
        ValueError: a class has fewer than 2 images, or the classes are equal.
    """
    if class_a == class_b:
        raise ValueError(f"pick two different classes (got {class_a} twice)")
    acts = activations.double()
    labels_t = torch.as_tensor(np.array(labels, dtype=np.int64))
    n_classes = max(int(labels_t.max()) + 1 if len(labels_t) else 0, class_a + 1, class_b + 1, num_classes or 0)
    counts = torch.bincount(labels_t, minlength=n_classes).double()
    sums = torch.zeros((n_classes, *acts.shape[1:]), dtype=torch.float64).index_add_(0, labels_t, acts)
    shape = (-1,) + (1,) * (acts.ndim - 1)
    class_means = (sums / counts.reshape(shape)).float()  # NaN for empty classes
    a, b = acts[labels_t == class_a], acts[labels_t == class_b]
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 images of each class; got {len(a)} of {class_a} and {len(b)} of {class_b}")
    mean_a, mean_b = a.mean(0), b.mean(0)
    var_a, var_b = a.var(0, unbiased=True), b.var(0, unbiased=True)
    pooled = torch.sqrt(((len(a) - 1) * var_a + (len(b) - 1) * var_b) / (len(a) + len(b) - 2))
    d = torch.where(pooled > 1e-12, (mean_a - mean_b) / pooled.clamp_min(1e-12), torch.zeros_like(pooled))
    return Separation(
        layer=layer, class_a=class_a, class_b=class_b, class_means=class_means,
        mean_a=mean_a.float(), mean_b=mean_b.float(), std_a=var_a.sqrt().float(), std_b=var_b.sqrt().float(),
        cohens_d=d.float(), count_a=len(a), count_b=len(b),
    )


@dataclass(frozen=True)
class Examples:
    """Example images (indices into the split) chosen from the model's probabilities.

    Attributes:
        clear_a: true A, predicted A, largest log-probability margin over the runner-up first.
        clear_b: the same for class B.
        ambiguous_a: true A that the model still classifies as A, highest P(B) first
            (the reference's "4s that look like 9s").
        chosen_by: how they were chosen (for JSON / titles).
    """

    clear_a: list[int]
    clear_b: list[int]
    ambiguous_a: list[int]
    chosen_by: str = "model"


def _clear(probabilities: np.ndarray, labels: np.ndarray, cls: int, n: int) -> list[int]:
    candidates = np.flatnonzero((labels == cls) & (probabilities.argmax(1) == cls))
    if len(candidates) == 0:
        return []
    p = probabilities[candidates].astype(np.float64)
    others = p.copy()
    others[:, cls] = -np.inf
    # log-margin: log P(cls) - log P(runner-up); unlike P(cls) it does not saturate at 1.0.
    margin = np.log(np.maximum(p[:, cls], 1e-300)) - np.log(np.maximum(others.max(1), 1e-300))
    order = np.argsort(-margin, kind="stable")[:n]
    return [int(i) for i in candidates[order]]


def pick_examples(
    probabilities: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, class_a: int, class_b: int, n: int = 3
) -> Examples:
    """Choose ``n`` clear A, ``n`` clear B and ``n`` ambiguous A images.

    Args:
        probabilities: ``(N, classes)`` the model's softmax over a split.
        labels: ``(N,)`` true classes.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    labs = np.asarray(labels)
    ambiguous = np.flatnonzero((labs == class_a) & (probs.argmax(1) == class_a))
    order = np.argsort(-probs[ambiguous, class_b], kind="stable")[:n]
    return Examples(
        clear_a=_clear(probs, labs, class_a, n),
        clear_b=_clear(probs, labs, class_b, n),
        ambiguous_a=[int(i) for i in ambiguous[order]],
    )


@dataclass
class LayerComparison:
    """One layer in a class comparison.

    Attributes:
        layer: layer name.
        acts_a, acts_b: ``(nA, ...)`` / ``(nB, ...)`` activations of the clear examples.
        acts_ambiguous: ``(nAmb, ...)`` activations of the ambiguous A examples.
        a_only, b_only: active in every A and no B example, and the reverse
            (see :class:`PatternMarks`).
        separation: whole-split statistics.
        a_all_b_some, b_all_a_some: active in every A and some (not every) B
            example, and the reverse.
    """

    layer: str
    acts_a: torch.Tensor
    acts_b: torch.Tensor
    acts_ambiguous: torch.Tensor
    a_only: torch.Tensor
    b_only: torch.Tensor
    separation: Separation
    a_all_b_some: torch.Tensor | None = None
    b_all_a_some: torch.Tensor | None = None


@dataclass
class ClassComparison:
    """Result of :func:`compare_classes`.

    Attributes:
        class_a, class_b: the compared classes.
        examples: the chosen image indices.
        images: ``{index: uint8 image}`` for every example (gray or RGB).
        probabilities: ``{index: (classes,)}`` for every example.
        labels: ``{index: true class}``.
        layers: ``{layer: LayerComparison}``.
        pair_chosen_by: ``"given"``, or ``"most confused"`` when the pair was
            chosen from the model's confusion on the images.
        confused_pair: the :class:`~convscope.evaluation.ConfusedPair` facts of the
            compared pair on these images.
        num_images: images the statistics were computed over.
        split: split name used in captions and JSON (``"test"``).
    """

    class_a: int
    class_b: int
    examples: Examples
    images: dict[int, np.ndarray]
    probabilities: dict[int, torch.Tensor]
    labels: dict[int, int]
    layers: dict[str, LayerComparison] = field(default_factory=dict)
    pair_chosen_by: str = "given"
    confused_pair: object | None = None
    num_images: int = 0
    split: str = "test"

    def example_activations(self, layer: str, index: int) -> torch.Tensor:
        """Activations of example image ``index`` (clear A, clear B or ambiguous A) in ``layer``."""
        comp, ex = self.layers[layer], self.examples
        if index in ex.clear_a:
            return comp.acts_a[ex.clear_a.index(index)]
        if index in ex.clear_b:
            return comp.acts_b[ex.clear_b.index(index)]
        return comp.acts_ambiguous[ex.ambiguous_a.index(index)]

    def example_row(self, index: int, role: str, class_names: Sequence[str], split: str | None = None) -> dict:
        """One row for the class-comparison figures: image, label, probabilities, a
        caption naming ``role`` and P(A)/P(B), and the activations in every layer."""
        probs = self.probabilities[index]
        a_name, b_name = _name(class_names, self.class_a), _name(class_names, self.class_b)
        return {
            "image": self.images[index],
            "label": self.labels[index],
            "probabilities": probs,
            "caption": f"{role} {split or self.split}:{index}\nP({a_name})={float(probs[self.class_a]):.1%} "
            f"P({b_name})={float(probs[self.class_b]):.1%}",
            "activations": {name: self.example_activations(name, index) for name in self.layers},
        }

    def to_dict(self, top: int = 20, split: str | None = None, class_names: Sequence[str] | None = None) -> dict:
        split = split or self.split

        def describe(indices: Sequence[int]) -> list[dict]:
            rows = []
            for i in indices:
                predicted = int(self.probabilities[i].argmax())
                row = {
                    "image": f"{split}:{i}",
                    "label": self.labels[i],
                    "predicted": predicted,
                    "probabilities": [round(float(p), 6) for p in self.probabilities[i]],
                }
                if class_names is not None:
                    row.update(label_name=_name(class_names, self.labels[i]), predicted_name=_name(class_names, predicted))
                rows.append(row)
            return rows

        def ranking(sep: Separation) -> list[dict]:
            rows = sep.ranking(top)
            if class_names is not None:
                for row in rows:
                    row["favours_name"] = _name(class_names, row["favours"])
            return rows

        out = {
            "class_a": self.class_a,
            "class_b": self.class_b,
            "pair_chosen_by": self.pair_chosen_by,
            "examples_chosen_by": self.examples.chosen_by,
            "num_images": self.num_images,
            "clear_a": describe(self.examples.clear_a),
            "clear_b": describe(self.examples.clear_b),
            "ambiguous_a": describe(self.examples.ambiguous_a),
            "layers": {
                name: {
                    "active_in_all_a_and_no_b": _mark_list(name, comp.a_only),
                    "active_in_all_b_and_no_a": _mark_list(name, comp.b_only),
                    "active_in_all_a_and_some_b": _mark_list(name, comp.a_all_b_some),
                    "active_in_all_b_and_some_a": _mark_list(name, comp.b_all_a_some),
                    "images_per_class": {str(self.class_a): comp.separation.count_a, str(self.class_b): comp.separation.count_b},
                    "separating": ranking(comp.separation),
                }
                for name, comp in self.layers.items()
            },
        }
        if class_names is not None:
            out["class_a_name"], out["class_b_name"] = _name(class_names, self.class_a), _name(class_names, self.class_b)
        if self.confused_pair is not None:
            out["confusion"] = self.confused_pair.to_dict(class_names)  # type: ignore[attr-defined]
        return out


def _name(class_names: Sequence[str] | None, index: int) -> str:
    return str(class_names[index]) if class_names is not None and 0 <= index < len(class_names) else str(index)


def _mark_list(layer: str, mask: torch.Tensor | None) -> list[str]:
    if mask is None:
        return []
    out = []
    for coords in torch.nonzero(mask).tolist():
        text = f"{layer}:{coords[0]}"
        if len(coords) == 3:
            text += f"@{coords[1]},{coords[2]}"
        out.append(text)
    return out


def compare_classes(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    class_a: int | None = None,
    class_b: int | None = None,
    *,
    layers: Sequence[str] | None = None,
    n_examples: int = 3,
    examples: Examples | None = None,
    threshold: float = 0.0,
    batch_size: int = 1000,
    progress: Callable[[int, int], None] | None = None,
    split: str = "test",
    given: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    outputs: dict[str, torch.Tensor] | None = None,
) -> ClassComparison:
    """Compare two classes in ``layers`` over a whole split (one forward pass).

    Args:
        model: the network (with a convscope spec).
        images: uint8 ``(N, H, W)`` or ``(N, H, W, 3)`` (e.g. the test split).
        labels: ``(N,)`` true classes.
        class_a, class_b: classes to compare (e.g. 4 and 9); both ``None``: the
            model's most confused pair on these images
            (:func:`convscope.evaluation.most_confused_pair`).
        layers: layers to compare (default :func:`convscope.layers.compare_layers`:
            the last conv layer and the hidden dense layers).
        n_examples: clear examples per class and ambiguous A examples, when
            ``examples`` is not given.
        examples: explicit examples (indices into ``images``) instead of choosing.
        given: image indices to use as the examples, grouped by their label once
            the pair is known (each must be a true A or B).
        threshold: "active" means ``> threshold`` for the marks.
        batch_size: images per forward pass.
        progress: optional ``progress(done, total)`` callback.
        split: split name for captions and JSON.
        class_names: names for messages.
        outputs: the outputs of ``layers`` and ``"logits"`` for all of ``images``
            (``{layer: (N, ...)}``, as :func:`layer_activations` returns them) when a
            pass shared with another computation already has them; then the model
            is not run.

    Raises:
        ValueError: equal classes, only one class given, a class outside the
            model's outputs, fewer than 2 images of a class, or ``outputs`` that
            lack a layer or hold another number of images.
    """
    from convscope.evaluation import confused_pairs, evaluation_from_logits

    if (class_a is None) != (class_b is None):
        raise ValueError("give both classes, or neither (then the most confused pair is compared)")
    if class_a is not None and class_a == class_b:
        raise ValueError(f"pick two different classes (got {class_a} twice)")
    if layers is None:
        from convscope.layers import compare_layers

        layers = compare_layers(model)
    names = list(dict.fromkeys(resolve_address(model, layer).layer for layer in layers))
    if outputs is None:
        outputs = layer_activations(model, images, names + ["logits"], batch_size=batch_size, progress=progress)
    else:
        missing = [name for name in names + ["logits"] if name not in outputs]
        if missing:
            raise ValueError(f"the given outputs lack {', '.join(missing)}; pass the outputs of every compared layer "
                             "and of 'logits'")
        wrong = [name for name in names + ["logits"] if outputs[name].shape[0] != len(images)]
        if wrong:
            raise ValueError(f"the given outputs of {', '.join(wrong)} do not hold one row per image "
                             f"({len(images)} images)")
        outputs = {name: outputs[name] for name in names + ["logits"]}
    logits = outputs.pop("logits")
    probabilities = torch.softmax(logits, dim=1)
    num_classes = int(probabilities.shape[1])
    labels_np = np.asarray(labels)
    for cls in (class_a, class_b):
        if cls is not None and not 0 <= cls < num_classes:
            raise ValueError(f"class {cls} is not one of the model's {num_classes} classes (0..{num_classes - 1})")
    evaluation = evaluation_from_logits(logits, labels_np)
    ranked = confused_pairs(evaluation.confusion, evaluation.probabilities, evaluation.labels)
    chosen_by = "given"
    if class_a is None:
        class_a, class_b = ranked[0].a, ranked[0].b
        chosen_by = "most confused"
    pair = next(p for p in ranked if {p.a, p.b} == {class_a, class_b})
    if given is not None and examples is None:
        chosen_a, chosen_b = [], []
        for index in given:
            label = int(labels_np[index])
            if label not in (class_a, class_b):
                raise ValueError(f"{split}:{index} is a {_name(class_names, label)}, neither class "
                                 f"{_name(class_names, class_a)} nor {_name(class_names, class_b)}; pick images of the "
                                 "two compared classes")
            (chosen_a if label == class_a else chosen_b).append(int(index))
        if not chosen_a or not chosen_b:
            raise ValueError(f"the given images need at least one true {_name(class_names, class_a)} and one true "
                             f"{_name(class_names, class_b)}")
        examples = Examples(clear_a=chosen_a, clear_b=chosen_b, ambiguous_a=[], chosen_by="--images")
    if examples is None:
        examples = pick_examples(probabilities.numpy(), labels_np, class_a, class_b, n_examples)
    every = list(dict.fromkeys(examples.clear_a + examples.clear_b + examples.ambiguous_a))
    result = ClassComparison(
        class_a=class_a,
        class_b=class_b,
        examples=examples,
        images={i: np.asarray(images[i]) for i in every},
        probabilities={i: probabilities[i] for i in every},
        labels={i: int(labels_np[i]) for i in every},
        pair_chosen_by=chosen_by,
        confused_pair=pair,
        num_images=len(labels_np),
        split=split,
    )
    for name in names:
        acts = outputs[name]
        acts_a, acts_b = acts[examples.clear_a], acts[examples.clear_b]
        marks = pattern_categories(acts_a, acts_b, threshold=threshold)
        result.layers[name] = LayerComparison(
            layer=name,
            acts_a=acts_a,
            acts_b=acts_b,
            acts_ambiguous=acts[examples.ambiguous_a],
            a_only=marks.a_only,
            b_only=marks.b_only,
            separation=class_separation(acts, labels_np, class_a, class_b, layer=name, num_classes=num_classes),
            a_all_b_some=marks.a_all_b_some,
            b_all_a_some=marks.b_all_a_some,
        )
    return result
