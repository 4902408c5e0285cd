"""Fixtures of the look-inside tests: figures closed after each test; zoo models
(RGB with a real-photo image folder, a residual net) and a Fashion-MNIST model
trained here in seconds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/zoo.py

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> Path:
    """An RGB image-folder dataset of real scikit-image photos (4 classes)."""
    from zoo import make_photo_folder

    return make_photo_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def rgb_model(photo_folder):
    """The zoo's RGB 32×32 net (strided conv, BatchNorm, F.relu, ModuleDict heads) on
    the photo folder, trained for a few seconds (12 epochs of 128 photos) so that
    its classes have clear examples and a few mistakes (28 of 32 test photos right)."""
    import torch

    import convscope
    from convscope.data.catalog import split_for_model
    from convscope.inference import to_input
    from convscope.spec import spec_of
    from zoo import rgb_net

    model = rgb_net(classes=("astronaut", "cat", "coffee", "rocket"))
    convscope.wrap(model, spec_of(model).replace(dataset=str(photo_folder)))
    train = split_for_model(spec_of(model), "train")
    x, y = to_input(model, train.images), torch.as_tensor(train.labels.copy())
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for _ in range(12):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), 32):
            batch = order[start : start + 32]
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def rgb_test(rgb_model):
    from convscope.data.catalog import split_for_model
    from convscope.spec import spec_of

    return split_for_model(spec_of(rgb_model), "test")


@pytest.fixture(scope="session")
def residual_model():
    from zoo import residual_net

    return residual_net()


@pytest.fixture(scope="session")
def residual_split(test_split):
    """600 MNIST test digits, centre-cropped to the residual net's 20×20."""
    import dataclasses

    return dataclasses.replace(test_split, images=test_split.images[:600, 4:24, 4:24].copy(),
                               labels=test_split.labels[:600])


@pytest.fixture(scope="session")
def fashion_model_file(tmp_path_factory):
    """Model A trained on 2,000 Fashion-MNIST images for one epoch (Debian's copy in
    /usr/share/datasets), saved as a model file: ``(path, test split)``."""
    import dataclasses

    from convscope.data import load_split
    from convscope.models import build_model, default_config, save_model
    from convscope.training import get_recipe, init_weights, train

    if not (FASHION / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"Fashion-MNIST not found in {FASHION} (Debian package fashion-mnist)")
    train_split = load_split("train", "fashion-mnist")
    test = load_split("test", "fashion-mnist")
    recipe = dataclasses.replace(get_recipe("fast"), epochs=1, batch_size=64, schedule="constant", lr=2e-3,
                                 shift_pixels=0, label_smoothing=0.0, val_split=0.1)
    model = build_model("seed_cnn")
    init_weights(model, recipe.init, 0)
    train(model, train_split, None, recipe, seed=0, train_limit=2000)
    config = default_config(model, dataset="fashion-mnist", preprocessing=recipe.preprocessing,
                            class_names=list(train_split.class_names))
    path = tmp_path_factory.mktemp("fashion") / "fashion"
    save_model(model.eval(), path, config)
    return path.with_suffix(".json"), test
