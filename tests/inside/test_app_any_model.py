"""Every look-inside use case (convscope.app.inside) on models that were never in
the package: the RGB 32×32 net on a real-photo image folder and the residual net,
with numbers checked against explicit forward passes and independent computations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convscope.app import inside
from convscope.inference import to_input
from convscope.io import to_json
from .test_receptive_fields import independent_support, rgb_explicit

CLASSES = ("astronaut", "cat", "coffee", "rocket")


@torch.no_grad()
def rgb_forward(net, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = rgb_explicit(net, x)
    hidden = net.heads["hidden"](torch.flatten(out["pool"], 1))
    out["heads.hidden"] = hidden
    out["logits"] = net.heads["out"](F.relu(hidden))
    return out


def test_activations_on_the_rgb_net(rgb_model, rgb_test):
    image = rgb_test.images[5]
    assert image.shape == (32, 32, 3)
    result = inside.activations(rgb_model, image, ["conv1", "conv2:3@4,5", "heads.hidden"], source="test:5",
                                label=int(rgb_test.labels[5]))
    expected = rgb_forward(rgb_model, to_input(rgb_model, image[None]))
    for layer in ("conv1", "conv2", "heads.hidden"):
        assert torch.allclose(result.values[layer], expected[layer][0], atol=1e-5), layer
    assert torch.allclose(result.probabilities, torch.softmax(expected["logits"][0], 0), atol=1e-6)
    data = json.loads(to_json(result.to_json()))
    assert data["class_names"] == list(CLASSES) and data["label_name"] == CLASSES[int(rgb_test.labels[5])]
    assert data["layers"]["conv2"]["selected"]["value"] == pytest.approx(float(expected["conv2"][0, 3, 4, 5]), abs=1e-5)
    assert data["input_shape"] == [32, 32, 3] and data["parameters"]["layers"][1] == "conv2:3@4,5"
    # the input is drawn in colour, exactly the pixels the model saw; the selected unit is outlined
    figure = result.figures()["activations_test-5_conv2"]()
    drawn = [ax.images[0].get_array() for ax in figure.axes if ax.images and ax.images[0].get_array().ndim == 3]
    assert len(drawn) == 1 and np.array_equal(np.asarray(drawn[0]), image)
    grid = [ax for ax in figure.axes if ax.images and ax.images[0].get_array().shape == (2 * 16, 8 * 16)][0]
    (outlines,) = [c for c in grid.collections if c.get_paths() and len(c.get_paths()) == 1]
    corner = outlines.get_paths()[0].vertices.min(0)  # the one outlined unit: map 3 (row 0, column 3), @4,5
    assert corner == pytest.approx((3 * 16 + 5 - 0.5 + 0.08, 0 * 16 + 4 - 0.5 + 0.08))
    assert set(result.arrays()) == {f"activations_test-5_{n}" for n in ("conv1", "conv2", "heads.hidden")}
    assert np.asarray(result.pictures()["input_test-5"]).shape == (128, 128, 3)  # 32 px × 4, RGB


def test_activations_on_the_residual_net_and_first_n(residual_model, residual_split):
    image = residual_split.images[3]
    result = inside.activations(residual_model, image, ["stages.0.act", "stages.1", "head"], first=5)
    with torch.no_grad():
        expected = residual_model.explicit(to_input(residual_model, image[None]))
    assert torch.allclose(result.values["stages.0.act"], expected["stages.0.act"][0], atol=1e-5)  # first call
    assert torch.allclose(result.values["stages.1"], expected["stages.1"][0], atol=1e-5)
    assert torch.allclose(result.values["head"], expected["head"][0], atol=1e-5)
    figure = result.figure("stages.1")
    grid = [ax for ax in figure.axes if ax.images and ax.get_xlabel().startswith("map index")][0]
    assert grid.images[0].get_array().shape == (20, 5 * 20)  # only the first 5 of 8 maps drawn
    assert "first 5 of 8" in figure._suptitle.get_text()
    # the colour scale is the whole layer's, so a partial grid reads like the full one
    assert grid.images[0].get_clim()[1] == pytest.approx(float(expected["stages.1"][0].max()))
    assert inside.activations(residual_model, image).parameters["layers"] == ["stem"]  # first conv layer


def test_filters_in_colour(rgb_model, residual_model):
    result = inside.filters(rgb_model)
    bank = result.banks["conv1"]
    assert torch.equal(bank.weights, rgb_model.conv1.weight.detach())
    figure = result.figures()["filters_conv1"]()
    canvas = np.asarray(figure.axes[0].images[0].get_array())
    assert canvas.ndim == 3 and canvas.shape[2] == 3  # one colour tile per kernel
    tile = canvas[4:7, 4:7]  # kernel 9: row 1, column 1 (8 per row, 3×3 tiles, 1-pixel gaps)
    expected = np.clip(0.5 + bank.weights[9].numpy().transpose(1, 2, 0) / (2 * bank.limit), 0, 1)
    assert np.allclose(tile, expected)
    assert result.to_json()["layers"]["conv1"]["drawn_in_colour"]
    every = inside.filters(residual_model, "all")
    assert list(every.banks) == ["stem", "stages.0.body.0", "stages.0.conv2", "stages.1.body.0", "stages.1.conv2"]


def test_predict_evaluate_and_most_confused_pair_on_rgb(rgb_model, rgb_test):
    items = [inside.InputImage(rgb_test.images[i], int(rgb_test.labels[i]), f"test:{i}") for i in (0, 9, 20)]
    result = inside.predict(rgb_model, items, top=2)
    logits = rgb_forward(rgb_model, to_input(rgb_model, rgb_test.images[[0, 9, 20]]))["logits"]
    rows = result.to_json()["predictions"]
    for row, expected in zip(rows, torch.softmax(logits, 1)):
        assert row["probabilities"] == pytest.approx(expected.tolist(), abs=1e-6)
        assert row["predicted_name"] == CLASSES[int(expected.argmax())] and row["top"][0]["name"] in CLASSES
    assert result.figures()["predict_test-9"]().axes[0].images[0].get_array().shape == (32, 32, 3)

    evaluation = inside.evaluate(rgb_model, rgb_test)
    all_logits = rgb_forward(rgb_model, to_input(rgb_model, rgb_test.images))["logits"].numpy()
    predicted = all_logits.argmax(1)
    labels = np.asarray(rgb_test.labels)
    data = json.loads(to_json(evaluation.to_json()))
    assert data["accuracy"] == pytest.approx(float((predicted == labels).mean()), abs=0)
    assert data["class_names"] == list(CLASSES) and data["num_images"] == len(labels) == 32
    assert "misclassified.csv" in evaluation.texts()
    pair = inside.most_confused_pair(rgb_model, rgb_test, evaluation=evaluation.evaluation)
    probabilities = np.exp(all_logits - all_logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    assert (pair.pair.a, pair.pair.b) == independent_most_confused(labels, predicted, probabilities, 4)


def independent_most_confused(labels, predicted, probabilities, n) -> tuple[int, int]:
    """Largest count of A→B plus B→A mistakes; ties: the larger probability on the other class."""
    best = None
    for a in range(n):
        for b in range(a + 1, n):
            count = int(np.sum((labels == a) & (predicted == b)) + np.sum((labels == b) & (predicted == a)))
            soft = float(probabilities[labels == a, b].sum() + probabilities[labels == b, a].sum())
            key = (count, soft, -a, -b)
            if best is None or key > best[0]:
                best = (key, (a, b))
    return best[1]


def test_compare_on_rgb_by_class_names(rgb_model, rgb_test):
    result = inside.compare(rgb_model, rgb_test, "astronaut", "Coffee", n_examples=2)  # names; case ignored
    comparison = result.comparison
    assert (comparison.class_a, comparison.class_b) == (0, 2) and result.layers == ["conv3", "heads.hidden"]
    out = rgb_forward(rgb_model, to_input(rgb_model, rgb_test.images))
    for layer in result.layers:
        acts = out[layer]
        a, b = acts[comparison.examples.clear_a], acts[comparison.examples.clear_b]
        comp = comparison.layers[layer]
        all_a, any_a, all_b, any_b = (a > 0).all(0), (a > 0).any(0), (b > 0).all(0), (b > 0).any(0)
        assert torch.equal(comp.a_only, all_a & ~any_b) and torch.equal(comp.b_only, all_b & ~any_a)
        assert torch.equal(comp.a_all_b_some, all_a & any_b & ~all_b)
        assert torch.equal(comp.b_all_a_some, all_b & any_a & ~all_a)
        labels = torch.as_tensor(np.array(rgb_test.labels))
        mean_a = acts[labels == 0].double().mean(0)
        assert torch.allclose(comp.separation.mean_a.double(), mean_a, atol=1e-5)
    data = json.loads(to_json(result.to_json()))
    assert data["class_a_name"] == "astronaut" and data["class_b_name"] == "coffee"
    assert len(data["layers"]["conv3"]["active_in_all_a_and_some_b"]) == int(comparison.layers["conv3"].a_all_b_some.sum())
    figures = result.figures()
    assert set(figures) >= {"compare_astronaut_coffee_patterns", "compare_astronaut_coffee_separation"}
    patterns = figures["compare_astronaut_coffee_patterns"]()
    assert any(ax.images and ax.images[0].get_array().shape == (32, 32, 3) for ax in patterns.axes)
    default = inside.compare(rgb_model, rgb_test, n_examples=1)  # the most confused pair
    pair = inside.most_confused_pair(rgb_model, rgb_test).pair
    assert (default.comparison.class_a, default.comparison.class_b) == (pair.a, pair.b)
    assert default.comparison.pair_chosen_by == "most confused"
    with pytest.raises(inside.InsideError, match="no class named 'dog'.*astronaut, cat, coffee, rocket"):
        inside.compare(rgb_model, rgb_test, "dog", "cat")
    with pytest.raises(inside.InsideError, match="two different classes"):
        inside.compare(rgb_model, rgb_test, "cat", "1")


def test_topk_on_rgb_and_residual_nets(rgb_model, rgb_test, residual_model, residual_split):
    result = inside.topk(rgb_model, rgb_test, k=3, maps="0-3")
    top = result.topk
    assert top.layer == "conv3" and top.field_method == "geometry"
    acts = rgb_forward(rgb_model, to_input(rgb_model, rgb_test.images))["conv3"]  # (32, 24, 14, 14)
    maxima = acts.flatten(2).amax(2)  # (N, C)
    for m in range(maxima.shape[1]):
        chosen = set(top.indices[m].tolist())
        others = [float(maxima[i, m]) for i in range(len(maxima)) if i not in chosen]
        assert float(top.values[m].min()) >= max(others) - 1e-6  # ≥ every other image
        assert torch.allclose(top.values[m], maxima[top.indices[m], m], atol=1e-5)
    support = independent_support(lambda x: rgb_explicit(rgb_model, x)["conv3"], (3, 32, 32), (14, 14))
    expected = support[top.positions[..., 0], top.positions[..., 1]]
    assert torch.equal(top.rectangles, expected)
    figure = result.figures()["topk_conv3"]()
    assert figure.axes[0].images[0].get_array().shape[2] == 3  # the gallery is in colour
    assert result.to_json()["receptive_field"]["method"] == "geometry"

    residual = inside.topk(residual_model, residual_split, "stages.1", k=4)
    top = residual.topk
    with torch.no_grad():
        out = residual_model.explicit(to_input(residual_model, residual_split.images))["stages.1"]
    maxima = out.flatten(2).amax(2)
    others = maxima.clone()
    others[top.indices.T, torch.arange(8)] = -torch.inf
    assert (top.values.amin(1) >= others.amax(0) - 1e-6).all()
    support = independent_support(lambda x: residual_model.explicit(x)["stages.1"], (1, 20, 20), (20, 20))
    assert torch.equal(top.rectangles, support[top.positions[..., 0], top.positions[..., 1]])
    with pytest.raises(inside.InsideError, match="0..7"):
        inside.topk(residual_model, residual_split, "stages.1", maps="3-9")


def test_mistakes_on_rgb_gallery_in_colour(rgb_model, rgb_test):
    result = inside.mistakes(rgb_model, rgb_test)
    evaluation = result.evaluation
    assert result.mistakes.total_errors == evaluation.num_errors > 0  # the briefly trained net errs
    figure = result.figures()["mistakes"]()
    assert figure.axes[0].images[0].get_array().shape == (32, 32, 3)
    row = result.to_json()["mistakes"][0]
    assert row["true"] in CLASSES and row["true"] == CLASSES[row["true_class"]]


def test_unique_stems_and_class_index():
    stems, notes = inside.unique_stems(["a/x.png", "b/x.png", "test:3", "c/X.png", "x-2.png"])
    assert stems == ["x", "x-2", "test-3", "X-3", "x-2-2"]
    assert len(set(s.lower() for s in stems)) == 5
    assert len(notes) == 1 and "a/x.png → x" in notes[0] and "b/x.png → x-2" in notes[0]
    assert inside.slug("y" * 300 + ".png") == "y" * 80
    assert inside.slug("T-shirt/top", path=False) == "T-shirt_top" and inside.slug("dir/T-shirt.png") == "T-shirt"
    names = ("T-shirt/top", "Trouser", "Sandal")
    assert inside.class_index(names, "sandal") == 2 and inside.class_index(names, "1") == 1
    assert inside.class_index(names, 0) == 0
    with pytest.raises(inside.InsideError, match="out of range"):
        inside.class_index(names, "3")
    with pytest.raises(inside.InsideError) as info:
        inside.class_index(names, "q" * 100_000)
    assert len(str(info.value)) < 300


def test_topk_says_when_fields_were_measured(test_split):
    """A model whose path holds a functional strided conv: fields from input gradients, said in JSON."""
    import dataclasses

    import convscope

    from .test_receptive_fields import Functional

    torch.manual_seed(0)
    net = convscope.wrap(Functional().eval(), input_shape=(1, 16, 16), class_names=["a", "b"], preprocessing="unit")
    split = dataclasses.replace(test_split, images=test_split.images[:50, 6:22, 6:22].copy(),
                                labels=test_split.labels[:50] % 2, class_names=("a", "b"))
    result = inside.topk(net, split, "conv", k=2)
    data = result.to_json()
    assert data["receptive_field"]["method"] == "gradient" and "measured" in data["receptive_field"]["note"]
    assert any("receptive fields: gradient" in line for line in result.summary())
    support = independent_support(lambda x: net.conv(F.relu(F.conv2d(x, net.weight, stride=2, padding=1))),
                                  (1, 16, 16), (6, 6))
    top = result.topk
    assert torch.equal(top.rectangles, support[top.positions[..., 0], top.positions[..., 1]])
