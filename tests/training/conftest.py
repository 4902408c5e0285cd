"""A small real-MNIST folder for the CLI tests: the first 1,200 training and 500
test images as IDX files, so a CLI run scores 500 test images per epoch, not 10,000."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_mnist(tmp_path_factory, train_split, test_split) -> Path:
    from convscope.data import write_idx

    folder = tmp_path_factory.mktemp("small-mnist")
    for split, count, prefix in ((train_split, 1200, "train"), (test_split, 500, "t10k")):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", split.images[:count], compress=False)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", split.labels[:count].astype("uint8"), compress=False)
    return folder
