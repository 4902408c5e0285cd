"""Tests that notice when transformation robustness or the class-visualisation jitter
silently stops working (issue 14: turning either into a no-op passed every test).

Each feature is checked twice: by its geometry (the transformed batch differs from the
input by a shift / rotation / scale of the expected size, different per image) and by
its effect (the optimisation with it differs from the one without, and the jittered
class ascent equals an independent re-computation that rolls the image as documented)."""

from __future__ import annotations

import math

import torch

from convscope.optvis import objectives as obj
from convscope.optvis.ascent import random_roll
from convscope.optvis.init import random_initial_images
from convscope.optvis.modern import modern_ascent, random_transform
from convscope.optvis.strategies import class_patterns

N = 16


def _best_integer_shift(moved: torch.Tensor, original: torch.Tensor, limit: int = 3) -> tuple[tuple[int, int], float]:
    """The ``(dy, dx)`` whose integer shift of ``original`` best matches ``moved`` away
    from the borders (reflection padding changes only the outer ``limit`` pixels)."""
    inner = (slice(limit, -limit), slice(limit, -limit))
    best, best_error = (0, 0), math.inf
    for dy in range(-limit, limit + 1):
        for dx in range(-limit, limit + 1):
            shifted = torch.roll(original, shifts=(dy, dx), dims=(-2, -1))
            error = float((moved[inner] - shifted[inner]).abs().max())
            if error < best_error:
                best, best_error = (dy, dx), error
    return best, best_error


def test_random_transform_shifts_each_image_by_whole_pixels_within_the_range():
    images = torch.randn(N, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    moved = random_transform(images, torch.Generator().manual_seed(2), shift=2, scale=(1.0, 1.0), degrees=0.0)
    shifts = []
    for k in range(N):
        shift, error = _best_integer_shift(moved[k, 0], images[k, 0])
        assert error < 1e-4, (k, shift, error)  # a pure whole-pixel shift, nothing else
        assert max(abs(shift[0]), abs(shift[1])) <= 2
        shifts.append(shift)
    assert sum(s != (0, 0) for s in shifts) >= N // 2  # it really moves (identity would give all (0, 0))
    assert len(set(shifts)) >= 4  # per image, not one shift for the batch


def _orientation_degrees(image: torch.Tensor) -> float:
    """The principal-axis angle of a non-negative image (second moments), in degrees."""
    weights = image.clamp_min(0)
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    total = weights.sum()
    my, mx = (weights * ys).sum() / total, (weights * xs).sum() / total
    cyy = (weights * (ys - my) ** 2).sum() / total
    cxx = (weights * (xs - mx) ** 2).sum() / total
    cxy = (weights * (xs - mx) * (ys - my)).sum() / total
    return math.degrees(0.5 * math.atan2(float(2 * cxy), float(cxx - cyy)))


def test_random_transform_rotates_within_the_range():
    bar = torch.zeros(N, 1, 28, 28)
    bar[:, :, 13:15, 4:24] = 1.0  # a horizontal bar: orientation 0°
    turned = random_transform(bar, torch.Generator().manual_seed(3), shift=0, scale=(1.0, 1.0), degrees=10.0)
    angles = [_orientation_degrees(turned[k, 0]) for k in range(N)]
    assert all(abs(a) <= 10.5 for a in angles), angles
    assert max(abs(a) for a in angles) > 4 and float(torch.tensor(angles).std()) > 2, angles


def test_random_transform_scales_within_the_range():
    square = torch.zeros(N, 1, 28, 28)
    square[:, :, 9:19, 9:19] = 1.0
    scaled = random_transform(square, torch.Generator().manual_seed(4), shift=0, scale=(0.8, 1.2), degrees=0.0)
    ratios = (scaled.sum(dim=(1, 2, 3)) / square.sum(dim=(1, 2, 3))).sqrt()  # area ratio -> side ratio
    assert bool(((ratios > 0.78) & (ratios < 1.22)).all()), ratios
    assert float(ratios.std()) > 0.03, ratios


def test_transforms_change_the_modern_ascent(shipped_model):
    target = obj.channels("Conv2D_2", [0, 1])

    def run(transforms: bool) -> torch.Tensor:
        return modern_ascent(shipped_model, target, 2, steps=6, transforms=transforms,
                             generator=torch.Generator().manual_seed(0), record_every=6).images

    plain, robust = run(False), run(True)
    assert torch.equal(plain, run(False))  # deterministic for a fixed generator
    assert float((plain - robust).abs().max()) > 1e-2  # the transforms act on the optimisation


def test_random_roll_rolls_by_the_drawn_shift():
    images = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    seen = set()
    for seed in range(12):
        rolled, (dy, dx) = random_roll(images, 2, torch.Generator().manual_seed(seed))
        drawn = torch.randint(-2, 3, (2,), generator=torch.Generator().manual_seed(seed))
        assert (dy, dx) == (int(drawn[0]), int(drawn[1]))
        assert torch.equal(rolled, torch.roll(images, shifts=(dy, dx), dims=(-2, -1)))
        seen.add((dy, dx))
    assert len(seen) >= 5 and seen != {(0, 0)}


def _independent_jittered_ascent(model, classes, steps, epsilon, jitter, seed):
    """The class ascent written out: a noise start per class (seeded by (seed, class)),
    then per step a random roll of the
    whole batch by (dy, dx) in [-jitter, jitter], the gradient of the class logits
    through the roll, a unit-RMS step, per-image re-standardisation."""
    from convscope.optvis.init import unit_generator, unit_initial_images

    generator = unit_generator(seed, "logits", "jitter")  # the batch's jitter
    x = unit_initial_images(seed, "logits", classes)  # each class's own start
    rows = torch.arange(len(classes))
    for _ in range(steps):
        shift = torch.randint(-jitter, jitter + 1, (2,), generator=generator)
        x = x.detach().requires_grad_(True)
        seen = torch.roll(x, shifts=(int(shift[0]), int(shift[1])), dims=(-2, -1))
        score = model(seen)[rows, torch.tensor(classes)].sum()
        (gradient,) = torch.autograd.grad(score, x)
        rms = gradient.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
        x = x.detach() + epsilon * gradient / (rms + 1e-7)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
        x = (x - mean) / (std + 1e-7)
    return x


def test_class_visualisation_jitter_matches_an_independent_recomputation(shipped_model):
    classes, steps, epsilon = [4, 9], 5, 0.05
    jittered = class_patterns(shipped_model, classes, steps=steps, epsilon=epsilon, jitter=1, passes=1, seed=3)
    still = class_patterns(shipped_model, classes, steps=steps, epsilon=epsilon, jitter=0, passes=1, seed=3)
    expected = _independent_jittered_ascent(shipped_model, classes, steps, epsilon, jitter=1, seed=3)
    assert torch.allclose(jittered.images, expected, atol=1e-4), float((jittered.images - expected).abs().max())
    assert float((jittered.images - still.images).abs().max()) > 1e-2  # the jitter acts on the result
    unjittered = _independent_jittered_ascent(shipped_model, classes, steps, epsilon, jitter=0, seed=3)
    assert torch.allclose(still.images, unjittered, atol=1e-4)
