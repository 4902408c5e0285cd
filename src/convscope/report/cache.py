"""A content-addressed store of stage results, so a build resumes where it stopped
and a second build is nearly free.

A stage's key is a SHA-256 of everything its result depends on (the model files,
the data, the seed, its parameters, its code version and the keys of the stages
it reads). Each stored result is two files named by stage and key in the store's
folder — ``<stage>--<key>.npz`` (arrays and encoded images) and
``<stage>--<key>.json`` (JSON results, written last, so its presence means the
result is complete). The folder may be shared by several builds and several
machines (a path on a shared filesystem): equal keys mean equal results.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from convscope.io import atomic_open, to_json, write_json
from convscope.report.codec import CodecError, decode, encode

_ARRAY, _BLOB = "a__", "b__"


def stage_key(parts: dict[str, Any]) -> str:
    """SHA-256 of a JSON rendering of ``parts`` (sorted keys)."""
    text = json.dumps(json.loads(to_json(parts)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


class StageCache:
    """Stage results in ``folder`` (normally ``OUT/.stages``), addressed by key."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def paths(self, name: str, key: str) -> tuple[Path, Path]:
        """``(json, npz)`` paths of stage ``name`` with ``key``."""
        stem = f"{_file_stem(name)}--{key[:24]}"
        return self.folder / f"{stem}.json", self.folder / f"{stem}.npz"

    def load(self, name: str, key: str) -> tuple[Any, float] | None:
        """The stored result and its original run time, or ``None`` when there is no
        complete result with this key (or its files are unreadable)."""
        json_path, npz_path = self.paths(name, key)
        if not json_path.is_file() or not npz_path.is_file():
            return None
        try:
            record = json.loads(json_path.read_text(encoding="utf-8"))
            if record.get("key") != key:
                return None
            arrays: dict[str, np.ndarray] = {}
            blobs: dict[str, bytes] = {}
            with np.load(npz_path, allow_pickle=False) as stored:
                for entry in stored.files:
                    if entry.startswith(_BLOB):
                        blobs[entry[len(_BLOB):]] = stored[entry].tobytes()
                    elif entry.startswith(_ARRAY):
                        arrays[entry[len(_ARRAY):]] = stored[entry]
            result = decode(record["meta"], arrays, blobs)
        except (OSError, ValueError, KeyError, json.JSONDecodeError, zipfile.BadZipFile, CodecError):
            return None
        return result, float(record.get("seconds", 0.0))

    def has(self, name: str, key: str) -> bool:
        json_path, npz_path = self.paths(name, key)
        return json_path.is_file() and npz_path.is_file()

    def save(self, name: str, key: str, result: Any, seconds: float) -> None:
        """Store a finished result (npz first, then the JSON that marks it complete)."""
        meta, arrays, blobs = encode(result)
        json_path, npz_path = self.paths(name, key)
        entries = {_ARRAY + k: np.asarray(v) for k, v in arrays.items()}
        entries.update({_BLOB + k: np.frombuffer(v, dtype=np.uint8) for k, v in blobs.items()})
        with atomic_open(npz_path, "wb") as handle:
            np.savez(handle, **entries)
        write_json(json_path, {"stage": name, "key": key, "seconds": round(seconds, 3), "meta": meta})

    def forget(self, name: str) -> int:
        """Remove every stored result of stage ``name`` (tests simulate interruptions); returns the count."""
        count = 0
        for path in self.folder.glob(f"{_file_stem(name)}--*"):
            path.unlink(missing_ok=True)
            count += path.suffix == ".json"
        return count


__all__ = ["StageCache", "stage_key"]
