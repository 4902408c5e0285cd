"""OIPs split over worker threads (``compute_oips(workers=N)``, ``convscope oip --workers``):
the same OIPs as one batch under one PyTorch thread, members back in their order,
progress combined over the shares, and a failure or cancellation stops every share."""

from __future__ import annotations

import threading

import pytest
import torch
from click.testing import CliRunner

from convscope.cli import main
from convscope.device import torch_threads
from convscope.optvis.core import Cancelled
from convscope.optvis.oip import compute_oips, share_members

MAPS = [120, 45, 7, 56, 27, 3, 90, 64, 11]


@pytest.fixture(scope="module")
def one_batch(shipped_model):
    """The reference: every map in one batch, one PyTorch thread."""
    with torch_threads(1):
        return compute_oips(shipped_model, "Conv2D_3", MAPS, seed=0, steps=150, n_candidates=64, early_stop=True,
                            criterion=2e-3)


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_give_the_one_thread_batch_numbers(shipped_model, one_batch, workers):
    split = compute_oips(shipped_model, "Conv2D_3", MAPS, seed=0, steps=150, n_candidates=64, early_stop=True,
                         criterion=2e-3, workers=workers, min_share=1)
    a, b = one_batch.ascent, split.ascent
    assert torch.equal(split.initial_images, one_batch.initial_images)
    # the images (and so every step of the ascent) are the same bits, in map order
    assert torch.equal(b.images, a.images)
    assert torch.equal(b.snapshots, a.snapshots)
    assert b.status == a.status
    assert torch.equal(b.converged_step, a.converged_step) and torch.equal(b.dead_step, a.dead_step)
    assert b.member_steps == a.member_steps
    # loss values: a share's own-map convolution has fewer groups, which may round the last bit differently
    torch.testing.assert_close(b.losses, a.losses, rtol=1e-6, atol=1e-6)
    # members froze at different steps (the shares shrink unevenly), one map is dead
    assert {"converged", "max_steps", "dead"} <= set(b.status), b.status


def test_shares_are_dealt_round_robin_within_the_size_bound():
    assert [s.tolist() for s in share_members(7, 3, 512)] == [[0, 3, 6], [1, 4], [2, 5]]
    assert [s.tolist() for s in share_members(7, 1, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    # more shares than workers when a share would exceed the chunk size
    assert [s.tolist() for s in share_members(10, 2, 3)] == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]
    assert [s.tolist() for s in share_members(2, 4, 512)] == [[0], [1]]


def test_progress_is_combined_over_the_shares(shipped_model):
    seen: list[tuple[int, int, int, str]] = []

    def progress(step: int, steps: int, active: int) -> None:
        seen.append((step, steps, active, threading.current_thread().name))

    compute_oips(shipped_model, "Conv2D_2", range(6), precursor=False, seed=1, steps=30, workers=2, progress=progress,
                 min_share=1)
    assert {name.split("_")[0] for *_, name in seen} == {"convscope-oip"}
    assert all(steps == 30 for _, steps, _, _ in seen)
    # the active count covers both shares: all 6 maps at the start
    assert max(active for _, _, active, _ in seen) == 6
    # the step shown is the slowest share's, so it never runs ahead of what is done
    assert max(step for step, *_ in seen) == 30


def test_a_failing_share_stops_the_others(shipped_model):
    calls: list[int] = []
    failed: list[int] = []

    def progress(step: int, steps: int, active: int) -> None:
        calls.append(step)
        if step >= 5 and not failed:  # fails once, in one share only
            failed.append(step)
            raise Cancelled("cancelled in a test")

    with pytest.raises(Cancelled):
        compute_oips(shipped_model, "Conv2D_2", range(8), precursor=False, seed=1, steps=400, workers=2,
                     progress=progress, min_share=1)
    assert max(calls) < 100, max(calls)  # the other share stopped too instead of running on to step 400


def test_small_shares_are_not_split(shipped_model, monkeypatch):
    import convscope.optvis.oip as oip

    split: list[int] = []
    original = oip._ascend_at_once
    monkeypatch.setattr(oip, "_ascend_at_once", lambda ascend, models, shares, progress: (
        split.append(len(shares)), original(ascend, models, shares, progress))[1])
    compute_oips(shipped_model, "Conv2D_2", range(40), precursor=False, steps=3, workers=4)
    assert split == []  # 40 maps: one share of at least 32
    compute_oips(shipped_model, "Conv2D_2", range(64), precursor=False, steps=3, workers=4)
    assert split == [2]  # 64 maps: two shares of 32, not four of 16


def test_bad_worker_counts(shipped_model):
    with pytest.raises(ValueError, match="workers must be at least 1"):
        compute_oips(shipped_model, "Conv2D_2", [0], workers=0)
    result = CliRunner().invoke(main, ["oip", "--layer", "Conv2D_3", "--map", "1", "--param", "fourier",
                                       "--workers", "2"])
    assert result.exit_code == 2
    assert "--workers splits the reference ascent's maps over threads" in result.output
    assert "drop --workers" in result.output
    assert isinstance(result.exception, SystemExit)  # a usage error, not an exception from inside


def test_cli_workers_write_the_same_oips(tmp_path):
    import numpy as np

    arrays = []
    for workers in ("1", "2"):
        out = tmp_path / workers
        # 64 maps: two shares of 32 (the fewest a worker gets)
        result = CliRunner().invoke(main, ["oip", "--layer", "Conv2D_2", "--all", "--steps", "40", "--workers", workers,
                                           "--no-precursor", "--out", str(out)])
        assert result.exit_code == 0, result.output
        arrays.append({p.name: np.load(p) for p in sorted(out.rglob("*.npy"))})
    assert arrays[0] and arrays[0].keys() == arrays[1].keys()
    for name in arrays[0]:
        assert np.array_equal(arrays[0][name], arrays[1][name]), name
