"""Read and write IDX files (the MNIST container format), gzip or raw.

IDX layout: 2 zero bytes, a type byte (0x08 = uint8), a dimension count byte,
then one big-endian uint32 per dimension, then the data in C order.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np

_GZIP_MAGIC = b"\x1f\x8b"
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}


class IdxError(ValueError):
    """An IDX file that is truncated, corrupt or not an IDX file at all."""


def read_idx_bytes(path: str | os.PathLike) -> bytes:
    """The decompressed bytes of an IDX file (``.gz`` detected by content, not name).

    Raises:
        IdxError: the gzip stream is corrupt or truncated; names the file.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError as exc:
        raise IdxError(f"{path} is a folder, not an IDX file") from exc
    return decompress_if_gzip(raw, str(path))


def decompress_if_gzip(raw: bytes, source: str = "<bytes>") -> bytes:
    """``raw`` decompressed when it starts with the gzip magic, else unchanged.

    Raises:
        IdxError: the gzip stream is corrupt or truncated; names ``source``.
    """
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; bad deflate data is zlib.error
        raise IdxError(
            f"{source}: corrupt or truncated gzip data ({exc or type(exc).__name__}); delete it and fetch it again"
        ) from exc


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse decompressed IDX bytes into an array of the declared shape.

    Raises:
        IdxError: wrong magic number, unknown type, or a size that does not match
            the header; the message names ``source``.
    """
    if len(data) < 4:
        raise IdxError(f"{source}: file is only {len(data)} bytes; not an IDX file")
    zero, type_code, n_dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in _DTYPES or n_dims == 0:
        raise IdxError(
            f"{source}: wrong magic number 0x{data[:4].hex()} (expected 0x0000080N for uint8 IDX data); "
            "this is not an MNIST-format IDX file"
        )
    header_end = 4 + 4 * n_dims
    if len(data) < header_end:
        raise IdxError(f"{source}: truncated header")
    dims = struct.unpack(f">{n_dims}I", data[4:header_end])
    dtype = np.dtype(_DTYPES[type_code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_end
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise IdxError(
            f"{source}: {what}: header declares shape {dims} ({expected} data bytes) but the file holds {actual}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_end).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip or raw) into a numpy array, e.g. ``(60000, 28, 28)`` uint8."""
    return parse_idx(read_idx_bytes(path), source=str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """Encode a uint8/int8 array as IDX bytes (uncompressed)."""
    array = np.ascontiguousarray(array)
    if array.dtype not in _TYPE_CODES:
        raise ValueError(f"IDX writing supports uint8 and int8 arrays, not {array.dtype}")
    header = struct.pack(">HBB", 0, _TYPE_CODES[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file; gzip when ``compress`` or the name ends in ``.gz``.

    Writes to a temporary file beside ``path`` and renames it into place.
    """
    path = Path(path)
    payload = encode_idx(array)
    if compress or (compress is None and path.suffix == ".gz"):
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
            handle.write(payload)
        payload = buffer.getvalue()
    from convscope.io import atomic_write_bytes

    atomic_write_bytes(path, payload)
