"""Objectives from text (``--objective``), read strictly and checked against the model.

``"Conv2D_3"`` (a layer's mean activation), ``"Conv2D_3:56"`` (one map),
``"Conv2D_3:56@1,1"`` (one unit), ``"logits:4"`` (a class logit), or a weighted sum
``"Conv2D_3 + 0.5*Conv2D_2:7 - 1e-3*Conv2D_1"``.

* Weights are plain decimal numbers (``2``, ``0.5``, ``.5``, ``1e-3``, ``2.5E+2``):
  ``nan``, ``inf``, ``1e400`` (overflows to infinity), ``1_000`` and the like are
  refused with a message naming the weight.
* Every address is checked against the model (layer names, map ranges).
* A sum of many terms is one flat objective (evaluated in a loop, not as nested
  sums), so a 1,500-term objective works.
* Messages quote at most the first 60 characters of a long text.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from convscope.address import AddressError, resolve_address
from convscope.optvis import objectives as obj

_NUMBER = re.compile(r"^(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
# the text of a term so far is a number that just read its exponent's "e"
_EXPONENT_START = re.compile(r"^\s*(?:\d+\.?\d*|\.\d+)[eE]$")
#: Longer objective texts are refused (a command line never needs more).
MAX_OBJECTIVE_CHARACTERS = 1_000_000


class ObjectiveTextError(ValueError):
    """Objective text that cannot be read or does not fit the model."""


def short(text: str, limit: int = 60) -> str:
    """``text`` quoted, cut to ``limit`` characters with its length named when longer."""
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"… ({len(text):,} characters)"


def split_terms(text: str) -> list[tuple[float, str]]:
    """``"a + 0.5*b - 1e-3*c"`` → ``[(1.0, "a"), (1.0, "0.5*b"), (-1.0, "1e-3*c")]``:
    each term's sign and text (a ``+``/``-`` inside a number's exponent or after
    ``:``, ``@``, ``,`` belongs to the term)."""
    terms: list[tuple[float, str]] = []
    sign = 1.0
    current: list[str] = []
    for char in text:
        if char in "+-":
            so_far = "".join(current)
            stripped = so_far.rstrip()
            attached = stripped.endswith((":", "@", ",")) or (
                "*" not in so_far and _EXPONENT_START.match(so_far) is not None
            )
            if not attached:
                if stripped:
                    terms.append((sign, so_far.strip()))
                    sign = 1.0
                if char == "-":
                    sign = -sign
                current = []
                continue
        current.append(char)
    tail = "".join(current).strip()
    if tail:
        terms.append((sign, tail))
    elif text.strip() and text.strip()[-1] in "+-":
        raise ObjectiveTextError(f"objective {short(text)} ends with {text.strip()[-1]!r}: add a term after it")
    return terms


def parse_weight(factor: str, text: str) -> float:
    """A term's weight: a finite plain decimal number."""
    factor = factor.strip()
    if _NUMBER.match(factor) is None:
        try:
            value = float(factor)
        except ValueError:
            value = None
        if value is not None and not math.isfinite(value):
            raise ObjectiveTextError(
                f"weight {short(factor, 30)} in objective {short(text)} is not a finite number; "
                "use a plain number such as 0.5 or 1e-3"
            )
        raise ObjectiveTextError(
            f"cannot read weight {short(factor, 30)} in objective {short(text)}: use a plain number such as 0.5 or 1e-3"
        )
    value = float(factor)
    if not math.isfinite(value):
        raise ObjectiveTextError(
            f"weight {short(factor, 30)} in objective {short(text)} is too large (it overflows to infinity)"
        )
    return value


def _term_objective(model: nn.Module | None, address_text: str, text: str) -> obj.Objective:
    from convscope.address import parse_address

    try:
        address = resolve_address(model, address_text) if model is not None else parse_address(address_text)
    except AddressError as exc:
        raise ObjectiveTextError(f"objective {short(text)}: {exc}") from None
    if address.layer == "logits" and address.map_index is not None:
        return obj.class_logit(address.map_index)
    if address.map_index is None:
        return obj.layer(address.layer)
    return obj.channel(address)


def parse_objective_text(text: str, model: nn.Module | None = None) -> obj.Objective:
    """Read ``text`` (see the module docstring) into an objective, its addresses
    checked against ``model`` when given.

    Raises:
        ObjectiveTextError: empty text, a weight that is not a finite plain
            number, an address the model does not have; the message quotes at most
            60 characters of the text.
    """
    text = str(text)
    if len(text) > MAX_OBJECTIVE_CHARACTERS:
        raise ObjectiveTextError(f"objective {short(text)} is longer than {MAX_OBJECTIVE_CHARACTERS:,} characters")
    pieces: list[tuple[float, obj.Objective]] = []
    for sign, term in split_terms(text):
        weight = sign
        address_text = term
        if "*" in term:
            factor, address_text = term.split("*", 1)
            weight *= parse_weight(factor, text)
        address_text = address_text.strip()
        if not address_text:
            raise ObjectiveTextError(f"objective {short(text)}: the term {short(term, 30)} names no layer")
        pieces.append((weight, _term_objective(model, address_text, text)))
    if not pieces:
        raise ObjectiveTextError(f"empty objective {short(text)}: give a layer such as 'Conv2D_3' or a map 'Conv2D_3:56'")
    return weighted_sum(pieces)


def parse_dream_objective(model: nn.Module, text: str) -> obj.Objective:
    """:func:`parse_objective_text` checked against ``model`` (the dream's name for it)."""
    return parse_objective_text(text, model)


def weighted_sum(pieces: list[tuple[float, obj.Objective]]) -> obj.Objective:
    """``Σ weight · objective`` as one flat :class:`~convscope.optvis.objectives.Objective`
    (a loop, not nested sums: any number of terms). One unweighted term is returned as it is."""
    if len(pieces) == 1 and pieces[0][0] == 1.0:
        return pieces[0][1]
    frozen = list(pieces)

    def fn(activations: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for weight, piece in frozen:
            value = piece.fn(activations, images)
            value = value if weight == 1.0 else weight * value
            total = value if total is None else total + value
        assert total is not None
        return total

    layers = tuple(dict.fromkeys(layer for _, piece in frozen for layer in piece.layers))
    names = []
    for index, (weight, piece) in enumerate(frozen):
        label = piece.name if weight == 1.0 else f"-{piece.name}" if weight == -1.0 else f"{weight:g} * {piece.name}"
        if index and label.startswith("-"):
            names.append(f" - {label[1:]}")
        else:
            names.append(label if not index else f" + {label}")
    return obj.Objective(fn, layers, "".join(names))


__all__ = [
    "MAX_OBJECTIVE_CHARACTERS", "ObjectiveTextError", "parse_dream_objective", "parse_objective_text", "short",
    "split_terms", "weighted_sum",
]
