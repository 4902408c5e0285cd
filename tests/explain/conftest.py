"""Fixtures for the explain tests: a few real test images as model input, tiny
hand-set networks where exact numbers matter, and Model A with functional ReLUs
(fixtures, so the tests import nothing from this folder)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn


@pytest.fixture(scope="module")
def batch(shipped_model, test_split):
    """The first 8 test images as Model A input ``(8, 1, 28, 28)`` and their labels."""
    from convscope.inference import to_input

    x = to_input(shipped_model, test_split.images[:8])
    return x, torch.as_tensor(test_split.labels[:8].copy())


def _tiny_dense() -> nn.Module:
    """x (1,1,1,2) → Linear V → ReLU → Linear W (2 logits); hand-set so that plain
    gradient, deconvnet and guided backprop all differ."""
    model = nn.Sequential(
        OrderedDict(
            flat=nn.Flatten(), hidden=nn.Linear(2, 2, bias=False), relu=nn.ReLU(), out=nn.Linear(2, 2, bias=False)
        )
    )
    with torch.no_grad():
        model.hidden.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        model.out.weight.copy_(torch.tensor([[-1.0, 2.0], [1.0, 1.0]]))
    model.input_shape = (1, 1, 2)
    return model.eval()


def _tiny_pool(out_weight: float) -> nn.Module:
    """x (1,1,2,2) → 1x1 conv (weight 1) → ReLU → 2x2 max-pool → Linear(1→1, out_weight)."""
    model = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(1, 1, 1, bias=False), relu=nn.ReLU(), pool=nn.MaxPool2d(2), flat=nn.Flatten(),
            out=nn.Linear(1, 1, bias=False),
        )
    )
    with torch.no_grad():
        model.conv.weight.fill_(1.0)
        model.out.weight.fill_(out_weight)
    model.input_shape = (1, 2, 2)
    return model.eval()


def _tiny_cam() -> nn.Module:
    """x (1,1,2,2) → 1x1 conv to 2 maps (weights +1, -1) → ReLU → Linear(8→2)."""
    model = nn.Sequential(
        OrderedDict(conv=nn.Conv2d(1, 2, 1, bias=False), relu=nn.ReLU(), flat=nn.Flatten(), out=nn.Linear(8, 2, bias=False))
    )
    with torch.no_grad():
        model.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        # class 0: map 0 weights all 1 (mean 1), map 1 weights (-4, 0, 0, 0) (mean -1)
        model.out.weight.copy_(torch.tensor([[1.0, 1, 1, 1, -4, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1]]))
    model.input_shape = (1, 2, 2)
    return model.eval()


class FunctionalSeedCNN(nn.Module):
    """Model A's weights, but the forward calls ReLU as a function (``relu`` picks
    which: ``F.relu``, ``torch.relu``, ``Tensor.relu_`` (in place) or ``F.relu(inplace=True)``)."""

    def __init__(self, model_a: nn.Module, relu: str = "F.relu") -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = model_a.Conv2D_1.conv, model_a.Conv2D_2.conv, model_a.Conv2D_3.conv
        self.d1, self.d2 = model_a.Dense_1.linear, model_a.Dense_2
        self.pool = nn.MaxPool2d(2)
        self.relu_kind = relu
        self.num_classes = 10

    def _relu(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        if self.relu_kind == "F.relu":
            return F.relu(x)
        if self.relu_kind == "torch.relu":
            return torch.relu(x)
        if self.relu_kind == "relu_":
            x.relu_()  # in place, return value ignored on purpose
            return x
        if self.relu_kind == "inplace":
            return F.relu(x, inplace=True)
        raise ValueError(self.relu_kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self._relu(self.c1(x)))
        x = self.pool(self._relu(self.c2(x)))
        x = self._relu(self.c3(x)).flatten(1)
        return self.d2(self._relu(self.d1(x)))


@pytest.fixture()
def tiny_dense():
    """Factory: the hand-set dense network (see ``_tiny_dense``)."""
    return _tiny_dense


@pytest.fixture()
def tiny_pool():
    """Factory: ``tiny_pool(out_weight)``, the hand-set conv + max-pool network."""
    return _tiny_pool


@pytest.fixture()
def tiny_cam():
    """Factory: the hand-set two-map network for Grad-CAM."""
    return _tiny_cam


@pytest.fixture()
def functional_model_a():
    """Factory: ``functional_model_a(model_a, relu_kind)``, Model A calling ReLU as a function."""
    return FunctionalSeedCNN
