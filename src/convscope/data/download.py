"""Download IDX dataset files from public mirrors: progress bar, retries, and
verification against the canonical SHA-256 of the decompressed content.

Files are written into the cache folder only after they verify: each download goes
to a temporary file that is renamed into place, so a failed or corrupt download
never leaves a half-written file behind.
"""

from __future__ import annotations

import gzip
import hashlib
import time
import urllib.error
import urllib.request
from pathlib import Path

from convscope.data.idx import IdxError, parse_idx
from convscope.data.sources import DatasetInfo
from convscope.io import atomic_write_bytes


class DownloadError(RuntimeError):
    """Every mirror failed for a file (the message lists each attempt)."""


def _fetch(url: str, timeout: float, progress_label: str | None) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) mirrors only
        total = int(response.headers.get("Content-Length") or 0) or None
        chunks: list[bytes] = []
        if progress_label is None:
            return response.read()
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        with Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=True
        ) as progress:
            task = progress.add_task(progress_label, total=total)
            while True:
                chunk = response.read(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
                progress.update(task, advance=len(chunk))
        return b"".join(chunks)


def verify_content(base_name: str, payload: bytes, info: DatasetInfo, source: str) -> bytes:
    """Decompress (if gzip) and check ``payload``; return the decompressed bytes.

    Raises:
        IdxError: corrupt gzip, bad IDX structure, or a SHA-256 mismatch.
    """
    data = payload
    if payload[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(payload)
        except (OSError, EOFError) as exc:
            raise IdxError(f"{source}: corrupt gzip data ({exc})") from exc
    expected = info.sha256.get(base_name)
    if expected is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise IdxError(f"{source}: SHA-256 of the content is {actual}, expected {expected}")
    parse_idx(data, source=source)  # structure check (also for datasets without known hashes)
    return data


def download_dataset(
    info: DatasetInfo,
    target: Path,
    *,
    mirrors: tuple[str, ...] | None = None,
    retries: int = 3,
    timeout: float = 30.0,
    backoff: float = 1.0,
    progress: bool = True,
) -> Path:
    """Download every file of ``info`` missing from ``target``.

    Args:
        info: the dataset.
        target: folder to fill (created if needed).
        mirrors: base URLs to try in order (default ``info.mirrors``).
        retries: attempts per mirror for network errors.
        timeout: seconds per request.
        backoff: seconds before a retry, doubled each time.
        progress: show a progress bar per file.

    Returns:
        ``target``.

    Raises:
        DownloadError: a file could not be fetched and verified from any mirror.
    """
    from convscope.data.sources import file_in

    target.mkdir(parents=True, exist_ok=True)
    for base_name in info.files:
        if file_in(target, base_name) is not None:
            continue
        attempts: list[str] = []
        for mirror in mirrors or info.mirrors:
            url = f"{mirror}{base_name}.gz"
            for attempt in range(retries):
                try:
                    payload = _fetch(url, timeout, f"{info.name} {base_name}" if progress else None)
                except (urllib.error.URLError, OSError, TimeoutError) as exc:
                    attempts.append(f"{url}: {exc}")
                    if attempt + 1 < retries:
                        time.sleep(backoff * 2**attempt)
                    continue
                try:
                    data = verify_content(base_name, payload, info, url)
                except IdxError as exc:
                    attempts.append(str(exc))
                    break  # corrupt content: retrying the same mirror will not help
                atomic_write_bytes(target / base_name, data)
                break
            if file_in(target, base_name) is not None:
                break
        else:
            raise DownloadError(f"could not download {base_name}: " + "; ".join(attempts))
    return target
