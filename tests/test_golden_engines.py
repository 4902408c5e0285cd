"""The optimisation engines keep their numbers: every engine, run with fixed seeds,
equals the values recorded before they were rebuilt on the one optimisation core
(``tests/golden/engines.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "golden"))
from engines import GOLDEN, compute  # noqa: E402


@pytest.fixture(scope="module")
def computed(shipped_model, test_split):
    return compute(shipped_model, test_split.images)


def test_every_golden_array_is_reproduced(computed):
    golden = np.load(GOLDEN)
    assert sorted(golden.files) == sorted(computed)
    for name in golden.files:
        expected, actual = golden[name], computed[name]
        assert actual.shape == expected.shape, name
        if np.issubdtype(expected.dtype, np.integer):
            assert np.array_equal(actual, expected), name
        else:
            np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=2e-5, err_msg=name)
