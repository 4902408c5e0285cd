"""Attributions: which input pixels made a class, map or unit respond.

One class per method, one verb — ``attribute(inputs, target=...)`` — returning
``(N, C, H, W)`` maps for model inputs ``(N, C, H, W)`` (from
:func:`convscope.inference.to_input`), on any model: gray or RGB, any input size::

    from convscope.explain import Deconvnet, GradCAM, IntegratedGradients, explain
    x = to_input(model, images)                                   # (N, C, H, W)
    Deconvnet(model).attribute(x, target="Conv2D_3:56")            # a map of any layer
    GradCAM(model).attribute(x, target=4)                          # the last conv layer with maps
    GradCAM(model, "Conv2D_2").attribute(x, target="Sandal")       # a class by name
    result = explain(model, x, "ig", target=4, steps=64)           # Explanation (+ delta)

Targets: a class (int, one per input, a class name of the model's spec, or
``None`` = predicted class), a map ``"Conv2D_3:56"`` (its mean activation), a unit
``"Conv2D_3:56@1,1"``. Every ReLU call — modules, ``F.relu``, ``torch.relu``,
in-place — follows the method's backward rule (see :mod:`convscope.explain.base`);
the model is left unchanged.

Methods are registered in one place (:mod:`convscope.explain.registry`): a new
method is one :class:`Attribution` subclass with ``@register_method("name")``;
the CLI, ``--method all``, SmoothGrad's bases and the sanity check's defaults
follow. The sanity check lives in :mod:`convscope.explain.sanity`; use cases that
return figures and JSON in :mod:`convscope.app.explain`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from convscope.explain.base import (
    BASELINES, RULES, Attribution, Explanation, Target, TargetLike, relu_rule, resolve_baseline, resolve_target,
)
from convscope.explain.registry import (
    MethodInfo, MethodsView, make_method, method_info, method_names, options_for, register_method, sanity_methods,
    smoothable_methods, unregister_method,
)

# registration order = the order of figures, the CLI's choices and ``--method all``
from convscope.explain.gradients import Deconvnet, GuidedBackprop, Saliency  # noqa: E402,I001
from convscope.explain.cam import GradCAM, GuidedGradCAM, default_cam_layer  # noqa: E402
from convscope.explain.occlusion import Occlusion, default_window  # noqa: E402
from convscope.explain.integrated import IntegratedGradients  # noqa: E402
from convscope.explain.smooth import SmoothGrad  # noqa: E402

#: method name → class, a live view of the registry (registered methods appear here).
METHODS = MethodsView()


def explain(model: nn.Module, inputs: torch.Tensor, method: str, target: TargetLike = None, **options: Any) -> Explanation:
    """Run one registered method and return an :class:`Explanation`.

    Args:
        model: the network.
        inputs: ``(N, C, H, W)`` model inputs.
        method: a registered method name (:func:`method_names`).
        target: class / class name / map / unit (``None`` = predicted class).
        **options: the method's options (``layer``, ``keep``, ``window``, ``stride``,
            ``baseline``, ``steps``, ``samples``, ``noise_level``, ``seed``, ``base`` …;
            :meth:`MethodInfo.options` lists a method's).

    Raises:
        ValueError: unknown method or option, bad target (``AddressError``).
    """
    explainer, rest = make_method(model, method, **options)
    checked = explainer._check_inputs(inputs)
    resolved = explainer._target(checked, target)
    attributions, details = explainer.attribute_with_details(checked, Attribution._given(resolved), **rest)
    return Explanation(
        method=method,
        attributions=attributions,
        target=resolved.describe(),
        signed=explainer.signed,
        delta=details.get("delta"),
        params={"title": explainer.title, **options},
        details=details,
    )


__all__ = [
    "BASELINES", "METHODS", "RULES", "Attribution", "Deconvnet", "Explanation", "GradCAM", "GuidedBackprop",
    "GuidedGradCAM", "IntegratedGradients", "MethodInfo", "Occlusion", "Saliency", "SmoothGrad", "Target",
    "default_cam_layer", "default_window", "explain", "make_method", "method_info", "method_names", "options_for",
    "register_method", "relu_rule", "resolve_baseline", "resolve_target", "sanity_methods", "smoothable_methods",
    "unregister_method",
]
