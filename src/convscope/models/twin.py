"""Private copies of a model for input-gradient work (OIPs, dreams).

Gradient ascent on the *input* needs neither weight gradients nor the layers after
the one it reads, and on a CPU it is dominated by a few badly shaped kernels. A
*twin* is a copy of the model, never the caller's model, that computes the same
function faster:

- :func:`frozen_twin`: eval mode, parameters' ``requires_grad`` off, channels-last
  memory format (oneDNN's max-pooling is ≈ 6× faster and its convolutions ≈ 1.4×
  faster on channels-last data).
- :func:`gradient_twin`: a frozen twin with two exact rewrites:

  1. **ReLU after max-pooling.** ``maxpool(relu(x)) == relu(maxpool(x))`` element
     for element (ReLU is monotonic), and the input gradients are identical too
     (an all-negative window passes no gradient either way). Pooling first runs
     the ReLU and its backward on a quarter of the values. Only applied to a
     :class:`~convscope.models.architectures.ConvReLU` block whose own output
     nobody reads.
  2. **Single-channel input convolutions** (``Conv2D_1``: 1 → 32 channels) get a
     hand-written input gradient: one ``(k², C) @ (C, N·H·W)`` matmul and k²
     shifted adds instead of oneDNN's backward-data kernel, which is ≈ 5× slower
     for one input channel. Same numbers up to float rounding.

- :func:`input_extent`: the top-left part of the input that can influence given
  layers at all. For Model A, ``Conv2D_3`` never sees the last two rows and
  columns of the 28×28 image (the 2×2 poolings drop them), so the ascent feeds
  only the 26×26 part to the network; the gradient on the rest is exactly zero
  either way.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from convscope.address import PSEUDO_LAYERS, parse_address
from convscope.models.architectures import ConvReLU
from convscope.probe import Probe
from convscope.receptive_field import field_geometry


def frozen_twin(model: nn.Module, *, channels_last: bool = True) -> nn.Module:
    """An eval-mode copy of ``model`` without parameter gradients, channels-last by
    default. The caller's model is never modified. A model that cannot be copied
    is returned as is (still correct, just slower)."""
    try:
        twin = copy.deepcopy(model)
    except Exception:  # noqa: BLE001 - an uncopyable model still works, just slower
        return model
    twin.eval()
    for parameter in twin.parameters():
        parameter.requires_grad_(False)
    return twin.to(memory_format=torch.channels_last) if channels_last else twin


def gradient_twin(model: nn.Module, read_layers: Iterable[str] | None = None) -> nn.Module:
    """A :func:`frozen_twin` with the exact rewrites of this module's docstring.

    Args:
        model: the network (unchanged).
        read_layers: layer names/addresses whose outputs will be read through a
            :class:`~convscope.probe.Probe`; their values are kept exactly.
            ``None`` (default): any layer may be read, so no ReLU is moved.

    Returns:
        The twin (``model`` itself only if it could not be copied).
    """
    twin = frozen_twin(model)
    if twin is model:
        return model
    read = [parse_address(layer).layer for layer in read_layers] if read_layers is not None else None
    # child order is forward order only in a sequential model
    children = list(twin.named_children()) if read is not None and isinstance(twin, nn.Sequential) else []
    for (name, block), (pool_name, pool) in zip(children, children[1:]):
        if (
            isinstance(block, ConvReLU)
            and isinstance(block.relu, nn.ReLU)
            and isinstance(pool, nn.MaxPool2d)
            and not any(layer == name or layer.startswith(name + ".") for layer in read)
            and not any(layer.startswith(pool_name + ".") for layer in read)
        ):
            block.relu = nn.Identity()
            setattr(twin, pool_name, nn.Sequential(pool, nn.ReLU()))
    for module in list(twin.modules()):
        for child_name, child in list(module.named_children()):
            if SingleChannelConv2d.supports(child):
                setattr(module, child_name, SingleChannelConv2d.from_conv(child))
    return twin


class _SingleChannelConvFunction(torch.autograd.Function):
    """``F.conv2d`` for one input channel, stride 1, no dilation, with a fast input
    gradient (the weight is frozen: no weight gradient)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, int]):
        ctx.save_for_backward(weight)
        ctx.input_hw = x.shape[-2:]
        ctx.input_dtype = x.dtype
        ctx.padding = padding
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        (weight,) = ctx.saved_tensors
        n, channels, out_h, out_w = grad_output.shape
        kh, kw = weight.shape[-2:]
        pad_h, pad_w = ctx.padding
        # (N, C, H', W') viewed as rows of C channels (free for channels-last data)
        rows = grad_output.permute(0, 2, 3, 1).reshape(-1, channels).to(weight.dtype)
        taps = (weight.reshape(channels, kh * kw).t() @ rows.t()).reshape(kh * kw, n, out_h, out_w)
        grad = taps.new_zeros(n, out_h + kh - 1, out_w + kw - 1)
        for i in range(kh):
            for j in range(kw):
                grad[:, i : i + out_h, j : j + out_w] += taps[i * kw + j]
        height, width = ctx.input_hw
        grad = grad[:, pad_h : pad_h + height, pad_w : pad_w + width]
        return grad.unsqueeze(1).to(ctx.input_dtype), None, None, None


class SingleChannelConv2d(nn.Conv2d):
    """Drop-in for a frozen ``nn.Conv2d`` with one input channel (the first layer of
    a grey-scale network): the same outputs, a faster input gradient. Still an
    ``nn.Conv2d`` (kernel, padding, weight), so receptive-field code sees it.
    Input ``(N, 1, H, W)`` → ``(N, C, H', W')``."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "SingleChannelConv2d":
        """A stand-in sharing ``conv``'s weight and bias tensors."""
        twin = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding,
            bias=conv.bias is not None, device="meta",
        )
        twin.weight = conv.weight
        twin.bias = conv.bias
        return twin

    @staticmethod
    def supports(module: nn.Module) -> bool:
        """True for a frozen 1-input-channel ``nn.Conv2d`` this class can stand in for."""
        return (
            type(module) is nn.Conv2d
            and module.in_channels == 1
            and module.groups == 1
            and tuple(module.stride) == (1, 1)
            and tuple(module.dilation) == (1, 1)
            and not isinstance(module.padding, str)
            and module.padding_mode == "zeros"
            and not module.weight.requires_grad
            and (module.bias is None or not module.bias.requires_grad)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = (int(self.padding[0]), int(self.padding[1]))
        if not torch.is_grad_enabled() or not x.requires_grad:
            return F.conv2d(x, self.weight, self.bias, padding=padding)
        return _SingleChannelConvFunction.apply(x, self.weight, self.bias, padding)


def input_extent(model: nn.Module, layers: Iterable[str], input_hw: tuple[int, int]) -> tuple[int, int]:
    """``(h, w)``: the outputs of ``layers`` depend only on ``input[..., :h, :w]``.

    Computed from the receptive-field geometry (convolutions and poolings without
    padding leave bottom/right rows unused) and then checked: the layers' outputs
    on a random input and on its crop must agree, else the full ``input_hw`` is
    returned. Pseudo-layers and layers after ``Flatten`` need the whole input.
    """

    height, width = int(input_hw[0]), int(input_hw[1])
    names = list(dict.fromkeys(parse_address(layer).layer for layer in layers))
    if not names or any(name in PSEUDO_LAYERS for name in names):
        return height, width
    probe_input = torch.randn(1, 1, height, width, generator=torch.Generator().manual_seed(0))
    try:
        parameter = next(model.parameters())
        probe_input = probe_input.to(device=parameter.device, dtype=parameter.dtype)
    except StopIteration:
        pass
    spec = getattr(model, "convscope_spec", None)
    channels = spec.channels if spec is not None else 1
    probe_input = probe_input.expand(1, channels, height, width).contiguous()
    with torch.no_grad(), Probe(model, names, detach=True) as probe:
        full = probe.run(probe_input)
    need_h, need_w = 0, 0
    for name in names:
        out = full[name]
        geometry = field_geometry(model, name) if out.ndim == 4 else None
        if geometry is None or min(geometry.start) < 0:
            return height, width
        need_h = max(need_h, geometry.start[0] + (out.shape[-2] - 1) * geometry.jump[0] + geometry.size[0])
        need_w = max(need_w, geometry.start[1] + (out.shape[-1] - 1) * geometry.jump[1] + geometry.size[1])
    need_h, need_w = min(need_h, height), min(need_w, width)
    if (need_h, need_w) == (height, width):
        return height, width
    try:
        with torch.no_grad(), Probe(model, names, detach=True) as probe:
            cropped = probe.run(probe_input[..., :need_h, :need_w])
    except RuntimeError:
        return height, width
    for name in names:
        if cropped[name].shape != full[name].shape or not torch.allclose(cropped[name], full[name], rtol=1e-5, atol=1e-6):
            return height, width
    return need_h, need_w


__all__ = ["SingleChannelConv2d", "frozen_twin", "gradient_twin", "input_extent"]
