"""Model files: round trip gives identical outputs; tampered / mismatched / unsafe
files are refused with ModelFileError, and loading never unpickles."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save as st_save

from convscope.models import ModelFileError, build_model, default_config, load_model, save_model
from convscope.models.files import paths_for


@pytest.fixture
def saved(tmp_path):
    """A freshly initialised Model A saved as tmp/model.{safetensors,json}."""
    torch.manual_seed(3)
    model = build_model("seed_cnn")
    config = default_config(model, test_accuracy=0.5, training={"recipe": {"name": "unit-test"}})
    weights, config_path = save_model(model, tmp_path / "model", config)
    return model, weights, config_path


def _edit_config(config_path, **changes):
    data = json.loads(config_path.read_text())
    data.update(changes)
    config_path.write_text(json.dumps(data))


@pytest.mark.parametrize("architecture", ["seed_cnn", "model_b"])
def test_round_trip_gives_identical_outputs(tmp_path, architecture):
    torch.manual_seed(7)
    model = build_model(architecture).eval()
    x = torch.randn(16, 1, 28, 28)
    save_model(model, tmp_path / architecture)
    for name in (architecture, f"{architecture}.json", f"{architecture}.safetensors"):
        loaded = load_model(tmp_path / name)
        assert not loaded.training and loaded.config.architecture == architecture
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))  # bit-identical
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value)


def test_config_records_what_later_analyses_need(saved):
    _model, weights, config_path = saved
    data = json.loads(config_path.read_text())
    assert data["architecture"] == "seed_cnn" and data["input_shape"] == [1, 28, 28]
    assert data["layer_names"][0] == "Conv2D_1" and data["layer_names"][-1] == "Dense_2"
    assert data["preprocessing"] == "standardize" and data["dataset"] == "mnist"
    assert data["test_accuracy"] == 0.5 and data["training"]["recipe"]["name"] == "unit-test"
    assert data["library_version"] and len(data["weights_sha256"]) == 64
    assert weights.suffix == ".safetensors" and not list(weights.parent.glob("*.part"))


def test_shipped_model_loads_with_its_recorded_accuracy(shipped_model):
    assert shipped_model.config.architecture == "seed_cnn"
    assert shipped_model.config.test_accuracy is not None and shipped_model.config.test_accuracy >= 0.993
    assert sum(p.numel() for p in shipped_model.parameters()) == 208_982


def test_tampered_weights_are_refused(saved):
    _model, weights, _config = saved
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match .*the weights were changed") as info:
        load_model(weights)
    assert str(weights) in str(info.value)


def test_weights_of_another_model_are_refused(saved, tmp_path):
    _model, weights, config_path = saved
    other_weights, _ = save_model(build_model("seed_cnn"), tmp_path / "other")
    weights.write_bytes(other_weights.read_bytes())
    with pytest.raises(ModelFileError, match="SHA-256"):
        load_model(config_path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"architecture": "resnet50"}, "unknown architecture 'resnet50'"),
        ({"architecture": ["seed_cnn"]}, "architecture must be a name"),
        ({"layer_names": ["Conv2D_1", "Dense_2"]}, "layer_names"),
        ({"input_shape": [3, 32, 32]}, "input_shape"),
        ({"preprocessing": "imagenet"}, "preprocessing 'imagenet'"),
        ({"class_names": ["a", "b"]}, "class_names"),
        ({"format": "convscope-model/99"}, "unsupported model format"),
    ],
)
def test_mismatched_config_is_refused(saved, changes, message):
    _model, _weights, config_path = saved
    _edit_config(config_path, **changes)
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(config_path)
    assert str(config_path) in str(info.value)


def test_architecture_whose_weights_do_not_fit_is_refused(saved):
    _model, _weights, config_path = saved
    # A config claiming Model B for Model A's weights (hash check off, so the shapes are what fail).
    model_b = build_model("model_b")
    _edit_config(config_path, architecture="model_b", layer_names=model_b.layer_names)
    with pytest.raises(ModelFileError, match="does not fit architecture 'model_b'.*wrong shapes"):
        load_model(config_path, verify_hash=False)


def test_wrong_shapes_missing_and_extra_tensors_are_refused(saved):
    model, weights, config_path = saved
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["Dense_1.linear.weight"] = torch.zeros(100, 1000)
    del state["Dense_2.bias"]
    state["sneaky.extra"] = torch.zeros(3)
    weights.write_bytes(st_save(state))
    with pytest.raises(ModelFileError) as info:
        load_model(config_path, verify_hash=False)
    message = str(info.value)
    assert "missing tensors ['Dense_2.bias']" in message and "unexpected tensors ['sneaky.extra']" in message
    assert "Dense_1.linear.weight (100, 1000)≠(100, 1152)" in message


def test_non_finite_and_integer_weights_are_refused(saved):
    model, weights, config_path = saved
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["Conv2D_1.conv.bias"][0] = float("nan")
    weights.write_bytes(st_save(state))
    with pytest.raises(ModelFileError, match="NaN or infinite"):
        load_model(config_path, verify_hash=False)
    state["Conv2D_1.conv.bias"] = torch.zeros(32, dtype=torch.int32)
    weights.write_bytes(st_save(state))
    with pytest.raises(ModelFileError, match="not floating point"):
        load_model(config_path, verify_hash=False)


class _Exploit:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
@pytest.mark.parametrize("verify_hash", [True, False])
def test_pickle_renamed_safetensors_is_refused_without_unpickling(saved, tmp_path, verify_hash, kind):
    model, weights, config_path = saved
    marker = tmp_path / "pwned"
    payload = {"state": model.state_dict(), "payload": _Exploit(marker)}
    if kind == "pickle":
        with open(weights, "wb") as handle:
            pickle.dump(payload, handle)
    else:  # torch.save's zip-of-pickles format under the .safetensors name
        torch.save(payload, weights)
    with pytest.raises(ModelFileError) as info:
        load_model(config_path, verify_hash=verify_hash)
    assert str(weights) in str(info.value)
    assert ("SHA-256" if verify_hash else "not a readable safetensors file") in str(info.value)
    assert not marker.exists()


def test_bad_config_files_are_refused(saved):
    _model, weights, config_path = saved
    config_path.write_text("[1, 2, 3]")
    with pytest.raises(ModelFileError, match="expected a JSON object"):
        load_model(weights)
    config_path.write_text("{not json")
    with pytest.raises(ModelFileError, match="not a valid model config"):
        load_model(weights)
    config_path.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(ModelFileError, match="lacks"):
        load_model(weights)
    config_path.unlink()
    with pytest.raises(ModelFileError, match=r"model\.json not found"):
        load_model(weights)


def test_paths_for_accepts_any_of_the_pair(tmp_path):
    assert paths_for(tmp_path / "m") == paths_for(tmp_path / "m.json") == paths_for(tmp_path / "m.safetensors")
    assert paths_for(tmp_path / "m")[0].name == "m.safetensors"


def test_cli_reports_a_bad_model_file_in_one_line(saved):
    from click.testing import CliRunner

    from convscope.cli import main

    _model, _weights, config_path = saved
    _edit_config(config_path, architecture="resnet50")
    result = CliRunner().invoke(main, ["summary", "--model", str(config_path)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "unknown architecture 'resnet50'" in result.output
    assert "Traceback" not in result.output
