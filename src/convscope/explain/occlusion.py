"""Occlusion (Zeiler & Fergus 2014): slide a patch over the image, replace it by a
baseline, and record how much the target drops.

Example::

    Occlusion(model).attribute(x, target=4, window=4, stride=2)     # (N, 1, 28, 28)
    Occlusion(model).attribute(x, target="cat", baseline="mean")    # RGB: each channel's mean colour

Each pixel gets the mean drop ``f(x) - f(x with patch occluded)`` over all windows
that cover it (the same definition as Captum's ``Occlusion``): windows start at
``0, stride, 2·stride, …`` until one reaches the last row/column, the last one
clipped at the edge when the stride does not divide evenly, so every pixel is
covered. The patch covers all channels at once; the baseline may differ per
channel. Without ``window``/``stride`` they scale with the input
(:func:`default_window`: 4 and 2 px on 28×28, 5 and 2 on 32×32, 32 and 16 on
224×224). All occluded copies are evaluated in large batches, without gradients.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from convscope.explain.base import (
    BASELINES, Attribution, Baseline, Target, TargetLike, eval_mode, resolve_baseline, target_scores,
)
from convscope.explain.registry import register_method

__all__ = ["BASELINES", "Baseline", "Occlusion", "default_window", "resolve_baseline"]


def default_window(height: int, width: int) -> tuple[int, int]:
    """``(window, stride)`` for an ``height×width`` input: a patch of about a
    seventh of the shorter side (4 px for MNIST's 28, as in the reference), moved
    by half of it."""
    window = max(1, round(min(height, width) / 7))
    return window, max(1, window // 2)


@register_method("occlusion", summary="sliding patch replaced by --baseline; how much the target drops")
class Occlusion(Attribution):
    """Occlusion sensitivity with a square ``window`` moved by ``stride``."""

    title = "occlusion"
    signed = True

    def used_options(self, input_shape, **given):
        used = super().used_options(input_shape, **given)
        if used.get("window") is None:
            used["window"] = default_window(int(input_shape[-2]), int(input_shape[-1]))[0]
        if used.get("stride") is None:
            used["stride"] = max(1, int(used["window"]) // 2)
        return used

    def attribute(
        self,
        inputs: torch.Tensor,
        target: TargetLike = None,
        *,
        window: int | None = None,
        stride: int | None = None,
        baseline: Baseline = 0.0,
        batch_size: int = 256,
    ) -> torch.Tensor:
        """Args:
            inputs: model inputs ``(N, C, H, W)``.
            target: class (default: predicted) or a map/unit address.
            window: side of the square patch in pixels (all channels at once);
                default scaled to the input (:func:`default_window`).
            stride: step between patch positions in pixels (default: half the window).
            baseline: value put into the patch: a number, a tensor broadcastable to
                the inputs, ``"min"`` (each image's minimum per channel: an MNIST
                digit's background) or ``"mean"`` (each image's mean per channel).
            batch_size: occluded images per forward pass.

        Returns:
            ``(N, C, H, W)``; positive where occluding lowers the target.
        """
        inputs = self._check_inputs(inputs)
        n, channels, height, width = inputs.shape
        window = default_window(height, width)[0] if window is None else window
        stride = max(1, int(window) // 2) if stride is None else stride
        if int(window) != window or int(stride) != stride or not (1 <= window <= min(height, width)) or stride < 1:
            raise ValueError(f"occlusion needs a whole window 1..{min(height, width)} (the input is {height}×{width}) "
                             f"and a whole stride >= 1; got window={window}, stride={stride}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1; got {batch_size!r}")
        window, stride, batch_size = int(window), int(stride), int(batch_size)
        resolved = self._target(inputs, target)
        base = resolve_baseline(inputs, baseline).expand_as(inputs)
        # window starts as Captum places them: the last one may stick out (it is clipped)
        row_starts = torch.arange(0, height - window + stride, stride, device=inputs.device)
        col_starts = torch.arange(0, width - window + stride, stride, device=inputs.device)
        n_rows, n_cols = len(row_starts), len(col_starts)
        n_windows = n_rows * n_cols
        # a window whose pixels all equal the baseline already changes nothing: its drop is
        # exactly 0 and it is not evaluated (with baseline "min" that is most of an MNIST background)
        differs = (inputs - base).abs().sum(1, keepdim=True)
        changed = F.max_pool2d(differs, window, stride, ceil_mode=True).reshape(n, -1) > 0
        assert changed.shape[1] == n_windows
        image_index, window_index = changed.nonzero(as_tuple=True)
        drops = torch.zeros((n, n_windows), dtype=inputs.dtype, device=inputs.device)
        rows = torch.arange(height, device=inputs.device)
        cols = torch.arange(width, device=inputs.device)
        with torch.no_grad(), eval_mode(self.model):
            original, _ = target_scores(self.model, inputs, resolved)
            for start in range(0, image_index.numel(), batch_size):
                images = image_index[start : start + batch_size]
                windows = window_index[start : start + batch_size]
                top = row_starts[windows // n_cols][:, None]
                left = col_starts[windows % n_cols][:, None]
                inside_rows = (rows[None] >= top) & (rows[None] < top + window)  # (b, H)
                inside_cols = (cols[None] >= left) & (cols[None] < left + window)  # (b, W)
                mask = (inside_rows[:, :, None] & inside_cols[:, None, :]).to(inputs.dtype)[:, None]  # (b, 1, H, W)
                occluded = inputs[images] * (1 - mask) + base[images] * mask
                values, _ = target_scores(self.model, occluded, _subset(resolved, images))
                drops[images, windows] = original[images] - values
        # spread each window's drop over its pixels and average over covering windows (on a
        # canvas large enough for the clipped last windows, then cropped)
        canvas = ((n_rows - 1) * stride + window, (n_cols - 1) * stride + window)
        patch = drops[:, None, :].expand(n, window * window, n_windows)
        summed = F.fold(patch, canvas, kernel_size=window, stride=stride)[..., :height, :width]
        counts = F.fold(torch.ones_like(patch[:1]), canvas, kernel_size=window, stride=stride)[..., :height, :width]
        result = summed / counts  # every pixel is covered at least once
        return result.expand(n, channels, height, width).clone()


def _subset(target: Target, images: torch.Tensor) -> Target:
    """The target for a batch made of the given images (per-image classes follow)."""
    if target.classes is None:
        return target
    return replace(target, classes=target.classes.to(images.device)[images])
