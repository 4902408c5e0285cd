"""The local executor with several workers (threads, one model copy each) gives
the atlas of the one-at-a-time build, stage for stage, and stops cleanly on a
failing stage."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from convscope.progress import Progress
from convscope.report import QUICK, AtlasOptions, build_atlas
from convscope.report.executor import Env, EnvSpec, LocalExecutor, StageTask

from .atlas_checks import assert_same_atlas

#: the quick profile in several chunks, so that stages really run side by side
PROFILE = dataclasses.replace(QUICK, oip_chunk=48, topk_shard=500)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, test_split) -> Path:
    path = tmp_path_factory.mktemp("data") / "mnist-test-2000.npz"
    np.savez(path, images=test_split.images[:2000], labels=test_split.labels[:2000])
    return path


def _options(out: Path, dataset: Path, **changes) -> AtlasOptions:
    return AtlasOptions(out_dir=out, dataset=str(dataset), profile=PROFILE, seed=0, history_search=[],
                        command="pytest tests/report/test_local_workers.py", **changes)


def test_two_workers_build_the_same_atlas_as_one(tmp_path, dataset):
    one = build_atlas(_options(tmp_path / "one", dataset))
    two = build_atlas(_options(tmp_path / "two", dataset, workers=2))
    assert_same_atlas(one, two)
    assert (tmp_path / "two" / "index.html").stat().st_size > 100_000


def _env(dataset: Path) -> Env:
    return Env.open(EnvSpec(None, {}, str(dataset), None, "cpu", PROFILE, 0, (), ()))


def test_stages_running_at_once_use_their_own_model(dataset):
    """Each worker gets its own copy of the model (stages set its mode and may
    rewrite it for a pass), equal to the model, and shares the data."""
    env = _env(dataset)
    envs = LocalExecutor(env, workers=3)._worker_envs(3)
    assert envs[0] is env and len({id(e.model) for e in envs}) == 3
    assert all(e.split is env.split for e in envs)
    for other in envs[1:]:
        for mine, theirs in zip(other.model.parameters(), env.model.parameters(), strict=True):
            assert torch.equal(mine, theirs)


def test_a_failing_stage_raises_its_own_error_and_the_others_finish(dataset):
    from convscope.address import AddressError

    env = _env(dataset)
    bad = StageTask("topk@0-9", "top-k", "convscope.report.stages:stage_topk_shard",
                    {"layers": ["Conv2D_9"], "k": 2, "start": 0, "stop": 10}, cost=5.0)
    good = [StageTask(f"topk@{i}", "top-k", "convscope.report.stages:stage_topk_shard",
                      {"layers": ["Conv2D_1"], "k": 2, "start": i, "stop": i + 10}) for i in (0, 10)]
    done: list[str] = []
    with pytest.raises(AddressError, match="Conv2D_9") as caught:
        LocalExecutor(env, workers=2).run([*good, bad], lambda task, *rest: done.append(task.name), Progress())
    assert any("topk@0-9" in note for note in getattr(caught.value, "__notes__", []))
    assert "topk@0-9" not in done and "topk@0" in done  # the one running beside it was reported


def test_a_stage_is_as_urgent_as_the_longest_chain_waiting_for_it():
    from convscope.report.build import critical_path_costs
    from convscope.report.plan import StageSpec

    stages = [
        StageSpec("card", "", "m:f", {}, cost=5.0),
        StageSpec("oips", "", "m:f", {}, cost=9.0),
        StageSpec("compare", "", "m:f", {}, ("card",), cost=10.0),
        StageSpec("mistakes", "", "m:f", {}, ("card",), cost=1.0),
        StageSpec("page", "", "m:f", {}, ("compare", "oips"), cost=0.5),
    ]
    assert critical_path_costs(stages) == {"card": 15.5, "oips": 9.5, "compare": 10.5, "mistakes": 1.0, "page": 0.5}
