"""A dream estimates its memory before it starts, and then stripes, chunks or refuses.

The subprocess tests run ``convscope dream`` under a small address-space limit
(``resource.setrlimit(RLIMIT_AS)``): a 9000×9000 photo is refused at once with the
estimate and the way out, and a photo whose whole-image pass does not fit is
dreamed in stripes — while the same dream told it may use 8 GB runs out of memory
(the limit is real) and says so in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.dream import DreamMemoryError, deep_dream, plan_dream
from convscope.dream.memory import available_memory, parse_budget
from convscope.optvis.objectives import parse_objective
from zoo import rgb_net

REPO = Path(__file__).resolve().parents[2]


def test_a_huge_photo_is_refused_with_the_estimate_and_the_way_out(shipped_model) -> None:
    plan = plan_dream(shipped_model, parse_objective("Conv2D_3"), (9000, 9000), memory_budget=2 * 2**30)
    assert not plan.fits and plan.budget_bytes == 2 * 2**30
    assert plan.estimate_bytes > 10 * 2**30  # tens of gigabytes for 81 megapixels
    with pytest.raises(DreamMemoryError) as caught:
        plan.check()
    message = str(caught.value)
    assert "9000x9000" in message and "2.0 GB is available" in message and "GB of memory" in message
    assert "a photo of at most about" in message and "--memory-limit" in message
    side = int(message.split("at most about ")[1].split("x")[0])
    assert 1000 < side < 9000
    # the size it names fits
    assert plan_dream(shipped_model, parse_objective("Conv2D_3"), (side, side), memory_budget=2 * 2**30).fits
    # deep_dream refuses before it allocates anything full-size: a 9000×9000 view of one pixel
    tiny = torch.zeros(1, 1).expand(9000, 9000)
    with pytest.raises(DreamMemoryError, match="9000x9000"):
        deep_dream(shipped_model, parse_objective("Conv2D_3"), tiny, memory_budget=2 * 2**30)


def test_fullconv_stripes_to_fit_and_gives_the_same_dream(shipped_model, small_gray, monkeypatch) -> None:
    import convscope.dream.tiling as tiling

    striped_passes = []
    real = tiling._striped_fullconv

    def counting(*args, **kwargs):
        out = real(*args, **kwargs)
        striped_passes.append(out is not None)
        return out

    monkeypatch.setattr(tiling, "_striped_fullconv", counting)
    objective = parse_objective("Conv2D_3")
    whole = plan_dream(shipped_model, objective, tuple(small_gray.shape), memory_budget=2**40)
    assert whole.fits and whole.stripe_pixels is None
    budget = int(whole.estimate_bytes * 0.8)
    striped = plan_dream(shipped_model, objective, tuple(small_gray.shape), memory_budget=budget)
    assert striped.fits and striped.stripe_pixels is not None and striped.estimate_bytes <= budget
    assert striped.stripe_pixels < small_gray.numel()
    options = dict(octaves=2, steps=3, step_size=0.1, seed=2)
    first = deep_dream(shipped_model, objective, small_gray, memory_budget=2**40, **options)
    assert striped_passes and not any(striped_passes)  # the whole image at once
    striped_passes.clear()
    second = deep_dream(shipped_model, objective, small_gray, memory_budget=budget, **options)
    assert sum(striped_passes) >= 3  # the full-size octave's steps and evaluations ran in stripes
    assert any("stripes" in note for note in second.notes) and not any("stripes" in n for n in first.notes)
    assert second.memory["stripe_pixels"] == striped.stripe_pixels
    assert second.values == pytest.approx(first.values, rel=1e-4)
    assert torch.allclose(second.image, first.image, atol=1e-2)


def test_rgb_stripes_with_padding_give_the_same_dream() -> None:
    model = rgb_net()
    objective = parse_objective("conv3")
    photo = torch.rand(90, 70, 3, generator=torch.Generator().manual_seed(0)) * 255
    whole = plan_dream(model, objective, (90, 70), memory_budget=2**40)
    budget = int(whole.estimate_bytes * 0.85)
    assert plan_dream(model, objective, (90, 70), memory_budget=budget).stripe_pixels is not None
    first = deep_dream(model, objective, photo, octaves=1, steps=3, memory_budget=2**40)
    second = deep_dream(model, objective, photo, octaves=1, steps=3, memory_budget=budget)
    assert second.memory["stripe_pixels"] is not None
    assert torch.allclose(second.image, first.image, atol=1e-2)


def test_tiles_chunks_shrink_to_fit(shipped_model, small_gray) -> None:
    objective = parse_objective("Dense_1:3")
    whole = plan_dream(shipped_model, objective, (560, 560), tiling="tiles", memory_budget=2**40)
    assert whole.tile_batch == 512
    smaller = plan_dream(shipped_model, objective, (560, 560), tiling="tiles",
                         memory_budget=int(whole.estimate_bytes * 0.9))
    assert smaller.fits and 1 <= smaller.tile_batch < 400 and smaller.estimate_bytes <= whole.estimate_bytes * 0.9
    # the photo is 6 tiles: one byte less than the estimate leaves room for 5 per chunk
    full = plan_dream(shipped_model, objective, tuple(small_gray.shape), tiling="tiles", memory_budget=2**40)
    options = dict(tiling="tiles", octaves=1, steps=2, seed=0)
    first = deep_dream(shipped_model, objective, small_gray, memory_budget=2**40, **options)
    second = deep_dream(shipped_model, objective, small_gray, memory_budget=full.estimate_bytes - 1, **options)
    assert second.memory["tile_batch"] == 5 and any("chunks of 5" in note for note in second.notes)
    assert torch.allclose(second.image, first.image, atol=1e-3)


def test_budgets(shipped_model) -> None:
    free = available_memory()
    assert free is None or free > 0
    assert parse_budget(1.5) == int(1.5 * 2**30)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(DreamMemoryError, match="positive number of GB"):
            parse_budget(bad)


# -- under a real address-space limit ----------------------------------------------------

LIMITED = textwrap.dedent(
    """
    import resource, sys
    room = float(sys.argv[1])
    import torch, numpy  # noqa: F401
    import convscope.app.dream, convscope.cli  # noqa: F401
    from convscope.models import load_model
    load_model(None)
    with open("/proc/self/status") as handle:
        used = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (used + int(room * 2**30), used + int(room * 2**30)))
    from convscope.cli import main
    main(sys.argv[2:], prog_name="convscope")
    """
)

needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for the address-space size")


def _limited(room_gb: float, args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", LIMITED, str(room_gb), *args], capture_output=True, text=True,
                          env=environment, timeout=600, check=False)


@needs_proc
def test_a_9000_by_9000_dream_is_refused_at_once_under_a_small_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    rows = (np.arange(9000, dtype=np.uint32)[:, None] * 255 // 9000).astype(np.uint8)
    Image.fromarray(np.ascontiguousarray(np.broadcast_to(rows, (9000, 9000)))).save(big, compress_level=1)
    out = tmp_path / "out"
    run = _limited(1.5, ["dream", str(big), "--out", str(out)], {"CONVSCOPE_MAX_PIXELS": "100000000"})
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: this dream (fullconv on 9000x9000 pixels")
    assert "GB of memory" in lines[0] and "a photo of at most about" in lines[0]
    assert not out.exists()


@pytest.mark.slow
@needs_proc
def test_under_a_limit_the_dream_runs_in_stripes_and_a_false_budget_fails_cleanly(tmp_path: Path) -> None:
    from convscope.photos import default_photo

    photo = tmp_path / "photo.png"
    Image.fromarray(default_photo()).resize((640, 750), Image.BICUBIC).save(photo)
    args = ["dream", str(photo), "--octaves", "1", "--steps", "1", "--json"]
    run = _limited(0.25, [*args, "--out", str(tmp_path / "striped")])
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads(run.stdout)
    assert data["memory"]["stripe_pixels"] is not None and data["memory"]["stripe_pixels"] < 640 * 750
    assert data["memory"]["budget_bytes"] < 0.25 * 2**30
    assert any("stripes" in note for note in data["notes"])
    assert (tmp_path / "striped" / "dream.png").is_file()
    # the same dream told it may use 8 GB runs the whole image at once: the limit bites
    out = tmp_path / "whole"
    run = _limited(0.25, [*args, "--out", str(out), "--memory-limit", "8"])
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("Error: the dream ran out of memory")
    assert not out.exists() or not any(out.iterdir())
