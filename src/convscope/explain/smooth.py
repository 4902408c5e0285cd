"""SmoothGrad (Smilkov et al. 2017) around any registered gradient method.

Example::

    SmoothGrad(GuidedBackprop(model), samples=25, seed=0).attribute(x, target=4)
    make_method(model, "smoothgrad", base="ig", samples=8, steps=16)   # by name

Which methods it may wrap comes from the registry
(:func:`convscope.explain.registry.smoothable_methods`): every gradient method
that is not itself a wrapper, including ones registered by a user.
"""

from __future__ import annotations

import torch
from torch import nn

from convscope.explain.base import Attribution, TargetLike
from convscope.explain.gradients import Saliency
from convscope.explain.registry import register_method


@register_method("smoothgrad", summary="the --smooth-base method averaged over noisy copies (Smilkov et al.)",
                 wrapper=True, default_base="saliency")
class SmoothGrad(Attribution):
    """SmoothGrad (Smilkov et al. 2017) around any gradient method: the average of
    the method's maps over ``samples`` noisy copies of each input.

    Args:
        method: the wrapped method (an :class:`Attribution`, e.g. ``Saliency(model)``;
            a bare model means ``Saliency(model)``).
        samples: noisy copies per input.
        noise_level: noise std as a fraction of each input's value range (max - min
            over all its channels).
        squared: average the squared maps (SmoothGrad-SQ).
        seed: seed of the noise (repeatable runs).
        batch_size: noisy inputs per backward pass.
    """

    title = "SmoothGrad"
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
        if int(samples) != samples or samples < 1:
            raise ValueError(f"samples must be a whole number >= 1; got {samples!r}")
        if not (noise_level >= 0 and noise_level < float("inf")):
            raise ValueError(f"noise_level must be a finite number >= 0; got {noise_level!r}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1; got {batch_size!r}")
        self.method = method
        self.samples = int(samples)
        self.noise_level = float(noise_level)
        self.squared = squared
        self.seed = seed
        self.batch_size = int(batch_size)
        self.signed = method.signed and not squared
        self.title = f"SmoothGrad ({method.title})"

    def used_options(self, input_shape, **given):
        """Its own options, ``base`` and the wrapped method's."""
        return {**self.method.used_options(input_shape, **given), "base": self.method.name,
                **super().used_options(input_shape)}

    def attribute(self, inputs: torch.Tensor, target: TargetLike = None, **kwargs) -> torch.Tensor:
        """``(N, C, H, W)`` mean of the wrapped method over noisy inputs; extra
        keyword arguments go to the wrapped method."""
        inputs = self._check_inputs(inputs)
        n = inputs.shape[0]
        # resolve the target once on the clean inputs (predicted class must not change with noise)
        per_sample = self._given(self._target(inputs, target))
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
