"""Read a Keras model file into an ``nn.Sequential`` — without TensorFlow or Keras.

Reads, with ``h5py`` and the standard library only:

* legacy HDF5 files (``model.save("m.h5")``) written by Keras 2 / tf-keras
  (``"h5-keras2"``) and by Keras 3 (``"h5-keras3"``): the model's JSON config in the
  ``model_config`` attribute, weights under ``model_weights/<layer>/`` in the order
  of each layer group's ``weight_names``;
* Keras 3 (and tf-keras ≥ 2.13) ``.keras`` zips (``"keras-zip"``): ``config.json``
  plus ``model.weights.h5``, whose weights sit under ``layers/<key>/vars/0, 1, …``
  (``key`` = the snake-cased class name, numbered per class in layer order; newer
  files also name the layer in the group's ``name`` attribute).

Supported: ``Sequential`` models and functional models that are one linear chain,
with one image input ``(H, W, C)`` and a vector output, built from InputLayer,
Conv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D,
ZeroPadding2D, Flatten, Dense, Dropout, BatchNormalization, Activation, ReLU,
LeakyReLU, ELU and Softmax, channels-last, with the activations relu, sigmoid, tanh,
elu, selu, leaky_relu, softmax, gelu, silu/swish and linear. Anything else is
refused with one :class:`KerasImportError` naming the layer, its class and what is
supported; the importer never returns a model that computes something else than
the Keras model.

How the Keras model becomes modules (all exact, within float rounding):

* Keras layer names are kept as the top-level children's names; the InputLayer is dropped.
* A Keras layer with an activation becomes ``nn.Sequential(conv|linear, <activation>)``
  (children ``conv``/``linear`` and ``relu``, ``tanh``, …), so ``dense_14`` is
  post-activation and ``dense_14.linear`` the pre-activation; a layer without
  activation is the plain module.
* TensorFlow's "same" padding (asymmetric when the total is odd: the extra row / column
  at the bottom / right) becomes a ``pad`` child where PyTorch's symmetric padding
  cannot express it; max-pooling pads with ``-inf``, average pooling leaves the padding
  out of the mean (:class:`~convscope.models.graph.PaddedAvgPool2d`).
* Flatten: PyTorch flattens ``(C, H, W)`` channel-major, Keras ``(H, W, C)``
  channels-last. The rows of the first Dense kernel after a Flatten (and the
  parameters of a BatchNormalization in between) are permuted, so the imported
  model computes Keras' function; the 1-D values between the Flatten and that Dense
  are held in PyTorch order (``KerasLayer.channels_last_of`` says which).
* A final softmax (the last layer's activation, or a trailing Activation / Softmax
  layer) is removed: the module returns logits and convscope's ``probabilities``
  pseudo-layer is the softmax (``final_activation == "softmax"``; a removed trailing
  layer is listed in ``aliases``).

Files are untrusted: no pickle, no ``eval``, JSON size and nesting bounded, HDF5 links
and external storage refused, every weight's shape checked before it is read.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from convscope.io import file_sha256
from convscope.models.graph import GlobalPool2d, PaddedAvgPool2d, describe

#: Largest JSON config read (bytes).
MAX_JSON_BYTES = 16 * 1024 * 1024
#: Deepest JSON nesting accepted in a config.
MAX_JSON_DEPTH = 64
#: Most layers in one model.
MAX_LAYERS = 10_000
#: Most weight elements in one model (about 2 GB of float32).
MAX_PARAMETERS = 500_000_000
#: Largest ``model.weights.h5`` read out of a ``.keras`` zip (bytes).
MAX_WEIGHTS_BYTES = 2 * 1024 * 1024 * 1024

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"
_PSEUDO_LAYERS = ("logits", "probabilities")

SUPPORTED_LAYERS = (
    "InputLayer", "Conv2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
    "ZeroPadding2D", "Flatten", "Dense", "Dropout", "BatchNormalization", "Activation", "ReLU", "LeakyReLU",
    "ELU", "Softmax",
)
SUPPORTED_ACTIVATIONS = ("relu", "sigmoid", "tanh", "elu", "selu", "leaky_relu", "softmax", "gelu", "silu", "swish",
                         "linear")
_SUPPORTED_TEXT = (
    f"supported layers: {', '.join(SUPPORTED_LAYERS)} (channels-last, one linear chain, one image input); "
    f"activations: {', '.join(SUPPORTED_ACTIVATIONS)}"
)


class KerasImportError(ValueError):
    """A Keras file that cannot be imported exactly (unsupported layer or graph, bad or corrupt file)."""


@dataclass(frozen=True)
class KerasLayer:
    """One row of the imported model's Keras-style summary.

    Attributes:
        name: the Keras layer name.
        keras_class: its Keras class (``"Conv2D"``).
        output_shape: the layer's output per sample in PyTorch order, ``(C, H, W)`` or ``(F,)``.
        params: its parameter count as Keras counts it (BatchNormalization: 4 × channels,
            moving statistics included).
        module: the top-level child of :attr:`KerasImport.module` that computes it, or
            ``None`` when the layer was dropped (InputLayer; a removed final softmax,
            see :attr:`KerasImport.aliases`).
        channels_last_of: for 1-D outputs between a Flatten and the next Dense: the
            ``(C, H, W)`` map they flatten. The imported model holds these features in
            PyTorch's channel-major order; Keras holds them in channels-last order.
        note: what differs from the Keras layer, if anything (``"softmax removed: outputs logits"``).
    """

    name: str
    keras_class: str
    output_shape: tuple[int, ...]
    params: int
    module: str | None
    channels_last_of: tuple[int, int, int] | None = None
    note: str = ""


@dataclass
class KerasImport:
    """A Keras model read into PyTorch.

    Attributes:
        module: ``nn.Sequential`` in eval mode whose top-level children carry the Keras
            layer names; input ``(N, C, H, W)`` float32, output ``(N, num_classes)``
            (logits when a final softmax was removed).
        input_shape: ``(C, H, W)`` of one input.
        num_classes: length of the output vector.
        final_activation: ``"softmax"`` when a final softmax was removed, else ``None``.
        layer_table: one :class:`KerasLayer` per Keras layer, in order, as Keras'
            ``model.summary()`` lists them (functional models list their InputLayer).
        aliases: Keras layer names that are no longer modules → the name to use instead
            (a trailing ``Activation('softmax')`` layer → ``"probabilities"``; a layer
            renamed because its name is not a valid convscope address → its new name).
        keras_version: Keras version that wrote the file, if recorded.
        backend: Keras backend that wrote it (``"tensorflow"``), if recorded.
        source: the file read.
        source_sha256: SHA-256 (hex) of that file.
        format: ``"h5-keras2"``, ``"h5-keras3"`` or ``"keras-zip"``.
        model_name: the Keras model's name (``"sequential_7"``).
        description: :func:`convscope.models.graph.describe` of :attr:`module`.
    """

    module: nn.Sequential
    input_shape: tuple[int, int, int]
    num_classes: int
    final_activation: str | None
    layer_table: list[KerasLayer]
    aliases: dict[str, str]
    keras_version: str | None
    backend: str | None
    source: Path
    source_sha256: str
    format: str
    model_name: str
    description: dict = field(repr=False)

    @property
    def total_params(self) -> int:
        """Parameter count as Keras' summary totals it."""
        return sum(row.params for row in self.layer_table)


# ---------------------------------------------------------------------------------------------
# small helpers


def _snake_case(name: str) -> str:
    """Keras' class-name → weights-group key conversion (``"LeakyReLU"`` → ``"leaky_re_lu"``)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _check_depth(value: Any, where: str) -> None:
    """Refuse JSON nested deeper than :data:`MAX_JSON_DEPTH` (iteratively: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise KerasImportError(f"{where}: the JSON config is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _parse_json(raw: Any, where: str) -> Any:
    if isinstance(raw, np.ndarray) and raw.shape == ():
        raw = raw.item()
    if isinstance(raw, (bytes, bytearray, np.bytes_)):
        raw = bytes(raw)
    elif not isinstance(raw, str):
        raise KerasImportError(f"{where}: the model config is not text")
    if len(raw) > MAX_JSON_BYTES:
        raise KerasImportError(f"{where}: the model config is larger than {MAX_JSON_BYTES // (1024 * 1024)} MiB")

    def constant(name: str) -> None:
        raise KerasImportError(f"{where}: the model config holds the non-standard JSON value {name}")

    try:
        value = json.loads(raw, parse_constant=constant)
    except RecursionError:
        raise KerasImportError(f"{where}: the JSON config is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as error:
        if isinstance(error, KerasImportError):
            raise
        raise KerasImportError(f"{where}: the model config is not valid JSON ({error})") from None
    _check_depth(value, where)
    return value


def _text_attr(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


# ---------------------------------------------------------------------------------------------
# reading HDF5 safely


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        raise KerasImportError("reading Keras files needs the h5py package: pip install 'h5py>=3.8'") from None
    return h5py


def _child(group: Any, path: str, where: str) -> Any:
    """``group[path]`` following hard links only (no soft / external links into other files)."""
    h5py = _h5py()
    node = group
    for part in [p for p in path.split("/") if p]:
        try:
            link = node.get(part, getlink=True)
        except (KeyError, TypeError, ValueError, OSError, AttributeError):
            link = None
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            raise KerasImportError(f"{where}: the file links {path!r} elsewhere ({type(link).__name__}); refused")
        try:
            node = node[part]
        except (KeyError, ValueError, OSError) as error:
            raise KerasImportError(f"{where}: cannot read {path!r} ({error})") from None
    return node


def _string_list_attr(group: Any, name: str) -> list[str]:
    """A list-of-strings attribute, also when Keras split it into ``name0``, ``name1``, … chunks."""
    attrs = group.attrs
    if name in attrs:
        chunks = [attrs[name]]
    else:
        chunks, index = [], 0
        while f"{name}{index}" in attrs and index < MAX_LAYERS:
            chunks.append(attrs[f"{name}{index}"])
            index += 1
    out: list[str] = []
    for chunk in chunks:
        for item in np.atleast_1d(np.asarray(chunk)).tolist():
            out.append(item.decode("utf-8") if isinstance(item, bytes) else str(item))
    return out


def _read_array(dataset: Any, shape: tuple[int, ...], where: str) -> np.ndarray:
    h5py = _h5py()
    if not isinstance(dataset, h5py.Dataset):
        raise KerasImportError(f"{where}: expected a weight array, found a group")
    if dataset.external or dataset.is_virtual:
        raise KerasImportError(f"{where}: the weight is stored outside the file; refused")
    if tuple(dataset.shape) != tuple(shape):
        raise KerasImportError(f"{where}: the weight has shape {tuple(dataset.shape)}, the layer's config needs {tuple(shape)}")
    if dataset.dtype.kind != "f":
        raise KerasImportError(f"{where}: the weight has dtype {dataset.dtype}; only floating-point weights are supported")
    try:
        value = dataset[()]
    except (OSError, ValueError, TypeError) as error:
        raise KerasImportError(f"{where}: cannot read the weight ({error})") from None
    value = np.asarray(value, dtype=np.float32)
    if not np.isfinite(value).all():
        raise KerasImportError(f"{where}: the weight holds NaN or infinite values")
    return value


# ---------------------------------------------------------------------------------------------
# the weights of one layer, per file format

# A weight: (role, Keras shape); the reader returns the arrays in this order.
_Spec = list[tuple[str, tuple[int, ...]]]


class _LegacyWeights:
    """``model_weights/<layer>/`` of a legacy HDF5 file: arrays named by ``weight_names``."""

    def __init__(self, group: Any, where: str) -> None:
        self.group, self.where = group, where

    def read(self, layer: str, keras_class: str, spec: _Spec) -> list[np.ndarray]:
        where = f"layer {layer!r} ({keras_class})"
        layer_group = _child(self.group, layer, self.where)
        names = _string_list_attr(layer_group, "weight_names") if layer_group is not None else []
        if len(names) != len(spec):
            found = ", ".join(names) or "none"
            raise KerasImportError(
                f"{where}: the file holds {len(names)} weight(s) ({found}); the layer's config needs "
                f"{len(spec)} ({', '.join(role for role, _ in spec) or 'none'}) — a missing or extra weight"
            )
        arrays = []
        for name, (role, shape) in zip(names, spec):
            base = name.split("/")[-1].split(":")[0]
            if base != role:
                raise KerasImportError(f"{where}: weight {name!r} found where {role!r} was expected")
            dataset = _child(layer_group, name, where)
            if dataset is None:
                raise KerasImportError(f"{where}: weight {name!r} is listed but missing from the file")
            arrays.append(_read_array(dataset, shape, f"{where}, weight {role!r}"))
        return arrays


class _ZipWeights:
    """``layers/<key>/vars/<i>`` of a ``.keras`` zip's ``model.weights.h5``."""

    def __init__(self, weights: Any, config_layers: list[dict], sequential: bool, where: str) -> None:
        self.where = where
        layers_group = _child(weights, "layers", where)
        self.by_name: dict[str, Any] = {}
        self.by_key: dict[str, Any] = {}
        if layers_group is None:
            return
        h5py = _h5py()
        for key in list(layers_group.keys())[:MAX_LAYERS]:
            vars_group = _child(layers_group, f"{key}/vars", where)
            if vars_group is None or not isinstance(vars_group, h5py.Group):
                continue
            self.by_key[key] = vars_group
            name = _text_attr(vars_group.attrs.get("name"))
            if name is not None:
                self.by_name[name] = vars_group
        # Files without names: Keras numbers the groups per class, in the model's layer order
        # (Sequential models leave their InputLayer out of that order).
        used: dict[str, int] = {}
        self.key_of: dict[str, str] = {}
        for entry in config_layers:
            if sequential and entry["class_name"] == "InputLayer":
                continue
            base = _snake_case(entry["class_name"])
            key = base if base not in used else f"{base}_{used[base] + 1}"
            used[base] = used.get(base, -1) + 1
            self.key_of[entry["name"]] = key

    def read(self, layer: str, keras_class: str, spec: _Spec) -> list[np.ndarray]:
        where = f"layer {layer!r} ({keras_class})"
        group = self.by_name.get(layer) if self.by_name else self.by_key.get(self.key_of.get(layer, ""))
        count = 0 if group is None else len(group.keys())
        if count != len(spec):
            raise KerasImportError(
                f"{where}: the weights file holds {count} weight(s) for it; the layer's config needs {len(spec)} "
                f"({', '.join(role for role, _ in spec) or 'none'}) — a missing or extra weight"
            )
        arrays = []
        for index, (role, shape) in enumerate(spec):
            dataset = _child(group, str(index), where)
            if dataset is None:
                raise KerasImportError(f"{where}: weight #{index} ({role}) is missing from the weights file")
            arrays.append(_read_array(dataset, shape, f"{where}, weight {role!r}"))
        return arrays


# ---------------------------------------------------------------------------------------------
# the model config: a linear chain of layers


@dataclass
class _Layer:
    name: str
    keras_class: str
    config: dict


def _layer_entries(model_config: dict, where: str) -> tuple[str, str, list[dict]]:
    """``(model class, model name, [{"class_name", "name", "config", ...}])`` from the top-level config."""
    if not isinstance(model_config, dict) or not isinstance(model_config.get("class_name"), str):
        raise KerasImportError(f"{where}: the model config has no 'class_name'; is this a Keras model file?")
    model_class = model_config["class_name"]
    body = model_config.get("config")
    if isinstance(body, list):  # very old Keras 2 Sequential configs: a plain list of layers
        body = {"layers": body, "name": "sequential"}
    if not isinstance(body, dict) or not isinstance(body.get("layers"), list):
        raise KerasImportError(f"{where}: the {model_class} config has no layer list")
    entries = body["layers"]
    if len(entries) > MAX_LAYERS:
        raise KerasImportError(f"{where}: more than {MAX_LAYERS} layers")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str) \
                or not isinstance(entry.get("config"), dict):
            raise KerasImportError(f"{where}: layer #{index} of the config is malformed")
        name = entry.get("name", entry["config"].get("name"))
        if not isinstance(name, str) or not name:
            raise KerasImportError(f"{where}: layer #{index} ({entry['class_name']}) has no name")
        entry["name"] = name
    seen: set[str] = set()
    for entry in entries:
        if entry["name"] in seen:
            raise KerasImportError(f"{where}: two layers are named {entry['name']!r}; Keras layer names must be unique")
        seen.add(entry["name"])
    return model_class, str(body.get("name", "model")), entries


def _endpoints(value: Any, what: str, where: str) -> list[str]:
    """Layer names of ``input_layers`` / ``output_layers`` (``[[name, 0, 0], …]`` or Keras 3's ``[name, 0, 0]``)."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, list) and v and isinstance(v[0], str) for v in value):
        raise KerasImportError(f"{where}: cannot read the model's {what}")
    return [v[0] for v in value]


def _inbound(entry: dict, where: str) -> list[str]:
    """Names of the layers feeding ``entry`` (Keras 2 and Keras 3 functional configs)."""
    nodes = entry.get("inbound_nodes", [])
    layer = f"layer {entry['name']!r} ({entry['class_name']})"
    if not isinstance(nodes, list):
        raise KerasImportError(f"{where}: {layer} has unreadable inbound nodes")
    if len(nodes) > 1:
        raise KerasImportError(
            f"{layer} is called {len(nodes)} times (a shared layer); only a linear chain of layers is supported")
    if not nodes:
        return []
    node = nodes[0]
    sources: list[str] = []
    if isinstance(node, list):  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
        for ref in node:
            if not isinstance(ref, list) or len(ref) < 3 or not isinstance(ref[0], str):
                raise KerasImportError(f"{where}: {layer} has unreadable inbound nodes")
            if len(ref) > 3 and ref[3] not in ({}, None):
                _check_call_kwargs(ref[3], layer)
            sources.append(ref[0])
    elif isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        args, kwargs = node.get("args", []), node.get("kwargs", {})
        _check_call_kwargs(kwargs, layer)
        if not isinstance(args, list):
            raise KerasImportError(f"{where}: {layer} has unreadable inbound nodes")
        for arg in args:
            tensors = arg if isinstance(arg, list) else [arg]
            for tensor in tensors:
                history = tensor.get("config", {}).get("keras_history") if isinstance(tensor, dict) else None
                if not (isinstance(tensor, dict) and tensor.get("class_name") == "__keras_tensor__"
                        and isinstance(history, list) and history and isinstance(history[0], str)):
                    raise KerasImportError(
                        f"{layer} is called with a non-tensor argument; only a linear chain of layers is supported")
                sources.append(history[0])
    else:
        raise KerasImportError(f"{where}: {layer} has unreadable inbound nodes")
    return sources


def _check_call_kwargs(kwargs: Any, layer: str) -> None:
    if not isinstance(kwargs, dict):
        raise KerasImportError(f"{layer} has unreadable call arguments")
    for key, value in kwargs.items():
        if key in ("training", "mask") and value in (None, False):
            continue
        raise KerasImportError(
            f"{layer} is called with {key}={value!r}; only plain calls (no training/mask arguments) are supported")


def _chain(model_config: dict, where: str) -> tuple[str, str, list[dict], bool]:
    """The layers of a Sequential or linear functional model, input first.

    Returns ``(model class, model name, entries, functional)``.
    """
    model_class, model_name, entries = _layer_entries(model_config, where)
    if model_class == "Sequential":
        return model_class, model_name, entries, False
    if model_class not in ("Functional", "Model"):
        raise KerasImportError(
            f"{where}: the model is a {model_class}; only Sequential and functional (Model) models can be read "
            "without their Python code")
    body = model_config["config"]
    inputs = _endpoints(body.get("input_layers"), "inputs", where)
    outputs = _endpoints(body.get("output_layers"), "outputs", where)
    if len(inputs) != 1:
        raise KerasImportError(f"the model has {len(inputs)} inputs ({', '.join(inputs)}); only single-input models are supported")
    if len(outputs) != 1:
        raise KerasImportError(f"the model has {len(outputs)} outputs ({', '.join(outputs)}); only single-output models are supported")
    by_name = {entry["name"]: entry for entry in entries}
    consumers: dict[str, list[str]] = {name: [] for name in by_name}
    feeds: dict[str, str] = {}
    for entry in entries:
        sources = _inbound(entry, where)
        if len(sources) > 1:
            raise KerasImportError(
                f"layer {entry['name']!r} ({entry['class_name']}) merges {len(sources)} inputs "
                f"({', '.join(sources)}): a branch in the graph; only a linear chain of layers is supported")
        for source in sources:
            if source not in by_name:
                raise KerasImportError(f"{where}: layer {entry['name']!r} reads from an unknown layer {source!r}")
            consumers[source].append(entry["name"])
            feeds[entry["name"]] = source
    for name, users in consumers.items():
        if len(users) > 1:
            raise KerasImportError(
                f"layer {name!r} ({by_name[name]['class_name']}) feeds {len(users)} layers ({', '.join(users)}): "
                "a branch in the graph; only a linear chain of layers is supported")
    # Walk back from the output to the input.
    order, name, seen = [], outputs[0], set()
    while True:
        if name not in by_name or name in seen:
            raise KerasImportError(f"{where}: the layer graph is malformed around {name!r}")
        seen.add(name)
        order.append(by_name[name])
        if name not in feeds:
            break
        name = feeds[name]
    order.reverse()
    if order[0]["name"] != inputs[0]:
        raise KerasImportError(f"{where}: the output does not depend on the input {inputs[0]!r}")
    unused = [entry["name"] for entry in entries if entry["name"] not in seen]
    if unused:
        raise KerasImportError(
            f"layer(s) {', '.join(repr(u) for u in unused)} are not on the path from input to output; "
            "only a linear chain of layers is supported")
    return model_class, model_name, order, True


# ---------------------------------------------------------------------------------------------
# layer conversion


class _Config:
    """Typed reads of one layer's Keras config; errors name the layer."""

    def __init__(self, layer: _Layer) -> None:
        self.layer, self.c = layer, layer.config

    def fail(self, message: str) -> KerasImportError:
        return KerasImportError(f"layer {self.layer.name!r} ({self.layer.keras_class}): {message}")

    def get(self, key: str, default: Any = None) -> Any:
        return self.c.get(key, default)

    def int(self, key: str, default: Any = None, minimum: int = 1) -> int:
        value = self.c.get(key, default)
        if type(value) is not int or not minimum <= value <= 1 << 24:
            raise self.fail(f"{key} must be an integer ≥ {minimum}, got {value!r}")
        return value

    def pair(self, key: str, default: Any = None, minimum: int = 1) -> tuple[int, int]:
        value = self.c.get(key, default)
        if type(value) is int:
            value = [value, value]
        if (not isinstance(value, list) or len(value) != 2
                or any(type(v) is not int or not minimum <= v <= 1 << 24 for v in value)):
            raise self.fail(f"{key} must be two integers ≥ {minimum}, got {value!r}")
        return value[0], value[1]

    def number(self, key: str, default: Any = None, minimum: float = -math.inf) -> float:
        value = self.c.get(key, default)
        if type(value) not in (int, float) or not math.isfinite(value) or value < minimum:
            raise self.fail(f"{key} must be a finite number ≥ {minimum}, got {value!r}")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.c.get(key, default)
        if type(value) is not bool:
            raise self.fail(f"{key} must be true or false, got {value!r}")
        return value

    def channels_last(self) -> None:
        fmt = self.c.get("data_format", "channels_last")
        if fmt != "channels_last":
            raise self.fail(f"data_format {fmt!r} is not supported; only channels_last (Keras' default) is")

    def padding(self) -> str:
        value = self.c.get("padding", "valid")
        value = value.lower() if isinstance(value, str) else value
        if value not in ("valid", "same"):
            raise self.fail(f"padding {value!r} is not supported; only 'valid' and 'same' are")
        return value

    def refuse(self, key: str, allowed: tuple = (None,)) -> None:
        value = self.c.get(key)
        if not any(value == a and type(value) is type(a) for a in allowed):
            raise self.fail(f"{key}={value!r} is not supported")


def _activation_name(value: Any, cfg: _Config) -> str | None:
    """Canonical activation name (``None`` for linear)."""
    if isinstance(value, dict):  # a serialised built-in function
        inner = value.get("config")
        if value.get("class_name") == "function" and isinstance(inner, str):
            value = inner
        elif isinstance(value.get("class_name"), str) and value.get("class_name") in SUPPORTED_ACTIVATIONS:
            value = value["class_name"]
    if value is None:
        return None
    if not isinstance(value, str):
        raise cfg.fail(f"activation {value!r} is not supported; supported: {', '.join(SUPPORTED_ACTIVATIONS)}")
    name = value.split(">")[-1].lower()
    name = {"swish": "silu", "linear": None}.get(name, name)
    if name is not None and name not in SUPPORTED_ACTIVATIONS:
        raise cfg.fail(f"activation {value!r} is not supported; supported: {', '.join(SUPPORTED_ACTIVATIONS)}")
    return name


def _activation_module(name: str, param: float | None = None) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    if name == "elu":
        return nn.ELU(alpha=1.0 if param is None else param)
    if name == "selu":
        return nn.SELU()
    if name == "leaky_relu":  # Keras' activation function defaults to a slope of 0.2
        return nn.LeakyReLU(0.2 if param is None else param)
    if name == "softmax":  # Keras: last axis = channels / features = dim 1 in PyTorch
        return nn.Softmax(dim=1)
    if name == "gelu":  # Keras' gelu is the exact (erf) form unless approximate=True
        return nn.GELU()
    if name == "silu":
        return nn.SiLU()
    raise AssertionError(name)  # pragma: no cover


def _same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int, int]:
    """TensorFlow's "same": output size and the (before, after) padding; the extra one goes after."""
    out = -(-size // stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return out, total // 2, total - total // 2


def _valid_size(size: int, kernel: int, stride: int, dilation: int, cfg: _Config) -> int:
    effective = (kernel - 1) * dilation + 1
    if size < effective:
        raise cfg.fail(f"its window ({effective}) is larger than its input ({size})")
    return (size - effective) // stride + 1


@dataclass
class _State:
    shape: tuple[int, ...]                          # current per-sample shape, PyTorch order
    pending: tuple[int, int, int] | None = None     # (C, H, W) flattened, not yet absorbed by a Dense


@dataclass
class _Converted:
    module: nn.Module | None
    shape: tuple[int, ...]
    params: int
    note: str = ""


def _wrap(parts: list[tuple[str, nn.Module]]) -> nn.Module:
    return parts[0][1] if len(parts) == 1 else nn.Sequential(OrderedDict(parts))


def _set(param: torch.Tensor, value: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def _flatten_index(pending: tuple[int, int, int]) -> np.ndarray:
    """For each PyTorch flat position ``(c, h, w)``, the Keras (channels-last) flat position."""
    c, h, w = pending
    return np.arange(c * h * w).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)


def _needs_image(cfg: _Config, state: _State) -> tuple[int, int, int]:
    if len(state.shape) != 3:
        raise cfg.fail(f"needs an image-shaped input (H, W, C), but its input has shape {state.shape}")
    return state.shape  # type: ignore[return-value]


def _conv2d(cfg: _Config, state: _State, read: Callable[[_Spec], list[np.ndarray]], drop_softmax: bool) -> _Converted:
    cfg.channels_last()
    cfg.refuse("lora_rank", (None, 0))
    cfg.refuse("quantization_config")
    channels, height, width = _needs_image(cfg, state)
    filters = cfg.int("filters")
    kh, kw = cfg.pair("kernel_size")
    sh, sw = cfg.pair("strides", [1, 1])
    dh, dw = cfg.pair("dilation_rate", [1, 1])
    groups = cfg.int("groups", 1)
    if (sh > 1 or sw > 1) and (dh > 1 or dw > 1):
        raise cfg.fail("strides > 1 together with dilation_rate > 1 is not supported (Keras refuses it too)")
    if channels % groups or filters % groups:
        raise cfg.fail(f"{channels} input channels and {filters} filters are not divisible by groups={groups}")
    use_bias = cfg.flag("use_bias", True)
    activation = _activation_name(cfg.get("activation"), cfg)
    spec: _Spec = [("kernel", (kh, kw, channels // groups, filters))] + ([("bias", (filters,))] if use_bias else [])
    kernel, *bias = read(spec)
    if cfg.padding() == "same":
        out_h, top, bottom = _same_padding(height, kh, sh, dh)
        out_w, left, right = _same_padding(width, kw, sw, dw)
    else:
        out_h, out_w = _valid_size(height, kh, sh, dh, cfg), _valid_size(width, kw, sw, dw, cfg)
        top = bottom = left = right = 0
    symmetric = top == bottom and left == right
    conv = nn.Conv2d(channels, filters, (kh, kw), stride=(sh, sw), padding=(top, left) if symmetric else 0,
                     dilation=(dh, dw), groups=groups, bias=use_bias)
    _set(conv.weight, kernel.transpose(3, 2, 0, 1))
    if use_bias:
        _set(conv.bias, bias[0])
    parts: list[tuple[str, nn.Module]] = []
    if not symmetric:
        parts.append(("pad", nn.ZeroPad2d((left, right, top, bottom))))
    parts.append(("conv", conv))
    note = ""
    if activation == "softmax" and drop_softmax:
        note = "softmax removed: outputs logits"
    elif activation is not None:
        parts.append((activation, _activation_module(activation)))
    return _Converted(_wrap(parts), (filters, out_h, out_w), sum(a.size for a in [kernel, *bias]), note)


def _dense(cfg: _Config, state: _State, read: Callable[[_Spec], list[np.ndarray]], drop_softmax: bool) -> _Converted:
    cfg.refuse("lora_rank", (None, 0))
    cfg.refuse("quantization_config")
    if len(state.shape) != 1:
        raise cfg.fail(f"Dense on a {len(state.shape)}-D input {state.shape} is not supported; "
                       "put a Flatten or a global pooling layer before it")
    units = cfg.int("units")
    use_bias = cfg.flag("use_bias", True)
    activation = _activation_name(cfg.get("activation"), cfg)
    spec: _Spec = [("kernel", (state.shape[0], units))] + ([("bias", (units,))] if use_bias else [])
    kernel, *bias = read(spec)
    if state.pending is not None:  # Keras flattened channels-last: reorder the input rows
        kernel = kernel[_flatten_index(state.pending)]
        state.pending = None
    linear = nn.Linear(state.shape[0], units, bias=use_bias)
    _set(linear.weight, kernel.T)
    if use_bias:
        _set(linear.bias, bias[0])
    note = ""
    parts: list[tuple[str, nn.Module]] = [("linear", linear)]
    if activation == "softmax" and drop_softmax:
        note = "softmax removed: outputs logits"
    elif activation is not None:
        parts.append((activation, _activation_module(activation)))
    return _Converted(_wrap(parts), (units,), sum(a.size for a in [kernel, *bias]), note)


def _pooling(cfg: _Config, state: _State, kind: str) -> _Converted:
    cfg.channels_last()
    channels, height, width = _needs_image(cfg, state)
    kh, kw = cfg.pair("pool_size", [2, 2])
    strides = cfg.get("strides")
    sh, sw = (kh, kw) if strides is None else cfg.pair("strides")
    if cfg.padding() == "same":
        out_h, top, bottom = _same_padding(height, kh, sh)
        out_w, left, right = _same_padding(width, kw, sw)
    else:
        out_h, out_w = _valid_size(height, kh, sh, 1, cfg), _valid_size(width, kw, sw, 1, cfg)
        top = bottom = left = right = 0
    padded = (top, bottom, left, right) != (0, 0, 0, 0)
    if kind == "max":
        if not padded or (top == bottom and left == right):
            module: nn.Module = nn.MaxPool2d((kh, kw), (sh, sw), padding=(top, left))  # pads with -inf
        else:
            module = nn.Sequential(OrderedDict([
                ("pad", nn.ConstantPad2d((left, right, top, bottom), float("-inf"))),
                ("pool", nn.MaxPool2d((kh, kw), (sh, sw))),
            ]))
    elif padded:  # Keras' "same" average leaves the padding out of the mean
        module = PaddedAvgPool2d((kh, kw), (sh, sw), (left, right, top, bottom))
    else:
        module = nn.AvgPool2d((kh, kw), (sh, sw))
    return _Converted(module, (channels, out_h, out_w), 0)


def _global_pool(cfg: _Config, state: _State, mode: str) -> _Converted:
    cfg.channels_last()
    if cfg.get("keepdims", False) is not False:
        raise cfg.fail("keepdims=True is not supported")
    channels, _, _ = _needs_image(cfg, state)
    return _Converted(GlobalPool2d(mode), (channels,), 0)


def _zero_padding(cfg: _Config, state: _State) -> _Converted:
    cfg.channels_last()
    channels, height, width = _needs_image(cfg, state)
    value = cfg.get("padding", [[1, 1], [1, 1]])
    if type(value) is int:
        value = [[value, value], [value, value]]
    if isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value):
        value = [[value[0], value[0]], [value[1], value[1]]]
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, list) and len(v) == 2 and all(type(p) is int and 0 <= p <= 1 << 16 for p in v)
                       for v in value)):
        raise cfg.fail(f"cannot read its padding {value!r}")
    (top, bottom), (left, right) = value
    module = nn.ZeroPad2d((left, right, top, bottom))
    return _Converted(module, (channels, height + top + bottom, width + left + right), 0)


def _flatten(cfg: _Config, state: _State) -> _Converted:
    cfg.channels_last()
    if len(state.shape) == 3:
        channels, height, width = state.shape
        if channels > 1 and height * width > 1:
            state.pending = (channels, height, width)
    size = int(np.prod(state.shape))
    return _Converted(nn.Flatten(), (size,), 0)


def _batch_norm(cfg: _Config, state: _State, read: Callable[[_Spec], list[np.ndarray]]) -> _Converted:
    rank = len(state.shape) + 1  # with the batch axis
    axis = cfg.get("axis", -1)
    if isinstance(axis, list) and len(axis) == 1:
        axis = axis[0]
    if axis not in (-1, rank - 1) or type(axis) is not int:
        raise cfg.fail(f"axis={cfg.get('axis')!r} is not supported; only the channel (last) axis is")
    for key in ("renorm", "synchronized"):
        if cfg.get(key, False):
            raise cfg.fail(f"{key}=True is not supported")
    if len(state.shape) not in (1, 3):
        raise cfg.fail(f"input of shape {state.shape} is not supported")
    center, scale = cfg.flag("center", True), cfg.flag("scale", True)
    epsilon = cfg.number("epsilon", 1e-3, 0.0)
    momentum = cfg.number("momentum", 0.99, 0.0)
    features = state.shape[0]
    spec: _Spec = ([("gamma", (features,))] if scale else []) + ([("beta", (features,))] if center else []) + [
        ("moving_mean", (features,)), ("moving_variance", (features,))]
    arrays = read(spec)
    values = dict(zip([role for role, _ in spec], arrays))
    if state.pending is not None:  # features between Flatten and Dense are held in PyTorch order
        index = _flatten_index(state.pending)
        values = {role: value[index] for role, value in values.items()}
    if (values["moving_variance"] + epsilon <= 0).any():
        raise cfg.fail("moving_variance + epsilon is not positive")
    cls = nn.BatchNorm2d if len(state.shape) == 3 else nn.BatchNorm1d
    affine = scale or center
    # PyTorch's momentum weighs the new batch, Keras' the running value (training only).
    module = cls(features, eps=epsilon, momentum=min(max(1.0 - momentum, 0.0), 1.0), affine=affine)
    if affine:  # a missing gamma / beta is Keras' constant 1 / 0
        _set(module.weight, values.get("gamma", np.ones(features, np.float32)))
        _set(module.bias, values.get("beta", np.zeros(features, np.float32)))
    _set(module.running_mean, values["moving_mean"])
    _set(module.running_var, values["moving_variance"])
    return _Converted(module, state.shape, sum(a.size for a in arrays))


def _activation_layer(cfg: _Config, state: _State) -> _Converted:
    name = _activation_name(cfg.get("activation"), cfg)
    if name is None:
        return _Converted(nn.Identity(), state.shape, 0)
    return _Converted(_activation_module(name), state.shape, 0)


def _relu_layer(cfg: _Config, state: _State) -> _Converted:
    if cfg.get("max_value") is not None or cfg.number("threshold", 0.0) != 0.0:
        raise cfg.fail("max_value / threshold are not supported; only ReLU(negative_slope=…) is")
    slope = cfg.number("negative_slope", 0.0)
    module: nn.Module = nn.ReLU() if slope == 0.0 else nn.LeakyReLU(slope)
    return _Converted(module, state.shape, 0)


def _leaky_relu_layer(cfg: _Config, state: _State) -> _Converted:
    # Keras 3 writes negative_slope, Keras 2 alpha (the layer's default slope is 0.3 in both)
    slope = cfg.number("negative_slope", cfg.get("alpha", 0.3))
    return _Converted(nn.LeakyReLU(slope), state.shape, 0)


def _softmax_layer(cfg: _Config, state: _State) -> _Converted:
    axis = cfg.get("axis", -1)
    if isinstance(axis, list) and len(axis) == 1:
        axis = axis[0]
    if axis not in (-1, len(state.shape)) or type(axis) is not int:
        raise cfg.fail(f"axis={cfg.get('axis')!r} is not supported; only the last (channel / feature) axis is")
    return _Converted(nn.Softmax(dim=1), state.shape, 0)


def _is_softmax_layer(layer: _Layer) -> bool:
    if layer.keras_class == "Softmax":
        axis = layer.config.get("axis", -1)
        return axis in (-1, [-1])
    if layer.keras_class == "Activation":
        value = layer.config.get("activation")
        if isinstance(value, dict):
            value = value.get("config") if value.get("class_name") == "function" else value.get("class_name")
        return isinstance(value, str) and value.split(">")[-1].lower() == "softmax"
    return False


def _valid_name(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_]\w*", name)) and name not in _PSEUDO_LAYERS \
        and not hasattr(nn.Sequential(), name)


def _module_names(layers: list[_Layer]) -> dict[str, str]:
    """Keras name → module name (the same unless it is not a valid convscope address)."""
    taken = {layer.name for layer in layers}
    out: dict[str, str] = {}
    for layer in layers:
        if _valid_name(layer.name):
            out[layer.name] = layer.name
            continue
        base = re.sub(r"\W", "_", layer.name) or "layer"
        if not re.match(r"[A-Za-z_]", base):
            base = "layer_" + base
        candidate, index = base, 1
        while candidate in taken or not _valid_name(candidate):
            candidate, index = f"{base}_{index}", index + 1
        taken.add(candidate)
        out[layer.name] = candidate
    return out


def _input_shape(layers: list[_Layer], model_config: dict) -> tuple[int, int, int]:
    """``(C, H, W)`` from the InputLayer (or the first layer's / the model's recorded input shape)."""
    candidates = []
    for layer in layers[:2]:
        for key in ("batch_shape", "batch_input_shape"):
            if key in layer.config:
                candidates.append((layer, layer.config[key]))
    body = model_config.get("config") if isinstance(model_config.get("config"), dict) else {}
    if "build_input_shape" in body:
        candidates.append((None, body["build_input_shape"]))
    if not candidates:
        raise KerasImportError("the file does not record the model's input shape (no InputLayer); "
                               "save a model that was built with keras.Input(shape=…)")
    layer, shape = candidates[0]
    what = f"the input ({layer.name!r})" if layer is not None else "the input"
    if not isinstance(shape, list) or len(shape) != 4:
        raise KerasImportError(f"{what} has shape {shape!r}; only image inputs (batch, H, W, C) are supported")
    height, width, channels = shape[1:]
    if not all(type(v) is int and 0 < v <= 1 << 16 for v in (height, width, channels)):
        raise KerasImportError(f"{what} has shape {shape!r}; the importer needs a fixed height, width and channels")
    return channels, height, width


# ---------------------------------------------------------------------------------------------
# the whole model


def _convert(layers: list[_Layer], functional: bool, input_shape: tuple[int, int, int],
             reader: Any) -> tuple[nn.Sequential, list[KerasLayer], dict[str, str], str | None]:
    body = [layer for layer in layers if layer.keras_class != "InputLayer"]
    if not body:
        raise KerasImportError("the model has no layers besides its input")
    names = _module_names(body)
    aliases = {keras: torch_name for keras, torch_name in names.items() if keras != torch_name}
    last = body[-1]
    drop_last_layer = _is_softmax_layer(last)
    strip_last_activation = not drop_last_layer and last.keras_class in ("Dense", "Conv2D") and \
        _activation_name(last.config.get("activation"), _Config(last)) == "softmax"
    final_activation = "softmax" if (drop_last_layer or strip_last_activation) else None

    state = _State(shape=input_shape)
    children: OrderedDict[str, nn.Module] = OrderedDict()
    table: list[KerasLayer] = []
    budget = MAX_PARAMETERS
    for layer in layers:
        if layer.keras_class == "InputLayer":
            if functional:  # Keras' summary lists a functional model's InputLayer
                table.append(KerasLayer(layer.name, layer.keras_class, input_shape, 0, None))
            continue
        cfg = _Config(layer)

        def read(spec: _Spec, layer: _Layer = layer) -> list[np.ndarray]:
            nonlocal budget
            budget -= sum(int(np.prod(shape)) for _, shape in spec)
            if budget < 0:
                raise KerasImportError(f"the model holds more than {MAX_PARAMETERS:,} parameters")
            return reader.read(layer.name, layer.keras_class, spec)

        kind = layer.keras_class
        is_last = layer is last
        if kind == "Conv2D":
            converted = _conv2d(cfg, state, read, drop_softmax=is_last and strip_last_activation)
        elif kind == "Dense":
            converted = _dense(cfg, state, read, drop_softmax=is_last and strip_last_activation)
        elif kind == "MaxPooling2D":
            converted = _pooling(cfg, state, "max")
        elif kind == "AveragePooling2D":
            converted = _pooling(cfg, state, "avg")
        elif kind == "GlobalAveragePooling2D":
            converted = _global_pool(cfg, state, "avg")
        elif kind == "GlobalMaxPooling2D":
            converted = _global_pool(cfg, state, "max")
        elif kind == "ZeroPadding2D":
            converted = _zero_padding(cfg, state)
        elif kind == "Flatten":
            converted = _flatten(cfg, state)
        elif kind == "Dropout":
            rate = cfg.number("rate", 0.0, 0.0)
            converted = _Converted(nn.Dropout(min(rate, 1.0)), state.shape, 0)
        elif kind == "BatchNormalization":
            converted = _batch_norm(cfg, state, read)
        elif kind == "Activation":
            converted = _activation_layer(cfg, state)
        elif kind == "ReLU":
            converted = _relu_layer(cfg, state)
        elif kind == "LeakyReLU":
            converted = _leaky_relu_layer(cfg, state)
        elif kind == "ELU":
            converted = _Converted(nn.ELU(cfg.number("alpha", 1.0)), state.shape, 0)
        elif kind == "Softmax":
            converted = _softmax_layer(cfg, state)
        elif kind in ("Sequential", "Functional", "Model"):
            raise KerasImportError(
                f"layer {layer.name!r} ({kind}) is a model nested inside the model; nested models are not "
                f"supported; {_SUPPORTED_TEXT}")
        else:
            raise KerasImportError(f"layer {layer.name!r} ({kind}) is not supported; {_SUPPORTED_TEXT}")
        # Outputs between a Flatten and its Dense are held channel-major (every layer that may sit
        # there is element-wise, or a BatchNormalization whose parameters were reordered).
        carries = state.pending
        name = names[layer.name]
        if is_last and drop_last_layer:
            converted.module = None
            aliases[layer.name] = "probabilities"
            converted.note = "softmax removed: use the 'probabilities' pseudo-layer"
        if converted.module is not None:
            children[name] = converted.module
        table.append(KerasLayer(layer.name, kind, tuple(converted.shape), converted.params,
                                name if converted.module is not None else None, carries, converted.note))
        state.shape = converted.shape
    if state.pending is not None:
        raise KerasImportError(
            f"the model ends with features flattened from a {state.pending} map without a Dense layer after the "
            "Flatten; their order would differ from Keras' (channels-last)")
    if len(state.shape) != 1:
        raise KerasImportError(
            f"the model's output has shape {state.shape} (PyTorch order); convscope needs a classifier whose "
            "output is a vector of class scores")
    return nn.Sequential(children), table, aliases, final_activation


def _check_shapes(module: nn.Sequential, table: list[KerasLayer], input_shape: tuple[int, int, int]) -> None:
    """Run zeros through the module: every child must give the shape Keras' arithmetic says."""
    expected = {row.module: row.output_shape for row in table if row.module is not None}
    x = torch.zeros((1, *input_shape))
    with torch.no_grad():
        for name, child in module.named_children():
            x = child(x)
            if tuple(x.shape[1:]) != expected[name]:  # pragma: no cover - an importer bug
                raise KerasImportError(
                    f"internal error: layer {name!r} gives shape {tuple(x.shape[1:])}, Keras gives {expected[name]}")


def _sniff(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except FileNotFoundError:
        raise KerasImportError(f"Keras model file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise KerasImportError(f"{str(path)!r} is a folder, not a Keras model file "
                               "(a TensorFlow SavedModel folder cannot be read; save with model.save('m.keras'))") from None
    except OSError as error:
        raise KerasImportError(f"cannot read {str(path)!r}: {error}") from None
    if head.startswith(_ZIP_SIGNATURE):
        return "zip"
    if head.startswith(_HDF5_SIGNATURE):
        return "h5"
    h5py = _h5py()
    try:  # an HDF5 file with a user block has its signature further in
        if h5py.is_hdf5(str(path)):
            return "h5"
    except OSError:
        pass
    raise KerasImportError(
        f"{str(path)!r} is neither an HDF5 (.h5) nor a zip (.keras) file; expected a model saved with "
        "Keras' model.save('m.h5') or model.save('m.keras')")


def _model_config_from_h5(handle: Any, where: str) -> tuple[dict, str | None, str | None, Any]:
    attrs = handle.attrs
    if "model_config" not in attrs:
        if "layer_names" in attrs or "layers" in handle:
            raise KerasImportError(
                f"{where} holds only weights (model.save_weights); the importer needs the whole model: "
                "save it with model.save('m.h5') or model.save('m.keras')")
        raise KerasImportError(f"{where} is an HDF5 file without a Keras model config; is it a Keras model?")
    config = _parse_json(attrs["model_config"], where)
    weights = _child(handle, "model_weights", where)
    if weights is None:
        raise KerasImportError(f"{where} has a model config but no weights (model_weights); save the model with weights")
    version = _text_attr(attrs.get("keras_version")) or _text_attr(weights.attrs.get("keras_version"))
    backend = _text_attr(attrs.get("backend")) or _text_attr(weights.attrs.get("backend"))
    return config, version, backend, weights


def read_keras(path: str | Path) -> KerasImport:
    """Read a Keras ``.h5`` (Keras 2 or 3) or ``.keras`` model file into PyTorch, without TensorFlow.

    Args:
        path: the file written by ``model.save(...)``.

    Returns:
        A :class:`KerasImport`: the module (eval mode, Keras layer names, logits out
        when a final softmax was removed), its input shape ``(C, H, W)``, the
        Keras-style layer table, aliases, provenance and the graph description.

    Raises:
        KerasImportError: the file is missing, corrupt or not a Keras model; or the
            model has a layer, activation or graph shape the importer does not support
            (the message names the layer, its Keras class and what is supported).
    """
    path = Path(path)
    kind = _sniff(path)
    where = f"{str(path)!r}"
    h5py = _h5py()
    with ExitStack() as stack:
        if kind == "h5":
            try:
                handle = stack.enter_context(h5py.File(path, "r"))
            except (OSError, ValueError) as error:
                raise KerasImportError(f"{where} is not a readable HDF5 file ({error})") from None
            model_config, version, backend, weights = _model_config_from_h5(handle, where)
            major = (version or "2").split(".")[0]
            file_format = "h5-keras3" if major.isdigit() and int(major) >= 3 else "h5-keras2"
            _, model_name, entries, functional = _chain(model_config, where)
            reader: Any = _LegacyWeights(weights, where)
        else:
            try:
                archive = stack.enter_context(zipfile.ZipFile(path))
                members = {info.filename: info for info in archive.infolist()}
            except (zipfile.BadZipFile, OSError, ValueError) as error:
                raise KerasImportError(f"{where} is not a readable zip file ({error})") from None
            if "config.json" not in members:
                raise KerasImportError(f"{where} is a zip without config.json; not a Keras .keras model file")
            if "model.weights.h5" not in members:
                if "model.weights.json" in members:
                    raise KerasImportError(f"{where} stores sharded weights (model.weights.json), which are not supported")
                raise KerasImportError(f"{where} has no model.weights.h5; not a Keras .keras model file (or saved without weights)")
            model_config = _parse_json(_zip_member(archive, members["config.json"], MAX_JSON_BYTES, where), where)
            metadata: dict = {}
            if "metadata.json" in members:
                parsed = _parse_json(_zip_member(archive, members["metadata.json"], 1 << 20, where), where)
                metadata = parsed if isinstance(parsed, dict) else {}
            version = _text_attr(metadata.get("keras_version"))
            backend = _text_attr(metadata.get("backend"))
            file_format = "keras-zip"
            blob = _zip_member(archive, members["model.weights.h5"], MAX_WEIGHTS_BYTES, where)
            try:
                weights_file = stack.enter_context(h5py.File(io.BytesIO(blob), "r"))
            except (OSError, ValueError) as error:
                raise KerasImportError(f"{where}: model.weights.h5 is not a readable HDF5 file ({error})") from None
            model_class, model_name, entries, functional = _chain(model_config, where)
            reader = _ZipWeights(weights_file, entries, sequential=model_class == "Sequential", where=where)
        layers = [_Layer(entry["name"], entry["class_name"], entry["config"]) for entry in entries]
        input_shape = _input_shape(layers, model_config)
        module, table, aliases, final_activation = _convert(layers, functional, input_shape, reader)
    module.eval()
    _check_shapes(module, table, input_shape)
    return KerasImport(
        module=module,
        input_shape=input_shape,
        num_classes=int(table[-1].output_shape[0]),
        final_activation=final_activation,
        layer_table=table,
        aliases=aliases,
        keras_version=version,
        backend=backend,
        source=path,
        source_sha256=file_sha256(path),
        format=file_format,
        model_name=model_name,
        description=describe(module),
    )


def _zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, where: str) -> bytes:
    """A member's bytes, refusing more than ``limit`` (checked while reading: no zip bombs)."""
    if info.file_size > limit:
        raise KerasImportError(f"{where}: {info.filename} is larger than {limit:,} bytes")
    try:
        with archive.open(info) as handle:
            data = handle.read(limit + 1)
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, EOFError) as error:
        raise KerasImportError(f"{where}: cannot read {info.filename} from the zip ({error})") from None
    if len(data) > limit:
        raise KerasImportError(f"{where}: {info.filename} is larger than {limit:,} bytes")
    return data
