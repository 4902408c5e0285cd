"""Receptive fields: which input pixels can influence one unit of a conv/pool layer.

Computed from the kernel sizes, strides, paddings and dilations of the
``nn.Conv2d`` / pooling modules met on the way from the input to the layer (in the
model's child order, which is the forward order of the convscope models).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from convscope.address import AddressError, find_module


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


@dataclass(frozen=True)
class FieldGeometry:
    """Per axis (rows, cols): receptive field size, jump (input pixels between
    neighbouring units) and the input coordinate of unit 0's field start."""

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[int, int]

    def rectangle(self, row: int, col: int, height: int = 28, width: int = 28) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` in input pixels (bottom/right exclusive), clipped to the image."""
        top = self.start[0] + row * self.jump[0]
        left = self.start[1] + col * self.jump[1]
        bottom, right = top + self.size[0], left + self.size[1]
        return max(0, top), max(0, left), min(height, bottom), min(width, right)


def _spatial_modules(module: nn.Module) -> list[nn.Module]:
    kinds = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
    if isinstance(module, kinds):
        return [module]
    return [m for m in module.modules() if isinstance(m, kinds)]


def field_geometry(model: nn.Module, layer: str) -> FieldGeometry | None:
    """Receptive-field geometry of the units of ``layer``.

    Returns ``None`` when the layer has no spatial positions (after ``Flatten``:
    every unit sees the whole image).

    Raises:
        AddressError: unknown layer.
    """
    find_module(model, layer)
    size, jump, start = [1, 1], [1, 1], [0.0, 0.0]
    top = layer.split(".")[0]
    for name, child in model.named_children():
        if isinstance(child, (nn.Flatten, nn.Linear)):
            return None
        modules = _spatial_modules(child)
        if name == top and "." in layer:
            target = find_module(model, layer)
            # Only the modules up to and including the addressed submodule.
            inside = list(child.modules())
            stop = inside.index(target) if target in inside else len(inside) - 1
            allowed = set(map(id, inside[: stop + 1])) | set(map(id, target.modules()))
            modules = [m for m in modules if id(m) in allowed]
        for module in modules:
            kernel = _pair(module.kernel_size)
            stride = _pair(module.stride if module.stride is not None else module.kernel_size)
            padding = _pair(module.padding) if not isinstance(module.padding, str) else (0, 0)
            dilation = _pair(getattr(module, "dilation", 1))
            if isinstance(module.padding, str) and module.padding == "same":
                padding = tuple((d * (k - 1)) // 2 for k, d in zip(kernel, dilation))
            for axis in range(2):
                effective = dilation[axis] * (kernel[axis] - 1) + 1
                start[axis] = start[axis] - padding[axis] * jump[axis]
                size[axis] = size[axis] + (effective - 1) * jump[axis]
                jump[axis] = jump[axis] * stride[axis]
        if name == top:
            return FieldGeometry(tuple(size), tuple(jump), (int(start[0]), int(start[1])))
    raise AddressError(f"layer {layer!r} is not a child in the model's forward order")


def receptive_field(model: nn.Module, layer: str, row: int, col: int, height: int = 28, width: int = 28):
    """``(top, left, bottom, right)`` input rectangle of unit ``(row, col)`` of ``layer``
    (bottom/right exclusive, clipped), or the whole image for non-spatial layers."""
    geometry = field_geometry(model, layer)
    if geometry is None:
        return 0, 0, height, width
    return geometry.rectangle(row, col, height, width)
