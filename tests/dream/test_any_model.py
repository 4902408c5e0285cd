"""Dreams on models that were never in the package (tests/zoo.py): an RGB 32×32
meanstd net with padding, a strided conv and BatchNorm, and a gray 20×20 residual
net — every tiling, carving, colour, guides and zoom frames, with the gradients
checked against explicit computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convscope.dream import (
    DreamInputError, TilingError, as_photo, carve, colour_dream, deep_dream, objective_and_gradient, resize,
)
from convscope.dream.objective import parse_dream_objective
from convscope.optvis import objectives as obj
from zoo import residual_net, rgb_net


@pytest.fixture(scope="module")
def rgb():
    return rgb_net()


@pytest.fixture(scope="module")
def residual():
    return residual_net()


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """A 96×128 crop of the default photo (the face and the flag), uint8 ``(96, 128, 3)``."""
    from convscope.photos import default_photo

    return np.ascontiguousarray(default_photo()[170:266, 150:278])


def _conv3_by_hand(net, x: torch.Tensor) -> torch.Tensor:
    """RGBNet's ``conv3`` output computed without hooks (its forward, written out)."""
    y = F.relu(net.bn1(net.conv1(x)))
    y = F.relu(net.conv2(y))
    return net.conv3(y)


# -- the three tilings against explicit computations ------------------------------------


def test_tiles_gradient_equals_an_explicit_loop_over_tiles(rgb) -> None:
    objective = parse_dream_objective(rgb, "conv3:5 + 0.5*logits:1")
    x = torch.randn(1, 3, 100, 130, generator=torch.Generator().manual_seed(0))
    value, gradient = objective_and_gradient(rgb, objective, x, "tiles", tile_batch=5)  # 12 tiles in chunks of 5
    expected = torch.zeros_like(x)
    total = 0.0
    for row in range(3):
        for col in range(4):
            tile = x[..., row * 32 : (row + 1) * 32, col * 32 : (col + 1) * 32].clone().requires_grad_(True)
            conv3 = _conv3_by_hand(rgb, tile)
            score = (conv3[:, 5].mean() + 0.5 * rgb(tile)[:, 1].sum()) / 12
            (tile_gradient,) = torch.autograd.grad(score, tile)
            expected[..., row * 32 : (row + 1) * 32, col * 32 : (col + 1) * 32] = tile_gradient
            total += float(score.detach())
    assert value == pytest.approx(total, rel=1e-5)
    assert torch.allclose(gradient, expected, atol=1e-6 * float(expected.abs().max()))
    assert float(gradient[..., 96:, :].abs().max()) == 0 and float(gradient[..., 128:].abs().max()) == 0  # margin


@pytest.mark.parametrize("layer, stripe_pixels", [("conv3", None), ("conv3", 600), ("pool", None), ("pool", 700)])
def test_fullconv_gradient_equals_explicit_autograd_on_the_whole_image(rgb, layer, stripe_pixels) -> None:
    """Whole image at once, and in exact stripes (padding 1, a stride-2 conv, a 2×2
    pool: the stripes' halos and their alignment to the jump must be right)."""
    from convscope.dream.tiling import _stripes, stripe_plan

    objective = parse_dream_objective(rgb, f"{layer}:5 - 0.25*{layer}:7")
    x = torch.randn(1, 3, 61, 45, generator=torch.Generator().manual_seed(1))
    if stripe_pixels is not None:
        geometry = stripe_plan(rgb, objective)
        expected_geometry = {"conv3": (2, 9, -2), "pool": (4, 11, -2)}[layer]
        assert (geometry.jump, geometry.field, geometry.start) == expected_geometry
        assert len(_stripes(geometry, 61, 45, stripe_pixels)) >= 3
    value, gradient = objective_and_gradient(rgb, objective, x, "fullconv", stripe_pixels=stripe_pixels)
    leaf = x.clone().requires_grad_(True)
    out = _conv3_by_hand(rgb, leaf)
    if layer == "pool":
        out = F.avg_pool2d(F.relu(out), 2)
    score = out[:, 5].mean() - 0.25 * out[:, 7].mean()
    (expected,) = torch.autograd.grad(score, leaf)
    assert value == pytest.approx(float(score), rel=1e-5)
    assert torch.allclose(gradient, expected, atol=1e-5 * float(expected.abs().max()))


def test_fullconv_stripes_on_the_residual_net_equal_its_explicit_forward(residual) -> None:
    objective = obj.layer("stages.1")
    x = torch.rand(1, 1, 70, 33, generator=torch.Generator().manual_seed(2))
    value, gradient = objective_and_gradient(residual, objective, x, "fullconv", stripe_pixels=400)
    leaf = x.clone().requires_grad_(True)
    y = F.relu(residual.stem(leaf))  # ResidualNet.forward up to stages.1, written out
    for stage in residual.stages:
        y = F.relu(stage.conv2(F.relu(stage.body(y))) + y)
    score = y.mean()
    (expected,) = torch.autograd.grad(score, leaf)
    assert value == pytest.approx(float(score), rel=1e-5)
    assert torch.allclose(gradient, expected, atol=1e-5 * float(expected.abs().max()))


def test_downscale_gradient_flows_through_the_resize(rgb) -> None:
    objective = parse_dream_objective(rgb, "logits:2")
    x = torch.randn(1, 3, 90, 70, generator=torch.Generator().manual_seed(3))
    value, gradient = objective_and_gradient(rgb, objective, x, "downscale")
    leaf = x.clone().requires_grad_(True)
    small = F.interpolate(leaf, size=(32, 32), mode="bicubic", align_corners=False, antialias=True)
    score = rgb(small)[:, 2].sum()
    (expected,) = torch.autograd.grad(score, leaf)
    assert value == pytest.approx(float(score), rel=1e-5)
    assert torch.allclose(gradient, expected, atol=1e-6 * float(expected.abs().max()))


def test_a_model_that_mixes_rows_is_not_striped() -> None:
    """The stripe geometry cannot see functional operations; the numerical check does."""
    import convscope
    from convscope.dream.tiling import stripe_plan

    class RowMixer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 4, 3)
            self.conv2 = torch.nn.Conv2d(4, 4, 3)
            self.head = torch.nn.Linear(4, 2)

        def forward(self, x):
            y = self.conv1(x)
            y = y - y.mean(dim=2, keepdim=True)  # every row depends on every other
            return self.head(self.conv2(y).mean(dim=(2, 3)))

    model = convscope.wrap(RowMixer().eval(), input_shape=(1, 16, 16), class_names=["a", "b"], preprocessing="unit")
    assert stripe_plan(model, obj.layer("conv1")) is not None  # before the mixing: exact stripes
    assert stripe_plan(model, obj.layer("conv2")) is None  # after it: the check refuses


# -- dreams, carving, colour ------------------------------------------------------------


@pytest.mark.parametrize("tiling", ["fullconv", "tiles", "downscale"])
def test_rgb_dream_in_each_tiling(rgb, crop, tiling) -> None:
    objective = parse_dream_objective(rgb, "conv3")
    photo = torch.from_numpy(crop.copy())
    result = deep_dream(rgb, objective, photo, tiling=tiling, octaves=2, steps=4, step_size=0.1, seed=1)
    assert result.image.shape == (96, 128, 3) and result.standardized.shape == (3, 96, 128)
    assert result.octave_sizes == [(69, 91), (96, 128)]
    assert result.objective_after > 1.1 * result.objective_before > 0
    assert result.space["channels"] == 3 and result.space["preprocessing"] == "meanstd"
    # kept inside the valid pixel range (clipped in the model's space, mapped back)
    assert float(result.image.min()) >= -1e-3 and float(result.image.max()) <= 255 + 1e-3
    assert float((result.image - photo.float()).abs().mean()) > 1.0  # it did change the photo
    again = deep_dream(rgb, objective, photo, tiling=tiling, octaves=2, steps=4, step_size=0.1, seed=1)
    assert torch.equal(again.image, result.image)


def test_the_dream_space_maps_pixels_through_the_spec(rgb, residual, crop) -> None:
    from convscope.dream.space import DreamSpace

    photo = torch.from_numpy(crop.astype(np.float32))
    space = DreamSpace.for_image(rgb, photo)
    x = space.to_model(photo)
    mean = torch.tensor([0.5, 0.45, 0.4]).reshape(1, 3, 1, 1)
    assert torch.allclose(x, (photo.permute(2, 0, 1)[None] / 255 - mean) / 0.25)
    assert torch.allclose(space.to_photo(x), photo, atol=1e-4)
    low, high = space.bounds(x)
    assert torch.allclose(low.flatten(), -mean.flatten() / 0.25) and torch.allclose(high.flatten(), (1 - mean.flatten()) / 0.25)
    gray = DreamSpace.for_image(residual, as_photo(photo, 1))
    assert gray.to_model(as_photo(photo, 1)).shape == (1, 1, 96, 128) and gray.bounds(x)[1].max() == 1.0


def test_layouts_and_non_finite_images() -> None:
    rgb_image = torch.rand(40, 50, 3) * 255
    assert as_photo(rgb_image, 3).shape == (40, 50, 3)
    assert torch.equal(as_photo(rgb_image.permute(2, 0, 1)[None], 3), rgb_image)
    from convscope.dream.space import luminance

    assert torch.allclose(as_photo(rgb_image, 1), luminance(rgb_image))
    gray = torch.rand(40, 50) * 255
    assert torch.equal(as_photo(gray, 3)[..., 2], gray) and as_photo(gray[None, None], 1).shape == (40, 50)
    with pytest.raises(DreamInputError, match="shape"):
        as_photo(torch.zeros(2, 40, 50, 3), 3)
    broken = gray.clone()
    broken[3, 4] = float("nan")
    with pytest.raises(DreamInputError, match="1 NaN or infinite"):
        as_photo(broken, 1)


def test_rgb_colour_dream_and_gray_output(rgb, crop) -> None:
    from convscope.dream import soft_clip

    objective = parse_dream_objective(rgb, "conv3")

    def run(x):
        return deep_dream(rgb, objective, x, octaves=1, steps=3, step_size=0.1)

    colour = colour_dream(rgb, run, torch.from_numpy(crop.copy()))
    assert colour.image.shape == (96, 128, 3) and colour.image.dtype == torch.uint8
    assert colour.dreamed.shape == (96, 128, 3)
    assert torch.equal(colour.image, soft_clip(colour.dreamed).round().clamp(0, 255).to(torch.uint8))
    gray = colour_dream(rgb, run, torch.from_numpy(crop.copy()), color="gray", tone="clip")
    assert gray.image.shape == (96, 128)
    assert torch.equal(gray.image, gray.luminance.round().clamp(0, 255).to(torch.uint8))


@pytest.mark.parametrize("which", ["rgb", "residual"])
def test_carving_on_any_model(rgb, residual, crop, which) -> None:
    model = rgb if which == "rgb" else residual
    text = "conv3:5" if which == "rgb" else "stages.1:3"
    objective = parse_dream_objective(model, text)
    channels = 3 if which == "rgb" else 1
    photo = as_photo(torch.from_numpy(crop.copy()), channels)
    result = carve(model, objective, photo, rounds=2, epochs=30, epsilon=0.05)
    size = (32, 32) if which == "rgb" else (20, 20)
    assert result.pattern.shape == (size + ((3,) if channels == 3 else ()))
    assert result.image.shape == result.upscaled.shape == result.adjusted.shape == photo.shape
    assert result.objective_after > result.objective_before
    assert len(result.round_losses) == 2
    # the final image is the upscaled dream plus the photo's lost detail (in pixels:
    # the preprocessing is affine per channel and the resizes are linear)
    chw = photo[None, None] if channels == 1 else photo.permute(2, 0, 1)[None]
    detail = chw - resize(resize(chw, size), (96, 128))
    detail = detail[0, 0] if channels == 1 else detail[0].permute(1, 2, 0)
    assert torch.allclose(result.image - result.upscaled, detail, atol=1e-2)
    assert float(result.adjusted.min()) >= 0 and float(result.adjusted.max()) <= 255


def test_a_guide_pulls_an_rgb_dream_toward_its_features(rgb, crop) -> None:
    from convscope.dream import guided_objective
    from convscope.dream.guide import guide_vector
    from convscope.photos import default_photo

    guide = torch.from_numpy(np.ascontiguousarray(default_photo()[0:96, 0:128]))  # the flag's stars and stripes
    objective = guided_objective(rgb, guide, parse_dream_objective(rgb, "conv3"), "fullconv")
    assert objective.layers == ("conv3",)
    target = guide_vector(rgb, guide, "conv3")
    photo = torch.from_numpy(crop.copy())
    result = deep_dream(rgb, objective, photo, octaves=2, steps=6, step_size=0.1)

    def cosine(image):
        return float(F.cosine_similarity(guide_vector(rgb, image, "conv3"), target, dim=0))

    assert cosine(result.image) > cosine(photo) + 0.02


# -- the use cases ----------------------------------------------------------------------


def test_app_dream_photo_on_the_rgb_model(rgb, crop) -> None:
    from matplotlib.figure import Figure

    from convscope.app.dream import default_objective, dream_photo

    assert default_objective(rgb, "octaves") == "pool"  # the deepest layer with maps
    run = dream_photo(rgb, crop, tiling="fullconv", octaves=2, steps=3, zoom_frames=2, zoom=1.2, seed=4, source="crop")
    data = run.to_json()
    assert data["channels"] == 3 and data["parameters"]["objective"] == "pool" and data["zoom_frames"] == 2
    assert data["objective_after"] > data["objective_before"]
    assert data["memory"]["fits"] and data["memory"]["estimate_bytes"] > 0
    assert run.image.shape == (96, 128, 3) and run.image.dtype == np.uint8
    assert sorted(run.images()) == ["dream", "frames/frame_0000", "frames/frame_0001"]
    assert np.array_equal(run.frames[0], run.image)  # frame 0 is the dream
    assert np.abs(run.frames[1].astype(int) - run.image).mean() > 3  # then it zooms
    figures = run.figures()
    assert isinstance(figures["dream_comparison"](), Figure) and isinstance(figures["dream_values"](), Figure)
    assert any("pool" in line for line in run.summary())


def test_app_zoom_frame_zero_equals_the_dream(rgb, crop) -> None:
    from convscope.app.dream import dream_photo, zoom_photo

    from convscope.dream.octaves import zoom_centre

    zoom = zoom_photo(rgb, crop, 2, zoom=1.2, octaves=1, steps=2, seed=3)
    single = dream_photo(rgb, crop, octaves=1, steps=2, seed=3)
    assert np.array_equal(zoom.frames[0], single.image)
    assert zoom.frames[1].shape == (96, 128, 3) and zoom.to_json()["frames"] == 2
    # frame 1 is a dream of frame 0's centre magnified 1.2×: closer to that than to frame 0
    first, second = (torch.from_numpy(frame).float() for frame in zoom.frames)
    assert float((second - zoom_centre(first, 1.2)).abs().mean()) < 0.5 * float((second - first).abs().mean())


def test_app_carve_photo_picks_a_map_the_photo_has(rgb, crop) -> None:
    from convscope.app.dream import carve_photo, default_objective, strongest_map

    text = default_objective(rgb, "carve", crop)
    assert text == f"pool:{strongest_map(rgb, 'pool', crop)}"
    run = carve_photo(rgb, crop, rounds=1, steps=20)
    data = run.to_json()
    assert data["mode"] == "carve" and data["parameters"]["objective"] == text
    assert run.image.shape == (96, 128, 3)
    figure = run.figures()["carve_panels"]()
    assert "32×32 pattern (colour)" in [axis.get_title() for axis in figure.axes]


def test_app_refuses_bad_settings_before_any_work(rgb, crop) -> None:
    from convscope.app.dream import carve_photo, dream_photo
    from convscope.dream import ObjectiveTextError

    calls = []

    from convscope.progress import Progress

    progress = Progress(sink=calls.append)
    for kwargs, message in [
        ({"step_size": float("nan")}, "step_size must be a finite number"),
        ({"octave_scale": float("inf")}, "octave_scale must be a finite number"),
        ({"jitter": -1}, "jitter must be at least 0"),
        ({"zoom_frames": 2, "zoom": 1.0}, "zoom must be > 1"),
        ({"objective": "nan*conv3:5"}, "not a finite number"),
        ({"objective": "heads.hidden:3"}, "fullconv runs only"),
        ({"memory_limit": -1.0}, "memory limit must be a positive"),
    ]:
        with pytest.raises(ValueError, match=message):
            dream_photo(rgb, crop, progress=progress, **kwargs)
    with pytest.raises(ObjectiveTextError):
        carve_photo(rgb, crop, objective="conv3:99")
    with pytest.raises(TilingError, match="needs at least 32x32"):
        dream_photo(rgb, crop[:20])
    with pytest.raises(DreamInputError, match="NaN"):
        dream_photo(rgb, np.full((40, 40, 3), np.nan))
    assert calls == []  # nothing started


def test_cancelling_stops_the_dream(rgb, crop) -> None:
    from convscope.app.dream import dream_photo
    from convscope.optvis.core import Cancelled
    from convscope.progress import Progress

    events = []

    def sink(event) -> None:
        events.append(event)
        progress.cancel()

    progress = Progress(sink=sink)
    with pytest.raises(Cancelled):
        dream_photo(rgb, crop, octaves=2, steps=5, progress=progress)
    assert 0 < max(event.completed for event in events) < 10
