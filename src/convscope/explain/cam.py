"""Grad-CAM (Selvaraju et al. 2017) on any conv layer, and guided Grad-CAM.

Example::

    cam = GradCAM(model).attribute(x, target=4)                  # the last conv layer with maps
    coarse = GradCAM(model, "Conv2D_2").attribute(x, 4, upsample=False)    # (N, 1, 11, 11)
    GuidedGradCAM(model, "stages.1").attribute(x, target="Sandal")

The default layer is :func:`default_cam_layer`: the last layer, in the order the
forward pass produces outputs, that is (or contains) a convolution and outputs
maps ``(N, C, H, W)`` — ``Conv2D_3`` for the reference models, a residual block
for a ResNet.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn

from convscope.address import PSEUDO_LAYERS, AddressError, layer_output_shapes, resolve_address
from convscope.explain.base import Attribution, TargetLike, _spec, eval_mode, target_scores
from convscope.explain.gradients import GuidedBackprop
from convscope.explain.registry import register_method

_CAM_LAYERS: "weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], str]]" = weakref.WeakKeyDictionary()


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(sub, nn.modules.conv._ConvNd) for sub in module.modules())


def default_cam_layer(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> str:
    """The model's last conv layer with maps: the last module whose output (first
    call, one forward pass on zeros) is ``(N, C, H, W)`` and that is or contains a
    convolution; one whose maps are larger than 1×1 is preferred.

    Args:
        model: the network.
        input_shape: ``(C, H, W)`` of one input (default: the model spec's).

    Raises:
        AddressError: the model has no such layer, or no input shape is known.
    """
    from convscope.probe import reached_outputs

    if input_shape is None:
        spec = _spec(model)
        if spec is None:
            raise AddressError("Grad-CAM needs a layer name (the model has no spec to find its last conv layer)")
        input_shape = spec.input_shape
    key = tuple(int(v) for v in input_shape)
    cached = _CAM_LAYERS.get(model, {}).get(key)
    if cached is not None:
        return cached
    try:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    with eval_mode(model):
        outputs = reached_outputs(model, torch.zeros((1, *key), device=device, dtype=dtype))
    modules = dict(model.named_modules())
    candidates = [name for name, out in outputs.items()
                  if name in modules and out.ndim == 4 and _has_conv(modules[name])]
    if not candidates:
        raise AddressError("the model has no conv layer with maps (N, C, H, W), so Grad-CAM has nothing to weigh")
    spatial = [name for name in candidates if outputs[name].shape[-2] * outputs[name].shape[-1] > 1]
    layer = (spatial or candidates)[-1]
    try:
        _CAM_LAYERS.setdefault(model, {})[key] = layer
    except TypeError:  # not weakly referenceable: no cache
        pass
    return layer


@register_method("gradcam", summary="Grad-CAM on --layer (default: the last conv layer with maps)", sanity=True)
class GradCAM(Attribution):
    """Grad-CAM: the layer's maps weighted by the spatial mean of the target's
    gradient with respect to them, summed over maps (then ReLU).

    Args:
        model: the network.
        layer: a layer with spatial output ``(N, C, H, W)``, e.g. ``"Conv2D_3"``;
            ``None`` = :func:`default_cam_layer` (found from the model's spec, or
            from the first inputs when the model has no spec).
    """

    title = "Grad-CAM"
    signed = False

    def __init__(self, model: nn.Module, layer: str | None = None) -> None:
        super().__init__(model)
        self._layer: str | None = None
        if layer is not None:
            self._set_layer(self._check_layer(layer))
        elif _spec(model) is not None:
            self._set_layer(default_cam_layer(model))

    def _set_layer(self, layer: str) -> None:
        self._layer = layer
        self.title = f"Grad-CAM ({layer})"

    def _check_layer(self, layer: str) -> str:
        address = resolve_address(self.model, layer)
        if address.map_index is not None or address.layer in PSEUDO_LAYERS:
            raise AddressError(f"Grad-CAM needs a whole conv layer such as 'Conv2D_3'; got {layer!r}")
        spec = _spec(self.model)
        if spec is not None:  # refuse a layer without maps now, before any work
            shape = layer_output_shapes(self.model).get(address.layer)
            if shape is not None and len(shape) != 3:
                raise AddressError(
                    f"Grad-CAM needs a layer with maps (C, H, W); {address.layer} gives {tuple(shape)} per input "
                    f"(the model's last conv layer with maps is {default_cam_layer(self.model)})"
                )
        return address.layer

    @property
    def layer(self) -> str | None:
        """The layer whose maps are weighted (``None`` until known for a model without spec)."""
        return self._layer

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
        if self._layer is None:
            self._set_layer(default_cam_layer(self.model, tuple(inputs.shape[1:])))
        resolved = self._target(inputs, target)
        x = inputs.detach().clone().requires_grad_(True)
        with eval_mode(self.model):
            score, outputs = target_scores(self.model, x, resolved, also=[self._layer])
            acts = outputs[self._layer]
            if acts.ndim != 4:
                raise AddressError(f"Grad-CAM needs a layer with maps (N, C, H, W); {self._layer} gives {tuple(acts.shape)}")
            (grads,) = torch.autograd.grad(score.sum(), acts, allow_unused=True)
        if grads is None:
            raise AddressError(f"target {resolved.describe()} does not depend on Grad-CAM layer {self._layer}; "
                               "choose a target in a later layer or a class")
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = (weights * acts.detach()).sum(dim=1, keepdim=True)
        if relu:
            cam = torch.relu(cam)
        if upsample:
            kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
            cam = F.interpolate(cam, size=inputs.shape[-2:], mode=mode, **kwargs)
        return cam


@register_method("ggradcam", summary="guided backprop × Grad-CAM on --layer")
class GuidedGradCAM(Attribution):
    """Guided Grad-CAM: guided backprop multiplied pixel-wise by the upsampled Grad-CAM
    (the same map for every input channel)."""

    title = "guided Grad-CAM"
    signed = True
    gradient_based = True

    def __init__(self, model: nn.Module, layer: str | None = None) -> None:
        super().__init__(model)
        self.gradcam = GradCAM(model, layer)
        self.guided = GuidedBackprop(model)
        if self.gradcam.layer is not None:
            self.title = f"guided Grad-CAM ({self.gradcam.layer})"

    @property
    def layer(self) -> str | None:
        return self.gradcam.layer

    def attribute(self, inputs: torch.Tensor, target: TargetLike = None, *, mode: str = "bilinear") -> torch.Tensor:
        """``(N, C, H, W)``: guided backprop × Grad-CAM (upsampled with ``mode``)."""
        inputs = self._check_inputs(inputs)
        given = self._given(self._target(inputs, target))
        cam = self.gradcam.attribute(inputs, given, relu=True, upsample=True, mode=mode)
        self.title = f"guided Grad-CAM ({self.layer})"
        return self.guided.attribute(inputs, given) * cam
