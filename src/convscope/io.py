"""Atomic file output: write to a temporary file beside the target, then rename.

Only the CLI and the report call these; engines never touch the disk. A failure
part-way leaves no half-written file behind; the ``.part`` file of a process that
was killed while writing is removed by :func:`clean_stale_parts` (every command
calls it on its output folder before it starts). :func:`track_writes` records
what a block wrote, so a command that fails half-way can remove it again.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

#: A temporary file of :func:`atomic_open`: ``.NAME.PID-RANDOM.part`` (the writer's process id).
_PART_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[A-Za-z0-9_]+\.part$")
#: Any ``.part`` file (also those of older versions, without a process id).
_ANY_PART = re.compile(r"^\..+\.part$")
#: ``.part`` files whose writer cannot be identified are stale after this long (s), as for downloads.
STALE_PART_AGE = 3600.0


@dataclass
class WriteLog:
    """What a :func:`track_writes` block wrote: the files (each complete, renamed into
    place) and the folders it created (outermost first)."""

    files: list[Path] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)

    def undo(self, *, keep_under: tuple[Path, ...] = ()) -> list[Path]:
        """Remove the files written and then the folders created (when empty), except
        what lies under a folder of ``keep_under``; returns what was removed.
        A file that replaced an earlier one is removed too (the earlier one is gone)."""
        kept = tuple(Path(os.path.abspath(folder)) for folder in keep_under)

        def keep(path: Path) -> bool:
            absolute = Path(os.path.abspath(path))
            return any(absolute == folder or folder in absolute.parents for folder in kept)

        removed: list[Path] = []
        for path in reversed(self.files):
            if keep(path):
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
        for folder in reversed(self.folders):
            if keep(folder):
                continue
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
                removed.append(folder)
        return removed


_WRITE_LOGS: contextvars.ContextVar[tuple[WriteLog, ...]] = contextvars.ContextVar("convscope_write_logs", default=())


@contextlib.contextmanager
def track_writes() -> Iterator[WriteLog]:
    """Record every file written (by this module's functions) and every folder created
    (by :func:`make_folders` or a write) inside the block, in this thread / task.

    ::

        with track_writes() as log:
            try:
                write_everything()
            except OSError:
                log.undo()      # nothing of this run is left
                raise
    """
    log = WriteLog()
    token = _WRITE_LOGS.set(_WRITE_LOGS.get() + (log,))
    try:
        yield log
    finally:
        _WRITE_LOGS.reset(token)


def make_folders(path: str | os.PathLike) -> Path:
    """``mkdir -p path``, telling the active :func:`track_writes` logs which folders were new."""
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    path.mkdir(parents=True, exist_ok=True)
    for log in _WRITE_LOGS.get():
        log.folders.extend(folder for folder in reversed(missing) if folder not in log.folders)
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` may still be running (this one, another user's, or unknown: yes)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process, or cannot tell: leave its file alone
    return True


def clean_stale_parts(folder: str | os.PathLike, *, depth: int = 2, max_age: float = STALE_PART_AGE) -> list[Path]:
    """Remove the ``.part`` files that killed writers left in ``folder`` (and its
    sub-folders down to ``depth`` levels).

    A ``.part`` of :func:`atomic_open` names its writer's process id: it is stale
    when that process is gone. Any other ``.part`` file is stale when older than
    ``max_age`` seconds. Returns the files removed (nothing when ``folder`` does not exist).
    """
    removed: list[Path] = []
    now = time.time()

    def visit(current: Path, level: int) -> None:
        try:
            entries = list(os.scandir(current))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if level < depth:
                        visit(Path(entry.path), level + 1)
                    continue
                if not entry.is_file(follow_symlinks=False) or not _ANY_PART.match(entry.name):
                    continue
                match = _PART_NAME.match(entry.name)
                stale = (not process_alive(int(match["pid"]))) if match else now - entry.stat().st_mtime > max_age
                if stale:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except OSError:
                continue

    if Path(folder).is_dir():
        visit(Path(folder), 0)
    return removed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on success rename it to ``path``.

    On any exception the temporary file is deleted and ``path`` is untouched. The
    temporary file is ``.NAME.PID-RANDOM.part``; if the process is killed before the
    rename, :func:`clean_stale_parts` removes it later.
    """
    path = Path(path)
    make_folders(path.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".part", dir=path.parent)
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
        for log in _WRITE_LOGS.get():
            log.files.append(path)
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


#: Largest JSON file :func:`read_json` reads (bytes) and deepest nesting it accepts.
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_JSON_DEPTH = 100


class JsonFileError(ValueError):
    """A JSON file that is unreadable, too large, too deeply nested or holds NaN/Infinity."""


def _refuse_constant(name: str) -> Any:
    raise JsonFileError(f"holds the non-finite number {name}, which is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf
        raise JsonFileError(f"holds the number {text[:40]}, too large to be finite")
    return value


def parse_json(text: str | bytes, source: str = "<json>", *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON strictly: ``NaN`` / ``Infinity`` are refused, and so is nesting
    deeper than ``max_depth`` (checked before parsing, so it can never end in a
    RecursionError).

    Raises:
        JsonFileError: invalid JSON, a non-finite number, or too deep; names ``source``.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonFileError(f"{source}: not UTF-8 text ({exc})") from None
    depth = _json_depth(text)
    if depth > max_depth:
        raise JsonFileError(f"{source}: JSON nested {depth} levels deep (at most {max_depth} accepted); not a convscope file")
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except JsonFileError as exc:
        raise JsonFileError(f"{source}: {exc}") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise JsonFileError(f"{source}: not valid JSON ({exc})") from None


def _json_depth(text: str) -> int:
    """The deepest bracket nesting in JSON ``text`` (brackets inside strings ignored)."""
    if "[" not in text and "{" not in text:
        return 0
    outside_strings = re.sub(r'"(?:[^"\\]|\\.)*"', "", text)
    codes = np.frombuffer(outside_strings.encode("utf-8", "replace"), dtype=np.uint8)
    steps = np.zeros(len(codes), dtype=np.int32)
    steps[(codes == ord("[")) | (codes == ord("{"))] = 1
    steps[(codes == ord("]")) | (codes == ord("}"))] = -1
    return int(np.cumsum(steps).max(initial=0))


def read_json(
    path: str | os.PathLike, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """Read a JSON file with bounds: at most ``max_bytes`` bytes, ``max_depth``
    levels, and no ``NaN`` / ``Infinity``.

    Raises:
        JsonFileError: too large, not UTF-8, invalid, too deep or non-finite; names the file.
        OSError: the file cannot be opened (``FileNotFoundError`` and friends).
    """
    path = Path(path)
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise JsonFileError(f"{path}: larger than {max_bytes:,} bytes; not a convscope JSON file")
    return parse_json(data, str(path), max_depth=max_depth)


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
