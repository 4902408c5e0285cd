"""A JSON description of a tree of standard layers, so that any such model can be saved natively.

:func:`describe` turns a module tree into a plain dict (JSON-ready); :func:`build`
turns the dict back into modules. The round trip is exact: same module tree, same
child names, same ``state_dict`` keys and shapes. Weights travel separately (as
safetensors); the description holds no tensors and building one executes nothing.

The description::

    {"format": "convscope-graph/1",
     "root": {"type": "sequential",
              "children": [{"name": "Conv2D_1",
                            "module": {"type": "sequential", "children": [
                                {"name": "conv", "module": {"type": "conv2d", "in_channels": 1, ...}},
                                {"name": "relu", "module": {"type": "relu", "inplace": false}}]}},
                           {"name": "Max_Pool_1", "module": {"type": "maxpool2d", ...}},
                           ...]}}

Node types: ``sequential``, ``conv2d``, ``zeropad2d``, ``constant_pad2d`` (value
may be ``"-inf"``, for max-pooling's "same" padding), ``maxpool2d``, ``avgpool2d``,
``padded_avgpool2d`` (:class:`PaddedAvgPool2d`: Keras' "same" average that leaves
the padding out of the mean), ``global_pool`` (:class:`GlobalPool2d`), ``flatten``,
``linear``, ``batchnorm1d``, ``batchnorm2d``, ``dropout`` and the activations
``relu``, ``sigmoid``, ``tanh``, ``elu``, ``selu``, ``leaky_relu``, ``softmax``,
``gelu``, ``silu``, ``identity``.

Pad amounts are ``[left, right, top, bottom]`` as in :func:`torch.nn.functional.pad`;
kernel sizes, strides, padding and dilation are ``[height, width]`` pairs.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FORMAT = "convscope-graph/1"

#: Deepest nesting :func:`build` accepts (a guard against hostile files, far above real models).
MAX_DEPTH = 64
#: Most children of one ``sequential`` node.
MAX_CHILDREN = 10_000
#: Most parameters (weights + biases, elements) one described model may hold.
MAX_PARAMETERS = 1_000_000_000

_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_EMPTY = nn.Sequential()


def _valid_child_name(name: object) -> bool:
    """Letters, digits and ``_``, and not an attribute every ``nn.Sequential`` has (``forward``, ``training``)."""
    return isinstance(name, str) and bool(_NAME.match(name)) and not hasattr(_EMPTY, name)


class GraphError(ValueError):
    """A module tree that cannot be described, or a description that cannot be built."""


class GlobalPool2d(nn.Module):
    """Average or maximum over the spatial axes: ``(N, C, H, W)`` → ``(N, C)``.

    Args:
        mode: ``"avg"`` or ``"max"``.
    """

    def __init__(self, mode: str = "avg") -> None:
        super().__init__()
        if mode not in ("avg", "max"):
            raise ValueError(f"GlobalPool2d mode must be 'avg' or 'max', not {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "avg":
            return x.mean(dim=(2, 3))
        return x.amax(dim=(2, 3))

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


class PaddedAvgPool2d(nn.Module):
    """Average pooling over an explicitly zero-padded input, the padding left out of the mean.

    This is TensorFlow's ``padding="same"`` average pooling, whose padding may be
    asymmetric (one row more at the bottom / right); ``nn.AvgPool2d`` pads
    symmetrically only. Each output is the sum of the real inputs under the window
    divided by their number.

    Args:
        kernel_size: ``(height, width)`` of the window.
        stride: ``(height, width)`` step.
        padding: ``(left, right, top, bottom)`` zeros added before pooling.

    Input ``(N, C, H, W)``; output ``(N, C, H_out, W_out)`` with
    ``H_out = (H + top + bottom - kh) // sh + 1``.
    """

    def __init__(
        self, kernel_size: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int, int, int]
    ) -> None:
        super().__init__()
        self.kernel_size = (int(kernel_size[0]), int(kernel_size[1]))
        self.stride = (int(stride[0]), int(stride[1]))
        self.padding = tuple(int(p) for p in padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, self.padding)
        sums = F.avg_pool2d(padded, self.kernel_size, self.stride, divisor_override=1)
        ones = torch.ones((1, 1, x.shape[2], x.shape[3]), dtype=x.dtype, device=x.device)
        counts = F.avg_pool2d(F.pad(ones, self.padding), self.kernel_size, self.stride, divisor_override=1)
        return sums / counts

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


# ---------------------------------------------------------------------------------------------
# describe


def _pair(value: Any) -> list[int]:
    if isinstance(value, int):
        return [value, value]
    return [int(v) for v in value]


def _number(value: float) -> float | str:
    """A float as JSON allows it: infinities become the strings ``"inf"`` / ``"-inf"``."""
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if math.isnan(value):
        raise GraphError("NaN cannot be described")
    return value


def _conv2d(m: nn.Conv2d) -> dict:
    padding: list[int] | str = m.padding if isinstance(m.padding, str) else _pair(m.padding)
    return {
        "in_channels": m.in_channels, "out_channels": m.out_channels, "kernel_size": _pair(m.kernel_size),
        "stride": _pair(m.stride), "padding": padding, "dilation": _pair(m.dilation), "groups": m.groups,
        "bias": m.bias is not None, "padding_mode": m.padding_mode,
    }


def _pool_common(m: nn.Module) -> dict:
    stride = m.stride if m.stride is not None else m.kernel_size
    return {"kernel_size": _pair(m.kernel_size), "stride": _pair(stride), "padding": _pair(m.padding),
            "ceil_mode": bool(m.ceil_mode)}


def _maxpool2d(m: nn.MaxPool2d) -> dict:
    if m.return_indices:
        raise GraphError("MaxPool2d with return_indices=True cannot be described")
    return {**_pool_common(m), "dilation": _pair(m.dilation)}


def _avgpool2d(m: nn.AvgPool2d) -> dict:
    return {**_pool_common(m), "count_include_pad": bool(m.count_include_pad),
            "divisor_override": m.divisor_override}


def _batchnorm(m: nn.modules.batchnorm._BatchNorm) -> dict:
    # "bias": False only for an affine layer without a shift (PyTorch's BatchNorm(bias=False)).
    return {"num_features": m.num_features, "eps": float(m.eps),
            "momentum": None if m.momentum is None else float(m.momentum),
            "affine": bool(m.affine), "bias": not (m.affine and getattr(m, "bias", None) is None),
            "track_running_stats": bool(m.track_running_stats)}


# exact class -> (node type, fields of one module)
_DESCRIBERS: dict[type, tuple[str, Callable[[Any], dict]]] = {
    nn.Conv2d: ("conv2d", _conv2d),
    nn.ZeroPad2d: ("zeropad2d", lambda m: {"padding": list(m.padding)}),
    nn.ConstantPad2d: ("constant_pad2d", lambda m: {"padding": list(m.padding), "value": _number(m.value)}),
    nn.MaxPool2d: ("maxpool2d", _maxpool2d),
    nn.AvgPool2d: ("avgpool2d", _avgpool2d),
    PaddedAvgPool2d: ("padded_avgpool2d", lambda m: {"kernel_size": list(m.kernel_size),
                                                     "stride": list(m.stride), "padding": list(m.padding)}),
    GlobalPool2d: ("global_pool", lambda m: {"mode": m.mode}),
    nn.Flatten: ("flatten", lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim}),
    nn.Linear: ("linear", lambda m: {"in_features": m.in_features, "out_features": m.out_features,
                                     "bias": m.bias is not None}),
    nn.BatchNorm1d: ("batchnorm1d", _batchnorm),
    nn.BatchNorm2d: ("batchnorm2d", _batchnorm),
    nn.Dropout: ("dropout", lambda m: {"p": float(m.p), "inplace": bool(m.inplace)}),
    nn.ReLU: ("relu", lambda m: {"inplace": bool(m.inplace)}),
    nn.Sigmoid: ("sigmoid", lambda m: {}),
    nn.Tanh: ("tanh", lambda m: {}),
    nn.ELU: ("elu", lambda m: {"alpha": float(m.alpha), "inplace": bool(m.inplace)}),
    nn.SELU: ("selu", lambda m: {"inplace": bool(m.inplace)}),
    nn.LeakyReLU: ("leaky_relu", lambda m: {"negative_slope": float(m.negative_slope), "inplace": bool(m.inplace)}),
    nn.Softmax: ("softmax", lambda m: {"dim": m.dim}),
    nn.GELU: ("gelu", lambda m: {"approximate": m.approximate}),
    nn.SiLU: ("silu", lambda m: {"inplace": bool(m.inplace)}),
    nn.Identity: ("identity", lambda m: {}),
}


def _is_plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _state_shapes(module: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {key: (tuple(value.shape), value.dtype) for key, value in module.state_dict(keep_vars=True).items()}


def _describe(module: nn.Module, path: str, depth: int) -> dict:
    where = path or "<root>"
    if depth > MAX_DEPTH:
        raise GraphError(f"module {where}: nested deeper than {MAX_DEPTH} levels")
    kind = type(module)
    if kind in _DESCRIBERS:
        node_type, fields_of = _DESCRIBERS[kind]
        if len(module._modules) > 0:
            raise GraphError(f"module {where} ({kind.__name__}) has child modules of its own; cannot describe it")
        try:
            node = {"type": node_type, **fields_of(module)}
        except GraphError as error:
            raise GraphError(f"module {where} ({kind.__name__}): {error}") from None
        # A rebuilt twin (on the meta device: no memory) must hold exactly the same tensors.
        twin = _build_leaf(node, where, device=torch.device("meta"))
        have, want = _state_shapes(module), _state_shapes(twin)
        if {k: v[0] for k, v in have.items()} != {k: v[0] for k, v in want.items()}:
            raise GraphError(
                f"module {where} ({kind.__name__}) holds tensors {sorted(have)} with shapes that a rebuilt "
                f"{kind.__name__} would not have ({sorted(want)}); cannot describe it exactly"
            )
        for key, (_, dtype) in have.items():
            if dtype != want[key][1]:
                raise GraphError(
                    f"module {where} ({kind.__name__}): tensor {key!r} is {dtype}, a rebuilt module holds "
                    f"{want[key][1]}; convert the model with .float() first"
                )
        return node
    if _is_plain_sequential(module):
        if module._parameters or module._buffers:
            raise GraphError(f"module {where} ({kind.__name__}) holds tensors of its own; cannot describe it")
        children = []
        for name, child in module.named_children():
            child_path = f"{path}.{name}" if path else name
            if not _valid_child_name(name):
                raise GraphError(f"module {child_path}: the name {name!r} is not letters, digits and '_' only")
            children.append({"name": name, "module": _describe(child, child_path, depth + 1)})
        return {"type": "sequential", "children": children}
    if any("forward" in vars(k) for k in kind.__mro__ if not k.__module__.startswith("torch.")):
        reason = "defines its own forward"
    else:  # a PyTorch layer type outside this list, or a subclass of one
        reason = "is not one of the layer classes this format knows"
    known = ["nn.Sequential"] + [f"nn.{k.__name__}" if k.__module__.startswith("torch.") else k.__name__
                                 for k in _DESCRIBERS]
    raise GraphError(
        f"module {where} is a {kind.__module__}.{kind.__qualname__}, which {reason}; only plain nn.Sequential "
        f"trees of these layers can be saved without their Python code: {', '.join(known)}"
    )


def describe(module: nn.Module) -> dict:
    """The JSON-ready description of ``module`` (no tensors; save the weights separately).

    Args:
        module: a plain ``nn.Sequential`` tree (nested ones allowed; a subclass only
            if it keeps ``nn.Sequential.forward``) of the layer types listed in the
            module docstring, with float32 tensors.

    Returns:
        ``{"format": "convscope-graph/1", "root": NODE}``.

    Raises:
        GraphError: a module that cannot be rebuilt exactly (an unknown class, a class
            with its own ``forward``, extra tensors, a non-float32 tensor); the
            message names the module's path and type.
    """
    return {"format": FORMAT, "root": _describe(module, "", 0)}


# ---------------------------------------------------------------------------------------------
# build


class _Fields:
    """Typed access to one node's fields; every error names the node path."""

    def __init__(self, node: dict, path: str, allowed: set[str]) -> None:
        self.node, self.path = node, path
        extra = set(node) - allowed - {"type"}
        if extra:
            raise GraphError(f"node {path} ({node['type']}): unknown field(s) {sorted(extra)}")
        missing = allowed - set(node)
        if missing:
            raise GraphError(f"node {path} ({node['type']}): missing field(s) {sorted(missing)}")

    def fail(self, name: str, expected: str) -> GraphError:
        return GraphError(f"node {self.path} ({self.node['type']}): field {name!r} must be {expected}, "
                          f"got {self.node[name]!r}")

    def int(self, name: str, minimum: int = 0, maximum: int = 1 << 24) -> int:
        value = self.node[name]
        if type(value) is not int or not minimum <= value <= maximum:
            raise self.fail(name, f"an integer in [{minimum}, {maximum}]")
        return value

    def ints(self, name: str, length: int, minimum: int = 0, maximum: int = 1 << 24) -> tuple[int, ...]:
        value = self.node[name]
        if (not isinstance(value, list) or len(value) != length
                or any(type(v) is not int or not minimum <= v <= maximum for v in value)):
            raise self.fail(name, f"a list of {length} integers in [{minimum}, {maximum}]")
        return tuple(value)

    def bool(self, name: str) -> bool:
        value = self.node[name]
        if type(value) is not bool:
            raise self.fail(name, "true or false")
        return value

    def float(self, name: str, minimum: float = -math.inf, maximum: float = math.inf,
              allow_inf: bool = False, allow_none: bool = False) -> float | None:
        value = self.node[name]
        if value is None and allow_none:
            return None
        if allow_inf and value in ("inf", "-inf"):
            return float(value)
        if type(value) not in (int, float) or not math.isfinite(value) or not minimum <= value <= maximum:
            raise self.fail(name, f"a finite number in [{minimum}, {maximum}]" + (" or 'inf'/'-inf'" if allow_inf else ""))
        return float(value)

    def choice(self, name: str, choices: tuple) -> Any:
        value = self.node[name]
        if not any(value == c and type(value) is type(c) for c in choices):
            raise self.fail(name, f"one of {list(choices)}")
        return value


def _conv2d_build(f: _Fields, device) -> nn.Module:
    groups = f.int("groups", 1)
    in_channels, out_channels = f.int("in_channels", 1), f.int("out_channels", 1)
    if in_channels % groups or out_channels % groups:
        raise GraphError(f"node {f.path} (conv2d): channels {in_channels}->{out_channels} not divisible by groups {groups}")
    padding = f.node["padding"]
    padding = f.choice("padding", ("same", "valid")) if isinstance(padding, str) else f.ints("padding", 2)
    return nn.Conv2d(in_channels, out_channels, f.ints("kernel_size", 2, 1), stride=f.ints("stride", 2, 1),
                     padding=padding, dilation=f.ints("dilation", 2, 1), groups=groups, bias=f.bool("bias"),
                     padding_mode=f.choice("padding_mode", ("zeros", "reflect", "replicate", "circular")),
                     device=device)


def _pool_args(f: _Fields) -> dict:
    kernel = f.ints("kernel_size", 2, 1)
    padding = f.ints("padding", 2)
    if padding[0] * 2 > kernel[0] or padding[1] * 2 > kernel[1]:
        raise GraphError(f"node {f.path} ({f.node['type']}): padding {list(padding)} exceeds half the kernel {list(kernel)}")
    return {"kernel_size": kernel, "stride": f.ints("stride", 2, 1), "padding": padding, "ceil_mode": f.bool("ceil_mode")}


def _batchnorm_build(cls: type) -> Callable[[_Fields, Any], nn.Module]:
    def make(f: _Fields, device) -> nn.Module:
        # bias=False is passed only when needed: older PyTorch has no such argument.
        extra = {} if f.bool("bias") else {"bias": False}
        return cls(f.int("num_features", 1), eps=f.float("eps", 0.0), momentum=f.float("momentum", 0.0, 1.0, allow_none=True),
                   affine=f.bool("affine"), track_running_stats=f.bool("track_running_stats"), device=device, **extra)
    return make


def _flatten_build(f: _Fields, device) -> nn.Module:
    return nn.Flatten(f.int("start_dim", -8, 8), f.int("end_dim", -8, 8))


# node type -> (fields, builder)
_BUILDERS: dict[str, tuple[set[str], Callable[[_Fields, Any], nn.Module]]] = {
    "conv2d": ({"in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
                "padding_mode"}, _conv2d_build),
    "zeropad2d": ({"padding"}, lambda f, d: nn.ZeroPad2d(f.ints("padding", 4))),
    "constant_pad2d": ({"padding", "value"},
                       lambda f, d: nn.ConstantPad2d(f.ints("padding", 4), f.float("value", allow_inf=True))),
    "maxpool2d": ({"kernel_size", "stride", "padding", "ceil_mode", "dilation"},
                  lambda f, d: nn.MaxPool2d(dilation=f.ints("dilation", 2, 1), **_pool_args(f))),
    "avgpool2d": ({"kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"},
                  lambda f, d: nn.AvgPool2d(count_include_pad=f.bool("count_include_pad"),
                                            divisor_override=None if f.node["divisor_override"] is None
                                            else f.int("divisor_override", 1), **_pool_args(f))),
    "padded_avgpool2d": ({"kernel_size", "stride", "padding"},
                         lambda f, d: PaddedAvgPool2d(f.ints("kernel_size", 2, 1), f.ints("stride", 2, 1),
                                                      f.ints("padding", 4))),
    "global_pool": ({"mode"}, lambda f, d: GlobalPool2d(f.choice("mode", ("avg", "max")))),
    "flatten": ({"start_dim", "end_dim"}, _flatten_build),
    "linear": ({"in_features", "out_features", "bias"},
               lambda f, d: nn.Linear(f.int("in_features", 1), f.int("out_features", 1), bias=f.bool("bias"), device=d)),
    "batchnorm1d": ({"num_features", "eps", "momentum", "affine", "bias", "track_running_stats"},
                    _batchnorm_build(nn.BatchNorm1d)),
    "batchnorm2d": ({"num_features", "eps", "momentum", "affine", "bias", "track_running_stats"},
                    _batchnorm_build(nn.BatchNorm2d)),
    "dropout": ({"p", "inplace"}, lambda f, d: nn.Dropout(f.float("p", 0.0, 1.0), inplace=f.bool("inplace"))),
    "relu": ({"inplace"}, lambda f, d: nn.ReLU(inplace=f.bool("inplace"))),
    "sigmoid": (set(), lambda f, d: nn.Sigmoid()),
    "tanh": (set(), lambda f, d: nn.Tanh()),
    "elu": ({"alpha", "inplace"}, lambda f, d: nn.ELU(f.float("alpha"), inplace=f.bool("inplace"))),
    "selu": ({"inplace"}, lambda f, d: nn.SELU(inplace=f.bool("inplace"))),
    "leaky_relu": ({"negative_slope", "inplace"},
                   lambda f, d: nn.LeakyReLU(f.float("negative_slope"), inplace=f.bool("inplace"))),
    "softmax": ({"dim"}, lambda f, d: nn.Softmax(dim=None if f.node["dim"] is None else f.int("dim", -8, 8))),
    "gelu": ({"approximate"}, lambda f, d: nn.GELU(approximate=f.choice("approximate", ("none", "tanh")))),
    "silu": ({"inplace"}, lambda f, d: nn.SiLU(inplace=f.bool("inplace"))),
    "identity": (set(), lambda f, d: nn.Identity()),
}
_TYPE_NAMES = {"sequential", *_BUILDERS}


def _leaf_parameters(node: dict) -> int:
    """Elements the leaf will allocate (checked before allocating)."""
    kind = node["type"]
    try:
        if kind == "conv2d":
            kh, kw = node["kernel_size"]
            return node["out_channels"] * (node["in_channels"] // max(node["groups"], 1)) * kh * kw + node["out_channels"]
        if kind == "linear":
            return node["in_features"] * node["out_features"] + node["out_features"]
        if kind in ("batchnorm1d", "batchnorm2d"):
            return 4 * node["num_features"]
    except (TypeError, ValueError, KeyError):
        return 0  # the field checks report the problem
    return 0


def _build_leaf(node: dict, path: str, device=None) -> nn.Module:
    kind = node.get("type")
    if kind not in _BUILDERS:
        raise GraphError(f"node {path}: unknown type {kind!r}; known types: {', '.join(sorted(_TYPE_NAMES))}")
    allowed, make = _BUILDERS[kind]
    fields = _Fields(node, path, allowed)
    try:
        return make(fields, device)
    except GraphError:
        raise
    except (TypeError, ValueError, RuntimeError) as error:  # PyTorch's own argument checks
        raise GraphError(f"node {path} ({kind}): {error}") from None


def _build(node: Any, path: str, depth: int, budget: list[int]) -> nn.Module:
    if depth > MAX_DEPTH:
        raise GraphError(f"node {path}: nested deeper than {MAX_DEPTH} levels")
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        raise GraphError(f"node {path}: expected an object with a 'type' string, got {type(node).__name__}")
    if node["type"] != "sequential":
        budget[0] -= _leaf_parameters(node)
        if budget[0] < 0:
            raise GraphError(f"node {path}: the model would hold more than {MAX_PARAMETERS:,} parameters")
        return _build_leaf(node, path)
    _Fields(node, path, {"children"})
    children = node["children"]
    if not isinstance(children, list) or len(children) > MAX_CHILDREN:
        raise GraphError(f"node {path} (sequential): 'children' must be a list of at most {MAX_CHILDREN} entries")
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for index, entry in enumerate(children):
        if not isinstance(entry, dict) or set(entry) != {"name", "module"}:
            raise GraphError(f"node {path} (sequential): child #{index} must be an object with 'name' and 'module'")
        name = entry["name"]
        if not _valid_child_name(name) or name in modules:
            raise GraphError(
                f"node {path} (sequential): child #{index} has an invalid or repeated name {name!r} "
                "(letters, digits and '_' only, unique)"
            )
        modules[name] = _build(entry["module"], f"{path}.{name}" if path != "<root>" else name, depth + 1, budget)
    return nn.Sequential(modules)


def build(description: dict) -> nn.Module:
    """Rebuild the modules of a :func:`describe` description (fresh weights, eval mode).

    Load the weights afterwards, e.g. ``module.load_state_dict(tensors)``.

    Raises:
        GraphError: wrong format tag, an unknown node type, a missing / unknown /
            ill-typed field, nesting deeper than :data:`MAX_DEPTH`, or more than
            :data:`MAX_PARAMETERS` parameters; the message names the node path.
    """
    if not isinstance(description, dict) or description.get("format") != FORMAT or set(description) != {"format", "root"}:
        raise GraphError(f"not a layer-graph description: expected {{'format': {FORMAT!r}, 'root': ...}}")
    module = _build(description["root"], "<root>", 0, [MAX_PARAMETERS])
    return module.eval()
