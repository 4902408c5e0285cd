"""``convscope dream``: outputs, sizes, clear errors, nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from convscope.cli import main


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory, small_photo) -> Path:
    path = tmp_path_factory.mktemp("photos") / "photo.jpg"
    Image.fromarray(small_photo[:70, :90] if small_photo.shape[1] >= 90 else small_photo[:70]).save(path, quality=95)
    return path


def _run(args: list[str]):
    return CliRunner().invoke(main, ["dream", *args], catch_exceptions=False)


def test_octaves_writes_a_same_size_colour_dream_and_json(tmp_path: Path, photo_file: Path) -> None:
    out = tmp_path / "out"
    result = _run([str(photo_file), "--octaves", "2", "--steps", "3", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    original = Image.open(photo_file)
    dreamed = Image.open(out / "dream.png")
    assert dreamed.size == original.size and dreamed.mode == "RGB"
    assert (summary["width"], summary["height"]) == original.size
    assert summary["parameters"]["tiling"] == "fullconv" and summary["parameters"]["objective"] == "Conv2D_3"
    assert summary["objective_after"] > summary["objective_before"] > 0
    assert json.loads((out / "dream.json").read_text())["objective_after"] == summary["objective_after"]
    assert not list(out.glob("*.part")) and not list(out.glob(".*"))


def test_carve_writes_panels_and_zoom_writes_frames(tmp_path: Path, photo_file: Path) -> None:
    out = tmp_path / "carve"
    result = _run([str(photo_file), "--mode", "carve", "--rounds", "1", "--steps", "20", "--color", "gray",
                   "--format", "jpg", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert Image.open(out / "dream.jpg").mode == "L"
    assert Image.open(out / "carve_panels.png").size[0] > 500
    out = tmp_path / "zoom"
    result = _run([str(photo_file), "--octaves", "1", "--steps", "1", "--zoom-frames", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    frames = sorted((out / "frames").glob("frame_*.png"))
    assert [f.name for f in frames] == ["frame_0000.png", "frame_0001.png"]
    assert Image.open(frames[1]).size == Image.open(photo_file).size
    first = np.asarray(Image.open(frames[0]), dtype=np.int16)
    assert np.array_equal(first, np.asarray(Image.open(out / "dream.png"), dtype=np.int16))  # frame 0 = the dream
    assert np.abs(np.asarray(Image.open(frames[1]), dtype=np.int16) - first).mean() > 3  # then it zooms


@pytest.mark.parametrize(
    "content, args, message",
    [
        (b"not an image at all", [], "not an image"),
        (b"", [], "empty"),
        (None, ["--objective", "Dense_1:3"], "fullconv runs only the convolutional layers"),
        (None, ["--objective", "Conv2D_3:999"], "map index must be 0..127"),
        (None, ["--objective", "Conv2D_9"], "no layer 'Conv2D_9'"),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(
    tmp_path: Path, photo_file: Path, content: bytes | None, args: list[str], message: str
) -> None:
    if content is None:
        image = photo_file
    else:
        image = tmp_path / "input.png"
        image.write_bytes(content)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["dream", str(image), "--steps", "1", "--octaves", "1", "--out", str(out), *args])
    assert result.exit_code != 0
    assert message in result.output
    # click turns a ClickException into SystemExit; any other exception (a traceback) would be kept here.
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.output.strip().count("\n") == 0  # one line
    assert not out.exists() or not any(out.iterdir())


def test_a_tiny_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((20, 40), dtype=np.uint8)).save(path)
    result = CliRunner().invoke(main, ["dream", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "at least 28x28" in result.output


def test_a_failed_write_leaves_no_half_written_file(tmp_path: Path, photo_file: Path, monkeypatch) -> None:
    import convscope.io as io

    def broken_save(handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError("disk full")

    out = tmp_path / "out"
    out.mkdir()
    (out / "dream.png").write_bytes(b"previous result")
    opened: list[Path] = []
    real_atomic_open = io.atomic_open

    def spying_atomic_open(path, *args, **kwargs):
        opened.append(Path(path))
        return real_atomic_open(path, *args, **kwargs)

    monkeypatch.setattr(io, "atomic_open", spying_atomic_open)
    real_save = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: broken_save(fp))
    result = _run([str(photo_file), "--octaves", "1", "--steps", "1", "--out", str(out)])
    assert result.exit_code != 0 and "cannot write" in result.output and "disk full" in result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # a clean error, not a crash
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert (out / "dream.png").read_bytes() == b"previous result"  # untouched, not half-overwritten
    assert sorted(p.name for p in out.iterdir()) == ["dream.png"]  # no temp files left behind
    assert out / "dream.png" in opened  # the CLI wrote through convscope.io's atomic writer


def test_a_model_file_with_fixed_preprocessing_dreams_in_its_own_space(tmp_path: Path, photo_file: Path) -> None:
    """A gray model whose spec says 'unit' (pixels ÷ 255): the dream is clipped to the
    valid pixel range in that space instead of re-standardised, through the CLI."""
    import copy

    from convscope.models import load_model, save_model
    from convscope.models.files import default_config

    model = copy.deepcopy(load_model(None))
    save_model(model, tmp_path / "unit_model", default_config(model, preprocessing="unit", name="unit-model"))
    out = tmp_path / "out"
    result = _run([str(photo_file), "--model", str(tmp_path / "unit_model.json"), "--octaves", "2", "--steps", "3",
                   "--step-size", "0.2", "--color", "gray", "--tone", "clip", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["model"] == "unit-model" and summary["space"]["preprocessing"] == "unit"
    assert summary["space"]["keep_in_range"].startswith("clip")
    assert summary["objective_after"] > summary["objective_before"]
    assert summary["clipped_fraction"] == 0.0
    assert sorted(p.name for p in out.iterdir()) == ["dream.json", "dream.png", "dream_comparison.png", "dream_values.png"]
