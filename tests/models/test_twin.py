"""Model twins for input-gradient work: same function, same input gradient, the
caller's model untouched; the input extent a layer can see."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convscope.models.architectures import ModelB
from convscope.models.twin import SingleChannelConv2d, frozen_twin, gradient_twin, input_extent
from convscope.probe import Probe


def _outputs_and_gradient(model: nn.Module, layer: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    with Probe(model, [layer]) as probe:
        out = probe.run(x)[layer]
    # a weighted sum so every position/map contributes a different gradient
    weights = torch.linspace(-1.0, 2.0, out[0].numel()).reshape(out.shape[1:])
    (gradient,) = torch.autograd.grad((out * weights).sum(), x)
    return out.detach(), gradient


@pytest.mark.parametrize("layer", ["Conv2D_1", "Max_Pool_1", "Conv2D_2", "Conv2D_3", "Conv2D_3.conv", "logits"])
def test_gradient_twin_keeps_values_and_input_gradients(shipped_model, layer):
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    twin = gradient_twin(shipped_model, [layer])
    out, gradient = _outputs_and_gradient(shipped_model, layer, x)
    twin_out, twin_gradient = _outputs_and_gradient(twin, layer, x)
    assert torch.allclose(twin_out, out, rtol=1e-5, atol=1e-5)
    assert torch.allclose(twin_gradient, gradient, rtol=1e-4, atol=1e-6 * float(gradient.abs().max()))
    assert float(gradient.abs().max()) > 0


def test_relu_moves_after_pooling_only_where_nobody_reads_the_block(shipped_model):
    twin = gradient_twin(shipped_model, ["Conv2D_3"])
    assert isinstance(twin.Conv2D_1.relu, nn.Identity) and isinstance(twin.Conv2D_2.relu, nn.Identity)
    assert isinstance(twin.Max_Pool_1, nn.Sequential) and isinstance(twin.Max_Pool_1[1], nn.ReLU)
    assert isinstance(twin.Conv2D_1.conv, SingleChannelConv2d)
    kept = gradient_twin(shipped_model, ["Conv2D_1", "Conv2D_3"])
    assert isinstance(kept.Conv2D_1.relu, nn.ReLU) and isinstance(kept.Conv2D_2.relu, nn.Identity)
    untouched = gradient_twin(shipped_model)  # no read layers given: every ReLU stays
    assert all(isinstance(getattr(untouched, n).relu, nn.ReLU) for n in ("Conv2D_1", "Conv2D_2", "Conv2D_3"))
    # the caller's model is never modified
    assert type(shipped_model.Conv2D_1.conv) is nn.Conv2d and isinstance(shipped_model.Conv2D_1.relu, nn.ReLU)
    assert isinstance(shipped_model.Max_Pool_1, nn.MaxPool2d)
    assert all(p.requires_grad for p in shipped_model.parameters())
    assert not any(p.requires_grad for p in twin.parameters())


@pytest.mark.parametrize("padding", [0, 1, 2])
def test_single_channel_conv_input_gradient_equals_torch(padding):
    gen = torch.Generator().manual_seed(padding)
    conv = nn.Conv2d(1, 7, 3, padding=padding)
    conv.requires_grad_(False)
    fast = SingleChannelConv2d.from_conv(conv)
    x = torch.randn(3, 1, 11, 9, generator=gen)
    upstream = torch.randn(3, 7, 11 - 2 + 2 * padding, 9 - 2 + 2 * padding, generator=gen)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad((F.conv2d(a, conv.weight, conv.bias, padding=padding) * upstream).sum(), a)
    out = fast(b)
    (got,) = torch.autograd.grad((out * upstream).sum(), b)
    assert torch.allclose(out, conv(x), atol=1e-6)
    assert got.shape == x.shape
    assert torch.allclose(got, expected, atol=1e-5)


def test_single_channel_conv_only_replaces_what_it_supports():
    assert SingleChannelConv2d.supports(nn.Conv2d(1, 4, 3).requires_grad_(False))
    assert not SingleChannelConv2d.supports(nn.Conv2d(1, 4, 3))  # trainable: weight gradients needed
    assert not SingleChannelConv2d.supports(nn.Conv2d(2, 4, 3).requires_grad_(False))
    assert not SingleChannelConv2d.supports(nn.Conv2d(1, 4, 3, stride=2).requires_grad_(False))


def test_input_extent_is_what_the_layer_can_see(shipped_model):
    assert input_extent(shipped_model, ["Conv2D_3"], (28, 28)) == (26, 26)
    assert input_extent(shipped_model, ["Conv2D_3:7"], (28, 28)) == (26, 26)
    assert input_extent(shipped_model, ["Max_Pool_2"], (28, 28)) == (26, 26)
    for layers in (["Conv2D_2"], ["Conv2D_1"], ["Dense_1"], ["logits"], ["Conv2D_3", "Conv2D_2"]):
        assert input_extent(shipped_model, layers, (28, 28)) == (28, 28)
    # independent check: the last two rows/columns have exactly zero influence on Conv2D_3
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    with Probe(shipped_model, ["Conv2D_3.conv"]) as probe:
        pre = probe.run(x)["Conv2D_3.conv"]
    (gradient,) = torch.autograd.grad(pre.sum(), x)
    assert float(gradient[..., 26:, :].abs().max()) == 0.0 and float(gradient[..., :, 26:].abs().max()) == 0.0
    assert float(gradient[..., 25, :].abs().max()) > 0 and float(gradient[..., :, 25].abs().max()) > 0


def test_padded_model_gets_no_crop_but_the_same_gradients():
    torch.manual_seed(0)
    model = ModelB().eval()
    assert input_extent(model, ["Conv2D_3"], (28, 28)) == (28, 28)  # zero padding: every pixel matters
    twin = gradient_twin(model, ["Conv2D_3"])
    assert isinstance(twin.Conv2D_1.conv, SingleChannelConv2d)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    out, gradient = _outputs_and_gradient(model, "Conv2D_3", x)
    twin_out, twin_gradient = _outputs_and_gradient(twin, "Conv2D_3", x)
    assert torch.allclose(twin_out, out, atol=1e-5)
    assert torch.allclose(twin_gradient, gradient, rtol=1e-4, atol=1e-6 * float(gradient.abs().max()))


def test_frozen_twin_is_a_channels_last_copy(shipped_model):
    twin = frozen_twin(shipped_model)
    assert twin is not shipped_model and not twin.training
    assert twin.Conv2D_2.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert shipped_model.Conv2D_2.conv.weight.data_ptr() != twin.Conv2D_2.conv.weight.data_ptr()
