"""Only the scored maps are computed: the rewritten objective gives the same score
and the same input gradient as the plain one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convscope.models.architectures import ModelB
from convscope.optvis import objectives as obj
from convscope.optvis.own_channel import own_channel_objective


def _score_and_gradient(objective, model, x):
    x = x.clone().requires_grad_(True)
    scores = objective(model, x)
    (gradient,) = torch.autograd.grad((scores * torch.arange(1.0, len(scores) + 1)).sum(), x)
    return scores.detach(), gradient


@pytest.mark.parametrize("layer", ["Conv2D_1", "Conv2D_2", "Conv2D_3", "Conv2D_3.conv"])
def test_own_channel_equals_the_full_layer(shipped_model, layer):
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    maps = [3, 0, 17, 3, 30]
    plain = obj.channels(layer, maps)
    fast = own_channel_objective(shipped_model, plain)
    assert fast is not plain and fast.name == plain.name
    expected_layers = {"Conv2D_1": (), "Conv2D_2": ("Max_Pool_1",), "Conv2D_3": ("Max_Pool_2",), "Conv2D_3.conv": ("Max_Pool_2",)}
    assert fast.layers == expected_layers[layer]
    scores, gradient = _score_and_gradient(plain, shipped_model, x)
    fast_scores, fast_gradient = _score_and_gradient(fast, shipped_model, x)
    assert torch.allclose(fast_scores, scores, atol=1e-6)
    assert torch.allclose(fast_gradient, gradient, atol=1e-6 * float(gradient.abs().max()) + 1e-9)
    if layer.endswith(".conv"):
        assert float(scores.min()) < 0  # pre-activation: no ReLU applied
    # re-indexing after freezing members
    keep = torch.tensor([4, 1])
    assert torch.allclose(fast.subset(keep)(shipped_model, x[keep]), scores[keep], atol=1e-6)


def test_single_channel_objective_is_rewritten_too(shipped_model):
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    plain = obj.channel("Conv2D_2:9")
    fast = own_channel_objective(shipped_model, plain)
    assert fast.layers == ("Max_Pool_1",)
    assert torch.allclose(fast(shipped_model, x), plain(shipped_model, x), atol=1e-6)


def test_padded_convolutions_are_respected():
    torch.manual_seed(0)
    model = ModelB().eval()
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    plain = obj.channels("Conv2D_2", [1, 40, 7, 1])
    fast = own_channel_objective(model, plain)
    assert fast is not plain
    scores, gradient = _score_and_gradient(plain, model, x)
    fast_scores, fast_gradient = _score_and_gradient(fast, model, x)
    assert torch.allclose(fast_scores, scores, atol=1e-6)
    assert torch.allclose(fast_gradient, gradient, atol=1e-6 * float(gradient.abs().max()) + 1e-9)


def test_other_objectives_are_left_alone(shipped_model):
    composite = obj.channels("Conv2D_3", [1, 2]) - 0.1 * obj.total_variation()
    dense = obj.channels("Dense_1", [1, 2])
    for objective in (composite, dense, obj.layer("Conv2D_3"), obj.unit("Conv2D_3:4@1,1")):
        assert own_channel_objective(shipped_model, objective) is objective
    wrapper = nn.Module()
    wrapper.add_module("Conv2D_3", shipped_model.Conv2D_3)
    plain = obj.channels("Conv2D_3", [1])
    assert own_channel_objective(wrapper, plain) is plain  # not a sequential model
