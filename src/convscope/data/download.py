"""Download IDX dataset files from public mirrors: progress bar, retries, and
verification against the canonical SHA-256 of the decompressed content.

Nothing half-written ever lands in the cache: every missing file of a dataset is
downloaded into memory and verified first (gzip integrity, SHA-256 of the
decompressed bytes, IDX structure); only when all of them verified are they
written, each atomically (temporary file + rename). A corrupt or truncated
download is rejected and leaves the cache as it was.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from convscope.data.idx import IdxError, decompress_if_gzip, parse_idx, read_idx_bytes
from convscope.data.sources import DatasetInfo, file_in, mirrors_for
from convscope.io import atomic_write_bytes

USER_AGENT = "convscope-data/1 (+https://pypi.org/project/convscope)"


class DownloadError(RuntimeError):
    """Every mirror failed for a file (the message lists each attempt)."""


class _TransferError(OSError):
    """A transfer that ended early (fewer bytes than Content-Length)."""


def _fetch(url: str, timeout: float, progress_label: str | None) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) mirrors only
        total = int(response.headers.get("Content-Length") or 0) or None
        chunks: list[bytes] = []
        if progress_label is None:
            data = response.read()
        else:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

            with Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                console=Console(stderr=True), transient=True,
            ) as progress:
                task = progress.add_task(progress_label, total=total)
                while True:
                    chunk = response.read(1 << 16)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    progress.update(task, advance=len(chunk))
            data = b"".join(chunks)
    if total is not None and len(data) != total:
        raise _TransferError(f"transfer ended after {len(data):,} of {total:,} bytes")
    return data


def verify_content(base_name: str, payload: bytes, info: DatasetInfo, source: str) -> bytes:
    """Decompress (if gzip) and check ``payload``; return the decompressed bytes.

    Raises:
        IdxError: corrupt gzip, bad IDX structure, or a SHA-256 mismatch; the
            message names ``source``.
    """
    data = decompress_if_gzip(payload, source)
    expected = info.sha256.get(base_name)
    if expected is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise IdxError(f"{source}: SHA-256 of the decompressed content is {actual}, expected {expected}")
    parse_idx(data, source=source)  # structure check (also for datasets without known hashes)
    return data


@dataclass(frozen=True)
class FileCheck:
    """The verification of one local IDX file (``convscope data verify``).

    Attributes:
        name: base name, e.g. ``t10k-images-idx3-ubyte``.
        path: the file found (raw or ``.gz``), or ``None`` when missing.
        sha256: SHA-256 of the decompressed content (``None`` if unreadable/missing).
        expected: the canonical SHA-256 (``None`` if not known for this dataset).
        shape: the array shape from the IDX header, when the file parses.
        error: what is wrong, or ``None``.
    """

    name: str
    path: Path | None
    sha256: str | None
    expected: str | None
    shape: tuple[int, ...] | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def check_file(folder: Path, base_name: str, info: DatasetInfo) -> FileCheck:
    """Hash and parse one file of ``info`` in ``folder``."""
    expected = info.sha256.get(base_name)
    path = file_in(folder, base_name)
    if path is None:
        return FileCheck(base_name, None, None, expected, None, f"missing (neither {base_name} nor {base_name}.gz)")
    try:
        data = read_idx_bytes(path)
    except (IdxError, OSError) as exc:
        return FileCheck(base_name, path, None, expected, None, str(exc))
    digest = hashlib.sha256(data).hexdigest()
    try:
        shape = tuple(int(d) for d in parse_idx(data, source=str(path)).shape)
    except IdxError as exc:
        return FileCheck(base_name, path, digest, expected, None, str(exc))
    if expected is not None and digest != expected:
        return FileCheck(
            base_name, path, digest, expected, shape,
            f"{path}: SHA-256 of the content is {digest}, expected {expected} (a different or damaged file)",
        )
    return FileCheck(base_name, path, digest, expected, shape, None)


def verify_folder(folder: str | os.PathLike, info: DatasetInfo) -> list[FileCheck]:
    """Check all four files of ``info`` in ``folder`` (reads and hashes ~55 MB for MNIST)."""
    return [check_file(Path(folder), name, info) for name in info.files]


def _fetch_verified(
    base_name: str, info: DatasetInfo, mirrors: tuple[str, ...], retries: int, timeout: float, backoff: float,
    progress: bool,
) -> tuple[str, bytes]:
    """Fetch one file from the first mirror that serves verified content.

    Returns ``(file name to store, payload as served)``: the ``.gz`` is kept
    compressed (readers handle both).
    """
    attempts: list[str] = []
    for mirror in mirrors:
        url = f"{mirror}{base_name}.gz"
        for attempt in range(max(1, retries)):
            try:
                payload = _fetch(url, timeout, f"{info.name} {base_name}.gz" if progress else None)
            except urllib.error.HTTPError as exc:
                attempts.append(f"{url}: HTTP {exc.code} {exc.reason}")
                if exc.code < 500:
                    break  # 404 and friends: this mirror does not have it
            except (urllib.error.URLError, OSError, http.client.HTTPException, TimeoutError) as exc:
                reason = getattr(exc, "reason", None) or exc
                attempts.append(f"{url}: {reason}")
                if isinstance(reason, socket.gaierror):
                    break  # the host name does not resolve (offline?): try the next mirror at once
            else:
                try:
                    verify_content(base_name, payload, info, url)
                except IdxError as exc:
                    attempts.append(f"rejected {exc}")
                    break  # wrong content: retrying the same mirror will not help
                name = f"{base_name}.gz" if payload[:2] == b"\x1f\x8b" else base_name
                return name, payload
            if attempt + 1 < retries:
                time.sleep(backoff * 2**attempt)
    raise DownloadError(f"could not download {base_name}: " + "; ".join(_collapse(attempts)))


def _collapse(messages: list[str]) -> list[str]:
    """Merge repeated identical attempt messages: ``"X"`` ×3 → ``"X (3 attempts)"``."""
    merged: list[str] = []
    counts: list[int] = []
    for message in messages:
        if merged and merged[-1] == message:
            counts[-1] += 1
        else:
            merged.append(message)
            counts.append(1)
    return [m if n == 1 else f"{m} ({n} attempts)" for m, n in zip(merged, counts)]


def download_dataset(
    info: DatasetInfo,
    target: Path,
    *,
    mirrors: tuple[str, ...] | None = None,
    retries: int = 3,
    timeout: float = 30.0,
    backoff: float = 1.0,
    progress: bool = True,
    replace_bad: bool = False,
) -> Path:
    """Download every file of ``info`` missing from ``target``.

    All missing files are fetched and verified before any is written, so a failed
    or corrupt download leaves ``target`` exactly as it was.

    Args:
        info: the dataset.
        target: folder to fill (created only when there is something to write).
        mirrors: base URLs to try in order (default: ``$CONVSCOPE_MIRRORS`` or
            ``info.mirrors``); each serves ``<base><file>.gz``.
        retries: attempts per mirror for network errors and HTTP 5xx.
        timeout: seconds per request.
        backoff: seconds before a retry, doubled each time.
        progress: show a progress bar per file (on stderr).
        replace_bad: also re-download files that are present but fail
            verification (hash / structure), replacing them.

    Returns:
        ``target``.

    Raises:
        DownloadError: a file could not be fetched and verified from any mirror.
    """
    target = Path(target)
    mirror_list = tuple(mirrors) if mirrors else mirrors_for(info)
    mirror_list = tuple(m if m.endswith("/") else m + "/" for m in mirror_list)
    todo = []
    for base_name in info.files:
        if file_in(target, base_name) is None:
            todo.append(base_name)
        elif replace_bad and not check_file(target, base_name, info).ok:
            todo.append(base_name)
    staged = {
        base_name: _fetch_verified(base_name, info, mirror_list, retries, timeout, backoff, progress)
        for base_name in todo
    }
    for base_name, (file_name, payload) in staged.items():
        atomic_write_bytes(target / file_name, payload)
        # A bad copy under the other name (raw vs .gz) would shadow or confuse; remove it.
        other = target / (base_name if file_name.endswith(".gz") else f"{base_name}.gz")
        if other.exists():
            other.unlink()
    return target


__all__ = ["DownloadError", "FileCheck", "check_file", "download_dataset", "verify_content", "verify_folder"]
