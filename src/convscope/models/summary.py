"""Keras-style model summary: layer name, type, output shape, parameter count.

A model imported from Keras (its config's ``source["keras_layers"]``, written by
:func:`convscope.models.loading.load_any` and kept by ``convscope import``) is
summarised with Keras' own rows: Keras layer names and classes, and parameter
counts as Keras counts them (BatchNormalization's moving statistics included, as
non-trainable); output shapes stay channels first like everywhere in convscope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from convscope.address import layer_output_shapes


@dataclass(frozen=True)
class LayerRow:
    """One row of the summary. ``output_shape`` is per sample, PyTorch order ``(C, H, W)``."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int


@dataclass(frozen=True)
class SummaryTable:
    """Everything a summary shows.

    Attributes:
        title: the model's name (Keras' model name for an imported Keras model).
        rows: one row per layer.
        total, trainable: parameter counts (``total - trainable`` = non-trainable).
        keras: the rows are Keras' layers (names, classes, Keras' parameter counts).
        footnotes: lines printed under the table.
    """

    title: str
    rows: list[LayerRow]
    total: int
    trainable: int
    keras: bool
    footnotes: tuple[str, ...] = ()


def _kind(module: nn.Module) -> str:
    inner = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if isinstance(module, (nn.Conv2d, nn.Linear)) or not inner:
        return type(module).__name__
    return type(inner[0]).__name__ + ("+ReLU" if any(isinstance(m, nn.ReLU) for m in module.modules()) else "")


def summary_rows(model: nn.Module) -> list[LayerRow]:
    """One :class:`LayerRow` per layer (module names and PyTorch parameter counts): the
    top-level layers; a container the forward pass never calls itself (a
    ``ModuleDict``/``ModuleList``, or a module used only through its members) is
    replaced by its members, recursively. Parameters held directly by the model
    (not by a layer) get a row of their own."""
    shapes = layer_output_shapes(model)
    rows: list[LayerRow] = []

    def add(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if full in shapes:
                rows.append(LayerRow(full, _kind(child), shapes[full], sum(p.numel() for p in child.parameters())))
            else:
                add(full + ".", child)

    add("", model)
    direct = sum(p.numel() for p in model.parameters(recurse=False))
    if direct:
        rows.append(LayerRow("(model parameters)", "Parameter", (), direct))
    return rows


def _keras_source(model: nn.Module) -> dict[str, Any] | None:
    source = getattr(getattr(model, "config", None), "source", None)
    if isinstance(source, dict) and source.get("kind") == "keras" and isinstance(source.get("keras_layers"), list):
        return source
    return None


def _keras_count(model: nn.Module) -> int:
    """What Keras counts for this module: parameters plus BatchNorm's moving mean and variance."""
    buffers = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return sum(p.numel() for p in model.parameters()) + buffers


def keras_rows(model: nn.Module) -> list[LayerRow] | None:
    """Keras' summary rows of a model imported from Keras, or ``None`` (not imported from
    Keras, or a recorded table that is malformed or whose counts do not add up to the
    model's own tensors — then the module rows are the truth)."""
    source = _keras_source(model)
    if source is None:
        return None
    try:
        rows = [
            LayerRow(str(entry["name"]), str(entry["class"]), tuple(int(v) for v in entry["output_shape"]),
                     int(entry["params"]))
            for entry in source["keras_layers"]
        ]
    except (KeyError, TypeError, ValueError):
        return None
    if not rows or sum(row.params for row in rows) != _keras_count(model):
        return None
    return rows


def summary_table(model: nn.Module) -> SummaryTable:
    """The rows and totals of :func:`summary` (Keras' rows for an imported Keras model)."""
    from convscope.spec import SPEC_ATTRIBUTE

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rows = keras_rows(model)
    if rows is not None:
        source = _keras_source(model) or {}
        version = f", Keras {source['keras_version']}" if source.get("keras_version") else ""
        notes = [f"Imported from Keras ({source.get('format', '?')}{version}): layer names and parameter counts as "
                 "in Keras' summary; output shapes channels first."]
        notes += [f"{entry['name']}: {entry['note']}" for entry in source["keras_layers"] if entry.get("note")]
        title = str(source.get("model_name") or getattr(getattr(model, SPEC_ATTRIBUTE, None), "name", "model"))
        return SummaryTable(title, rows, sum(row.params for row in rows), trainable, True, tuple(notes))
    spec = getattr(model, SPEC_ATTRIBUTE, None)
    title = getattr(model, "architecture", None) or getattr(spec, "name", None) or type(model).__name__
    rows = summary_rows(model)
    return SummaryTable(str(title), rows, sum(p.numel() for p in model.parameters()), trainable, False)


def summary(model: nn.Module) -> str:
    """The summary as text, with totals; e.g. Model A totals 208,982 parameters."""
    table = summary_table(model)
    labels = [f"{row.name} ({row.kind})" for row in table.rows]
    shapes = ["(None, " + ", ".join(str(s) for s in row.output_shape) + ")" for row in table.rows]
    name_width = max([30] + [len(label) + 2 for label in labels])
    shape_width = max([22] + [len(shape) + 2 for shape in shapes])
    head = f"{'Layer (type)':<{name_width}}{'Output Shape':<{shape_width}}{'Param #':>10}"
    line = "=" * len(head)
    out = [f'Model: "{table.title}"', line, head, line]
    for label, shape, row in zip(labels, shapes, table.rows):
        out.append(f"{label:<{name_width}}{shape:<{shape_width}}{row.params:>10,}")
    out += [
        line,
        f"Total params: {table.total:,}",
        f"Trainable params: {table.trainable:,}",
        f"Non-trainable params: {table.total - table.trainable:,}",
        "_" * len(head),
    ]
    out += list(table.footnotes)
    return "\n".join(out)
