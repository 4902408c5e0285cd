"""The look-inside commands on models other than the shipped one: a Fashion-MNIST
model trained in the fixture (class names, class pairs by name, evaluate's accuracy
against an independent count) and the zoo's RGB net on a real-photo image folder
(the CLI with the model loader swapped, since the native format cannot save a
custom module); plus issue 14's classes of bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from convscope.cli import main
from convscope.inference import to_input

FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot")


@pytest.fixture(scope="module")
def run(mnist_dir):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, [str(a) for a in args], env={"CONVSCOPE_DATA": str(mnist_dir)},
                             catch_exceptions=False)

    return invoke


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def fashion(fashion_model_file):
    """``(model file, test split, independent predictions, independent probabilities)``."""
    from convscope.models import load_model

    path, test = fashion_model_file
    model = load_model(path)
    with torch.no_grad():
        logits = torch.cat([model(to_input(model, test.images[i : i + 2500])) for i in range(0, len(test), 2500)])
    return path, test, logits.argmax(1).numpy(), torch.softmax(logits, 1).numpy()


def test_fashion_predict_evaluate_and_the_most_confused_pair(run, tmp_path, fashion):
    path, test, predicted, probabilities = fashion
    report = _json(run("predict", "-i", "test:0", "--model", path, "--out", tmp_path / "p", "--json"))
    row = report["predictions"][0]
    assert row["label"] == 9 and row["label_name"] == "Ankle boot"  # test:0 of Fashion-MNIST
    assert row["predicted_name"] == FASHION_NAMES[row["predicted"]] == FASHION_NAMES[predicted[0]]
    assert [t["name"] for t in row["top"]] == [FASHION_NAMES[t["class"]] for t in row["top"]]

    report = _json(run("evaluate", "--model", path, "--out", tmp_path / "e", "--json"))
    labels = np.asarray(test.labels)
    assert report["accuracy"] == pytest.approx(float((predicted == labels).mean()), abs=0)
    assert report["class_names"] == list(FASHION_NAMES) and report["parameters"]["dataset"] == "fashion-mnist"
    assert report["accuracy"] > 0.5  # trained, if briefly
    # the most confused pair: an independent count from the predictions
    confusion = np.zeros((10, 10), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    symmetric = confusion + confusion.T
    np.fill_diagonal(symmetric, -1)
    count = symmetric.max()
    tied = [(a, b) for a in range(10) for b in range(a + 1, 10) if symmetric[a, b] == count]
    soft = {(a, b): probabilities[labels == a, b].sum() + probabilities[labels == b, a].sum() for a, b in tied}
    a, b = max(tied, key=lambda pair: (soft[pair], -pair[0], -pair[1]))
    pair = report["most_confused_pair"]
    assert (pair["a"], pair["b"], pair["count"]) == (a, b, count)
    assert (pair["a_name"], pair["b_name"]) == (FASHION_NAMES[a], FASHION_NAMES[b])
    csv = (tmp_path / "e" / "misclassified.csv").read_text().splitlines()
    assert len(csv) == 1 + int((predicted != labels).sum()) and '"T-shirt/top"' not in csv[0]

    # compare with no classes compares that pair
    report = _json(run("compare", "--model", path, "--num-images", "2000", "--examples", "1", "--layers", "Dense_1",
                       "--out", tmp_path / "c0", "--json"))
    first = labels[:2000]
    sub = np.zeros((10, 10), np.int64)
    np.add.at(sub, (first, predicted[:2000]), 1)
    sub = sub + sub.T
    np.fill_diagonal(sub, -1)
    assert sub[report["class_a"], report["class_b"]] == sub.max() and report["pair_chosen_by"] == "most confused"


def test_fashion_compare_and_mistakes_by_class_name(run, tmp_path, fashion):
    path, test, predicted, _ = fashion
    report = _json(run("compare", "--model", path, "--classes", "Sandal", "Sneaker", "--num-images", "2000",
                       "--examples", "2", "--per-row", "16", "--input-cmap", "magma", "--out", tmp_path / "c",
                       "--json"))
    assert (report["class_a"], report["class_b"]) == (5, 7)
    assert (report["class_a_name"], report["class_b_name"]) == ("Sandal", "Sneaker")
    labels = np.asarray(test.labels)
    assert all(labels[int(e["image"].split(":")[1])] == 5 for e in report["clear_a"])
    assert all(e["label_name"] == "Sneaker" for e in report["clear_b"])
    for name in ["compare_Sandal_Sneaker_patterns.png", "compare_Sandal_Sneaker_separation.png",
                 "compare_Sandal_Sneaker_Conv2D_3_cohens_d.npy"]:
        assert (tmp_path / "c" / name).is_file(), name
    assert report["parameters"]["per_row"] == 16 and report["parameters"]["input_cmap"] == "magma"
    report = _json(run("mistakes", "--model", path, "--pair", "Shirt,T-shirt/top", "--limit", "5",
                       "--out", tmp_path / "m", "--json"))
    expected = int(((labels == 6) & (predicted == 0)).sum())
    assert report["pair_count"] == expected and report["parameters"]["pair_names"] == ["Shirt", "T-shirt/top"]
    assert all(m["true"] == "Shirt" and m["predicted"] == "T-shirt/top" for m in report["mistakes"])
    result = run("compare", "--model", path, "--classes", "Sandal", "Boot", "--out", tmp_path / "x")
    assert result.exit_code == 1 and "no class named 'Boot'" in result.output and "Ankle boot" in result.output


@pytest.fixture
def rgb_cli(monkeypatch, rgb_model, mnist_dir):
    """The CLI with ``--model`` answered by the zoo's RGB net (on the photo folder)."""
    from convscope.cli import inside_cmd

    monkeypatch.setattr(inside_cmd, "load_model_or_fail", lambda path, device="cpu": rgb_model)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, [str(a) for a in args], env={"CONVSCOPE_DATA": str(mnist_dir)},
                             catch_exceptions=False)

    return invoke


def test_rgb_model_through_the_cli(rgb_cli, tmp_path, photo_folder, rgb_test):
    report = _json(rgb_cli("activations", "-i", "test:4", "-l", "conv2:3@4,5,heads.hidden", "--out", tmp_path / "a",
                           "--json"))
    assert list(report["layers"]) == ["conv2", "heads.hidden"] and report["class_names"][1] == "cat"
    saved = np.load(tmp_path / "a" / "activations_test-4_conv2.npy")
    assert report["layers"]["conv2"]["selected"]["value"] == pytest.approx(float(saved[3, 4, 5]), abs=1e-6)
    assert Image.open(tmp_path / "a" / "input_test-4.png").mode == "RGB"
    report = _json(rgb_cli("topk", "--k", "2", "--out", tmp_path / "t", "--json"))
    assert report["layer"] == "conv3" and report["receptive_field"]["method"] == "geometry"
    assert report["num_images"] == len(rgb_test)
    report = _json(rgb_cli("compare", "--classes", "cat", "rocket", "--examples", "1", "--out", tmp_path / "c",
                           "--json"))
    assert report["class_a_name"] == "cat" and (tmp_path / "c" / "compare_cat_rocket_patterns.png").is_file()
    report = _json(rgb_cli("filters", "--out", tmp_path / "f", "--json"))
    assert report["layers"]["conv1"]["shape"] == [12, 3, 3, 3] and report["layers"]["conv1"]["drawn_in_colour"]
    # a photo file is converted as the spec says (resized to 32×32, RGB)
    photo = next((photo_folder / "cat").glob("*.png"))
    report = _json(rgb_cli("predict", str(photo), "--out", tmp_path / "p", "--json"))
    assert report["predictions"][0]["predicted_name"] in ("astronaut", "cat", "coffee", "rocket")


def test_layer_address_with_a_unit_is_not_split(run, tmp_path):
    report = _json(run("activations", "-i", "test:1270", "-l", "Conv2D_3:5@1,2", "-l", "Conv2D_1,Dense_1",
                       "--first", "8", "--input-cmap", "viridis", "--out", tmp_path, "--json"))
    assert list(report["layers"]) == ["Conv2D_3", "Conv2D_1", "Dense_1"]
    saved = np.load(tmp_path / "activations_test-1270_Conv2D_3.npy")
    assert saved.shape == (128, 3, 3)  # --first draws fewer maps; the array keeps all
    assert report["layers"]["Conv2D_3"]["selected"] == {"map": 5, "position": [1, 2],
                                                       "value": pytest.approx(float(saved[5, 1, 2]), abs=1e-6),
                                                       "max": pytest.approx(float(saved[5].max()), abs=1e-6)}
    from convscope.cli.inside_cmd import split_layer_texts

    assert split_layer_texts(["a:1@2,3,b", "c,d:4@-1,0", "e:1@2"]) == ["a:1@2,3", "b", "c", "d:4@-1,0", "e:1@2"]


def test_same_file_names_do_not_overwrite(run, tmp_path, test_split):
    for folder, index in (("one", 0), ("two", 1)):
        (tmp_path / folder).mkdir()
        Image.fromarray(test_split.images[index]).save(tmp_path / folder / "x.png")
    report = _json(run("predict", tmp_path / "one" / "x.png", tmp_path / "two" / "x.png", "--out", tmp_path / "out",
                       "--json"))
    assert [p["figure"] for p in report["predictions"]] == ["predict_x.png", "predict_x-2.png"]
    assert len(report["notes"]) == 1 and "x-2" in report["notes"][0]
    assert (tmp_path / "out" / "predict_x.png").is_file() and (tmp_path / "out" / "predict_x-2.png").is_file()
    assert report["predictions"][0]["predicted"] != report["predictions"][1]["predicted"]  # a 7 and a 2
    result = run("predict", tmp_path / "one" / "x.png", tmp_path / "two" / "x.png", "--out", tmp_path / "o2")
    assert result.exit_code == 0 and "note: inputs share the file name" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["compare", "--threshold", "nan"], "not a finite number"),
        (["compare", "--threshold", "inf"], "not a finite number"),
        (["compare", "--classes", "4", "ten"], "no class named 'ten'"),
        (["activations", "-l", "x" * 100_000], "too long"),
        (["activations", "-l", "Conv2D_3:5@9,9"], "@0..2,0..2"),
        (["topk", "-l", "Conv2D_3", "--maps", "1-" + "9" * 5000], "too long"),
        (["mistakes", "--pair", "4,four"], "cannot read --pair"),
        (["mistakes", "--pair", "4,4"], "must differ"),
        (["topk", "--batch-size", "0"], "0 is not in the range"),
        (["evaluate", "--dataset", "nowhere/at/all"], "nowhere"),
    ],
)
def test_bad_input_is_one_short_line(run, tmp_path, args, message):
    result = run(*args, "--out", tmp_path / "o")
    assert result.exit_code != 0
    assert message in result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert len(result.output) < 1000  # a 100,000-character argument is never echoed whole
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())  # nothing half-written


def test_no_traceback_in_a_real_process(tmp_path, mnist_dir):
    """A real subprocess (CliRunner never shows tracebacks): long and malformed layer names."""
    import os

    env = {**os.environ, "CONVSCOPE_DATA": str(mnist_dir)}
    for layer in ["Conv2D_3:5@1,2,nope", "y" * 100_000]:
        process = subprocess.run([sys.executable, "-m", "convscope", "activations", "-l", layer, "--out",
                                  str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
        assert process.returncode == 1, process.stderr
        assert "Traceback" not in process.stderr and process.stderr.startswith("Error: ")
        assert len(process.stderr) < 1000
