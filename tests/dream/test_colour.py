"""Luminance dreams keep the photo's chroma."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from convscope.dream import deep_dream, dream_colour, rgb_to_ycbcr, ycbcr_to_rgb
from convscope.optvis.objectives import parse_objective


def test_ycbcr_matches_pillow_and_round_trips(small_photo) -> None:
    ours = rgb_to_ycbcr(torch.from_numpy(small_photo.astype(np.float32)))
    pillow = np.asarray(Image.fromarray(small_photo).convert("YCbCr"), dtype=np.float32)
    assert np.abs(ours.numpy() - pillow).max() <= 1.0
    back = ycbcr_to_rgb(ours)
    assert torch.allclose(back, torch.from_numpy(small_photo.astype(np.float32)), atol=1e-3)


def test_luminance_mode_leaves_chroma_unchanged(shipped_model, small_photo) -> None:
    objective = parse_objective("Conv2D_3")
    photo = torch.from_numpy(small_photo.copy())
    result = dream_colour(lambda y: deep_dream(shipped_model, objective, y, octaves=1, steps=5, step_size=0.1), photo)
    assert result.image.shape == photo.shape and result.image.dtype == torch.uint8
    before = np.asarray(Image.fromarray(small_photo).convert("YCbCr"), dtype=np.float32)
    after = np.asarray(Image.fromarray(result.image.numpy()).convert("YCbCr"), dtype=np.float32)
    luma_change = np.abs(after[..., 0] - before[..., 0]).mean()
    assert luma_change > 5.0  # the dream is there…
    # …and the colours are not: compare Cb/Cr where no channel was clipped
    unclipped = (result.image.numpy() > 0).all(-1) & (result.image.numpy() < 255).all(-1)
    assert unclipped.mean() > 0.7
    chroma_change = np.abs(after[..., 1:] - before[..., 1:])[unclipped]
    assert chroma_change.mean() < 0.6 and np.percentile(chroma_change, 99) <= 2.0


def test_gray_mode_returns_the_gray_dream(shipped_model, small_photo) -> None:
    objective = parse_objective("Conv2D_3")
    result = dream_colour(
        lambda y: deep_dream(shipped_model, objective, y, octaves=1, steps=2), torch.from_numpy(small_photo.copy()),
        color="gray",
    )
    assert result.image.shape == small_photo.shape[:2]
    from convscope.dream import soft_clip

    assert torch.equal(result.image, soft_clip(result.luminance).round().clamp(0, 255).to(torch.uint8))


def test_soft_tone_keeps_mid_tones_and_bends_the_ends() -> None:
    from convscope.dream import merge_luminance, soft_clip

    values = torch.tensor([-100.0, 0.0, 24.0, 128.0, 231.0, 255.0, 400.0])
    out = soft_clip(values)
    assert torch.equal(out[2:5], values[2:5])  # identity in the middle
    assert 0 < float(out[0]) < float(out[1]) < 24 and 231 < float(out[5]) < float(out[6]) < 255
    assert torch.all(out[1:] > out[:-1])  # monotone: order of brightness kept
    clipped = merge_luminance(values[None], None, "gray", "clip")[0]
    assert clipped.tolist() == [0, 0, 24, 128, 231, 255, 255]
