"""``convscope explain`` on a model that is not about digits (a Model A trained on
real Fashion-MNIST, saved as a native file): its own dataset by default, class
names as targets and in the figures, the sanity check on its images; and every bad
number or target as one clear line, with nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from convscope.cli import main


@pytest.fixture(scope="module")
def fashion(fashion_model_file):
    from convscope.data.catalog import open_dataset
    from convscope.models import load_model

    return load_model(fashion_model_file), open_dataset("fashion-mnist").split("test")


def _run(*args: str):
    return CliRunner().invoke(main, ["explain", *args])


def test_class_names_as_targets_on_a_fashion_model(fashion_model_file, fashion, tmp_path):
    from convscope.explain import GradCAM
    from convscope.inference import to_input

    model, split = fashion
    result = _run("--model", str(fashion_model_file), "--method", "gradcam", "--target", "Sandal",
                  "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # the default image comes from the model's own dataset (Fashion-MNIST), not from MNIST
    assert data["image"] == "test:1302" and data["label"] == int(split.labels[1302])
    assert data["label_name"] == split.class_names[data["label"]]
    assert data["class_names"][5] == "Sandal" and data["model"] == "fashion-test"
    entry = data["results"][0]
    assert entry["target"] == 5 and entry["target_name"] == "Sandal" and entry["title"] == "Grad-CAM (Conv2D_3)"
    expected = GradCAM(model).attribute(to_input(model, split.images[1302]), 5)[0, 0].numpy()
    assert np.allclose(np.load(tmp_path / "explain_gradcam_class5.npy"), expected, atol=1e-6)
    assert (tmp_path / "explain_gradcam_class5.png").stat().st_size > 10_000


def test_all_classes_and_sanity_on_a_fashion_model(fashion_model_file, fashion, tmp_path):
    model, split = fashion
    result = _run("--model", str(fashion_model_file), "--method", "saliency", "--all-classes", "--image", "test:7",
                  "--out", str(tmp_path / "all"), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["label"] == int(split.labels[7]) and len(data["results"][0]["per_class"]) == 10
    assert (tmp_path / "all" / "explain_saliency_all_classes.png").exists()
    result = _run("--model", str(fashion_model_file), "--sanity", "--sanity-methods", "saliency,gradcam",
                  "--sanity-images", "3", "--image", "test:5", "--out", str(tmp_path / "sanity"), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["images_used"] == ["test:5", "test:0", "test:1"] and data["label"] == int(split.labels[5])
    assert data["sanity"]["stages"] == ["original", "Dense_2", "Dense_1", "Conv2D_3", "Conv2D_2", "Conv2D_1"]
    assert (tmp_path / "sanity" / "sanity.png").exists()


def test_a_dataset_that_does_not_fit_is_one_line(fashion_model_file, tmp_path):
    folder = tmp_path / "photos"
    from zoo import make_photo_folder

    make_photo_folder(folder, per_class=5)
    result = _run("--model", str(fashion_model_file), "--dataset", str(folder), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "4 classes" in result.output and not (tmp_path / "out").exists()


BAD = [
    (["--noise", "nan"], "'--noise': 'nan' is not a finite number"),
    (["--noise", "inf"], "'--noise': 'inf' is not a finite number"),
    (["--baseline", "nan"], "'--baseline': 'nan' is not a finite number"),
    (["--baseline", "-inf"], "'--baseline': '-inf' is not a finite number"),
    (["--baseline", "black"], "'--baseline': 'black' is not 'min', 'mean' or a number"),
    (["--steps", "inf"], "'--steps'"),
    (["--steps", "1"], "'--steps'"),
    (["--samples", "nan"], "'--samples'"),
    (["--window", "0"], "'--window'"),
    (["--stride", "-2"], "'--stride'"),
    (["--seed", "-1"], "'--seed'"),
    (["--seed", "1.5"], "'--seed'"),
    (["--sanity-images", "0"], "'--sanity-images'"),
    (["--method", "lrp"], "'--method'"),
    (["--smooth-base", "occlusion"], "'--smooth-base'"),
    (["--target", "Sandal"], "target 'Sandal' is neither a class number 0..9 nor a map/unit address"),
    (["--target", "Conv2D_3"], "names a whole layer"),
    (["--target", "Conv2D_3:999"], "0..127"),
    (["--target", "Conv2D_3:1@9,9"], "@0..2,0..2"),
    (["--target", "x" * 5000 + ":1"], "valid layers"),
    (["--target", "  "], "--target is empty"),
    (["--method", "occlusion", "--window", "29"], "window 1..28"),
    (["--method", "gradcam", "--layer", "Dense_2"], "Grad-CAM needs a layer with maps"),
    (["--method", "gradcam", "--layer", "Conv2D_9"], "no layer 'Conv2D_9'"),
    (["--sanity", "--sanity-methods", ","], "--sanity-methods: unknown empty list"),
    (["--image", "test:99999"], "0..9999"),
]


@pytest.mark.parametrize("args, message", BAD)
def test_bad_input_is_one_line_and_writes_nothing(mnist_dir, tmp_path, args, message):
    out = tmp_path / "out"
    result = _run(*args, "--data-dir", str(mnist_dir), "--out", str(out))
    assert result.exit_code in (1, 2), result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # anything else would be a traceback
    assert message in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1 and len(error_lines[0]) < 800  # one line, and a long name is not echoed whole
    assert not out.exists()


def test_an_unwritable_output_is_refused_before_the_work(mnist_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _run("--data-dir", str(mnist_dir), "--out", str(blocker / "out"))
    assert result.exit_code == 1 and "is a file, not a folder" in result.output


@pytest.mark.parametrize("args, message", [
    (["--noise", "nan"], "'--noise': 'nan' is not a finite number"),
    (["--target", "Conv2D_3:999"], "0..127"),
])
def test_no_traceback_in_a_real_process(mnist_dir, tmp_path, args, message):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "convscope", "explain", *args, "--data-dir", str(mnist_dir), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode in (1, 2) and message in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "o").exists()
