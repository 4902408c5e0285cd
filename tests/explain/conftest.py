"""Fixtures for the explain tests: a few real test images as model input, tiny
hand-set networks where exact numbers matter, and Model A with functional ReLUs
(fixtures, so the tests import nothing from this folder)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
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


class TinyRGB(nn.Module):
    """x (N,3,1,2) → 1×1 conv (3→2 maps, no bias) → ReLU #1 → flatten (4) → Linear(4→2)
    → ReLU #2 → Linear(2→2). Hand-set so that gradient, deconvnet and guided backprop
    all differ; ``first`` / ``second`` pick how each ReLU is called (``F.relu``,
    ``torch.relu``, ``relu_`` = ``Tensor.relu_`` with the return value ignored,
    ``module`` = ``nn.ReLU(inplace=True)``, ``F.relu_inplace`` = ``F.relu(x, inplace=True)``;
    ``F.relu_inplace_ignored`` / ``module_ignored``: the same calls with their return value ignored)."""

    def __init__(self, first: str = "F.relu", second: str = "module") -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        self.fc1 = nn.Linear(4, 2, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.out = nn.Linear(2, 2, bias=False)
        self.first, self.second = first, second
        with torch.no_grad():
            # map 0 = R - B, map 1 = 0.5 R + G
            self.conv.weight.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.5, 1.0, 0.0]]).view(2, 3, 1, 1))
            # flatten order: map0@p0, map0@p1, map1@p0, map1@p1
            self.fc1.weight.copy_(torch.tensor([[1.0, 1.0, -1.0, 0.0], [0.0, 1.0, -1.0, -1.0]]))
            self.out.weight.copy_(torch.tensor([[1.0, -2.0], [-1.0, 1.0]]))
        self.eval()

    def _relu(self, x: torch.Tensor, kind: str) -> torch.Tensor:
        import torch.nn.functional as F

        if kind == "F.relu":
            return F.relu(x)
        if kind == "torch.relu":
            return torch.relu(x)
        if kind == "relu_":
            x.relu_()
            return x
        if kind == "module":
            return self.act(x)
        if kind == "F.relu_inplace":
            return F.relu(x, inplace=True)
        if kind == "F.relu_inplace_ignored":
            F.relu(x, inplace=True)  # return value ignored: only the in-place write counts
            return x
        if kind == "module_ignored":
            self.act(x)
            return x
        raise ValueError(kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._relu(self.conv(x), self.first).flatten(1)
        return self.out(self._relu(self.fc1(x), self.second))


#: TinyRGB's input: pixel 0 (R, G, B) = (2, -0.5, 1), pixel 1 = (0, 1, 2).
#: map0 = (1, -2) -> relu (1, 0); map1 = (0.5, 1); fc1 = (0.5, -1.5) -> relu (0.5, 0); logits (0.5, -0.5)
X_TINY_RGB = torch.tensor([[[[2.0, 0.0]], [[-0.5, 1.0]], [[1.0, 2.0]]]])


@pytest.fixture()
def tiny_rgb():
    """Factory: ``tiny_rgb(first, second)`` the hand-set RGB network (wrapped with a spec)."""
    import convscope

    def make(first: str = "F.relu", second: str = "module") -> nn.Module:
        return convscope.wrap(TinyRGB(first, second), input_shape=(3, 1, 2), class_names=["up", "down"],
                              preprocessing="unit", name="tiny-rgb")

    return make


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory):
    """An RGB image-folder dataset of real photos (astronaut, cat, coffee, rocket)."""
    from zoo import make_photo_folder

    return make_photo_folder(tmp_path_factory.mktemp("photos"), per_class=20)


@pytest.fixture(scope="session")
def photo_net(photo_folder):
    """The zoo's RGB 32×32 net (F.relu, BatchNorm, strided conv, ModuleDict) whose
    dataset is the photo folder, trained briefly (Adam, full batch; convscope's
    training loop is gray-only on this branch) so that it predicts its classes."""
    import convscope
    from convscope.data.catalog import split_for_model
    from convscope.inference import to_input
    from convscope.spec import spec_of
    from zoo import PHOTO_CLASSES, rgb_net

    model = rgb_net(classes=tuple(PHOTO_CLASSES))
    convscope.wrap(model, spec_of(model).replace(dataset=str(photo_folder), name="photo-net"))
    split = split_for_model(spec_of(model), "train")
    x, y = to_input(model, split.images), torch.as_tensor(np.array(split.labels))
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        order = torch.randperm(len(y), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(x[order]), y[order])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def fashion_model_file(tmp_path_factory):
    """A Model A trained briefly on real Fashion-MNIST (Debian's copy; 3,000 images,
    one epoch), saved as a native model file whose spec names fashion-mnist."""
    import dataclasses

    import convscope
    from convscope.data.catalog import open_dataset, split_for_model
    from convscope.models import build_model, save_model
    from convscope.models.files import default_config
    from convscope.spec import spec_of
    from convscope.training.loop import train
    from convscope.training.recipes import get_recipe

    names = list(open_dataset("fashion-mnist").split("test").class_names)
    model = build_model("seed_cnn")
    spec = spec_of(model).replace(dataset="fashion-mnist", class_names=tuple(names), image_conversion="resize",
                                  name="fashion-test")
    convscope.wrap(model, spec)
    recipe = dataclasses.replace(get_recipe("fast"), epochs=1, val_split=0.0)
    test = split_for_model(spec, "test")
    test = dataclasses.replace(test, images=test.images[:1000], labels=test.labels[:1000])  # scored once: keep it short
    train(model, split_for_model(spec, "train"), test, recipe, seed=0, train_limit=3000)
    path = tmp_path_factory.mktemp("fashion") / "fashion"
    save_model(model, path, default_config(model, dataset="fashion-mnist", class_names=names, name="fashion-test"))
    return path.with_suffix(".json")
