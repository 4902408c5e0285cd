"""Top-k dataset examples and receptive fields."""

from __future__ import annotations

import pytest
import torch

import convscope
from torch import nn

from convscope.inside import field_geometry, layer_activations, receptive_field, topk_examples, topk_layers
from convscope.models import build_model


def test_topk_on_the_real_test_set_beats_every_other_image(shipped_model, test_split):
    layers = ["Conv2D_3", "Dense_1"]
    results = topk_layers(shipped_model, test_split.images, layers, k=9, batch_size=1000)
    # Independent check: every image's per-map maximum from a separate full pass.
    acts = layer_activations(shipped_model, test_split.images, layers, batch_size=2500)
    for layer in layers:
        result = results[layer]
        maxima = acts[layer].flatten(2).amax(2) if acts[layer].ndim == 4 else acts[layer]  # (N, C)
        n_maps = maxima.shape[1]
        assert result.values.shape == result.indices.shape == (n_maps, 9)
        assert result.num_images == len(test_split) == 10_000
        chosen = torch.zeros_like(maxima, dtype=torch.bool)
        chosen[result.indices, torch.arange(n_maps)[:, None].expand(-1, 9)] = True
        others_best = torch.where(chosen, torch.full_like(maxima, -torch.inf), maxima).amax(0)  # (C,)
        assert (result.values.amin(1) >= others_best - 1e-6).all(), layer
        assert torch.allclose(result.values, maxima.T.gather(1, result.indices), atol=1e-5)
        assert (result.values[:, :-1] >= result.values[:, 1:]).all()  # descending
        assert all(len(set(row.tolist())) == 9 for row in result.indices)  # 9 distinct images
    conv = results["Conv2D_3"]
    # The recorded position is where the maximum sits, and its field is 18×18 at 4-pixel steps.
    maps = torch.arange(128)[:, None].expand(-1, 9)
    at = acts["Conv2D_3"][conv.indices, maps, conv.positions[..., 0], conv.positions[..., 1]]
    assert torch.allclose(at, conv.values, atol=1e-5)
    assert torch.equal(conv.rectangles[..., 0], conv.positions[..., 0] * 4)
    assert torch.equal(conv.rectangles[..., 2] - conv.rectangles[..., 0], torch.full((128, 9), 18))
    assert results["Dense_1"].positions is None and results["Dense_1"].rectangles is None


def test_batches_merge_exactly_with_stable_ties():
    """A hand-set 'layer': the batched running top-k equals a direct sort; ties keep the lower index."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 0]]))
    convscope.wrap(net, input_shape=(1, 2, 2), class_names=["a", "b", "c"], preprocessing="unit")
    images = torch.randint(0, 256, (23, 2, 2), dtype=torch.uint8)
    images[:, 0, 0] = images[:, 0, 0].clamp(max=200)
    images[5, 0, 0] = images[17, 0, 0] = 255  # a tie at the top of node 0
    result = topk_examples(net, images, "1", k=4, batch_size=5)
    values = images.reshape(23, 4)[:, :2].float() / 255.0
    for node in range(2):
        order = torch.sort(values[:, node], descending=True, stable=True).indices[:4]
        assert result.indices[node].tolist() == order.tolist()
    assert result.indices[0, :2].tolist() == [5, 17]
    assert result.indices[2].tolist() == [0, 1, 2, 3]  # node 2 is all zero: earliest images
    assert topk_examples(net, images, "1", k=99, batch_size=7).k == 23  # k capped at N


def test_receptive_field_geometry_and_gradient_support():
    model = build_model("seed_cnn").eval()
    assert field_geometry(model, "Conv2D_1").size == (3, 3)
    assert field_geometry(model, "Max_Pool_1").size == (4, 4) and field_geometry(model, "Max_Pool_1").jump == (2, 2)
    assert field_geometry(model, "Conv2D_2").size == (8, 8)
    assert field_geometry(model, "Conv2D_3").size == (18, 18) and field_geometry(model, "Conv2D_3").jump == (4, 4)
    assert field_geometry(model, "Dense_1") is None
    assert receptive_field(model, "Conv2D_3", 1, 2) == (4, 8, 22, 26)
    assert receptive_field(model, "Dense_1", 0, 0) == (0, 0, 28, 28)
    # Empirically: the input gradient of one unit is non-zero only inside its field, and reaches its edges.
    torch.manual_seed(0)
    for layer, (row, col) in [("Conv2D_3", (1, 2)), ("Conv2D_2", (4, 7)), ("Max_Pool_1", (6, 3))]:
        support = torch.zeros(28, 28, dtype=torch.bool)
        for _ in range(4):
            x = torch.randn(1, 1, 28, 28, requires_grad=True)
            from convscope.probe import capture

            out = capture(model, x, layer)[layer]
            out[0, :, row, col].sum().backward()
            support |= x.grad[0, 0] != 0
        rows, cols = torch.nonzero(support, as_tuple=True)
        top, left, bottom, right = receptive_field(model, layer, row, col)
        assert (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1) == (top, left, bottom, right)


def test_unknown_layer(shipped_model, test_split):
    from convscope.address import AddressError

    with pytest.raises(AddressError, match="valid layers"):
        topk_examples(shipped_model, test_split.images[:10], "Conv2D_7")
