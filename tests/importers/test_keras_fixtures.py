"""The Keras importer on small models written by tf-keras and Keras 3 (``tests/fixtures/keras``,
made by ``make_fixtures.py``), and on damaged, hostile and unsupported files.

Each golden model is saved as Keras-2 ``.h5``, Keras-3 ``.h5`` and Keras-3 ``.keras``;
Keras' own per-layer outputs sit in ``<model>_golden.npz``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import convscope.importers.keras as keras_module
from convscope.importers import KerasImportError, read_keras
from convscope.models.graph import GlobalPool2d, PaddedAvgPool2d, build

from .golden import compare_layers

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "keras"
KERAS_PARAMS = {"pad_pool": 697, "flatten_bn": 569, "misc": 113}  # Keras' model.count_params()
VARIANTS = [
    (model, suffix)
    for model in KERAS_PARAMS
    for suffix in ("keras2.h5", "keras3.h5", "keras3.keras")
] + [("flatten_bn", "keras2.keras")]
FORMATS = {"keras2.h5": "h5-keras2", "keras3.h5": "h5-keras3", "keras3.keras": "keras-zip", "keras2.keras": "keras-zip"}


def _golden(model: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{model}_golden.npz", allow_pickle=False) as data:
        return dict(data)


@pytest.mark.parametrize(("model", "suffix"), VARIANTS, ids=[f"{m}_{s}" for m, s in VARIANTS])
def test_every_layer_matches_keras(model, suffix):
    golden = _golden(model)
    result = read_keras(FIXTURES / f"{model}_{suffix}")
    deviations = compare_layers(result, golden["input"], golden)
    assert set(deviations) == {k[4:] for k in golden if k.startswith("act_")}
    assert result.format == FORMATS[suffix]
    assert result.keras_version.startswith("2." if "keras2" in suffix else "3.")
    assert result.total_params == KERAS_PARAMS[model]
    assert result.final_activation == "softmax"
    # the graph description rebuilds the same function
    rebuilt = build(result.description)
    rebuilt.load_state_dict(result.module.state_dict())
    x = torch.from_numpy(golden["input"].transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), result.module(x))


def test_pad_pool_structure():
    """Same padding, stride 2, even kernel: a pad child (1 before, 2 after: TensorFlow puts the
    extra row at the bottom); max-pool same pads with -inf; the same-average excludes padding."""
    result = read_keras(FIXTURES / "pad_pool_keras3.keras")
    m = result.module
    assert result.input_shape == (3, 15, 15) and result.num_classes == 4
    assert [n for n, _ in m.conv_s2_even.named_children()] == ["pad", "conv", "relu"]
    assert m.conv_s2_even.pad.padding == (1, 2, 1, 2)
    assert m.conv_s2_even.conv.stride == (2, 2) and m.conv_s2_even.conv.padding == (0, 0)
    assert isinstance(m.conv_dil, nn.Conv2d) and m.conv_dil.bias is None
    assert m.conv_dil.dilation == (2, 2) and m.conv_dil.padding == (2, 2)
    assert isinstance(m.act_elu, nn.ELU) and isinstance(m.act_selu, nn.SELU)
    # (2, 4) kernel, stride 1: rows padded (0, 1), columns (1, 2)
    assert m.conv_even_s1.pad.padding == (1, 2, 0, 1)
    assert [n for n, _ in m.conv_even_s1.named_children()] == ["pad", "conv", "tanh"]
    assert m.max_same.pad.padding == (0, 1, 0, 1) and m.max_same.pad.value == float("-inf")
    assert m.zero_pad.padding == (2, 0, 1, 3)
    assert isinstance(m.avg_same, PaddedAvgPool2d) and m.avg_same.padding == (0, 1, 0, 1)
    assert isinstance(m.avg_valid, nn.AvgPool2d)
    assert isinstance(m.gap, GlobalPool2d) and m.gap.mode == "avg"
    assert isinstance(m.dense_out, nn.Linear)  # softmax removed
    assert isinstance(m.bn_2d, nn.BatchNorm2d) and m.bn_2d.eps == pytest.approx(0.01)
    table = {row.name: row for row in result.layer_table}
    assert table["bn_2d"].params == 16 and table["conv_dil"].params == 4 * 9 * 6
    assert table["max_same"].output_shape == (5, 4, 4) and table["avg_same"].output_shape == (5, 4, 3)
    assert table["dense_out"].note.startswith("softmax removed")


def test_flatten_bn_structure():
    """A trailing Activation('softmax') layer is dropped and aliased to 'probabilities';
    the Flatten → Dropout → BatchNormalization run is held channel-major."""
    result = read_keras(FIXTURES / "flatten_bn_keras2.h5")
    assert result.aliases == {"probs": "probabilities"}
    assert "probs" not in dict(result.module.named_children())
    table = {row.name: row for row in result.layer_table}
    assert table["probs"].module is None and table["probs"].output_shape == (3,)
    assert [table[n].channels_last_of for n in ("flat", "drop", "bn_1d", "dense_h")] == [(4, 3, 3)] * 3 + [None]
    assert isinstance(result.module.bn_1d, nn.BatchNorm1d)
    assert isinstance(result.module.leaky, nn.LeakyReLU) and result.module.leaky.negative_slope == pytest.approx(0.2)
    assert isinstance(result.module.relu_l, nn.ReLU)
    assert isinstance(result.module.elu_l, nn.ELU) and result.module.elu_l.alpha == pytest.approx(0.5)
    assert [n for n, _ in result.module.dense_h.named_children()] == ["linear", "elu"]
    assert table["input_img"].keras_class == "InputLayer" and table["input_img"].output_shape == (1, 12, 12)


def test_misc_structure():
    result = read_keras(FIXTURES / "misc_keras2.h5")
    m = result.module
    assert result.aliases == {"softmax_l": "probabilities"}
    assert isinstance(m.bn_plain, nn.BatchNorm2d) and not m.bn_plain.affine  # no gamma, no beta
    assert m.bn_scale_only.affine and torch.equal(m.bn_scale_only.bias, torch.zeros(3))
    table = {row.name: row for row in result.layer_table}
    assert (table["bn_plain"].params, table["bn_scale_only"].params) == (6, 9)  # Keras' counts
    assert isinstance(m.gmp, GlobalPool2d) and m.gmp.mode == "max"
    assert m.dense_t.linear.bias is None and isinstance(m.dense_t.tanh, nn.Tanh)
    assert isinstance(m.dense_g.gelu, nn.GELU) and m.dense_g.gelu.approximate == "none"
    assert isinstance(m.dense_s.silu, nn.SiLU)
    assert m.conv_rect.pad.padding == (0, 1, 0, 1) and m.conv_rect.conv.stride == (2, 1)


# ---------------------------------------------------------------------------------------------
# refused models


@pytest.mark.parametrize("name", ["branch_keras2.h5", "branch_keras3.keras"])
def test_branching_graph_is_refused(name):
    with pytest.raises(KerasImportError) as caught:
        read_keras(FIXTURES / name)
    message = str(caught.value)
    assert "branch" in message and "linear chain" in message
    assert "'merge' (Add)" in message or "'conv_trunk' (Conv2D)" in message


def test_two_inputs_are_refused():
    with pytest.raises(KerasImportError, match=r"2 inputs \(in_a, in_b\); only single-input"):
        read_keras(FIXTURES / "two_inputs_keras3.keras")


def _copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copyfile(FIXTURES / name, target)
    target.chmod(0o644)
    return target


def _edit_h5_config(path: Path, edit) -> None:
    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        edit(config)
        handle.attrs["model_config"] = json.dumps(config)


def _layer(config: dict, name: str) -> dict:
    return next(layer for layer in config["config"]["layers"] if layer["config"].get("name") == name)


@pytest.mark.parametrize(
    ("layer", "change", "expected"),
    [
        ("conv_s2_even", {"data_format": "channels_first"}, r"'conv_s2_even' \(Conv2D\): data_format 'channels_first'"),
        ("avg_same", {"data_format": "channels_first"}, r"'avg_same' \(AveragePooling2D\): data_format"),
        ("conv_dil", {"activation": "softplus"}, r"'conv_dil' \(Conv2D\): activation 'softplus' is not supported"),
        ("conv_dil", {"padding": "causal"}, r"'conv_dil' \(Conv2D\): padding 'causal'"),
        ("bn_2d", {"axis": [1]}, r"'bn_2d' \(BatchNormalization\): axis=\[1\]"),
        ("conv_dil", {"kernel_size": [5, 5]}, r"'conv_dil' \(Conv2D\), weight 'kernel': the weight has shape"),
        ("gap", {"keepdims": True}, r"'gap' \(GlobalAveragePooling2D\): keepdims"),
    ],
)
def test_unsupported_settings_are_refused(tmp_path, layer, change, expected):
    path = _copy(tmp_path, "pad_pool_keras2.h5")
    _edit_h5_config(path, lambda config: _layer(config, layer)["config"].update(change))
    with pytest.raises(KerasImportError, match=expected):
        read_keras(path)


def test_unknown_layer_names_layer_class_and_what_is_supported(tmp_path):
    path = _copy(tmp_path, "pad_pool_keras2.h5")
    _edit_h5_config(path, lambda config: _layer(config, "act_sigmoid").update(class_name="PReLU"))
    with pytest.raises(KerasImportError) as caught:
        read_keras(path)
    message = str(caught.value)
    assert "layer 'act_sigmoid' (PReLU) is not supported" in message
    assert "supported layers: InputLayer, Conv2D" in message and "activations: relu" in message


def test_missing_weight_is_refused(tmp_path):
    path = _copy(tmp_path, "pad_pool_keras3.h5")
    with h5py.File(path, "r+") as handle:
        group = handle["model_weights/conv_s2_even"]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        del group[names[1]]  # the bias
    with pytest.raises(KerasImportError, match=r"'conv_s2_even' \(Conv2D\): weight .*bias.* missing"):
        read_keras(path)
    with h5py.File(path, "r+") as handle:
        handle["model_weights/conv_s2_even"].attrs["weight_names"] = [names[0]]
    with pytest.raises(KerasImportError, match=r"holds 1 weight\(s\).*needs 2 \(kernel, bias\)"):
        read_keras(path)


def test_missing_weight_in_a_keras_zip_is_refused(tmp_path):
    source = FIXTURES / "misc_keras3.keras"
    target = tmp_path / "damaged.keras"
    with zipfile.ZipFile(source) as archive:
        blob = archive.read("model.weights.h5")
        members = {n: archive.read(n) for n in archive.namelist() if n != "model.weights.h5"}
    weights = tmp_path / "w.h5"
    weights.write_bytes(blob)
    with h5py.File(weights, "r+") as handle:
        key = next(k for k in handle["layers"] if handle[f"layers/{k}/vars"].attrs.get("name") == "dense_g")
        del handle[f"layers/{key}/vars/1"]
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.write(weights, "model.weights.h5")
    with pytest.raises(KerasImportError, match=r"'dense_g' \(Dense\): the weights file holds 1 weight"):
        read_keras(target)


def test_weight_linked_to_another_file_is_refused(tmp_path):
    path = _copy(tmp_path, "misc_keras2.h5")
    with h5py.File(path, "r+") as handle:
        group = handle["model_weights/dense_t/dense_t"]
        del group["kernel:0"]
        group["kernel:0"] = h5py.ExternalLink("/etc/passwd", "/x")
    with pytest.raises(KerasImportError, match="ExternalLink.*refused"):
        read_keras(path)


def test_sequential_without_input_layer_reads_the_first_layers_input_shape(tmp_path):
    path = _copy(tmp_path, "pad_pool_keras2.h5")

    def drop_input(config):
        layers = config["config"]["layers"]
        shape = layers.pop(0)["config"]["batch_input_shape"]
        layers[0]["config"]["batch_input_shape"] = shape

    _edit_h5_config(path, drop_input)
    golden = _golden("pad_pool")
    compare_layers(read_keras(path), golden["input"], golden)


def test_invalid_layer_names_are_renamed_and_aliased(tmp_path):
    """A Keras layer called 'logits' (a convscope pseudo-layer) or 'conv-1' (not an address) gets a
    valid module name; the alias maps the Keras name to it."""
    path = _copy(tmp_path, "misc_keras2.h5")
    _edit_h5_config(path, lambda config: _layer(config, "gmp")["config"].update(name="logits"))
    result = read_keras(path)
    assert result.aliases == {"logits": "logits_1", "softmax_l": "probabilities"}
    assert isinstance(result.module.logits_1, GlobalPool2d)
    assert [r.module for r in result.layer_table if r.name == "logits"] == ["logits_1"]


def test_duplicate_layer_names_are_refused(tmp_path):
    path = _copy(tmp_path, "misc_keras2.h5")
    _edit_h5_config(path, lambda config: _layer(config, "gmp")["config"].update(name="bn_plain"))
    with pytest.raises(KerasImportError, match="two layers are named 'bn_plain'"):
        read_keras(path)


def test_final_softmax_inside_the_graph_is_kept(tmp_path):
    """Only a final softmax is removed; a softmax activation elsewhere stays."""
    path = _copy(tmp_path, "misc_keras2.h5")
    _edit_h5_config(path, lambda config: _layer(config, "dense_t")["config"].update(activation="softmax"))
    result = read_keras(path)
    assert isinstance(result.module.dense_t.softmax, nn.Softmax) and result.module.dense_t.softmax.dim == 1


# ---------------------------------------------------------------------------------------------
# damaged and hostile files


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(KerasImportError, match="does not exist"):
        read_keras(tmp_path / "nope.h5")
    with pytest.raises(KerasImportError, match="is a folder"):
        read_keras(tmp_path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"not a model at all", "neither an HDF5"),
        (b"", "neither an HDF5"),
        (b"\x89HDF\r\n\x1a\n" + b"\x00" * 200, "not a readable HDF5 file"),
        (b"PK\x03\x04" + b"\x00" * 100, "not a readable zip"),
    ],
)
def test_corrupt_files(tmp_path, content, expected):
    path = tmp_path / "model.h5"
    path.write_bytes(content)
    with pytest.raises(KerasImportError, match=expected):
        read_keras(path)


def test_truncated_files(tmp_path):
    for name in ("pad_pool_keras2.h5", "pad_pool_keras3.keras"):
        data = (FIXTURES / name).read_bytes()
        path = tmp_path / name
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(KerasImportError):
            read_keras(path)


def test_weights_only_file(tmp_path):
    path = tmp_path / "model.weights.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [b"dense"]
    with pytest.raises(KerasImportError, match=r"holds only weights \(model.save_weights\)"):
        read_keras(path)


def test_zip_without_keras_content(tmp_path):
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(KerasImportError, match="without config.json"):
        read_keras(path)


def test_hostile_json(tmp_path, monkeypatch):
    deep = _copy(tmp_path, "misc_keras2.h5")
    with h5py.File(deep, "r+") as handle:
        handle.attrs["model_config"] = "[" * 100_000 + "]" * 100_000
    with pytest.raises(KerasImportError, match="nested"):
        read_keras(deep)
    moderate = _copy(tmp_path, "pad_pool_keras2.h5")
    with h5py.File(moderate, "r+") as handle:  # deeper than the limit, shallow enough for json
        nested: list = [1]
        for _ in range(20):
            nested = [nested]
        handle.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"layers": [
            {"class_name": "Dense", "config": {"name": "d", "units": 1, "x": nested}}]}})
    monkeypatch.setattr(keras_module, "MAX_JSON_DEPTH", 10)
    with pytest.raises(KerasImportError, match="nested deeper than 10"):
        read_keras(moderate)
    monkeypatch.setattr(keras_module, "MAX_JSON_BYTES", 100)
    with pytest.raises(KerasImportError, match="larger than"):
        read_keras(FIXTURES / "misc_keras3.keras")
    nan = _copy(tmp_path, "pad_pool_keras3.h5")
    with h5py.File(nan, "r+") as handle:
        handle.attrs["model_config"] = '{"class_name": NaN}'
    monkeypatch.setattr(keras_module, "MAX_JSON_BYTES", 1 << 20)
    with pytest.raises(KerasImportError, match="non-standard JSON value NaN"):
        read_keras(nan)


def test_no_tensorflow_or_keras_is_imported():
    code = (
        "import sys\n"
        "from convscope.importers import read_keras\n"
        f"read_keras({str(FIXTURES / 'flatten_bn_keras3.keras')!r})\n"
        f"read_keras({str(FIXTURES / 'flatten_bn_keras2.h5')!r})\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
        "print(bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "tensorflow" not in done.stdout and "keras" not in done.stdout


def test_module_children_follow_the_keras_blocks_convention():
    """The same naming convention as convscope's own Model A blocks (Conv2D_3.conv / .relu)."""
    result = read_keras(FIXTURES / "flatten_bn_keras3.keras")
    assert isinstance(result.module.conv_a, nn.Sequential)
    assert list(result.module.conv_a._modules) == ["conv", "relu"]
    assert isinstance(result.module.conv_b, nn.Conv2d)  # no activation, symmetric padding: plain module
    assert OrderedDict(result.module.named_children()).keys() == {
        "conv_a", "pool_a", "conv_b", "leaky", "flat", "drop", "bn_1d", "dense_h", "relu_l", "elu_l", "dense_o"}
