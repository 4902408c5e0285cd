"""The reference-trained Model A that ships beside the fast one (issue: the posts reproduced).

Its files must load by name, say how they were trained (the posts' recipe, all 80
epochs), and score on the built-in test set exactly what their JSON records.
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
import torch

from convscope.models.loading import SHIPPED_MODELS, open_model


@pytest.fixture(scope="module")
def reference():
    return open_model("reference")


def test_reference_model_ships_and_loads_by_name(reference):
    assert SHIPPED_MODELS["reference"] == "reference"
    assert reference.kind == "shipped" and "reference" in reference.label
    assert sum(p.numel() for p in reference.model.parameters()) == 208_982
    config = reference.model.config
    recipe = config.training["recipe"]
    # the posts' recipe exactly: RMSprop with momentum 0.8, inverse-time decay 1e-3 per
    # iteration, L2 1e-3 on the dense kernels, batch 64, 80 epochs, no augmentation or smoothing
    assert (recipe["name"], recipe["optimizer"], recipe["momentum"], recipe["schedule"], recipe["decay"]) == (
        "reference", "rmsprop", 0.8, "inverse_time", 1e-3)
    assert (recipe["l2_dense"], recipe["batch_size"], recipe["epochs"]) == (1e-3, 64, 80)
    assert (recipe["label_smoothing"], recipe["shift_pixels"]) == (0.0, 0)
    assert config.training["epochs_done"] == 80


def test_reference_model_scores_what_its_json_says(reference, test_split):
    from convscope.inference import to_input

    model = reference.model.eval()
    with torch.no_grad():
        logits = torch.cat([model(to_input(model, test_split.images[i : i + 2000])) for i in range(0, 10_000, 2000)])
    accuracy = float((logits.argmax(1).numpy() == test_split.labels).mean())
    assert accuracy == pytest.approx(reference.model.config.test_accuracy, abs=1e-4)
    assert accuracy > 0.993  # the posts: 0.9944 / 0.9935


def test_reference_history_has_every_epoch():
    path = resources.files("convscope") / "shipped" / "reference.history.json"
    history = json.loads(path.read_text())
    epochs = history["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, 81))
    train_acc = np.array([e["train_accuracy"] for e in epochs])
    assert train_acc[-1] > 0.999 and train_acc[0] < train_acc[-1]
