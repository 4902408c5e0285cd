"""The one receptive-field geometry: equal to the support of the input gradient,
computed here independently (explicit forward passes, no probe, no convscope
code), on the RGB strided net, the residual net, a hand-made stack with every
kind of padding / dilation / ceil mode, and models whose graph cannot be traced."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import convscope
from convscope.inside import field_geometry, receptive_field
from convscope.receptive_field import receptive_fields
from zoo import residual_net, rgb_net


def independent_support(forward, input_shape, out_hw, *, samples: int = 4, seed: int = 1) -> torch.Tensor:
    """``(H', W', 4)`` bounding boxes of ``d Σ_maps out[:, :, r, c] / d input ≠ 0``,
    united over ``samples`` random inputs. ``forward(x) -> (N, C, H', W')``."""
    channels, height, width = input_shape
    out_h, out_w = out_hw
    generator = torch.Generator().manual_seed(seed)
    support = torch.zeros(out_h, out_w, height, width, dtype=torch.bool)
    for _ in range(samples):
        x = torch.randn(out_h * out_w, channels, height, width, generator=generator).requires_grad_(True)
        out = forward(x)
        rows = torch.arange(out_h).repeat_interleave(out_w)
        cols = torch.arange(out_w).repeat(out_h)
        picked = out[torch.arange(out_h * out_w), :, rows, cols]
        (grad,) = torch.autograd.grad(picked.sum(), x)
        support |= (grad != 0).any(1).reshape(out_h, out_w, height, width)
    boxes = torch.zeros(out_h, out_w, 4, dtype=torch.long)
    for r in range(out_h):
        for c in range(out_w):
            ys, xs = torch.nonzero(support[r, c], as_tuple=True)
            boxes[r, c] = torch.tensor([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
    return boxes


def all_rectangles(model, layer, out_hw) -> torch.Tensor:
    fields = receptive_fields(model, layer)
    rows, cols = torch.meshgrid(torch.arange(out_hw[0]), torch.arange(out_hw[1]), indexing="ij")
    return fields.rectangles(torch.stack([rows, cols], dim=-1))


def rgb_explicit(net, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {}
    out["conv1"] = net.conv1(x)
    h = F.relu(net.bn1(out["conv1"]))
    out["conv2"] = net.conv2(h)
    out["conv3"] = net.conv3(F.relu(out["conv2"]))
    out["pool"] = net.pool(F.relu(out["conv3"]))
    return out


def test_rgb_strided_net_fields_equal_the_gradient_support():
    net = rgb_net()
    for layer, out_hw in [("conv1", (32, 32)), ("conv2", (16, 16)), ("conv3", (14, 14)), ("pool", (7, 7))]:
        fields = receptive_fields(net, layer)
        assert fields.method == "geometry", layer
        expected = independent_support(lambda x: rgb_explicit(net, x)[layer], (3, 32, 32), out_hw)
        assert torch.equal(all_rectangles(net, layer, out_hw), expected), layer
    # strided conv: 3×3 stride 2 pad 1 after a 3×3 pad 1 → 5×5 fields, 2-pixel jump
    assert field_geometry(net, "conv2").size == (5, 5) and field_geometry(net, "conv2").jump == (2, 2)
    assert receptive_fields(net, "heads.hidden").method == "whole"


def test_residual_net_fields_equal_the_gradient_support():
    net = residual_net()
    cases = [("stem", (20, 20)), ("stages.0.body", (20, 20)), ("stages.0", (20, 20)), ("stages.1", (20, 20)),
             ("pool", (10, 10))]
    for layer, out_hw in cases:
        fields = receptive_fields(net, layer)
        assert fields.method == "geometry", layer  # traced through the skip connections
        expected = independent_support(lambda x: net.explicit(x)[layer], (1, 20, 20), out_hw)
        assert torch.equal(all_rectangles(net, layer, out_hw), expected), layer
    # the skip branch is narrower: union = the conv branch; block 2 ends at 11×11
    assert field_geometry(net, "stages.1").size == (11, 11)
    assert receptive_field(net, "stages.1", 0, 0) == (0, 0, 6, 6)  # clipped at the image border


class Zoo(nn.Module):
    """Every window parameter at once, registered in a different order than used."""

    def __init__(self) -> None:
        super().__init__()
        self.pool_late = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.dilated = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.first = nn.Conv2d(1, 4, (5, 3), stride=(2, 1), padding=(2, 0))
        self.maxpool = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.same = nn.Conv2d(4, 4, 4, padding="same")
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = torch.relu(self.first(x))
        x = self.dilated(x).relu()
        x = self.maxpool(x)
        x = torch.tanh(self.same(x))
        x = self.pool_late(x)
        return self.head(x.mean((2, 3)))


def test_every_window_parameter_in_forward_order():
    net = Zoo().eval()
    convscope.wrap(net, input_shape=(1, 23, 19), class_names=["a", "b"], preprocessing="unit")
    from convscope.address import layer_output_shapes

    shapes = layer_output_shapes(net)
    steps = {"first": lambda x: net.first(x)}
    steps["dilated"] = lambda x: net.dilated(torch.relu(steps["first"](x)))
    steps["maxpool"] = lambda x: net.maxpool(steps["dilated"](x).relu())
    steps["same"] = lambda x: net.same(steps["maxpool"](x))
    steps["pool_late"] = lambda x: net.pool_late(torch.tanh(steps["same"](x)))
    for layer, forward in steps.items():
        out_hw = shapes[layer][1:]
        assert receptive_fields(net, layer).method == "geometry", layer
        expected = independent_support(forward, (1, 23, 19), out_hw)
        assert torch.equal(all_rectangles(net, layer, out_hw), expected), layer


class Branches(nn.Module):
    """Two branches of different widths meet in a sum (the wide one second) and a
    channel concatenation: the field is their union."""

    def __init__(self) -> None:
        super().__init__()
        self.narrow = nn.Conv2d(1, 2, 3, padding=1)
        self.wide = nn.Conv2d(1, 2, 5, padding=2, dilation=1)
        self.mix = nn.Conv2d(4, 2, 3, stride=2)
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        y = self.narrow(x) + self.wide(x)
        z = torch.cat([F.relu(self.narrow(x)), y], dim=1)
        return self.head(self.mix(z).mean((2, 3)))


def test_branches_meeting_take_the_union():
    net = convscope.wrap(Branches().eval(), input_shape=(1, 12, 12), class_names=["a", "b"], preprocessing="unit")
    fields = receptive_fields(net, "mix")
    assert fields.method == "geometry" and fields.size == (7, 7)

    def forward(x):
        y = net.narrow(x) + net.wide(x)
        return net.mix(torch.cat([F.relu(net.narrow(x)), y], dim=1))

    assert torch.equal(all_rectangles(net, "mix", (5, 5)), independent_support(forward, (1, 12, 12), (5, 5)))


class Functional(nn.Module):
    """A strided functional convolution: its geometry cannot be read from modules."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 1, 3, 3))
        self.conv = nn.Conv2d(3, 3, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        x = F.relu(F.conv2d(x, self.weight, stride=2, padding=1))
        x = self.conv(x)
        return self.head(x.mean((2, 3)))


class Branching(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3)
        self.b = nn.Conv2d(2, 2, 3, stride=2)
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        y = self.a(x)
        if float(y.detach().mean()) > 1e9:  # never true, but fx cannot know
            y = y * 2
        y = self.b(torch.relu(y))
        return self.head(y.mean((2, 3)))


def test_untraceable_models_fall_back_to_the_measured_support():
    torch.manual_seed(0)
    functional = convscope.wrap(Functional().eval(), input_shape=(1, 16, 16), class_names=["a", "b"],
                                preprocessing="unit")
    fields = receptive_fields(functional, "conv")
    assert fields.method == "gradient" and "does not know" in fields.note
    expected = independent_support(lambda x: functional.conv(F.relu(F.conv2d(x, functional.weight, stride=2,
                                                                              padding=1))), (1, 16, 16), (6, 6))
    assert torch.equal(all_rectangles(functional, "conv", (6, 6)), expected)
    assert fields.size == (7, 7)  # 3×3 stride 2 then 3×3: 3 + 2·2
    branching = convscope.wrap(Branching().eval(), input_shape=(1, 15, 15), class_names=["a", "b"],
                               preprocessing="unit")
    fields = receptive_fields(branching, "b")
    assert fields.method == "gradient" and "traced" in fields.note
    expected = independent_support(lambda x: branching.b(torch.relu(branching.a(x))), (1, 15, 15), (6, 6))
    assert torch.equal(all_rectangles(branching, "b", (6, 6)), expected)
    assert field_geometry(branching, "b") is None  # no geometry claimed where none was derived
