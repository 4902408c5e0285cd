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
from convscope.spec import SpecError

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


def layer_kinds(model: nn.Module) -> dict[str, str]:
    """``{name: kind}`` for every module the forward pass calls, nested ones included
    (kinds as in :class:`LayerInfo`), in definition order."""
    shapes = layer_output_shapes(model)
    return {name: _kind(module, tuple(shapes[name])) for name, module in model.named_modules()
            if name and name in shapes and name not in PSEUDO_LAYERS}


def conv_layers(model: nn.Module) -> list[str]:
    """The model's convolutions, addressable, in forward order: what OIPs visualise
    and whose kernels ``filters`` draws.

    Each layer of :func:`model_layers` that holds exactly one ``nn.Conv2d`` gives its
    own name (``Conv2D_1`` … ``Conv2D_3`` for Model A: the post-ReLU blocks); a layer
    holding several gives the dotted names of its convolutions (``stages.0.body.0``,
    ``stages.0.conv2`` in a residual block). Only outputs with maps ``(C, H, W)``
    count. Without a spec (no forward pass possible): the top-level modules in
    registration order, unchecked.
    """
    modules = dict(model.named_modules())
    try:
        shapes: dict | None = layer_output_shapes(model)
        layers = [layer.name for layer in model_layers(model)]
    except (SpecError, RuntimeError):
        shapes, layers = None, [name for name, _ in model.named_children()]
    names: list[str] = []
    for name in layers:
        convs = [sub for sub, m in modules[name].named_modules() if isinstance(m, nn.Conv2d)]
        found = [name] if len(convs) == 1 else [f"{name}.{sub}" for sub in convs]
        names.extend(n for n in found if shapes is None or len(shapes.get(n, ())) == 3)
    return names


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


def atlas_layers(model: nn.Module) -> list[str]:
    """The layers that get a section in the atlas: the convolutions
    (:func:`conv_layers`) and the hidden dense layers (every dense layer but the one
    that gives the logits). ``Conv2D_1 … Conv2D_3, Dense_1`` for Model A."""
    shapes = layer_output_shapes(model)
    kinds = layer_kinds(model)
    top = {name for name, _ in model.named_children()}
    modules = dict(model.named_modules())
    if isinstance(model, nn.Sequential):
        dense = [n for n, k in kinds.items() if k == "dense" and n in top]
    else:  # leaf Linear modules only, not their containers
        dense = [n for n, k in kinds.items() if k == "dense" and isinstance(modules[n], nn.Linear)]
    logits = shapes.get("logits")
    hidden = [n for n in dense if shapes[n] != logits][: max(0, len(dense) - 1)]
    return conv_layers(model) + hidden


__all__ = [
    "LayerInfo", "atlas_layers", "compare_layers", "conv_layers", "first_conv_layer", "last_conv_layer", "layer_kinds",
    "model_layers",
]
