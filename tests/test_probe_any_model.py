"""The probe on models it was not written for: nested names, containers, in-place
ReLUs reused twice, tuple outputs, a forward that catches exceptions, threads."""

from __future__ import annotations

import sys
import threading

import pytest
import torch
from torch import nn

from convscope.address import AddressError, layer_output_shapes, resolve_address
from convscope.probe import Probe, active_hooks, capture
from zoo import residual_net, rgb_net, tuple_net


@pytest.fixture(scope="module")
def resnet():
    return residual_net()


def _batch(shape, n=3, seed=0):
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))


def test_nested_names_equal_an_explicit_forward(resnet):
    x = _batch((1, 20, 20))
    expected = resnet.explicit(x)
    names = ["stem", "stages.0.body", "stages.0.act", "stages.0.conv2", "stages.0", "stages.1.body", "stages.1", "pool", "head"]
    got = capture(resnet, x, names, detach=True)
    for name in names:
        torch.testing.assert_close(got[name], expected[name], msg=name)


@pytest.mark.parametrize("others", [[], ["stages.0.conv2"], ["stages.1"], ["head", "stem_act"], ["logits"]])
def test_inplace_relu_never_changes_a_captured_conv(resnet, others):
    # stem is followed by an in-place ReLU: the conv's own (negative-containing) output
    # must come back whatever else is asked for
    x = _batch((1, 20, 20), seed=1)
    expected = resnet.explicit(x)
    got = capture(resnet, x, ["stem", *others], detach=True)
    assert (got["stem"] < 0).any()
    torch.testing.assert_close(got["stem"], expected["stem"])


@pytest.mark.parametrize("others", [[], ["stages.0.conv2"], ["stages.0"], ["logits"], ["pool"]])
def test_reused_relu_is_always_its_first_call(resnet, others):
    x = _batch((1, 20, 20), seed=2)
    expected = resnet.explicit(x)
    got = capture(resnet, x, ["stages.0.act", *others], detach=True)
    torch.testing.assert_close(got["stages.0.act"], expected["stages.0.act"])


def test_gradients_flow_through_a_copied_capture(resnet):
    x = _batch((1, 20, 20), seed=3).requires_grad_(True)
    with Probe(resnet, ["stem", "stages.1"]) as probe:
        out = probe.run(x)
    (gradient,) = torch.autograd.grad(out["stem"].sum(), x)
    x2 = x.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(resnet.stem(x2).sum(), x2)
    torch.testing.assert_close(gradient, expected)


def test_container_is_refused_with_its_members_named(resnet):
    with pytest.raises(AddressError, match=r"'stages' is a container \(ModuleList\).*'stages.0'"):
        Probe(resnet, ["stages"])
    net = rgb_net()
    with pytest.raises(AddressError, match="container"):
        resolve_address(net, "heads:0")
    assert "heads" not in layer_output_shapes(net)
    assert layer_output_shapes(net)["heads.hidden"] == (32,)


def test_shapes_of_an_rgb_model_with_strides_and_a_moduledict():
    net = rgb_net()
    shapes = layer_output_shapes(net)
    assert shapes["conv1"] == (12, 32, 32)
    assert shapes["conv2"] == (16, 16, 16)
    assert shapes["pool"] == (24, 7, 7)
    assert shapes["logits"] == (4,)
    assert resolve_address(net, "conv2:15@15,15").position == (15, 15)
    with pytest.raises(AddressError, match="0..15"):
        resolve_address(net, "conv2:16")


def test_tuple_output_and_a_forward_that_catches_exceptions():
    net = tuple_net()
    x = _batch((1, 28, 28), seed=4)
    logits, features = net(x)
    calls = []
    net.fc.register_forward_hook(lambda *a: calls.append(1))
    got = capture(net, x, ["conv", "logits", "probabilities"], detach=True)
    torch.testing.assert_close(got["logits"], logits.detach())
    torch.testing.assert_close(got["probabilities"], torch.softmax(logits.detach(), 1))
    torch.testing.assert_close(got["conv"], net.conv(x).detach())
    calls.clear()
    early = capture(net, x, ["conv"], detach=True)  # stops early although forward catches Exception
    assert calls == []
    torch.testing.assert_close(early["conv"], net.conv(x).detach())


def test_softmax_only_when_asked(monkeypatch, resnet):
    called = []
    original = torch.softmax
    monkeypatch.setattr(torch, "softmax", lambda *a, **k: called.append(1) or original(*a, **k))
    capture(resnet, _batch((1, 20, 20)), ["logits"])
    assert called == []
    capture(resnet, _batch((1, 20, 20)), ["probabilities"])
    assert called == [1]


def test_aliases_of_the_spec():
    from convscope.models import build_model

    model = build_model("seed_cnn").eval()
    x = _batch((1, 28, 28))
    got = capture(model, x, ["dense_14", "Dense_1"], detach=True)
    torch.testing.assert_close(got["dense_14"], got["Dense_1"])
    assert resolve_address(model, "dense_15:3").layer == "Dense_2"


def test_two_probes_in_two_threads_see_only_their_own_passes(resnet):
    inputs = [_batch((1, 20, 20), n=8 + 8 * i, seed=10 + i) for i in range(2)]
    expected = [resnet.explicit(x) for x in inputs]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def work(i: int) -> None:
        try:
            layer = ["stem", "stages.1"][i]
            with Probe(resnet, [layer, "stages.0.act"], detach=True) as probe:
                barrier.wait()
                for _ in range(150):
                    out = probe.run(inputs[i])
                    torch.testing.assert_close(out[layer], expected[i][layer])
                    torch.testing.assert_close(out["stages.0.act"], expected[i]["stages.0.act"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so the two forward passes interleave
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    assert active_hooks(resnet) == 0


def test_hooks_are_removed_after_an_error(resnet):
    with pytest.raises(RuntimeError):
        with Probe(resnet, ["stem"]) as probe:
            probe.run(torch.zeros(1, 3, 20, 20))  # wrong channel count
    assert active_hooks(resnet) == 0
