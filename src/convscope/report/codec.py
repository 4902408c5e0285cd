"""One codec for every typed stage result: a dataclass ↔ (JSON meta, arrays, blobs).

A stage result is a dataclass whose fields are JSON values (numbers, strings,
lists, dicts), ``numpy`` arrays, ``dict[str, ndarray]`` or ``dict[str, bytes]``
(encoded images). :func:`encode` splits it into the three parts that the cache
stores (JSON and an ``.npz``) and that an executor ships between processes;
:func:`decode` rebuilds the same dataclass. Nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
from typing import Any

import numpy as np

_LAYOUT = "__layout__"
_TYPE = "__type__"


class CodecError(ValueError):
    """A stored result that cannot be decoded into its type."""


def type_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _resolve(name: str) -> type:
    module, _, qualname = name.partition(":")
    if not module.startswith("convscope."):
        raise CodecError(f"refusing to decode a result of type {name!r} (not a convscope type)")
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not (isinstance(target, type) and dataclasses.is_dataclass(target)):
        raise CodecError(f"{name} is not a result dataclass")
    return target


def encode(result: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
    """``(meta, arrays, blobs)`` of a result dataclass."""
    if not dataclasses.is_dataclass(result):
        raise CodecError(f"cannot encode {type(result).__name__}: stage results are dataclasses")
    meta: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    blobs: dict[str, bytes] = {}
    layout: dict[str, str] = {}
    for item in dataclasses.fields(result):
        value = getattr(result, item.name)
        if isinstance(value, np.ndarray):
            arrays[item.name] = value
            layout[item.name] = "array"
        elif isinstance(value, dict) and value and all(isinstance(v, (bytes, bytearray)) for v in value.values()):
            for key, blob in value.items():
                blobs[f"{item.name}/{key}"] = bytes(blob)
            layout[item.name] = "blobs"
        elif isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
            for key, array in value.items():
                arrays[f"{item.name}/{key}"] = array
            layout[item.name] = "arrays"
        else:
            meta[item.name] = value
            layout[item.name] = "json"
    meta[_LAYOUT] = layout
    meta[_TYPE] = type_name(type(result))
    return meta, arrays, blobs


def decode(meta: dict[str, Any], arrays: dict[str, np.ndarray], blobs: dict[str, bytes]) -> Any:
    """The dataclass :func:`encode` was given (same field values)."""
    try:
        cls = _resolve(meta[_TYPE])
        layout = meta[_LAYOUT]
    except KeyError as exc:
        raise CodecError(f"not an encoded stage result (missing {exc})") from None
    values: dict[str, Any] = {}
    for name, kind in layout.items():
        if kind == "array":
            values[name] = arrays[name]
        elif kind == "blobs":
            prefix = name + "/"
            values[name] = {k[len(prefix):]: v for k, v in blobs.items() if k.startswith(prefix)}
        elif kind == "arrays":
            prefix = name + "/"
            values[name] = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        else:
            values[name] = meta.get(name)
    try:
        return cls(**values)
    except TypeError as exc:
        raise CodecError(f"stored {cls.__name__} does not fit its type ({exc})") from None


_META_ENTRY = "meta.json"


def pack(result: Any) -> bytes:
    """One ``.npz`` archive (in memory) of :func:`encode`'s three parts: the bytes a
    worker ships back when a transport carries bytes only (a Ray Data column).
    Nothing is pickled; :func:`unpack` is the inverse."""
    from convscope.io import to_json

    meta, arrays, blobs = encode(result)
    entries = {f"a/{k}": np.asarray(v) for k, v in arrays.items()}
    entries.update({f"b/{k}": np.frombuffer(v, dtype=np.uint8) for k, v in blobs.items()})
    entries[_META_ENTRY] = np.frombuffer(to_json(meta).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **entries)
    return buffer.getvalue()


def unpack(data: bytes) -> Any:
    """The result :func:`pack` was given."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            meta = json.loads(archive[_META_ENTRY].tobytes().decode("utf-8"))
            arrays = {k[2:]: archive[k] for k in archive.files if k.startswith("a/")}
            blobs = {k[2:]: archive[k].tobytes() for k in archive.files if k.startswith("b/")}
    except (OSError, ValueError, KeyError) as exc:
        raise CodecError(f"not a packed stage result ({exc})") from None
    return decode(meta, arrays, blobs)


__all__ = ["CodecError", "decode", "encode", "pack", "type_name", "unpack"]
