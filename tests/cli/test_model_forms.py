"""Every way to name a model on the command line: --model forms, --weights, spec flags,
``convscope import``; every rejected form is one clear line without a traceback.

Real files: the Keras models in ``../shared/data/keras`` (written by Keras 2 and 3,
with Keras' own probabilities for the MNIST test set) and the importer's fixtures.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from convscope.cli import main
from convscope.models.loading import load_any
from convscope.spec import spec_of

KERAS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "keras"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "keras"
MODEL_A = KERAS_DIR / "seed_model_a_keras2.h5"
STANDARDIZE = ["--preprocess", "standardize"]
# file, extra flags, Keras' parameter count, Keras' layer names
KERAS_FILES = {
    "seed_model_a_keras2.h5": (KERAS_DIR, STANDARDIZE, 208_982,
                               ["Conv2D_1", "Max_Pool_1", "Conv2D_2", "Max_Pool_2", "Conv2D_3", "flatten_7", "dense_14",
                                "dense_15"]),
    "seed_model_a_keras3.keras": (KERAS_DIR, STANDARDIZE, 208_982, None),
    "seed_model_b_keras2.h5": (KERAS_DIR, [], 113_514,
                               ["input_1", "conv2d_1", "max_pooling2d_1", "conv2d_2", "max_pooling2d_2", "conv2d_3",
                                "max_pooling2d_3", "flatten_1", "dense_1", "dropout_1", "dense_2"]),
    "pad_pool_keras2.h5": (FIXTURES, ["--class-names", "a,b,c,d"], 697, None),
}
FACTORY = '''
from collections import OrderedDict

from torch import nn


def _block(layer, name):
    return nn.Sequential(OrderedDict([(name, layer), ("relu", nn.ReLU())]))


def model_a():
    return nn.Sequential(OrderedDict([
        ("Conv2D_1", _block(nn.Conv2d(1, 32, 3), "conv")), ("Max_Pool_1", nn.MaxPool2d(2)),
        ("Conv2D_2", _block(nn.Conv2d(32, 64, 3), "conv")), ("Max_Pool_2", nn.MaxPool2d(2)),
        ("Conv2D_3", _block(nn.Conv2d(64, 128, 3), "conv")), ("flatten_7", nn.Flatten()),
        ("dense_14", _block(nn.Linear(1152, 100), "linear")), ("dense_15", nn.Linear(100, 10)),
    ]))


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def custom():
    return Custom()


def broken():
    raise ValueError("the checkpoint folder is not mounted")


def not_a_model():
    return {"layers": 3}
'''

RAISE_LINE = next(n for n, line in enumerate(FACTORY.splitlines(), start=1) if "raise ValueError" in line)


def _invoke(args: list[str]):
    return CliRunner().invoke(main, args)


@pytest.fixture(scope="module")
def keras_dir() -> Path:
    if not MODEL_A.is_file():
        pytest.fail(f"real Keras fixtures not found in {KERAS_DIR} (../shared/data/keras beside the repository)")
    return KERAS_DIR


@pytest.fixture(scope="module")
def keras_probs(keras_dir) -> dict[str, np.ndarray]:
    return {model: np.load(keras_dir / "golden" / model / "test_all_probs.npy") for model in ("seed_model_a", "seed_model_b")}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, keras_dir) -> Path:
    """A folder with the factory file, Model A's weights as a state_dict .pt, a pickled payload, a TorchScript file."""
    folder = tmp_path_factory.mktemp("forms")
    (folder / "nets.py").write_text(FACTORY)
    model = load_any(MODEL_A, spec_fields={"preprocessing": "standardize"})
    torch.save(model.state_dict(), folder / "model_a_state.pt")

    class Payload:  # unpickling this would create the marker file
        def __reduce__(self):
            return (open, (str(folder / "payload_ran"), "w"))

    torch.save({"weight": Payload()}, folder / "payload.pt")
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), folder / "whole_model.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(nn.Linear(2, 2), torch.zeros(1, 2)).save(str(folder / "scripted.pt"))
    (folder / "model.onnx").write_bytes(b"\x08\x07onnx")
    return folder


# ---------------------------------------------------------------------------------------------
# help and usage errors


def test_model_help_lists_every_form_and_the_spec_flags():
    result = _invoke(["summary", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for words in ("--model MODEL", "shipped name (seed_cnn = Model A, fast recipe; reference = the posts' recipe)", "NAME.json / NAME.safetensors", "Keras .h5 or .keras",
                  "FILE.py:FUNCTION", "--weights FILE", "--input-shape C,H,W", "--class-names NAME,NAME,...",
                  "--class-names-file FILE", "--num-classes N", "--preprocess [standardize|unit|meanstd|raw]",
                  "--mean", "--std", "--image-conversion [digit|resize|crop|none]", "--model-dataset NAME|PATH"):
        assert words in text, words
    for command in ("evaluate", "activations", "predict", "import"):
        assert "--input-shape" in _invoke([command, "--help"]).output


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--input-shape", "1,28"], "Invalid value for '--input-shape': '1,28' is not three positive numbers"),
        (["--input-shape", "a,b,c"], "Invalid value for '--input-shape'"),
        (["--input-shape", "0,28,28"], "Invalid value for '--input-shape'"),
        (["--num-classes", "0"], "Invalid value for '--num-classes'"),
        (["--preprocess", "zscore"], "Invalid value for '--preprocess'"),
        (["--image-conversion", "stretch"], "Invalid value for '--image-conversion'"),
        (["--mean", "0.5"], "--mean apply to --preprocess meanstd only"),
        (["--preprocess", "meanstd", "--mean", "0.5"], "--preprocess meanstd needs --std"),
        (["--preprocess", "meanstd", "--mean", "0.5", "--std", "0"], "Invalid value for --std"),
        (["--preprocess", "meanstd", "--mean", "0.5,x", "--std", "1"], "Invalid value for '--mean'"),
        (["--class-names", "a,,b"], "Invalid value for '--class-names'"),
        (["--class-names", "a,b,a"], "class names must differ; repeated: a"),
        (["--class-names", "a,b", "--num-classes", "3"], "--num-classes 3 disagrees with the 2 class names"),
        (["--class-names-file", "/no/such/names.txt"], "Invalid value for '--class-names-file'"),
    ],
)
def test_bad_spec_flags_are_usage_errors_naming_the_flag(flags, message):
    result = _invoke(["summary", *flags])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_class_names_file_and_flag_conflict(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("zero\none\n\n")
    result = _invoke(["summary", "--class-names", "a,b", "--class-names-file", str(names)])
    assert result.exit_code == 2 and "give --class-names or --class-names-file, not both" in result.output


def test_flags_a_command_does_not_read_are_never_ignored_silently():
    import click

    from convscope.cli.common import load_model_or_fail, model_option

    @click.command()
    @model_option
    def reads(model_path):
        click.echo(load_model_or_fail(model_path).convscope_spec.preprocessing)

    @click.command()
    @model_option
    def ignores(model_path):
        click.echo(f"model {model_path}")

    runner = CliRunner()
    result = runner.invoke(reads, ["--preprocess", "unit"])
    assert result.exit_code == 0 and result.stdout == "unit\n" and "warning" not in result.stderr
    result = runner.invoke(ignores, ["--preprocess", "unit", "--num-classes", "10"])
    assert result.exit_code == 0 and result.stdout == "model None\n"
    assert "warning: this command did not read --num-classes, --preprocess; they were ignored" in result.stderr
    assert "warning" not in runner.invoke(ignores, []).stderr


# ---------------------------------------------------------------------------------------------
# rejected forms: one line, no traceback, in a real process


def _cases(folder: Path) -> dict[str, tuple[list[str], str]]:
    nets = folder / "nets.py"
    return {
        "onnx": (["--model", str(folder / "model.onnx")], "ONNX files are not supported"),
        "torchscript": (["--model", str(folder / "scripted.pt")], "is a TorchScript archive"),
        "pickled model as --model": (["--model", str(folder / "whole_model.pt")],
                                     "holds weights or a pickled object, not the code"),
        "pickled payload as --weights": (["--model", f"{nets}:model_a", "--weights", str(folder / "payload.pt"),
                                          "--input-shape", "1,28,28"], "holds pickled Python objects"),
        "pickled model as --weights": (["--model", f"{nets}:model_a", "--weights", str(folder / "whole_model.pt"),
                                        "--input-shape", "1,28,28"], "torch.save(model.state_dict(), path)"),
        "missing file": (["--model", str(folder / "missing.json")], "missing.json not found"),
        "py without function": (["--model", str(nets)], "name the function that builds the model"),
        "factory raises": (["--model", f"{nets}:broken", "--input-shape", "1,28,28"],
                           f"broken() raised ValueError: the checkpoint folder is not mounted (nets.py, line {RAISE_LINE})"),
        "factory returns a dict": (["--model", f"{nets}:not_a_model"], "not_a_model() returned dict"),
        "wrong input shape": (["--model", str(MODEL_A), "--input-shape", "1,32,32"],
                              "cannot run on an input of shape (N, 1, 32, 32)"),
        "wrong class count": (["--model", str(MODEL_A), "--num-classes", "5"],
                              "returns shape (1, 10) for one input, but the spec names 5 classes"),
        "keras branch": (["--model", str(FIXTURES / "branch_keras2.h5")], "Add"),
        "weights without factory": (["--model", str(MODEL_A), "--weights", str(folder / "model_a_state.pt")],
                                    "--weights goes with a Python factory"),
    }


@pytest.mark.parametrize("case", list(_cases(Path("."))))
def test_rejected_forms_give_one_clear_line(workspace, case):
    args, message = _cases(workspace)[case]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "convscope", "summary", *args], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert not (workspace / "payload_ran").exists()


# ---------------------------------------------------------------------------------------------
# convscope import


@pytest.mark.parametrize("name", list(KERAS_FILES))
def test_import_round_trip_gives_keras_numbers_names_and_counts(tmp_path, keras_dir, name):
    folder, flags, keras_total, layer_names = KERAS_FILES[name]
    source = folder / name
    result = _invoke(["import", str(source), "--out", str(tmp_path), *flags, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    config_path = Path(report["files"]["config"])
    assert config_path == tmp_path / (source.stem + ".json") and report["keras_parameters"] == keras_total
    config = json.loads(config_path.read_text())
    assert config["source"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert config["source"]["file"] == str(source.resolve()) and config["architecture"] == "graph"

    # the native files compute the Keras model's numbers
    fields = {"preprocessing": "standardize"} if flags == STANDARDIZE else {}
    if name.startswith("pad_pool"):
        fields = {"class_names": list("abcd")}
        x = torch.from_numpy(np.load(FIXTURES / "pad_pool_golden.npz")["input"].transpose(0, 3, 1, 2).copy())
    else:
        x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    keras_model, native = load_any(source, spec_fields=fields), load_any(config_path)
    with torch.no_grad():
        assert torch.equal(native(x), keras_model(x))
    assert spec_of(native) == spec_of(keras_model)

    # summary: Keras' names and parameter counts, before and after the round trip
    for model_ref, extra in ((str(source), flags), (str(config_path), [])):
        result = _invoke(["summary", "--model", model_ref, *extra, "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["layer_table"] == "keras" and data["total_params"] == keras_total
        assert [row["name"] for row in data["layers"]] == [row["name"] for row in config["source"]["keras_layers"]]
        if layer_names:
            assert [row["name"] for row in data["layers"]] == layer_names
        text = _invoke(["summary", "--model", model_ref, *extra]).stdout
        assert f"Total params: {keras_total:,}" in text and "Imported from Keras" in text


def test_import_says_what_it_used_and_refuses_to_overwrite(tmp_path):
    result = _invoke(["import", str(MODEL_A), "--out", str(tmp_path), "--name", "model_a"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Parameters: 208,982" in out and "Preprocessing: unit (default; pass --preprocess to change)" in out
    assert "Model dataset: mnist (default for 1×28×28 inputs with 10 classes" in out
    assert (tmp_path / "model_a.safetensors").is_file() and spec_of(load_any(tmp_path / "model_a")).name == "model_a"
    again = _invoke(["import", str(MODEL_A), "--out", str(tmp_path), "--name", "model_a", *STANDARDIZE])
    assert again.exit_code == 1 and "already exist; pass --force" in again.output
    forced = _invoke(["import", str(MODEL_A), "--out", str(tmp_path), "--name", "model_a", *STANDARDIZE, "--force"])
    assert forced.exit_code == 0 and "Preprocessing:" not in forced.stdout
    assert spec_of(load_any(tmp_path / "model_a.json")).preprocessing == "standardize"
    bad = _invoke(["import", str(MODEL_A), "--out", str(tmp_path), "--name", "../escape"])
    assert bad.exit_code == 2 and "Invalid value for --name" in bad.output


def test_import_of_factories(tmp_path, workspace):
    nets = workspace / "nets.py"
    result = _invoke(["import", f"{nets}:custom", "--out", str(tmp_path), "--input-shape", "1,28,28"])
    assert result.exit_code == 1
    assert "cannot be saved as native files: module <root> is a" in result.output
    assert "defines its own forward" in result.output and f"keep loading it with --model {nets}:custom" in result.output
    assert not list(tmp_path.iterdir())

    args = ["import", f"{nets}:model_a", "--weights", str(workspace / "model_a_state.pt"), "--out", str(tmp_path),
            "--input-shape", "1,28,28", *STANDARDIZE]
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "model_a.json").read_text())
    assert config["source"]["factory"] == f"{nets}:model_a" and config["source"]["kind"] == "python"
    assert config["source"]["weights_sha256"] == hashlib.sha256((workspace / "model_a_state.pt").read_bytes()).hexdigest()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(load_any(tmp_path / "model_a")(x), load_any(MODEL_A)(x))


# ---------------------------------------------------------------------------------------------
# commands on the model, three ways


@pytest.fixture(scope="module")
def native_a(tmp_path_factory, keras_dir) -> Path:
    folder = tmp_path_factory.mktemp("native")
    result = _invoke(["import", str(MODEL_A), "--out", str(folder), *STANDARDIZE])
    assert result.exit_code == 0, result.output
    return folder / "seed_model_a_keras2.json"


@pytest.mark.parametrize("way", ["keras", "native", "factory"])
def test_evaluate_gives_the_same_accuracy_three_ways(tmp_path, workspace, native_a, mnist_dir, way):
    model_args = {
        "keras": ["--model", str(MODEL_A), *STANDARDIZE],
        "native": ["--model", str(native_a)],
        "factory": ["--model", f"{workspace / 'nets.py'}:model_a", "--weights", str(workspace / "model_a_state.pt"),
                    "--input-shape", "1,28,28", *STANDARDIZE],
    }[way]
    result = _invoke(["evaluate", *model_args, "--data-dir", str(mnist_dir), "--no-plot", "--out", str(tmp_path),
                      "--json"])
    assert result.exit_code == 0, result.output
    assert round(json.loads(result.stdout)["accuracy"], 4) == 0.9899


def test_evaluate_model_b_keras_file(tmp_path, keras_dir, mnist_dir):
    result = _invoke(["evaluate", "--model", str(KERAS_DIR / "seed_model_b_keras2.h5"), "--data-dir", str(mnist_dir),
                      "--no-plot", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert round(json.loads(result.stdout)["accuracy"], 4) == 0.9729


def test_predict_and_activations_on_the_keras_file(tmp_path, keras_probs, mnist_dir):
    model = ["--model", str(MODEL_A), *STANDARDIZE, "--data-dir", str(mnist_dir)]
    result = _invoke(["predict", "test:0", "test:1", "test:8", *model, "--out", str(tmp_path / "p"), "--json"])
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.stdout)["predictions"]
    for item, index in zip(predictions, (0, 1, 8)):
        expected = keras_probs["seed_model_a"][index]  # Keras' own probabilities
        assert item["predicted"] == int(expected.argmax())
        np.testing.assert_allclose(item["probabilities"], expected, atol=1e-5)
    result = _invoke(["activations", "-i", "test:8", "--layer", "Conv2D_3", "--layer", "dense_14", *model,
                      "--out", str(tmp_path / "a"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    np.testing.assert_allclose(report["probabilities"], keras_probs["seed_model_a"][8], atol=1e-5)
    assert report["layers"]["Conv2D_3"]["shape"] == [128, 3, 3] and report["layers"]["dense_14"]["shape"] == [100]
