"""Issue 14 for dreams: every number and objective checked at the edge, one clear
line for each bad input (a real subprocess, so a traceback would show), nothing
written; strict objective weights; a 1,500-term objective; long texts cut."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from convscope.cli import main
from convscope.dream import ObjectiveTextError, TilingError, carve, deep_dream, parse_dream_objective, zoom_frames
from convscope.optvis import objectives as obj

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1e-3*Conv2D_3", [(1e-3, "Conv2D_3")]),
        (".5*Conv2D_3:3", [(0.5, "Conv2D_3:3")]),
        ("2.5E+2*Conv2D_2 - Conv2D_3:1", [(250.0, "Conv2D_2"), (-1.0, "Conv2D_3:1")]),
        ("Conv2D_3 + 0.5*Conv2D_2:7 - 1e-3*Conv2D_1", [(1.0, "Conv2D_3"), (0.5, "Conv2D_2:7"), (-1e-3, "Conv2D_1")]),
        ("-Conv2D_3:56@1,1 + logits:4", [(-1.0, "Conv2D_3:56@1,1"), (1.0, "logits:4")]),
    ],
)
def test_objective_weights_are_read_as_written(shipped_model, text, expected) -> None:
    objective = parse_dream_objective(shipped_model, text)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    want = sum(weight * obj.parse_objective(term)(shipped_model, x) for weight, term in expected)
    assert torch.allclose(objective(shipped_model, x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "text, message",
    [
        ("nan*Conv2D_3:56", "weight 'nan' .* is not a finite number"),
        ("inf*Conv2D_3", "weight 'inf' .* is not a finite number"),
        ("-inf*Conv2D_3", "is not a finite number"),
        ("1e400*Conv2D_3", "too large"),
        ("1_000*Conv2D_3", "cannot read weight '1_000'"),
        ("x*Conv2D_3", "cannot read weight 'x'"),
        ("Conv2D_3 +", "ends with '\\+'"),
        ("  ", "empty objective"),
        ("2*", "names no layer"),
        ("Conv2D_9", "no layer 'Conv2D_9'"),
        ("Conv2D_3:999", "map index must be 0..127"),
    ],
)
def test_bad_objectives_get_one_clear_message(shipped_model, text, message) -> None:
    with pytest.raises(ObjectiveTextError, match=message):
        parse_dream_objective(shipped_model, text)


def test_a_1500_term_objective_is_one_flat_sum(shipped_model, small_gray) -> None:
    text = " + ".join(f"{(i % 7) / 10:g}*Conv2D_3:{i % 128}" for i in range(1500))
    objective = parse_dream_objective(shipped_model, text)
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1), requires_grad=True)
    score = objective(shipped_model, x)
    conv3 = obj.layer("Conv2D_3")  # the same sum, computed from the maps' means
    from convscope.probe import capture

    maps = capture(shipped_model, x, ["Conv2D_3"])["Conv2D_3"].mean(dim=(2, 3))
    weights = torch.zeros(128)
    for i in range(1500):
        weights[i % 128] += (i % 7) / 10
    assert torch.allclose(score, maps @ weights, rtol=1e-4)
    (gradient,) = torch.autograd.grad(score.sum(), x)  # no RecursionError, backward too
    assert gradient.abs().sum() > 0
    result = deep_dream(shipped_model, objective, small_gray, octaves=1, steps=1)
    assert result.objective_after == result.objective_after and conv3.layers == ("Conv2D_3",)


def test_long_texts_are_not_echoed_whole(shipped_model) -> None:
    name = "A" * 100_000
    with pytest.raises(ObjectiveTextError) as caught:
        parse_dream_objective(shipped_model, f"{name}:3")
    assert len(str(caught.value)) < 1200 and "100,002 characters" in str(caught.value)


def test_engine_numbers_are_checked(shipped_model, small_gray) -> None:
    objective = obj.layer("Conv2D_3")
    for kwargs, message in [
        ({"step_size": float("nan")}, "step_size must be a finite number"),
        ({"step_size": 0.0}, "step_size must be > 0"),
        ({"octave_scale": float("inf")}, "octave_scale must be a finite number"),
        ({"octave_scale": float("nan")}, "octave_scale must be a finite number"),
        ({"octaves": 0}, "octaves must be at least 1"),
        ({"steps": 1.5}, "steps must be a whole number"),
        ({"jitter": -2}, "jitter must be at least 0"),
        ({"tile_batch": 0}, "tile_batch must be at least 1"),
    ]:
        with pytest.raises(TilingError, match=message):
            deep_dream(shipped_model, objective, small_gray, **kwargs)
    with pytest.raises(TilingError, match="epsilon must be a finite number"):
        carve(shipped_model, objective, small_gray, epsilon=float("inf"))
    with pytest.raises(TilingError, match="zoom must be a finite number"):
        zoom_frames(shipped_model, objective, small_gray, 2, zoom=float("nan"))
    with pytest.raises(TilingError, match="zoom must be > 1"):
        zoom_frames(shipped_model, objective, small_gray, 2, zoom=1.0)


def test_a_small_weight_objective_runs_in_the_cli(tmp_path: Path, small_photo) -> None:
    photo = tmp_path / "p.png"
    Image.fromarray(small_photo).save(photo)
    run = CliRunner().invoke(main, ["dream", str(photo), "-o", "1e-3*Conv2D_3", "--octaves", "1", "--steps", "1",
                                    "--out", str(tmp_path / "o"), "--json"])
    assert run.exit_code == 0, run.output
    assert json.loads(run.output)["parameters"]["objective"] == "0.001 * Conv2D_3"


def test_bad_inputs_in_a_real_subprocess(tmp_path: Path, small_photo) -> None:
    """Table of bad inputs: exit status, one line on stderr, no traceback, nothing written."""
    photo = tmp_path / "photo.png"
    Image.fromarray(small_photo).save(photo)
    nan_photo = tmp_path / "nan.tif"
    data = np.linspace(0, 1, 60 * 50, dtype=np.float32).reshape(60, 50)
    data[3, 3] = np.nan
    Image.fromarray(data, mode="F").save(nan_photo)
    long_name = "B" * 100_000
    cases = [
        ([str(photo), "--objective", "nan*Conv2D_3:56"], 1, "is not a finite number"),
        ([str(photo), "--objective", f"{long_name}:3"], 1, "100,002 characters"),
        ([str(nan_photo)], 1, "NaN or infinite"),
        ([str(photo), "--memory-limit", "0.001"], 1, "needs about"),
    ]
    environment = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    for index, (args, status, message) in enumerate(cases):
        out = tmp_path / f"out{index}"
        run = subprocess.run([sys.executable, "-m", "convscope", "dream", *args, "--steps", "1", "--octaves", "1",
                              "--out", str(out)], capture_output=True, text=True, env=environment, timeout=300,
                             check=False)
        lines = [line for line in run.stderr.strip().splitlines() if line.strip()]
        assert run.returncode == status, (args, run.stderr[-1500:])
        assert "Traceback" not in run.stderr, run.stderr[-1500:]
        assert message in run.stderr, (message, run.stderr[-600:])
        assert len(run.stderr) < 1500  # the 100,000-character name is not echoed whole
        assert len(lines) == 1, lines
        assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    "args",
    [
        ["--step-size", "nan"], ["--octave-scale", "inf"], ["--zoom", "nan", "--zoom-frames", "2"],
        ["--memory-limit", "nan"], ["--memory-limit", "0"], ["--seed", "-1"], ["--steps", "-1"], ["--octaves", "0"],
    ],
)
def test_bad_numbers_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "out"
    run = CliRunner().invoke(main, ["dream", *args, "--out", str(out)])
    assert run.exit_code == 2 and isinstance(run.exception, SystemExit), run.output
    assert f"Invalid value for '{args[0]}'" in run.output
    assert not out.exists()
