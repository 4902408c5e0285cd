"""The one mechanism that captures layer outputs: forward hooks, always removed.

Every engine that needs a layer's output asks a :class:`Probe`::

    with Probe(model, ["Conv2D_3", "Dense_1"]) as probe:
        outputs = probe.run(images)          # {"Conv2D_3": (N,128,3,3), "Dense_1": (N,100)}

or, in one call, :func:`capture`. With ``stop_early=True`` (the default) the forward
pass is cut off as soon as every requested layer has produced its output, so no
later layer is computed. Outputs keep their autograd graph unless ``detach=True``,
so objectives can be differentiated with respect to the input.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from convscope.address import PSEUDO_LAYERS, LayerAddress, find_module, parse_address


class _ForwardStopped(Exception):
    """Raised inside a hook to cut the forward pass short (never escapes the probe)."""


class Probe:
    """Capture the outputs of named layers for a batch.

    Args:
        model: any ``nn.Module``; layers are named as in ``model.named_modules()``
            (dotted for submodules), or the pseudo-layers ``"logits"`` (the model's
            output) and ``"probabilities"`` (its softmax over dim 1).
        layers: layer names or addresses (a map/unit part is ignored: the whole
            layer is captured).
        stop_early: stop the forward pass once all requested module outputs exist.
            Ignored when a pseudo-layer is requested (they need the full pass).
        detach: detach captured tensors from the autograd graph.

    Hooks are registered on ``__enter__`` and removed on ``__exit__`` — also when the
    forward pass raises.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Iterable[str | LayerAddress],
        *,
        stop_early: bool = True,
        detach: bool = False,
    ) -> None:
        self.model = model
        names = [parse_address(layer).layer for layer in layers]
        self.layers: list[str] = list(dict.fromkeys(names))
        if not self.layers:
            raise ValueError("Probe needs at least one layer name")
        self._module_layers = [name for name in self.layers if name not in PSEUDO_LAYERS]
        self._modules = {name: find_module(model, name) for name in self._module_layers}
        self.stop_early = stop_early and len(self._module_layers) == len(self.layers)
        self.detach = detach
        self._handles: list[Any] = []
        self._outputs: dict[str, torch.Tensor] = {}

    # -- hook lifecycle -------------------------------------------------
    def __enter__(self) -> "Probe":
        try:
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this probe registered (safe to call twice)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _make_hook(self, name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            self._outputs[name] = tensor.detach() if self.detach else tensor
            if self.stop_early and len(self._outputs) == len(self._module_layers):
                raise _ForwardStopped

        return hook

    # -- running ---------------------------------------------------------
    def run(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run ``model(inputs)`` and return ``{layer: output}`` in request order.

        Shapes are the layers' own, with the batch first: ``(N, C, H, W)`` for conv
        and pool layers, ``(N, F)`` for dense layers and the pseudo-layers.

        Raises:
            RuntimeError: a requested layer was never reached by ``forward``.
        """
        if not self._handles and self._modules:
            raise RuntimeError("use the Probe as a context manager: `with Probe(model, layers) as probe:`")
        self._outputs = {}
        logits: torch.Tensor | None = None
        try:
            logits = self.model(inputs)
        except _ForwardStopped:
            pass
        outputs = dict(self._outputs)
        self._outputs = {}
        if logits is not None:
            if self.detach:
                logits = logits.detach()
            outputs["logits"] = logits
            outputs["probabilities"] = torch.softmax(logits, dim=1)
        missing = [name for name in self.layers if name not in outputs]
        if missing:
            raise RuntimeError(f"layers {missing} were not reached by the model's forward pass")
        return {name: outputs[name] for name in self.layers}


class _NoLayers:
    """What :func:`optional_probe` gives when nothing is to be captured: runs
    nothing, returns ``{}`` (objectives that read only the image)."""

    def __enter__(self) -> "_NoLayers":
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def run(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}


def optional_probe(model: nn.Module, layers: Sequence[str | LayerAddress], **options: Any) -> "Probe | _NoLayers":
    """A :class:`Probe` for ``layers``, or — when ``layers`` is empty — a stand-in
    whose ``run`` returns ``{}`` without running the model. Use as a context manager."""
    return Probe(model, layers, **options) if len(layers) else _NoLayers()


def capture(
    model: nn.Module,
    inputs: torch.Tensor,
    layers: Sequence[str | LayerAddress] | str | LayerAddress,
    *,
    stop_early: bool = True,
    detach: bool = False,
) -> dict[str, torch.Tensor]:
    """One-shot :class:`Probe`: ``capture(model, x, ["Conv2D_3"])["Conv2D_3"]``."""
    if isinstance(layers, (str, LayerAddress)):
        layers = [layers]
    with Probe(model, layers, stop_early=stop_early, detach=detach) as probe:
        return probe.run(inputs)


def select(output: torch.Tensor, address: LayerAddress) -> torch.Tensor:
    """Pick the addressed part of a captured layer output.

    Args:
        output: ``(N, C, H, W)`` or ``(N, F)`` layer output.
        address: parsed address; its map and unit parts select.

    Returns:
        ``output`` itself for a whole layer, ``(N, H, W)`` / ``(N,)`` for a map or
        node, ``(N,)`` for a unit.
    """
    if address.map_index is None:
        return output
    selected = output[:, address.map_index]
    if address.position is not None:
        selected = selected[:, address.position[0], address.position[1]]
    return selected
