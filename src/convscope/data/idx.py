"""Read and write IDX files (the MNIST container format), gzip or raw.

IDX layout: 2 zero bytes, a type byte (0x08 = uint8), a dimension count byte,
then one big-endian uint32 per dimension, then the data in C order.

Reading is streamed (:class:`IdxStream`): the header is read first, and at most
the size it declares (+ 1 byte) is ever inflated, so a gzip bomb or a damaged
header is refused with memory bounded by the declared size (itself capped by
:data:`MAX_IDX_BYTES`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_GZIP_MAGIC = b"\x1f\x8b"
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}


#: Largest IDX content accepted by default (decompressed bytes): 1 GiB, 1.3 million
#: 28×28 images. A header declaring more is refused before anything is inflated.
MAX_IDX_BYTES = 1 << 30

_CHUNK = 1 << 20  # inflate / read in pieces of at most this size: memory stays bounded
_MAX_HEADER = 4 + 4 * 255


class IdxError(ValueError):
    """An IDX file that is truncated, corrupt or not an IDX file at all."""


@dataclass(frozen=True)
class IdxScan:
    """What :class:`IdxStream` found in one IDX file.

    Attributes:
        source: the file or URL (for messages).
        dtype: element type (big-endian as stored).
        shape: the array shape the header declares (and the data fill).
        header_bytes: size of the IDX header.
        content_bytes: decompressed size (header + data).
        stored_bytes: bytes fed in (compressed size for gzip).
        gzip: whether the input was gzip-compressed.
        sha256: SHA-256 of the decompressed content.
    """

    source: str
    dtype: np.dtype
    shape: tuple[int, ...]
    header_bytes: int
    content_bytes: int
    stored_bytes: int
    gzip: bool
    sha256: str


class IdxStream:
    """Check an IDX file as it arrives, in pieces: gzip or raw (told by content),
    inflated incrementally, hashed, and held to what its header declares.

    The header is read first; from then on at most the declared size + 1 byte is
    ever inflated, so a decompression bomb or a file that continues past its
    declared shape is refused after a bounded amount of work, and memory stays
    bounded (``keep=False`` holds nothing but the header).

    Args:
        source: file name or URL, used in every message.
        max_bytes: refuse content (header + data) larger than this.
        expected_bytes: the content size a known dataset file has; a header
            declaring another size is refused at once.
        keep: keep the decompressed content (for :meth:`content`).

    Raises (from :meth:`feed` / :meth:`finish`):
        IdxError: corrupt or truncated gzip, wrong magic, a header declaring more
            than ``max_bytes`` or another size than ``expected_bytes``, data
            beyond or short of the declared size; names ``source``.
    """

    def __init__(
        self, source: str = "<bytes>", *, max_bytes: int = MAX_IDX_BYTES, expected_bytes: int | None = None,
        keep: bool = False,
    ) -> None:
        self.source = source
        self.max_bytes = int(max_bytes)
        self.expected_bytes = expected_bytes
        self.keep = keep
        self._lead = b""  # first bytes, until gzip or raw is decided
        self._gzip: bool | None = None
        self._inflater = None
        self._between_members = False
        self._head = b""
        self._dtype: np.dtype | None = None
        self._shape: tuple[int, ...] | None = None
        self._header_end = 0
        self._total: int | None = None  # declared content size (header + data)
        self._produced = 0
        self._stored = 0
        self._hash = hashlib.sha256()
        self._chunks: list[bytes] = []

    # -- input -------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Take the next piece of the stored file (any size)."""
        if not data:
            return
        self._stored += len(data)
        if self._gzip is None:
            self._lead += data
            if len(self._lead) < 2:
                return
            data, self._lead = self._lead, b""
            self._gzip = data[:2] == _GZIP_MAGIC
            if self._gzip:
                self._inflater = zlib.decompressobj(wbits=31)
        if self._gzip:
            self._inflate(data)
        else:
            self._take(data)

    def _inflate(self, data: bytes) -> None:
        while data:
            if self._between_members:
                data = data.lstrip(b"\0")  # gzip allows zero padding after a member
                if not data:
                    return
                self._inflater = zlib.decompressobj(wbits=31)  # a further member (concatenated gzip)
                self._between_members = False
            try:
                out = self._inflater.decompress(data, self._room())
            except zlib.error as exc:
                raise IdxError(
                    f"{self.source}: corrupt gzip data ({exc}); delete it and fetch it again"
                ) from None
            if out:
                self._take(out)
            if self._inflater.eof:
                self._between_members = True
                data = self._inflater.unused_data
            else:
                data = self._inflater.unconsumed_tail

    def _room(self) -> int:
        """How many more bytes may be inflated now (never 0: zlib reads 0 as 'no limit')."""
        if self._total is None:  # inflate no further than the header until it is read
            head = self._head
            needed = 4 if len(head) < 4 else 4 + 4 * head[3]
            return max(1, needed - len(head))
        return max(1, min(_CHUNK, self._total - self._produced + 1))

    def _take(self, out: bytes) -> None:
        self._produced += len(out)
        if self._total is None:
            self._head += out[: _MAX_HEADER]
            self._parse_header()
        if self._total is not None and self._produced > self._total:
            self._refuse_excess()
        self._hash.update(out)
        if self.keep:
            self._chunks.append(out)

    def _parse_header(self) -> None:
        head = self._head
        if len(head) < 4:
            return
        zero, type_code, n_dims = struct.unpack(">HBB", head[:4])
        if zero != 0 or type_code not in _DTYPES or n_dims == 0:
            raise IdxError(
                f"{self.source}: wrong magic number 0x{head[:4].hex()} (expected 0x0000080N for uint8 IDX data); "
                "this is not an MNIST-format IDX file"
            )
        header_end = 4 + 4 * n_dims
        if len(head) < header_end:
            return
        shape = struct.unpack(f">{n_dims}I", head[4:header_end])
        dtype = np.dtype(_DTYPES[type_code])
        total = header_end + math.prod(shape) * dtype.itemsize  # exact: Python integers do not overflow
        if self.expected_bytes is not None and total != self.expected_bytes:
            raise IdxError(
                f"{self.source}: the IDX header declares shape {shape} ({total:,} bytes), but this file has "
                f"{self.expected_bytes:,} bytes; wrong or damaged file"
            )
        if total > self.max_bytes:
            raise IdxError(
                f"{self.source}: the IDX header declares shape {shape} = {total - header_end:,} data bytes, more than "
                f"the {self.max_bytes:,}-byte limit for one file; the header is damaged or this is not a dataset file"
            )
        self._dtype, self._shape, self._header_end, self._total = dtype, shape, header_end, total

    def _refuse_excess(self) -> None:
        assert self._shape is not None and self._total is not None
        data_bytes = self._total - self._header_end
        if self._gzip:
            raise IdxError(
                f"{self.source}: inflates beyond the {data_bytes:,} data bytes its IDX header declares "
                f"(shape {self._shape}): trailing data or a decompression bomb; refused after "
                f"{self._produced:,} bytes"
            )
        raise IdxError(
            f"{self.source}: has trailing bytes: header declares shape {self._shape} ({data_bytes} data bytes) "
            "but the file holds more"
        )

    # -- result ------------------------------------------------------------------------------
    def finish(self) -> IdxScan:
        """Check that the input ended where it should; returns the scan."""
        if self._gzip is None:  # fewer than 2 bytes in all
            self._gzip = False
            self._take(self._lead)
        if self._gzip and not self._between_members:
            raise IdxError(
                f"{self.source}: corrupt or truncated gzip data (the compressed stream ends early); "
                "delete it and fetch it again"
            )
        if self._total is None:
            if self._produced < 4:
                raise IdxError(f"{self.source}: file is only {self._produced} bytes; not an IDX file")
            raise IdxError(f"{self.source}: truncated header")
        if self._produced < self._total:
            data_bytes, held = self._total - self._header_end, self._produced - self._header_end
            raise IdxError(
                f"{self.source}: truncated: header declares shape {self._shape} ({data_bytes} data bytes) "
                f"but the file holds {held}"
            )
        assert self._dtype is not None and self._shape is not None
        return IdxScan(
            self.source, self._dtype, self._shape, self._header_end, self._produced, self._stored,
            bool(self._gzip), self._hash.hexdigest(),
        )

    def content(self) -> bytes:
        """The decompressed content (``keep=True`` only), once :meth:`finish` passed."""
        if not self.keep:
            raise RuntimeError("IdxStream(keep=False) keeps no content")
        data = b"".join(self._chunks)
        self._chunks = [data]
        return data


def scan_idx_file(
    path: str | os.PathLike, *, max_bytes: int = MAX_IDX_BYTES, expected_bytes: int | None = None,
    keep: bool = False,
) -> tuple[IdxScan, IdxStream]:
    """Stream a local IDX file (gzip or raw) through :class:`IdxStream`.

    Reads at most the header-declared size + 1 byte of content, in 1 MiB pieces.

    Raises:
        IdxError: see :class:`IdxStream`; also a folder given for a file.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    if path.is_dir():
        raise IdxError(f"{path} is a folder, not an IDX file")
    stream = IdxStream(str(path), max_bytes=max_bytes, expected_bytes=expected_bytes, keep=keep)
    try:
        with open(path, "rb") as handle:
            while True:
                piece = handle.read(_CHUNK)
                if not piece:
                    break
                stream.feed(piece)
    except IsADirectoryError:
        raise IdxError(f"{path} is a folder, not an IDX file") from None
    return stream.finish(), stream


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
    expected = math.prod(dims) * dtype.itemsize  # exact: no int64 overflow for absurd headers
    actual = len(data) - header_end
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise IdxError(
            f"{source}: {what}: header declares shape {dims} ({expected} data bytes) but the file holds {actual}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_end).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike, *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file (gzip or raw) into a numpy array, e.g. ``(60000, 28, 28)`` uint8.

    Memory stays bounded by the header-declared size (at most ``max_bytes``): a
    file that inflates beyond it is refused, never inflated whole.
    """
    scan, stream = scan_idx_file(path, max_bytes=max_bytes, keep=True)
    data = stream.content()
    array = np.frombuffer(data, dtype=scan.dtype, offset=scan.header_bytes).reshape(scan.shape)
    return array.astype(scan.dtype.newbyteorder("="), copy=True)


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
