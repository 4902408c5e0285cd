"""Small generated IDX datasets and a local HTTP server for the data tests."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from convscope.data.idx import encode_idx
from convscope.data.sources import DatasetInfo, dataset_info


def make_arrays(n_train: int = 30, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Random uint8 images (N, 28, 28) and labels 0..9, keyed by IDX base name."""
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_dataset(folder: Path, arrays: dict[str, np.ndarray], *, gz: bool = True) -> DatasetInfo:
    """Write the arrays as IDX files (``.gz`` by default); returns a DatasetInfo
    whose canonical hashes are those of the decompressed content."""
    folder.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for name, array in arrays.items():
        payload = encode_idx(array)
        hashes[name] = hashlib.sha256(payload).hexdigest()
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(payload, mtime=0))
        else:
            (folder / name).write_bytes(payload)
    # No known sizes: the generated files are smaller than MNIST's (the size checks are tested on their own).
    return dataclasses.replace(dataset_info("mnist"), sha256=hashes, mirrors=(), sizes={}, gz_sizes={})


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep test output clean
        pass


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def files_under(folder: Path) -> list[str]:
    """All file names under ``folder`` (recursively), including hidden temporaries."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def idx_header(shape: tuple[int, ...], type_code: int = 0x08) -> bytes:
    """The IDX header declaring ``shape`` (uint8 by default)."""
    import struct

    return struct.pack(">HBB", 0, type_code, len(shape)) + struct.pack(f">{len(shape)}I", *shape)


def gzip_bomb(prefix: bytes, total: int) -> bytes:
    """A valid gzip file whose content is ``prefix`` then zeros, ``total`` bytes in all
    (2 GiB fit in about 2 MB): one compressed MiB of zeros repeated, CRC and size correct."""
    import struct
    import zlib

    mib = 1 << 20
    zeros = total - len(prefix)
    count, rest = divmod(zeros, mib)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate; a full flush makes blocks independent
    parts = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff", compressor.compress(prefix), compressor.flush(zlib.Z_FULL_FLUSH)]
    block = compressor.compress(bytes(mib)) + compressor.flush(zlib.Z_FULL_FLUSH)
    parts.append(block * count)
    parts.append(compressor.compress(bytes(rest)) + compressor.flush(zlib.Z_FINISH))
    crc = zlib.crc32(prefix)
    zero_mib = bytes(mib)
    for _ in range(count):
        crc = zlib.crc32(zero_mib, crc)
    crc = zlib.crc32(bytes(rest), crc)
    parts.append(struct.pack("<II", crc, total & 0xFFFFFFFF))
    return b"".join(parts)


@contextlib.contextmanager
def scripted_server(respond, *, max_requests: int = 50) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 whose GET answers are written by ``respond(handler)``.

    Serves at most ``max_requests`` requests (a bounded loop, each in its own
    thread), and stops when the block ends. Yields ``(base URL, paths requested)``.
    """
    requested: list[str] = []
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            requested.append(self.path)
            try:
                respond(self)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client hung up: what a refusing downloader does

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            pass

    Handler.stop = stop  # type: ignore[attr-defined]  # endless bodies watch it
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.timeout = 0.1

    def loop() -> None:
        while not stop.is_set() and len(requested) < max_requests:
            server.handle_request()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", requested
    finally:
        stop.set()
        thread.join(5)
        server.server_close()


def run_limited(args: list[str], env: dict[str, str], *, address_space: int = 3 << 29, timeout: float = 180):
    """Run ``python -m convscope ARGS`` in a subprocess whose address space is
    limited to ``address_space`` bytes (1.5 GiB): a bomb that reached memory
    would end in MemoryError. Returns the CompletedProcess (text)."""
    import os
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return subprocess.run(
        [sys.executable, "-m", "convscope", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env}, preexec_fn=limit,
    )
