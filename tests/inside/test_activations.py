"""Activation grids: the numbers equal an independent forward computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from convscope.address import AddressError
from convscope.inference import to_input
from convscope.inside import image_activations, layer_activations, reference_scaling
from convscope.render.inside import activation_grid_figure, as_maps, mosaic, reference_scale_maps


def _independent_forward(model, images: np.ndarray) -> dict[str, torch.Tensor]:
    """Model A by hand with F.conv2d / F.max_pool2d / F.linear and the layer weights —
    no hooks, no module calls."""
    x = to_input(model, images)
    w = {name: p.detach() for name, p in model.named_parameters()}
    out = {}
    x = F.relu(F.conv2d(x, w["Conv2D_1.conv.weight"], w["Conv2D_1.conv.bias"]))
    out["Conv2D_1"] = x
    x = F.max_pool2d(x, 2)
    out["Max_Pool_1"] = x
    x = F.relu(F.conv2d(x, w["Conv2D_2.conv.weight"], w["Conv2D_2.conv.bias"]))
    out["Conv2D_2"] = x
    x = F.max_pool2d(x, 2)
    x = F.relu(F.conv2d(x, w["Conv2D_3.conv.weight"], w["Conv2D_3.conv.bias"]))
    out["Conv2D_3"] = x
    # Flatten in PyTorch (C, H, W) order, as the model does.
    x = F.relu(F.linear(x.flatten(1), w["Dense_1.linear.weight"], w["Dense_1.linear.bias"]))
    out["Dense_1"] = x
    logits = F.linear(x, w["Dense_2.weight"], w["Dense_2.bias"])
    out["probabilities"] = torch.softmax(logits, 1)
    return out


@torch.no_grad()
def test_layer_numbers_equal_an_independent_forward(shipped_model, test_split):
    images = test_split.images[[1270, 1302, 1816, 0, 7]]
    expected = _independent_forward(shipped_model, images)
    got = layer_activations(shipped_model, images, list(expected), batch_size=2)  # batching must not matter
    for name, value in expected.items():
        assert got[name].shape == value.shape, name
        assert torch.allclose(got[name], value, atol=1e-5, rtol=1e-5), name
    assert got["Conv2D_1"].shape == (5, 32, 26, 26) and got["Conv2D_3"].shape == (5, 128, 3, 3)
    assert (got["Conv2D_3"] >= 0).all()  # post-ReLU, as in the Keras reference
    single = image_activations(shipped_model, images[1], "Conv2D_3")
    assert torch.allclose(single.values, expected["Conv2D_3"][1], atol=1e-5)
    assert single.predicted == int(expected["probabilities"][1].argmax())


@torch.no_grad()
def test_grid_cells_hold_the_maps(shipped_model, test_split):
    """What the grid draws, cell by cell, is the layer output (raw by default)."""
    image = test_split.images[1270]
    values = _independent_forward(shipped_model, image[None])["Conv2D_2"][0].numpy()  # (64, 11, 11)
    canvas = mosaic(as_maps(values), per_row=8)
    assert canvas.shape == (8 * 11, 8 * 11)
    for map_index in [0, 9, 37, 63]:
        r, c = divmod(map_index, 8)
        assert np.allclose(canvas[r * 11 : (r + 1) * 11, c * 11 : (c + 1) * 11], values[map_index], atol=1e-5)
    figure = activation_grid_figure(values, layer="Conv2D_2", image=image, image_title="test:1270")
    grid = [ax for ax in figure.axes if ax.images and ax.images[0].get_array().shape == canvas.shape][0]
    assert np.allclose(np.ma.getdata(grid.images[0].get_array()), canvas, atol=1e-5, equal_nan=True)
    assert grid.images[0].get_clim() == (0.0, pytest.approx(values.max()))
    # Dense layers: 100 nodes → 10×10 one-pixel cells by default, 13 rows of 8 on request.
    dense = np.arange(100, dtype=float)
    assert mosaic(as_maps(dense), 10)[3, 4] == 34
    eight = mosaic(as_maps(dense), 8)
    assert eight.shape == (13, 8) and eight[12, 3] == 99 and np.isnan(eight[12, 4])


def test_reference_scaling_exact():
    maps = torch.tensor([[[0.0, 2.0], [0.0, 2.0]], [[5.0, 5.0], [5.0, 5.0]], [[0.0, 0.0], [0.0, 40.0]]])
    scaled = reference_scaling(maps)
    # map 0: mean 1, std 1 → ±1 → 64 / 192; map 1 is constant → 128; map 2: one outlier clipped at 255.
    assert torch.allclose(scaled[0], torch.tensor([[64.0, 192.0], [64.0, 192.0]]), atol=1e-3)
    assert torch.allclose(scaled[1], torch.full((2, 2), 128.0))
    z = (40 - 10) / np.sqrt(((0 - 10) ** 2 * 3 + 30**2) / 4)
    assert scaled[2, 1, 1] == pytest.approx(min(255.0, z * 64 + 128), abs=1e-3)
    assert scaled[2, 0, 0] == pytest.approx((0 - 10) / np.sqrt(300) * 64 + 128, abs=1e-3)
    # The renderer's numpy version agrees with the engine's.
    assert np.allclose(reference_scale_maps(maps.numpy()), scaled.numpy(), atol=1e-3)
    wide = reference_scaling(torch.tensor([0.0, 0.0, 0.0, 100.0]))
    assert float(wide[3]) == pytest.approx(128 + 64 * 3**0.5, abs=1e-3)  # z = 75 / sqrt(1875) = sqrt(3)
    assert float(wide[0]) == pytest.approx(128 - 64 / 3**0.5, abs=1e-3)


@pytest.mark.parametrize("scaling, color_scale", [("raw", "per-map"), ("reference", "shared")])
def test_figure_options(shipped_model, test_split, scaling, color_scale):
    values = image_activations(shipped_model, test_split.images[3], "Conv2D_1").values
    figure = activation_grid_figure(values, layer="Conv2D_1", image=test_split.images[3], cmap="magma",
                                    scaling=scaling, color_scale=color_scale)
    assert isinstance(figure, Figure)
    grid = [ax for ax in figure.axes if ax.images and ax.images[0].get_array().shape == (4 * 26, 8 * 26)][0]
    shown = np.ma.getdata(grid.images[0].get_array())
    if color_scale == "per-map":
        assert grid.images[0].get_clim() == (0.0, 1.0)
        assert np.nanmax(shown[:26, :26]) == pytest.approx(1.0)  # every live map spans 0..1
    else:
        assert grid.images[0].get_clim() == (0.0, 255.0)
        assert np.allclose(shown[:26, :26], reference_scaling(values[0]).numpy(), atol=1e-3)
    assert grid.images[0].get_cmap().name.startswith("magma")
    assert any("colorbar" in str(ax.get_label()) or ax.get_label() == "<colorbar>" for ax in figure.axes)


def test_bad_layer_is_an_address_error(shipped_model, test_split):
    with pytest.raises(AddressError, match="valid layers"):
        layer_activations(shipped_model, test_split.images[:2], "Conv2D_9")
