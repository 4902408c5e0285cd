"""Objectives for feature visualisation and dreams, composable like the maths.

An :class:`Objective` maps a batch of input images ``(N, C, H, W)`` to one score
per image ``(N,)`` — the quantity gradient ascent *increases*. Objectives compose
with ``+``, ``-``, unary ``-`` and multiplication/division by scalars::

    from convscope.optvis import objectives as obj
    goal = obj.channel("Conv2D_3:120") - 0.1 * obj.total_variation()
    scores = goal(model, images)          # (N,)

Layer outputs are captured through the one :class:`~convscope.probe.Probe`; all
layers an objective needs are captured in one forward pass that stops early at
the deepest of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from convscope.address import LayerAddress, parse_address
from convscope.probe import Probe

ScoreFn = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """A differentiable score per batch member.

    Attributes:
        fn: ``fn(activations, images) -> (N,)`` where ``activations`` maps layer
            names to captured outputs and ``images`` is the input batch.
        layers: layer names ``fn`` reads.
        name: readable description (used in reports and JSON).
    """

    fn: ScoreFn
    layers: tuple[str, ...]
    name: str
    #: For objectives that hold per-member data (``channels``, ``class_logits``):
    #: ``members(index)`` returns the objective restricted to batch members
    #: ``index`` (a 1-D LongTensor). ``None`` means every member is scored alike.
    members: "Callable[[torch.Tensor], Objective] | None" = None
    #: Set by :func:`channel` / :func:`channels` only: ``(layer, maps)``, the score
    #: of member ``i`` is the mean activation of map ``maps[i]`` of ``layer``
    #: (``maps`` a 0-d tensor = the same map for every member). Lets the ascent
    #: compute just those maps (:mod:`convscope.optvis.own_channel`).
    map_spec: "tuple[str, torch.Tensor] | None" = None

    @property
    def batched(self) -> bool:
        """True when members score different things (``subset`` re-indexes them)."""
        return self.members is not None

    def subset(self, index: torch.Tensor | Sequence[int]) -> "Objective":
        """The objective for batch members ``index`` only (in that order).

        The ascent engine calls this when it removes frozen (converged or dead)
        members from the batch, so batched objectives stay aligned.
        """
        if self.members is None:
            return self
        return self.members(torch.as_tensor(index, dtype=torch.long))

    def score(self, activations: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        """Score from already-captured activations: ``(N,)``."""
        return self.fn(activations, images)

    def __call__(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Run ``model`` on ``images`` ``(N, C, H, W)`` and return the scores ``(N,)``."""
        if not self.layers:
            return self.fn({}, images)
        with Probe(model, self.layers) as probe:
            activations = probe.run(images)
        return self.fn(activations, images)

    # -- algebra ---------------------------------------------------------
    def __add__(self, other: "Objective | float") -> "Objective":
        other = _lift(other)
        return Objective(
            lambda a, x: self.fn(a, x) + other.fn(a, x),
            _merge(self.layers, other.layers),
            f"{self.name} + {other.name}",
            _combine_members(self, other, lambda p, q: p + q),
        )

    def __radd__(self, other: float) -> "Objective":
        return self + other

    def __sub__(self, other: "Objective | float") -> "Objective":
        return self + (-1.0) * _lift(other)

    def __rsub__(self, other: float) -> "Objective":
        return _lift(other) + (-1.0) * self

    def __neg__(self) -> "Objective":
        return (-1.0) * self

    def __mul__(self, factor: float) -> "Objective":
        if isinstance(factor, Objective):
            return Objective(
                lambda a, x: self.fn(a, x) * factor.fn(a, x),
                _merge(self.layers, factor.layers),
                f"({self.name}) * ({factor.name})",
                _combine_members(self, factor, lambda p, q: p * q),
            )
        value = float(factor)
        members = None if self.members is None else (lambda index: value * self.subset(index))
        return Objective(lambda a, x: value * self.fn(a, x), self.layers, f"{value:g} * {self.name}", members)

    def __rmul__(self, factor: float) -> "Objective":
        return self * factor

    def __truediv__(self, divisor: float) -> "Objective":
        return self * (1.0 / float(divisor))


def _combine_members(first: Objective, second: Objective, combine) -> "Callable[[torch.Tensor], Objective] | None":
    if first.members is None and second.members is None:
        return None
    return lambda index: combine(first.subset(index), second.subset(index))


def _merge(a: Sequence[str], b: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*a, *b]))


def _lift(value: "Objective | float") -> Objective:
    if isinstance(value, Objective):
        return value
    constant = float(value)
    return Objective(lambda a, x: torch.full((x.shape[0],), constant, dtype=x.dtype, device=x.device), (), f"{constant:g}")


def _spatial_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over every dim after the first: ``(N, ...)`` → ``(N,)``."""
    return tensor.reshape(tensor.shape[0], -1).mean(dim=1)


def channel(address: str | LayerAddress, map_index: int | None = None) -> Objective:
    """Mean activation of one map (the reference's OIP loss) or one dense node.

    ``channel("Conv2D_3:120")`` or ``channel("Conv2D_3", 120)``. An address with a
    unit part (``@row,col``) becomes :func:`unit`.
    """
    parsed = parse_address(address)
    if map_index is not None:
        parsed = parsed.with_map(map_index)
    if parsed.map_index is None:
        raise ValueError(f"channel() needs a map index: use '{parsed.layer}:MAP' (or layer() for the whole layer)")
    if parsed.position is not None:
        return unit(parsed)
    layer_name, index = parsed.layer, parsed.map_index
    return Objective(
        lambda a, x: _spatial_mean(a[layer_name][:, index]), (layer_name,), str(parsed),
        map_spec=(layer_name, torch.tensor(index)),
    )


def unit(address: str | LayerAddress) -> Objective:
    """Activation of one unit, ``"Conv2D_3:120@1,2"``; for a map without ``@`` the
    centre unit is used."""
    parsed = parse_address(address)
    if parsed.map_index is None:
        raise ValueError("unit() needs an address like 'Conv2D_3:120@1,2'")
    layer_name, index, position = parsed.layer, parsed.map_index, parsed.position

    def fn(a: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = a[layer_name][:, index]
        if out.ndim == 1:
            return out
        row, col = position if position is not None else (out.shape[1] // 2, out.shape[2] // 2)
        return out[:, row, col]

    return Objective(fn, (layer_name,), str(parsed))


def channels(layer_name: str, map_indices: torch.Tensor | Sequence[int]) -> Objective:
    """Batched map objective: member ``i`` of the batch scores map ``map_indices[i]``
    of ``layer_name`` (mean activation). Used to optimise many maps in one batch."""
    layer_name = parse_address(layer_name).layer
    indices = torch.as_tensor(map_indices, dtype=torch.long)

    def fn(a: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = a[layer_name]
        idx = indices.to(out.device)
        if idx.shape[0] != out.shape[0]:
            raise ValueError(f"channels(): {idx.shape[0]} map indices for a batch of {out.shape[0]}")
        picked = out[torch.arange(out.shape[0], device=out.device), idx]
        return _spatial_mean(picked)

    return Objective(
        fn, (layer_name,), f"{layer_name}:[{len(indices)} maps]", lambda keep: channels(layer_name, indices[keep]),
        map_spec=(layer_name, indices),
    )


def layer(layer_name: str, weights: torch.Tensor | Sequence[float] | None = None, *, power: float = 1.0) -> Objective:
    """Whole-layer objective (dreams): mean over maps and positions of
    ``activation ** power``, each map weighted by ``weights[c]`` (default 1).

    ``power=2`` is the "L2" DeepDream loss; ``power=1`` the plain mean.
    """
    layer_name = parse_address(layer_name).layer
    weight_tensor = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)

    def fn(a: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = a[layer_name]
        values = out if power == 1.0 else out.clamp_min(0) ** power if power != 2.0 else out**2
        if weight_tensor is not None:
            shape = (1, -1) + (1,) * (out.ndim - 2)
            values = values * weight_tensor.to(out.device, out.dtype).reshape(shape)
        return _spatial_mean(values)

    label = layer_name if power == 1.0 else f"{layer_name}^{power:g}"
    return Objective(fn, (layer_name,), label if weights is None else f"weighted {label}")


def class_logit(class_index: int) -> Objective:
    """The pre-softmax logit of class ``class_index`` (softmax bypassed)."""
    return Objective(lambda a, x: a["logits"][:, class_index], ("logits",), f"logits:{class_index}")


def class_logits(class_indices: torch.Tensor | Sequence[int]) -> Objective:
    """Batched: member ``i`` scores the logit of class ``class_indices[i]``."""
    indices = torch.as_tensor(class_indices, dtype=torch.long)

    def fn(a: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        logits = a["logits"]
        return logits[torch.arange(logits.shape[0], device=logits.device), indices.to(logits.device)]

    return Objective(fn, ("logits",), f"logits:[{len(indices)} classes]", lambda keep: class_logits(indices[keep]))


def direction(layer_name: str, vector: torch.Tensor | Sequence[float]) -> Objective:
    """Mean over positions of the dot product between the activation vector across
    channels and ``vector`` ``(C,)`` — a direction in the layer's channel space."""
    layer_name = parse_address(layer_name).layer
    vec = torch.as_tensor(vector, dtype=torch.float32)

    def fn(a: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = a[layer_name]
        shape = (1, -1) + (1,) * (out.ndim - 2)
        return _spatial_mean((out * vec.to(out.device, out.dtype).reshape(shape)).sum(dim=1, keepdim=True))

    return Objective(fn, (layer_name,), f"direction({layer_name})")


def total_variation() -> Objective:
    """Mean absolute difference between neighbouring pixels, per image (a penalty:
    subtract it, e.g. ``channel(...) - 0.1 * total_variation()``)."""

    def fn(a: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs()
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs()
        return _spatial_mean(dy) + _spatial_mean(dx)

    return Objective(fn, (), "TV")


def l1() -> Objective:
    """Mean absolute pixel value per image (a penalty)."""
    return Objective(lambda a, x: _spatial_mean(x.abs()), (), "L1")


def parse_objective(text: str, model: nn.Module | None = None) -> Objective:
    """Objective from CLI text: ``"Conv2D_3:56"`` (map), ``"Conv2D_3:56@1,1"``
    (unit), ``"Conv2D_3"`` (whole layer), ``"logits:4"`` (class logit), or a sum
    of weighted terms ``"Conv2D_3 + 0.5*Conv2D_2:7 - 1e-3*Conv2D_1"``.

    Read strictly (:mod:`convscope.optvis.objective_text`): weights are finite plain
    numbers (``nan``, ``inf`` refused), any number of terms (one flat sum), long texts
    never echoed whole; addresses checked against ``model`` when given.

    Raises:
        ValueError (``ObjectiveTextError``): with one message naming the problem.
    """
    from convscope.optvis.objective_text import parse_objective_text

    return parse_objective_text(text, model)
