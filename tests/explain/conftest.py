"""Fixtures for the explain tests: a few real test images as model input
(tiny hand-set networks live in explain_helpers.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def batch(shipped_model, test_split):
    """The first 8 test images as Model A input ``(8, 1, 28, 28)`` and their labels."""
    from convscope.inference import to_input

    x = to_input(shipped_model, test_split.images[:8])
    return x, torch.as_tensor(test_split.labels[:8].copy())
