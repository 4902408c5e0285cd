"""Occlusion (Zeiler & Fergus 2014): slide a patch over the image, replace it by a
baseline, and record how much the target drops.

Example::

    Occlusion(model).attribute(x, target=4, window=4, stride=2)     # (N, 1, 28, 28)

Each pixel gets the mean drop ``f(x) - f(x with patch occluded)`` over all windows
that cover it (the same definition as Captum's ``Occlusion``). Pixels no window
covers get 0. All occluded copies are evaluated in large batches, without
gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convscope.explain.base import Attribution, TargetLike, eval_mode, forward_to, target_values

Baseline = float | str | torch.Tensor


def resolve_baseline(inputs: torch.Tensor, baseline: Baseline) -> torch.Tensor:
    """A baseline broadcastable to ``inputs`` ``(N, C, H, W)``.

    ``baseline`` is a number, a tensor, or ``"min"`` (each input's minimum: the
    background of an MNIST digit after standardisation, i.e. "no ink").
    """
    if isinstance(baseline, str):
        if baseline != "min":
            raise ValueError(f"baseline must be a number, a tensor or 'min'; got {baseline!r}")
        return inputs.reshape(inputs.shape[0], -1).amin(dim=1).reshape(-1, *([1] * (inputs.ndim - 1)))
    return torch.as_tensor(baseline, dtype=inputs.dtype, device=inputs.device)


class Occlusion(Attribution):
    """Occlusion sensitivity with a square ``window`` moved by ``stride``."""

    name = "occlusion"
    title = "occlusion"
    signed = True

    def attribute(
        self,
        inputs: torch.Tensor,
        target: TargetLike = None,
        *,
        window: int = 4,
        stride: int = 2,
        baseline: Baseline = 0.0,
        batch_size: int = 256,
    ) -> torch.Tensor:
        """Args:
            inputs: model inputs ``(N, C, H, W)``.
            target: class (default: predicted) or a map/unit address.
            window: side of the square patch in pixels (all channels at once).
            stride: step between patch positions in pixels.
            baseline: value put into the patch: a number, a tensor broadcastable to
                the inputs, or ``"min"`` (each image's background value).
            batch_size: occluded images per forward pass.

        Returns:
            ``(N, C, H, W)``; positive where occluding lowers the target.
        """
        inputs = self._check_inputs(inputs)
        n, channels, height, width = inputs.shape
        if not (1 <= window <= min(height, width)) or stride < 1:
            raise ValueError(f"need 1 <= window <= {min(height, width)} and stride >= 1; got window={window}, stride={stride}")
        resolved = self._target(inputs, target)
        layer = self._layer_for(resolved)
        base = resolve_baseline(inputs, baseline).expand_as(inputs)
        rows = range(0, height - window + 1, stride)
        cols = range(0, width - window + 1, stride)
        # one 0/1 mask per window position: (L, 1, H, W)
        masks = torch.zeros((len(rows) * len(cols), 1, height, width), dtype=inputs.dtype, device=inputs.device)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                masks[i * len(cols) + j, :, r : r + window, c : c + window] = 1
        n_windows = masks.shape[0]
        # a window whose pixels all equal the baseline already changes nothing: its drop is
        # exactly 0 and it is not evaluated (with baseline "min" that is most of the background)
        changed = F.max_pool2d((inputs - base).abs().sum(1, keepdim=True), window, stride).reshape(n, -1) > 0
        image_index, window_index = changed.nonzero(as_tuple=True)
        drops = torch.zeros((n, n_windows), dtype=inputs.dtype, device=inputs.device)
        with torch.no_grad(), eval_mode(self.model):
            original = self._values(inputs, resolved, layer)
            for start in range(0, image_index.numel(), batch_size):
                images = image_index[start : start + batch_size]
                windows = window_index[start : start + batch_size]
                mask = masks[windows]  # (b, 1, H, W)
                occluded = inputs[images] * (1 - mask) + base[images] * mask
                values = self._values(occluded, self._subset(resolved, images), layer)
                drops[images, windows] = original[images] - values
        # spread each window's drop over its pixels and average over covering windows
        patch = drops[:, None, :].expand(n, window * window, n_windows)
        summed = F.fold(patch, (height, width), kernel_size=window, stride=stride)
        counts = F.fold(torch.ones_like(patch[:1]), (height, width), kernel_size=window, stride=stride)
        result = torch.where(counts > 0, summed / counts.clamp_min(1), torch.zeros_like(summed))
        return result.expand(n, channels, height, width).clone()

    def _values(self, inputs: torch.Tensor, target, layer: str) -> torch.Tensor:
        output = forward_to(self.model, inputs, [layer])[layer]
        if target.address.layer == "probabilities":
            output = torch.softmax(output, dim=1)
        return target_values(output, target)

    @staticmethod
    def _subset(target, images: torch.Tensor):
        """The target for a batch made of the given images (per-image classes follow)."""
        if target.classes is None:
            return target
        from dataclasses import replace

        return replace(target, classes=target.classes.to(images.device)[images])
