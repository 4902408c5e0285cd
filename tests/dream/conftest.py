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
