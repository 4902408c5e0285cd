"""Keras-style model summary: layer name, type, output shape, parameter count."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from convscope.address import layer_output_shapes


@dataclass(frozen=True)
class LayerRow:
    """One row of the summary. ``output_shape`` is per sample, PyTorch order ``(C, H, W)``."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int


def _kind(module: nn.Module) -> str:
    inner = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if isinstance(module, (nn.Conv2d, nn.Linear)) or not inner:
        return type(module).__name__
    return type(inner[0]).__name__ + ("+ReLU" if any(isinstance(m, nn.ReLU) for m in module.modules()) else "")


def summary_rows(model: nn.Module) -> list[LayerRow]:
    """One :class:`LayerRow` per top-level layer."""
    shapes = layer_output_shapes(model)
    return [
        LayerRow(name, _kind(module), shapes[name], sum(p.numel() for p in module.parameters()))
        for name, module in model.named_children()
    ]


def summary(model: nn.Module) -> str:
    """The summary as text, with totals; e.g. Model A totals 208,982 parameters."""
    rows = summary_rows(model)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    title = getattr(model, "architecture", type(model).__name__)
    head = f"{'Layer (type)':<30}{'Output Shape':<22}{'Param #':>10}"
    line = "=" * len(head)
    out = [f'Model: "{title}"', line, head, line]
    for row in rows:
        shape = "(None, " + ", ".join(str(s) for s in row.output_shape) + ")"
        out.append(f"{row.name + ' (' + row.kind + ')':<30}{shape:<22}{row.params:>10,}")
    out += [
        line,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        "_" * len(head),
    ]
    return "\n".join(out)
