"""Download IDX dataset files from public mirrors: streamed with hard size limits,
checked as they arrive, progress bar, retries.

Each file is streamed in 64 KiB pieces into a ``.part`` file beside its target
while :class:`~convscope.data.idx.IdxStream` inflates it incrementally (never
more than the size its IDX header declares, which must be the size the dataset's
file has), hashes the decompressed content and checks the IDX structure. A mirror
that serves more bytes than the canonical ``.gz`` can plausibly take, a gzip bomb,
a wrong hash, a truncated or too-slow transfer is refused after a bounded amount
of reading, with memory bounded by one piece.

Nothing half-written ever lands in the cache: every missing file of a dataset is
downloaded and verified first; only when all of them verified are the ``.part``
files renamed into place. On any failure every ``.part`` file is removed, and
``.part`` files left by a killed run are cleaned up by the next download.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from convscope.data.idx import MAX_IDX_BYTES, IdxError, IdxScan, IdxStream, scan_idx_file
from convscope.data.sources import (
    PACKAGED_SPLITS, SPLIT_NAMES, DataNotFoundError, DatasetInfo, cache_dir, dataset_info, download_limit, file_in,
    mirrors_for, required_files, search,
)
from convscope.io import process_alive

USER_AGENT = "convscope-data/1 (+https://pypi.org/project/convscope)"
CHUNK = 1 << 16
#: A transfer slower than this on average (bytes/s, measured after ``timeout``
#: seconds) is abandoned as stalled.
MIN_RATE = 16_384
#: ``.part`` files whose writer cannot be identified are stale after this long (s).
STALE_PART_AGE = 3600.0


class DownloadError(RuntimeError):
    """Every mirror failed for a file (the message lists each attempt)."""


class _TransferError(OSError):
    """A transfer that ended early or stalled: worth retrying."""


class _Refused(Exception):
    """The mirror served the wrong thing (too large, bad content): try the next mirror."""


class _LocalWriteError(Exception):
    """Writing the ``.part`` file failed (disk full, no permission): not the network's fault."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _NoDowngradeRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never from https to plain http."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        if req.full_url.lower().startswith("https://") and not newurl.lower().startswith("https://"):
            raise urllib.error.HTTPError(
                req.full_url, code, f"refused a redirect from https to {newurl.split('/')[0]}//", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_NoDowngradeRedirect)


def _content_cap(info: DatasetInfo, base_name: str) -> int:
    return info.sizes.get(base_name) or MAX_IDX_BYTES


def _stored_limit(info: DatasetInfo, base_name: str, gzip: bool | None) -> int:
    """Most bytes a mirror may send for ``base_name`` (``gzip=None``: not known yet)."""
    cap = _content_cap(info, base_name)
    raw_limit = cap  # a raw IDX file is exactly its content
    gz_limit = download_limit(info, base_name) or cap + cap // 100 + (64 << 10)
    if gzip is None:
        return max(raw_limit, gz_limit)
    return gz_limit if gzip else raw_limit


def _stream_to_part(
    url: str, part: Path, base_name: str, info: DatasetInfo, timeout: float, min_rate: float,
    progress_label: str | None,
) -> IdxScan:
    """Stream ``url`` into ``part`` while checking it; returns the scan of a verified file.

    Raises:
        _Refused: too large, not the expected IDX content, or a SHA-256 mismatch.
        _TransferError: the transfer ended early or was too slow.
        _LocalWriteError: ``part`` could not be written.
        urllib.error.URLError, OSError, http.client.HTTPException: network failures.
    """
    try:
        out = open(part, "wb")
    except OSError as exc:
        raise _LocalWriteError(exc) from None
    with out:
        return _stream_into(url, out, base_name, info, timeout, min_rate, progress_label)


def _stream_into(
    url: str, out, base_name: str, info: DatasetInfo, timeout: float, min_rate: float, progress_label: str | None,
) -> IdxScan:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    expected_size = info.sizes.get(base_name)
    stream = IdxStream(url, max_bytes=_content_cap(info, base_name), expected_bytes=expected_size)
    with _OPENER.open(request, timeout=timeout) as response:  # noqa: S310 - http(s) mirrors only
        try:
            total = int(response.headers.get("Content-Length") or 0) or None
        except ValueError:
            total = None
        limit = _stored_limit(info, base_name, None)
        if total is not None and total > limit:
            raise _Refused(f"{url}: the server announces {total:,} bytes, more than the {limit:,} this file can take; refused")
        with contextlib.ExitStack() as stack:
            advance = None
            if progress_label is not None:
                from rich.console import Console
                from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

                bar = stack.enter_context(Progress(
                    TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    console=Console(stderr=True), transient=True,
                ))
                task = bar.add_task(progress_label, total=total)
                advance = lambda n: bar.update(task, advance=n)  # noqa: E731
            received = 0
            started = time.monotonic()
            # read1: return what has arrived (up to CHUNK), so a trickle is noticed in time.
            read = getattr(response, "read1", response.read)
            while True:
                chunk = read(CHUNK)
                if not chunk:
                    break
                received += len(chunk)
                if received == len(chunk):
                    limit = _stored_limit(info, base_name, chunk[:2] == b"\x1f\x8b")
                if received > limit:
                    raise _Refused(
                        f"{url}: served more than {limit:,} bytes, more than this file can take; refused"
                    )
                try:
                    stream.feed(chunk)
                except IdxError as exc:
                    raise _Refused(str(exc)) from None
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise _LocalWriteError(exc) from None
                if advance is not None:
                    advance(len(chunk))
                elapsed = time.monotonic() - started
                if elapsed > timeout and received / elapsed < min_rate:
                    raise _TransferError(
                        f"too slow: {received:,} bytes in {elapsed:.1f} s (less than {min_rate / 1000:.0f} kB/s); "
                        "abandoned"
                    )
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as exc:
                raise _LocalWriteError(exc) from None
    if total is not None and received != total:
        raise _TransferError(f"transfer ended after {received:,} of {total:,} bytes")
    try:
        scan = stream.finish()
    except IdxError as exc:
        raise _Refused(str(exc)) from None
    expected = info.sha256.get(base_name)
    if expected is not None and scan.sha256 != expected:
        raise _Refused(f"{url}: SHA-256 of the decompressed content is {scan.sha256}, expected {expected}")
    return scan


def verify_content(base_name: str, payload: bytes, info: DatasetInfo, source: str) -> bytes:
    """Decompress (if gzip) and check ``payload``; return the decompressed bytes.

    Inflates incrementally: no more than the size the IDX header declares (which
    must be the dataset file's size, when known).

    Raises:
        IdxError: corrupt gzip, bad IDX structure, or a SHA-256 mismatch; the
            message names ``source``.
    """
    stream = IdxStream(
        source, max_bytes=_content_cap(info, base_name), expected_bytes=info.sizes.get(base_name), keep=True
    )
    for start in range(0, len(payload), CHUNK):
        stream.feed(payload[start : start + CHUNK])
    scan = stream.finish()
    expected = info.sha256.get(base_name)
    if expected is not None and scan.sha256 != expected:
        raise IdxError(f"{source}: SHA-256 of the decompressed content is {scan.sha256}, expected {expected}")
    return stream.content()


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
    """Hash and parse one file of ``info`` in ``folder`` (streamed: memory stays bounded)."""
    expected = info.sha256.get(base_name)
    path = file_in(folder, base_name)
    if path is None:
        return FileCheck(base_name, None, None, expected, None, f"missing (neither {base_name} nor {base_name}.gz)")
    try:
        scan, _stream = scan_idx_file(path)
    except (IdxError, OSError) as exc:
        return FileCheck(base_name, path, None, expected, None, str(exc))
    shape = tuple(int(d) for d in scan.shape)
    if expected is not None and scan.sha256 != expected:
        return FileCheck(
            base_name, path, scan.sha256, expected, shape,
            f"{path}: SHA-256 of the content is {scan.sha256}, expected {expected} (a different or damaged file)",
        )
    return FileCheck(base_name, path, scan.sha256, expected, shape, None)


def verify_folder(folder: str | os.PathLike, info: DatasetInfo) -> list[FileCheck]:
    """Check all four files of ``info`` in ``folder`` (reads and hashes ~55 MB for MNIST)."""
    return [check_file(Path(folder), name, info) for name in info.files]


def _part_path(target: Path, base_name: str) -> Path:
    """The temporary file for ``base_name`` in ``target``, tagged with this process's id."""
    return target / f".{base_name}.gz.{os.getpid()}.part"


_PART = re.compile(r"^\.(?P<file>.+?)\.(?P<tag>[^.]+)\.part$")


def clean_stale_parts(target: str | os.PathLike, info: DatasetInfo, *, max_age: float = STALE_PART_AGE) -> list[Path]:
    """Remove ``.part`` files of ``info``'s files left in ``target`` by a killed run.

    A ``.part`` tagged with a process id is stale when that process is gone; an
    untagged one (an older atomic write) when it is older than ``max_age`` seconds.
    Returns the files removed.
    """
    target = Path(target)
    removed: list[Path] = []
    if not target.is_dir():
        return removed
    names = {n for base in info.files for n in (base, f"{base}.gz")}
    now = time.time()
    for path in target.glob(".*.part"):
        match = _PART.match(path.name)
        if match is None or match["file"] not in names:
            continue
        tag = match["tag"]
        try:
            stale = (not process_alive(int(tag))) if tag.isdigit() else now - path.stat().st_mtime > max_age
            if stale:
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


def _fetch_verified(
    base_name: str, info: DatasetInfo, mirrors: tuple[str, ...], retries: int, timeout: float, backoff: float,
    progress: bool, target: Path, min_rate: float = MIN_RATE,
) -> tuple[str, Path]:
    """Fetch one file from the first mirror that serves verified content into a ``.part``.

    Returns ``(file name to store, verified .part path)``: a ``.gz`` is kept
    compressed (readers handle both).
    """
    attempts: list[str] = []
    part = _part_path(target, base_name)
    for mirror in mirrors:
        url = f"{mirror}{base_name}.gz"
        for attempt in range(max(1, retries)):
            part.unlink(missing_ok=True)
            try:
                scan = _stream_to_part(
                    url, part, base_name, info, timeout, min_rate, f"{info.name} {base_name}.gz" if progress else None
                )
            except _LocalWriteError as exc:
                part.unlink(missing_ok=True)
                raise exc.error from None
            except _Refused as exc:
                part.unlink(missing_ok=True)
                attempts.append(f"rejected {exc}")
                break  # wrong content: retrying the same mirror will not help
            except urllib.error.HTTPError as exc:
                part.unlink(missing_ok=True)
                attempts.append(f"{url}: HTTP {exc.code} {exc.reason}")
                if exc.code < 500:
                    break  # 404 and friends: this mirror does not have it
            except (urllib.error.URLError, OSError, http.client.HTTPException, TimeoutError, ValueError) as exc:
                part.unlink(missing_ok=True)
                reason = getattr(exc, "reason", None) or exc
                attempts.append(f"{url}: {reason}")
                if isinstance(reason, socket.gaierror):
                    break  # the host name does not resolve (offline?): try the next mirror at once
            except BaseException:
                part.unlink(missing_ok=True)
                raise
            else:
                return (f"{base_name}.gz" if scan.gzip else base_name), part
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


def _make_dirs(target: Path) -> list[Path]:
    """``mkdir -p target``; returns the folders it created, deepest first."""
    created = []
    folder = target
    while not folder.exists():
        created.append(folder)
        folder = folder.parent
    target.mkdir(parents=True, exist_ok=True)
    return created


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
    min_rate: float = MIN_RATE,
) -> Path:
    """Download every file of ``info`` missing from ``target``.

    All missing files are fetched and verified (into ``.part`` files) before any
    is moved into place, so a failed or corrupt download leaves ``target``
    exactly as it was (folders created for it are removed again).

    Args:
        info: the dataset.
        target: folder to fill.
        mirrors: base URLs to try in order (default: ``$CONVSCOPE_MIRRORS`` or
            ``info.mirrors``); each serves ``<base><file>.gz``.
        retries: attempts per mirror for network errors and HTTP 5xx.
        timeout: seconds per network operation; after it, a transfer averaging
            less than ``min_rate`` bytes/s is abandoned.
        backoff: seconds before a retry, doubled each time.
        progress: show a progress bar per file (on stderr).
        replace_bad: also re-download files that are present but fail
            verification (hash / structure), replacing them.
        min_rate: the slowest acceptable average transfer rate (bytes/s).

    Returns:
        ``target``.

    Raises:
        DownloadError: a file could not be fetched and verified from any mirror.
        OSError: ``target`` cannot be written.
    """
    target = Path(target)
    mirror_list = tuple(mirrors) if mirrors else mirrors_for(info)
    mirror_list = tuple(m if m.endswith("/") else m + "/" for m in mirror_list)
    clean_stale_parts(target, info)
    todo = []
    for base_name in info.files:
        if file_in(target, base_name) is None:
            todo.append(base_name)
        elif replace_bad and not check_file(target, base_name, info).ok:
            todo.append(base_name)
    if not todo:
        return target
    created = _make_dirs(target)
    staged: dict[str, tuple[str, Path]] = {}
    try:
        for base_name in todo:
            staged[base_name] = _fetch_verified(
                base_name, info, mirror_list, retries, timeout, backoff, progress, target, min_rate
            )
    except BaseException:
        for _name, part in staged.values():
            part.unlink(missing_ok=True)
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty
        raise
    for base_name, (file_name, part) in staged.items():
        os.replace(part, target / file_name)
        # A bad copy under the other name (raw vs .gz) would shadow or confuse; remove it.
        other = target / (base_name if file_name.endswith(".gz") else f"{base_name}.gz")
        if other.exists():
            other.unlink()
    return target



def locate(
    dataset: str = "mnist", data_dir: str | os.PathLike | None = None, *, download: bool = True,
    split: str | None = None,
) -> Path:
    """Return a folder holding the IDX files of ``dataset`` (of one ``split``, or all four).

    Args:
        dataset: ``"mnist"`` or ``"fashion-mnist"``.
        data_dir: an explicit folder; when given, only it (or its ``<dataset>/``
            subfolder) is searched and nothing is downloaded.
        download: allow downloading into the user cache when nothing is found.
        split: ``"train"`` / ``"test"``: find that split on its own (the MNIST test
            set also ships inside the package); ``None``: all four files.

    Raises:
        DataNotFoundError: nothing found (and download failed or was not allowed);
            the message says where to put the files.
    """
    info = dataset_info(dataset)
    needed = required_files(info.name, split)
    what = f"{info.name} IDX files" + ("" if split is None else f" of the {split} split")
    checks = search(info.name, data_dir, split=split)
    for check in checks:
        if check.usable:
            return check.folder
    if data_dir is not None:
        wrong = [c for c in checks if not c.missing and not c.usable]
        if wrong:
            raise DataNotFoundError(
                f"{wrong[0].folder} holds the {wrong[0].holds} files, not {info.name}; "
                f"point --data-dir at a folder with the {info.name} IDX files (or choose --dataset {wrong[0].holds})"
            )
        raise DataNotFoundError(
            f"{data_dir} does not hold the {what} ({', '.join(needed)}, raw or .gz); "
            "point --data-dir at the folder that holds them"
        )
    target = cache_dir(info.name)
    if download:
        try:
            download_dataset(info, target)
            return target
        except DownloadError as exc:
            reason = f" Download failed: {exc}."
        except OSError as exc:  # e.g. the cache folder is not writable
            reason = f" Could not write the download into {target}: {exc.strerror or exc}."
    else:
        reason = " Downloading was not allowed."
    searched = "; ".join(f"{c.folder} ({c.origin}: {c.reason})" for c in checks)
    subject = f"the {info.name} files" if split is None else f"the {info.name} {SPLIT_NAMES[split]}"
    shipped = [s for (d, s) in PACKAGED_SPLITS if d == info.name and s != split]
    note = (
        f" (Only the {SPLIT_NAMES[shipped[0]]} ships with convscope; the {SPLIT_NAMES[split]} is a download or "
        "a folder of your own.)" if split is not None and shipped else ""
    )
    raise DataNotFoundError(
        f"could not find {subject} and could not download {'them' if split is None else 'it'}. "
        f"Searched: {searched}.{reason}{note} "
        f"Fix: put the {'four files' if split is None else 'files'} ({', '.join(f + '.gz' for f in needed)}) into {target}, "
        f"or pass --data-dir FOLDER, or set CONVSCOPE_DATA=FOLDER "
        f"(run `convscope data where --dataset {info.name}` to see the search)."
    )

__all__ = [
    "locate",
    "DownloadError", "FileCheck", "check_file", "clean_stale_parts", "download_dataset", "verify_content",
    "verify_folder",
]
