"""The one place explanation methods are registered (in the spirit of zennit's
named composites): adding a method is one class with a decorator.

::

    from convscope.explain import Attribution, register_method

    @register_method("xgrad", sanity=True)
    class InputTimesGradient(Attribution):
        '''Input × gradient: a first-order Taylor term per pixel.'''
        title = "input × gradient"
        gradient_based = True          # so SmoothGrad may wrap it

        def attribute(self, inputs, target=None, *, absolute: bool = False):
            inputs = self._check_inputs(inputs)
            grad = self._gradient(inputs, self._target(inputs, target), None)
            result = inputs * grad
            return result.abs() if absolute else result

Everything that lists methods reads this registry: the ``--method`` choices of
``convscope explain`` and what ``--method all`` runs, the methods SmoothGrad may
wrap (:func:`smoothable_methods`), the sanity check's default methods
(:func:`sanity_methods`), and which options each method takes — read from the
signatures of its ``__init__`` (after the model) and its ``attribute`` (after
``inputs`` and ``target``), so there is no second list of option names to keep
in step.

A *wrapper* (SmoothGrad) is constructed around another registered method: its
``__init__`` takes that method first, and it takes the option ``base`` (the
wrapped method's name).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from torch import nn

from convscope.explain.base import Attribution, option_parameters

A = TypeVar("A", bound=type)

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")
_RESERVED = {"all"}


@dataclass(frozen=True)
class MethodInfo:
    """A registered method.

    Attributes:
        name: the CLI / JSON name (``"gbp"``).
        cls: the :class:`~convscope.explain.base.Attribution` subclass.
        summary: one line for help texts.
        smoothable: SmoothGrad (any wrapper) may wrap it.
        sanity_default: part of the sanity check's default methods.
        wrapper: built around another method (takes ``base``).
        default_base: a wrapper's default ``base``.
    """

    name: str
    cls: type
    summary: str
    smoothable: bool
    sanity_default: bool
    wrapper: bool = False
    default_base: str | None = None

    @property
    def title(self) -> str:
        return getattr(self.cls, "title", "") or self.name

    def constructor_options(self) -> tuple[str, ...]:
        """Keyword options of ``__init__`` after the model (or, for a wrapper, the wrapped method)."""
        return _option_names(self.cls.__init__, skip=2)

    def call_options(self) -> tuple[str, ...]:
        """Keyword options of ``attribute`` after ``inputs`` and ``target``."""
        return _option_names(self.cls.attribute, skip=3)

    def options(self) -> tuple[str, ...]:
        """Every option the method itself takes (a wrapper also takes ``base`` and its base's options)."""
        names = self.constructor_options() + self.call_options()
        return (("base",) if self.wrapper else ()) + tuple(dict.fromkeys(names))


def _option_names(function: Callable[..., Any], skip: int) -> tuple[str, ...]:
    # ``return_*`` switch what attribute returns (IG's delta): not a user option
    return tuple(name for name, _ in option_parameters(function, skip))


_REGISTRY: dict[str, MethodInfo] = {}


def register_method(
    name: str | None = None,
    *,
    summary: str | None = None,
    smoothable: bool | None = None,
    sanity: bool = False,
    wrapper: bool = False,
    default_base: str | None = None,
    replace: bool = False,
) -> Callable[[A], A]:
    """Class decorator: register an :class:`~convscope.explain.base.Attribution` subclass.

    Args:
        name: the method's name (lower case, ``[a-z][a-z0-9_-]*``; default: the class's
            ``name`` attribute). ``"all"`` is reserved.
        summary: one help line (default: the first line of the class docstring).
        smoothable: whether SmoothGrad may wrap it (default: ``cls.gradient_based``
            and not a wrapper).
        sanity: include it in the sanity check's default methods.
        wrapper: the method wraps another registered method (SmoothGrad).
        default_base: a wrapper's default wrapped method.
        replace: allow replacing a method registered under the same name.

    Raises:
        ValueError: a bad or taken name, or a class that is not an ``Attribution``.
    """

    def decorate(cls: A) -> A:
        if not (isinstance(cls, type) and issubclass(cls, Attribution)):
            raise ValueError(f"register_method needs an Attribution subclass; got {cls!r}")
        key = name or getattr(cls, "name", "")
        if not isinstance(key, str) or not _NAME.fullmatch(key) or key in _RESERVED:
            raise ValueError(
                f"method name {key!r} must be lower case letters, digits, '_' or '-' (starting with a letter, "
                "at most 40 characters) and not 'all'"
            )
        if key in _REGISTRY and not replace and _REGISTRY[key].cls is not cls:
            raise ValueError(f"an explanation method named {key!r} is already registered "
                             f"({_REGISTRY[key].cls.__name__}); pass replace=True to replace it")
        if wrapper and default_base is None:
            raise ValueError(f"wrapper method {key!r} needs a default_base")
        doc = inspect.getdoc(cls) or ""
        line = summary if summary is not None else (doc.splitlines()[0] if doc else key)
        cls.name = key  # type: ignore[attr-defined]
        _REGISTRY[key] = MethodInfo(
            name=key, cls=cls, summary=line.strip(),
            smoothable=bool(getattr(cls, "gradient_based", False)) and not wrapper if smoothable is None else smoothable,
            sanity_default=sanity, wrapper=wrapper, default_base=default_base,
        )
        return cls

    return decorate


def unregister_method(name: str) -> None:
    """Remove a registered method (tests, plugins that unload)."""
    _REGISTRY.pop(name, None)


def method_names() -> list[str]:
    """Registered names in registration order (the order of figures and ``--method all``)."""
    return list(_REGISTRY)


def method_info(name: str) -> MethodInfo:
    """The registered method ``name``.

    Raises:
        ValueError: unknown name; the message lists the registered ones.
    """
    info = _REGISTRY.get(name)
    if info is None:
        shown = name if len(str(name)) <= 60 else str(name)[:60] + "…"
        raise ValueError(f"unknown method {shown!r}; choose one of: {', '.join(_REGISTRY)}")
    return info


def smoothable_methods() -> list[str]:
    """Methods SmoothGrad may wrap (gradient methods that are not wrappers themselves)."""
    return [name for name, info in _REGISTRY.items() if info.smoothable]


def sanity_methods() -> list[str]:
    """The sanity check's default methods."""
    return [name for name, info in _REGISTRY.items() if info.sanity_default]


def options_for(name: str, pool: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``pool`` that method ``name`` takes (for a wrapper: ``base``, its
    own options and its base's), skipping ``None`` values (= the method's default).

    This lets a front end offer one set of options (``--steps``, ``--window`` …) and
    give each method what it understands.
    """
    info = method_info(name)
    wanted = set(info.options())
    if info.wrapper:
        base = pool.get("base") or info.default_base
        wanted |= set(method_info(str(base)).options()) - {"base"}
    return {key: value for key, value in pool.items() if key in wanted and value is not None}


def make_method(model: nn.Module, name: str, **options: Any) -> tuple[Attribution, dict[str, Any]]:
    """Build the registered method ``name`` for ``model``.

    Options the method's constructor takes (``layer``, ``samples`` …) go to the
    constructor; the rest must be options of its ``attribute`` and are returned for
    that call. A wrapper (``smoothgrad``) wraps ``options["base"]`` (default: its
    ``default_base``); the base's options pass through.

    Returns:
        ``(method, attribute_options)``.

    Raises:
        ValueError: unknown method, a base that cannot be wrapped, or an option the
            method does not take (the message lists the options it takes).
    """
    info = method_info(name)
    options = dict(options)
    if info.wrapper:
        base = options.pop("base", None) or info.default_base
        base_info = method_info(str(base))
        if not base_info.smoothable:
            raise ValueError(f"{info.title} wraps a gradient method ({', '.join(smoothable_methods())}); got {base!r}")
        own = {key: options.pop(key) for key in info.constructor_options() if key in options}
        inner, rest = make_method(model, base_info.name, **options)
        return info.cls(inner, **own), rest
    constructor = {key: options.pop(key) for key in info.constructor_options() if key in options}
    accepted = set(info.call_options())
    unknown = [key for key in options if key not in accepted]
    if unknown:
        takes = ", ".join(info.options()) or "none"
        raise ValueError(f"method {name!r} has no option {', '.join(map(repr, unknown))}; its options: {takes}")
    return info.cls(model, **constructor), options


class MethodsView(Mapping[str, type]):
    """A live ``{name: class}`` view of the registry (``convscope.explain.METHODS``)."""

    def __getitem__(self, name: str) -> type:
        return method_info(name).cls if name in _REGISTRY else _missing(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(_REGISTRY))

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return f"METHODS({', '.join(_REGISTRY)})"


def _missing(name: str) -> type:
    raise KeyError(name)


__all__ = [
    "MethodInfo", "MethodsView", "make_method", "method_info", "method_names", "options_for", "register_method",
    "sanity_methods", "smoothable_methods", "unregister_method",
]
