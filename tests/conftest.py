"""Shared fixtures: the real MNIST files and the shipped model.

The data folder comes from ``CONVSCOPE_DATA`` (``.ci/run`` points it at
``../shared/data/mnist``); without it, ``../shared/data/mnist`` beside the
repository is used when present.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
_DEFAULT_DATA = REPO.parent / "shared" / "data" / "mnist"


def _mnist_dir() -> Path | None:
    env = os.environ.get("CONVSCOPE_DATA")
    for candidate in ([Path(env), Path(env) / "mnist"] if env else []) + [_DEFAULT_DATA]:
        if (candidate / "t10k-images-idx3-ubyte.gz").is_file() or (candidate / "t10k-images-idx3-ubyte").is_file():
            return candidate
    return None


@pytest.fixture(scope="session", autouse=True)
def _limit_threads() -> None:
    # The CI machine has 2 cores; keep PyTorch from oversubscribing them.
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """Folder holding the four real MNIST IDX files."""
    folder = _mnist_dir()
    if folder is None:
        pytest.fail("real MNIST files not found: set CONVSCOPE_DATA to the folder with the IDX files (../shared/data/mnist)")
    return folder


@pytest.fixture(scope="session")
def test_split(mnist_dir):
    """The 10,000 MNIST test images in original order."""
    from convscope.data import load_split

    return load_split("test", data_dir=mnist_dir)


@pytest.fixture(scope="session")
def train_split(mnist_dir):
    """The 60,000 MNIST training images in original order."""
    from convscope.data import load_split

    return load_split("train", data_dir=mnist_dir)


@pytest.fixture(scope="session")
def shipped_model():
    """The pretrained Model A that ships inside the package (CPU, eval mode).

    Session-scoped: tests must not modify it (copy it with ``copy.deepcopy`` first).
    """
    from convscope.models import load_model

    return load_model(None, device="cpu")
