"""The Probe: captures, always removes its hooks, stops early without computing later layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convscope.address import AddressError, parse_address
from convscope.probe import Probe, capture, select


class Counting(nn.Module):
    """Identity that counts its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom inside forward")


class FunctionalNet(nn.Module):
    """Calls F.relu (no ReLU modules) and nests modules: the probe must not care."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("lin", nn.Linear(3, 2, bias=False))
        self.tail = Counting()
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.features.lin.weight.copy_(torch.tensor([[1.0, -1.0, 0.0], [0.0, 2.0, 1.0]]))
            self.head.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))

    def forward(self, x):
        return self.head(self.tail(F.relu(self.features(x))))


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_captures_exact_values_on_a_hand_set_model():
    net = FunctionalNet()
    x = torch.tensor([[1.0, 2.0, 3.0]])
    out = capture(net, x, ["features.lin", "head", "logits", "probabilities"])
    assert torch.equal(out["features.lin"], torch.tensor([[-1.0, 7.0]]))
    assert torch.equal(out["head"], torch.tensor([[0.0, 7.0]]))  # relu(-1)=0, relu(7)=7
    assert torch.equal(out["logits"], out["head"])
    assert torch.allclose(out["probabilities"], torch.softmax(torch.tensor([[0.0, 7.0]]), 1))
    assert list(out) == ["features.lin", "head", "logits", "probabilities"]  # request order


def test_early_stop_computes_no_later_layer():
    first, second, third = Counting(), Counting(), Counting()
    net = nn.Sequential(nn.Linear(4, 4), first, nn.ReLU(), second, nn.Linear(4, 2), third)
    x = torch.randn(5, 4)
    with Probe(net, ["1"]) as probe:
        out = probe.run(x)
    assert (first.calls, second.calls, third.calls) == (1, 0, 0)
    assert out["1"].shape == (5, 4)
    with Probe(net, ["3", "1"]) as probe:  # deepest requested layer decides
        probe.run(x)
    assert (first.calls, second.calls, third.calls) == (2, 1, 0)
    with Probe(net, ["1"], stop_early=False) as probe:
        probe.run(x)
    assert (first.calls, second.calls, third.calls) == (3, 2, 1)
    with Probe(net, ["1", "probabilities"]) as probe:  # pseudo-layers need the whole pass
        probe.run(x)
    assert third.calls == 2
    assert _hook_count(net) == 0


def test_early_stop_on_the_seed_cnn_skips_the_dense_layers():
    from convscope.models import build_model

    model = build_model("seed_cnn").eval()
    calls = {name: 0 for name in ["Conv2D_1", "Conv2D_2", "Conv2D_3", "Dense_1", "Dense_2"]}
    handles = [getattr(model, name).register_forward_pre_hook(lambda m, i, name=name: calls.__setitem__(name, calls[name] + 1))
               for name in calls]
    try:
        out = capture(model, torch.zeros(2, 1, 28, 28), "Conv2D_2")
    finally:
        for handle in handles:
            handle.remove()
    assert out["Conv2D_2"].shape == (2, 64, 11, 11)
    assert calls == {"Conv2D_1": 1, "Conv2D_2": 1, "Conv2D_3": 0, "Dense_1": 0, "Dense_2": 0}


def test_hooks_removed_after_an_exception_in_the_with_block():
    net = FunctionalNet()
    with pytest.raises(ValueError, match="user error"):
        with Probe(net, ["features.lin", "head"]) as probe:
            assert _hook_count(net) == 2
            probe.run(torch.ones(1, 3))
            raise ValueError("user error")
    assert _hook_count(net) == 0
    # The model still works normally afterwards (no stray early-stop exception).
    assert net(torch.ones(1, 3)).shape == (1, 2)


def test_hooks_removed_after_an_exception_inside_forward():
    net = nn.Sequential(nn.Linear(2, 2), Boom(), nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="boom inside forward"):
        with Probe(net, ["2"]) as probe:
            probe.run(torch.ones(1, 2))
    assert _hook_count(net) == 0
    with pytest.raises(RuntimeError, match="boom"):
        capture(net, torch.ones(1, 2), ["0", "2"], stop_early=False)
    assert _hook_count(net) == 0


def test_unreached_layer_and_misuse_are_clear_errors():
    net = FunctionalNet()
    net.unused = nn.Linear(1, 1)
    with pytest.raises(RuntimeError, match=r"\['unused'\] were not reached"):
        capture(net, torch.ones(1, 3), ["unused"])
    assert _hook_count(net) == 0
    probe = Probe(net, ["head"])
    with pytest.raises(RuntimeError, match="context manager"):
        probe.run(torch.ones(1, 3))
    with pytest.raises(AddressError, match="valid layers"):
        Probe(net, ["nope"])
    with pytest.raises(ValueError, match="at least one layer"):
        Probe(net, [])


def test_gradients_flow_unless_detached():
    net = FunctionalNet()
    x = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    out = capture(net, x, "features.lin")["features.lin"]
    out[0, 1].backward()
    assert torch.equal(x.grad, torch.tensor([[0.0, 2.0, 1.0]]))
    detached = capture(net, x, "features.lin", detach=True)["features.lin"]
    assert not detached.requires_grad


def test_select_picks_maps_and_units():
    output = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    assert select(output, parse_address("L")) is output
    assert torch.equal(select(output, parse_address("L:1")), output[:, 1])
    assert torch.equal(select(output, parse_address("L:2@1,0")), torch.tensor([10.0, 22.0]))
    assert torch.equal(select(torch.tensor([[1.0, 5.0]]), parse_address("L:1")), torch.tensor([5.0]))
