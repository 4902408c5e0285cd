"""Tile geometry, tiling checks and octave sizes."""

from __future__ import annotations

import pytest
import torch

from convscope.dream import TilingError, check_tiling, octave_sizes, resize
from convscope.dream.tiling import from_tiles, tile_grid, to_tiles
from convscope.optvis.objectives import parse_objective


def test_tiles_round_trip_and_margin() -> None:
    image = torch.arange(1 * 1 * 60 * 90, dtype=torch.float32).reshape(1, 1, 60, 90)
    grid = tile_grid(60, 90, (28, 28))
    assert (grid.rows, grid.cols) == (2, 3)
    tiles = to_tiles(image, grid)
    assert tiles.shape == (6, 1, 28, 28)
    # tile (row 1, col 2) is the block starting at (28, 56)
    assert torch.equal(tiles[5, 0], image[0, 0, 28:56, 56:84])
    back = from_tiles(tiles, grid, 60, 90)
    assert torch.equal(back[..., :56, :84], image[..., :56, :84])
    assert float(back[..., 56:, :].abs().sum()) == 0 and float(back[..., :, 84:].abs().sum()) == 0


def test_fullconv_refuses_dense_objectives_with_a_clear_message(shipped_model) -> None:
    check_tiling(shipped_model, parse_objective("Conv2D_3 + 0.5*Max_Pool_2:3"), "fullconv")
    for text in ("Dense_1:42", "logits:4", "Conv2D_3 + Dense_1"):
        with pytest.raises(TilingError, match="fullconv.*tiles or downscale"):
            check_tiling(shipped_model, parse_objective(text), "fullconv")
        check_tiling(shipped_model, parse_objective(text), "tiles")  # tiles serve any objective
    with pytest.raises(TilingError, match="unknown tiling"):
        check_tiling(shipped_model, parse_objective("Conv2D_3"), "mosaic")


def test_octaves_never_smaller_than_the_model_input_and_say_so() -> None:
    sizes, notes = octave_sizes(600, 512, 4, 1.4)
    assert sizes[-1] == (600, 512) and len(sizes) == 4 and notes == []
    assert sizes[0] == (round(600 / 1.4**3), round(512 / 1.4**3))
    sizes, notes = octave_sizes(60, 100, 6, 1.5)
    assert min(min(s) for s in sizes) >= 28
    assert len(sizes) == 2  # 60, 40 (26.7 would be too small)
    assert len(notes) == 1 and "only 2" in notes[0] and "28x28" in notes[0]
    with pytest.raises(TilingError, match="smaller than the model's 28x28"):
        octave_sizes(20, 300, 2, 1.4)


def test_resize_is_identity_at_same_size_and_antialiased_when_shrinking() -> None:
    x = torch.randn(1, 1, 28, 28)
    assert resize(x, (28, 28)) is x
    # a pixel-level checkerboard averages out when shrinking (antialias), not aliased to ±1
    board = (torch.arange(112)[:, None] + torch.arange(112)[None, :]) % 2 * 2.0 - 1.0
    small = resize(board[None, None], (28, 28))
    assert float(small.abs().max()) < 0.1


def test_striped_fullconv_equals_one_whole_image_pass(shipped_model) -> None:
    """Large images run in horizontal stripes (bounded memory) with the exact result."""
    from convscope.dream.octaves import prepare_model
    from convscope.dream.tiling import _geometry, _stripes, evaluate, objective_and_gradient
    from convscope.optvis import objectives as obj

    model = prepare_model(shipped_model)
    geometry = _geometry(model, "Conv2D_3")
    assert (geometry.jump, geometry.field) == (4, 18)  # Conv2D_3 units see 18×18 pixels, 4 apart
    stripes = _stripes(geometry, 150, 90, 3000)
    assert len(stripes) > 3 and stripes[0][0] == 0 and stripes[-1][1] == geometry.output_rows(150)
    assert all(a[1] == b[0] for a, b in zip(stripes, stripes[1:]))  # every output row exactly once
    image = torch.randn(1, 1, 150, 90, generator=torch.Generator().manual_seed(0))
    for objective in (obj.layer("Conv2D_3"), obj.channel("Conv2D_2:5") - 0.1 * obj.total_variation()):
        whole_value, whole_grad = objective_and_gradient(model, objective, image, "fullconv")
        value, grad = objective_and_gradient(model, objective, image, "fullconv", stripe_pixels=3000)
        assert value == pytest.approx(whole_value, rel=1e-5)
        assert torch.allclose(grad, whole_grad, atol=1e-4 * float(whole_grad.abs().max()))
    with torch.no_grad():
        expected = float(obj.layer("Conv2D_3")(model, image))
    assert evaluate(model, obj.layer("Conv2D_3"), image, "fullconv") == pytest.approx(expected, rel=1e-5)
