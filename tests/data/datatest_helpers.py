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
    return dataclasses.replace(dataset_info("mnist"), sha256=hashes, mirrors=())


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
