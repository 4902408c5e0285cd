"""Receptive fields: which input pixels can influence one unit of a layer.

The one receptive-field geometry of convscope (top-k galleries, the exact input
crops of :func:`convscope.models.twin.input_extent`). Two methods give the answer:

* **geometry** (exact, no forward pass through the data): the model's forward
  graph is traced with :mod:`torch.fx`, standard layers kept whole. Along every
  path from the input to the layer, each ``nn.Conv2d`` / ``nn.MaxPool2d`` /
  ``nn.AvgPool2d`` widens the field by its kernel, stride, padding and dilation;
  element-wise steps (activations as modules or functions, eval-mode BatchNorm,
  dropout, ``+``, ``×``) keep it; branches that meet (a residual sum, a channel
  concatenation) take the union. Nested modules are followed in the order the
  data flows, whatever order they were registered in. The output size the
  geometry predicts is checked against the layer's real output size.
* **gradient** (measured): when the model cannot be traced (data-dependent
  control flow) or its path to the layer holds a step whose geometry is not known
  here (a functional ``F.conv2d``, interpolation, normalisation over positions…),
  the field of each position is the support of the input gradient of that
  position — the union over all maps and over a few random inputs — i.e. the
  pixels that actually influence it.

:attr:`ReceptiveFields.method` says which one was used (``"whole"`` for layers
without spatial positions: every unit sees the whole image), and
:attr:`ReceptiveFields.note` says why.
"""

from __future__ import annotations

import math
import operator
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convscope.address import PSEUDO_LAYERS, AddressError, canonical_layer, find_module, layer_output_shapes

# -- results ---------------------------------------------------------------------


@dataclass(frozen=True)
class FieldGeometry:
    """Per axis (rows, cols): receptive field size, jump (input pixels between
    neighbouring units) and the input coordinate of unit 0's field start (negative
    where padding lies before the image) — the field of an interior unit.

    At the image border a unit's field is the part of this span that can reach it;
    :class:`ReceptiveFields` gives those exact rectangles (padding of inner layers,
    dilation, ceil-mode pooling included)."""

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[int, int]

    def rectangle(
        self, row: int, col: int, height: int | None = None, width: int | None = None
    ) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` of the span in input pixels (bottom/right
        exclusive), clipped to the image (to ``height``/``width`` when given)."""
        top = self.start[0] + row * self.jump[0]
        left = self.start[1] + col * self.jump[1]
        bottom, right = top + self.size[0], left + self.size[1]
        if height is not None:
            bottom = min(height, bottom)
        if width is not None:
            right = min(width, right)
        return max(0, top), max(0, left), bottom, right


@dataclass(frozen=True)
class ReceptiveFields:
    """The receptive field of every position of one layer.

    Attributes:
        layer: layer name.
        method: ``"geometry"`` (exact, from the layers' kernels/strides/paddings),
            ``"gradient"`` (support of input gradients) or ``"whole"`` (the layer has
            no spatial positions).
        input_size: ``(H, W)`` of the model's input.
        output_size: ``(H', W')`` of the layer's maps, or ``None`` (``"whole"``).
        geometry: the :class:`FieldGeometry` of an interior unit (``"geometry"`` only).
        table: ``(H', W', 4)`` int64 ``(top, left, bottom, right)`` per position,
            clipped to the image, bottom/right exclusive (``"geometry"``: exact,
            ``"gradient"``: measured; ``None`` for ``"whole"``).
        note: how the fields were found (for JSON and figure notes).
    """

    layer: str
    method: str
    input_size: tuple[int, int]
    output_size: tuple[int, int] | None
    geometry: FieldGeometry | None = None
    table: np.ndarray | None = None
    note: str = ""

    def rectangle(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` of unit ``(row, col)``, clipped to the image."""
        height, width = self.input_size
        if self.table is not None:
            return tuple(int(v) for v in self.table[row, col])  # type: ignore[return-value]
        return 0, 0, height, width

    def rectangles(self, positions: torch.Tensor) -> torch.Tensor:
        """``(..., 2)`` int ``(row, col)`` positions → ``(..., 4)`` int64 rectangles."""
        positions = torch.as_tensor(positions).long()
        rows, cols = positions[..., 0], positions[..., 1]
        height, width = self.input_size
        if self.table is not None:
            return torch.as_tensor(self.table)[rows, cols].long()
        whole = torch.tensor([0, 0, height, width], dtype=torch.long)
        return whole.expand(*rows.shape, 4).clone()

    @property
    def size(self) -> tuple[int, int] | None:
        """Field size ``(h, w)`` of an interior unit (geometry), the largest measured
        one (gradient), or ``None`` (whole image)."""
        if self.geometry is not None:
            return self.geometry.size
        if self.table is not None and self.table.size:
            heights = self.table[..., 2] - self.table[..., 0]
            widths = self.table[..., 3] - self.table[..., 1]
            return int(heights.max()), int(widths.max())
        return None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"layer": self.layer, "method": self.method, "note": self.note,
                               "input_size": list(self.input_size),
                               "output_size": None if self.output_size is None else list(self.output_size)}
        if self.geometry is not None:
            out.update(size=list(self.geometry.size), jump=list(self.geometry.jump), start=list(self.geometry.start))
        elif self.table is not None:
            out["size"] = list(self.size or ())
        return out


# -- geometry by tracing -------------------------------------------------------------


class _Kind:
    """Markers for values that are not a spatial geometry."""

    CONST = "const"  # does not depend on the input (parameters, shapes, numbers)
    GLOBAL = "global"  # depends on the whole input, no spatial layout left (after flatten/linear)
    UNKNOWN = "unknown"  # a step whose geometry is not known here


_EMPTY = (1 << 62, -(1 << 62))  # the span of a position no input pixel reaches (only padding)


@dataclass(frozen=True)
class _Geo:
    """Field geometry of a spatial tensor: the interior size / jump / start, the
    spatial extent (h, w), and per axis the exact input span ``(lo, hi)`` of every
    position (the union of the spans its valid taps reach: padding of inner layers
    reaches no pixel)."""

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[int, int]
    extent: tuple[int, int]
    spans: tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]] = ((), ())


_Value = Any  # _Geo | str (a _Kind marker) | tuple of values


def _pair(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def _window(geo: _Geo, kernel, stride, padding, dilation, ceil_mode: bool = False) -> _Value:
    """The geometry after a sliding-window step (conv or pooling)."""
    kernel, stride, dilation = _pair(kernel), _pair(stride), _pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0)
        elif padding == "same" and stride == (1, 1):
            pads = tuple((d * (k - 1)) // 2 for k, d in zip(kernel, dilation))
        else:
            return _Kind.UNKNOWN
        same = padding == "same"
    else:
        pads, same = _pair(padding), False
    size, jump, start, extent = list(geo.size), list(geo.jump), list(geo.start), list(geo.extent)
    spans = list(geo.spans)
    left_pads = list(pads)
    if same:  # PyTorch pads 'same' convolutions with the odd pixel at the end
        left_pads = [(dilation[axis] * (kernel[axis] - 1)) // 2 for axis in range(2)]
    for axis in range(2):
        effective = dilation[axis] * (kernel[axis] - 1) + 1
        if same:
            out = extent[axis]
        else:
            span = extent[axis] + 2 * pads[axis] - effective
            if span < 0:
                return _Kind.UNKNOWN
            out = (math.ceil if ceil_mode else math.floor)(span / stride[axis]) + 1
            if ceil_mode and (out - 1) * stride[axis] >= extent[axis] + pads[axis]:
                out -= 1  # PyTorch: the last window must start inside the input or the left padding
        before = spans[axis]
        grown = []
        for o in range(out):
            lo, hi = _EMPTY
            for tap in range(kernel[axis]):
                p = o * stride[axis] - left_pads[axis] + tap * dilation[axis]
                if 0 <= p < extent[axis]:
                    lo, hi = min(lo, before[p][0]), max(hi, before[p][1])
            grown.append((lo, hi))
        spans[axis] = tuple(grown)
        start[axis] = start[axis] - left_pads[axis] * jump[axis]
        size[axis] = size[axis] + (effective - 1) * jump[axis]
        jump[axis] = jump[axis] * stride[axis]
        extent[axis] = out
    return _Geo(tuple(size), tuple(jump), tuple(start), tuple(extent), tuple(spans))  # type: ignore[arg-type]


def _merge(values: Sequence[_Value]) -> _Value:
    """The value of an element-wise combination of ``values`` (a residual sum, …)."""
    flat: list[_Value] = []
    for value in values:
        if isinstance(value, tuple) and not isinstance(value, _Geo):
            flat.extend(value)
        else:
            flat.append(value)
    if any(v == _Kind.UNKNOWN for v in flat if isinstance(v, str)):
        return _Kind.UNKNOWN
    geos = [v for v in flat if isinstance(v, _Geo)]
    if any(v == _Kind.GLOBAL for v in flat if isinstance(v, str)):
        return _Kind.GLOBAL
    if not geos:
        return _Kind.CONST
    first = geos[0]
    if any(g.jump != first.jump or g.extent != first.extent for g in geos[1:]):
        return _Kind.UNKNOWN
    starts = [min(g.start[axis] for g in geos) for axis in range(2)]
    ends = [max(g.start[axis] + g.size[axis] for g in geos) for axis in range(2)]
    spans = tuple(
        tuple((min(g.spans[axis][i][0] for g in geos), max(g.spans[axis][i][1] for g in geos))
              for i in range(first.extent[axis]))
        for axis in range(2)
    )
    return _Geo((ends[0] - starts[0], ends[1] - starts[1]), first.jump, (starts[0], starts[1]), first.extent,
                spans)  # type: ignore[arg-type]


_ELEMENTWISE_MODULES: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
    nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout2d,
    nn.AlphaDropout, nn.BatchNorm2d,
)
_GLOBAL_MODULES: tuple[type, ...] = (nn.Flatten, nn.Linear)
_WINDOW_MODULES: tuple[type, ...] = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
_ELEMENTWISE_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.gelu, F.silu, F.mish, torch.sigmoid, F.sigmoid,
    torch.tanh, F.tanh, F.hardtanh, F.hardswish, F.hardsigmoid, F.softplus, F.dropout, F.dropout2d, torch.clamp,
    torch.abs, operator.neg, operator.pos, torch.neg, torch.square, torch.exp,
}
_COMBINING_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.imul, torch.add, torch.sub,
    torch.mul, torch.div, torch.maximum, torch.minimum,
}
_ELEMENTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "tanh", "clamp", "clamp_", "abs", "neg", "contiguous", "float", "double", "half",
    "to", "type_as", "clone", "detach", "exp", "square", "add", "add_", "sub", "mul", "mul_", "div",
}
_CONST_METHODS = {"size", "dim", "numel"}


def _is_known_leaf(module: nn.Module) -> bool:
    return isinstance(module, _WINDOW_MODULES + _ELEMENTWISE_MODULES + _GLOBAL_MODULES)


class _Tracer(torch.fx.Tracer):
    """Keeps standard layers (and the addressed layer) whole; traces into the rest."""

    def __init__(self, keep: str | None = None) -> None:
        super().__init__()
        self.keep = keep

    def is_leaf_module(self, module: nn.Module, qualname: str) -> bool:
        if self.keep is not None and qualname == self.keep:
            return True
        return _is_known_leaf(module) or super().is_leaf_module(module, qualname)


def _trace(module: nn.Module, keep: str | None = None) -> torch.fx.Graph:
    from convscope.tracing_gate import GATE

    with GATE.exclusive():  # fx patches nn.Module for the whole process while it traces
        return _Tracer(keep).trace(module)


def _module_value(module: nn.Module, inputs: list[_Value]) -> _Value:
    merged = _merge(inputs)
    if not isinstance(merged, _Geo):
        if merged == _Kind.UNKNOWN:
            return _Kind.UNKNOWN
        return merged  # a function of global features (or of none) stays global (or constant)
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            return _Kind.UNKNOWN  # circular padding wraps around the image
        return _window(merged, module.kernel_size, module.stride, module.padding, module.dilation)
    if isinstance(module, nn.MaxPool2d):
        if module.return_indices:
            return _Kind.UNKNOWN
        return _window(merged, module.kernel_size, module.stride or module.kernel_size, module.padding,
                       module.dilation, module.ceil_mode)
    if isinstance(module, nn.AvgPool2d):
        return _window(merged, module.kernel_size, module.stride or module.kernel_size, module.padding, 1,
                       module.ceil_mode)
    if isinstance(module, _ELEMENTWISE_MODULES):
        return merged
    if isinstance(module, nn.Flatten):
        return _Kind.GLOBAL
    if isinstance(module, nn.Linear):
        return _Kind.UNKNOWN  # a Linear on a spatial tensor mixes its last axis only
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and _pair(
        module.output_size if module.output_size is not None else 1
    ) == (1, 1):
        return _Kind.GLOBAL
    return _Kind.UNKNOWN


def _graph_value(root: nn.Module, graph: torch.fx.Graph, inputs: list[_Value], target: str | None) -> _Value:
    """Propagate values through ``graph``: the value of the first call of ``target``
    (or of the graph's output when ``target`` is ``None``)."""
    values: dict[torch.fx.Node, _Value] = {}
    placeholders = iter(inputs)

    def value_of(arg: Any) -> _Value:
        if isinstance(arg, torch.fx.Node):
            return values.get(arg, _Kind.UNKNOWN)
        if isinstance(arg, (tuple, list)):
            return tuple(value_of(a) for a in arg)
        if isinstance(arg, dict):
            return tuple(value_of(a) for a in arg.values())
        return _Kind.CONST

    def tensor_args(node: torch.fx.Node) -> list[_Value]:
        return [value_of(a) for a in list(node.args) + list(node.kwargs.values())]

    for node in graph.nodes:
        if node.op == "placeholder":
            values[node] = next(placeholders, _Kind.CONST)
        elif node.op == "get_attr":
            values[node] = _Kind.CONST
        elif node.op == "call_module":
            module = root.get_submodule(node.target)
            args = tensor_args(node)
            if target is not None and node.target == target and not _is_known_leaf(module):
                # the addressed layer is a block of its own: follow the data inside it
                try:
                    inner = _trace(module)
                except Exception:  # noqa: BLE001 - untraceable: the caller falls back
                    return _Kind.UNKNOWN
                positional = [value_of(a) for a in node.args] + [value_of(a) for a in node.kwargs.values()]
                return _graph_value(module, inner, positional, None)
            values[node] = _module_value(module, args)
            if target is not None and node.target == target:
                return values[node]
        elif node.op == "call_function":
            values[node] = _function_value(node, tensor_args(node), value_of)
        elif node.op == "call_method":
            values[node] = _method_value(node, tensor_args(node))
        elif node.op == "output":
            if target is None:
                return _merge([value_of(node.args[0])])
    return _Kind.UNKNOWN  # the target was never called


def _function_value(node: torch.fx.Node, args: list[_Value], value_of) -> _Value:
    fn = node.target
    merged = _merge(args)
    if fn is getattr:
        return _Kind.CONST
    if fn in _ELEMENTWISE_FUNCTIONS or fn in _COMBINING_FUNCTIONS:
        return merged
    if fn is torch.flatten:
        return _Kind.GLOBAL if merged != _Kind.UNKNOWN else merged
    if fn is torch.cat:
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        return merged if dim in (1, -3) else (_Kind.UNKNOWN if isinstance(merged, _Geo) else merged)
    if isinstance(merged, _Geo):
        return _Kind.UNKNOWN
    return merged  # anything of global / constant values stays global / constant


def _method_value(node: torch.fx.Node, args: list[_Value]) -> _Value:
    merged = _merge(args)
    if node.target in _CONST_METHODS:
        return _Kind.CONST
    if node.target in _ELEMENTWISE_METHODS:
        return merged
    if node.target == "flatten":
        return _Kind.GLOBAL if merged != _Kind.UNKNOWN else merged
    if isinstance(merged, _Geo):
        return _Kind.UNKNOWN
    return merged


_GEOMETRY_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _traced_geometry(model: nn.Module, layer: str, input_size: tuple[int, int]) -> tuple[_Value, str]:
    """``(value, why)`` for ``layer``: a :class:`_Geo` or a :class:`_Kind` marker, and a reason."""
    structure = tuple((name, type(m).__name__) for name, m in model.named_modules())
    key = (layer, input_size, structure)
    cache = _GEOMETRY_CACHE.get(model)
    if cache is not None and key in cache:
        return cache[key]
    try:
        graph = _trace(model, keep=layer)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: measure instead
        result: tuple[_Value, str] = (_Kind.UNKNOWN, f"the model cannot be traced with torch.fx ({type(exc).__name__})")
    else:
        height, width = int(input_size[0]), int(input_size[1])
        start = _Geo((1, 1), (1, 1), (0, 0), (height, width),
                     (tuple((i, i + 1) for i in range(height)), tuple((i, i + 1) for i in range(width))))
        try:
            value = _graph_value(model, graph, [start], layer)
        except Exception as exc:  # noqa: BLE001
            value = _Kind.UNKNOWN
            result = (value, f"the traced graph could not be followed ({type(exc).__name__})")
        else:
            why = ("its path from the input holds a step whose geometry convscope does not know"
                   if value == _Kind.UNKNOWN else "")
            result = (value, why)
    try:
        _GEOMETRY_CACHE.setdefault(model, {})[key] = result
    except TypeError:
        pass
    return result


def _span_table(geo: _Geo, input_size: tuple[int, int]) -> np.ndarray:
    """``(H', W', 4)`` rectangles from the per-axis spans (a position no pixel
    reaches — only padding — gets the whole image, as the measured method does)."""
    table = np.zeros((geo.extent[0], geo.extent[1], 4), dtype=np.int64)
    rows = np.array([span if span != _EMPTY else (0, input_size[0]) for span in geo.spans[0]], dtype=np.int64)
    cols = np.array([span if span != _EMPTY else (0, input_size[1]) for span in geo.spans[1]], dtype=np.int64)
    table[..., 0], table[..., 2] = rows[:, None, 0], rows[:, None, 1]
    table[..., 1], table[..., 3] = cols[None, :, 0], cols[None, :, 1]
    return table


# -- gradient support ------------------------------------------------------------------


def gradient_fields(
    model: nn.Module,
    layer: str,
    *,
    samples: int = 4,
    seed: int = 0,
    batch_size: int = 128,
) -> np.ndarray:
    """Measure the receptive field of every position of a spatial layer: the
    bounding box of the pixels whose input gradient is non-zero, for the sum over
    all maps at that position, united over ``samples`` random inputs (so that a
    ReLU or max-pool that happens to block one input does not hide a pixel).

    Args:
        model: the network (run in eval mode, restored afterwards; its parameters
            get no gradients).
        layer: a layer with ``(C, H', W')`` outputs.
        samples: random inputs (standard normal, in the model's input space).
        seed: seeds the random inputs.
        batch_size: positions per forward/backward pass.

    Returns:
        ``(H', W', 4)`` int64 ``(top, left, bottom, right)``, bottom/right exclusive.
        A position no pixel influenced (a unit that is constant) gets the whole image.
    """
    from convscope.probe import Probe
    from convscope.spec import spec_of

    name = canonical_layer(model, layer)
    channels, height, width = spec_of(model).input_shape
    shape = layer_output_shapes(model).get(name)
    if shape is None or len(shape) != 3:
        raise AddressError(f"{layer} has no spatial positions (output shape {shape}); its units see the whole image")
    out_h, out_w = int(shape[1]), int(shape[2])
    positions = torch.tensor([(r, c) for r in range(out_h) for c in range(out_w)], dtype=torch.long)
    try:
        parameter = next(model.parameters())
        device, dtype = parameter.device, parameter.dtype if parameter.is_floating_point() else torch.float32
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    generator = torch.Generator().manual_seed(int(seed))
    support = torch.zeros(len(positions), height, width, dtype=torch.bool)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), Probe(model, [name]) as probe:
            for _ in range(max(1, int(samples))):
                base = torch.randn((1, channels, height, width), generator=generator)
                for start in range(0, len(positions), batch_size):
                    chunk = positions[start : start + batch_size]
                    x = base.expand(len(chunk), -1, -1, -1).to(device=device, dtype=dtype).clone().requires_grad_(True)
                    out = probe.run(x)[name]
                    picked = out[torch.arange(len(chunk), device=out.device), :, chunk[:, 0].to(out.device),
                                 chunk[:, 1].to(out.device)]
                    (grad,) = torch.autograd.grad(picked.sum(), x)
                    support[start : start + len(chunk)] |= (grad != 0).any(dim=1).cpu()
    finally:
        model.train(was_training)
    table = np.zeros((out_h, out_w, 4), dtype=np.int64)
    rows_any, cols_any = support.any(dim=2), support.any(dim=1)  # (P, H), (P, W)
    for index, (r, c) in enumerate(positions.tolist()):
        rows = torch.nonzero(rows_any[index]).flatten()
        cols = torch.nonzero(cols_any[index]).flatten()
        if len(rows) == 0:
            table[r, c] = (0, 0, height, width)
        else:
            table[r, c] = (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)
    return table


# -- public API ---------------------------------------------------------------------------


def _input_size(model: nn.Module, input_size: tuple[int, int] | None) -> tuple[int, int]:
    if input_size is not None:
        return int(input_size[0]), int(input_size[1])
    from convscope.spec import spec_of

    return spec_of(model).size


def _output_shape(model: nn.Module, name: str) -> tuple[int, ...] | None:
    try:
        return layer_output_shapes(model).get(name)
    except Exception:  # noqa: BLE001 - no spec / cannot run: decided by the caller
        return None


def receptive_fields(
    model: nn.Module, layer: str, *, samples: int = 4, seed: int = 0, allow_gradient: bool = True
) -> ReceptiveFields:
    """The receptive field of every position of ``layer`` (see the module docstring).

    Args:
        model: any network with a convscope spec.
        layer: layer name (an address's map/unit part is ignored).
        samples, seed: for the gradient method (see :func:`gradient_fields`).
        allow_gradient: when the geometry cannot be traced, measure (``True``) or
            report the whole image with ``method="whole"`` (``False``).

    Raises:
        AddressError: unknown layer.
    """
    from convscope.address import parse_address

    name = canonical_layer(model, parse_address(layer).layer)
    if name not in PSEUDO_LAYERS:
        find_module(model, name)
    size = _input_size(model, None)
    shape = None if name in PSEUDO_LAYERS else _output_shape(model, name)
    if shape is None or len(shape) != 3:
        return ReceptiveFields(name, "whole", size, None, note="no spatial positions: every unit sees the whole image")
    output_size = (int(shape[1]), int(shape[2]))
    value, why = _traced_geometry(model, name, size)
    if isinstance(value, _Geo):
        if value.extent == output_size:
            geometry = FieldGeometry(value.size, value.jump, value.start)
            return ReceptiveFields(name, "geometry", size, output_size, geometry=geometry, table=_span_table(value, size),
                                   note="exact, from the kernels, strides, paddings and dilations on the way from the input")
        why = f"the traced geometry predicts {value.extent[0]}×{value.extent[1]} maps, the layer has {output_size[0]}×{output_size[1]}"
    elif value == _Kind.GLOBAL:
        return ReceptiveFields(name, "whole", size, output_size, note="every unit depends on the whole image")
    if not allow_gradient:
        return ReceptiveFields(name, "whole", size, output_size, note=f"not derived ({why}); the whole image shown")
    table = gradient_fields(model, name, samples=samples, seed=seed)
    return ReceptiveFields(name, "gradient", size, output_size, table=table,
                           note=f"measured as the support of input gradients ({samples} random inputs, all maps), "
                                f"because {why}")


def field_geometry(model: nn.Module, layer: str) -> FieldGeometry | None:
    """Receptive-field geometry of the units of ``layer`` when it follows exactly
    from the model's layers (see :func:`receptive_fields`), else ``None`` — also for
    layers without spatial positions (every unit sees the whole image).

    Raises:
        AddressError: unknown layer.
    """
    return receptive_fields(model, layer, allow_gradient=False).geometry


def receptive_field(model: nn.Module, layer: str, row: int, col: int) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` input rectangle of unit ``(row, col)`` of
    ``layer`` (bottom/right exclusive, clipped to the model's input), or the whole
    image for non-spatial layers."""
    return receptive_fields(model, layer).rectangle(row, col)


__all__ = ["FieldGeometry", "ReceptiveFields", "field_geometry", "gradient_fields", "receptive_field", "receptive_fields"]
