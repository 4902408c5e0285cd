"""Atomic output: a failure part-way leaves the old file (or nothing) and no temporary."""

from __future__ import annotations

import json
import math
import stat

import numpy as np
import pytest
import torch

from convscope.io import atomic_open, atomic_write_bytes, save_figure, save_npy, to_json, write_json


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(target) as handle:
            handle.write(b"half of the new cont")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_failed_first_write_leaves_nothing(tmp_path):
    target = tmp_path / "sub" / "new.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(target) as handle:
            handle.write(b"x")
            raise KeyboardInterrupt
    assert not target.exists() and list((tmp_path / "sub").iterdir()) == []


def test_written_files_get_ordinary_permissions(tmp_path):
    path = atomic_write_bytes(tmp_path / "a" / "b.bin", b"abc")
    assert path.read_bytes() == b"abc"
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & 0o044 == 0o044  # readable by group and others, unlike mkstemp's 0600


def test_json_converts_numpy_and_torch_and_refuses_nan(tmp_path):
    data = {"a": np.int64(3), "b": np.float32(0.5), "c": np.arange(3), "d": torch.tensor([1.5, 2.0]), "p": tmp_path}
    path = write_json(tmp_path / "x.json", data)
    assert json.loads(path.read_text()) == {"a": 3, "b": 0.5, "c": [0, 1, 2], "d": [1.5, 2.0], "p": str(tmp_path)}
    with pytest.raises(ValueError):
        to_json({"accuracy": math.nan})  # NaN is not JSON; engines must map it to null


def test_save_npy_round_trip_without_pickle(tmp_path):
    array = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    path = save_npy(tmp_path / "a.npy", array)
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), array.numpy())


def test_save_figure_writes_a_png_and_closes_the_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots()
    axis.plot([0, 1], [0, 1])
    path = save_figure(tmp_path / "f.png", figure)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(figure.number)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": NaN}', "non-finite number NaN"),
        ('[1, -Infinity]', "non-finite number -Infinity"),
        ('{"a": 1e999}', "too large to be finite"),
        ("[" * 5000 + "]" * 5000, "nested 5000 levels deep"),
        ('{"a": ', "not valid JSON"),
        (b'{"a": "\xff"}', "not UTF-8"),
    ],
)
def test_parse_json_refuses_non_finite_deep_and_broken_input(text, message):
    from convscope.io import JsonFileError, parse_json

    with pytest.raises(JsonFileError, match=message) as info:
        parse_json(text, "some.json")
    assert str(info.value).startswith("some.json: ")


def test_parse_json_depth_ignores_brackets_inside_strings():
    from convscope.io import parse_json

    text = '{"a": "[[[[{{{{\\\\\\" [[[", "b": [[1.5]]}'
    assert parse_json(text, max_depth=3) == {"a": '[[[[{{{{\\" [[[', "b": [[1.5]]}
    with pytest.raises(ValueError, match="nested 3 levels"):
        parse_json(text, max_depth=2)


def test_read_json_bounds_the_size(tmp_path):
    from convscope.io import JsonFileError, read_json

    path = tmp_path / "x.json"
    path.write_text(json.dumps({"a": [1, 2.5, None]}))
    assert read_json(path) == {"a": [1, 2.5, None]}
    path.write_text(json.dumps({"a": "b" * 2000}))
    with pytest.raises(JsonFileError, match="larger than 1,000 bytes"):
        read_json(path, max_bytes=1000)
