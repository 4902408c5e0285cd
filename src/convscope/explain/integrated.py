"""Integrated gradients (Sundararajan et al. 2017) with the convergence delta.

Example::

    ig = IntegratedGradients(model)
    attributions, delta = ig.attribute(x, target=4, baseline="min", steps=50,
                                       return_convergence_delta=True)

``attributions.sum() - (f(x) - f(baseline))`` is the convergence delta: near 0
when the path integral is well approximated (completeness).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from convscope.explain.base import Attribution, Baseline, TargetLike, eval_mode, resolve_baseline, target_scores
from convscope.explain.registry import register_method

#: the quadrature rules of :func:`path_points` (``method=`` of :meth:`IntegratedGradients.attribute`)
QUADRATURES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")
METHODS = QUADRATURES  # older name


def path_points(steps: int, method: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, weights)`` of the quadrature of ``∫_0^1 g(α) dα`` with ``steps`` points."""
    if int(steps) != steps or steps < 1 or (method == "riemann_trapezoid" and steps < 2):
        raise ValueError(f"steps must be >= {2 if method == 'riemann_trapezoid' else 1}; got {steps}")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (nodes + 1), 0.5 * weights
    if method == "riemann_trapezoid":
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, steps), weights
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    if method not in offsets:
        raise ValueError(f"unknown integration method {method!r}; use one of {QUADRATURES}")
    return (np.arange(steps) + offsets[method]) / steps, np.full(steps, 1.0 / steps)


@register_method("ig", summary="integrated gradients from --baseline (Sundararajan et al.), with its convergence delta",
                 sanity=True)
class IntegratedGradients(Attribution):
    """Integrated gradients along the straight path from a baseline to the input."""

    title = "integrated gradients"
    signed = True
    gradient_based = True

    def attribute(
        self,
        inputs: torch.Tensor,
        target: TargetLike = None,
        *,
        baseline: Baseline = 0.0,
        steps: int = 50,
        method: str = "gausslegendre",
        batch_size: int = 1024,
        return_convergence_delta: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Args:
            inputs: model inputs ``(N, C, H, W)``.
            target: class (default: predicted) or a map/unit address.
            baseline: number, tensor broadcastable to the inputs, ``"min"`` (each
                image's minimum per channel: an empty MNIST image) or ``"mean"``
                (each image's mean colour per channel).
            steps: quadrature points on the path.
            method: ``"gausslegendre"`` (default) or a Riemann rule (see :data:`QUADRATURES`).
            batch_size: path points per backward pass (inputs × steps are chunked).
            return_convergence_delta: also return the delta ``(N,)``.

        Returns:
            ``(N, C, H, W)`` attributions, and the delta ``(N,)`` if asked.
        """
        inputs = self._check_inputs(inputs)
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1; got {batch_size!r}")
        resolved = self._target(inputs, target)
        base = resolve_baseline(inputs, baseline).expand_as(inputs)
        alphas, weights = path_points(steps, method)
        steps = len(alphas)
        alphas_t = torch.as_tensor(alphas, dtype=inputs.dtype, device=inputs.device)
        weights_t = torch.as_tensor(weights, dtype=inputs.dtype, device=inputs.device)
        n = inputs.shape[0]
        diff = inputs - base
        total = torch.zeros_like(inputs)
        per_chunk = max(1, batch_size // n)
        with eval_mode(self.model):
            for start in range(0, steps, per_chunk):
                a = alphas_t[start : start + per_chunk]
                k = a.shape[0]
                # (k, N, C, H, W) points on the path, step-major (like Captum)
                points = (base[None] + a.view(-1, 1, 1, 1, 1) * diff[None]).reshape(k * n, *inputs.shape[1:])
                points.requires_grad_(True)
                sub = resolved if resolved.classes is None else replace(resolved, classes=resolved.classes.repeat(k))
                values, _ = target_scores(self.model, points, sub)
                (grads,) = torch.autograd.grad(values.sum(), points)
                total += (grads.reshape(k, *inputs.shape) * weights_t[start : start + k].view(-1, 1, 1, 1, 1)).sum(0)
            attributions = (total * diff).detach()
            if not return_convergence_delta:
                return attributions
            with torch.no_grad():
                end_values, _ = target_scores(self.model, torch.cat([inputs, base]), replace(
                    resolved, classes=None if resolved.classes is None else resolved.classes.repeat(2)))
        delta = attributions.reshape(n, -1).sum(1) - (end_values[:n] - end_values[n:])
        return attributions, delta.detach()

    def attribute_with_details(
        self, inputs: torch.Tensor, target: TargetLike = None, **kwargs
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Attributions and ``{"delta": (N,)}``, the convergence delta."""
        attributions, delta = self.attribute(inputs, target, return_convergence_delta=True, **kwargs)
        return attributions, {"delta": delta}
