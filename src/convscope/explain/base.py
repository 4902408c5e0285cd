"""Shared mechanics of the attribution methods: targets, the rectifier rules and
the base class.

Targets
    ``int`` (or one int per sample): a class logit. A class name of the model's
    spec (``"Sandal"``). A layer address string: ``"Conv2D_3:56"`` (a map: its
    mean activation), ``"Conv2D_3:56@1,1"`` (one unit), ``"Dense_1:42"`` (a node),
    ``"logits:4"`` / ``"probabilities:4"``. ``None``: the class the model predicts
    for each input.

Rectifier rules
    Deconvnet and guided backpropagation differ from the plain gradient only in
    what the backward pass does at each ReLU. :func:`relu_rule` intercepts *every*
    ReLU call made during a forward pass — ``nn.ReLU`` modules, ``F.relu``,
    ``torch.relu``, ``Tensor.relu`` and their in-place forms — through a
    :class:`torch.overrides.TorchFunctionMode`, and replaces it with an autograd
    function whose backward applies the rule:

    ============  ==========================================
    ``plain``     ``grad_out * (input > 0)`` (the true gradient)
    ``deconvnet`` ``relu(grad_out)`` (Zeiler & Fergus)
    ``guided``    ``relu(grad_out) * (input > 0)`` (Springenberg et al.)
    ============  ==========================================

    Max-pool switches and transposed convolutions come from autograd itself, so
    the result is exact for any max-pool + conv + ReLU network. Nothing about the
    model is patched; the mode is popped in ``finally``. Other rectifiers
    (``clamp(min=0)``, ``relu6``, ``leaky_relu``, ``gelu``) are not ReLU calls and
    keep their true gradient.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from convscope.address import PSEUDO_LAYERS, AddressError, LayerAddress, resolve_address
from convscope.probe import Probe, select
from convscope.spec import SPEC_ATTRIBUTE, ModelSpec, model_output

RULES = ("plain", "deconvnet", "guided")

# -- the rectifier rules ----------------------------------------------------------


class _RuleReLU(torch.autograd.Function):
    """ReLU forward; backward according to ``rule``. Like autograd's own ReLU it
    keeps its output (not a mask) for the backward pass: no extra memory or pass."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, rule: str) -> torch.Tensor:  # type: ignore[override]
        out = torch.relu(x)
        ctx.rule = rule
        if rule != "deconvnet":
            ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        if ctx.rule == "deconvnet":
            return torch.relu(grad_out), None
        (out,) = ctx.saved_tensors
        # threshold_backward(g, out, 0) = g * (out > 0) = g * (input > 0): the native ReLU backward
        grad = torch.ops.aten.threshold_backward(grad_out, out, 0)
        if ctx.rule == "guided":
            return torch.relu_(grad), None
        return grad, None


_OUT_OF_PLACE = {torch.relu, F.relu, torch.Tensor.relu}
_IN_PLACE = {torch.relu_, F.relu_, torch.Tensor.relu_}


class _ReLURuleMode(TorchFunctionMode):
    """Replaces every ReLU call during a forward pass by :class:`_RuleReLU`."""

    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        in_place = func in _IN_PLACE or (func is F.relu and bool(kwargs.get("inplace", args[1] if len(args) > 1 else False)))
        if (func in _OUT_OF_PLACE or in_place) and torch.is_grad_enabled():
            x = args[0] if args else kwargs["input"]
            self.calls += 1
            out = _RuleReLU.apply(x, self.rule)
            if in_place:
                # keep in-place semantics for callers that ignore the return value;
                # the copy routes the gradient through ``out`` (and so through the rule)
                x.copy_(out)
                return x
            return out
        return func(*args, **kwargs)


@contextlib.contextmanager
def relu_rule(rule: str | None) -> Iterator[_ReLURuleMode | None]:
    """Apply a rectifier rule to every ReLU called inside the ``with`` block.

    Args:
        rule: ``"plain"``, ``"deconvnet"``, ``"guided"``, or ``None`` (no
            interception at all: autograd's own ReLU backward, same as ``plain``).

    Yields:
        The active mode (``mode.calls`` counts the ReLUs it replaced) or ``None``.
    """
    if rule is None:
        yield None
        return
    if rule not in RULES:
        raise ValueError(f"unknown rectifier rule {rule!r}; use one of {RULES}")
    mode = _ReLURuleMode(rule)
    with mode:  # TorchFunctionMode.__exit__ pops the mode, also on error
        yield mode


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore its training flag."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


# -- targets -------------------------------------------------------------------------

TargetLike = int | str | LayerAddress | Sequence[int] | torch.Tensor | None


@dataclass(frozen=True)
class Target:
    """A resolved attribution target.

    Attributes:
        address: the layer part (``logits`` for classes).
        classes: ``(N,)`` class index per sample for class targets, else ``None``.
    """

    address: LayerAddress
    classes: torch.Tensor | None = None

    @property
    def is_class(self) -> bool:
        return self.classes is not None

    def describe(self) -> str | list[int]:
        if self.classes is not None:
            values = [int(v) for v in self.classes]
            return values[0] if len(set(values)) == 1 else values
        return str(self.address)


def _spec(model: nn.Module) -> ModelSpec | None:
    spec = getattr(model, SPEC_ATTRIBUTE, None)
    return spec if isinstance(spec, ModelSpec) else None


def class_index(model: nn.Module, text: str) -> int | None:
    """The class called ``text`` in the model's spec (exact name first, then a
    unique case-insensitive match), or ``None``."""
    spec = _spec(model)
    if spec is None:
        return None
    names = list(spec.class_names)
    if text in names:
        return names.index(text)
    folded = [i for i, name in enumerate(names) if name.casefold() == text.casefold()]
    return folded[0] if len(folded) == 1 else None


def resolve_target(
    model: nn.Module, target: TargetLike, n: int, predicted: torch.Tensor | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> Target:
    """Turn a user target into a :class:`Target` for a batch of ``n`` inputs of
    ``input_shape`` ``(C, H, W)`` (default: the model spec's).

    Raises:
        AddressError: an address that does not exist, or names a whole layer.
        ValueError: class indices out of range, a wrong number of them, or text
            that is neither a class name nor a map/unit address.
    """
    if target is None:
        if predicted is None:
            raise ValueError("target=None needs the predicted classes")
        return Target(LayerAddress("logits"), predicted.long())
    if isinstance(target, (str, LayerAddress)):
        text = str(target).strip()
        if isinstance(target, str) and text.lstrip("-").isdigit():
            return resolve_target(model, int(text), n, input_shape=input_shape)
        if isinstance(target, str):
            index = class_index(model, text)
            if index is not None:
                return resolve_target(model, index, n, input_shape=input_shape)
            if ":" not in text:
                raise _not_a_target(model, text)
        address = resolve_address(model, target, input_shape)
        if address.map_index is None:
            raise AddressError(
                f"target {text!r} names a whole layer; pick a map or unit, e.g. '{address.layer}:0' or a class"
            )
        if address.layer in PSEUDO_LAYERS and address.position is None:
            classes = _checked_classes(model, torch.full((n,), address.map_index), n)
            return Target(LayerAddress(address.layer), classes)
        return Target(address)
    return Target(LayerAddress("logits"), _checked_classes(model, target, n))


def _checked_classes(model: nn.Module, target: Any, n: int) -> torch.Tensor:
    if isinstance(target, bool) or (isinstance(target, float) and not float(target).is_integer()):
        raise ValueError(f"a class target must be a whole number or a class name; got {target!r}")
    classes = torch.as_tensor(target).reshape(-1)
    if classes.is_floating_point() or classes.dtype == torch.bool:
        if classes.dtype == torch.bool or not bool((classes == classes.round()).all()):
            raise ValueError(f"class targets must be whole numbers; got {classes.tolist()[:10]}")
    classes = classes.long()
    if classes.numel() == 1:
        classes = classes.expand(n).clone()
    if classes.numel() != n:
        raise ValueError(f"got {classes.numel()} class targets for {n} inputs; give one class or one per input")
    spec = _spec(model)
    n_classes = spec.num_classes if spec is not None else None
    if classes.numel() and classes.min() < 0:
        raise ValueError(f"class target must be 0..{(n_classes or 1) - 1}; got {classes.tolist()[:10]}")
    if n_classes is not None and classes.numel() and classes.max() >= n_classes:
        raise ValueError(f"class target must be 0..{n_classes - 1}; got {classes.tolist()[:10]}")
    return classes


def _not_a_target(model: nn.Module, text: str) -> ValueError:
    from convscope.address import layer_names

    shown = text if len(text) <= 60 else text[:60] + f"… ({len(text)} characters)"
    if text in dict(model.named_modules()) or text in layer_names(model):
        return AddressError(f"target {shown!r} names a whole layer; pick a map or unit, e.g. '{text}:0' or a class")
    spec = _spec(model)
    names = list(spec.class_names) if spec is not None else []
    numbers = f"a class number 0..{len(names) - 1}" if names else "a class number"
    if names and any(name != str(i) for i, name in enumerate(names)):
        listed = ", ".join(names[:12]) + (f", … ({len(names)} classes)" if len(names) > 12 else "")
        what = f"a class name ({listed}), {numbers}"
    else:
        what = numbers
    return AddressError(
        f"target {shown!r} is neither {what} nor a map/unit address such as 'LAYER:MAP' or 'LAYER:MAP@ROW,COL'"
    )


def forward_to(model: nn.Module, inputs: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Outputs (with graph) of ``layers`` for ``inputs`` via the project's Probe;
    the forward pass stops after the last one needed."""
    with Probe(model, list(layers), stop_early=True) as probe:
        return probe.run(inputs)


def target_values(output: torch.Tensor, target: Target) -> torch.Tensor:
    """Per-sample value ``(N,)`` of the target in a captured layer output: the
    class logit / node / unit, or the mean of a map."""
    if target.classes is not None:
        return output.gather(1, target.classes.to(output.device)[:, None])[:, 0]
    selected = select(output, target.address)
    return selected.reshape(selected.shape[0], -1).mean(dim=1)


def target_scores(
    model: nn.Module, inputs: torch.Tensor, target: Target, also: Sequence[str] = ()
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward ``inputs`` (keeping the graph) and return the target's value per
    sample ``(N,)`` and the outputs of the target layer and of the ``also`` layers.

    The one place every method turns a target into numbers: a class of
    ``"probabilities"`` is read from the softmax (the probe computes it), any other
    class from the logits, a map from its mean, a unit/node from its value.
    """
    layer = target.address.layer
    outputs = forward_to(model, inputs, [*also, layer] if layer not in also else list(also))
    return target_values(outputs[layer], target), outputs


@torch.no_grad()
def predicted_classes(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Arg-max class ``(N,)`` of the model's logits for ``inputs`` (a tuple or dict
    output is read as :func:`convscope.spec.model_output` says)."""
    with eval_mode(model):
        return model_output(model(inputs)).argmax(dim=1)


# -- baselines ("no information") ----------------------------------------------------

Baseline = float | str | torch.Tensor
BASELINES = ("min", "mean")


def resolve_baseline(inputs: torch.Tensor, baseline: Baseline) -> torch.Tensor:
    """A baseline broadcastable to ``inputs`` ``(N, C, H, W)``, per channel.

    ``baseline``: a number (the same model-input value everywhere), a tensor
    broadcastable to the inputs (e.g. ``(C, 1, 1)`` one value per channel),
    ``"min"`` — each image's minimum per channel (an MNIST digit's background
    after standardisation: "no ink"; the darkest value of each colour channel), or
    ``"mean"`` — each image's mean per channel (a flat patch of its average colour).

    Raises:
        ValueError: an unknown name or a value that is not finite.
    """
    if isinstance(baseline, str):
        per_channel = inputs.reshape(inputs.shape[0], inputs.shape[1], -1)
        if baseline == "min":
            values = per_channel.amin(dim=2)
        elif baseline == "mean":
            values = per_channel.mean(dim=2)
        else:
            raise ValueError(f"baseline must be a number, a tensor, 'min' or 'mean'; got {baseline!r}")
        return values.reshape(*values.shape, *([1] * (inputs.ndim - 2)))
    value = torch.as_tensor(baseline, dtype=inputs.dtype, device=inputs.device)
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"baseline must be finite; got {baseline!r}")
    return value


# -- the base class --------------------------------------------------------------------


def option_parameters(function: Any, skip: int) -> list[tuple[str, Any]]:
    """``(name, default)`` of the keyword options of ``function`` after its first
    ``skip`` parameters (``self``, the model / the inputs and target); ``return_*``
    switches and private names are not options."""
    import inspect

    parameters = list(inspect.signature(function).parameters.values())[skip:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [(p.name, None if p.default is inspect.Parameter.empty else p.default) for p in parameters
            if p.kind in kinds and not p.name.startswith(("_", "return_"))]


class Attribution:
    """Base class: one method, one verb, :meth:`attribute`.

    Subclasses set ``name`` (the CLI/JSON name; :func:`~convscope.explain.registry.register_method`
    sets it), ``title`` (for figures), ``signed`` (whether the map carries
    meaningful signs) and ``gradient_based`` (a backward-pass method: SmoothGrad
    may wrap it). Options are keyword arguments of ``__init__`` (after the model)
    and of :meth:`attribute` (after the target); the registry reads them from the
    signatures.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    signed: ClassVar[bool] = True
    gradient_based: ClassVar[bool] = False

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def attribute(self, inputs: torch.Tensor, target: TargetLike = None, **kwargs: Any) -> torch.Tensor:
        """Attribution maps ``(N, C, H, W)`` for model inputs ``(N, C, H, W)``."""
        raise NotImplementedError

    def attribute_with_details(
        self, inputs: torch.Tensor, target: TargetLike = None, **kwargs: Any
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`attribute` plus per-sample extras ``{name: (N,)}`` a method can
        report (integrated gradients: ``{"delta": ...}``); none by default."""
        return self.attribute(inputs, target, **kwargs), {}

    def used_options(self, input_shape: Sequence[int], **given: Any) -> dict[str, Any]:
        """Every option as it takes effect for inputs of ``input_shape`` ``(C, H, W)``:
        the constructor's (read back from the object) and ``attribute``'s (``given``,
        else the signature's default). Methods whose defaults depend on the input
        (occlusion's window) fill them in."""
        used: dict[str, Any] = {}
        for name, _ in option_parameters(type(self).__init__, skip=2):
            if hasattr(self, name):
                used[name] = getattr(self, name)
        for name, default in option_parameters(type(self).attribute, skip=3):
            used[name] = given.get(name, default)
        return used

    # shared helpers ---------------------------------------------------------
    def _check_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        if not isinstance(inputs, torch.Tensor):
            raise TypeError("inputs must be a float tensor (N, C, H, W); use convscope.inference.to_input(model, images)")
        if inputs.ndim == 3:
            inputs = inputs[None]
        if inputs.ndim != 4 or not inputs.is_floating_point():
            raise ValueError(f"inputs must be a float tensor (N, C, H, W); got {inputs.dtype} {tuple(inputs.shape)}")
        spec = _spec(self.model)
        if spec is not None and inputs.shape[1] != spec.channels:
            raise ValueError(
                f"inputs have {inputs.shape[1]} channels but the model takes {spec.channels} "
                f"(input {spec.channels}×{spec.height}×{spec.width}); use convscope.inference.to_input(model, images)"
            )
        return inputs

    def _target(self, inputs: torch.Tensor, target: TargetLike) -> Target:
        predicted = predicted_classes(self.model, inputs) if target is None else None
        return resolve_target(self.model, target, inputs.shape[0], predicted, tuple(inputs.shape[1:]))

    @staticmethod
    def _given(target: Target) -> torch.Tensor | str:
        """A resolved target in the form ``attribute`` takes again (classes or address)."""
        return target.classes if target.classes is not None else str(target.address)

    def _gradient(
        self,
        inputs: torch.Tensor,
        target: Target,
        rule: str | None,
        *,
        seed: str = "ones",
    ) -> torch.Tensor:
        """d(target)/d(inputs) ``(N, C, H, W)`` with ``rule`` at every ReLU.

        ``seed``: ``"ones"`` — the gradient of the target value (mean of a map);
        ``"activation"`` — Zeiler & Fergus: the kept map's own activations are
        sent down (class logits are always seeded with 1); ``"max"`` — keep only
        each map's single strongest unit, seeded with its activation.
        """
        x = inputs.detach().clone().requires_grad_(True)
        layer = target.address.layer
        with eval_mode(self.model):
            with relu_rule(rule):
                output = forward_to(self.model, x, [layer])[layer]
            score = self._seeded_score(output, target, seed)
            (grad,) = torch.autograd.grad(score.sum(), x)
        return grad.detach()

    @staticmethod
    def _seeded_score(output: torch.Tensor, target: Target, seed: str) -> torch.Tensor:
        if target.classes is not None or seed == "ones":
            return target_values(output, target)
        selected = select(output, target.address).reshape(output.shape[0], -1)
        if seed == "activation":
            # d/d(selected) of sum(selected * selected.detach()) is the activation itself
            return (selected * selected.detach()).sum(dim=1)
        if seed == "max":
            strongest = selected.detach().argmax(dim=1, keepdim=True)
            values = selected.gather(1, strongest)[:, 0]
            return values * values.detach()
        raise ValueError(f"unknown seed {seed!r}; use 'ones', 'activation' or 'max'")


@dataclass
class Explanation:
    """One method's result for a batch, with what produced it.

    Attributes:
        method: method name (``"deconvnet"`` ...).
        attributions: ``(N, C, H, W)`` maps in input resolution.
        target: the target as given back in JSON (class or address).
        signed: whether signs are meaningful (draw with a diverging colormap).
        delta: IG convergence delta per sample ``(N,)`` or ``None``.
        params: the parameters used.
        details: per-sample extras the method reported (``{"delta": (N,)}`` for IG).
    """

    method: str
    attributions: torch.Tensor
    target: Any
    signed: bool
    delta: torch.Tensor | None = None
    params: dict[str, Any] = field(default_factory=dict)
    details: dict[str, torch.Tensor] = field(default_factory=dict)
