"""Small inputs for the dream tests: the embedded photo, shrunk (fast on 2 cores)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(scope="module")
def small_photo() -> np.ndarray:
    """The embedded default photo shrunk to 80×96 (W×H), RGB uint8 ``(96, 80, 3)``."""
    from convscope.photos import default_photo

    return np.asarray(Image.fromarray(default_photo()).resize((80, 96), Image.BICUBIC))


@pytest.fixture(scope="module")
def small_gray(small_photo) -> torch.Tensor:
    """Its luminance ``(96, 80)`` float 0..255."""
    from convscope.dream import split_luminance

    return split_luminance(torch.from_numpy(small_photo.copy()))[0]


@pytest.fixture(autouse=True)
def _one_thread():
    """Dream tests run small images: one PyTorch thread (two OpenMP threads spin-wait
    for each other on the busy 2-core test machine and were measured many times slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
