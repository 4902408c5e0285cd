"""The Keras importer against real files written by Keras 2 and Keras 3 (``../shared/data/keras``).

Every layer of the imported Models A and B must reproduce Keras' own outputs, and the
probabilities over the whole MNIST test set must equal Keras' within 1e-5.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from convscope.data.preprocess import preprocess
from convscope.importers import read_keras
from convscope.models.graph import build

from .golden import compare_layers, keras_standardize

KERAS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "keras"
FILES = {
    "seed_model_a_keras2.h5": ("seed_model_a", "h5-keras2", "2.21.0"),
    "seed_model_a_keras3.keras": ("seed_model_a", "keras-zip", "3.15.1"),
    "seed_model_b_keras2.h5": ("seed_model_b", "h5-keras2", "2.21.0"),
}
MODEL_A_TABLE = [  # name, Keras class, output shape (PyTorch order), Keras' parameter count
    ("Conv2D_1", "Conv2D", (32, 26, 26), 320),
    ("Max_Pool_1", "MaxPooling2D", (32, 13, 13), 0),
    ("Conv2D_2", "Conv2D", (64, 11, 11), 18496),
    ("Max_Pool_2", "MaxPooling2D", (64, 5, 5), 0),
    ("Conv2D_3", "Conv2D", (128, 3, 3), 73856),
    ("flatten_7", "Flatten", (1152,), 0),
    ("dense_14", "Dense", (100,), 115300),
    ("dense_15", "Dense", (10,), 1010),
]
MODEL_B_TABLE = [
    ("input_1", "InputLayer", (1, 28, 28), 0),
    ("conv2d_1", "Conv2D", (24, 28, 28), 240),
    ("max_pooling2d_1", "MaxPooling2D", (24, 14, 14), 0),
    ("conv2d_2", "Conv2D", (48, 14, 14), 10416),
    ("max_pooling2d_2", "MaxPooling2D", (48, 7, 7), 0),
    ("conv2d_3", "Conv2D", (64, 7, 7), 27712),
    ("max_pooling2d_3", "MaxPooling2D", (64, 3, 3), 0),
    ("flatten_1", "Flatten", (576,), 0),
    ("dense_1", "Dense", (128,), 73856),
    ("dropout_1", "Dropout", (128,), 0),
    ("dense_2", "Dense", (10,), 1290),
]


@pytest.fixture(scope="module")
def keras_dir() -> Path:
    if not (KERAS_DIR / "seed_model_a_keras2.h5").is_file():
        pytest.fail(f"real Keras fixtures not found in {KERAS_DIR} (../shared/data/keras beside the repository)")
    return KERAS_DIR


@pytest.fixture(scope="module")
def imported(keras_dir):
    return {name: read_keras(keras_dir / name) for name in FILES}


def _golden(keras_dir: Path, model: str) -> dict[str, np.ndarray]:
    folder = keras_dir / "golden" / model
    return {p.stem: np.load(p, allow_pickle=False) for p in folder.glob("*.npy")}


@pytest.mark.parametrize("name", list(FILES))
def test_every_layer_matches_keras(imported, keras_dir, name):
    model, _, _ = FILES[name]
    golden = _golden(keras_dir, model)
    result = imported[name]
    deviations = compare_layers(result, golden["test_0_9_input"], golden)
    assert len(deviations) == (8 if model == "seed_model_a" else 10)
    # the module returns logits; the removed softmax is the 'probabilities' pseudo-layer
    x = torch.from_numpy(golden["test_0_9_input"].transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        logits = result.module(x).numpy()
    if model == "seed_model_a":
        np.testing.assert_allclose(logits, golden["act_dense_15_logits"], rtol=1e-6, atol=1e-5)
    assert (logits.argmax(1) == np.array([7, 2, 1, 0, 4, 1, 4, 9, 5, 9])).all()


@pytest.mark.parametrize("name", list(FILES))
def test_structure_names_and_parameter_counts(imported, keras_dir, name):
    model, file_format, version = FILES[name]
    result = imported[name]
    table = MODEL_A_TABLE if model == "seed_model_a" else MODEL_B_TABLE
    assert [(r.name, r.keras_class, r.output_shape, r.params) for r in result.layer_table] == table
    assert result.total_params == (208_982 if model == "seed_model_a" else 113_514)
    # the PyTorch module holds exactly those parameters (no BatchNorm here)
    assert sum(p.numel() for p in result.module.parameters()) == result.total_params
    children = [n for n, _ in result.module.named_children()]
    assert children == [r.name for r in result.layer_table if r.keras_class != "InputLayer"]
    assert result.input_shape == (1, 28, 28) and result.num_classes == 10
    assert result.final_activation == "softmax" and result.aliases == {}
    assert result.format == file_format and result.keras_version == version
    assert result.model_name == ("sequential_7" if model == "seed_model_a" else "model_1")
    assert result.source_sha256 == hashlib.sha256((keras_dir / name).read_bytes()).hexdigest()
    # blocks like convscope's own Model A: post-ReLU output, pre-activation reachable
    first_dense = "dense_14" if model == "seed_model_a" else "dense_1"
    block = result.module.get_submodule(first_dense)
    assert [n for n, _ in block.named_children()] == ["linear", "relu"]
    last = result.module[-1]
    assert isinstance(last, torch.nn.Linear)  # logits: the softmax was removed
    assert not result.module.training


def test_description_rebuilds_the_same_model(imported, keras_dir):
    result = imported["seed_model_a_keras2.h5"]
    rebuilt = build(result.description)
    rebuilt.load_state_dict(result.module.state_dict())
    x = torch.from_numpy(_golden(keras_dir, "seed_model_a")["test_0_9_input"].transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), result.module(x))


def test_keras2_and_keras3_files_give_the_same_weights(imported):
    a2 = imported["seed_model_a_keras2.h5"].module.state_dict()
    a3 = imported["seed_model_a_keras3.keras"].module.state_dict()
    assert list(a2) == list(a3)
    assert all(torch.equal(a2[k], a3[k]) for k in a2)


def test_whole_test_set_probabilities(imported, keras_dir, test_split):
    """softmax(logits) of all 10,000 test images equals Keras' within 1e-5, with the input
    computed from the raw images as the README states; also with convscope's own preprocessing.

    The Keras 3 file of Model A holds bit-identical weights and the same layer graph as the
    Keras 2 file (checked here), so one pass over the test set covers both.
    """
    images = test_split.images
    golden_a = np.load(keras_dir / "golden" / "seed_model_a" / "test_all_probs.npy")
    golden_b = np.load(keras_dir / "golden" / "seed_model_b" / "test_all_probs.npy")
    x_a = keras_standardize(images)
    # the README's preprocessing reproduces Keras' own model input for images 0-9
    np.testing.assert_allclose(
        x_a[:10], np.load(keras_dir / "golden" / "seed_model_a" / "test_0_9_input.npy"), rtol=0, atol=1e-6)
    x_a = torch.from_numpy(x_a.transpose(0, 3, 1, 2).copy())
    x_b = torch.from_numpy(images.astype(np.float32)[:, None] / np.float32(255))

    def probabilities(name: str, x_nchw: torch.Tensor) -> np.ndarray:
        with torch.no_grad():  # in chunks: one 10,000-image batch would need ~1 GB of activations
            return torch.cat([torch.softmax(imported[name].module(chunk), dim=1)
                              for chunk in x_nchw.split(1000)]).numpy()

    a2, a3 = imported["seed_model_a_keras2.h5"], imported["seed_model_a_keras3.keras"]
    assert a2.description == a3.description
    assert all(torch.equal(a2.module.state_dict()[k], v) for k, v in a3.module.state_dict().items())
    probs_a = probabilities("seed_model_a_keras3.keras", x_a)
    np.testing.assert_allclose(probs_a, golden_a, rtol=0, atol=1e-5)
    assert (probs_a.argmax(1) == test_split.labels).mean() == pytest.approx(0.9899)
    probs_b = probabilities("seed_model_b_keras2.h5", x_b)
    np.testing.assert_allclose(probs_b, golden_b, rtol=0, atol=1e-5)
    assert (probs_b.argmax(1) == test_split.labels).mean() == pytest.approx(0.9729)

    # convscope's own preprocessing. "standardize" (no min-std clamp, +1e-7 on the std)
    # is within ~1e-6 of Keras' per-image standardisation on every MNIST test image, and so
    # are the probabilities it leads to (checked on the first 1,000 images: one more full pass
    # would double this test's time); "unit" is exactly Model B's x / 255.
    own_a = preprocess(images, "standardize")
    assert float((own_a - x_a).abs().max()) < 2e-6
    np.testing.assert_allclose(probabilities("seed_model_a_keras2.h5", own_a[:1000]), golden_a[:1000],
                               rtol=0, atol=1e-5)
    assert torch.equal(preprocess(images, "unit"), x_b)
