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
