"""Targets (class, map, unit of any layer), deconvnet modes, SmoothGrad, IG
convergence, occlusion baselines and clear errors, on Model A and real digits."""

from __future__ import annotations

import pytest
import torch

from convscope.address import AddressError
from convscope.explain import (
    Deconvnet, GradCAM, GuidedBackprop, IntegratedGradients, Occlusion, Saliency, SmoothGrad, explain,
)
from convscope.probe import capture


def _support(attr: torch.Tensor) -> torch.Tensor:
    """Boolean (H, W) where a single attribution map is non-zero."""
    return attr[0, 0] != 0


def _strongest_unit(model, x, layer: str) -> tuple[int, int, int]:
    out = capture(model, x[:1], layer, detach=True)[layer][0]
    flat = int(out.argmax())
    channels, height, width = out.shape
    return flat // (height * width), (flat // width) % height, flat % width


def test_deconvnet_unit_stays_inside_its_receptive_field(shipped_model, batch):
    """A Conv2D_2 unit at (r, c) sees input rows/cols 2r..2r+7 (3x3 conv, 2x2 pool,
    3x3 conv); the deconvnet reconstruction must be zero outside that window and
    non-zero inside it (the unit is active)."""
    x, _ = batch
    channel, row, col = _strongest_unit(shipped_model, x, "Conv2D_2")
    attr = Deconvnet(shipped_model).attribute(x[:1], f"Conv2D_2:{channel}@{row},{col}")
    support = _support(attr)
    window = torch.zeros(28, 28, dtype=torch.bool)
    window[2 * row : 2 * row + 8, 2 * col : 2 * col + 8] = True
    assert support.any()
    assert not (support & ~window).any()


def test_deconvnet_keep_max_is_the_strongest_unit(shipped_model, batch):
    x, _ = batch
    out = capture(shipped_model, x[:1], "Conv2D_3", detach=True)["Conv2D_3"][0]
    channel = int((out > 0).sum(dim=(1, 2)).argmax())  # the map with the most active units
    assert int((out[channel] > 0).sum()) >= 2
    flat = int(out[channel].argmax())
    row, col = flat // 3, flat % 3
    unit = Deconvnet(shipped_model).attribute(x[:1], f"Conv2D_3:{channel}@{row},{col}")
    strongest = Deconvnet(shipped_model).attribute(x[:1], f"Conv2D_3:{channel}", keep="max")
    whole = Deconvnet(shipped_model).attribute(x[:1], f"Conv2D_3:{channel}", keep="map")
    # keep="max" keeps exactly the strongest unit (seeded with its activation, like a unit address)
    assert torch.allclose(strongest, unit, atol=1e-7) and unit.abs().sum() > 0
    assert not torch.allclose(whole, strongest)
    # the whole map is sent down weighted by its activations, so its strongest unit shows clearly in it
    cosine = torch.nn.functional.cosine_similarity(whole.flatten(), strongest.flatten(), dim=0)
    assert cosine > 0.3


def test_deconvnet_works_for_a_map_in_every_layer(shipped_model, batch):
    x, _ = batch
    for layer in ("Conv2D_1", "Max_Pool_1", "Conv2D_2", "Max_Pool_2", "Conv2D_3", "Dense_1"):
        channel, *_ = _strongest_unit(shipped_model, x, layer) if layer != "Dense_1" else (
            int(capture(shipped_model, x[:1], layer, detach=True)[layer][0].argmax()),
        )
        attr = Deconvnet(shipped_model).attribute(x[:1], f"{layer}:{channel}")
        assert attr.shape == (1, 1, 28, 28)
        assert attr.abs().sum() > 0, layer


def test_gradient_of_a_map_target_is_the_mean_of_its_units(shipped_model, batch):
    x, _ = batch
    channel, _, _ = _strongest_unit(shipped_model, x, "Conv2D_3")
    whole = Saliency(shipped_model).attribute(x[:2], f"Conv2D_3:{channel}")
    units = sum(Saliency(shipped_model).attribute(x[:2], f"Conv2D_3:{channel}@{r},{c}") for r in range(3) for c in range(3))
    assert torch.allclose(whole, units / 9, atol=1e-6)


def test_class_targets_per_sample_and_predicted(shipped_model, batch):
    x, labels = batch
    per_sample = GuidedBackprop(shipped_model).attribute(x, labels)
    one_by_one = torch.cat([GuidedBackprop(shipped_model).attribute(x[i : i + 1], int(labels[i])) for i in range(4)])
    assert torch.allclose(per_sample[:4], one_by_one, atol=1e-6)
    predicted = shipped_model(x).argmax(1)
    assert torch.allclose(Saliency(shipped_model).attribute(x), Saliency(shipped_model).attribute(x, predicted))
    assert torch.allclose(Saliency(shipped_model).attribute(x[:2], "logits:3"), Saliency(shipped_model).attribute(x[:2], 3))


@pytest.mark.parametrize(
    "target, message",
    [("Conv2D_9:1", "valid layers"), ("Conv2D_3:500", "0..127"), ("Conv2D_3", "whole layer"), (12, "0..9"),
     ("Conv2D_3:1@5,5", "@0..2")],
)
def test_bad_targets_give_clear_errors(shipped_model, batch, target, message):
    x, _ = batch
    with pytest.raises(ValueError, match=message):
        Saliency(shipped_model).attribute(x[:1], target)


def test_gradcam_needs_a_conv_layer_before_the_target(shipped_model, batch):
    x, _ = batch
    with pytest.raises(AddressError):
        GradCAM(shipped_model, "Conv2D_3:4")
    with pytest.raises(AddressError, match="does not depend"):
        GradCAM(shipped_model, "Conv2D_3").attribute(x[:1], "Conv2D_2:3")
    cam = GradCAM(shipped_model, "Conv2D_2").attribute(x[:2], "Conv2D_3:5", upsample=False)
    assert cam.shape == (2, 1, 11, 11) and (cam >= 0).all()


def test_integrated_gradients_converges_with_more_steps(shipped_model, batch):
    x, labels = batch
    ig = IntegratedGradients(shipped_model)
    deltas = [ig.attribute(x[:4], labels[:4], baseline="min", steps=s, return_convergence_delta=True)[1].abs().mean()
              for s in (4, 64)]
    assert deltas[1] < deltas[0]
    attr, delta = ig.attribute(x[:4], labels[:4], baseline="min", steps=64, return_convergence_delta=True)
    # completeness: the attributions add up to f(x) - f(baseline) up to the reported delta
    base = x[:4].amin(dim=(1, 2, 3), keepdim=True).expand_as(x[:4])
    with torch.no_grad():
        gap = (shipped_model(x[:4]) - shipped_model(base)).gather(1, labels[:4, None])[:, 0]
    assert torch.allclose(attr.sum(dim=(1, 2, 3)) - gap, delta, atol=1e-4)
    assert float((delta.abs() / gap.abs()).max()) < 0.05
    # with baseline "min" the background (already at the baseline) gets exactly zero
    background = x[:4] == x[:4].amin(dim=(1, 2, 3), keepdim=True)
    assert (attr[background] == 0).all()


def test_occlusion_of_the_digit_lowers_its_class(shipped_model, batch):
    x, labels = batch
    attr = Occlusion(shipped_model).attribute(x[:4], labels[:4], window=4, stride=2, baseline="min")
    ink = x[:4] > 0
    # covering ink removes evidence for the true class: on average a positive drop on the digit
    assert all(float(attr[i][ink[i]].mean()) > 0 for i in range(4))
    corner = attr[:, :, :2, :2]  # only background windows cover the corner: occluding changes nothing
    assert torch.equal(corner, torch.zeros_like(corner))


def test_smoothgrad_wraps_any_method(shipped_model, batch):
    x, labels = batch
    plain = Saliency(shipped_model).attribute(x[:2], labels[:2])
    assert torch.allclose(SmoothGrad(Saliency(shipped_model), samples=3, noise_level=0.0).attribute(x[:2], labels[:2]), plain, atol=1e-6)
    smooth = SmoothGrad(GuidedBackprop(shipped_model), samples=8, seed=3)
    first, again = smooth.attribute(x[:2], labels[:2]), smooth.attribute(x[:2], labels[:2])
    assert torch.equal(first, again)  # the seed makes it repeatable
    other = SmoothGrad(GuidedBackprop(shipped_model), samples=8, seed=4).attribute(x[:2], labels[:2])
    assert not torch.equal(first, other)
    squared = SmoothGrad(Saliency(shipped_model), samples=4, squared=True).attribute(x[:2], labels[:2])
    assert (squared >= 0).all() and not SmoothGrad(Saliency(shipped_model), squared=True).signed
    # noise averaging smooths: neighbouring pixels agree more than in the raw gradient
    def roughness(m):
        return float((m[..., 1:, :] - m[..., :-1, :]).abs().mean() / m.abs().mean())
    smoothed = SmoothGrad(Saliency(shipped_model), samples=32, noise_level=0.2).attribute(x[:2], labels[:2])
    assert roughness(smoothed) < roughness(plain)


def test_explain_function_reports_delta_and_params(shipped_model, batch):
    x, _ = batch
    result = explain(shipped_model, x[:1], "ig", 4, steps=16, baseline="min")
    assert result.target == 4 and result.delta is not None and result.delta.shape == (1,)
    assert result.params["steps"] == 16
    result = explain(shipped_model, x[:1], "smoothgrad", "Conv2D_3:7", base="deconvnet", samples=2, keep="max")
    assert result.target == "Conv2D_3:7" and result.attributions.shape == (1, 1, 28, 28)
    with pytest.raises(ValueError, match="choose one of"):
        explain(shipped_model, x[:1], "lrp")
