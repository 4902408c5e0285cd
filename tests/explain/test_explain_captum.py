"""Cross-check against an independent implementation (Captum) on Model A, and the
F.relu case where Captum's deconvnet silently degrades to the plain gradient."""

from __future__ import annotations

import warnings

import pytest
import torch

captum_attr = pytest.importorskip("captum.attr")

from convscope.explain import (  # noqa: E402
    Deconvnet, GradCAM, GuidedBackprop, GuidedGradCAM, IntegratedGradients, Occlusion, Saliency,
)

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    scale = float(theirs.abs().max())
    assert scale > 0, "a comparison of all-zero maps would prove nothing"
    assert torch.allclose(ours, theirs.detach(), atol=ATOL * max(1.0, scale), rtol=1e-4), float((ours - theirs).abs().max())


def test_saliency_matches_captum(shipped_model, batch):
    x, labels = batch
    _close(Saliency(shipped_model).attribute(x, labels), captum_attr.Saliency(shipped_model).attribute(x, target=labels, abs=False))
    _close(Saliency(shipped_model).attribute(x, 3, abs=True), captum_attr.Saliency(shipped_model).attribute(x, target=3))


def test_deconvnet_matches_captum(shipped_model, batch):
    x, labels = batch
    _close(Deconvnet(shipped_model).attribute(x, labels), captum_attr.Deconvolution(shipped_model).attribute(x, target=labels))


def test_guided_backprop_matches_captum(shipped_model, batch):
    x, labels = batch
    _close(GuidedBackprop(shipped_model).attribute(x, labels), captum_attr.GuidedBackprop(shipped_model).attribute(x, target=labels))


@pytest.mark.parametrize("layer", ["Conv2D_3", "Conv2D_2"])
def test_gradcam_matches_captum(shipped_model, batch, layer):
    x, labels = batch
    theirs = captum_attr.LayerGradCam(shipped_model, getattr(shipped_model, layer)).attribute(
        x, target=labels, relu_attributions=True
    )
    _close(GradCAM(shipped_model, layer).attribute(x, labels, upsample=False), theirs)
    upsampled = captum_attr.LayerAttribution.interpolate(theirs, (28, 28), interpolate_mode="bilinear")
    _close(GradCAM(shipped_model, layer).attribute(x, labels), upsampled)
    theirs_signed = captum_attr.LayerGradCam(shipped_model, getattr(shipped_model, layer)).attribute(x, target=labels)
    _close(GradCAM(shipped_model, layer).attribute(x, labels, relu=False, upsample=False), theirs_signed)


def test_guided_gradcam_matches_captum(shipped_model, batch):
    x, labels = batch
    theirs = captum_attr.GuidedGradCam(shipped_model, shipped_model.Conv2D_3).attribute(x, target=labels)
    _close(GuidedGradCAM(shipped_model).attribute(x, labels, mode="nearest"), theirs)


@pytest.mark.parametrize("window, stride, baseline", [(4, 2, 0.0), (6, 2, -0.4)])
def test_occlusion_matches_captum(shipped_model, batch, window, stride, baseline):
    x, labels = batch
    x, labels = x[:3], labels[:3]
    theirs = captum_attr.Occlusion(shipped_model).attribute(
        x, target=labels, sliding_window_shapes=(1, window, window), strides=(1, stride, stride), baselines=baseline,
        perturbations_per_eval=64,
    )
    _close(Occlusion(shipped_model).attribute(x, labels, window=window, stride=stride, baseline=baseline), theirs)


def test_integrated_gradients_matches_captum(shipped_model, batch):
    x, labels = batch
    ours, delta = IntegratedGradients(shipped_model).attribute(x, labels, steps=32, return_convergence_delta=True)
    theirs, their_delta = captum_attr.IntegratedGradients(shipped_model).attribute(
        x, target=labels, n_steps=32, return_convergence_delta=True
    )
    _close(ours, theirs)
    assert torch.allclose(delta, their_delta.to(delta.dtype), atol=1e-4)
    base = -0.5 * torch.ones_like(x)
    for method in ("riemann_middle", "riemann_right"):
        ours = IntegratedGradients(shipped_model).attribute(x, labels, steps=20, baseline=-0.5, method=method)
        theirs = captum_attr.IntegratedGradients(shipped_model).attribute(x, base, target=labels, n_steps=20, method=method)
        _close(ours, theirs)
    # Captum's "riemann_trapezoid" uses steps of 1/n with halved ends (weights sum to (n-1)/n);
    # ours is the textbook trapezoid rule (steps 1/(n-1)), so they differ by exactly that factor
    ours = IntegratedGradients(shipped_model).attribute(x, labels, steps=20, baseline=-0.5, method="riemann_trapezoid")
    theirs = captum_attr.IntegratedGradients(shipped_model).attribute(
        x, base, target=labels, n_steps=20, method="riemann_trapezoid"
    )
    _close(ours * 19 / 20, theirs)


def test_functional_relu_model_captum_deconvnet_silently_wrong(shipped_model, batch, functional_model_a):
    """On a model calling F.relu, Captum's Deconvolution finds no nn.ReLU modules to
    hook and returns the plain gradient; ours still applies the deconvnet rule."""
    x, labels = batch
    functional = functional_model_a(shipped_model, "F.relu")
    plain = Saliency(functional).attribute(x, labels)
    theirs = captum_attr.Deconvolution(functional).attribute(x, target=labels)
    ours = Deconvnet(functional).attribute(x, labels)
    assert torch.allclose(theirs, plain, atol=1e-6)  # Captum: the silent failure
    assert (ours - plain).abs().max() > 0.1 * plain.abs().max()  # ours: really a deconvnet
    # ... and the same deconvnet as on Model A with nn.ReLU modules, where Captum agrees
    reference = captum_attr.Deconvolution(shipped_model).attribute(x, target=labels)
    _close(ours, reference)
    their_gbp = captum_attr.GuidedBackprop(functional).attribute(x, target=labels)
    assert torch.allclose(their_gbp, plain, atol=1e-6)
    _close(GuidedBackprop(functional).attribute(x, labels), captum_attr.GuidedBackprop(shipped_model).attribute(x, target=labels))


def test_rgb_net_matches_captum():
    """The RGB zoo net (BatchNorm, strided conv, ModuleDict, F.relu): the methods that do not
    depend on ReLU rules agree with Captum; occlusion with a per-channel baseline."""
    from zoo import rgb_net

    net = rgb_net()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 3, 1])
    _close(Saliency(net).attribute(x, labels), captum_attr.Saliency(net).attribute(x, target=labels, abs=False))
    ours = IntegratedGradients(net).attribute(x, labels, steps=24, baseline="mean")
    base = x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()
    _close(ours, captum_attr.IntegratedGradients(net).attribute(x, base, target=labels, n_steps=24))
    theirs = captum_attr.Occlusion(net).attribute(
        x, target=labels, sliding_window_shapes=(3, 5, 5), strides=(3, 2, 2), baselines=base, perturbations_per_eval=64)
    _close(Occlusion(net).attribute(x, labels, baseline="mean"), theirs)  # default window 5, stride 2 on 32 px
    theirs = captum_attr.LayerGradCam(net, net.conv3).attribute(x, target=labels, relu_attributions=True)
    _close(GradCAM(net).attribute(x, labels, upsample=False), theirs)
