"""Exact tensors on tiny hand-set networks, the ReLU rules on every kind of relu
call, and the model left unchanged (also after errors)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from convscope.explain import (
    Deconvnet, GradCAM, GuidedBackprop, IntegratedGradients, Occlusion, Saliency, relu_rule,
)

X_DENSE = torch.tensor([[[[1.0, 2.0]]]])  # hidden pre-activation (3, -1): unit 0 on, unit 1 off


@pytest.mark.parametrize(
    "cls, target, expected",
    [
        # class 0: dlogit/dh = (-1, 2)
        (Saliency, 0, [-1.0, -1.0]),  # (-1, 0) through V^T
        (Deconvnet, 0, [2.0, -2.0]),  # relu(-1, 2) = (0, 2) through V^T
        (GuidedBackprop, 0, [0.0, 0.0]),  # (0, 2) * on-mask (1, 0)
        # class 1: dlogit/dh = (1, 1)
        (Saliency, 1, [1.0, 1.0]),
        (Deconvnet, 1, [2.0, 0.0]),
        (GuidedBackprop, 1, [1.0, 1.0]),
    ],
)
def test_backward_rules_exact(tiny_dense, cls, target, expected):
    result = cls(tiny_dense()).attribute(X_DENSE, target=target)
    assert torch.equal(result, torch.tensor(expected).view(1, 1, 1, 2))


def test_deconvnet_uses_max_pool_switches_and_rectifies(tiny_pool):
    x = torch.tensor([[[[1.0, 3.0], [2.0, -1.0]]]])  # pool switch at (0, 1)
    assert torch.equal(Deconvnet(tiny_pool(2.0)).attribute(x, 0), torch.tensor([[[[0.0, 2.0], [0.0, 0.0]]]]))
    # a negative signal is rectified away by the deconvnet, kept by the gradient
    assert torch.equal(Deconvnet(tiny_pool(-2.0)).attribute(x, 0), torch.zeros(1, 1, 2, 2))
    assert torch.equal(Saliency(tiny_pool(-2.0)).attribute(x, 0), torch.tensor([[[[0.0, -2.0], [0.0, 0.0]]]]))
    # Zeiler & Fergus: the kept map is sent down with its own activation (3)
    assert torch.equal(Deconvnet(tiny_pool(2.0)).attribute(x, "pool:0"), torch.tensor([[[[0.0, 3.0], [0.0, 0.0]]]]))
    # a map target of the gradient methods is the map's mean: relu map is (1,3,2,0) -> grad 1/4 where on
    assert torch.allclose(Saliency(tiny_pool(2.0)).attribute(x, "relu:0"), torch.tensor([[[[0.25, 0.25], [0.25, 0.0]]]]))


def test_gradcam_exact(tiny_cam):
    x = torch.tensor([[[[1.0, 2.0], [-1.0, 3.0]]]])
    # maps A0 = relu(x) = (1,2;0,3), A1 = relu(-x) = (0,0;1,0); weights +1, -1
    cam = GradCAM(tiny_cam(), "relu").attribute(x, 0, relu=False, upsample=False)
    assert torch.equal(cam, torch.tensor([[[[1.0, 2.0], [-1.0, 3.0]]]]))
    cam = GradCAM(tiny_cam(), "relu").attribute(x, 0, upsample=False)
    assert torch.equal(cam, torch.tensor([[[[1.0, 2.0], [0.0, 3.0]]]]))


def test_integrated_gradients_exact_and_complete(tiny_dense):
    ig = IntegratedGradients(tiny_dense())
    # f0(a x) = -3a on the whole path, gradient (-1, -1): IG = (-1, -1) * (1, 2)
    # (trapezoid / left rules would sample alpha = 0, where relu'(0) = 0: not exact here)
    for method in ("gausslegendre", "riemann_right", "riemann_middle"):
        attr, delta = ig.attribute(X_DENSE, 0, steps=7, method=method, return_convergence_delta=True)
        assert torch.allclose(attr, torch.tensor([[[[-1.0, -2.0]]]]), atol=1e-6)
        assert abs(float(delta[0])) < 1e-6


def test_occlusion_exact(tiny_dense):
    # occluding x1 -> f0 = -2 (drop -1); occluding x2 -> f0 = +1 (drop -4)
    attr = Occlusion(tiny_dense()).attribute(X_DENSE, 0, window=1, stride=1, baseline=0.0)
    assert torch.equal(attr, torch.tensor([[[[-1.0, -4.0]]]]))


@pytest.mark.parametrize("kind", ["F.relu", "torch.relu", "relu_", "inplace"])
def test_rules_apply_to_functional_and_inplace_relu(shipped_model, batch, functional_model_a, kind):
    x, labels = batch
    functional = functional_model_a(shipped_model, kind)
    assert torch.equal(functional(x), shipped_model(x))
    for cls in (Deconvnet, GuidedBackprop, Saliency):
        ours_modules = cls(shipped_model).attribute(x[:4], labels[:4])
        ours_functional = cls(functional).attribute(x[:4], labels[:4])
        assert torch.allclose(ours_functional, ours_modules, atol=1e-6), (cls.name, kind)


def test_relu_rule_counts_every_relu_call(shipped_model, batch, functional_model_a):
    x, _ = batch
    with relu_rule("deconvnet") as mode:
        functional_model_a(shipped_model, "relu_")(x[:1].clone().requires_grad_())
    assert mode.calls == 4  # Conv2D_1..3 and Dense_1
    with relu_rule("guided") as mode:
        shipped_model(x[:1].clone().requires_grad_())
    assert mode.calls == 4


def _state(model: nn.Module):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )


def test_model_unchanged_after_every_method(shipped_model, batch):
    from convscope.explain import METHODS, make_method

    model = copy.deepcopy(shipped_model).train()  # training flag must come back too
    before = _state(model)
    x, labels = batch
    for name in METHODS:
        explainer, rest = make_method(model, name, **({"samples": 2} if name == "smoothgrad" else {}))
        explainer.attribute(x[:2], labels[:2], **rest)
        assert _hooks(model) == 0, name
        assert model.training, name
        assert all(p.grad is None for p in model.parameters()), name
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch._C._len_torch_function_stack() == 0


class _Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        torch.relu(self.conv(x))
        raise RuntimeError("boom after a relu")


def test_everything_restored_after_an_error():
    model = _Exploding()
    with pytest.raises(RuntimeError, match="boom"):
        Deconvnet(model).attribute(torch.randn(1, 1, 5, 5), target=0)
    with pytest.raises(RuntimeError, match="boom"):
        GradCAM(model, "conv").attribute(torch.randn(1, 1, 5, 5), target=0)
    assert torch._C._len_torch_function_stack() == 0
    assert _hooks(model) == 0
    assert model.training
    # relu behaves normally again: its true gradient, not a rectified one
    x = torch.tensor([1.0, -1.0], requires_grad=True)
    (torch.relu(x) * torch.tensor([-3.0, 5.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-3.0, 0.0]))
