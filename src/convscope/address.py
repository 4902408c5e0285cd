"""Layer addresses checked against a model: :func:`resolve_address` and
:func:`layer_output_shapes` (one forward pass through the one probe).

The syntax itself — :func:`parse_address`, :class:`LayerAddress`, module lookup —
lives in :mod:`convscope.naming` (which the probe uses) and is re-exported here, so
``from convscope.address import ...`` gives the whole address API without an import
cycle (naming ← probe ← address).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from convscope.naming import (  # noqa: F401 - re-exported: the address API in one place
    PSEUDO_LAYERS, AddressError, LayerAddress, _name_list, canonical_layer, find_module, layer_names, parse_address,
)
from convscope.probe import reached_outputs
from convscope.spec import spec_of


def resolve_address(
    model: nn.Module, address: str | LayerAddress, input_shape: tuple[int, ...] | None = None
) -> LayerAddress:
    """Parse ``address`` and check it against ``model``.

    Args:
        model: the network.
        address: text or a parsed address.
        input_shape: ``(C, H, W)`` of one input; defaults to ``model.input_shape``
            or ``(1, 28, 28)``.

    Returns:
        The parsed, validated address with an alias replaced by the layer it names
        (negative indices are not allowed).

    Raises:
        AddressError: unknown layer (lists valid names), map index out of range,
            or unit position outside the map (both give the valid range).
    """
    parsed = parse_address(address)
    layer = canonical_layer(model, parsed.layer)
    if layer not in PSEUDO_LAYERS:
        find_module(model, layer)
    parsed = LayerAddress(layer, parsed.map_index, parsed.position)
    if parsed.map_index is None:
        return parsed
    shapes = layer_output_shapes(model, input_shape)
    if parsed.layer not in shapes:
        raise AddressError(
            f"{parsed.layer} is never called by the model's forward pass, so it has no output to address "
            "(a container such as a ModuleDict only holds other layers: address one of them)"
        )
    shape = shapes[parsed.layer]
    n_maps = shape[0]
    if not 0 <= parsed.map_index < n_maps:
        raise AddressError(
            f"{parsed.layer} has {n_maps} maps, so the map index must be 0..{n_maps - 1}; got {parsed.map_index}"
        )
    if parsed.position is not None:
        if len(shape) != 3:
            raise AddressError(
                f"{parsed.layer} has no spatial positions (output shape {tuple(shape)}); "
                f"address a node as '{parsed.layer}:{parsed.map_index}'"
            )
        height, width = shape[1], shape[2]
        row, col = parsed.position
        if not (0 <= row < height and 0 <= col < width):
            raise AddressError(
                f"{parsed.layer} maps are {height}x{width}, so the unit must be @0..{height - 1},0..{width - 1}; "
                f"got @{row},{col}"
            )
    return parsed


_SHAPE_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def layer_output_shapes(
    model: nn.Module, input_shape: tuple[int, ...] | None = None
) -> dict[str, tuple[int, ...]]:
    """Per-sample output shape of every module the forward pass calls, and of the
    pseudo-layers (containers that are never called have no entry).

    Runs one forward pass on zeros (no gradients), cached per model and input shape.
    Returns e.g. ``{"Conv2D_1": (32, 26, 26), ..., "logits": (10,), "probabilities": (10,)}``.
    ``input_shape`` defaults to the model spec's ``(C, H, W)``.
    """
    shape = tuple(input_shape) if input_shape is not None else spec_of(model).input_shape
    structure = tuple((name, type(module).__name__) for name, module in model.named_modules())
    key = (shape, structure)
    cached = _SHAPE_CACHE.get(model)
    if cached is not None and cached.get("key") == key:
        return dict(cached["shapes"])
    try:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    was_training = model.training
    model.eval()
    try:
        outputs = reached_outputs(model, torch.zeros((1, *shape), device=device, dtype=dtype))
    finally:
        model.train(was_training)
    shapes = {name: tuple(out.shape[1:]) for name, out in outputs.items()}
    try:
        _SHAPE_CACHE[model] = {"key": key, "shapes": shapes}
    except TypeError:  # a module that cannot be weakly referenced: no cache
        pass
    return dict(shapes)


__all__ = [
    "AddressError", "LayerAddress", "PSEUDO_LAYERS", "canonical_layer", "find_module", "layer_names",
    "layer_output_shapes", "parse_address", "resolve_address",
]
