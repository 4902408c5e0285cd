"""Activations of any layers for uint8 images (reference §2).

Engine: tensors in, tensors out; no files, prints or plots. Draw the result with
:func:`convscope.render.inside.activation_grid_figure`.

Example::

    from convscope.inside import layer_activations
    acts = layer_activations(model, split.images[:100], ["Conv2D_1", "Dense_1"])
    acts["Conv2D_1"].shape   # (100, 32, 26, 26), post-ReLU, CPU float32 (Model A)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from convscope.address import LayerAddress, resolve_address
from convscope.inference import to_input
from convscope.probe import Probe


def _as_uint8_batch(images: np.ndarray | torch.Tensor, model: nn.Module | None = None) -> np.ndarray | torch.Tensor:
    """One image ``(H, W)`` / ``(H, W, 3)`` → a batch of one; batches unchanged."""
    from convscope.spec import SpecError, spec_of

    if images.ndim == 2:
        return images[None]
    if model is not None and images.ndim == 3:
        try:
            spec = spec_of(model)
        except SpecError:
            return images
        if not spec.is_gray and tuple(images.shape) in ((spec.height, spec.width, spec.channels), tuple(spec.input_shape)):
            return images[None]
    return images


@torch.no_grad()
def layer_activations(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    layers: Sequence[str | LayerAddress] | str | LayerAddress,
    *,
    batch_size: int = 500,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Outputs of ``layers`` for uint8 images, batched, on CPU.

    Args:
        model: the network (eval mode for the call, restored afterwards).
        images: uint8 images in any layout :func:`convscope.inference.to_input`
            takes — ``(N, H, W)`` gray, ``(N, H, W, 3)`` RGB, ``(N, C, H, W)`` — or
            one image ``(H, W)`` / ``(H, W, 3)``; preprocessed as the model's spec says.
        layers: layer names / addresses (``"Conv2D_3"``, ``"Dense_1"``, ``"probabilities"``);
            a map/unit part of an address is ignored here.
        batch_size: images per forward pass.
        progress: optional ``progress(done, total)`` callback.

    Returns:
        ``{layer: (N, C, H', W') or (N, F)}`` float32 CPU tensors in request order.
        The forward pass stops after the deepest requested layer.

    Raises:
        AddressError: unknown layer (lists the valid ones).
    """
    if isinstance(layers, (str, LayerAddress)):
        layers = [layers]
    names = list(dict.fromkeys(resolve_address(model, layer).layer for layer in layers))
    images = _as_uint8_batch(images, model)
    was_training = model.training
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    try:
        total = len(images)
        with Probe(model, names, detach=True) as probe:
            for start in range(0, total, batch_size):
                batch = to_input(model, images[start : start + batch_size])
                for name, output in probe.run(batch).items():
                    chunks[name].append(output.float().cpu())
                if progress is not None:
                    progress(min(start + batch_size, total), total)
    finally:
        model.train(was_training)
    return {name: torch.cat(parts) if parts else torch.zeros(0) for name, parts in chunks.items()}


@dataclass(frozen=True)
class ImageActivations:
    """One image's activations of one layer, with the model's verdict.

    Attributes:
        layer: layer name.
        values: ``(C, H, W)`` for conv/pool layers, ``(F,)`` for dense layers (post-ReLU
            where the layer has a ReLU), float32 CPU.
        image: the uint8 input, ``(H, W)`` or ``(H, W, 3)``.
        probabilities: ``(classes,)`` softmax of the logits.
    """

    layer: str
    values: torch.Tensor
    image: np.ndarray
    probabilities: torch.Tensor

    @property
    def predicted(self) -> int:
        return int(self.probabilities.argmax())

    @property
    def is_dense(self) -> bool:
        return self.values.ndim == 1


def image_activations(model: nn.Module, image: np.ndarray | torch.Tensor, layer: str | LayerAddress) -> ImageActivations:
    """All maps (or nodes) of ``layer`` for one uint8 image (``(H, W)`` or ``(H, W, 3)``), plus its probabilities.

    One forward pass captures the layer and the probabilities together.
    """
    name = resolve_address(model, layer).layer
    outputs = layer_activations(model, image, [name, "probabilities"], batch_size=1)
    return ImageActivations(
        layer=name,
        values=outputs[name][0],
        image=np.asarray(image, dtype=np.uint8),
        probabilities=outputs["probabilities"][0],
    )


def reference_scaling(values: torch.Tensor, *, eps: float = 1e-7) -> torch.Tensor:
    """The reference's display option B: per map, standardise (mean 0, std 1), then
    ×64 + 128 and clip to 0..255.

    Args:
        values: ``(C, H, W)`` maps (or ``(N, C, H, W)``); dense ``(F,)`` vectors are
            standardised as one map.

    Returns:
        Same shape, float32 in 0..255. A constant map (e.g. a dead map, all 0) becomes 128.
    """
    values = values.float()
    if values.ndim <= 1:
        flat = values.reshape(1, -1)
    else:
        flat = values.reshape(*values.shape[:-2], -1)
    mean = flat.mean(dim=-1, keepdim=True)
    std = flat.std(dim=-1, keepdim=True, unbiased=False)
    scaled = ((flat - mean) / (std + eps)) * 64.0 + 128.0
    return scaled.clamp(0.0, 255.0).reshape(values.shape)


