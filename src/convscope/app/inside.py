"""Look-inside use cases: activations, filters, predictions, class comparison,
mistakes, top-k dataset examples, evaluation and the most confused class pair.

Each function takes a model (any ``nn.Module`` with a convscope spec), its data
and options, and returns a :class:`~convscope.app.base.Result` with its JSON,
lazily drawn figures and raw arrays. The CLI, the atlas and the explorer call the
same functions; nothing here reads or writes files or prints::

    from convscope.app import inside
    from convscope.data.catalog import split_for_model
    from convscope.spec import spec_of

    test = split_for_model(spec_of(model), "test")
    acts = inside.activations(model, test.images[7], ["Conv2D_1", "Dense_1"], source="test:7", label=7)
    acts.to_json()["layers"]["Conv2D_1"]["shape"]         # [32, 26, 26]
    acts.figures()["activations_test-7_Conv2D_1"]()       # a matplotlib Figure, drawn on demand
    pair = inside.most_confused_pair(model, test)          # 4 vs 9 for the shipped model
    comparison = inside.compare(model, test, pair.pair.a, pair.pair.b)
    top = inside.topk(model, test, k=9)                    # the last conv layer by default

Images are uint8 ``(H, W)`` (gray) or ``(H, W, 3)`` (RGB) — one picture per
:class:`InputImage`; splits are :class:`convscope.data.Split` objects (or anything
with ``images``, ``labels``, ``class_names``). Class names always come from the
model's spec; numbers that select classes accept names or indices
(:func:`class_index`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from convscope.app.base import Result
from convscope.progress import Progress


class InsideError(ValueError):
    """A request that cannot be answered for this model or data; the message says
    what is wrong and how to fix it."""


# -- small shared pieces ---------------------------------------------------------------


@dataclass(frozen=True)
class InputImage:
    """One picture to look at.

    Attributes:
        image: uint8 ``(H, W)`` or ``(H, W, 3)``, what the model sees.
        label: its true class, when known.
        source: ``"test:1302"``, a file path, … (titles, JSON, file names).
        original: the user's file before conversion (for figures), or ``None``.
    """

    image: np.ndarray
    label: int | None = None
    source: str = "image"
    original: np.ndarray | None = None


def as_input(value: Any, *, label: int | None = None, source: str | None = None) -> InputImage:
    """An :class:`InputImage` from one (an array, an :class:`InputImage`, or anything
    with ``image``/``label``/``source``/``original`` such as the CLI's image inputs)."""
    if isinstance(value, InputImage):
        return value if label is None and source is None else dataclasses.replace(
            value, label=value.label if label is None else label, source=value.source if source is None else source)
    if hasattr(value, "image"):
        return InputImage(np.asarray(value.image, dtype=np.uint8), value.label if label is None else label,
                          str(source or getattr(value, "source", "image")), getattr(value, "original", None))
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return InputImage(array.astype(np.uint8), label, source or "image", None)


def _short(text: str, limit: int = 80) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 20] + f"… ({len(text)} characters)"


def slug(text: str, limit: int = 80, *, path: bool = True) -> str:
    """A file-name part for ``text``: ``test:1270`` → ``test-1270``; a path → its
    stem (``path=False``: the whole text, e.g. a class name ``T-shirt/top`` →
    ``T-shirt_top``); other characters → ``_``; at most ``limit`` characters."""
    text = str(text)
    if re.match(r"^(test|train):\d+$", text):
        stem = text.replace(":", "-")
    else:
        stem = Path(text).stem if path and ("/" in text or "." in text) else text
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "image"
    return stem[:limit]


def unique_stems(sources: Sequence[str]) -> tuple[list[str], list[str]]:
    """File-name stems for several inputs, made unique: a repeated stem gets ``-2``,
    ``-3`` … in input order. Returns ``(stems, notes)``; each note names the inputs
    that shared a name and the stems they got."""
    stems: list[str] = []
    seen: dict[str, int] = {}
    groups: dict[str, list[tuple[str, str]]] = {}
    for source in sources:
        base = slug(source)
        count = seen.get(base.lower(), 0) + 1
        seen[base.lower()] = count
        stem = base if count == 1 else f"{base}-{count}"
        while stem.lower() in {s.lower() for s in stems}:
            count += 1
            stem = f"{base}-{count}"
        stems.append(stem)
        groups.setdefault(base.lower(), []).append((source, stem))
    notes = [
        "inputs share the file name '" + members[0][1] + "': " + ", ".join(f"{_short(src, 60)} → {stem}" for src, stem in members)
        for members in groups.values() if len(members) > 1
    ]
    return stems, notes


def class_index(model_or_names: nn.Module | Sequence[str], value: int | str) -> int:
    """A class given by name or index → its index.

    A text that equals a class name (exactly, then ignoring case) is that class;
    otherwise a whole number is an index. ``"4"`` is the digit 4 for MNIST models,
    ``"Sandal"`` class 5 of Fashion-MNIST.

    Raises:
        InsideError: no such class (the message lists the names).
    """
    names = _class_names_of(model_or_names)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        index = int(value)
    else:
        text = str(value).strip()
        exact = [i for i, name in enumerate(names) if name == text]
        folded = [i for i, name in enumerate(names) if name.lower() == text.lower()]
        if exact or len(folded) == 1:
            return (exact or folded)[0]
        if not re.fullmatch(r"[+-]?\d+", text):
            shown = ", ".join(names[:30]) + (f", … ({len(names)} classes)" if len(names) > 30 else "")
            raise InsideError(f"no class named {_short(text, 60)!r}; the classes are: {shown} (or give an index "
                              f"0..{len(names) - 1})")
        index = int(text)
    if not 0 <= index < len(names):
        raise InsideError(f"class index {index} is out of range: the model has {len(names)} classes (0..{len(names) - 1})")
    return index


def _class_names_of(model_or_names: nn.Module | Sequence[str]) -> tuple[str, ...]:
    if isinstance(model_or_names, nn.Module):
        from convscope.spec import spec_of

        return spec_of(model_or_names).class_names
    return tuple(str(n) for n in model_or_names)


def _model_label(model: nn.Module, label: str | None) -> str:
    if label:
        return label
    from convscope.spec import spec_of

    return spec_of(model).name


@contextlib.contextmanager
def _task(progress: Progress | None, label: str, total: float | None = None) -> Iterator[Callable[[int, int], None] | None]:
    """An engine-style ``callback(done, total)`` reporting to a task of ``progress``
    (raises :class:`~convscope.progress.Cancelled` once cancelled)."""
    if progress is None:
        yield None
        return
    with progress.task(label, total) as task:
        yield lambda done, total: task.update(done, total)


def _subset(split: Any, num_images: int | None) -> Any:
    """The first ``num_images`` images of a split (all when ``None``)."""
    if num_images is None or num_images >= len(split.labels):
        return split
    return dataclasses.replace(split, images=split.images[:num_images], labels=split.labels[:num_images])


def _split_name(split: Any) -> str:
    return str(getattr(split, "split", None) or "test")


def _png_image(image: np.ndarray, target: int = 112) -> Any:
    """An input picture enlarged (nearest) to about ``target`` pixels, as a PIL image."""
    from PIL import Image

    array = np.asarray(image, dtype=np.uint8)
    scale = max(1, round(target / max(array.shape[0], array.shape[1])))
    picture = Image.fromarray(array, "RGB" if array.ndim == 3 else "L")
    return picture.resize((array.shape[1] * scale, array.shape[0] * scale), Image.Resampling.NEAREST)


def _rounded(values: torch.Tensor | np.ndarray) -> list[float]:
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    return [round(float(v), 6) for v in array.reshape(-1)]


# -- activations ---------------------------------------------------------------------


@dataclass
class ActivationsResult(Result):
    """All maps of some layers for one image (reference §2).

    Attributes:
        model_label: the model's name for titles and JSON.
        image: the input.
        stem: file-name part of the input (``test-1270``).
        class_names: the model's class names.
        probabilities: ``(classes,)`` softmax.
        values: ``{layer: (C, H, W) or (F,)}`` activations.
        selected: ``{layer: (map, (row, col) or None)}`` for addresses with a map part.
        parameters: the drawing options.
    """

    model_label: str
    image: InputImage
    stem: str
    class_names: tuple[str, ...]
    probabilities: torch.Tensor
    values: dict[str, torch.Tensor]
    selected: dict[str, tuple[int, tuple[int, int] | None]]
    parameters: dict[str, Any]
    kind: str = "activations"

    def __post_init__(self) -> None:
        self.kind = f"activations_{self.stem}"

    @property
    def predicted(self) -> int:
        return int(self.probabilities.argmax())

    def caption(self) -> str:
        names = self.class_names
        label = f" (label {names[self.image.label]})" if self.image.label is not None else ""
        p = float(self.probabilities[self.predicted])
        return f"{_short(self.image.source, 40)}{label}\npredicted {names[self.predicted]} ({p:.1%})"

    def layer_stats(self, layer: str) -> dict[str, Any]:
        values = self.values[layer]
        flat = values.reshape(values.shape[0], -1) if values.ndim == 3 else values.reshape(-1, 1)
        stats = {
            "shape": list(values.shape),
            "max": float(values.max()),
            "mean": float(values.mean()),
            "fraction_positive": float((values > 0).float().mean()),
            "map_max": [round(float(v), 6) for v in flat.max(1).values],
            "map_mean": [round(float(v), 6) for v in flat.mean(1)],
        }
        if layer in self.selected:
            map_index, position = self.selected[layer]
            picked = values[map_index] if position is None else values[map_index][position]
            stats["selected"] = {"map": map_index, "position": None if position is None else list(position),
                                 "value": float(picked.max()) if position is None else float(picked),
                                 "max": float(values[map_index].max())}
        return stats

    def to_json(self) -> dict[str, Any]:
        names = self.class_names
        return {
            "image": self.image.source,
            "label": self.image.label,
            "label_name": None if self.image.label is None else names[self.image.label],
            "model": self.model_label,
            "predicted": self.predicted,
            "predicted_name": names[self.predicted],
            "probabilities": _rounded(self.probabilities),
            "class_names": list(names),
            "input_shape": list(np.shape(self.image.image)),
            "parameters": dict(self.parameters),
            "layers": {layer: self.layer_stats(layer) for layer in self.values},
            "input_image": f"input_{self.stem}.png",
        }

    def figure(self, layer: str) -> Figure:
        """The activation grid of ``layer`` with the input beside it."""
        from convscope.render.inside import MARK_SELECTED, activation_grid_figure

        values = self.values[layer]
        marks = []
        if layer in self.selected:
            map_index, position = self.selected[layer]
            mask = torch.zeros_like(values, dtype=torch.bool)
            if position is None:
                mask[map_index] = True
            else:
                mask[map_index][position] = True
            marks.append((mask.numpy(), MARK_SELECTED))
        p = self.parameters
        return activation_grid_figure(
            values, layer=layer, image=self.image.image, image_title=self.caption(), original=self.image.original,
            per_row=p.get("per_row"), cmap=p.get("cmap", "viridis"), scaling=p.get("scaling", "raw"),
            color_scale=p.get("color_scale", "shared"), input_cmap=p.get("input_cmap", "gray"), first=p.get("first"),
            marks=marks,
        )

    def figures(self) -> dict[str, Callable[[], Figure]]:
        return {f"activations_{self.stem}_{layer}": (lambda layer=layer: self.figure(layer)) for layer in self.values}

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"activations_{self.stem}_{layer}": values.numpy() for layer, values in self.values.items()}

    def pictures(self) -> dict[str, Any]:
        """``{stem: PIL image}``: the input as the model saw it, enlarged (written as PNG)."""
        return {f"input_{self.stem}": _png_image(self.image.image)}

    def summary(self) -> list[str]:
        names = self.class_names
        label = f", label {names[self.image.label]}" if self.image.label is not None else ""
        lines = [f"{_short(self.image.source)}: predicted {names[self.predicted]} "
                 f"({float(self.probabilities.max()):.1%}){label}"]
        for layer in self.values:
            info = self.layer_stats(layer)
            line = (f"  {layer:<14} shape {tuple(info['shape'])}, max {info['max']:.3f}, "
                    f"{100 * info['fraction_positive']:.0f}% units > 0")
            if "selected" in info:
                sel = info["selected"]
                where = f"map {sel['map']}" + (f" @{sel['position'][0]},{sel['position'][1]}" if sel["position"] else "")
                line += f"; {where}: {sel['value']:.4g}"
            lines.append(line)
        return lines


def _resolve_layers(model: nn.Module, layers: Sequence[str] | str | None, default: Callable[[nn.Module], list[str]],
                    everything: Callable[[nn.Module], list[str]]):
    """Layer texts → ``[(layer, map or None, position or None)]`` ('all' expands)."""
    from convscope.address import AddressError, resolve_address

    if layers is None:
        texts = default(model)
    elif isinstance(layers, str):
        texts = [layers]
    else:
        texts = list(layers)
    out: list[tuple[str, int | None, tuple[int, int] | None]] = []
    for text in texts:
        if str(text).strip().lower() == "all":
            out.extend((name, None, None) for name in everything(model))
            continue
        if len(str(text)) > 500:
            raise AddressError(f"layer address {_short(text, 60)!r} is too long to be a layer of this model")
        address = resolve_address(model, text)
        out.append((address.layer, address.map_index, address.position))
    if not out:
        raise InsideError("no layer given: name one, e.g. the first conv layer, or 'all'")
    unique: dict[str, tuple[str, int | None, tuple[int, int] | None]] = {}
    for entry in out:
        if entry[0] not in unique or entry[1] is not None:
            unique[entry[0]] = entry
    return list(unique.values())


def activations(
    model: nn.Module,
    image: Any,
    layers: Sequence[str] | str | None = None,
    *,
    label: int | None = None,
    source: str | None = None,
    per_row: int | None = None,
    cmap: str = "viridis",
    scaling: str = "raw",
    color_scale: str = "shared",
    first: int | None = None,
    input_cmap: str = "gray",
    model_label: str | None = None,
    progress: Progress | None = None,
) -> ActivationsResult:
    """Activation grids of ``layers`` for one image (one forward pass).

    Args:
        model: any model with a spec.
        image: an :class:`InputImage` (or the CLI's image input, or a uint8 array
            ``(H, W)`` / ``(H, W, 3)``).
        layers: layer addresses (``"Conv2D_1"``, ``"stages.0"``, ``"Conv2D_3:5@1,2"``:
            a map / unit part is outlined in the figure and its value reported) or
            ``"all"``; default: the first conv layer.
        label, source: override the image's label / source text.
        per_row, cmap, scaling, color_scale: grid options
            (:func:`convscope.render.inside.activation_grid_figure`).
        first: draw only the first N maps of each layer (the arrays and JSON keep all).
        input_cmap: colormap of a gray input (RGB is drawn as it is).
        model_label: the model's name in JSON (default: its spec's name).
        progress: reports the forward pass.

    Raises:
        AddressError: unknown layer or index out of range.
    """
    from convscope.address import PSEUDO_LAYERS
    from convscope.inside import layer_activations
    from convscope.layers import first_conv_layer, model_layers
    from convscope.spec import spec_of

    item = as_input(image, label=label, source=source)
    chosen = _resolve_layers(model, layers, lambda m: [first_conv_layer(m)],
                             lambda m: [layer.name for layer in model_layers(m)] + list(PSEUDO_LAYERS))
    names = [name for name, _, _ in chosen]
    outputs = layer_activations(model, item.image, names + ["probabilities"], batch_size=1)  # one pass: no progress
    spec = spec_of(model)
    return ActivationsResult(
        model_label=_model_label(model, model_label),
        image=item,
        stem=slug(item.source),
        class_names=spec.class_names,
        probabilities=outputs["probabilities"][0],
        values={name: outputs[name][0] for name in names},
        selected={name: (m, pos) for name, m, pos in chosen if m is not None},
        parameters={"layers": [str(n) + ("" if m is None else f":{m}" + ("" if p is None else f"@{p[0]},{p[1]}"))
                               for n, m, p in chosen],
                    "per_row": per_row, "cmap": cmap, "scaling": scaling, "color_scale": color_scale,
                    "first": first, "input_cmap": input_cmap},
    )


# -- filters -----------------------------------------------------------------------------


@dataclass
class FiltersResult(Result):
    """Raw kernels of conv layers.

    Attributes:
        model_label: the model's name.
        banks: ``{layer: FilterBank}``.
        parameters: ``cmap``, ``per_row``, ``color``.
    """

    model_label: str
    banks: dict[str, Any]
    parameters: dict[str, Any]
    kind: str = "filters"

    def to_json(self) -> dict[str, Any]:
        layers = {}
        for name, bank in self.banks.items():
            norms = bank.weights.flatten(2).norm(dim=2)  # (out, in)
            layers[name] = {
                "shape": list(bank.weights.shape),
                "min": float(bank.weights.min()),
                "max": float(bank.weights.max()),
                "color_limit": bank.limit,
                "drawn_in_colour": bool(bank.weights.shape[1] == 3 and self.parameters.get("color", True)),
                "kernel_l2_norm_per_output": _rounded(bank.weights.flatten(1).norm(dim=1)),
                "mean_kernel_l2_norm": float(norms.mean()),
                "bias": None if bank.bias is None else _rounded(bank.bias),
            }
        return {"model": self.model_label, "parameters": {"layers": list(self.banks), **self.parameters},
                "layers": layers}

    def figures(self) -> dict[str, Callable[[], Figure]]:
        from convscope.render.inside import kernel_grid_figure

        p = self.parameters
        return {f"filters_{name}": (lambda bank=bank: kernel_grid_figure(
            bank, cmap=p.get("cmap", "RdBu_r"), per_row=p.get("per_row") or 8, color=p.get("color", True)))
            for name, bank in self.banks.items()}

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"filters_{name}": bank.weights.numpy() for name, bank in self.banks.items()}

    def summary(self) -> list[str]:
        return [f"{name}: kernels {tuple(bank.weights.shape)}, weights {float(bank.weights.min()):.3f} .. "
                f"{float(bank.weights.max()):.3f}" + (" (drawn in colour)" if bank.weights.shape[1] == 3 else "")
                for name, bank in self.banks.items()]


def filters(
    model: nn.Module,
    layers: Sequence[str] | str | None = None,
    *,
    cmap: str = "RdBu_r",
    per_row: int | None = None,
    color: bool = True,
    model_label: str | None = None,
    progress: Progress | None = None,
) -> FiltersResult:
    """The kernels of conv layers (default: the first; ``"all"``: every convolution,
    see :func:`convscope.inside.conv_layers`). Kernels on RGB inputs are drawn in colour.

    Raises:
        AddressError: unknown layer, or a layer without exactly one convolution.
    """
    from convscope.inside import conv_filters, conv_layers

    def first(m: nn.Module) -> list[str]:
        convs = conv_layers(m)
        if not convs:
            raise InsideError("the model has no convolution, so it has no kernels to show")
        return convs[:1]

    chosen = _resolve_layers(model, layers, first, conv_layers)
    banks = {name: conv_filters(model, name) for name, _, _ in chosen}
    return FiltersResult(_model_label(model, model_label), banks,
                         {"cmap": cmap, "per_row": per_row, "color": color})


# -- predict -------------------------------------------------------------------------------


@dataclass
class PredictionsResult(Result):
    """Class probabilities of several images.

    Attributes:
        model_label: the model's name.
        inputs: the images.
        stems: their unique file-name parts.
        predictions: one :class:`convscope.inside.Prediction` per image.
        top: how many classes to list.
        notes: e.g. which inputs shared a file name.
        input_cmap: colormap of gray inputs.
    """

    model_label: str
    inputs: list[InputImage]
    stems: list[str]
    predictions: list[Any]
    top: int
    notes: list[str] = field(default_factory=list)
    input_cmap: str = "gray"
    kind: str = "predictions"

    def to_json(self) -> dict[str, Any]:
        rows = []
        for item, stem, prediction in zip(self.inputs, self.stems, self.predictions):
            names = prediction.class_names
            rows.append({"image": item.source, "label": item.label,
                         "label_name": None if item.label is None else names[item.label],
                         "figure": f"predict_{stem}.png", **prediction.to_dict(self.top)})
        return {"model": self.model_label, "parameters": {"top": self.top, "input_cmap": self.input_cmap},
                "notes": list(self.notes), "predictions": rows}

    def figures(self) -> dict[str, Callable[[], Figure]]:
        from convscope.render.inside import probability_figure

        return {f"predict_{stem}": (lambda item=item, prediction=prediction: probability_figure(
            prediction.probabilities, image=item.image, label=item.label, source=_short(item.source, 60),
            class_names=prediction.class_names, original=item.original, input_cmap=self.input_cmap))
            for item, stem, prediction in zip(self.inputs, self.stems, self.predictions)}

    def summary(self) -> list[str]:
        lines = []
        for item, prediction in zip(self.inputs, self.predictions):
            names = prediction.class_names
            tops = ", ".join(f"{names[c]} {p:.1%}" for c, p in prediction.top(self.top))
            label = f" (label {names[item.label]})" if item.label is not None else ""
            lines.append(f"{_short(item.source)}{label}: {tops}")
        return lines + [f"note: {note}" for note in self.notes]


def predict(
    model: nn.Module, images: Sequence[Any], *, top: int = 3, input_cmap: str = "gray", model_label: str | None = None,
    progress: Progress | None = None,
) -> PredictionsResult:
    """Class probabilities for ``images`` (a sequence of :class:`InputImage`, CLI
    image inputs or uint8 arrays). Two inputs with the same file name get distinct
    figure names (``x``, ``x-2``) and a note says so."""
    from convscope.inside import predict_images
    from convscope.spec import spec_of

    items = [as_input(image) for image in images]
    if not items:
        raise InsideError("no image given")
    predictions = predict_images(model, np.stack([item.image for item in items]), class_names=spec_of(model).class_names)
    stems, notes = unique_stems([item.source for item in items])
    return PredictionsResult(_model_label(model, model_label), items, stems, predictions, max(1, int(top)), notes,
                             input_cmap)


# -- compare --------------------------------------------------------------------------------


@dataclass
class ComparisonResult(Result):
    """Two classes compared inside the network (reference §3).

    Attributes:
        model_label: the model's name.
        comparison: the engine's :class:`convscope.inside.ClassComparison`.
        class_names: the model's class names.
        layers: the compared layers.
        given_order: image indices in the order the user gave them (or empty).
        parameters: the options.
        note: how the examples were chosen.
    """

    model_label: str
    comparison: Any
    class_names: tuple[str, ...]
    layers: list[str]
    given_order: list[int]
    parameters: dict[str, Any]
    note: str | None = None
    kind: str = "compare"

    def __post_init__(self) -> None:
        self.kind = self.base

    @property
    def base(self) -> str:
        """``compare_<A>_<B>`` (class names as file-name parts)."""
        return f"compare_{slug(self.a_name, 40, path=False)}_{slug(self.b_name, 40, path=False)}"

    @property
    def a_name(self) -> str:
        return self.class_names[self.comparison.class_a]

    @property
    def b_name(self) -> str:
        return self.class_names[self.comparison.class_b]

    #: A mark category with more positions than this in one layer is not outlined
    #: (hundreds of outlines hide the maps); the JSON lists every position.
    MAX_DRAWN_MARKS = 300

    def _categories(self, name: str) -> list[tuple[str, torch.Tensor | None, str]]:
        from convscope.render.inside import MARK_A, MARK_A_SOME, MARK_B, MARK_B_SOME

        comp = self.comparison.layers[name]
        return [("all A, no B", comp.a_only, MARK_A), ("all B, no A", comp.b_only, MARK_B),
                ("all A, some B", comp.a_all_b_some, MARK_A_SOME), ("all B, some A", comp.b_all_a_some, MARK_B_SOME)]

    def _marks(self) -> dict[str, list[tuple[np.ndarray, str]]]:
        return {name: [(mask.numpy(), colour) for _, mask, colour in self._categories(name)
                       if mask is not None and int(mask.sum()) <= self.MAX_DRAWN_MARKS] for name in self.layers}

    def _undrawn(self) -> str:
        left_out = [f"{name}: {what} ({int(mask.sum())})" for name in self.layers
                    for what, mask, _ in self._categories(name)
                    if mask is not None and int(mask.sum()) > self.MAX_DRAWN_MARKS]
        return ("\nnot outlined (too many positions; listed in the JSON): " + "; ".join(left_out)) if left_out else ""

    def _legend(self) -> list[tuple[str, str]]:
        from convscope.render.inside import MARK_A, MARK_A_SOME, MARK_B, MARK_B_SOME

        a, b = self.a_name, self.b_name
        return [(MARK_A, f"active in all '{a}' shown, in no '{b}'"), (MARK_B, f"active in all '{b}' shown, in no '{a}'"),
                (MARK_A_SOME, f"active in all '{a}' and in some (not all) '{b}'"),
                (MARK_B_SOME, f"active in all '{b}' and in some (not all) '{a}'")]

    def _row(self, index: int, role: str) -> dict:
        return self.comparison.example_row(index, role, self.class_names)

    def patterns_figure(self) -> Figure:
        from convscope.render.inside import class_rows_figure

        ex, a, b = self.comparison.examples, self.a_name, self.b_name
        chosen = "chosen with --images" if ex.chosen_by == "--images" else "clearest by the model"
        rows = [self._row(i, f"{a}:") for i in ex.clear_a] + [self._row(i, f"{b}:") for i in ex.clear_b]
        p = self.parameters
        return class_rows_figure(
            rows, self.layers, marks=self._marks(), cmap=p.get("cmap", "viridis"), legend=self._legend(),
            class_names=self.class_names, per_row=p.get("per_row"), input_cmap=p.get("input_cmap", "gray"),
            title=f"Class patterns: {len(ex.clear_a)} '{a}' vs {len(ex.clear_b)} '{b}' "
                  f"{self.comparison.split} images ({chosen}){self._undrawn()}",
        )

    def ambiguous_figure(self) -> Figure | None:
        from convscope.render.inside import class_rows_figure

        ex, a, b = self.comparison.examples, self.a_name, self.b_name
        p = self.parameters
        options = dict(marks=self._marks(), cmap=p.get("cmap", "viridis"), legend=self._legend(),
                       class_names=self.class_names, per_row=p.get("per_row"), input_cmap=p.get("input_cmap", "gray"))
        if self.given_order:
            rows = [self._row(i, f"{self.class_names[self.comparison.labels[i]]}:") for i in dict.fromkeys(self.given_order)]
            return class_rows_figure(rows, self.layers, **options,
                                     title=f"Your '{a}' and '{b}' images with their probability vectors (order as "
                                           f"given){self._undrawn()}")
        if not ex.ambiguous_a:
            return None
        rows = ([self._row(i, f"ambiguous {a}") for i in ex.ambiguous_a]
                + ([self._row(ex.clear_a[0], f"clear {a}")] if ex.clear_a else [])
                + [self._row(i, f"clear {b}") for i in ex.clear_b])
        return class_rows_figure(rows, self.layers, **options,
                                 title=f"Ambiguous '{a}'s (true {a}, highest P({b}) while still predicted {a}) "
                                       f"next to clear '{a}' and '{b}'{self._undrawn()}")

    def separation_figure(self) -> Figure:
        from convscope.render.inside import separation_figure

        p = self.parameters
        return separation_figure([self.comparison.layers[n].separation for n in self.layers],
                                 top=min(10, p.get("top", 20)), cmap=p.get("cmap", "viridis"),
                                 class_names=self.class_names, per_row=p.get("per_row"))

    def figures(self) -> dict[str, Callable[[], Figure]]:
        out: dict[str, Callable[[], Figure]] = {}
        ex = self.comparison.examples
        if ex.clear_a or ex.clear_b:
            out[f"{self.base}_patterns"] = self.patterns_figure
        if self.given_order or ex.ambiguous_a:
            out[f"{self.base}_ambiguous"] = self.ambiguous_figure  # type: ignore[assignment]
        out[f"{self.base}_separation"] = self.separation_figure
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for name in self.layers:
            sep = self.comparison.layers[name].separation
            out[f"{self.base}_{name}_cohens_d"] = sep.cohens_d.numpy()
            out[f"{self.base}_{name}_class_means"] = sep.class_means.numpy()
        return out

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model_label, "parameters": dict(self.parameters), "note": self.note,
                **self.comparison.to_dict(top=self.parameters.get("top", 20), class_names=self.class_names)}

    def summary(self) -> list[str]:
        ex, a, b, comp = self.comparison.examples, self.a_name, self.b_name, self.comparison
        split = comp.split
        lines = []
        if comp.pair_chosen_by == "most confused" and comp.confused_pair is not None:
            pair = comp.confused_pair
            lines.append(f"Most confused pair on {comp.num_images:,} {split} images: '{a}' vs '{b}' "
                         f"({pair.a_as_b if pair.a == comp.class_a else pair.b_as_a} '{a}'→'{b}', "
                         f"{pair.b_as_a if pair.a == comp.class_a else pair.a_as_b} '{b}'→'{a}')")
        kind = "Given" if ex.chosen_by == "--images" else "Clear"
        lines.append(f"{kind} {a}s: {', '.join(f'{split}:{i}' for i in ex.clear_a) or 'none'}; {kind.lower()} {b}s: "
                     f"{', '.join(f'{split}:{i}' for i in ex.clear_b) or 'none'}"
                     + (f"; ambiguous {a}s: {', '.join(f'{split}:{i}' for i in ex.ambiguous_a)}" if ex.ambiguous_a else ""))
        for i in ex.ambiguous_a:
            probs = comp.probabilities[i]
            lines.append(f"  {split}:{i}: P({a}) {float(probs[comp.class_a]):.1%}, P({b}) {float(probs[comp.class_b]):.1%}")
        data = comp.to_dict(top=3)
        for name in self.layers:
            layer = data["layers"][name]
            lines.append(f"{name}: {len(layer['active_in_all_a_and_no_b'])} positions only in {a}s, "
                         f"{len(layer['active_in_all_b_and_no_a'])} only in {b}s, "
                         f"{len(layer['active_in_all_a_and_some_b'])} in all {a}s and some {b}s; best separating: "
                         + ", ".join(f"{r['address']} (d={r['cohens_d']:+.2f})" for r in layer["separating"][:3]))
        if self.note:
            lines.append(f"note: {self.note}")
        return lines


def compare(
    model: nn.Module,
    split: Any,
    class_a: int | str | None = None,
    class_b: int | str | None = None,
    *,
    layers: Sequence[str] | str | None = None,
    n_examples: int = 3,
    images: Sequence[int] | None = None,
    top: int = 20,
    threshold: float = 0.0,
    cmap: str = "viridis",
    per_row: int | None = None,
    input_cmap: str = "gray",
    num_images: int | None = None,
    batch_size: int = 1000,
    model_label: str | None = None,
    progress: Progress | None = None,
    outputs: dict[str, torch.Tensor] | None = None,
) -> ComparisonResult:
    """Compare two classes inside the network: the maps of clear (and ambiguous)
    examples side by side with the positions that tell them apart marked, and the
    whole-split statistics (class means, Cohen's d).

    Args:
        model: any model with a spec.
        split: the images to use (a :class:`convscope.data.Split`).
        class_a, class_b: class names or indices; both ``None``: the model's most
            confused pair on ``split`` (:func:`most_confused_pair`).
        layers: layer addresses (default: the last conv layer and the hidden dense
            layers — ``Conv2D_3``, ``Dense_1`` for Model A).
        n_examples: clear examples per class and ambiguous A examples.
        images: use these image indices (true A or B) instead of choosing.
        top: rows of the Cohen's d table.
        threshold: "active" means ``> threshold``.
        cmap, per_row, input_cmap: drawing options.
        num_images: use only the first N images of ``split``.
        batch_size: images per forward pass.
        model_label: the model's name in JSON.
        progress: reports the pass over the images.
        outputs: the outputs of the compared layers and ``"logits"`` for every
            image used, already computed by a shared pass (the model is not run).

    Raises:
        InsideError: unknown or equal classes, an index out of range, a given image
            of another class, or too few images of a class.
        AddressError: unknown layer.
    """
    from convscope.inside import compare_classes
    from convscope.layers import compare_layers
    from convscope.spec import spec_of

    spec = spec_of(model)
    names = spec.class_names
    if (class_a is None) != (class_b is None):
        raise InsideError("give two classes, or none (then the model's most confused pair is compared)")
    a = None if class_a is None else class_index(names, class_a)
    b = None if class_b is None else class_index(names, class_b)
    if a is not None and a == b:
        raise InsideError(f"give two different classes (got '{names[a]}' twice)")
    chosen = _resolve_layers(model, layers, compare_layers, compare_layers)
    layer_names = [name for name, _, _ in chosen]
    data = _subset(split, num_images)
    split_name = _split_name(split)
    given: list[int] = []
    for index in images or ():
        index = int(index)
        if not 0 <= index < len(data.labels):
            raise InsideError(f"{split_name}:{index}: {len(data.labels):,} images are used, so the index must be "
                              f"0..{len(data.labels) - 1}")
        given.append(index)
    with _task(progress, f"activations of {len(data.labels):,} {split_name} images") as callback:
        try:
            comparison = compare_classes(model, data.images, data.labels, a, b, layers=layer_names,
                                         n_examples=n_examples, given=given or None, threshold=threshold,
                                         batch_size=batch_size, progress=callback, split=split_name, class_names=names,
                                         outputs=outputs)
        except ValueError as exc:
            if type(exc) is not ValueError:
                raise
            raise InsideError(str(exc)) from None
    note = None
    if not given:
        note = ("examples chosen from the data and the model: clear = correctly classified with the largest "
                "log-probability margin; ambiguous A = true A still predicted A with the highest P(B)")
        if spec.dataset == "mnist":
            note += (" (the reference's indices 1270/1302/1816/1249/1410/1858 do not all hold those digits in the "
                     "real MNIST test file)")
    return ComparisonResult(
        model_label=_model_label(model, model_label),
        comparison=comparison,
        class_names=names,
        layers=layer_names,
        given_order=given,
        parameters={"classes": [comparison.class_a, comparison.class_b],
                    "class_names": [names[comparison.class_a], names[comparison.class_b]],
                    "layers": layer_names, "examples": n_examples, "top": top, "threshold": threshold,
                    "images": None if not images else [f"{split_name}:{i}" for i in images], "cmap": cmap,
                    "per_row": per_row, "input_cmap": input_cmap, "num_images": len(data.labels),
                    "split": split_name, "dataset": str(getattr(split, "dataset", ""))},
        note=note,
    )


# -- evaluate, most confused pair, mistakes --------------------------------------------------


def _config_facts(model: nn.Module) -> dict[str, Any]:
    from convscope.spec import SpecError, spec_of

    config = getattr(model, "config", None)
    try:
        spec = spec_of(model)
    except SpecError:
        spec = None
    return {
        "architecture": getattr(config, "architecture", None) or getattr(model, "architecture", None) or type(model).__name__,
        "preprocessing": spec.preprocessing if spec is not None else getattr(config, "preprocessing", None),
        "recorded_test_accuracy": getattr(config, "test_accuracy", None),
        "weights_sha256": getattr(config, "weights_sha256", None),
        "trained_on": spec.dataset if spec is not None else getattr(config, "dataset", None),
    }


@dataclass
class EvaluationResult(Result):
    """A model scored on a whole split.

    Attributes:
        model_label: the model's name.
        evaluation: the engine's :class:`convscope.evaluation.Evaluation`.
        facts: architecture, preprocessing, recorded accuracy, weights hash.
        parameters: dataset, split, batch size, device.
        notes: e.g. that the data is not the model's own.
    """

    model_label: str
    evaluation: Any
    facts: dict[str, Any]
    parameters: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    kind: str = "evaluation"

    def to_json(self) -> dict[str, Any]:
        facts = {k: v for k, v in self.facts.items() if k != "trained_on"}
        return {"model": self.model_label, **facts, "parameters": dict(self.parameters), "notes": list(self.notes),
                **self.evaluation.to_dict()}

    def figures(self) -> dict[str, Callable[[], Figure]]:
        from convscope.render.confusion import confusion_figure

        return {"confusion": lambda: confusion_figure(self.evaluation)}

    def texts(self) -> dict[str, str]:
        """``{file name: text}``: ``misclassified.csv`` (index, true, predicted, confidence,
        P(true class))."""
        e = self.evaluation
        rows = ["index,true,predicted,confidence,true_class_probability"]
        for index in e.misclassified:
            probs = e.probabilities[index]
            rows.append(f"{index},{_csv(e.class_names[e.labels[index]])},{_csv(e.class_names[e.predictions[index]])},"
                        f"{probs.max():.6f},{probs[e.labels[index]]:.6f}")
        return {"misclassified.csv": "\n".join(rows) + "\n"}

    def summary(self) -> list[str]:
        e, f = self.evaluation, self.facts
        lines = [f"Model:    {self.model_label} ({f['architecture']}, {f['preprocessing']} inputs)",
                 f"Data:     {_short(str(e.dataset))} {e.split}, {e.num_images:,} images",
                 f"Accuracy: {100 * e.accuracy:.2f} %  ({e.num_errors:,} misclassified)",
                 "Per-class accuracy:"]
        counts = e.confusion.sum(axis=1)
        width = max(len(name) for name in e.class_names)
        for name, accuracy, count, correct in zip(e.class_names, e.per_class_accuracy, counts, e.confusion.diagonal()):
            shown = "   n/a" if count == 0 else f"{100 * accuracy:6.2f} %"
            lines.append(f"  {name:>{width}}  {shown}  ({correct:,} of {count:,})")
        top = e.top_confusions(3)
        if top:
            lines.append("Most frequent mistakes: " + ", ".join(
                f"{e.class_names[t]}→{e.class_names[p]} ×{n}" for t, p, n in top))
        if len(e.class_names) > 1:
            pair = e.most_confused_pair()
            lines.append(f"Most confused pair: {e.class_names[pair.a]} vs {e.class_names[pair.b]} "
                         f"({pair.a_as_b} + {pair.b_as_a} images)")
        return lines + [f"note: {note}" for note in self.notes]


def _csv(text: str) -> str:
    text = str(text)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def evaluate(
    model: nn.Module, split: Any, *, batch_size: int = 1000, model_label: str | None = None,
    progress: Progress | None = None, logits: torch.Tensor | None = None,
) -> EvaluationResult:
    """Score ``model`` on a whole split: accuracy, per-class accuracy, confusion
    matrix (class names from the split / spec, any class count), the most confused
    pair and every misclassified image (``logits``: the split's ``(N, classes)``
    logits, already computed by a shared pass)."""
    from convscope.device import model_device
    from convscope.evaluation import evaluate_model

    with _task(progress, f"evaluating on {_short(str(getattr(split, 'dataset', 'data')), 40)} "
                         f"{_split_name(split)}") as callback:
        evaluation = evaluate_model(model, split, batch_size=batch_size, progress=callback, logits=logits)
    facts = _config_facts(model)
    notes = []
    trained_on, data = facts.get("trained_on"), getattr(split, "dataset", None)
    if trained_on and data and str(trained_on) != str(data):
        notes.append(f"this model was trained on {_short(str(trained_on))}; scoring it on {_short(str(data))} measures "
                     "transfer, not skill")
    return EvaluationResult(
        _model_label(model, model_label), evaluation, facts,
        {"dataset": str(data), "split": _split_name(split), "batch_size": batch_size,
         "device": str(model_device(model))},
        notes,
    )


@dataclass
class ConfusedPairResult(Result):
    """The class pair a model confuses most on a split.

    Attributes:
        model_label: the model's name.
        pair: the winning :class:`convscope.evaluation.ConfusedPair` (``a < b``).
        ranking: the first few pairs, most confused first.
        evaluation: the evaluation it was read from.
    """

    model_label: str
    pair: Any
    ranking: list[Any]
    evaluation: Any
    kind: str = "confused_pair"

    @property
    def classes(self) -> tuple[int, int]:
        return self.pair.a, self.pair.b

    @property
    def names(self) -> tuple[str, str]:
        names = self.evaluation.class_names
        return names[self.pair.a], names[self.pair.b]

    def to_json(self) -> dict[str, Any]:
        names = self.evaluation.class_names
        return {"model": self.model_label, "dataset": self.evaluation.dataset, "split": self.evaluation.split,
                "num_images": self.evaluation.num_images, "accuracy": float(self.evaluation.accuracy),
                "rule": "largest C[a,b] + C[b,a] (rows = true class); ties: the larger probability mass on the other class",
                "pair": self.pair.to_dict(names), "ranking": [p.to_dict(names) for p in self.ranking]}

    def figures(self) -> dict[str, Callable[[], Figure]]:
        from convscope.render.confusion import confusion_figure

        return {"confusion": lambda: confusion_figure(self.evaluation, highlight=self.classes)}

    def summary(self) -> list[str]:
        a, b = self.names
        return [f"Most confused pair: '{a}' vs '{b}' ({self.pair.a_as_b} '{a}'→'{b}', {self.pair.b_as_a} '{b}'→'{a}' "
                f"of {self.evaluation.num_images:,} images)"]


def most_confused_pair(
    model: nn.Module, split: Any, *, evaluation: Any | None = None, top: int = 5, batch_size: int = 1000,
    model_label: str | None = None, progress: Progress | None = None,
) -> ConfusedPairResult:
    """The class pair ``model`` confuses most on ``split``: the largest symmetric
    off-diagonal count ``C[a,b] + C[b,a]`` of the confusion matrix, ties broken by
    the probability the model puts on the other class
    (:func:`convscope.evaluation.confused_pairs`). Pass an ``evaluation`` of the same
    split to skip the forward pass. 4 vs 9 for the shipped model on MNIST test."""
    from convscope.evaluation import evaluate_model

    if evaluation is None:
        with _task(progress, "classifying") as callback:
            evaluation = evaluate_model(model, split, batch_size=batch_size, progress=callback)
    if len(evaluation.class_names) < 2:
        raise InsideError("the model has a single class, so there is no pair to confuse")
    ranking = evaluation.confused_pairs(max(1, top))
    return ConfusedPairResult(_model_label(model, model_label), ranking[0], ranking, evaluation)


@dataclass
class MistakesResult(Result):
    """Misclassified images of a split and the confusion matrix.

    Attributes:
        model_label: the model's name.
        evaluation: the evaluation of the split.
        mistakes: the selected :class:`convscope.inside.Mistakes`.
        images: the split's uint8 images (for the gallery).
        parameters: pair, limit, order, per_row, input_cmap.
    """

    model_label: str
    evaluation: Any
    mistakes: Any
    images: np.ndarray
    parameters: dict[str, Any]
    kind: str = "mistakes"

    @property
    def split(self) -> str:
        return str(self.evaluation.split or "test")

    def to_json(self) -> dict[str, Any]:
        names = tuple(self.evaluation.class_names)
        pair = self.mistakes.pair
        data = {
            "model": self.model_label,
            "accuracy": self.evaluation.accuracy,
            "parameters": {**self.parameters, "pair": None if pair is None else list(pair),
                           "pair_names": None if pair is None else [names[pair[0]], names[pair[1]]]},
            "pair_count": int(self.evaluation.confusion[pair[0], pair[1]]) if pair else None,
            **self.mistakes.to_dict(split=self.split, class_names=names),
        }
        for row, true, predicted in zip(data["mistakes"], self.mistakes.labels, self.mistakes.predictions):
            row["true_class"], row["predicted_class"] = int(true), int(predicted)
        return data

    def figures(self) -> dict[str, Callable[[], Figure]]:
        from convscope.render.confusion import confusion_figure
        from convscope.render.inside import mistakes_figure

        p = self.parameters
        return {
            "mistakes": lambda: mistakes_figure(self.mistakes, self.images, per_row=p.get("per_row", 10), split=self.split,
                                                class_names=self.evaluation.class_names,
                                                input_cmap=p.get("input_cmap", "gray")),
            "confusion": lambda: confusion_figure(self.evaluation),
        }

    def summary(self) -> list[str]:
        names = self.evaluation.class_names
        pair = self.mistakes.pair
        what = f"true {names[pair[0]]} predicted {names[pair[1]]}" if pair else "all classes"
        count = int(self.evaluation.confusion[pair[0], pair[1]]) if pair else self.mistakes.total_errors
        lines = [f"accuracy {self.evaluation.accuracy:.2%}: {self.mistakes.total_errors} mistakes; {what}: {count}, "
                 f"showing {len(self.mistakes.indices)}"]
        for entry in self.mistakes.to_dict(self.split, tuple(names))["mistakes"][:5]:
            lines.append(f"  {entry['image']}: {entry['true']} → {entry['predicted']} ({entry['p_predicted']:.1%})")
        return lines


def mistakes(
    model: nn.Module,
    split: Any,
    *,
    pair: tuple[int | str, int | str] | None = None,
    limit: int = 100,
    order: str = "confidence",
    per_row: int = 10,
    input_cmap: str = "gray",
    evaluation: Any | None = None,
    batch_size: int = 1000,
    model_label: str | None = None,
    progress: Progress | None = None,
) -> MistakesResult:
    """The misclassified images of ``split`` (most confident first), optionally only
    those of one ``(true, predicted)`` pair given by class names or indices, and the
    confusion matrix. Pass an ``evaluation`` of the same split to skip the pass."""
    from convscope.evaluation import evaluate_model
    from convscope.inside import select_mistakes
    from convscope.spec import spec_of

    names = spec_of(model).class_names
    chosen_pair = None
    if pair is not None:
        chosen_pair = (class_index(names, pair[0]), class_index(names, pair[1]))
        if chosen_pair[0] == chosen_pair[1]:
            raise InsideError(f"a mistake needs two different classes (got '{names[chosen_pair[0]]}' twice)")
    if evaluation is None:
        with _task(progress, f"classifying {len(split.labels):,} {_split_name(split)} images") as callback:
            evaluation = evaluate_model(model, split, batch_size=batch_size, progress=callback)
    chosen = select_mistakes(evaluation, pair=chosen_pair, limit=limit, order=order)
    return MistakesResult(_model_label(model, model_label), evaluation, chosen, split.images,
                          {"limit": limit, "order": order, "per_row": per_row, "input_cmap": input_cmap})


# -- top-k --------------------------------------------------------------------------------------


@dataclass
class TopKResult(Result):
    """The dataset images that activate each map of a layer most.

    Attributes:
        model_label: the model's name.
        topk: the engine's :class:`convscope.inside.TopK`.
        images: the searched uint8 images (for the gallery).
        split: the split's name.
        maps: the maps drawn (``None``: all).
        parameters: the options.
    """

    model_label: str
    topk: Any
    images: np.ndarray
    split: str
    maps: list[int] | None
    parameters: dict[str, Any]
    kind: str = "topk"

    def __post_init__(self) -> None:
        self.kind = f"topk_{self.topk.layer}"

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model_label,
                "parameters": {"layer": self.topk.layer, "k": self.topk.k, "split": self.split, "maps_drawn": self.maps,
                               **self.parameters},
                **self.topk.to_dict()}

    def figures(self) -> dict[str, Callable[[], Figure]]:
        from convscope.render.inside import topk_gallery_figure

        fields = self.topk.fields
        note = None
        if fields is not None and fields.method == "gradient":
            note = "measured by input gradients"
        return {f"topk_{self.topk.layer}": lambda: topk_gallery_figure(
            self.topk, self.images, maps=self.maps, per_row=self.parameters.get("per_row", 8), split=self.split,
            input_cmap=self.parameters.get("input_cmap", "gray"), field_note=note)}

    def arrays(self) -> dict[str, np.ndarray]:
        layer = self.topk.layer
        return {f"topk_{layer}_indices": self.topk.indices.numpy(), f"topk_{layer}_values": self.topk.values.numpy()}

    def summary(self) -> list[str]:
        t = self.topk
        never = int((t.values[:, 0] <= 0).sum())
        lines = [f"{t.layer}: {t.values.shape[0]} maps ranked over {t.num_images:,} {self.split} images; "
                 f"{never} maps never activate (> 0)"]
        if t.fields is not None:
            lines.append(f"receptive fields: {t.fields.method} — {t.fields.note}")
        return lines


def parse_maps(text: str | None, count: int) -> list[int] | None:
    """``"0-15,120"`` → ``[0, …, 15, 120]`` for a layer of ``count`` maps (``None`` → ``None``).

    Raises:
        InsideError: unreadable text or an index out of range.
    """
    if text is None:
        return None
    chosen: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        match = re.match(r"^(\d+)(?:-(\d+))?$", part)
        if not match:
            raise InsideError(f"cannot read maps {_short(text, 60)!r}: use e.g. 0-15,120")
        low, high = int(match[1]), int(match[2] or match[1])
        if low > high or high >= count:
            raise InsideError(f"maps {_short(part, 40)}: the layer has {count} maps, so use indices 0..{count - 1}")
        chosen.extend(range(low, high + 1))
    return list(dict.fromkeys(chosen))


def topk(
    model: nn.Module,
    split: Any,
    layer: str | None = None,
    *,
    k: int = 9,
    maps: Sequence[int] | str | None = None,
    per_row: int = 8,
    batch_size: int = 1000,
    num_images: int | None = None,
    input_cmap: str = "gray",
    model_label: str | None = None,
    progress: Progress | None = None,
) -> TopKResult:
    """For every map of ``layer`` (default: the last conv layer), the ``k`` images
    of ``split`` with the largest maximal activation, with the receptive field of
    the maximal unit (exact geometry, or measured input-gradient support for graphs
    whose geometry cannot be traced — said in the JSON and the summary).

    Args:
        maps: maps to draw (indices or text such as ``"0-15,120"``); the JSON and the
            arrays always cover all maps.

    Raises:
        AddressError: unknown layer; InsideError: maps out of range.
    """
    from convscope.address import layer_output_shapes, resolve_address
    from convscope.inside import topk_examples
    from convscope.layers import last_conv_layer

    name = resolve_address(model, layer if layer is not None else last_conv_layer(model)).layer
    count = layer_output_shapes(model)[name][0]
    chosen_maps = parse_maps(maps, count) if isinstance(maps, str) or maps is None else list(parse_maps(
        ",".join(str(int(m)) for m in maps), count) or [])
    data = _subset(split, num_images)
    split_name = _split_name(split)
    with _task(progress, f"ranking {name} maps over {len(data.labels):,} {split_name} images") as callback:
        result = topk_examples(model, data.images, name, k=k, batch_size=batch_size, progress=callback)
    return TopKResult(_model_label(model, model_label), result, data.images, split_name, chosen_maps,
                      {"per_row": per_row, "input_cmap": input_cmap, "num_images": len(data.labels)})


__all__ = [
    "ActivationsResult", "ComparisonResult", "ConfusedPairResult", "EvaluationResult", "FiltersResult", "InputImage",
    "InsideError", "MistakesResult", "PredictionsResult", "TopKResult", "activations", "as_input", "class_index",
    "compare", "evaluate", "filters", "most_confused_pair", "mistakes", "parse_maps", "predict", "slug", "topk",
    "unique_stems",
]
