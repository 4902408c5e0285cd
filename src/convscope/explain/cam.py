"""Grad-CAM (Selvaraju et al. 2017) on any conv layer, and guided Grad-CAM.

Example::

    cam = GradCAM(model, layer="Conv2D_3").attribute(x, target=4)            # (N, 1, 28, 28)
    coarse = GradCAM(model, "Conv2D_2").attribute(x, 4, upsample=False)    # (N, 1, 11, 11)
    GuidedGradCAM(model).attribute(x, target=4)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convscope.address import PSEUDO_LAYERS, AddressError, resolve_address
from convscope.explain.base import Attribution, TargetLike, eval_mode, forward_to, target_values
from convscope.explain.gradients import GuidedBackprop


class GradCAM(Attribution):
    """Grad-CAM: the layer's maps weighted by the spatial mean of the target's
    gradient with respect to them, summed over maps (then ReLU).

    Args:
        model: the network.
        layer: a layer with spatial output ``(N, C, H, W)``, e.g. ``"Conv2D_3"``.
    """

    name = "gradcam"
    title = "Grad-CAM"
    signed = False

    def __init__(self, model: nn.Module, layer: str = "Conv2D_3") -> None:
        super().__init__(model)
        address = resolve_address(model, layer)
        if address.map_index is not None or address.layer in PSEUDO_LAYERS:
            raise AddressError(f"Grad-CAM needs a whole conv layer such as 'Conv2D_3'; got {layer!r}")
        self.layer = address.layer
        self.title = f"Grad-CAM ({self.layer})"

    def attribute(
        self,
        inputs: torch.Tensor,
        target: TargetLike = None,
        *,
        relu: bool = True,
        upsample: bool = True,
        mode: str = "bilinear",
    ) -> torch.Tensor:
        """Args:
            inputs: model inputs ``(N, C, H, W)``.
            target: class (default: predicted), or a map/unit address of a later layer.
            relu: keep only positive evidence (the paper's choice).
            upsample: interpolate to the input size (else the layer's ``H×W``).
            mode: interpolation mode (``"bilinear"``, ``"nearest"``).

        Returns:
            ``(N, 1, H_in, W_in)`` or ``(N, 1, H, W)`` class activation maps.
        """
        inputs = self._check_inputs(inputs)
        resolved = self._target(inputs, target)
        target_layer = self._layer_for(resolved)
        x = inputs.detach().clone().requires_grad_(True)
        with eval_mode(self.model):
            layers = [self.layer] if target_layer == self.layer else [self.layer, target_layer]
            outputs = forward_to(self.model, x, layers)
            acts = outputs[self.layer]
            if acts.ndim != 4:
                raise AddressError(f"Grad-CAM needs a layer with maps (N, C, H, W); {self.layer} gives {tuple(acts.shape)}")
            out = outputs[target_layer]
            if resolved.address.layer == "probabilities":
                out = torch.softmax(out, dim=1)
            score = target_values(out, resolved)
            (grads,) = torch.autograd.grad(score.sum(), acts, allow_unused=True)
        if grads is None:
            raise AddressError(f"target {resolved.describe()} does not depend on Grad-CAM layer {self.layer}; "
                               "choose a target in a later layer or a class")
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = (weights * acts.detach()).sum(dim=1, keepdim=True)
        if relu:
            cam = torch.relu(cam)
        if upsample:
            kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
            cam = F.interpolate(cam, size=inputs.shape[-2:], mode=mode, **kwargs)
        return cam


class GuidedGradCAM(Attribution):
    """Guided Grad-CAM: guided backprop multiplied pixel-wise by the upsampled Grad-CAM."""

    name = "ggradcam"
    title = "guided Grad-CAM"
    signed = True
    gradient_based = True

    def __init__(self, model: nn.Module, layer: str = "Conv2D_3") -> None:
        super().__init__(model)
        self.gradcam = GradCAM(model, layer)
        self.guided = GuidedBackprop(model)
        self.layer = self.gradcam.layer
        self.title = f"guided Grad-CAM ({self.layer})"

    def attribute(self, inputs: torch.Tensor, target: TargetLike = None, *, mode: str = "bilinear") -> torch.Tensor:
        """``(N, C, H, W)``: guided backprop × Grad-CAM (upsampled with ``mode``)."""
        inputs = self._check_inputs(inputs)
        resolved = self._target(inputs, target)
        target = resolved.classes if resolved.classes is not None else str(resolved.address)
        cam = self.gradcam.attribute(inputs, target, relu=True, upsample=True, mode=mode)
        return self.guided.attribute(inputs, target) * cam
