"""The one mechanism that captures layer outputs: forward hooks, always removed.

Every engine that needs a layer's output asks a :class:`Probe`::

    with Probe(model, ["Conv2D_3", "Dense_1"]) as probe:
        outputs = probe.run(images)          # {"Conv2D_3": (N,128,3,3), "Dense_1": (N,100)}

or, in one call, :func:`capture`. With ``stop_early=True`` (the default) the forward
pass is cut off as soon as every requested layer has produced its output, so no
later layer is computed. Outputs keep their autograd graph unless ``detach=True``,
so objectives can be differentiated with respect to the input.

The rules, for any ``nn.Module``:

* **The value as produced.** A captured output is the module's output at the
  moment the module returned it. If a later in-place operation (``nn.ReLU(inplace=
  True)``, ``x += …``) changes that tensor, the probe notices (PyTorch's version
  counter), runs the forward pass once more and keeps a copy of that layer from
  then on — so what you get never depends on what else was requested.
* **The first call.** A module called more than once in one forward pass (a ReLU
  module reused in several places) is captured at its *first* call.
* **Containers** that are never called themselves (``nn.ModuleDict``,
  ``nn.ModuleList``) cannot be captured: address their members (``block.conv1``).
* **Model outputs.** ``logits`` is the model's output — a tensor, the first element
  of a tuple/list, or a dict's ``"logits"``; ``probabilities`` is its softmax,
  computed only when asked for.
* **Early stop** uses an exception derived from ``BaseException``, so a
  ``try/except Exception`` inside a model's ``forward`` does not swallow it.
* **Threads.** Two probes may run at once on one model in two threads: each only
  sees the forward passes of the thread that runs it. Hooks are installed once per
  module while any probe uses it (one dispatcher hook, reference-counted) and
  removed when the last probe leaves.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from convscope.naming import PSEUDO_LAYERS, AddressError, LayerAddress, canonical_layer, find_module, parse_address
from convscope.spec import model_output


class _ForwardStopped(BaseException):
    """Raised inside a hook to cut the forward pass short (never escapes the probe).

    A ``BaseException`` so that a model's own ``except Exception`` cannot swallow it."""


# ---------------------------------------------------------------------------
# One dispatcher hook per module, shared by every probe in every thread.
# ---------------------------------------------------------------------------
Listener = Callable[[nn.Module, Any], None]


class _Dispatcher:
    """A forward hook on one module that calls the listeners registered by the
    current thread's probes."""

    def __init__(self, module: nn.Module) -> None:
        self.listeners: dict[int, list[Listener]] = {}
        self.count = 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, module: nn.Module, _inputs: Any, output: Any) -> None:
        listeners = self.listeners.get(threading.get_ident())
        if listeners:
            for listener in tuple(listeners):
                listener(module, output)


_DISPATCH_LOCK = threading.Lock()
_DISPATCHERS: "weakref.WeakKeyDictionary[nn.Module, _Dispatcher]" = weakref.WeakKeyDictionary()


def _listen(module: nn.Module, listener: Listener) -> None:
    with _DISPATCH_LOCK:
        dispatcher = _DISPATCHERS.get(module)
        if dispatcher is None:
            dispatcher = _DISPATCHERS[module] = _Dispatcher(module)
        dispatcher.listeners.setdefault(threading.get_ident(), []).append(listener)
        dispatcher.count += 1


def _unlisten(module: nn.Module, listener: Listener, thread: int) -> None:
    with _DISPATCH_LOCK:
        dispatcher = _DISPATCHERS.get(module)
        if dispatcher is None:
            return
        listeners = dispatcher.listeners.get(thread, [])
        if listener in listeners:
            listeners.remove(listener)
            dispatcher.count -= 1
        if not listeners:
            dispatcher.listeners.pop(thread, None)
        if dispatcher.count <= 0:
            dispatcher.handle.remove()
            del _DISPATCHERS[module]


def active_hooks(model: nn.Module) -> int:
    """Number of modules of ``model`` that currently carry a probe hook (0 when no
    probe is active — used by tests to check that hooks are always removed)."""
    with _DISPATCH_LOCK:
        return sum(1 for module in model.modules() if module in _DISPATCHERS)


def _version(tensor: torch.Tensor) -> int | None:
    try:
        return tensor._version
    except RuntimeError:  # inference-mode tensors have no version counter
        return None


class Probe:
    """Capture the outputs of named layers for a batch.

    Args:
        model: any ``nn.Module``; layers are named as in ``model.named_modules()``
            (dotted for submodules), by an alias of the model's spec, or by the
            pseudo-layers ``"logits"`` (the model's output) and ``"probabilities"``
            (its softmax over dim 1).
        layers: layer names or addresses (a map/unit part is ignored: the whole
            layer is captured).
        stop_early: stop the forward pass once all requested module outputs exist.
            Ignored when a pseudo-layer is requested (they need the full pass).
        detach: detach captured tensors from the autograd graph.

    Hooks are registered on ``__enter__`` and removed on ``__exit__`` — also when the
    forward pass raises. Results are keyed by the names as requested.
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
        self._canonical = {name: canonical_layer(model, name) for name in self.layers}
        self._module_layers = [name for name in self.layers if self._canonical[name] not in PSEUDO_LAYERS]
        self._modules: dict[str, nn.Module] = {}
        for name in self._module_layers:
            module = find_module(model, self._canonical[name])
            if isinstance(module, (nn.ModuleDict, nn.ModuleList, nn.ParameterDict, nn.ParameterList)):
                members = [f"{self._canonical[name]}.{child}" for child, _ in list(module.named_children())[:6]]
                raise AddressError(
                    f"{name!r} is a container ({type(module).__name__}) that the model never calls itself, so it has no "
                    f"output; address one of its members, e.g. {', '.join(repr(m) for m in members) or 'a submodule'}"
                )
            self._modules[name] = module
        # one module may be requested under two names (an alias and its target)
        self._names_of: dict[int, list[str]] = {}
        for name, module in self._modules.items():
            self._names_of.setdefault(id(module), []).append(name)
        self.stop_early = stop_early and len(self._module_layers) == len(self.layers)
        self.detach = detach
        self._listeners: list[tuple[nn.Module, Listener, int]] = []
        self._outputs: dict[str, torch.Tensor] = {}
        self._versions: dict[str, int | None] = {}
        self._copy: set[str] = set()  # layers whose output a later in-place op changes
        self._running = False

    # -- hook lifecycle -------------------------------------------------
    def __enter__(self) -> "Probe":
        thread = threading.get_ident()
        try:
            for module in {id(m): m for m in self._modules.values()}.values():
                listener = self._make_listener()
                _listen(module, listener)
                self._listeners.append((module, listener, thread))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this probe registered (safe to call twice)."""
        for module, listener, thread in self._listeners:
            _unlisten(module, listener, thread)
        self._listeners.clear()

    def _make_listener(self) -> Listener:
        def listener(module: nn.Module, output: Any) -> None:
            if not self._running:
                return
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            if not isinstance(tensor, torch.Tensor):
                return
            for name in self._names_of.get(id(module), ()):
                if name in self._outputs:
                    continue  # a module called again: the first call is captured
                value = tensor.detach() if self.detach else tensor
                version = _version(value)
                if name in self._copy or version is None:
                    value = value.clone()
                    version = _version(value)
                self._outputs[name] = value
                self._versions[name] = version
            if self.stop_early and len(self._outputs) == len(self._module_layers):
                raise _ForwardStopped

        return listener

    # -- running ---------------------------------------------------------
    def _forward(self, inputs: torch.Tensor) -> tuple[dict[str, torch.Tensor], Any]:
        self._outputs, self._versions = {}, {}
        result: Any = None
        self._running = True
        try:
            result = self.model(inputs)
        except _ForwardStopped:
            pass
        finally:
            self._running = False
        outputs = self._outputs
        self._outputs = {}
        return outputs, result

    def _changed_in_place(self, outputs: dict[str, torch.Tensor]) -> list[str]:
        return [
            name for name, value in outputs.items()
            if name not in self._copy and self._versions.get(name) is not None and _version(value) != self._versions[name]
        ]

    def run(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run ``model(inputs)`` and return ``{layer: output}`` in request order.

        Shapes are the layers' own, with the batch first: ``(N, C, H, W)`` for conv
        and pool layers, ``(N, F)`` for dense layers and the pseudo-layers.

        Raises:
            RuntimeError: a requested layer was never reached by ``forward``.
        """
        if not self._listeners and self._modules:
            raise RuntimeError("use the Probe as a context manager: `with Probe(model, layers) as probe:`")
        outputs, result = self._forward(inputs)
        changed = self._changed_in_place(outputs)
        if changed:
            # an in-place op overwrote a captured value: run again, keeping copies
            self._copy.update(changed)
            outputs, result = self._forward(inputs)
        pseudo = [name for name in self.layers if self._canonical[name] in PSEUDO_LAYERS]
        if pseudo:
            logits = model_output(result)
            if self.detach:
                logits = logits.detach()
            for name in pseudo:
                outputs[name] = logits if self._canonical[name] == "logits" else torch.softmax(logits, dim=1)
        missing = [name for name in self.layers if name not in outputs]
        if missing:
            raise RuntimeError(
                f"layers {missing} were not reached by the model's forward pass (a module that only holds others "
                "is never called itself: address one of its members)"
            )
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


def reached_outputs(model: nn.Module, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every module's first output for ``inputs`` (detached, no early stop), keyed
    by dotted name, plus ``logits``/``probabilities``. Modules the forward pass
    never calls (containers, unused layers) are absent. For shape discovery."""
    names = [name for name, module in model.named_modules() if name]
    captured: dict[str, torch.Tensor] = {}
    thread = threading.get_ident()
    registered: list[tuple[nn.Module, Listener]] = []

    def listener_for(name: str) -> Listener:
        def listener(_module: nn.Module, output: Any) -> None:
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(tensor, torch.Tensor) and name not in captured:
                captured[name] = tensor.detach().clone()

        return listener

    modules = dict(model.named_modules())
    try:
        for name in names:
            listener = listener_for(name)
            _listen(modules[name], listener)
            registered.append((modules[name], listener))
        with torch.no_grad():
            logits = model_output(model(inputs)).detach()
    finally:
        for module, listener in registered:
            _unlisten(module, listener, thread)
    captured["logits"] = logits
    captured["probabilities"] = torch.softmax(logits, dim=1)
    return captured


__all__ = ["Probe", "active_hooks", "capture", "optional_probe", "reached_outputs", "select"]
