"""Which layers of any model the look-inside tools offer, and sensible defaults.

A *layer* here is a module the forward pass calls, found from the top: a top-level
child that is called is a layer; a container that is never called itself
(``nn.ModuleList``, ``nn.ModuleDict``) is replaced by its members, recursively.
For Model A that is ``Conv2D_1 … Dense_2``; for a residual net ``stem``,
``stages.0``, ``stages.1``, …; for a net with a ``ModuleDict`` of heads
``heads.hidden``, ``heads.out``. Layers are listed in the order the forward pass
first finishes them.

Example::

    from convscope.layers import model_layers, first_conv_layer
    [(l.name, l.kind, l.shape) for l in model_layers(model)]
    # [("Conv2D_1", "conv", (32, 26, 26)), ("Max_Pool_1", "pool", (32, 13, 13)), ...]
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from convscope.address import PSEUDO_LAYERS, layer_output_shapes

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass(frozen=True)
class LayerInfo:
    """One layer of a model.

    Attributes:
        name: the layer's address (dotted for nested modules).
        kind: ``"conv"`` (holds a convolution, spatial output), ``"pool"``,
            ``"dense"`` (holds a ``nn.Linear``, vector output) or ``"other"``.
        shape: per-sample output shape, ``(C, H, W)`` or ``(F,)``.
    """

    name: str
    kind: str
    shape: tuple[int, ...]

    @property
    def spatial(self) -> bool:
        return len(self.shape) == 3


def _kind(module: nn.Module, shape: tuple[int, ...]) -> str:
    parts = list(module.modules())
    if len(shape) == 3 and any(isinstance(m, nn.Conv2d) for m in parts):
        return "conv"
    if len(shape) == 3 and any(isinstance(m, _POOLS) for m in parts):
        return "pool"
    if len(shape) == 1 and any(isinstance(m, nn.Linear) for m in parts):
        return "dense"
    return "other"


def model_layers(model: nn.Module) -> list[LayerInfo]:
    """The model's layers (see the module docstring), in forward order, with kind and shape."""
    shapes = layer_output_shapes(model)
    order = {name: i for i, name in enumerate(shapes)}
    found: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}{child_name}"
            if name in shapes:
                found.append((name, child))
            else:
                visit(f"{name}.", child)

    visit("", model)
    found.sort(key=lambda item: order[item[0]])
    return [LayerInfo(name, _kind(module, tuple(shapes[name])), tuple(shapes[name])) for name, module in found
            if name not in PSEUDO_LAYERS]


def conv_layer_names(model: nn.Module) -> list[str]:
    """Layers of kind ``"conv"`` (see :func:`model_layers`)."""
    return [layer.name for layer in model_layers(model) if layer.kind == "conv"]


def first_conv_layer(model: nn.Module) -> str:
    """The first conv layer (else the first spatial layer, else the first layer)."""
    layers = model_layers(model)
    for wanted in (lambda l: l.kind == "conv", lambda l: l.spatial, lambda l: True):
        for layer in layers:
            if wanted(layer):
                return layer.name
    return "logits"


def last_conv_layer(model: nn.Module) -> str:
    """The last conv layer (else the last spatial layer, else the first layer)."""
    layers = model_layers(model)
    for wanted in (lambda l: l.kind == "conv", lambda l: l.spatial, lambda l: True):
        for layer in reversed(layers):
            if wanted(layer):
                return layer.name
    return "logits"


def compare_layers(model: nn.Module) -> list[str]:
    """Default layers of a class comparison: the last conv layer and the hidden
    dense layers (every dense layer but the output). ``["Conv2D_3", "Dense_1"]``
    for Model A."""
    layers = model_layers(model)
    dense = [layer.name for layer in layers if layer.kind == "dense"]
    chosen = [last_conv_layer(model)] + dense[:-1]
    return list(dict.fromkeys(chosen))


__all__ = ["LayerInfo", "compare_layers", "conv_layer_names", "first_conv_layer", "last_conv_layer", "model_layers"]
