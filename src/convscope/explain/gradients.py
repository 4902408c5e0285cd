"""Backward-pass methods: vanilla gradient saliency, the Zeiler–Fergus deconvnet
and guided backpropagation (SmoothGrad around any of them: :mod:`convscope.explain.smooth`).

Example::

    x = to_input(model, split.images[:8])                    # (8, 1, 28, 28)
    Saliency(model).attribute(x, target=4)                   # d logit_4 / d x
    Deconvnet(model).attribute(x, target="Conv2D_3:56")      # map 56 sent down to pixels
    Deconvnet(model).attribute(x, target="Conv2D_3:56", keep="max")   # its strongest unit only
    GuidedBackprop(model).attribute(x, target="Conv2D_2:3@4,5")
"""

from __future__ import annotations

import torch

from convscope.explain.base import Attribution, TargetLike
from convscope.explain.registry import register_method


@register_method("saliency", summary="plain gradient d target / d input (Simonyan et al.)", sanity=True)
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


@register_method("deconvnet", summary="Zeiler & Fergus: rectified backward signal at every ReLU", sanity=True)
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


@register_method("gbp", summary="guided backprop (Springenberg et al.)", sanity=True)
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
