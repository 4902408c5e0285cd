"""load_any: every way to name a model gives the same model, and every other way is refused clearly.

The same real Model A three ways — the Keras 2 file (``../shared/data/keras``), its
native import, and a hand-written Python factory whose weights come from a state_dict
``.pt`` or a ``.safetensors`` — must give the same logits and Keras' own probabilities.
"""

from __future__ import annotations

import hashlib
import json
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from convscope.inference import predict_logits
from convscope.models import ModelFileError, load_model, save_model
from convscope.models.loading import (
    ModelLoadError, SHIPPED_MODELS, classify, complete_spec, load_any, open_model, read_state_dict,
)
from convscope.spec import spec_of, wrap

KERAS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "keras"
MODEL_A_H5 = KERAS_DIR / "seed_model_a_keras2.h5"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "keras"

FACTORY_SOURCE = '''
from collections import OrderedDict

from torch import nn


def _block(layer, name):
    return nn.Sequential(OrderedDict([(name, layer), ("relu", nn.ReLU())]))


def model_a():
    """Model A written by hand, with the imported Keras model's layer names."""
    return nn.Sequential(OrderedDict([
        ("Conv2D_1", _block(nn.Conv2d(1, 32, 3), "conv")),
        ("Max_Pool_1", nn.MaxPool2d(2)),
        ("Conv2D_2", _block(nn.Conv2d(32, 64, 3), "conv")),
        ("Max_Pool_2", nn.MaxPool2d(2)),
        ("Conv2D_3", _block(nn.Conv2d(64, 128, 3), "conv")),
        ("flatten_7", nn.Flatten()),
        ("dense_14", _block(nn.Linear(1152, 100), "linear")),
        ("dense_15", nn.Linear(100, 10)),
    ]))
'''


@pytest.fixture(scope="module")
def keras_a():
    if not MODEL_A_H5.is_file():
        pytest.fail(f"real Keras fixtures not found in {KERAS_DIR} (../shared/data/keras beside the repository)")
    return open_model(MODEL_A_H5, spec_fields={"preprocessing": "standardize"})


@pytest.fixture(scope="module")
def three_ways(keras_a, tmp_path_factory):
    """Model A loaded from Keras, from its native import, and from a factory with .pt and .safetensors weights."""
    folder = tmp_path_factory.mktemp("three_ways")
    save_model(keras_a.model, folder / "model_a")
    state = keras_a.model.state_dict()
    torch.save(state, folder / "model_a_state.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model_a_state.safetensors"))
    (folder / "factory.py").write_text(FACTORY_SOURCE)
    factory_fields = {"input_shape": (1, 28, 28), "preprocessing": "standardize"}
    return folder, {
        "keras": keras_a.model,
        "native": load_any(folder / "model_a.json"),
        "factory_pt": load_any(f"{folder}/factory.py:model_a", weights=folder / "model_a_state.pt",
                               spec_fields=factory_fields),
        "factory_safetensors": load_any(f"{folder}/factory.py:model_a",
                                        weights=folder / "model_a_state.safetensors", spec_fields=factory_fields),
    }


def test_the_same_model_three_ways_gives_the_same_numbers(three_ways, test_split):
    _, models = three_ways
    images = test_split.images[:100]
    logits = {name: predict_logits(model, images) for name, model in models.items()}
    reference = logits["keras"]
    for name, value in logits.items():
        torch.testing.assert_close(value, reference, atol=1e-6, rtol=0, msg=name)
    # and the numbers are Keras' own: its probabilities for these test images (independent of convscope)
    keras_probs = np.load(KERAS_DIR / "golden" / "seed_model_a" / "test_all_probs.npy")[:100]
    np.testing.assert_allclose(torch.softmax(reference, dim=1).numpy(), keras_probs, atol=1e-5)
    for model in models.values():
        assert spec_of(model).preprocessing == "standardize" and spec_of(model).input_shape == (1, 28, 28)


def test_native_import_is_a_graph_file_with_provenance(three_ways):
    folder, models = three_ways
    data = json.loads((folder / "model_a.json").read_text())
    assert data["architecture"] == "graph" and data["graph"]["format"] == "convscope-graph/1"
    assert data["source"]["sha256"] == hashlib.sha256(MODEL_A_H5.read_bytes()).hexdigest()
    assert data["source"]["format"] == "h5-keras2" and data["source"]["keras_version"] == "2.21.0"
    assert [row["params"] for row in data["source"]["keras_layers"]] == [320, 0, 18496, 0, 73856, 0, 115300, 1010]
    assert data["preprocessing"] == "standardize" and data["source"]["spec_defaults"] == [
        "class_names", "dataset", "image_conversion"]
    assert models["native"].config.architecture == "graph"
    assert models["factory_pt"].config.architecture == "python"
    assert models["factory_pt"].config.source["weights_sha256"] == hashlib.sha256(
        (folder / "model_a_state.pt").read_bytes()).hexdigest()


def test_keras_spec_defaults_are_documented_and_reported(keras_a):
    loaded = open_model(MODEL_A_H5)
    assert loaded.kind == "keras"
    assert loaded.defaults == {"class_names": [str(i) for i in range(10)], "preprocessing": "unit",
                               "dataset": "mnist", "image_conversion": "digit"}
    assert keras_a.defaults.keys() == {"class_names", "dataset", "image_conversion"}
    spec = spec_of(keras_a.model)
    assert spec.name == "seed_model_a_keras2" and spec.dataset == "mnist" and spec.image_conversion == "digit"
    # a non-MNIST shape: no dataset, resize
    other = open_model(FIXTURES / "pad_pool_keras3.keras", spec_fields={"class_names": ["a", "b", "c", "d"]})
    assert other.defaults == {"preprocessing": "unit", "dataset": None, "image_conversion": "resize"}
    assert spec_of(other.model).class_names == ("a", "b", "c", "d") and spec_of(other.model).input_shape == (3, 15, 15)


def test_shipped_names_and_default():
    assert "seed_cnn" in SHIPPED_MODELS
    default, named = open_model(None), open_model("seed_cnn")
    assert default.kind == named.kind == "shipped" and not default.defaults
    for key, value in default.model.state_dict().items():
        assert torch.equal(value, named.model.state_dict()[key])


def test_shipped_name_with_a_local_file_of_that_name_is_ambiguous(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seed_cnn.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="both a shipped model and the file"):
        classify("seed_cnn")
    assert classify("seed_cnn.json") == ("native", Path("seed_cnn.json"))


def test_spec_fields_override_a_native_model(shipped_model):
    loaded = load_any(None, spec_fields={"preprocessing": "unit", "class_names": list("abcdefghij")})
    assert spec_of(loaded).preprocessing == "unit" and spec_of(loaded).class_names[0] == "a"
    assert loaded.config.preprocessing == "unit" and loaded.config.class_names[0] == "a"
    assert spec_of(shipped_model).preprocessing == "standardize"  # a fresh copy, the fixture is untouched


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input_shape": (1, 32, 32)}, r"cannot run on an input of shape \(N, 1, 32, 32\).*--input-shape"),
        ({"num_classes": 5}, r"returns shape \(1, 10\).*names 5 classes"),
        ({"class_names": ["a", "b"]}, "names 2 classes"),
        ({"class_names": ["a", "b"], "num_classes": 3}, "names 2 classes but --num-classes says 3"),
        ({"preprocessing": "meanstd"}, "needs --mean and --std"),
        ({"image_conversion": "digit", "input_shape": (3, 15, 15)}, "digit"),
        ({"colour": "red"}, r"unknown spec field\(s\) \['colour'\]"),
    ],
)
def test_spec_fields_that_do_not_fit_are_clear_errors(fields, message):
    with pytest.raises(ModelLoadError, match=message):
        load_any(MODEL_A_H5, spec_fields=fields)


def test_complete_spec_needs_an_input_shape():
    with pytest.raises(ModelLoadError, match="pass --input-shape C,H,W"):
        complete_spec({}, input_shape=None, num_classes=10, name="m")
    spec, defaults = complete_spec({"dataset": "fashion-mnist"}, input_shape=(1, 28, 28), num_classes=10, name="m")
    assert spec.image_conversion == "resize" and "dataset" not in defaults and defaults["image_conversion"] == "resize"


# ---------------------------------------------------------------------------------------------
# factories


def _write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def test_factory_forms_module_spec_dict_and_wrapped(tmp_path):
    _write(tmp_path, "helper_mod.py", "WIDTH = 3\n")
    path = _write(tmp_path, "nets.py", """
        import torch
        from torch import nn
        import convscope
        from helper_mod import WIDTH          # a module beside the file: importable while loading

        def net():
            return nn.Sequential(nn.Conv2d(3, WIDTH, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(WIDTH, 4))

        def with_spec():
            return net(), convscope.ModelSpec(input_shape=(3, 16, 16), class_names=list("wxyz"), preprocessing="raw")

        def with_dict():
            return net(), {"input_shape": [3, 20, 20], "num_classes": 4, "dataset": "somewhere"}

        def wrapped():
            return convscope.wrap(net(), input_shape=(3, 8, 8), class_names=["p", "q", "r", "s"], preprocessing="unit",
                                  image_conversion="crop")
        """)
    folder = str(tmp_path)
    assert folder not in sys.path
    loaded = open_model(f"{path}:with_spec")
    assert spec_of(loaded.model).class_names == tuple("wxyz") and not loaded.defaults
    assert loaded.notes and "no --weights" in loaded.notes[0]
    loaded = open_model(f"{path}:with_dict")
    spec = spec_of(loaded.model)
    assert spec.input_shape == (3, 20, 20) and spec.class_names == ("0", "1", "2", "3") and spec.dataset == "somewhere"
    assert set(loaded.defaults) == {"class_names", "preprocessing", "image_conversion"}
    loaded = open_model(f"{path}:wrapped", spec_fields={"preprocessing": "standardize"})
    assert spec_of(loaded.model).image_conversion == "crop" and spec_of(loaded.model).preprocessing == "standardize"
    # a bare module: the class count is measured by one forward pass
    loaded = open_model(f"{path}:net", spec_fields={"input_shape": (3, 12, 12)})
    assert spec_of(loaded.model).num_classes == 4 and loaded.defaults["dataset"] is None
    assert folder not in sys.path  # the file's folder is not left on sys.path


def test_factory_spec_overrides_and_dtypes(tmp_path):
    path = _write(tmp_path, "more.py", """
        import torch
        from torch import nn
        import convscope
        from convscope.models import build_model

        def rgb():
            net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 2))
            return net, {"input_shape": (3, 8, 8), "class_names": ["cat", "dog"], "preprocessing": "meanstd",
                         "mean": (0.5, 0.5, 0.5), "std": (0.2, 0.2, 0.2)}

        def double():
            return nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).double()

        def seed():
            torch.manual_seed(0)
            return build_model("seed_cnn")
        """)
    spec = spec_of(load_any(f"{path}:rgb"))
    assert spec.preprocessing == "meanstd" and spec.mean == (0.5, 0.5, 0.5)
    spec = spec_of(load_any(f"{path}:rgb", spec_fields={"preprocessing": "unit"}))
    assert spec.preprocessing == "unit" and spec.mean is None and spec.std is None
    with pytest.raises(ModelLoadError, match=r"parameters are float64; .*return model.float\(\) from double\(\)"):
        load_any(f"{path}:double", spec_fields={"input_shape": (1, 2, 2)})
    # a registered architecture from a factory is saved under its own name
    model = load_any(f"{path}:seed", spec_fields={"preprocessing": "standardize"})
    save_model(model, tmp_path / "seed")
    assert json.loads((tmp_path / "seed.json").read_text())["architecture"] == "seed_cnn"
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(load_any(tmp_path / "seed")(x), model(x))


def test_two_factory_files_with_the_same_name_do_not_clash(tmp_path):
    for sub, classes in (("a", 3), ("b", 5)):
        (tmp_path / sub).mkdir()
        _write(tmp_path / sub, "net.py", f"""
            from torch import nn
            def make():
                return nn.Sequential(nn.Flatten(), nn.Linear(16, {classes}))
            """)
    first = load_any(f"{tmp_path}/a/net.py:make", spec_fields={"input_shape": (1, 4, 4)})
    second = load_any(f"{tmp_path}/b/net.py:make", spec_fields={"input_shape": (1, 4, 4)})
    assert spec_of(first).num_classes == 3 and spec_of(second).num_classes == 5


@pytest.mark.parametrize(
    ("body", "call", "message"),
    [
        ("def make():\n    raise ValueError('no GPU here')\n", "make", r"make\(\) raised ValueError: no GPU here \(bad.py, line 2\)"),
        ("def make():\n    return 42\n", "make", r"make\(\) returned int; it must return an nn.Module"),
        ("def make():\n    return (1, 2)\n", "make", r"returned a tuple of \(int, int\)"),
        ("import no_such_module_xyz\n", "make", r"importing .*bad.py raised ModuleNotFoundError"),
        ("def make(:\n", "make", r"raised SyntaxError.*line 1"),
        ("def other():\n    pass\n", "make", r"has no function 'make'; it defines: other"),
        ("import sys\ndef make():\n    sys.exit(3)\n", "make", r"make\(\) raised SystemExit"),
        ("from torch import nn\ndef make():\n    return nn.Linear(4, 2)\n", "make", r"pass --input-shape C,H,W"),
        ("from torch import nn\ndef make():\n    return nn.Linear(4, 2), {'input_shape': (1, 2, 2), 'bogus': 1}\n",
         "make", r"unknown field\(s\) \['bogus'\]"),
    ],
)
def test_factory_failures_are_one_clear_error(tmp_path, body, call, message):
    path = _write(tmp_path, "bad.py", body)
    with pytest.raises(ModelLoadError, match=message):
        load_any(f"{path}:{call}")
    assert str(tmp_path) not in sys.path


def test_weights_files_are_checked_and_never_unpickled(tmp_path):
    path = _write(tmp_path, "net.py", """
        from torch import nn
        def make():
            return nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        """)
    ref = f"{path}:make"
    fields = {"input_shape": (1, 2, 2)}
    good = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    torch.save({"state_dict": good.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pt")
    model = load_any(ref, weights=tmp_path / "checkpoint.pt", spec_fields=fields)
    assert torch.equal(model[1].weight, good[1].weight)

    # a pickled payload: refused by weights_only, and it never runs
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"weight": Payload()}, tmp_path / "evil.pt")
    torch.save(good, tmp_path / "whole_model.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(good, torch.zeros(1, 1, 2, 2)).save(str(tmp_path / "scripted.pt"))
    cases = {
        "evil.pt": r"holds pickled Python objects \(it contains io.open\)",
        "whole_model.pt": r"holds pickled Python objects.*torch.save\(model.state_dict\(\)",
        "scripted.pt": "is a TorchScript archive",
        "missing.pt": "file not found",
        "weights.npz": "unknown weights file type '.npz'",
    }
    (tmp_path / "weights.npz").write_bytes(b"PK")
    for name, message in cases.items():
        with pytest.raises(ModelLoadError, match=message):
            load_any(ref, weights=tmp_path / name, spec_fields=fields)
        with pytest.raises(ModelLoadError):  # and as --model, never loaded
            load_any(tmp_path / name)
    assert not marker.exists()

    torch.save(nn.Linear(3, 2).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ModelLoadError, match=r"does not fit .*missing tensors \['1.bias', '1.weight'\]; unexpected tensors \['bias', 'weight'\]"):
        load_any(ref, weights=tmp_path / "other.pt", spec_fields=fields)
    bad = good.state_dict()
    bad["1.weight"] = torch.full((2, 4), float("nan"))
    torch.save(bad, tmp_path / "nan.pt")
    with pytest.raises(ModelLoadError, match="NaN or infinite"):
        load_any(ref, weights=tmp_path / "nan.pt", spec_fields=fields)
    assert read_state_dict(tmp_path / "checkpoint.pt").keys() == good.state_dict().keys()


def test_weights_only_go_with_factories():
    with pytest.raises(ModelLoadError, match="--weights goes with a Python factory"):
        load_any(MODEL_A_H5, weights="w.pt")


# ---------------------------------------------------------------------------------------------
# what is refused


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("model.onnx", "ONNX files are not supported"),
        ("model.pb", "TensorFlow graph files"),
        ("model.tflite", "TensorFlow graph files"),
        ("model.pkl", "pickle files are never loaded"),
        ("model.xyz", "unknown model file type '.xyz'"),
        ("net.py", r"name the function that builds the model, as .*net.py:FUNCTION"),
        ("net.py:1abc", "give the name of the function"),
        ("missing.h5", "Keras model file .*missing.h5 not found"),
        ("missing.json", r"missing\.json not found"),
        ("missing", r"missing\.json not found"),
        ("missing.pt", "not found"),
    ],
)
def test_unsupported_or_missing_references(tmp_path, name, message):
    with pytest.raises(ModelLoadError, match=message) as info:
        load_any(tmp_path / name if not name.startswith("net.py:") else f"{tmp_path}/{name}")
    assert "\n" not in str(info.value)


def test_nothing_is_loaded_from_a_neighbouring_file(tmp_path):
    save_model(load_model(None), tmp_path / "model")
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    with pytest.raises(ModelLoadError, match="ONNX"):
        load_any(tmp_path / "model.onnx")
    with pytest.raises(ModelLoadError, match="Keras model file .* not found"):
        load_any(tmp_path / "model.h5")


def test_saved_model_folders_and_keras_branches_are_refused(tmp_path):
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="TensorFlow SavedModel folder"):
        load_any(tmp_path / "saved")
    with pytest.raises(ModelLoadError, match="folder"):
        load_any(tmp_path)
    with pytest.raises(ModelLoadError, match="Add"):
        load_any(FIXTURES / "branch_keras2.h5")


# ---------------------------------------------------------------------------------------------
# native files for any describable model


def test_describable_factory_models_save_as_graph_files(tmp_path):
    torch.manual_seed(0)
    model = wrap(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                               nn.Linear(4 * 7 * 7, 3)).eval(),
                 input_shape=(3, 16, 16), class_names=["r", "g", "b"], preprocessing="unit", image_conversion="resize")
    model[1].running_mean.uniform_(-1, 1)
    save_model(model, tmp_path / "rgb")
    again = load_any(tmp_path / "rgb.safetensors")
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    assert spec_of(again).class_names == ("r", "g", "b") and again.config.architecture == "graph"


def test_models_with_their_own_forward_cannot_be_saved(tmp_path):
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x.flatten(1))

    model = wrap(Custom(), input_shape=(1, 2, 2), class_names=["a", "b"])
    with pytest.raises(ModelFileError, match=r"cannot be saved as native files: module <root> is a .*Custom, which "
                                             r"defines its own forward"):
        save_model(model, tmp_path / "custom")
    assert not list(tmp_path.iterdir())


def test_graph_files_are_checked_like_any_native_file(tmp_path, keras_a):
    save_model(keras_a.model, tmp_path / "a")
    config_path = tmp_path / "a.json"
    original = config_path.read_text()
    data = json.loads(original)
    data["input_shape"] = [1, 32, 32]
    config_path.write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match=r"cannot run on an input of shape \(N, 1, 32, 32\)"):
        load_any(config_path)
    with pytest.raises(ModelFileError, match=r"cannot run on an input of shape \(N, 1, 32, 32\)"):
        load_model(config_path)  # the native loader checks a graph model by itself
    data = json.loads(original)
    data["graph"]["root"]["children"][0]["module"]["children"][0]["module"]["out_channels"] = 16
    config_path.write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="wrong shapes"):
        load_any(config_path)
    data = json.loads(original)
    del data["graph"]
    config_path.write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="needs a 'graph' entry"):
        load_any(config_path)
    data = json.loads(original)
    data["layer_names"] = data["layer_names"][::-1]
    config_path.write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="does not match architecture 'graph'"):
        load_any(config_path)
    config_path.write_text(original)
    weights = tmp_path / "a.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-3] ^= 1
    weights.write_bytes(bytes(blob))
    with pytest.raises(ModelLoadError, match="SHA-256"):
        load_any(config_path)
    assert spec_of(load_any(config_path, allow_unverified=True)).preprocessing == "standardize"


def test_a_batchnorm_keras_fixture_round_trips_natively(tmp_path):
    golden = np.load(FIXTURES / "flatten_bn_golden.npz")
    loaded = open_model(FIXTURES / "flatten_bn_keras3.keras")
    save_model(loaded.model, tmp_path / "flatten_bn")
    again = load_any(tmp_path / "flatten_bn.json")
    x = torch.from_numpy(golden["input"].transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        probs = torch.softmax(again(x), dim=1).numpy()
        assert torch.equal(again(x), loaded.model(x))
    last = loaded.model.config.source["keras_layers"][-1]["name"]  # the trailing Activation('softmax') layer
    np.testing.assert_allclose(probs, golden[f"act_{last}"], atol=1e-5)
