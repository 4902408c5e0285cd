"""A model as a program the browser can run: the layer list and the weights for
``report/assets/forward.js`` (the forward pass in plain JavaScript that gives the
static atlas its draw pad, and that the explorer page shares).

:func:`forward_program` walks the model's module tree and writes one small
operation per layer (``conv2d``, ``maxpool2d``, ``linear``, ``relu`` …), a
``mark`` after each layer the page shows (the layers of
:func:`convscope.layers.model_layers`), and every weight as one float32
little-endian buffer, base64-encoded (Model A: 208,982 numbers, 836 kB as float32,
1.1 MB as base64)::

    from convscope.report.jsmodel import forward_program, JSForwardUnsupported
    try:
        program = forward_program(model)     # JSON-ready dict
    except JSForwardUnsupported as why:      # e.g. a custom module with its own forward
        program = None

What it can run: plain ``nn.Sequential`` trees (subclasses that keep
``nn.Sequential.forward`` too, and convscope's own conv/dense + ReLU blocks) of
``Conv2d`` (zero padding, any stride, dilation, groups), ``ZeroPad2d`` /
``ConstantPad2d``, ``MaxPool2d`` / ``AvgPool2d`` (padding, ceil mode),
convscope's ``PaddedAvgPool2d`` and ``GlobalPool2d``, ``AdaptiveAvgPool2d`` /
``AdaptiveMaxPool2d``, ``Flatten`` (per sample), ``Linear``, ``BatchNorm1d`` /
``BatchNorm2d`` (running statistics), ``Dropout`` (inference: nothing) and the
activations ReLU, ReLU6, LeakyReLU, ELU, SELU, CELU, Sigmoid, Tanh, GELU, SiLU,
Softplus, Hardswish, Hardsigmoid, Softmax, Identity — the reference models and
what the Keras importer builds. Anything else raises :class:`JSForwardUnsupported`
(the atlas then has no pad). Nothing here runs the model.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import torch
from torch import nn

FORMAT = "convscope-js/1"


class JSForwardUnsupported(ValueError):
    """The model holds a layer the in-page forward pass cannot run (the message names it)."""


def _pair(value: Any) -> list[int]:
    if isinstance(value, (int, np.integer)):
        return [int(value), int(value)]
    return [int(v) for v in value]


class _Writer:
    """Collects operations and float32 weights."""

    def __init__(self, shown: set[str]) -> None:
        self.ops: list[dict[str, Any]] = []
        self.chunks: list[np.ndarray] = []
        self.size = 0
        self.shown = shown

    def tensor(self, value: torch.Tensor | None) -> int | None:
        """Append ``value`` to the weight buffer; its offset (in numbers) or ``None``."""
        if value is None:
            return None
        array = value.detach().to("cpu", torch.float32).contiguous().numpy().reshape(-1).astype("<f4")
        if not np.isfinite(array).all():
            raise JSForwardUnsupported("the model holds NaN or infinite weights")
        offset = self.size
        self.chunks.append(array)
        self.size += array.size
        return offset

    def weights(self) -> bytes:
        return np.concatenate(self.chunks).tobytes() if self.chunks else b""


def _conv(m: nn.Conv2d, w: _Writer, where: str) -> dict[str, Any]:
    if m.padding_mode != "zeros":
        raise JSForwardUnsupported(f"{where}: Conv2d with padding_mode={m.padding_mode!r} (only zero padding runs in the page)")
    kh, kw = _pair(m.kernel_size)
    dilation = _pair(m.dilation)
    if isinstance(m.padding, str):
        if m.padding == "valid":
            pads = [0, 0, 0, 0]
        else:  # "same": PyTorch puts the odd pixel at the end
            total_h, total_w = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
            pads = [total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2]
    else:
        ph, pw = _pair(m.padding)
        pads = [ph, ph, pw, pw]
    return {"op": "conv2d", "cin": m.in_channels, "cout": m.out_channels, "k": [kh, kw], "stride": _pair(m.stride),
            "pad": pads, "dilation": dilation, "groups": m.groups, "w": w.tensor(m.weight), "b": w.tensor(m.bias)}


def _pool(m: nn.Module, kind: str, where: str) -> dict[str, Any]:
    stride = m.stride if m.stride not in (None, ()) else m.kernel_size
    op = {"op": kind, "k": _pair(m.kernel_size), "stride": _pair(stride), "pad": _pair(m.padding),
          "ceil": bool(m.ceil_mode)}
    if kind == "maxpool2d":
        if m.return_indices:
            raise JSForwardUnsupported(f"{where}: MaxPool2d(return_indices=True)")
        op["dilation"] = _pair(m.dilation)
    else:
        op["include_pad"] = bool(m.count_include_pad)
        op["divisor"] = m.divisor_override
    return op


def _batchnorm(m: nn.modules.batchnorm._BatchNorm, w: _Writer, where: str) -> dict[str, Any]:
    if m.running_mean is None or m.running_var is None:
        raise JSForwardUnsupported(f"{where}: BatchNorm without running statistics (it normalises by the batch)")
    invstd = 1.0 / torch.sqrt(m.running_var.double() + m.eps)
    weight = m.weight.double() if m.weight is not None else torch.ones_like(invstd)
    bias = m.bias.double() if m.bias is not None else torch.zeros_like(invstd)
    scale = weight * invstd
    shift = bias - m.running_mean.double() * scale
    return {"op": "affine", "channels": int(m.num_features), "scale": w.tensor(scale.float()), "shift": w.tensor(shift.float())}


def _activation(m: nn.Module) -> dict[str, Any] | None:
    if isinstance(m, nn.ReLU6):
        return {"op": "clamp", "min": 0.0, "max": 6.0}
    if isinstance(m, nn.ReLU):
        return {"op": "relu"}
    if isinstance(m, nn.LeakyReLU):
        return {"op": "leaky_relu", "slope": float(m.negative_slope)}
    if isinstance(m, nn.ELU):
        return {"op": "elu", "alpha": float(m.alpha)}
    if isinstance(m, nn.CELU):
        return {"op": "celu", "alpha": float(m.alpha)}
    if isinstance(m, nn.SELU):
        return {"op": "selu"}
    if isinstance(m, nn.Sigmoid):
        return {"op": "sigmoid"}
    if isinstance(m, nn.Tanh):
        return {"op": "tanh"}
    if isinstance(m, nn.GELU):
        return {"op": "gelu", "approximate": m.approximate}
    if isinstance(m, nn.SiLU):
        return {"op": "silu"}
    if isinstance(m, nn.Softplus):
        return {"op": "softplus", "beta": float(m.beta), "threshold": float(m.threshold)}
    if isinstance(m, nn.Hardswish):
        return {"op": "hardswish"}
    if isinstance(m, nn.Hardsigmoid):
        return {"op": "hardsigmoid"}
    if isinstance(m, nn.Softmax):
        return {"op": "softmax", "dim": m.dim}
    return None


def _plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _walk(module: nn.Module, path: str, w: _Writer, depth: int = 0) -> None:
    from convscope.models.architectures import ConvReLU, DenseReLU
    from convscope.models.graph import GlobalPool2d, PaddedAvgPool2d

    where = path or "the model"
    if depth > 64:
        raise JSForwardUnsupported(f"{where}: nested deeper than 64 levels")
    if module._forward_hooks or module._forward_pre_hooks:
        raise JSForwardUnsupported(f"{where}: has forward hooks of its own")
    kind = type(module)
    op: dict[str, Any] | None = None
    if _plain_sequential(module) or kind in (ConvReLU, DenseReLU):
        # ConvReLU / DenseReLU: relu(conv(x)) / relu(linear(x)), their children in order
        for name, child in module.named_children():
            _walk(child, f"{path}.{name}" if path else name, w, depth + 1)
    elif kind is nn.Conv2d:
        op = _conv(module, w, where)
    elif kind is nn.MaxPool2d:
        op = _pool(module, "maxpool2d", where)
    elif kind is nn.AvgPool2d:
        op = _pool(module, "avgpool2d", where)
    elif kind is PaddedAvgPool2d:
        op = {"op": "padded_avgpool2d", "k": list(module.kernel_size), "stride": list(module.stride),
              "pad": list(module.padding)}
    elif kind is GlobalPool2d:
        op = {"op": "global_pool", "mode": module.mode}
    elif kind in (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d):
        size = module.output_size
        size = [size, size] if isinstance(size, int) else list(size)
        if any(s is None for s in size):
            raise JSForwardUnsupported(f"{where}: adaptive pooling with a None output size")
        op = {"op": "adaptive_pool", "mode": "avg" if kind is nn.AdaptiveAvgPool2d else "max", "size": size}
    elif kind in (nn.ZeroPad2d, nn.ConstantPad2d):
        pads = [int(p) for p in module.padding]
        if len(pads) != 4 or min(pads) < 0:
            raise JSForwardUnsupported(f"{where}: {kind.__name__} with padding {pads} (four non-negative amounts run)")
        value = float(getattr(module, "value", 0.0))
        op = {"op": "pad", "pad": pads, "value": "-inf" if value == float("-inf") else ("inf" if value == float("inf") else value)}
    elif kind is nn.Flatten:
        if module.start_dim != 1 or module.end_dim != -1:
            raise JSForwardUnsupported(f"{where}: Flatten({module.start_dim}, {module.end_dim}) (only per-sample flatten runs)")
        op = {"op": "flatten"}
    elif kind is nn.Linear:
        op = {"op": "linear", "in": module.in_features, "out": module.out_features, "w": w.tensor(module.weight),
              "b": w.tensor(module.bias)}
    elif kind in (nn.BatchNorm1d, nn.BatchNorm2d):
        op = _batchnorm(module, w, where)
    elif kind in (nn.Dropout, nn.Dropout2d, nn.Identity):
        op = None  # nothing at inference
    elif kind.__module__.startswith("torch.nn") and _activation(module) is not None and not module._modules:
        op = _activation(module)
    else:
        raise JSForwardUnsupported(
            f"{where} is a {kind.__module__}.{kind.__qualname__}, which the in-page forward pass cannot run "
            "(it runs plain Sequential trees of conv, pooling, dense, batch-norm, flatten and activation layers)")
    if op is not None:
        op["from"] = where
        w.ops.append(op)
    if path in w.shown:
        w.ops.append({"op": "mark", "name": path})


def forward_program(model: nn.Module) -> dict[str, Any]:
    """The model as a program for ``forward.js`` (JSON-ready).

    Returns:
        ``{"format", "name", "input_shape" [C, H, W], "preprocessing", "mean", "std",
        "image_conversion", "class_names", "layers" [{"name", "kind", "shape"}],
        "ops" [...], "weights" (base64 float32 little-endian), "weight_count"}``.
        ``layers`` are the layers the page shows, in forward order; each has a
        ``mark`` op where its output is complete.

    Raises:
        JSForwardUnsupported: a module the page cannot run (named in the message),
            or a layer whose output the program does not reach.
    """
    from convscope.layers import model_layers
    from convscope.spec import spec_of

    spec = spec_of(model)
    layers = model_layers(model)
    writer = _Writer({layer.name for layer in layers})
    with torch.no_grad():
        _walk(model, "", writer)
    marked = [op["name"] for op in writer.ops if op["op"] == "mark"]
    missing = [layer.name for layer in layers if layer.name not in marked]
    if missing:
        raise JSForwardUnsupported(f"layers {', '.join(missing[:5])} are not reached by the in-page program")
    data = writer.weights()
    return {
        "format": FORMAT,
        "name": spec.name,
        "input_shape": list(spec.input_shape),
        "preprocessing": spec.preprocessing,
        "mean": None if spec.mean is None else list(spec.mean),
        "std": None if spec.std is None else list(spec.std),
        "image_conversion": spec.image_conversion,
        "class_names": list(spec.class_names),
        "layers": [{"name": layer.name, "kind": layer.kind, "shape": list(layer.shape)} for layer in layers],
        "ops": writer.ops,
        "weights": base64.b64encode(data).decode("ascii"),
        "weight_count": writer.size,
    }


__all__ = ["FORMAT", "JSForwardUnsupported", "forward_program"]
