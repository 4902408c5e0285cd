"""describe/build: a JSON description of a tree of standard layers, rebuilt exactly."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

from convscope.models import build_model
from convscope.models.graph import FORMAT, MAX_DEPTH, GlobalPool2d, GraphError, PaddedAvgPool2d, build, describe


def _every_node_type() -> nn.Sequential:
    torch.manual_seed(0)
    features = nn.Sequential(OrderedDict(
        block=nn.Sequential(OrderedDict(
            pad=nn.ZeroPad2d((1, 2, 0, 1)),
            conv=nn.Conv2d(3, 6, (3, 2), stride=(2, 1), dilation=(1, 2), groups=3, bias=False),
            relu=nn.ReLU(),
        )),
        bn=nn.BatchNorm2d(6, eps=1e-3, momentum=0.01),
        elu=nn.ELU(alpha=0.7),
        max_same=nn.Sequential(nn.ConstantPad2d((0, 1, 0, 1), float("-inf")), nn.MaxPool2d(2, 2)),
        conv2=nn.Conv2d(6, 4, 3, padding=1, padding_mode="replicate"),
        avg=nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False),
        avg_same=PaddedAvgPool2d((3, 3), (2, 2), (0, 1, 1, 1)),
        selu=nn.SELU(),
        leaky=nn.LeakyReLU(0.1),
        gelu=nn.GELU(approximate="tanh"),
        silu=nn.SiLU(),
        tanh=nn.Tanh(),
    ))
    return nn.Sequential(OrderedDict(
        features=features,
        pool=GlobalPool2d("max"),
        flatten=nn.Flatten(),
        dense=nn.Sequential(OrderedDict(linear=nn.Linear(4, 8), sigmoid=nn.Sigmoid())),
        bn1=nn.BatchNorm1d(8, affine=False),
        drop=nn.Dropout(0.25),
        identity=nn.Identity(),
        out=nn.Linear(8, 3, bias=False),
        softmax=nn.Softmax(dim=1),
    ))


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_round_trip_is_exact():
    model = _every_node_type()
    with torch.no_grad():  # non-trivial running statistics
        model.features.bn.running_mean.uniform_(-1, 1)
        model.features.bn.running_var.uniform_(0.5, 2)
        model.bn1.running_var.uniform_(0.5, 2)
    model.eval()
    description = describe(model)
    text = json.dumps(description, allow_nan=False)  # strict JSON: -inf is written as a string
    rebuilt = build(json.loads(text))
    assert describe(rebuilt) == description
    assert _shapes(rebuilt) == _shapes(model)
    assert [n for n, _ in rebuilt.named_modules()] == [n for n, _ in model.named_modules()]
    assert [type(m) for m in rebuilt.modules()][1:] == [type(m) for m in model.modules()][1:]
    rebuilt.load_state_dict(model.state_dict())
    assert not rebuilt.training
    x = torch.randn(2, 3, 11, 9)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    # a plain nn.Sequential keeps its numeric child names
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    assert [n for n, _ in build(describe(plain)).named_children()] == ["0", "1"]


def test_description_format():
    description = describe(nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, 3, stride=2), relu=nn.ReLU())))
    assert description == {
        "format": FORMAT,
        "root": {"type": "sequential", "children": [
            {"name": "conv", "module": {
                "type": "conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": [3, 3], "stride": [2, 2],
                "padding": [0, 0], "dilation": [1, 1], "groups": 1, "bias": True, "padding_mode": "zeros"}},
            {"name": "relu", "module": {"type": "relu", "inplace": False}},
        ]},
    }


def test_batchnorm_without_bias_round_trips():
    bn = nn.BatchNorm2d(4, bias=False)
    rebuilt = build(describe(nn.Sequential(bn)))
    assert rebuilt[0].bias is None and _shapes(rebuilt) == _shapes(nn.Sequential(bn))


def test_sequential_subclass_without_forward_counts_as_sequential():
    class Named(nn.Sequential):
        pass

    rebuilt = build(describe(Named(OrderedDict(a=nn.Linear(2, 2)))))
    assert type(rebuilt) is nn.Sequential and [n for n, _ in rebuilt.named_children()] == ["a"]


class _Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * 2


class _SubConv(nn.Conv2d):
    pass


class _OwnForward(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + 1


def _extra_child() -> nn.Module:
    conv = nn.Conv2d(1, 1, 1)
    conv.add_module("hidden", nn.ReLU())
    return conv


def _extra_buffer() -> nn.Module:
    linear = nn.Linear(2, 2)
    linear.register_buffer("scale", torch.ones(2))
    return linear


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        (nn.Sequential(OrderedDict(ok=nn.ReLU(), block=nn.Sequential(OrderedDict(custom=_Custom()))))
         , r"module block\.custom is a .*_Custom, which defines its own forward"),
        (nn.Sequential(OrderedDict(seq=_OwnForward(nn.ReLU()))), r"module seq is a .*_OwnForward, which defines its own forward"),
        (nn.Sequential(nn.Conv1d(1, 1, 1)), r"module 0 is a torch\.nn\.modules\.conv\.Conv1d, which is not one of the layer classes"),
        (nn.Sequential(OrderedDict(c=_SubConv(1, 1, 1))), r"module c is a .*_SubConv, which is not one of the layer classes"),
        (nn.Sequential(OrderedDict(c=_extra_child())), r"module c \(Conv2d\) has child modules"),
        (nn.Sequential(OrderedDict(l=_extra_buffer())), r"module l \(Linear\) holds tensors \['bias', 'scale', 'weight'\]"),
        (nn.Sequential(nn.Linear(2, 2).double()), r"module 0 \(Linear\): tensor 'weight' is torch\.float64"),
        (nn.Sequential(nn.MaxPool2d(2, return_indices=True)), r"module 0 \(MaxPool2d\): MaxPool2d with return_indices"),
        (nn.Sequential(nn.ConstantPad2d(1, float("nan"))), r"module 0 \(ConstantPad2d\): NaN"),
        (_Custom(), r"module <root> is a .*_Custom"),
    ],
)
def test_describe_refuses_what_it_cannot_rebuild(module, expected):
    with pytest.raises(GraphError, match=expected):
        describe(module)


def test_describe_refuses_the_reference_blocks():
    """convscope's own Model A is an nn.Sequential subclass, but its ConvReLU blocks have their own forward."""
    with pytest.raises(GraphError, match=r"module Conv2D_1 is a convscope\.models\.architectures\.ConvReLU"):
        describe(build_model("seed_cnn"))


def _linear(**change) -> dict:
    node = {"type": "linear", "in_features": 2, "out_features": 3, "bias": True}
    node.update(change)
    return {"format": FORMAT, "root": {"type": "sequential", "children": [{"name": "fc", "module": node}]}}


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ({"format": "other", "root": {}}, "not a layer-graph description"),
        ([], "not a layer-graph description"),
        (_linear(type="conv3d"), r"node fc: unknown type 'conv3d'; known types: avgpool2d"),
        (_linear(bias=1), r"node fc \(linear\): field 'bias' must be true or false"),
        (_linear(in_features=True), r"node fc \(linear\): field 'in_features' must be an integer"),
        (_linear(in_features=0), r"node fc \(linear\): field 'in_features' must be an integer in \[1"),
        (_linear(extra=1), r"node fc \(linear\): unknown field\(s\) \['extra'\]"),
        ({"format": FORMAT, "root": {"type": "linear", "in_features": 2, "bias": True}},
         r"node <root> \(linear\): missing field\(s\) \['out_features'\]"),
        ({"format": FORMAT, "root": {"type": "sequential", "children": [{"name": "a.b", "module": {"type": "tanh"}}]}},
         r"child #0 has an invalid or repeated name 'a\.b'"),
        ({"format": FORMAT, "root": {"type": "sequential", "children": [{"name": "forward", "module": {"type": "tanh"}}]}},
         r"invalid or repeated name 'forward'"),
        ({"format": FORMAT, "root": {"type": "sequential", "children": [
            {"name": "a", "module": {"type": "tanh"}}, {"name": "a", "module": {"type": "tanh"}}]}},
         r"child #1 has an invalid or repeated name 'a'"),
        ({"format": FORMAT, "root": {"type": "sequential", "children": [{"name": "a", "module": "tanh"}]}},
         r"node a: expected an object"),
        ({"format": FORMAT, "root": {"type": "constant_pad2d", "padding": [1, 1, 1, 1], "value": "nan"}},
         r"field 'value' must be a finite number"),
        ({"format": FORMAT, "root": {"type": "conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": [3, 3],
                                     "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 2,
                                     "bias": True, "padding_mode": "zeros"}},
         r"node <root> \(conv2d\): channels 3->4 not divisible by groups 2"),
        (_linear(in_features=1 << 24, out_features=1 << 24), r"more than 1,000,000,000 parameters"),
    ],
)
def test_build_refuses_bad_descriptions(description, expected):
    with pytest.raises(GraphError, match=expected):
        build(description)
    assert issubclass(GraphError, ValueError)


def test_build_bounds_the_nesting_depth():
    node: dict = {"type": "relu", "inplace": False}
    for _ in range(100_000):  # far deeper than Python's recursion limit
        node = {"type": "sequential", "children": [{"name": "inner", "module": node}]}
    with pytest.raises(GraphError, match=f"nested deeper than {MAX_DEPTH} levels"):
        build({"format": FORMAT, "root": node})
    shallow: dict = {"type": "relu", "inplace": False}
    for _ in range(MAX_DEPTH - 1):
        shallow = {"type": "sequential", "children": [{"name": "inner", "module": shallow}]}
    assert isinstance(build({"format": FORMAT, "root": shallow}), nn.Sequential)


def test_padded_avg_pool_leaves_padding_out_of_the_mean():
    x = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    pool = PaddedAvgPool2d((2, 2), (2, 2), (0, 1, 0, 1))  # one column right, one row below
    expected = torch.tensor([[[[(1 + 2 + 4 + 5) / 4, (3 + 6) / 2], [(7 + 8) / 2, 9.0]]]])
    assert torch.equal(pool(x), expected)


def test_global_pool():
    x = torch.arange(24.0).reshape(2, 3, 2, 2)
    assert torch.equal(GlobalPool2d("avg")(x), x.mean(dim=(2, 3)))
    assert torch.equal(GlobalPool2d("max")(x), x[:, :, 1, 1])
    with pytest.raises(ValueError):
        GlobalPool2d("min")
