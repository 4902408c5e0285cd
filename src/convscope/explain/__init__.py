"""Attributions: which input pixels made a class, map or unit respond.

One class per method, one verb — ``attribute(inputs, target=...)`` — returning
``(N, C, H, W)`` maps for model inputs ``(N, C, H, W)`` (from
:func:`convscope.inference.to_input`)::

    from convscope.explain import Deconvnet, GradCAM, IntegratedGradients, explain
    x = to_input(model, images)                                   # (N, 1, 28, 28)
    Deconvnet(model).attribute(x, target="Conv2D_3:56")            # a map of any layer
    GradCAM(model, "Conv2D_3").attribute(x, target=4)              # a class
    result = explain(model, x, "ig", target=4, steps=64)           # Explanation (+ delta)

Targets: a class (int, one per input, or ``None`` = predicted class), a map
``"Conv2D_3:56"`` (its mean activation), a unit ``"Conv2D_3:56@1,1"``.
Every ReLU call — modules, ``F.relu``, ``torch.relu``, in-place — follows the
method's backward rule (see :mod:`convscope.explain.base`); the model is left
unchanged. The sanity check lives in :mod:`convscope.explain.sanity`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from convscope.explain.base import RULES, Attribution, Explanation, Target, TargetLike, relu_rule, resolve_target
from convscope.explain.cam import GradCAM, GuidedGradCAM
from convscope.explain.gradients import Deconvnet, GuidedBackprop, Saliency, SmoothGrad
from convscope.explain.integrated import IntegratedGradients
from convscope.explain.occlusion import Occlusion

#: method name → class, in the order figures and the CLI list them.
METHODS: dict[str, type[Attribution]] = {
    "saliency": Saliency,
    "deconvnet": Deconvnet,
    "gbp": GuidedBackprop,
    "gradcam": GradCAM,
    "ggradcam": GuidedGradCAM,
    "occlusion": Occlusion,
    "ig": IntegratedGradients,
    "smoothgrad": SmoothGrad,
}

_CONSTRUCTOR_KEYS = {"layer"}
_SMOOTH_KEYS = {"samples", "noise_level", "squared", "seed"}


def make_method(model: nn.Module, method: str, **options: Any) -> tuple[Attribution, dict[str, Any]]:
    """Build the method ``method`` for ``model``.

    Returns the :class:`Attribution` and the remaining options (for ``attribute``).
    ``smoothgrad`` wraps ``options["base"]`` (default ``"saliency"``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    options = dict(options)
    if method == "smoothgrad":
        base_name = options.pop("base", "saliency")
        if base_name in ("smoothgrad", "occlusion", "gradcam"):
            raise ValueError(f"SmoothGrad wraps a gradient method (saliency, deconvnet, gbp, ggradcam, ig); got {base_name!r}")
        smooth = {key: options.pop(key) for key in list(options) if key in _SMOOTH_KEYS}
        inner, rest = make_method(model, base_name, **options)
        return SmoothGrad(inner, **smooth), rest
    cls = METHODS[method]
    ctor = {key: options.pop(key) for key in list(options) if key in _CONSTRUCTOR_KEYS}
    if cls not in (GradCAM, GuidedGradCAM):
        ctor.pop("layer", None)
    return cls(model, **ctor), options


def explain(model: nn.Module, inputs: torch.Tensor, method: str, target: TargetLike = None, **options: Any) -> Explanation:
    """Run one method and return an :class:`Explanation`.

    Args:
        model: the network.
        inputs: ``(N, C, H, W)`` model inputs.
        method: a key of :data:`METHODS`.
        target: class / map / unit (``None`` = predicted class).
        **options: method options (``layer``, ``keep``, ``window``, ``stride``,
            ``baseline``, ``steps``, ``samples``, ``noise_level``, ``seed``, ``base``).
    """
    explainer, rest = make_method(model, method, **options)
    resolved = explainer._target(explainer._check_inputs(inputs), target)
    given = resolved.classes if resolved.classes is not None else str(resolved.address)
    delta = None
    if isinstance(explainer, IntegratedGradients):
        attributions, delta = explainer.attribute(inputs, given, return_convergence_delta=True, **rest)
    else:
        attributions = explainer.attribute(inputs, given, **rest)
    return Explanation(
        method=method,
        attributions=attributions,
        target=resolved.describe(),
        signed=explainer.signed,
        delta=delta,
        params={"title": explainer.title, **options},
    )


__all__ = [
    "METHODS", "RULES", "Attribution", "Deconvnet", "Explanation", "GradCAM", "GuidedBackprop", "GuidedGradCAM",
    "IntegratedGradients", "Occlusion", "Saliency", "SmoothGrad", "Target", "explain", "make_method", "relu_rule",
    "resolve_target",
]
