"""The dream engines raise their objective, keep the size, and agree where they must."""

from __future__ import annotations

import copy

import pytest
import torch

from convscope.dream import carve, deep_dream, evaluate, stretch
from convscope.optvis.objectives import parse_objective


@pytest.mark.parametrize("tiling", ["downscale", "tiles", "fullconv"])
def test_each_tiling_raises_its_objective_and_keeps_the_size(shipped_model, small_gray, tiling: str) -> None:
    objective = parse_objective("Conv2D_3")
    result = deep_dream(shipped_model, objective, small_gray, tiling=tiling, octaves=2, steps=5, step_size=0.1, seed=1)
    assert result.image.shape == small_gray.shape == (96, 80)
    assert result.octave_sizes == [(69, 57), (96, 80)]
    # measured on the full-size input and output with the same tiling
    assert result.objective_before > 0
    # (tiles: evaluated on the fixed, unrolled tile grid, which the rolled steps only partly match)
    assert result.objective_after > 1.1 * result.objective_before
    assert len(result.values) == 10 and all(v == v for v in result.values)
    assert sum(result.values[-3:]) > 1.2 * sum(result.values[:3])  # it climbs during the run
    # mapped back to the photo's value range: same mean, std (re-standardised each step)
    assert abs(float(result.image.mean() - small_gray.mean())) < 1e-2 * float(small_gray.std())
    assert float(result.image.std()) == pytest.approx(float(small_gray.std()), rel=1e-3)
    assert float((result.image - small_gray).abs().mean()) > 1.0  # it did change the photo


def test_tiles_mode_serves_a_dense_objective(shipped_model, small_gray) -> None:
    objective = parse_objective("Dense_1:42")
    result = deep_dream(shipped_model, objective, small_gray, tiling="tiles", octaves=1, steps=4, step_size=0.1)
    assert result.objective_after > result.objective_before


def test_on_a_model_sized_input_tiles_and_downscale_agree(shipped_model, test_split) -> None:
    digit = torch.as_tensor(test_split.images[7].astype("float32"))  # exactly 28×28
    objective = parse_objective("Conv2D_3:56 + 0.5*Conv2D_2")
    results = {
        tiling: deep_dream(shipped_model, objective, digit, tiling=tiling, octaves=3, steps=6, seed=3)
        for tiling in ("tiles", "downscale")
    }
    tiles, downscale = results["tiles"], results["downscale"]
    assert tiles.octave_sizes == [(28, 28)]  # never smaller than the model's input…
    assert any("only 1" in note for note in tiles.notes)  # …and says so
    assert torch.allclose(tiles.image, downscale.image, atol=1e-4)
    assert tiles.values == pytest.approx(downscale.values, rel=1e-5)
    assert float((tiles.image - digit).abs().max()) > 1.0


def test_model_and_randomness_are_untouched_and_repeatable(shipped_model, small_gray) -> None:
    before = copy.deepcopy(shipped_model.state_dict())
    objective = parse_objective("Conv2D_2:5")
    first = deep_dream(shipped_model, objective, small_gray, tiling="fullconv", octaves=1, steps=3, seed=7)
    second = deep_dream(shipped_model, objective, small_gray, tiling="fullconv", octaves=1, steps=3, seed=7)
    third = deep_dream(shipped_model, objective, small_gray, tiling="fullconv", octaves=1, steps=3, seed=8)
    assert torch.equal(first.image, second.image)
    assert not torch.equal(first.image, third.image)
    assert all(torch.equal(before[k], v) for k, v in shipped_model.state_dict().items())
    assert all(p.requires_grad for p in shipped_model.parameters())


def test_pattern_carving_raises_the_map_and_keeps_the_photo(shipped_model, small_gray) -> None:
    objective = parse_objective("Conv2D_3:56")
    result = carve(shipped_model, objective, small_gray, rounds=2, epochs=40)
    assert result.pattern.shape == (28, 28)
    assert result.image.shape == result.upscaled.shape == result.adjusted.shape == (96, 80)
    assert result.objective_after > result.objective_before + 0.1
    assert len(result.round_losses) == 2
    # the final image is the upscaled dream plus the photo's lost detail
    assert float(result.adjusted.min()) >= 0 and float(result.adjusted.max()) <= 255
    small_before = torch.nn.functional.interpolate(small_gray[None, None], size=(28, 28), mode="bicubic", antialias=True)
    detail = small_gray - torch.nn.functional.interpolate(small_before, size=(96, 80), mode="bicubic")[0, 0]
    assert torch.allclose(result.image - result.upscaled, detail, atol=1e-3)
    # the objective on the carved image (evaluated independently) beats the photo
    from convscope.data.preprocess import standardize
    from convscope.dream import resize

    def score(image):
        return evaluate(shipped_model, objective, standardize(resize(image[None, None], (28, 28))), "downscale")

    assert score(result.image) > score(small_gray)


def test_stretch_maps_percentiles_to_the_8_bit_range() -> None:
    values = torch.linspace(-3, 5, 10_000).reshape(100, 100)
    out = stretch(values, 1, 99)
    assert float(out.min()) == 0 and float(out.max()) == 255
    assert float(out.median()) == pytest.approx(127.5, abs=1.0)


def test_a_guide_pulls_the_dream_toward_its_features(shipped_model, small_gray, test_split) -> None:
    from convscope.dream import guided_objective
    from convscope.dream.guide import guide_vector

    guide = torch.as_tensor(test_split.images[0].astype("float32"))  # a digit as the guide
    objective = guided_objective(shipped_model, guide, parse_objective("Conv2D_2"), "fullconv")
    assert objective.layers == ("Conv2D_2",) and objective.name == "guide(Conv2D_2)"
    target = guide_vector(shipped_model, guide, "Conv2D_2")
    result = deep_dream(shipped_model, objective, small_gray, octaves=2, steps=5, step_size=0.1)

    def cosine(image):
        vector = guide_vector(shipped_model, image, "Conv2D_2")
        return float(torch.nn.functional.cosine_similarity(vector, target, dim=0))

    assert cosine(result.image) > cosine(small_gray) + 0.05
    with pytest.raises(ValueError, match="reads a layer"):
        from convscope.optvis.objectives import total_variation

        guided_objective(shipped_model, guide, -1.0 * total_variation(), "fullconv")
