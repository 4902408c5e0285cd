"""IDX reading/writing and every bad-input case: truncated, corrupt gzip, wrong magic,
images and labels that do not belong together."""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from convscope.data import DatasetError, IdxError, load_split, read_idx, write_idx
from convscope.data.idx import encode_idx, parse_idx

sys.path.insert(0, str(Path(__file__).parent))  # helpers beside this file, in any pytest import mode
from datatest_helpers import make_arrays, write_dataset  # noqa: E402

def test_header_layout_is_the_mnist_format():
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    data = encode_idx(array)
    # 2 zero bytes, type 0x08 (uint8), 3 dims, then big-endian uint32 dims, then C-order data.
    assert data[:4] == b"\x00\x00\x08\x03"
    assert struct.unpack(">3I", data[4:16]) == (2, 3, 4)
    assert data[16:] == bytes(range(24))


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip_raw_and_gzip(tmp_path, suffix):
    array = np.random.default_rng(1).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    path = tmp_path / f"images-idx3-ubyte{suffix}"
    write_idx(path, array)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(path)
    assert back.dtype == np.uint8 and back.shape == (7, 28, 28)
    np.testing.assert_array_equal(back, array)
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


def test_gzip_detected_by_content_not_name(tmp_path):
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    path = tmp_path / "labels-without-gz-suffix"
    path.write_bytes(gzip.compress(encode_idx(labels)))
    np.testing.assert_array_equal(read_idx(path), labels)


def test_real_mnist_files_read_in_original_order(mnist_dir):
    from convscope.data.sources import file_in

    labels = read_idx(file_in(mnist_dir, "t10k-labels-idx1-ubyte"))
    assert labels.shape == (10000,)
    # The first test labels of MNIST (fixed by the file, not by any model).
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(labels, minlength=10).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file_is_refused_naming_it(tmp_path, gz):
    array = np.zeros((5, 28, 28), dtype=np.uint8)
    payload = encode_idx(array)[:-100]  # data cut short
    path = tmp_path / ("cut-idx3-ubyte.gz" if gz else "cut-idx3-ubyte")
    path.write_bytes(gzip.compress(payload) if gz else payload)
    with pytest.raises(IdxError, match="truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert "3920 data bytes" in str(info.value) and "3820" in str(info.value)


def test_truncated_gzip_stream_is_refused(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    full = gzip.compress(encode_idx(np.ones((50, 28, 28), dtype=np.uint8)))
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(IdxError, match="corrupt or truncated gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip_is_refused(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    good = bytearray(gzip.compress(encode_idx(np.arange(200, dtype=np.uint8) % 10)))
    for i in range(12, len(good) - 8):  # scramble the deflate stream, keep the gzip header
        good[i] ^= 0x5A
    path.write_bytes(bytes(good))
    with pytest.raises(IdxError, match="gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("magic", [b"\x00\x00\x08\x00", b"\x01\x00\x08\x03", b"\x00\x00\x07\x03", b"PK\x03\x04"])
def test_wrong_magic_is_refused(tmp_path, magic):
    path = tmp_path / "not-idx"
    path.write_bytes(magic + b"\x00" * 64)
    with pytest.raises(IdxError, match="wrong magic number") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_trailing_bytes_and_tiny_files_are_refused(tmp_path):
    with pytest.raises(IdxError, match="trailing bytes"):
        parse_idx(encode_idx(np.zeros(4, dtype=np.uint8)) + b"\x00", source="x")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(IdxError, match="0 bytes") as info:
        read_idx(empty)
    assert str(empty) in str(info.value)


def test_image_label_count_mismatch_names_both_files(tmp_path):
    arrays = make_arrays(n_test=20)
    arrays["t10k-labels-idx1-ubyte"] = arrays["t10k-labels-idx1-ubyte"][:19]
    write_dataset(tmp_path, arrays)
    with pytest.raises(DatasetError, match="20 images but .* 19 labels") as info:
        load_split("test", data_dir=tmp_path)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message


def test_labels_outside_0_to_9_are_refused(tmp_path):
    arrays = make_arrays()
    labels = arrays["t10k-labels-idx1-ubyte"].copy()
    labels[3] = 10
    arrays["t10k-labels-idx1-ubyte"] = labels
    write_dataset(tmp_path, arrays)
    with pytest.raises(DatasetError, match="label 10 is outside 0..9"):
        load_split("test", data_dir=tmp_path)


def test_images_of_the_wrong_size_are_refused(tmp_path):
    arrays = make_arrays()
    arrays["train-images-idx3-ubyte"] = np.zeros((30, 32, 32), dtype=np.uint8)
    write_dataset(tmp_path, arrays)
    with pytest.raises(IdxError, match="expected 28×28 images, found 32×32") as info:
        load_split("train", data_dir=tmp_path)
    assert "train-images-idx3-ubyte" in str(info.value)


def test_load_split_gives_read_only_arrays_in_file_order(tmp_path):
    arrays = make_arrays(seed=5)
    write_dataset(tmp_path, arrays, gz=False)
    split = load_split("test", data_dir=tmp_path)
    np.testing.assert_array_equal(split.images, arrays["t10k-images-idx3-ubyte"])
    assert split.labels.dtype == np.int64
    np.testing.assert_array_equal(split.labels, arrays["t10k-labels-idx1-ubyte"])
    assert not split.images.flags.writeable and not split.labels.flags.writeable
    with pytest.raises(ValueError):
        split.images[0, 0, 0] = 1


def test_a_changed_file_is_read_again(tmp_path):
    arrays = make_arrays(seed=7)
    write_dataset(tmp_path, arrays)
    first = load_split("test", data_dir=tmp_path)
    assert load_split("test", data_dir=tmp_path) is first  # cached per process
    arrays["t10k-labels-idx1-ubyte"] = (arrays["t10k-labels-idx1-ubyte"] + 1) % 10
    write_dataset(tmp_path, arrays)
    second = load_split("test", data_dir=tmp_path)
    assert second is not first
    np.testing.assert_array_equal(second.labels, (first.labels + 1) % 10)
