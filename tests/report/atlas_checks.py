"""Checks shared by the executor tests: two builds of the same atlas agree."""

from __future__ import annotations

import json

import numpy as np

from convscope.report.codec import encode


def assert_same_atlas(reference, other) -> None:
    """Every stage result equal (JSON values, arrays bit for bit, encoded pictures
    byte for byte) and every stage's numbers in ``atlas.json`` equal."""
    assert set(other.results) == set(reference.results)
    for name, expected in reference.results.items():
        meta, arrays, blobs = encode(expected)
        got_meta, got_arrays, got_blobs = encode(other.results[name])
        assert got_meta == meta, name
        assert got_arrays.keys() == arrays.keys(), name
        for key, array in arrays.items():
            assert got_arrays[key].dtype == array.dtype and np.array_equal(got_arrays[key], array), f"{name} {key}"
        assert got_blobs == blobs, name
    summary, got = (json.loads(r.summary.read_text()) for r in (reference, other))
    assert got["stages"] == summary["stages"]
    assert [t["stage"] for t in got["timings"]] == [t["stage"] for t in summary["timings"]]
