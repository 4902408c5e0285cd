"""Atomic file output: write to a temporary file beside the target, then rename.

Only the CLI and the report call these; engines never touch the disk. A failure
part-way leaves no half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on success rename it to ``path``.

    On any exception the temporary file is deleted and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        # mkstemp creates 0600 files; give the result the usual permissions (umask applied).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        with os.fdopen(fd, mode) as handle:
            yield handle  # type: ignore[misc]
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # torch tensors
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def to_json(data: Any) -> str:
    """JSON text with numpy / torch values converted, 2-space indented."""
    return json.dumps(data, indent=2, default=_json_default, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as JSON atomically."""
    return atomic_write_text(path, to_json(data))


def save_npy(path: str | os.PathLike, array: Any) -> Path:
    """Save an array (numpy or torch) as ``.npy`` atomically."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    with atomic_open(path, "wb") as handle:
        np.save(handle, np.asarray(array), allow_pickle=False)
    return Path(path)


def save_figure(path: str | os.PathLike, figure: Any, *, dpi: int = 150) -> Path:
    """Save a matplotlib Figure atomically (format from the suffix) and close it.

    Works for figures built without pyplot (all of convscope's) and for pyplot
    figures; pyplot is never imported here, so the backend stays as it was.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format=fmt, dpi=dpi, bbox_inches="tight")
    close_figure(figure)
    return path


def close_figure(figure: Any) -> None:
    """Drop ``figure`` from pyplot's figure list if pyplot holds it (no-op otherwise,
    and pyplot is not imported: a figure outside pyplot is freed like any object)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(figure)


def save_image(path: str | os.PathLike, image: Any) -> Path:
    """Save a PIL image atomically (format from the suffix)."""
    path = Path(path)
    fmt = {"jpg": "JPEG", "jpeg": "JPEG"}.get(path.suffix.lstrip(".").lower(), path.suffix.lstrip(".").upper() or "PNG")
    with atomic_open(path, "wb") as handle:
        image.save(handle, format=fmt)
    return path
