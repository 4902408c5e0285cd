"""Model files: round trip gives identical outputs; tampered / mismatched / unsafe
files are refused with ModelFileError, and loading never unpickles."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import subprocess
import sys
import warnings

import pytest
import torch
from safetensors.torch import save as st_save

from convscope.models import ModelFileError, build_model, default_config, load_model, save_model
from convscope.models.files import UnverifiedWeightsWarning, paths_for



def unverified():
    """verify_hash=False / allow_unverified=True must always warn loudly."""
    return pytest.warns(UnverifiedWeightsWarning, match="UNVERIFIED WEIGHTS")


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
    with unverified(), pytest.raises(ModelFileError, match="does not fit architecture 'model_b'.*wrong shapes"):
        load_model(config_path, verify_hash=False)


def test_wrong_shapes_missing_and_extra_tensors_are_refused(saved):
    model, weights, config_path = saved
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["Dense_1.linear.weight"] = torch.zeros(100, 1000)
    del state["Dense_2.bias"]
    state["sneaky.extra"] = torch.zeros(3)
    weights.write_bytes(st_save(state))
    with unverified(), pytest.raises(ModelFileError) as info:
        load_model(config_path, verify_hash=False)
    message = str(info.value)
    assert "missing tensors ['Dense_2.bias']" in message and "unexpected tensors ['sneaky.extra']" in message
    assert "Dense_1.linear.weight (100, 1000)≠(100, 1152)" in message


def test_non_finite_and_integer_weights_are_refused(saved):
    model, weights, config_path = saved
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["Conv2D_1.conv.bias"][0] = float("nan")
    weights.write_bytes(st_save(state))
    with unverified(), pytest.raises(ModelFileError, match="NaN or infinite"):
        load_model(config_path, verify_hash=False)
    state["Conv2D_1.conv.bias"] = torch.zeros(32, dtype=torch.int32)
    weights.write_bytes(st_save(state))
    with unverified(), pytest.raises(ModelFileError, match="not floating point"):
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
    with (unverified() if not verify_hash else contextlib.nullcontext()), pytest.raises(ModelFileError) as info:
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
    # A ClickException ends as SystemExit(1); anything else (a traceback in a terminal) would be here instead.
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.output.startswith("Error: ") and "unknown architecture 'resnet50'" in result.output
    assert len(result.output.strip().splitlines()) == 1


# --- integrity: a model file without a verifiable hash -------------------------------------------


def _tamper(weights):
    """Scale the weights ×1.5 (a different, plausible model) under the same file name."""
    from safetensors.torch import load as st_load

    state = {k: v * 1.5 for k, v in st_load(weights.read_bytes()).items()}
    weights.write_bytes(st_save(state))
    return state


@pytest.mark.parametrize(
    ("recorded", "what"),
    [(None, "has no weights_sha256"), ("", "has a blank weights_sha256"), ("   ", "has a blank weights_sha256"),
     ("abc123", "'abc123', not 64 hex digits"), ("g" * 64, "not 64 hex digits"), (12345, "must be a string")],
)
def test_a_config_without_a_valid_hash_is_refused(saved, recorded, what):
    _model, weights, config_path = saved
    data = json.loads(config_path.read_text())
    if recorded is None:
        del data["weights_sha256"]
    else:
        data["weights_sha256"] = recorded
    config_path.write_text(json.dumps(data))
    _tamper(weights)  # with no hash nothing could tell: refusing is the only safe answer
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refusing must not also warn
        with pytest.raises(ModelFileError, match=what) as info:
            load_model(config_path)
    assert str(config_path) in str(info.value)
    if recorded != 12345:
        assert "allow_unverified=True" in str(info.value) and "refused" in str(info.value)


def test_allow_unverified_loads_the_weights_with_a_loud_warning(saved):
    _model, weights, config_path = saved
    _edit_config(config_path, weights_sha256="")
    state = _tamper(weights)
    with unverified() as record:
        model = load_model(config_path, allow_unverified=True)
    assert "has a blank weights_sha256" in str(record[0].message) and str(weights) in str(record[0].message)
    assert torch.equal(model.state_dict()["Dense_2.bias"], state["Dense_2.bias"])
    # The opt-in covers a missing hash only: a present, wrong hash is refused all the same.
    _edit_config(config_path, weights_sha256="0" * 64)
    with pytest.raises(ModelFileError, match="does not match"):
        load_model(config_path, allow_unverified=True)


def test_an_upper_case_hash_is_accepted(saved):
    _model, _weights, config_path = saved
    _edit_config(config_path, weights_sha256=json.loads(config_path.read_text())["weights_sha256"].upper())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model(config_path)


def test_cli_refuses_a_model_without_hash_in_one_line_without_traceback(saved):
    _model, _weights, config_path = saved
    _edit_config(config_path, weights_sha256="")
    run = subprocess.run(
        [sys.executable, "-m", "convscope", "summary", "--model", str(config_path)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "default"},
    )
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "has a blank weights_sha256" in lines[0]


# --- reproducible files --------------------------------------------------------------------------

_SAVE_SCRIPT = """
import sys, torch
from convscope.models import build_model, default_config, save_model
torch.manual_seed(5)
model = build_model("seed_cnn")
config = default_config(model, test_accuracy=0.25, training={"recipe": {"name": "x", "lr": 0.1}, "seed": 5})
save_model(model, sys.argv[1], config)
"""


def test_same_weights_give_byte_identical_files_across_processes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    paths = []
    for run, hash_seed in enumerate(("0", "1", "12345")):
        stem = tmp_path / f"run{run}" / "model"
        subprocess.run(
            [sys.executable, "-c", _SAVE_SCRIPT, str(stem)], check=True, timeout=120,
            env={**env, "PYTHONHASHSEED": hash_seed},
        )
        paths.append(paths_for(stem))
    weights = [w.read_bytes() for w, _ in paths]
    configs = [c.read_bytes() for _, c in paths]
    assert weights[0] == weights[1] == weights[2]
    assert configs[0] == configs[1] == configs[2]
    assert json.loads(configs[0])["weights_sha256"] == hashlib.sha256(weights[0]).hexdigest()
    # The metadata is really in the file (sorted), and safetensors reads it back.
    from safetensors import safe_open

    with safe_open(str(paths[0][0]), "pt") as handle:
        assert handle.metadata() == {"architecture": "seed_cnn", "format": "convscope-model/1"}
    # Within one process too (safetensors' own writer varies its metadata order from call to call).
    from convscope.models.files import model_to_bytes

    model = load_model(paths[0][0])
    assert {model_to_bytes(model, model.config)[0] for _ in range(20)} == {weights[0]}


def test_deterministic_writer_matches_safetensors_own_layout():
    from safetensors.torch import load as st_load

    from convscope.models.files import safetensors_bytes

    torch.manual_seed(0)
    tensors = {"b": torch.randn(3, 4), "a": torch.arange(5), "h": torch.randn(3).half(), "empty": torch.zeros(0),
               "scalar": torch.tensor(2.0), "flags": torch.tensor([True, False])}
    # Without metadata (or with one key) safetensors' own order is fixed: the bytes must be equal.
    assert safetensors_bytes(tensors) == st_save(tensors)
    assert safetensors_bytes(tensors, {"k": "v"}) == st_save(tensors, metadata={"k": "v"})
    back = st_load(safetensors_bytes(tensors, {"z": "1", "a": "2", "m": "3"}))
    assert all(torch.equal(back[k], v) for k, v in tensors.items())
    many = {f"key{i}": str(i) for i in range(20)}
    header = safetensors_bytes(tensors, many)
    n = int.from_bytes(header[:8], "little")
    assert list(json.loads(header[8 : 8 + n])["__metadata__"]) == sorted(many)


# --- non-finite and nonsense numbers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        ("test_accuracy", "NaN", "non-finite number NaN"),
        ("test_accuracy", "Infinity", "non-finite number Infinity"),
        ("test_accuracy", "-Infinity", "non-finite number -Infinity"),
        ("test_accuracy", "1e400", "too large to be finite"),
        ("training", '{"lr": NaN}', "non-finite number NaN"),
        ("test_accuracy", "99.6", "test_accuracy 99.6 is not a fraction"),
        ("test_accuracy", '"high"', "test_accuracy 'high' is not a fraction"),
        ("test_accuracy", "true", "test_accuracy True is not a fraction"),
    ],
)
def test_non_finite_or_nonsense_numbers_in_the_json_are_refused(saved, where, value, message):
    _model, _weights, config_path = saved
    data = json.loads(config_path.read_text())
    data[where] = "__VALUE__"
    config_path.write_text(json.dumps(data).replace('"__VALUE__"', value))
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(config_path)
    assert str(config_path) in str(info.value)


def test_deeply_nested_or_huge_json_is_refused_without_recursion_error(saved):
    _model, _weights, config_path = saved
    data = json.loads(config_path.read_text())
    config_path.write_text(json.dumps(data)[:-1] + ', "extra": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ModelFileError, match="nested 100001 levels deep") as info:
        load_model(config_path)
    assert not isinstance(info.value.__context__, RecursionError)
    with open(config_path, "w") as handle:  # 17 MB: more than any model config
        handle.write('{"x": "' + "a" * (17 << 20) + '"}')
    with pytest.raises(ModelFileError, match="larger than"):
        load_model(config_path)


@pytest.mark.parametrize("factor", [1e30, 1e7])
def test_weights_of_absurd_magnitude_are_refused(saved, factor):
    model, weights, config_path = saved
    scaled = build_model("seed_cnn")
    scaled.load_state_dict({k: v * factor for k, v in model.state_dict().items()})
    save_model(scaled, config_path)  # a consistent pair, hash and all: only the values are absurd
    with pytest.raises(ModelFileError, match="absurd magnitude") as info:
        load_model(config_path)
    assert str(weights) in str(info.value)
    assert load_model(config_path, max_abs_weight=None).state_dict()["Dense_2.bias"].abs().max() > 0


def test_an_oversized_weights_file_is_refused_before_reading(saved):
    _model, weights, config_path = saved
    with open(weights, "ab") as handle:
        handle.truncate(50 << 20)  # 50 MB (sparse): far more than Model A's 0.8 MB
    with pytest.raises(ModelFileError, match="far more than 'seed_cnn'"):
        load_model(config_path)
