"""The reference ascent: exact gradients on hand-set models, batched = single,
freezing of dead / converged members, the reporting steps."""

from __future__ import annotations

import torch
from torch import nn

from convscope.models.architectures import ConvReLU
from convscope.optvis import objectives as obj
from convscope.optvis.ascent import normalise_gradient, reference_ascent, report_steps
from convscope.optvis.init import random_initial_images


class TinyNet(nn.Sequential):
    """One 3×3 conv block with three hand-set maps on 5×5 inputs:
    map 0 sums its window (alive for positive inputs), map 1 has bias -100
    (never fires), map 2 reads the window centre."""

    def __init__(self) -> None:
        super().__init__()
        block = ConvReLU(1, 3)
        with torch.no_grad():
            block.conv.weight.zero_()
            block.conv.bias.zero_()
            block.conv.weight[0] = 1.0
            block.conv.weight[1] = 1.0
            block.conv.bias[1] = -100.0
            block.conv.weight[2, 0, 1, 1] = 1.0
            block.conv.bias[2] = 0.5
        self.add_module("Conv2D_1", block)


def _grad(objective, model, x):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(objective(model, x).sum(), x)
    return g


def test_objective_algebra_exact_gradients():
    model = TinyNet().eval()
    x = torch.ones(1, 1, 5, 5)
    coverage = torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0])
    windows = torch.outer(coverage, coverage) / 9.0  # d mean(relu(window sums)) / d pixel
    score = obj.channel("Conv2D_1:0")(model, x)
    assert torch.allclose(score, torch.tensor([9.0]))
    assert torch.allclose(_grad(obj.channel("Conv2D_1", 0), model, x)[0, 0], windows)
    combined = obj.channel("Conv2D_1:0") - 0.5 * obj.l1() + 2 * obj.channel("Conv2D_1:2")
    centre = torch.zeros(5, 5)
    centre[1:4, 1:4] = 1.0 / 9.0
    expected = windows - 0.5 / 25.0 + 2 * centre
    assert torch.allclose(_grad(combined, model, x)[0, 0], expected, atol=1e-7)
    assert torch.allclose(combined(model, x), torch.tensor([9.0 - 0.5 + 2 * 1.5]))
    # the dead map has exactly zero gradient
    assert torch.count_nonzero(_grad(obj.channel("Conv2D_1:1"), model, x)) == 0


def test_batched_objective_subset_reindexes():
    model = TinyNet().eval()
    x = torch.rand(3, 1, 5, 5) + 0.1
    batched = obj.channels("Conv2D_1", [2, 1, 0]) * 3.0 + obj.l1()
    full = batched(model, x)
    sub = batched.subset(torch.tensor([2, 0]))
    assert torch.allclose(sub(model, x[[2, 0]]), full[[2, 0]])
    assert not obj.l1().batched and batched.batched


def test_normalise_gradient_unit_rms():
    g = torch.randn(4, 1, 28, 28) * torch.tensor([1e-3, 1.0, 5.0, 100.0]).reshape(4, 1, 1, 1)
    rms = normalise_gradient(g).pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert torch.allclose(rms, torch.ones(4), atol=1e-4)


def test_report_steps_follow_the_reference():
    assert report_steps(600, 6) == [0, 9, 18, 36, 72, 144, 288, 599]  # the posts' panels
    assert report_steps(600) == report_steps(600, 6)
    assert report_steps(600, 8) == [0, 2, 4, 8, 16, 32, 64, 128, 256, 599]
    assert report_steps(1000, 3) == [0, 125, 250, 500, 999]


def test_dead_map_is_detected_and_frozen():
    model = TinyNet().eval()
    x = random_initial_images(3, size=5, scales=(3, 5), weights=(0.5, 0.5), generator=torch.Generator().manual_seed(1))
    result = reference_ascent(model, obj.channels("Conv2D_1", [2, 1, 2]), x, steps=40)
    assert result.status[1] == "dead"
    # loss and gradient 0 at steps 0..10 = more than 10 steps → dead at step 10
    assert int(result.dead_step[1]) == 10
    assert torch.allclose(result.images[1], x[1], atol=1e-6)  # never changed (already standardised)
    assert float(result.final_loss[1]) == 0.0
    assert result.status[0] != "dead" and float(result.final_loss[0]) > float(result.initial_loss[0])
    # frozen members cost nothing: 3 members for 11 steps, then 2
    assert result.member_steps == 3 * 11 + 2 * 30


def test_batched_equals_single_runs_with_freezing(shipped_model):
    gen = torch.Generator().manual_seed(3)
    maps = [120, 5, 27, 3]
    start = random_initial_images(len(maps), generator=gen)
    kwargs = dict(steps=40, criterion=1e-3, early_stop=True)
    batched = reference_ascent(shipped_model, obj.channels("Conv2D_3", maps), start, **kwargs)
    for i, m in enumerate(maps):
        single = reference_ascent(shipped_model, obj.channel("Conv2D_3", m), start[i : i + 1], **kwargs)
        assert single.status[0] == batched.status[i]
        assert int(single.converged_step[0]) == int(batched.converged_step[i])
        assert torch.allclose(single.images[0], batched.images[i], atol=1e-6, rtol=0)
        assert torch.allclose(single.losses[:, 0], batched.losses[:, i], atol=1e-6, rtol=0)


def test_images_stay_standardised_and_snapshots_match_history(shipped_model):
    start = random_initial_images(2, generator=torch.Generator().manual_seed(0))
    result = reference_ascent(shipped_model, obj.channels("Conv2D_2", [1, 2]), start, steps=40, n_report_steps=3)
    flat = result.images.reshape(2, -1)
    assert torch.allclose(flat.mean(1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(flat.std(1, unbiased=False), torch.ones(2), atol=1e-4)
    assert result.snapshot_steps == [0, 5, 10, 20, 39]
    assert torch.equal(result.snapshots[0], start)
    assert not torch.equal(result.snapshots[-1], result.images)  # step 39: one update before the end
    for i, step in enumerate(result.snapshot_steps):  # snapshot s is the image whose loss is losses[s]
        rescored = obj.channels("Conv2D_2", [1, 2])(shipped_model, result.snapshots[i]).detach().double()
        assert torch.allclose(rescored, result.losses[step], atol=1e-5)
