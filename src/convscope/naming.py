"""The layer-address syntax and module lookup (no model is run here).

The one layer-address syntax used by every command and the Python API.

Grammar::

    ADDRESS  := LAYER [ ":" MAP [ "@" ROW "," COL ] ]
    LAYER    := a module name of the model, dotted for submodules ("Conv2D_3",
                "Conv2D_3.conv" for the pre-activation), or one of the
                pseudo-layers "logits" / "probabilities" (the model's output and
                its softmax)
    MAP      := channel / node index, 0-based
    ROW,COL  := spatial position inside the map, 0-based

Examples: ``"Conv2D_3"``, ``"Conv2D_3:120"``, ``"Conv2D_3:120@1,2"``,
``"Dense_1:42"``, ``"logits:4"``.

:func:`parse_address` only checks the syntax; :func:`resolve_address` checks a
parsed address against a model and raises :class:`AddressError` naming the valid
layers or index range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

#: Pseudo-layers that every model has: its output and the softmax of it.
PSEUDO_LAYERS = ("logits", "probabilities")

_PATTERN = re.compile(
    # A dotted module path; numeric parts ("0", "features.0") name nn.Sequential children.
    r"^\s*(?P<layer>(?:[A-Za-z_]\w*|\d+)(?:\.(?:[A-Za-z_]\w*|\d+))*)"
    r"(?::(?P<map>-?\d+)(?:@(?P<row>-?\d+),(?P<col>-?\d+))?)?\s*$"
)
#: Longest map index or position a layer address may hold (digits): larger is no layer's size.
MAX_INDEX_DIGITS = 12


def _quoted(text: object, limit: int = 60) -> str:
    """``text`` quoted for a message, cut to ``limit`` characters with its length said."""
    text = str(text)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"… ({len(text):,} characters)"


class AddressError(ValueError):
    """A layer address that is malformed or does not exist in the model."""


@dataclass(frozen=True)
class LayerAddress:
    """A parsed layer address.

    Attributes:
        layer: module name (dotted for submodules) or a pseudo-layer.
        map_index: channel / node index, or ``None`` for the whole layer.
        position: ``(row, col)`` of a single unit inside the map, or ``None``.
    """

    layer: str
    map_index: int | None = None
    position: tuple[int, int] | None = None

    def __str__(self) -> str:
        text = self.layer
        if self.map_index is not None:
            text += f":{self.map_index}"
            if self.position is not None:
                text += f"@{self.position[0]},{self.position[1]}"
        return text

    def with_map(self, map_index: int) -> "LayerAddress":
        """The same layer, one map."""
        return LayerAddress(self.layer, map_index, None)


def parse_address(text: str | LayerAddress) -> LayerAddress:
    """Parse ``"Conv2D_3:120@1,2"``-style text into a :class:`LayerAddress`.

    Raises:
        AddressError: the text does not follow the syntax.
    """
    if isinstance(text, LayerAddress):
        return text
    match = _PATTERN.match(str(text))
    if match is None:
        raise AddressError(
            f"cannot read layer address {_quoted(text)}: expected LAYER, LAYER:MAP or "
            "LAYER:MAP@ROW,COL, e.g. 'Conv2D_3', 'Conv2D_3:120', 'Conv2D_3:120@1,2'"
        )
    map_text, row, col = match["map"], match["row"], match["col"]
    for number in (map_text, row, col):
        if number is not None and len(number.lstrip("-0")) > MAX_INDEX_DIGITS:
            raise AddressError(f"layer address {_quoted(text)}: the index {_quoted(number, 20)} is too large for any layer")
    position = (int(row), int(col)) if row is not None else None
    return LayerAddress(match["layer"], int(map_text) if map_text is not None else None, position)


def _aliases(model: nn.Module) -> dict[str, str]:
    spec = getattr(model, "convscope_spec", None)
    return dict(getattr(spec, "aliases", None) or {})


def layer_names(model: nn.Module) -> list[str]:
    """The model's top-level layer names in definition order, plus pseudo-layers."""
    return [name for name, _ in model.named_children()] + list(PSEUDO_LAYERS)


def _name_list(model: nn.Module, limit: int = 40) -> str:
    """Valid names for an error message: top-level layers, then nested ones, capped."""
    top = [name for name, _ in model.named_children()]
    nested = [name for name, _ in model.named_modules() if name and "." in name]
    names = top + list(PSEUDO_LAYERS) + nested
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more; `convscope summary` lists them all)" if len(names) > limit else "")


def canonical_layer(model: nn.Module, name: str) -> str:
    """The module name (or pseudo-layer) that ``name`` refers to: ``name`` itself, or
    the target of an alias in the model's spec (``dense_14`` → ``Dense_1``)."""
    if name in PSEUDO_LAYERS:
        return name
    aliases = _aliases(model)
    if name in aliases and name not in dict(model.named_modules()):
        return aliases[name]
    return name


def find_module(model: nn.Module, name: str) -> nn.Module:
    """Return the submodule called ``name`` (dotted names and spec aliases allowed).

    Raises:
        AddressError: no such module; the message lists the valid layer names.
    """
    modules = dict(model.named_modules())
    target = canonical_layer(model, name)
    if target in modules and target != "":
        return modules[target]
    raise AddressError(
        f"the model has no layer {_quoted(name)}; valid layers: {_name_list(model)} "
        "(dotted names such as 'Conv2D_3.conv' reach submodules)"
    )


__all__ = [
    "AddressError", "LayerAddress", "PSEUDO_LAYERS", "canonical_layer", "find_module", "layer_names", "parse_address",
]
