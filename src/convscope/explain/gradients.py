"""Backward-pass methods: vanilla gradient saliency, the Zeiler–Fergus deconvnet,
guided backpropagation, and SmoothGrad around any of them.

Example::

    x = to_input(model, split.images[:8])                    # (8, 1, 28, 28)
    Saliency(model).attribute(x, target=4)                   # d logit_4 / d x
    Deconvnet(model).attribute(x, target="Conv2D_3:56")      # map 56 sent down to pixels
    Deconvnet(model).attribute(x, target="Conv2D_3:56", keep="max")   # its strongest unit only
    GuidedBackprop(model).attribute(x, target="Conv2D_2:3@4,5")
    SmoothGrad(GuidedBackprop(model), samples=25, seed=0).attribute(x, target=4)
"""

from __future__ import annotations

import torch
from torch import nn

from convscope.explain.base import Attribution, TargetLike


class Saliency(Attribution):
    """Vanilla gradient (Simonyan et al. 2014): ``d target / d input``.

    The true gradient, so ReLUs are left alone (autograd's own backward).
    """

    name = "saliency"
    title = "gradient (saliency)"
    signed = True
    gradient_based = True

    def attribute(self, inputs: torch.Tensor, target: TargetLike = None, *, abs: bool = False) -> torch.Tensor:  # noqa: A002
        """Args:
            inputs: model inputs ``(N, C, H, W)``.
            target: class (int, one per sample, or ``None`` = predicted) or an
                address ``"Conv2D_3:56"`` (map mean) / ``"Conv2D_3:56@1,1"`` (unit).
            abs: return ``|gradient|`` (Simonyan's saliency map) instead of the signed gradient.

        Returns:
            ``(N, C, H, W)`` gradient.
        """
        inputs = self._check_inputs(inputs)
        grad = self._gradient(inputs, self._target(inputs, target), None)
        return grad.abs() if abs else grad


class Deconvnet(Attribution):
    """The deconvnet of Zeiler & Fergus (2014), exact.

    Keep one activation — a whole map (``keep="map"``, its activations are sent
    down) or only its strongest unit (``keep="max"``) — zero the rest of that
    layer, and go down: unpool with the forward max-pool switches, rectify the
    backward signal at every ReLU, filter with the transposed kernels (biases are
    not used by a backward pass). Works for a map or unit of any layer, and for
    a class logit (seeded with 1). Every ReLU call is rectified — ``nn.ReLU``,
    ``F.relu``, ``torch.relu``, in-place — not only ``nn.ReLU`` modules.
    """

    name = "deconvnet"
    title = "deconvnet"
    signed = True
    gradient_based = True

    def attribute(self, inputs: torch.Tensor, target: TargetLike = None, *, keep: str = "map") -> torch.Tensor:
        """Args:
            inputs: model inputs ``(N, C, H, W)``.
            target: class, map or unit address (see :mod:`convscope.explain.base`).
            keep: ``"map"`` (whole map, seeded with its activations) or ``"max"``
                (its single strongest unit per image). A unit address keeps that unit.

        Returns:
            ``(N, C, H, W)`` reconstruction in input space.
        """
        if keep not in ("map", "max"):
            raise ValueError(f"keep must be 'map' or 'max'; got {keep!r}")
        inputs = self._check_inputs(inputs)
        seed = "max" if keep == "max" else "activation"
        return self._gradient(inputs, self._target(inputs, target), "deconvnet", seed=seed)


class GuidedBackprop(Attribution):
    """Guided backpropagation (Springenberg et al. 2015): at every ReLU pass only
    positive gradient where the forward input was positive."""

    name = "gbp"
    title = "guided backprop"
    signed = True
    gradient_based = True

    def attribute(self, inputs: torch.Tensor, target: TargetLike = None) -> torch.Tensor:
        """``(N, C, H, W)`` guided gradient of ``target`` (class / map / unit)."""
        inputs = self._check_inputs(inputs)
        return self._gradient(inputs, self._target(inputs, target), "guided")


class SmoothGrad(Attribution):
    """SmoothGrad (Smilkov et al. 2017) around any gradient method: the average of
    the method's maps over ``samples`` noisy copies of each input.

    Args:
        method: the wrapped method (an :class:`Attribution`, e.g. ``Saliency(model)``).
        samples: noisy copies per input.
        noise_level: noise std as a fraction of each input's value range (max - min).
        squared: average the squared maps (SmoothGrad-SQ).
        seed: seed of the noise (repeatable runs).
        batch_size: noisy inputs per backward pass.
    """

    name = "smoothgrad"
    gradient_based = True

    def __init__(
        self,
        method: Attribution | nn.Module,
        samples: int = 25,
        noise_level: float = 0.15,
        *,
        squared: bool = False,
        seed: int = 0,
        batch_size: int = 1024,
    ) -> None:
        if isinstance(method, nn.Module):
            method = Saliency(method)
        super().__init__(method.model)
        if samples < 1:
            raise ValueError("samples must be at least 1")
        if noise_level < 0:
            raise ValueError("noise_level must be >= 0")
        self.method = method
        self.samples = samples
        self.noise_level = noise_level
        self.squared = squared
        self.seed = seed
        self.batch_size = batch_size
        self.signed = method.signed and not squared
        self.title = f"SmoothGrad ({method.title})"

    def attribute(self, inputs: torch.Tensor, target: TargetLike = None, **kwargs) -> torch.Tensor:
        """``(N, C, H, W)`` mean of the wrapped method over noisy inputs; extra
        keyword arguments go to the wrapped method."""
        inputs = self._check_inputs(inputs)
        n = inputs.shape[0]
        # resolve the target once on the clean inputs (predicted class must not change with noise)
        resolved = self._target(inputs, target)
        per_sample = resolved.classes if resolved.classes is not None else str(resolved.address)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        span = (inputs.reshape(n, -1).amax(1) - inputs.reshape(n, -1).amin(1)).reshape(n, *([1] * (inputs.ndim - 1)))
        total = torch.zeros_like(inputs)
        chunk = max(1, self.batch_size // n)
        for start in range(0, self.samples, chunk):
            k = min(chunk, self.samples - start)
            noise = torch.randn((k, *inputs.shape), generator=generator, dtype=inputs.dtype).to(inputs.device)
            noisy = (inputs[None] + noise * (self.noise_level * span)[None]).reshape(k * n, *inputs.shape[1:])
            targets = per_sample.repeat(k) if isinstance(per_sample, torch.Tensor) else per_sample
            maps = self.method.attribute(noisy, targets, **kwargs).reshape(k, *inputs.shape)
            total += (maps**2 if self.squared else maps).sum(dim=0)
        return total / self.samples
