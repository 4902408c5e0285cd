"""Every method on models that were never in the package: exact tensors on a
hand-set RGB net (F.relu, torch.relu, in-place ReLU modules and calls), the
rectifier rules on the zoo models checked against an independent implementation,
occlusion against an explicit loop, Grad-CAM's default layer, class names as
targets, per-channel baselines."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import X_TINY_RGB
from torch import nn
from zoo import residual_net, rgb_net, tuple_net

from convscope.address import AddressError
from convscope.explain import (
    Deconvnet, GradCAM, GuidedBackprop, GuidedGradCAM, IntegratedGradients, Occlusion, Saliency, SmoothGrad,
    default_cam_layer, default_window, make_method, method_names, relu_rule, resolve_baseline,
)


def _rgb(r, g, b) -> torch.Tensor:
    """(1, 3, 1, 2) from per-channel pixel pairs."""
    return torch.tensor([[[r], [g], [b]]], dtype=torch.float32)


# hand-computed (see TinyRGB in conftest.py): class 0 gets d logit/d hidden = (1, -2), class 1 (-1, 1)
EXPECTED = {
    # gradient: hidden mask (1, 0) -> fc1^T -> mask (1, 0, 1, 1) -> conv^T
    ("saliency", 0): _rgb([0.5, 0.0], [-1.0, 0.0], [-1.0, 0.0]),
    ("saliency", 1): _rgb([-0.5, 0.0], [1.0, 0.0], [1.0, 0.0]),
    # deconvnet: relu of the backward signal at each ReLU, forward masks ignored
    ("deconvnet", 0): _rgb([1.0, 1.0], [0.0, 0.0], [-1.0, -1.0]),
    ("deconvnet", 1): _rgb([0.0, 1.0], [0.0, 0.0], [0.0, -1.0]),
    # guided: relu of the backward signal AND the forward mask
    ("gbp", 0): _rgb([1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]),
    ("gbp", 1): _rgb([0.0, 0.0], [0.0, 0.0], [0.0, 0.0]),
}
RELU_KINDS = [("F.relu", "module"), ("torch.relu", "F.relu_inplace"), ("relu_", "module"), ("F.relu", "relu_"),
              ("F.relu_inplace_ignored", "module_ignored")]


@pytest.mark.parametrize("first, second", RELU_KINDS)
@pytest.mark.parametrize("method, target", sorted(EXPECTED))
def test_rules_exact_on_a_hand_set_rgb_net(tiny_rgb, first, second, method, target):
    """Every kind of ReLU call (function, in-place call, in-place module) gets the rule."""
    explainer, rest = make_method(tiny_rgb(first, second), method)
    assert torch.equal(explainer.attribute(X_TINY_RGB, target, **rest), EXPECTED[(method, target)])


def test_saliency_is_the_explicit_gradient(tiny_rgb):
    model = tiny_rgb()
    for target in (0, 1):
        x = X_TINY_RGB.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x)[0, target], x)
        assert torch.equal(Saliency(model).attribute(X_TINY_RGB, target), grad)
    # and on the zoo's RGB net (BatchNorm, strided conv), per sample
    net = rgb_net()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 2, 3])
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(leaf).gather(1, targets[:, None]).sum(), leaf)
    assert torch.allclose(Saliency(net).attribute(x, targets), grad, atol=1e-7)


def test_class_names_are_targets(tiny_rgb):
    model = tiny_rgb()
    assert torch.equal(Saliency(model).attribute(X_TINY_RGB, "down"), EXPECTED[("saliency", 1)])
    assert torch.equal(Saliency(model).attribute(X_TINY_RGB, "UP"), EXPECTED[("saliency", 0)])  # case-insensitive
    with pytest.raises(AddressError, match="neither a class name \\(up, down\\), a class number 0..1"):
        Saliency(model).attribute(X_TINY_RGB, "sideways")
    with pytest.raises(AddressError, match="whole layer"):
        Saliency(model).attribute(X_TINY_RGB, "conv")


def test_gradcam_exact_and_its_default_layer(tiny_rgb):
    model = tiny_rgb()
    assert default_cam_layer(model) == "conv"
    # conv maps A0 = (1, -2), A1 = (0.5, 1); their class-0 gradients (1, 0), (-1, 0): weights 0.5, -0.5
    cam = GradCAM(model).attribute(X_TINY_RGB, 0, relu=False, upsample=False)
    assert torch.equal(cam, torch.tensor([[[[0.25, -1.5]]]]))
    assert torch.equal(GradCAM(model).attribute(X_TINY_RGB, 0, upsample=False), torch.tensor([[[[0.25, 0.0]]]]))
    # guided Grad-CAM: guided backprop (every channel) × the upsampled CAM
    assert torch.equal(GuidedGradCAM(model).attribute(X_TINY_RGB, 0), EXPECTED[("gbp", 0)] * torch.tensor([0.25, 0.0]))


def test_occlusion_exact_with_a_per_channel_baseline(tiny_rgb):
    model = tiny_rgb()
    # "mean" = each channel's mean: (1, 0.25, 1.5). Occluding pixel 0 kills class 0 (0.5 -> 0),
    # occluding pixel 1 leaves it at 0.5
    attr = Occlusion(model).attribute(X_TINY_RGB, 0, window=1, stride=1, baseline="mean")
    assert torch.equal(attr, torch.tensor([[[[0.5, 0.0]]] * 3]).view(1, 3, 1, 2))
    base = resolve_baseline(X_TINY_RGB, "mean")
    assert base.shape == (1, 3, 1, 1) and torch.equal(base.flatten(), torch.tensor([1.0, 0.25, 1.5]))
    assert torch.equal(resolve_baseline(X_TINY_RGB, "min").flatten(), torch.tensor([0.0, -0.5, 1.0]))
    with pytest.raises(ValueError, match="finite"):
        resolve_baseline(X_TINY_RGB, float("nan"))


@pytest.mark.parametrize("baseline", ["mean", "min", -0.3])
def test_occlusion_equals_an_explicit_loop(baseline):
    """Captum's definition written out: for every window position (the last one clipped at the
    edge) occlude all channels with the baseline, record the drop of the target, average over
    the windows covering each pixel."""
    net = rgb_net(seed=1)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([1, 3])
    window, stride = 6, 4
    base = resolve_baseline(x, baseline).expand_as(x)
    with torch.no_grad():
        original = net(x).gather(1, targets[:, None])[:, 0]
        total = torch.zeros(2, 1, 32, 32)
        count = torch.zeros(1, 1, 32, 32)
        starts = [0, 4, 8, 12, 16, 20, 24, 28]  # the last window covers rows 28..31 only
        for r in starts:
            for c in starts:
                occluded = x.clone()
                occluded[:, :, r : r + window, c : c + window] = base[:, :, r : r + window, c : c + window]
                drop = original - net(occluded).gather(1, targets[:, None])[:, 0]
                total[:, :, r : r + window, c : c + window] += drop.view(2, 1, 1, 1)
                count[:, :, r : r + window, c : c + window] += 1
        assert (count > 0).all()  # every pixel is covered
        expected = (total / count).expand(2, 3, 32, 32)
    ours = Occlusion(net).attribute(x, targets, window=window, stride=stride, baseline=baseline)
    assert float(expected[..., 30:, 30:].abs().min()) > 0  # the clipped corner windows count
    assert torch.allclose(ours, expected, atol=1e-6)


def test_occlusion_defaults_scale_with_the_input():
    assert default_window(28, 28) == (4, 2)  # the reference's choice on MNIST
    assert default_window(32, 32) == (5, 2)
    assert default_window(20, 20) == (3, 1)
    assert default_window(224, 224) == (32, 16)
    net = rgb_net()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    assert torch.equal(Occlusion(net).attribute(x, 0), Occlusion(net).attribute(x, 0, window=5, stride=2))
    with pytest.raises(ValueError, match="window 1..32"):
        Occlusion(net).attribute(x, 0, window=40)


# -- the rules on the zoo models, against an independent implementation ---------------------------------


class _RuleReLU(torch.autograd.Function):
    """The test's own rectifier rules (written apart from convscope's)."""

    @staticmethod
    def forward(ctx, x, rule):
        ctx.rule = rule
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if ctx.rule == "deconvnet":
            return grad.clamp(min=0), None
        return grad.clamp(min=0) * (x > 0).to(grad.dtype), None


def _explicit_residual(net: nn.Module, x: torch.Tensor, rule: str) -> torch.Tensor:
    def relu(t):
        return _RuleReLU.apply(t, rule)

    x = relu(net.stem(x))
    for stage in net.stages:
        y = stage.conv2(relu(stage.body(x)))
        x = relu(y + x)
    return net.head(torch.flatten(net.pool(x), 1))


def _explicit_rgb(net: nn.Module, x: torch.Tensor, rule: str) -> torch.Tensor:
    def relu(t):
        return _RuleReLU.apply(t, rule)

    x = relu(net.bn1(net.conv1(x)))
    x = relu(net.conv2(x))
    x = net.pool(relu(net.conv3(x)))
    return net.heads["out"](relu(net.heads["hidden"](torch.flatten(x, 1))))


@pytest.mark.parametrize("make, explicit, shape, calls", [
    (residual_net, _explicit_residual, (1, 20, 20), 5),  # nn.ReLU(inplace=True) reused twice per block
    (rgb_net, _explicit_rgb, (3, 32, 32), 4),  # F.relu
])
def test_rules_on_zoo_models_equal_an_independent_implementation(make, explicit, shape, calls):
    net = make()
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(4))
    targets = torch.tensor([0, 1, 2])
    plain = Saliency(net).attribute(x, targets)
    for cls, rule in ((Deconvnet, "deconvnet"), (GuidedBackprop, "guided")):
        leaf = x.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(explicit(net, leaf, rule).gather(1, targets[:, None]).sum(), leaf)
        ours = cls(net).attribute(x, targets)
        assert torch.allclose(ours, expected, atol=1e-6, rtol=1e-5), cls.__name__
        assert (ours - plain).abs().max() > 0.05 * plain.abs().max()  # really not the plain gradient
    with relu_rule("guided") as mode:
        net(x[:1].clone().requires_grad_(True))
    assert mode.calls == calls


def test_gradcam_default_layer_is_the_last_conv_layer_with_maps(shipped_model):
    assert default_cam_layer(shipped_model) == "Conv2D_3"
    assert default_cam_layer(rgb_net()) == "conv3"  # the average pool after it holds no conv
    assert default_cam_layer(residual_net()) == "stages.1"  # a residual block (post-ReLU output)
    assert GradCAM(residual_net()).title == "Grad-CAM (stages.1)"
    with pytest.raises(AddressError, match="layer with maps"):
        GradCAM(rgb_net(), "heads.hidden")


def test_gradcam_on_rgb_net_equals_an_explicit_computation():
    net = rgb_net()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([2, 0])
    h = F.relu(net.bn1(net.conv1(x)))
    h = F.relu(net.conv2(h))
    acts = net.conv3(h)  # (2, 24, 14, 14), before the F.relu
    logits = net.heads["out"](F.relu(net.heads["hidden"](torch.flatten(net.pool(F.relu(acts)), 1))))
    (grads,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), acts)
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1, keepdim=True)).detach()
    assert torch.allclose(GradCAM(net).attribute(x, targets, upsample=False), cam, atol=1e-6)
    up = F.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(GradCAM(net).attribute(x, targets), up, atol=1e-6)


@pytest.mark.parametrize("make, shape", [(rgb_net, (3, 32, 32)), (residual_net, (1, 20, 20)), (tuple_net, (1, 28, 28))])
def test_every_registered_method_on_zoo_models(make, shape):
    net = make()
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(6))
    options = {"smoothgrad": {"samples": 3}, "ig": {"steps": 8}}
    for name in method_names():
        explainer, rest = make_method(net, name, **options.get(name, {}))
        attr = explainer.attribute(x, None, **rest)
        channels = 1 if name == "gradcam" else shape[0]
        assert attr.shape == (2, channels, *shape[1:]), name
        assert torch.isfinite(attr).all() and attr.abs().sum() > 0, name


def test_integrated_gradients_complete_on_rgb_net():
    net = rgb_net()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    attr, delta = IntegratedGradients(net).attribute(x, "brick", baseline="mean", steps=64,
                                                     return_convergence_delta=True)
    base = resolve_baseline(x, "mean").expand_as(x)
    with torch.no_grad():
        gap = net(x)[:, 1] - net(base)[:, 1]
    assert torch.allclose(attr.sum(dim=(1, 2, 3)), gap + delta, atol=1e-5)
    # the quadrature converges: far fewer steps leave a larger gap
    _, rough = IntegratedGradients(net).attribute(x, "brick", baseline="mean", steps=3, return_convergence_delta=True)
    assert float(delta.abs().sum()) < 0.2 * float(rough.abs().sum())


def test_smoothgrad_wraps_gradient_methods_on_rgb():
    net = rgb_net()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    plain = GuidedBackprop(net).attribute(x, 1)
    assert torch.allclose(SmoothGrad(GuidedBackprop(net), samples=2, noise_level=0.0).attribute(x, 1), plain, atol=1e-7)
    with pytest.raises(ValueError, match="wraps a gradient method"):
        make_method(net, "smoothgrad", base="occlusion")


def test_inputs_with_the_wrong_channel_count_are_refused():
    with pytest.raises(ValueError, match="1 channels but the model takes 3"):
        Saliency(rgb_net()).attribute(torch.zeros(1, 1, 32, 32), 0)


@pytest.mark.parametrize("target, message", [(True, "whole number or a class name"), (1.5, "whole number"),
                                             ([0, 1, 0], "3 class targets for 1 inputs"), (-1, "0..1"), (2, "0..1")])
def test_bad_class_targets(tiny_rgb, target, message):
    with pytest.raises(ValueError, match=message):
        Saliency(tiny_rgb()).attribute(X_TINY_RGB, target)


def test_probability_targets_are_the_softmax(tiny_rgb):
    model = tiny_rgb()
    x = X_TINY_RGB.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.softmax(model(x), dim=1)[0, 1], x)
    assert torch.allclose(Saliency(model).attribute(X_TINY_RGB, "probabilities:1"), grad, atol=1e-7)
    # occlusion and integrated gradients read the same softmax
    with torch.no_grad():
        p = torch.softmax(model(X_TINY_RGB), 1)[0, 1]
        occluded = X_TINY_RGB.clone()
        occluded[..., 0] = 0
        drop = p - torch.softmax(model(occluded), 1)[0, 1]
    attr = Occlusion(model).attribute(X_TINY_RGB, "probabilities:1", window=1, stride=1, baseline=0.0)
    assert torch.allclose(attr[0, :, 0, 0], drop.expand(3), atol=1e-7)
    attr, delta = IntegratedGradients(model).attribute(X_TINY_RGB, "probabilities:1", steps=64,
                                                       return_convergence_delta=True)
    with torch.no_grad():
        gap = p - torch.softmax(model(torch.zeros_like(X_TINY_RGB)), 1)[0, 1]
    assert torch.allclose(attr.sum(), gap + delta[0], atol=1e-6) and abs(float(delta[0])) < 1e-3
