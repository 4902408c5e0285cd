"""Stage results on disk, so an interrupted atlas build resumes where it stopped.

Each finished stage leaves two files in ``OUT/.stages/``:

* ``<stage>.npz`` — its arrays and its encoded images (PNG/JPEG bytes), and
* ``<stage>.json`` — its key, its JSON results and how long it took; written
  last, so its presence means the stage finished.

A stage's key is a SHA-256 of everything its result depends on (model files,
test data, seed, profile parameters, its code version and the keys of the stages
it reads); a stored result is used only when the key matches.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convscope.io import atomic_open, to_json, write_json

_ARRAY, _IMAGE = "a__", "i__"


@dataclass
class StageOutput:
    """What one stage produced.

    Attributes:
        meta: JSON-ready results (numbers, lists, strings).
        arrays: numeric arrays later stages or the page need.
        images: encoded images (PNG / JPEG bytes) by name.
    """

    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)


def stage_key(parts: dict[str, Any]) -> str:
    """SHA-256 of a JSON rendering of ``parts`` (sorted keys)."""
    text = json.dumps(json.loads(to_json(parts)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


class StageCache:
    """Stage results in ``folder`` (normally ``OUT/.stages``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def paths(self, name: str) -> tuple[Path, Path]:
        """``(json, npz)`` paths of stage ``name``."""
        stem = _file_stem(name)
        return self.folder / f"{stem}.json", self.folder / f"{stem}.npz"

    def load(self, name: str, key: str) -> tuple[StageOutput, float] | None:
        """The stored output and its original run time, or ``None`` when there is
        no finished result with this key (or the files are unreadable)."""
        json_path, npz_path = self.paths(name)
        if not json_path.is_file() or not npz_path.is_file():
            return None
        try:
            record = json.loads(json_path.read_text(encoding="utf-8"))
            if record.get("key") != key:
                return None
            arrays: dict[str, np.ndarray] = {}
            images: dict[str, bytes] = {}
            with np.load(npz_path, allow_pickle=False) as stored:
                for entry in stored.files:
                    if entry.startswith(_IMAGE):
                        images[entry[len(_IMAGE):]] = stored[entry].tobytes()
                    elif entry.startswith(_ARRAY):
                        arrays[entry[len(_ARRAY):]] = stored[entry]
        except (OSError, ValueError, KeyError, json.JSONDecodeError, zipfile.BadZipFile):
            return None
        return StageOutput(meta=record.get("meta", {}), arrays=arrays, images=images), float(record.get("seconds", 0.0))

    def save(self, name: str, key: str, output: StageOutput, seconds: float) -> None:
        """Store a finished stage (npz first, then the JSON that marks it done)."""
        json_path, npz_path = self.paths(name)
        entries = {_ARRAY + k: np.asarray(v) for k, v in output.arrays.items()}
        entries.update({_IMAGE + k: np.frombuffer(v, dtype=np.uint8) for k, v in output.images.items()})
        with atomic_open(npz_path, "wb") as handle:
            np.savez(handle, **entries)
        write_json(json_path, {"stage": name, "key": key, "seconds": round(seconds, 3), "meta": output.meta})

    def forget(self, name: str) -> None:
        """Remove a stage's stored result (tests use it to simulate an interruption)."""
        for path in self.paths(name):
            path.unlink(missing_ok=True)
