"""The model spec: what a network expects and what it says, for any ``nn.Module``.

Every engine, renderer and command reads the spec instead of assuming MNIST::

    import convscope
    net = convscope.wrap(my_module, input_shape=(3, 32, 32), class_names=["cat", "dog"],
                         preprocessing="meanstd", mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26),
                         dataset="path/to/folder", image_conversion="resize")
    convscope.spec_of(net).num_classes          # 2

Fields:

* ``input_shape`` — ``(C, H, W)`` of one input (PyTorch order, channels first).
* ``class_names`` — one name per output logit.
* ``preprocessing`` — how uint8 pixels (0..255) become the model's input:
  ``"standardize"`` (per image: mean 0, std 1 — the reference's choice),
  ``"unit"`` (÷255), ``"meanstd"`` (÷255, then per channel ``(x - mean[c]) / std[c]``),
  ``"raw"`` (the 0..255 values as floats).
* ``dataset`` — the dataset the model was trained on: a known name (``mnist``,
  ``fashion-mnist``) or a path (IDX folder, image folder, ``.npz``); commands
  default to it. ``None`` = unknown (commands then need ``--dataset``).
* ``image_conversion`` — how a user's image file becomes an input: ``"digit"``
  (MNIST's recipe: grey, inverted if light, cropped, fitted into 20×20, centred by
  mass — gray 28×28-style models only), ``"resize"`` (to ``H×W``), ``"crop"``
  (scaled to cover ``H×W``, centre crop), ``"none"`` (must already be ``H×W``).
* ``name`` — shown in titles and provenance.
* ``aliases`` — extra layer names, e.g. the Keras names ``dense_14`` → ``Dense_1``.

The spec is attached to the module as the attribute ``convscope_spec`` (it
survives ``copy.deepcopy``); :func:`spec_of` reads it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

PREPROCESSINGS: tuple[str, ...] = ("standardize", "unit", "meanstd", "raw")
CONVERSIONS: tuple[str, ...] = ("digit", "resize", "crop", "none")
SPEC_ATTRIBUTE = "convscope_spec"
#: Largest input a spec may declare (pixels per channel): a typo such as 32000 must not
#: make every engine allocate gigabytes.
MAX_INPUT_PIXELS = 4096 * 4096


class SpecError(ValueError):
    """A model spec that is missing, inconsistent, or does not fit its model."""


@dataclass(frozen=True)
class ModelSpec:
    """What a model expects and says (see the module docstring for each field).

    Attributes:
        input_shape: ``(C, H, W)``.
        class_names: names of the ``num_classes`` outputs.
        preprocessing: one of :data:`PREPROCESSINGS`.
        mean, std: per-channel values (on the 0..1 scale) for ``"meanstd"``.
        dataset: the model's own dataset (name or path), or ``None``.
        image_conversion: one of :data:`CONVERSIONS`.
        name: display name.
        aliases: ``{alias: layer}`` extra layer names.
    """

    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    preprocessing: str = "standardize"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    dataset: str | None = None
    image_conversion: str = "resize"
    name: str = "model"
    aliases: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # normalise containers so specs compare and hash by value
        object.__setattr__(self, "input_shape", _shape(self.input_shape))
        object.__setattr__(self, "class_names", tuple(str(n) for n in _sequence(self.class_names, "class_names")))
        if self.mean is not None:
            object.__setattr__(self, "mean", _floats(self.mean, "mean"))
        if self.std is not None:
            object.__setattr__(self, "std", _floats(self.std, "std"))
        object.__setattr__(self, "aliases", dict(self.aliases or {}))
        self._validate()

    # -- derived facts ---------------------------------------------------------
    @property
    def channels(self) -> int:
        return self.input_shape[0]

    @property
    def height(self) -> int:
        return self.input_shape[1]

    @property
    def width(self) -> int:
        return self.input_shape[2]

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self.input_shape[1], self.input_shape[2]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_gray(self) -> bool:
        return self.channels == 1

    def class_name(self, index: int) -> str:
        """The name of class ``index`` (its number when out of range)."""
        return self.class_names[index] if 0 <= index < len(self.class_names) else str(index)

    def replace(self, **changes: Any) -> "ModelSpec":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    # -- JSON ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "class_names": list(self.class_names),
            "preprocessing": self.preprocessing,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "dataset": self.dataset,
            "image_conversion": self.image_conversion,
            "name": self.name,
            "aliases": dict(self.aliases),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelSpec":
        """Build from :meth:`to_dict` output; unknown keys are ignored.

        Raises:
            SpecError: missing or invalid fields.
        """
        if not isinstance(data, Mapping):
            raise SpecError(f"a model spec must be a JSON object, not {type(data).__name__}")
        missing = [key for key in ("input_shape", "class_names") if key not in data]
        if missing:
            raise SpecError(f"model spec lacks {', '.join(missing)}")
        known = {f.name for f in dataclasses.fields(cls)}
        nullable = {"mean", "std", "dataset"}
        return cls(**{key: value for key, value in data.items() if key in known and (value is not None or key in nullable)})

    # -- checks ----------------------------------------------------------------
    def _validate(self) -> None:
        c, h, w = self.input_shape
        if c < 1 or h < 1 or w < 1:
            raise SpecError(f"input_shape must be three positive numbers (C, H, W); got {self.input_shape}")
        if h * w > MAX_INPUT_PIXELS:
            raise SpecError(f"input_shape {self.input_shape} is larger than convscope supports ({MAX_INPUT_PIXELS:,} pixels per channel)")
        if c not in (1, 3):
            # engines turn images into pictures; 1 (gray) and 3 (RGB) are what can be drawn and loaded
            raise SpecError(f"input_shape {self.input_shape}: convscope handles 1 (gray) or 3 (RGB) input channels, not {c}")
        if not self.class_names:
            raise SpecError("class_names is empty: give one name per output of the model")
        if self.preprocessing not in PREPROCESSINGS:
            raise SpecError(f"unknown preprocessing {self.preprocessing!r}; use one of: {', '.join(PREPROCESSINGS)}")
        if self.preprocessing == "meanstd":
            if self.mean is None or self.std is None:
                raise SpecError("preprocessing 'meanstd' needs mean and std (one value per channel, on the 0..1 scale)")
            if len(self.mean) != c or len(self.std) != c:
                raise SpecError(f"mean and std need {c} values each (one per channel); got {len(self.mean)} and {len(self.std)}")
            if any(s <= 0 for s in self.std):
                raise SpecError(f"std values must be positive; got {self.std}")
        if self.image_conversion not in CONVERSIONS:
            raise SpecError(f"unknown image_conversion {self.image_conversion!r}; use one of: {', '.join(CONVERSIONS)}")
        if self.image_conversion == "digit" and c != 1:
            raise SpecError("image_conversion 'digit' (MNIST-style) needs a 1-channel model; use 'resize' or 'crop'")
        for alias, target in self.aliases.items():
            if not isinstance(alias, str) or not isinstance(target, str) or not alias or not target:
                raise SpecError(f"aliases must map layer names to layer names; got {alias!r} -> {target!r}")


def _shape(value: Any) -> tuple[int, int, int]:
    items = _sequence(value, "input_shape")
    if len(items) != 3:
        raise SpecError(f"input_shape must be (C, H, W); got {value!r}")
    try:
        numbers = tuple(int(v) for v in items)
    except (TypeError, ValueError):
        raise SpecError(f"input_shape must be three whole numbers (C, H, W); got {value!r}") from None
    if any(isinstance(v, float) and v != int(v) for v in items) or any(isinstance(v, bool) for v in items):
        raise SpecError(f"input_shape must be three whole numbers (C, H, W); got {value!r}")
    return numbers  # type: ignore[return-value]


def _floats(value: Any, name: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in _sequence(value, name))
    except (TypeError, ValueError):
        raise SpecError(f"{name} must be numbers; got {value!r}") from None
    if not all(math.isfinite(v) for v in numbers):
        raise SpecError(f"{name} must be finite numbers; got {value!r}")
    return numbers


def _sequence(value: Any, name: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        if isinstance(value, torch.Size):
            return tuple(value)
        raise SpecError(f"{name} must be a list; got {value!r}")
    return value


def digit_spec(**changes: Any) -> ModelSpec:
    """The spec of the reference MNIST models: 1×28×28, digits 0–9, per-image
    standardisation, MNIST-style conversion of image files."""
    base = ModelSpec(
        input_shape=(1, 28, 28), class_names=tuple(str(i) for i in range(10)), preprocessing="standardize",
        dataset="mnist", image_conversion="digit", name="model",
    )
    return base.replace(**changes) if changes else base


def wrap(model: nn.Module, spec: ModelSpec | None = None, *, check: bool = True, **fields: Any) -> nn.Module:
    """Attach a :class:`ModelSpec` to ``model`` (in place) and return the model.

    Args:
        model: any ``nn.Module`` mapping ``(N, C, H, W)`` to ``(N, classes)`` logits
            (a tuple/list output uses its first element; a dict its ``"logits"``).
        spec: a ready spec; or give its fields as keywords (``input_shape=...``);
            keywords given with ``spec`` replace those fields.
        check: run one forward pass on zeros to check that the model accepts
            ``input_shape`` and returns ``len(class_names)`` outputs.

    Raises:
        SpecError: bad fields, or a model that does not fit them.
    """
    if not isinstance(model, nn.Module):
        raise SpecError(f"wrap() needs a torch.nn.Module; got {type(model).__name__}")
    if spec is None:
        spec = ModelSpec(**fields)
    elif fields:
        spec = spec.replace(**fields)
    if check:
        check_model_fits(model, spec)
    setattr(model, SPEC_ATTRIBUTE, spec)
    return model


def check_model_fits(model: nn.Module, spec: ModelSpec) -> None:
    """Run ``model`` once on a zero input of ``spec.input_shape`` and check the output.

    Raises:
        SpecError: the forward pass fails, or its output is not ``(1, num_classes)``.
    """
    from convscope.device import model_device

    try:
        parameter = next(model.parameters())
        dtype = parameter.dtype if parameter.is_floating_point() else torch.float32
    except StopIteration:
        dtype = torch.float32
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model_output(model(torch.zeros((1, *spec.input_shape), device=model_device(model), dtype=dtype)))
    except SpecError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means the spec does not fit
        raise SpecError(f"the model cannot run on an input of shape (N, {', '.join(map(str, spec.input_shape))}): {exc}") from exc
    finally:
        model.train(was_training)
    if output.ndim != 2 or output.shape[1] != spec.num_classes:
        raise SpecError(
            f"the model returns shape {tuple(output.shape)} for one input, but the spec names {spec.num_classes} classes; "
            f"convscope needs (N, classes) logits and one class name per output"
        )


def model_output(output: Any) -> torch.Tensor:
    """The logits in a model's return value: the tensor itself, the first element of a
    tuple/list, or a dict's ``"logits"`` entry (or its only tensor).

    Raises:
        SpecError: no tensor can be found.
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, Mapping):
        if isinstance(output.get("logits"), torch.Tensor):
            return output["logits"]
        tensors = [value for value in output.values() if isinstance(value, torch.Tensor)]
        if len(tensors) == 1:
            return tensors[0]
    raise SpecError(
        f"cannot find the logits in the model's output ({type(output).__name__}); return a tensor, a tuple whose "
        "first element is the logits, or a dict with a 'logits' entry"
    )


def spec_of(model: nn.Module) -> ModelSpec:
    """The spec attached to ``model`` (by :func:`wrap`, :func:`~convscope.models.load_model`,
    or the built-in architectures).

    Raises:
        SpecError: the model has none; the message says how to attach one.
    """
    spec = getattr(model, SPEC_ATTRIBUTE, None)
    if isinstance(spec, ModelSpec):
        return spec
    raise SpecError(
        f"this {type(model).__name__} has no convscope spec: attach one with "
        "convscope.wrap(model, input_shape=(C, H, W), class_names=[...], preprocessing='unit', dataset=...)"
    )


__all__ = [
    "CONVERSIONS", "MAX_INPUT_PIXELS", "ModelSpec", "PREPROCESSINGS", "SPEC_ATTRIBUTE", "SpecError",
    "check_model_fits", "digit_spec", "model_output", "spec_of", "wrap",
]
