"""Raw convolution kernels of a layer (engine: returns tensors).

Draw with :func:`convscope.render.inside.kernel_grid_figure`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convscope.address import AddressError, find_module, layer_names, parse_address


@dataclass(frozen=True)
class FilterBank:
    """The kernels of one convolution.

    Attributes:
        layer: the layer name the user gave (e.g. ``"Conv2D_2"``).
        weights: ``(out, in, kh, kw)`` float32 CPU copy of the kernels.
        bias: ``(out,)`` float32 or ``None``.
    """

    layer: str
    weights: torch.Tensor
    bias: torch.Tensor | None

    @property
    def limit(self) -> float:
        """Largest absolute weight: the symmetric colour scale is ``[-limit, limit]``."""
        return float(self.weights.abs().max()) if self.weights.numel() else 0.0


def conv_layers(model: nn.Module) -> list[str]:
    """Addressable names of the model's convolutions, in forward order: each conv
    layer of :func:`convscope.layers.model_layers` that holds exactly one
    ``nn.Conv2d`` (``Conv2D_1`` … for Model A), else the dotted names of the
    convolutions inside it (``stages.0.body.0``, ``stages.0.conv2`` in a residual
    block). Without a spec (no forward pass possible): the modules in
    registration order."""
    from convscope.layers import model_layers
    from convscope.spec import SpecError

    modules = dict(model.named_modules())
    try:
        layers = [layer.name for layer in model_layers(model)]
    except (SpecError, RuntimeError):
        layers = [name for name, _ in model.named_children()]
    names: list[str] = []
    for name in layers:
        module = modules[name]
        convs = [sub for sub, m in module.named_modules() if isinstance(m, nn.Conv2d)]
        if len(convs) == 1:
            names.append(name)
        else:
            names.extend(f"{name}.{sub}" for sub in convs)
    return names


def conv_filters(model: nn.Module, layer: str) -> FilterBank:
    """The kernels of ``layer`` (a ``nn.Conv2d`` or a block holding exactly one).

    ``weights`` is ``(out, in, kh, kw)``: ``in`` = 3 for the first conv of an RGB
    model (:func:`convscope.render.inside.kernel_grid_figure` draws those in colour).

    Raises:
        AddressError: unknown layer, or a layer without a convolution (lists the conv layers).
    """
    name = parse_address(layer).layer
    module = find_module(model, name)
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if len(convs) != 1:
        valid = ", ".join(conv_layers(model)) or "none"
        what = "no convolution" if not convs else f"{len(convs)} convolutions"
        raise AddressError(f"{name} has {what}; layers with kernels: {valid} (all layers: {', '.join(layer_names(model))})")
    conv = convs[0]
    weights = conv.weight.detach().float().cpu().clone()
    bias = conv.bias.detach().float().cpu().clone() if conv.bias is not None else None
    return FilterBank(layer=name, weights=weights, bias=bias)
