"""Filters, predictions and the mistakes selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convscope.address import AddressError
from convscope.evaluation import evaluation_from_logits
from convscope.inside import conv_filters, conv_layers, predict_images, select_mistakes
from convscope.render.inside import kernel_grid_figure, mistakes_figure, probability_figure


def test_filters_are_the_layer_weights(shipped_model):
    assert conv_layers(shipped_model) == ["Conv2D_1", "Conv2D_2", "Conv2D_3"]
    bank = conv_filters(shipped_model, "Conv2D_2")
    assert bank.weights.shape == (64, 32, 3, 3)
    assert torch.equal(bank.weights, shipped_model.Conv2D_2.conv.weight.detach())
    assert bank.limit == pytest.approx(float(shipped_model.Conv2D_2.conv.weight.detach().abs().max()))
    with pytest.raises(AddressError, match="layers with kernels: Conv2D_1, Conv2D_2, Conv2D_3"):
        conv_filters(shipped_model, "Dense_1")
    with pytest.raises(AddressError, match="valid layers"):
        conv_filters(shipped_model, "Conv2D_5")


def test_kernel_figure_uses_one_symmetric_scale(shipped_model):
    for layer, shape in [("Conv2D_1", (4 * 3, 8 * 3)), ("Conv2D_3", (128 * 3, 64 * 3))]:
        bank = conv_filters(shipped_model, layer)
        figure = kernel_grid_figure(bank)
        image = figure.axes[0].images[0]
        assert image.get_array().shape == shape
        low, high = image.norm.vmin, image.norm.vmax
        assert low == pytest.approx(-bank.limit) and high == pytest.approx(bank.limit)
    # Conv2D_3 grid: row = output map, column = input map.
    canvas = np.asarray(image.get_array())
    assert np.allclose(canvas[5 * 3 : 6 * 3, 7 * 3 : 8 * 3], bank.weights[5, 7].numpy())


def test_predictions(shipped_model, test_split):
    predictions = predict_images(shipped_model, test_split.images[:3])
    for prediction in predictions:
        assert prediction.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
        top = prediction.top(3)
        assert top[0][0] == prediction.predicted and top[0][1] >= top[1][1] >= top[2][1]
    assert [p.predicted for p in predictions] == test_split.labels[:3].tolist()  # 7, 2, 1: easy digits
    figure = probability_figure(predictions[0].probabilities, image=test_split.images[0], label=7, source="test:0")
    bars = [ax for ax in figure.axes if ax.patches][0]
    heights = [patch.get_width() for patch in bars.patches]
    assert heights == pytest.approx(predictions[0].probabilities.tolist(), abs=1e-6)


def test_select_mistakes_filters_and_orders():
    logits = torch.log(torch.tensor([
        [0.1, 0.9, 0, 0, 0, 0, 0, 0, 0, 0],  # 0: true 0 → 1 (0.9)
        [0.0, 0.0, 0, 0, 0.4, 0, 0, 0, 0, 0.6],  # 1: true 4 → 9 (0.6)
        [0.0, 0.0, 0, 0, 0.95, 0, 0, 0, 0, 0.05],  # 2: correct
        [0.0, 0.0, 0, 0, 0.2, 0, 0, 0, 0, 0.8],  # 3: true 4 → 9 (0.8)
    ]) + 1e-9)
    evaluation = evaluation_from_logits(logits, np.array([0, 4, 4, 4]))
    every = select_mistakes(evaluation)
    assert every.indices.tolist() == [0, 3, 1] and every.total_errors == 3
    pair = select_mistakes(evaluation, pair=(4, 9))
    assert pair.indices.tolist() == [3, 1]
    assert pair.probabilities[0][9] == pytest.approx(0.8, abs=1e-6)
    assert select_mistakes(evaluation, pair=(4, 9), order="index").indices.tolist() == [1, 3]
    assert select_mistakes(evaluation, limit=1).indices.tolist() == [0]
    assert select_mistakes(evaluation, pair=(1, 0)).indices.tolist() == []
    rows = pair.to_dict()["mistakes"]
    assert rows[0] == {"image": "test:3", "true": "4", "predicted": "9", "p_predicted": pytest.approx(0.8, abs=1e-6),
                       "p_true": pytest.approx(0.2, abs=1e-6)}
    images = np.zeros((4, 28, 28), np.uint8)
    assert len([ax for ax in mistakes_figure(pair, images).axes if ax.images]) == 2
    empty = mistakes_figure(select_mistakes(evaluation, pair=(1, 0)), images)
    assert "no misclassified images match" in [t.get_text() for ax in empty.axes for t in ax.texts]
