"""Load a model from any way of naming one, with its spec attached.

:func:`load_any` (and :func:`open_model`, which also says what it did) accepts:

* ``None`` — the shipped Model A; a shipped name (``seed_cnn``, see :data:`SHIPPED_MODELS`).
* ``NAME.json`` / ``NAME.safetensors`` / ``NAME`` — convscope's native files, for the
  registered architectures and for ``"graph"`` models (any model of standard layers,
  e.g. one written by ``convscope import``).
* ``FILE.h5`` / ``FILE.keras`` — a Keras model file (Keras 2 or 3), read without
  TensorFlow (:func:`convscope.importers.read_keras`).
* ``path/to/file.py:FUNCTION`` — a Python factory: the file is imported and
  ``FUNCTION()`` called. It may return an ``nn.Module`` (wrapped with
  :func:`convscope.wrap` or not), ``(module, ModelSpec)`` or ``(module, dict of spec
  fields)``. Weights come from the factory itself or from ``weights``: a
  ``.safetensors`` file or a state_dict ``.pt`` / ``.pth`` read with
  ``torch.load(weights_only=True)`` (never an arbitrary unpickle).

Anything else (``.onnx``, TorchScript, a pickled model, a SavedModel folder, an
unknown suffix, a missing file) raises one :class:`ModelLoadError` naming what it is
and the supported forms; nothing is ever loaded from a neighbouring file of another
kind.

**Spec fields.** A Keras file holds the input shape and the number of classes but
not the preprocessing, the class names, the dataset or how image files are
converted; a factory may give none of these. Fields given in ``spec_fields`` (the
CLI's ``--preprocess``, ``--class-names`` …) fill or override them; the rest take
these documented defaults, and :attr:`LoadedModel.defaults` says which were used:

* ``preprocessing``: ``"unit"`` (x/255, the most common Keras and PyTorch practice);
* ``class_names``: ``"0"``, ``"1"``, … one per output (the count read from the file,
  or measured by one forward pass);
* ``dataset``: ``"mnist"`` for a 1×28×28 input with 10 classes, else ``None``
  (unknown: commands then need ``--dataset``);
* ``image_conversion``: ``"digit"`` for a 1×28×28 MNIST model, else ``"resize"``;
* ``name``: the file's stem (a factory: the function's name).

``input_shape`` has no default: a factory that gives none needs ``--input-shape``.
Every loaded model is checked with one forward pass
(:func:`convscope.spec.check_model_fits`), so a wrong input shape or class count is
a clear error here, not a crash later.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
import pickle
import re
import sys
import traceback
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convscope.io import file_sha256
from convscope.models.files import (
    GRAPH_ARCHITECTURE, ModelConfig, ModelFileError, conversion_for, load_model, paths_for, state_dict_mismatch,
)
from convscope.spec import SPEC_ATTRIBUTE, ModelSpec, SpecError, check_model_fits, model_output

#: Models that ship inside the package: name → file stem in ``convscope/shipped/``.
SHIPPED_MODELS: dict[str, str] = {"seed_cnn": "seed_cnn", "reference": "reference"}
#: What each shipped model is, for titles and ``--help``.
SHIPPED_DESCRIPTIONS: dict[str, str] = {
    "seed_cnn": "Model A, fast recipe",
    "reference": "Model A, the posts' reference recipe (RMSprop, 80 epochs)",
}
#: The model used when none is named.
DEFAULT_MODEL = "seed_cnn"

#: Spec fields that ``spec_fields`` may hold → the CLI flag that sets each.
SPEC_FLAGS: dict[str, str] = {
    "input_shape": "--input-shape",
    "class_names": "--class-names",
    "num_classes": "--num-classes",
    "preprocessing": "--preprocess",
    "mean": "--mean",
    "std": "--std",
    "dataset": "--model-dataset",
    "image_conversion": "--image-conversion",
    "name": "--name",
}
#: The default preprocessing of a model whose file does not record one.
DEFAULT_PREPROCESSING = "unit"

KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")
NATIVE_SUFFIXES = (".json", ".safetensors")
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")

SUPPORTED_FORMS = (
    f"a shipped model name ({', '.join(SHIPPED_MODELS)})",
    "convscope's native files NAME.json + NAME.safetensors (give either one, or NAME)",
    "a Keras model file (.h5 from Keras 2 or 3, .keras)",
    "a Python factory FILE.py:FUNCTION (weights from the factory or --weights FILE.safetensors / a state_dict .pt)",
)
SUPPORTED_TEXT = "supported: " + "; ".join(SUPPORTED_FORMS)

_FACTORY = re.compile(r"^(?P<file>.+\.py):(?P<function>[^:/\\]*)$", re.IGNORECASE)
_counter = itertools.count(1)


class ModelLoadError(ModelFileError):
    """A model reference that cannot be loaded: unsupported kind, missing file, a factory
    that fails, weights or spec fields that do not fit. The message names the problem
    and what to do."""


@dataclass(frozen=True)
class LoadedModel:
    """What :func:`open_model` loaded.

    Attributes:
        model: the module, eval mode, spec attached, ``model.config`` set (a
            :class:`~convscope.models.ModelConfig`; ``architecture`` is the registered
            name, ``"graph"`` for Keras imports and graph files, ``"python"`` for factories).
        kind: ``"shipped"``, ``"native"``, ``"keras"`` or ``"python"``.
        reference: the reference as given (``None`` for the default model).
        defaults: spec fields that took a documented default (not in the file, the
            factory or ``spec_fields``) → the value used.
        notes: other things worth telling the user (e.g. a factory used without ``--weights``).
    """

    model: nn.Module
    kind: str
    reference: str | None
    defaults: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def spec(self) -> ModelSpec:
        return getattr(self.model, SPEC_ATTRIBUTE)

    @property
    def label(self) -> str:
        """Short description for titles: ``"shipped Model A (seed_cnn)"``, or the reference."""
        if self.reference is None:
            return f"shipped Model A ({DEFAULT_MODEL})"
        if self.kind == "shipped" and self.reference in SHIPPED_DESCRIPTIONS:
            return f"shipped {SHIPPED_DESCRIPTIONS[self.reference]} ({self.reference})"
        return self.reference


def load_any(
    ref: str | os.PathLike | None,
    *,
    weights: str | os.PathLike | None = None,
    spec_fields: Mapping[str, Any] | None = None,
    device: str | torch.device | None = "cpu",
    allow_unverified: bool = False,
) -> nn.Module:
    """Load the model ``ref`` names (see the module docstring), its spec attached.

    Args:
        ref: ``None``, a shipped name, native files, a Keras file or ``FILE.py:FUNCTION``.
        weights: for a Python factory only: ``.safetensors`` or a state_dict ``.pt``/``.pth``.
        spec_fields: spec fields to fill or override (keys of :data:`SPEC_FLAGS`):
            ``input_shape`` ``(C, H, W)``, ``class_names`` or ``num_classes``,
            ``preprocessing``, ``mean``, ``std``, ``dataset``, ``image_conversion``, ``name``.
        device: where to put the model (``"auto"``/``None``: CUDA if available).
        allow_unverified: load native weights whose SHA-256 differs from the one their
            JSON records (default: refuse them).

    Returns:
        The model in eval mode with its spec and ``model.config``.

    Raises:
        ModelLoadError: anything that keeps the model from loading exactly (the message
            names the problem and the supported forms / flags).
    """
    return open_model(ref, weights=weights, spec_fields=spec_fields, device=device,
                      allow_unverified=allow_unverified).model


def open_model(
    ref: str | os.PathLike | None,
    *,
    weights: str | os.PathLike | None = None,
    spec_fields: Mapping[str, Any] | None = None,
    device: str | torch.device | None = "cpu",
    allow_unverified: bool = False,
) -> LoadedModel:
    """:func:`load_any`, returning a :class:`LoadedModel` that also says which spec
    fields were defaults (so a front end can tell the user)."""
    from convscope.device import resolve_device

    fields = _check_fields(spec_fields)
    try:
        target = resolve_device(device)
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(str(exc)) from None
    text = None if ref is None else os.fspath(ref)
    if text is not None and (not text.strip() or "\x00" in text):
        raise ModelLoadError(f"{text!r} is not a model reference; {SUPPORTED_TEXT}")
    kind, detail = classify(text)
    if weights is not None and kind != "python":
        raise ModelLoadError(
            f"--weights goes with a Python factory (--model FILE.py:FUNCTION); {text or 'the shipped model'} "
            "carries its own weights"
        )
    if kind in ("shipped", "native"):
        loaded = _load_native(text, detail, kind, fields, allow_unverified)
    elif kind == "keras":
        loaded = _load_keras(text, detail, fields)
    else:
        loaded = _load_factory(text, detail, weights, fields)
    model = loaded.model.to(target).eval()
    _check_fits(model, loaded.spec, text)
    return loaded


# ---------------------------------------------------------------------------------------------
# what a reference is


def classify(ref: str | None) -> tuple[str, Any]:
    """What kind of model ``ref`` names, without loading anything.

    Returns:
        ``("shipped", name)``, ``("native", path)``, ``("keras", path)`` or
        ``("python", (file, function))``.

    Raises:
        ModelLoadError: an unsupported kind (ONNX, TorchScript, a pickle, a SavedModel
            folder, an unknown suffix), a ``.py`` without ``:FUNCTION``, or an ambiguous name.
    """
    if ref is None:
        return "shipped", DEFAULT_MODEL
    match = _FACTORY.match(ref)
    if match:
        function = match["function"]
        if not function.isidentifier():
            raise ModelLoadError(
                f"{ref}: after {match['file']}: give the name of the function that builds the model "
                f"(FILE.py:FUNCTION), not {function!r}"
            )
        return "python", (Path(match["file"]), function)
    path = Path(ref)
    suffix = path.suffix.lower()
    if suffix == ".py":
        raise ModelLoadError(
            f"{ref} is a Python file: name the function that builds the model, as {ref}:FUNCTION "
            "(it returns an nn.Module, or (module, spec)); add --weights FILE for its weights"
        )
    if ref in SHIPPED_MODELS:
        clashes = [p for p in paths_for(path) if p.exists()]
        if clashes:
            raise ModelLoadError(
                f"{ref!r} is both a shipped model and the file {clashes[0]}; write {path.with_suffix('.json')} "
                f"for the file, or run from another folder for the shipped model"
            )
        return "shipped", ref
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            raise ModelLoadError(
                f"{ref} is a TensorFlow SavedModel folder, which convscope cannot read; in TensorFlow, load it and "
                f"save it with model.save('model.keras') or model.save('model.h5'); {SUPPORTED_TEXT}"
            )
        raise ModelLoadError(f"{ref} is a folder; --model takes a file; {SUPPORTED_TEXT}")
    if suffix in KERAS_SUFFIXES:
        return "keras", path
    if suffix in NATIVE_SUFFIXES or suffix == "" or not suffix[1:].isalpha():
        if suffix not in NATIVE_SUFFIXES and path.is_file() and not paths_for(path)[1].exists():
            raise ModelLoadError(
                f"{ref} is a file without a known suffix; name it by what it is; {SUPPORTED_TEXT}"
            )
        return "native", path
    raise ModelLoadError(_unsupported(ref, path, suffix))


def _unsupported(ref: str, path: Path, suffix: str) -> str:
    """The one-line message for a file kind convscope does not load."""
    factory_hint = (
        "write a Python factory that builds the model and pass its weights as a state_dict: "
        "--model net.py:FUNCTION --weights weights.pt (saved with torch.save(model.state_dict(), ...))"
    )
    if suffix == ".onnx":
        return f"{ref}: ONNX files are not supported (convscope runs PyTorch modules); {SUPPORTED_TEXT}"
    if suffix in STATE_DICT_SUFFIXES or suffix in (".jit", ".ptl"):
        if path.is_file() and is_torchscript(path):
            return (f"{ref} is a TorchScript archive, which convscope does not run; {factory_hint}")
        if not path.exists():
            return f"{ref} not found (and a PyTorch file alone cannot be a model: {factory_hint})"
        return f"{ref} holds weights or a pickled object, not the code that builds the model; {factory_hint}"
    if suffix in (".pkl", ".pickle", ".joblib", ".dill"):
        return f"{ref}: pickle files are never loaded (unpickling runs arbitrary code); {factory_hint}"
    if suffix in (".pb", ".pbtxt", ".tflite", ".tf"):
        return (f"{ref}: TensorFlow graph files ({suffix}) are not supported; save the Keras model with "
                f"model.save('model.keras') or model.save('model.h5'); {SUPPORTED_TEXT}")
    return f"{ref}: unknown model file type {suffix!r}; {SUPPORTED_TEXT}"


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript zip archive (it holds ``code/`` or ``constants.pkl``)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return any(name.endswith("/constants.pkl") or "/code/" in name for name in names)


# ---------------------------------------------------------------------------------------------
# spec fields


def _check_fields(spec_fields: Mapping[str, Any] | None) -> dict[str, Any]:
    """The given spec fields without ``None`` values; unknown keys are refused."""
    fields = {key: value for key, value in (spec_fields or {}).items() if value is not None}
    unknown = sorted(set(fields) - set(SPEC_FLAGS))
    if unknown:
        raise ModelLoadError(f"unknown spec field(s) {unknown}; known: {', '.join(SPEC_FLAGS)}")
    if "class_names" in fields and "num_classes" in fields and len(fields["class_names"]) != int(fields["num_classes"]):
        raise ModelLoadError(
            f"--class-names names {len(fields['class_names'])} classes but --num-classes says {fields['num_classes']}"
        )
    return fields


def _default_dataset(input_shape: tuple[int, ...], num_classes: int) -> str | None:
    return "mnist" if tuple(input_shape) == (1, 28, 28) and num_classes == 10 else None


def complete_spec(
    given: Mapping[str, Any],
    *,
    input_shape: tuple[int, int, int] | None,
    num_classes: int | None,
    name: str,
    aliases: Mapping[str, str] | None = None,
    where: str = "the model",
) -> tuple[ModelSpec, dict[str, Any]]:
    """A full spec from ``given`` fields plus the documented defaults (module docstring).

    Args:
        given: spec fields known from the model's own source and the user (keys of
            :data:`SPEC_FLAGS` plus ``aliases``); ``None`` values count as missing,
            except ``dataset=None`` (an explicit "unknown").
        input_shape: the shape the model's source records, used when ``given`` has none.
        num_classes: the output count the source records or a forward pass measured.
        name: the default display name.
        aliases: extra layer names (merged under ``given["aliases"]``).
        where: how to name the model in errors.

    Returns:
        ``(spec, defaults)``: ``defaults`` maps each field that took a default to its value.

    Raises:
        ModelLoadError: no input shape, ``meanstd`` without mean/std, or invalid fields.
    """
    # None = not given, except for dataset, where an explicit None means "unknown"
    given = {key: value for key, value in given.items() if value is not None or key == "dataset"}
    defaults: dict[str, Any] = {}
    shape = given.get("input_shape", input_shape)
    if shape is None:
        raise ModelLoadError(
            f"{where} does not say what input it takes: pass --input-shape C,H,W (e.g. 3,32,32); "
            "and, unless the defaults fit, --class-names or --num-classes, --preprocess, --model-dataset"
        )
    try:
        shape = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise ModelLoadError(f"input_shape must be three whole numbers (C, H, W); got {shape!r}") from None
    if "class_names" in given:
        class_names = [str(n) for n in given["class_names"]]
    else:
        count = given.get("num_classes", num_classes)
        if count is None:
            raise ModelLoadError(f"{where}: the number of classes is unknown; pass --num-classes N or --class-names")
        class_names = [str(i) for i in range(int(count))]
        defaults["class_names"] = class_names
    preprocessing = given.get("preprocessing")
    if preprocessing is None:
        preprocessing = defaults["preprocessing"] = DEFAULT_PREPROCESSING
    if preprocessing == "meanstd" and (given.get("mean") is None or given.get("std") is None):
        raise ModelLoadError(f"{where}: preprocessing 'meanstd' needs --mean and --std (one value per channel, 0..1 scale)")
    if preprocessing != "meanstd" and (given.get("mean") is not None or given.get("std") is not None):
        raise ModelLoadError(f"{where}: mean and std apply to preprocessing 'meanstd' only, not {preprocessing!r}")
    if "dataset" in given:
        dataset = given["dataset"]
    else:
        dataset = defaults["dataset"] = _default_dataset(shape, len(class_names))
    conversion = given.get("image_conversion")
    if conversion is None:
        conversion = defaults["image_conversion"] = conversion_for(dataset, shape)
    merged_aliases = {**dict(aliases or {}), **dict(given.get("aliases") or {})}
    try:
        spec = ModelSpec(
            input_shape=shape, class_names=tuple(class_names), preprocessing=preprocessing,
            mean=given.get("mean") if preprocessing == "meanstd" else None,
            std=given.get("std") if preprocessing == "meanstd" else None,
            dataset=dataset, image_conversion=conversion, name=str(given.get("name") or name),
            aliases=merged_aliases,
        )
    except SpecError as exc:
        raise ModelLoadError(f"{where}: {exc}") from None
    return spec, defaults


def _override(spec: ModelSpec, fields: Mapping[str, Any], where: str) -> ModelSpec:
    """``spec`` with the given fields replaced (``num_classes`` renames the classes 0..N-1
    only when it differs from the spec's count)."""
    changes = {key: value for key, value in fields.items() if key not in ("num_classes",)}
    if "class_names" in changes:
        changes["class_names"] = tuple(str(n) for n in changes["class_names"])
    elif "num_classes" in fields and int(fields["num_classes"]) != spec.num_classes:
        changes["class_names"] = tuple(str(i) for i in range(int(fields["num_classes"])))
    if "input_shape" in changes:
        changes["input_shape"] = tuple(changes["input_shape"])
    if changes.get("preprocessing", "meanstd") != "meanstd":
        changes.setdefault("mean", None)
        changes.setdefault("std", None)
    if "dataset" in changes and "image_conversion" not in changes:
        changes["image_conversion"] = conversion_for(changes["dataset"], changes.get("input_shape", spec.input_shape))
    if not changes:
        return spec
    try:
        return spec.replace(**changes)
    except (SpecError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{where}: {exc}") from None


def _config_for(model: nn.Module, spec: ModelSpec, architecture: str, **extra: Any) -> ModelConfig:
    return ModelConfig(
        architecture=architecture,
        layer_names=[name for name, _ in model.named_children()],
        input_shape=list(spec.input_shape), preprocessing=spec.preprocessing, dataset=spec.dataset,
        class_names=list(spec.class_names), mean=None if spec.mean is None else list(spec.mean),
        std=None if spec.std is None else list(spec.std), image_conversion=spec.image_conversion,
        name=spec.name, aliases=dict(spec.aliases), **extra,
    )


def _sync_config(model: nn.Module, spec: ModelSpec) -> None:
    """Attach ``spec`` and make ``model.config``'s spec fields agree with it."""
    from convscope.models.files import config_with_spec

    config = getattr(model, "config", None)
    if isinstance(config, ModelConfig):
        model.config = config_with_spec(config, spec)
    setattr(model, SPEC_ATTRIBUTE, spec)


def _check_fits(model: nn.Module, spec: ModelSpec, ref: str | None) -> None:
    try:
        check_model_fits(model, spec)
    except SpecError as exc:
        raise ModelLoadError(
            f"{ref or 'the model'}: {exc} (check --input-shape, and that --num-classes / --class-names match "
            "the model's outputs)"
        ) from None


# ---------------------------------------------------------------------------------------------
# the four kinds


def _load_native(ref: str | None, detail: Any, kind: str, fields: dict[str, Any], allow_unverified: bool) -> LoadedModel:
    if kind == "shipped":
        path = Path(str(resources.files("convscope") / "shipped" / SHIPPED_MODELS[detail]))
    else:
        path = detail
    try:
        model = load_model(path, device="cpu", verify_hash=not allow_unverified)
    except ModelLoadError:
        raise
    except ModelFileError as exc:
        raise ModelLoadError(str(exc)) from None
    spec = getattr(model, SPEC_ATTRIBUTE)
    if fields:
        _sync_config(model, _override(spec, fields, str(ref)))
    return LoadedModel(model, kind, ref)


def _load_keras(ref: str, path: Path, fields: dict[str, Any]) -> LoadedModel:
    from convscope.importers.keras import KerasImportError, read_keras

    if not path.exists():
        raise ModelLoadError(f"Keras model file {ref} not found")
    try:
        imported = read_keras(path)
    except KerasImportError as exc:
        raise ModelLoadError(str(exc)) from None
    spec, defaults = complete_spec(
        fields, input_shape=imported.input_shape, num_classes=imported.num_classes, name=path.stem,
        aliases=imported.aliases, where=ref,
    )
    model = imported.module
    source = {
        "kind": "keras",
        "file": str(path.resolve()),
        "sha256": imported.source_sha256,
        "format": imported.format,
        "keras_version": imported.keras_version,
        "backend": imported.backend,
        "model_name": imported.model_name,
        "final_activation": imported.final_activation,
        "keras_layers": [
            {"name": row.name, "class": row.keras_class, "output_shape": list(row.output_shape), "params": row.params,
             "module": row.module, "note": row.note}
            for row in imported.layer_table
        ],
        "spec_defaults": sorted(defaults),
    }
    model.config = _config_for(model, spec, GRAPH_ARCHITECTURE, graph=imported.description, source=source)
    setattr(model, SPEC_ATTRIBUTE, spec)
    return LoadedModel(model, "keras", ref, defaults)


def _load_factory(ref: str, detail: tuple[Path, str], weights: str | os.PathLike | None,
                  fields: dict[str, Any]) -> LoadedModel:
    file, function = detail
    result = run_factory(file, function, ref)
    module, extra = _unpack(result, ref, function)
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in module.parameters()
                     if p.is_floating_point() and p.dtype != torch.float32})
    if dtypes:
        raise ModelLoadError(
            f"{ref}: the model's parameters are {', '.join(dtypes)}; convscope feeds float32 inputs: "
            f"return model.float() from {function}()"
        )
    notes: list[str] = []
    source: dict[str, Any] = {"kind": "python", "factory": ref, "file": str(file.resolve()), "sha256": file_sha256(file)}
    if weights is not None:
        weights_path = Path(weights)
        load_weights(module, weights_path, ref)
        source.update(weights=str(weights_path.resolve()), weights_sha256=file_sha256(weights_path))
    else:
        notes.append(f"no --weights given: using the weights {function}() set up")
    module.eval()
    base: dict[str, Any] = {}
    attached = getattr(module, SPEC_ATTRIBUTE, None)
    if isinstance(extra, ModelSpec):
        base = extra.to_dict()
    elif extra is not None:
        base = _factory_fields(extra, ref)
    elif isinstance(attached, ModelSpec):
        base = attached.to_dict()
    given = {**base, **fields}
    if fields.get("preprocessing", "meanstd") != "meanstd":  # a new preprocessing drops the factory's mean / std
        for key in ("mean", "std"):
            if key not in fields:
                given.pop(key, None)
    if "num_classes" in fields and "class_names" not in fields and len(given.get("class_names") or ()) != int(fields["num_classes"]):
        given.pop("class_names", None)  # --num-classes N replaces the factory's names by 0..N-1
    num_classes = None
    if "class_names" not in given and "num_classes" not in given and given.get("input_shape") is not None:
        num_classes = _count_outputs(module, given["input_shape"], ref)
    spec, defaults = complete_spec(given, input_shape=None, num_classes=num_classes, name=function, where=ref)
    module.config = _config_for(module, spec, "python", source={**source, "spec_defaults": sorted(defaults)})
    setattr(module, SPEC_ATTRIBUTE, spec)
    return LoadedModel(module, "python", ref, defaults, tuple(notes))


def _factory_fields(extra: Mapping[str, Any], ref: str) -> dict[str, Any]:
    allowed = {f.name for f in dataclasses.fields(ModelSpec)} | {"num_classes"}
    if not all(isinstance(key, str) for key in extra):
        raise ModelLoadError(f"{ref}: the spec dict's keys must be field names")
    unknown = sorted(set(extra) - allowed)
    if unknown:
        raise ModelLoadError(f"{ref}: the returned spec dict has unknown field(s) {unknown}; known: {', '.join(sorted(allowed))}")
    return dict(extra)


def _unpack(result: Any, ref: str, function: str) -> tuple[nn.Module, ModelSpec | Mapping | None]:
    if isinstance(result, nn.Module):
        return result, None
    if (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module)
            and isinstance(result[1], (ModelSpec, Mapping))):
        return result[0], result[1]
    shown = type(result).__name__
    if isinstance(result, tuple):
        shown = "a tuple of (" + ", ".join(type(item).__name__ for item in result) + ")"
    raise ModelLoadError(
        f"{ref}: {function}() returned {shown}; it must return an nn.Module, (module, ModelSpec) "
        "or (module, dict of spec fields)"
    )


def _count_outputs(module: nn.Module, input_shape: Any, ref: str) -> int:
    """The number of logits ``module`` returns for one zero input (no gradients)."""
    try:
        shape = tuple(int(v) for v in input_shape)
        parameter = next(module.parameters(), None)
        dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
        device = parameter.device if parameter is not None else torch.device("cpu")
        with torch.no_grad():
            output = model_output(module(torch.zeros((1, *shape), dtype=dtype, device=device)))
    except SpecError as exc:
        raise ModelLoadError(f"{ref}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's forward may raise anything
        raise ModelLoadError(
            f"{ref}: the model cannot run on an input of shape (N, {', '.join(map(str, input_shape))}): "
            f"{type(exc).__name__}: {exc}; check --input-shape"
        ) from None
    if output.ndim != 2:
        raise ModelLoadError(f"{ref}: the model returns shape {tuple(output.shape)} for one input; convscope needs (N, classes) logits")
    return int(output.shape[1])


def run_factory(file: Path, function: str, ref: str | None = None) -> Any:
    """Import ``file`` under a unique module name and return ``function()``.

    The file's folder is on ``sys.path`` only while the file is imported and the
    function runs (so it can import modules beside it), and is removed afterwards.

    Raises:
        ModelLoadError: the file is missing, importing it or calling the function
            raises (the message gives the exception and the line in the user's file),
            or the function does not exist.
    """
    ref = ref or f"{file}:{function}"
    if not file.is_file():
        raise ModelLoadError(f"{ref}: Python file {file} not found")
    stem = re.sub(r"\W", "_", file.stem)
    module_name = f"convscope_user_model_{next(_counter)}_{stem}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"{ref}: {file} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    folder = str(file.resolve().parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    sys.modules[module_name] = module
    try:
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's code may raise anything
            sys.modules.pop(module_name, None)
            raise ModelLoadError(f"{ref}: importing {file} raised {_describe_exception(exc, file)}") from None
        target = getattr(module, function, None)
        if target is None or not callable(target):
            defined = sorted(
                name for name, value in vars(module).items()
                if callable(value) and getattr(value, "__module__", None) == module_name and not name.startswith("_")
            )
            what = "has no function" if target is None else "has a non-callable"
            raise ModelLoadError(
                f"{ref}: {file} {what} {function!r}" + (f"; it defines: {', '.join(defined)}" if defined else "")
            )
        try:
            return target()
        except (Exception, SystemExit) as exc:  # noqa: BLE001
            raise ModelLoadError(f"{ref}: {function}() raised {_describe_exception(exc, file)}") from None
    finally:
        if added:
            try:
                sys.path.remove(folder)
            except ValueError:
                pass


def _describe_exception(exc: BaseException, file: Path) -> str:
    """``"ValueError: message (net.py, line 12)"``: the exception and the deepest line of the user's file."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    try:
        target = str(file.resolve())
        frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
                  if frame.filename and Path(frame.filename).resolve() == Path(target)]
    except (OSError, ValueError):
        frames = []
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f"{text} ({file.name}, line {exc.lineno})"
    if frames:
        return f"{text} ({file.name}, line {frames[-1].lineno})"
    return text


# ---------------------------------------------------------------------------------------------
# weights for factories


def read_state_dict(path: Path, ref: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a state_dict ``.pt``/``.pth``/``.bin``/``.ckpt``.

    A ``.pt`` is read with ``torch.load(weights_only=True)``: plain tensors and
    containers only, so a pickled model or any other object is refused *without being
    unpickled*. A checkpoint dict holding the weights under ``"state_dict"`` or
    ``"model_state_dict"`` (and nothing but plain values besides) is accepted.

    Raises:
        ModelLoadError: missing file, unknown suffix, TorchScript, pickled objects,
            or content that is not a mapping of names to tensors.
    """
    where = f"--weights {path}"
    if not path.is_file():
        raise ModelLoadError(f"{where}: file not found" if not path.is_dir() else f"{where} is a folder, not a weights file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except (SafetensorError, Exception) as exc:  # noqa: BLE001 - safetensors raises several types
            raise ModelLoadError(f"{where}: not a readable safetensors file ({exc})") from None
    elif suffix in STATE_DICT_SUFFIXES:
        if is_torchscript(path):
            raise ModelLoadError(
                f"{where} is a TorchScript archive; pass a state_dict saved with torch.save(model.state_dict(), path)"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            detail = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
            found = f" (it contains {detail.group(1)})" if detail else ""
            raise ModelLoadError(
                f"{where} holds pickled Python objects{found}, e.g. a whole model saved with torch.save(model); "
                "convscope never unpickles those: save the weights with torch.save(model.state_dict(), path)"
            ) from None
        except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
            raise ModelLoadError(f"{where}: not a readable PyTorch weights file ({str(exc).splitlines()[0]})") from None
    else:
        raise ModelLoadError(
            f"{where}: unknown weights file type {suffix!r}; give a .safetensors file or a state_dict .pt / .pth"
        )
    if isinstance(state, Mapping) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        for key in ("state_dict", "model_state_dict"):
            inner = state.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                state = inner
                break
    if not isinstance(state, Mapping) or not state or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        shown = type(state).__name__
        if isinstance(state, Mapping):
            shown = f"a dict with keys {sorted(map(str, state))[:8]}"
        raise ModelLoadError(f"{where}: expected a state_dict (names → tensors), found {shown}")
    return dict(state)


def load_weights(module: nn.Module, path: Path, ref: str | None = None) -> None:
    """Load ``path`` (see :func:`read_state_dict`) into ``module``, every tensor checked.

    Raises:
        ModelLoadError: missing, unexpected or wrongly shaped tensors (named), or NaN / inf values.
    """
    state = read_state_dict(path, ref)
    expected = module.state_dict()
    details = state_dict_mismatch(expected, state)
    if details:
        raise ModelLoadError(f"--weights {path} does not fit {ref or 'the model'}: " + "; ".join(details))
    kinds = [k for k in expected if state[k].is_floating_point() != expected[k].is_floating_point()]
    if kinds:
        raise ModelLoadError(f"--weights {path}: tensors {_few(kinds)} are not of the model's kind (float / integer)")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ModelLoadError(f"--weights {path}: tensors {_few(bad)} hold NaN or infinite values")
    module.load_state_dict(state)


def _few(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{', …' if len(names) > limit else ''}] ({len(names)})" if len(names) > limit else f"[{shown}]"


__all__ = [
    "DEFAULT_MODEL", "DEFAULT_PREPROCESSING", "LoadedModel", "ModelLoadError", "SHIPPED_DESCRIPTIONS", "SHIPPED_MODELS", "SPEC_FLAGS",
    "SUPPORTED_FORMS", "SUPPORTED_TEXT", "classify", "complete_spec", "is_torchscript", "load_any", "load_weights",
    "open_model", "read_state_dict", "run_factory",
]
