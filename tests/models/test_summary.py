"""Keras-style summaries equal the reference numbers (SEED-ALGORITHMS §1)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from convscope.cli import main
from convscope.models import build_model, summary, summary_rows

MODEL_A = [  # name, output shape (C, H, W), parameters — the reference table
    ("Conv2D_1", (32, 26, 26), 320),
    ("Max_Pool_1", (32, 13, 13), 0),
    ("Conv2D_2", (64, 11, 11), 18_496),
    ("Max_Pool_2", (64, 5, 5), 0),
    ("Conv2D_3", (128, 3, 3), 73_856),
    ("Flatten", (1152,), 0),
    ("Dense_1", (100,), 115_300),
    ("Dense_2", (10,), 1_010),
]
MODEL_B = [
    ("Conv2D_1", (24, 28, 28), 240),
    ("Max_Pool_1", (24, 14, 14), 0),
    ("Conv2D_2", (48, 14, 14), 10_416),
    ("Max_Pool_2", (48, 7, 7), 0),
    ("Conv2D_3", (64, 7, 7), 27_712),
    ("Max_Pool_3", (64, 3, 3), 0),
    ("Flatten", (576,), 0),
    ("Dense_1", (128,), 73_856),
    ("Dropout", (128,), 0),
    ("Dense_2", (10,), 1_290),
]


@pytest.mark.parametrize(("architecture", "table", "total"), [("seed_cnn", MODEL_A, 208_982), ("model_b", MODEL_B, 113_514)])
def test_summary_rows_match_the_reference(architecture, table, total):
    model = build_model(architecture)
    rows = summary_rows(model)
    assert [(r.name, tuple(r.output_shape), r.params) for r in rows] == table
    assert sum(r.params for r in rows) == total == sum(p.numel() for p in model.parameters())
    text = summary(model)
    assert f"Total params: {total:,}" in text and "Non-trainable params: 0" in text
    for name, _shape, params in table:
        assert any(line.startswith(name + " (") and line.rstrip().endswith(f"{params:,}") for line in text.splitlines())


def test_summary_shows_keras_style_shapes_and_types():
    text = summary(build_model("seed_cnn"))
    assert "Conv2D_3 (Conv2d+ReLU)" in text and "(None, 128, 3, 3)" in text
    assert "Dense_1 (Linear+ReLU)" in text and "(None, 1152)" in text


def test_summary_cli_json(shipped_model):
    runner = CliRunner()
    result = runner.invoke(main, ["summary", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["total_params"] == 208_982 and data["architecture"] == "seed_cnn"
    assert [(layer["name"], tuple(layer["output_shape"]), layer["params"]) for layer in data["layers"]] == MODEL_A
    assert data["config"]["preprocessing"] == shipped_model.config.preprocessing

    result = runner.invoke(main, ["summary", "--architecture", "model_b"])
    assert result.exit_code == 0 and "Total params: 113,514" in result.stdout

    result = runner.invoke(main, ["summary", "--architecture", "model_b", "--model", "x.json"])
    assert result.exit_code == 1 and "either --model or --architecture" in result.output
