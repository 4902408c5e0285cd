"""The look-inside commands end to end (small settings), and their single-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from convscope.cli import main


@pytest.fixture(scope="module")
def run(mnist_dir):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, list(args), env={"CONVSCOPE_DATA": str(mnist_dir)}, catch_exceptions=False)

    return invoke


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_activations_command(run, tmp_path, test_split):
    report = _json(run("activations", "-i", "test:1270", "-l", "Conv2D_1,Dense_1", "--out", str(tmp_path), "--json"))
    assert report["label"] == 4 and len(report["probabilities"]) == 10
    assert report["layers"]["Conv2D_1"]["shape"] == [32, 26, 26]
    saved = np.load(tmp_path / "activations_test-1270_Conv2D_1.npy")
    assert saved.shape == (32, 26, 26)
    assert report["layers"]["Conv2D_1"]["map_max"][5] == pytest.approx(float(saved[5].max()), abs=1e-5)
    png = Image.open(tmp_path / "activations_test-1270_Conv2D_1.png")
    assert png.size[0] > 800 and png.size[1] > 300
    assert (tmp_path / "input_test-1270.png").is_file() and (tmp_path / "activations_test-1270_Dense_1.png").is_file()


def test_filters_predict_commands(run, tmp_path):
    report = _json(run("filters", "--layer", "all", "--out", str(tmp_path / "f"), "--json"))
    assert list(report["layers"]) == ["Conv2D_1", "Conv2D_2", "Conv2D_3"]
    assert np.load(tmp_path / "f" / "filters_Conv2D_2.npy").shape == (64, 32, 3, 3)
    report = _json(run("predict", "test:0", "-i", "test:1", "--top", "2", "--out", str(tmp_path / "p"), "--json"))
    first = report["predictions"][0]
    assert first["image"] == "test:0" and first["label"] == 7 and first["predicted"] == 7
    assert len(first["top"]) == 2 and first["top"][0]["probability"] >= first["top"][1]["probability"]
    assert (tmp_path / "p" / "predict_test-1.png").is_file()


def test_topk_compare_mistakes_commands(run, tmp_path):
    report = _json(run("topk", "-l", "Conv2D_2", "--k", "4", "--num-images", "300", "--maps", "0-3",
                       "--out", str(tmp_path / "t"), "--json"))
    assert report["num_images"] == 300 and len(report["maps"]) == 64 and len(report["maps"][0]["images"]) == 4
    assert np.load(tmp_path / "t" / "topk_Conv2D_2_indices.npy").shape == (64, 4)
    report = _json(run("compare", "--classes", "4", "9", "--num-images", "800", "--examples", "2",
                       "--out", str(tmp_path / "c"), "--json"))
    assert len(report["clear_a"]) == 2 and all(e["label"] == 4 for e in report["clear_a"] + report["ambiguous_a"])
    assert len(report["layers"]["Conv2D_3"]["separating"]) == 20
    for name in ["compare_4_9_patterns.png", "compare_4_9_ambiguous.png", "compare_4_9_separation.png",
                 "compare_4_9_Conv2D_3_cohens_d.npy"]:
        assert (tmp_path / "c" / name).is_file(), name
    report = _json(run("compare", "--classes", "4", "9", "--images", "test:4,test:7", "--num-images", "200",
                       "--out", str(tmp_path / "c2"), "--json"))
    assert [e["image"] for e in report["clear_b"]] == ["test:7"] and report["ambiguous_a"] == []
    report = _json(run("mistakes", "--pair", "4,9", "--out", str(tmp_path / "m"), "--json"))
    assert all(m["true"] == "4" and m["predicted"] == "9" for m in report["mistakes"])
    assert report["shown"] == report["pair_count"] == len(report["mistakes"])
    assert (tmp_path / "m" / "mistakes.png").is_file() and (tmp_path / "m" / "confusion.png").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["activations", "-i", "test:10000"], "index must be 0..9999"),
        (["activations", "-l", "Conv2D_9"], "valid layers"),
        (["activations", "-i", "nothere.png"], "no such file"),
        (["filters", "-l", "Dense_1"], "layers with kernels"),
        (["topk", "-l", "Conv2D_3:500"], "0..127"),
        (["topk", "--maps", "5-900", "--num-images", "50"], "0..127"),
        (["compare", "--classes", "4", "4"], "two different classes"),
        (["compare", "--images", "test:0"], "neither class 4 nor 9"),
        (["mistakes", "--pair", "4"], "TRUE,PREDICTED"),
    ],
)
def test_bad_input_is_one_clear_line(run, tmp_path, args, message):
    result = run(*args, "--out", str(tmp_path))
    assert result.exit_code != 0
    assert message in result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # a clean error, not a crash
    assert len([line for line in result.output.splitlines() if line.startswith("Error")]) == 1
