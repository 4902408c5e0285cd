"""The atlas on Ray: one local Ray instance with 2 CPUs for the whole module.

The Ray atlas of the shipped model on the first 2,000 real MNIST test images
(quick profile, OIPs in chunks of 48 maps, top-k over shards of 500 images) must
equal the local one — every stage result,
every number in ``atlas.json`` — also when a worker process is killed mid-run;
an interrupted Ray build resumes with only the missing stages; Ctrl-C on
``convscope report --executor ray`` stops cleanly; the Ray Data top-k path gives
the local shards exactly. Without Ray (``pip install "convscope[ray]"``; the
``test`` extra includes it) the tests that need Ray are skipped with that reason
— and fail in CI (``CI`` set), whose ``pip install -e ".[test]"`` installs Ray.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from convscope.progress import Cancelled, Progress
from convscope.report import QUICK, AtlasOptions, build_atlas

from .atlas_checks import assert_same_atlas

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own deprecations

REPO = Path(__file__).resolve().parents[2]
#: the quick profile in several chunks: Conv2D_3 in 3 OIP chunks, 4 top-k shards
PROFILE = dataclasses.replace(QUICK, oip_chunk=48, topk_shard=500)
#: test images the atlases read (fewer than 10,000 keeps the module short)
IMAGES = 2000


def _import_ray():
    if os.environ.get("CI"):
        import ray  # CI installs the test extra, which includes Ray: a missing Ray is a failure there

        return ray
    return pytest.importorskip("ray", reason='Ray is not installed (pip install "convscope[ray]")')


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance (2 CPUs) shared by the module's tests."""
    import logging

    ray = _import_ray()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, test_split) -> Path:
    """The first 2,000 real MNIST test images as a ``.npz`` dataset (every worker reads it)."""
    path = tmp_path_factory.mktemp("data") / "mnist-test-2000.npz"
    np.savez(path, images=test_split.images[:IMAGES], labels=test_split.labels[:IMAGES])
    return path


def _options(out: Path, dataset: Path, **changes) -> AtlasOptions:
    return AtlasOptions(out_dir=out, dataset=str(dataset), profile=PROFILE, seed=0, history_search=[],
                        command="pytest tests/report/test_ray.py", **changes)


@pytest.fixture(scope="module")
def local_atlas(tmp_path_factory, dataset):
    """The atlas built by the local executor (the reference)."""
    return build_atlas(_options(tmp_path_factory.mktemp("local"), dataset))


def _free_cpus(ray, expected: float = 2.0, wait: float = 30.0) -> float:
    """The instance's free CPUs once every actor is gone (killed actors give theirs back)."""
    deadline = time.monotonic() + wait
    free = ray.available_resources().get("CPU", 0.0)
    while free < expected and time.monotonic() < deadline:
        time.sleep(0.5)
        free = ray.available_resources().get("CPU", 0.0)
    return free


def test_ray_atlas_equals_local_with_a_killed_worker(ray_instance, local_atlas, tmp_path, dataset):
    """Two Ray workers; when the first result arrives, the process of a worker that
    is computing a stage is killed (SIGKILL): its stage moves to another worker, a
    new actor replaces it, and the atlas is complete and equal to the local one."""
    from convscope.report.ray_executor import RayExecutor, RayOptions

    executor = RayExecutor(RayOptions(workers=2))
    killed: dict[str, int] = {}
    submitted: list[str] = []

    def log(line: str) -> None:
        if "✓" in line and not killed:
            running = executor.worker_pids()
            assert running, "the other worker should be computing a stage"
            name, pid = next(iter(running.items()))
            os.kill(pid, signal.SIGKILL)
            killed[name] = pid

    try:
        result = build_atlas(_options(tmp_path / "ray", dataset), executor=executor, log=log, on_stage=submitted.append)
    finally:
        executor.close()
    (name, pid), = killed.items()
    assert executor.stats["lost_workers"] == 1 and executor.stats["retried"] == [name]
    assert submitted.count(name) == 2  # given to a worker twice: the killed one and another
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    planned = [t.name for t in local_atlas.timings]
    assert sorted(set(submitted)) == sorted(planned)
    assert executor.stats["driver"] == sum(_is_merge(n) for n in planned)  # the merges ran in the driver
    assert executor.stats["remote"] == len(planned) - executor.stats["driver"] + 1
    assert result.executed == planned
    assert_same_atlas(local_atlas, result)
    assert _stored(tmp_path / "ray") == _stored(local_atlas.summary.parent)  # the same cache keys
    provenance = json.loads(result.summary.read_text())["provenance"]
    assert provenance["executor"].startswith("ray (local instance; 2 workers")
    assert _free_cpus(ray_instance) == 2.0  # close() killed the actors


def _stored(out: Path) -> list[str]:
    """The stage cache's file names (stage name and key) in ``out/.stages``."""
    return sorted(p.name for p in (out / ".stages").glob("*.json"))


def _is_merge(name: str) -> bool:
    return name in ("topk", "deconv") or (name.startswith("oip:") and "@" not in name)


def test_interrupted_ray_build_resumes_with_only_the_missing_stages(ray_instance, local_atlas, tmp_path, dataset):
    """Cancel the build (the progress' cancel token, as Ctrl-C does) after three
    results: the Ray work stops, the actors are killed, the three results are
    stored; the next build computes exactly the other stages and equals the local atlas."""
    from convscope.report.ray_executor import RayExecutor, RayOptions

    out = tmp_path / "resume"
    progress = Progress()
    finished: list[str] = []

    def log(line: str) -> None:
        if "✓" in line:
            finished.append(line.split()[1])
            if len(finished) == 3:
                progress.cancel()

    first = RayExecutor(RayOptions(workers=2))
    try:
        with pytest.raises(Cancelled):
            build_atlas(_options(out, dataset), executor=first, progress=progress, log=log)
        assert _free_cpus(ray_instance) == 2.0  # the actors were killed at once (close() comes later)
        assert first._workers == []
    finally:
        first.close()
    assert len(finished) == 3
    stored = sorted(json.loads(p.read_text())["stage"] for p in (out / ".stages").glob("*.json"))
    assert stored == sorted(finished)  # what was finished is stored, nothing else
    assert not (out / "index.html").exists()

    computed: list[str] = []
    second = RayExecutor(RayOptions(workers=2))
    try:
        resumed = build_atlas(_options(out, dataset), executor=second, on_stage=computed.append)
    finally:
        second.close()
    planned = [t.name for t in local_atlas.timings]
    assert sorted(resumed.cached) == sorted(finished)
    assert sorted(resumed.executed) == sorted(set(planned) - set(finished))
    assert sorted(computed) == sorted(n for n in planned if n not in finished)  # each missing stage once
    assert_same_atlas(local_atlas, resumed)


def test_ray_data_topk_shards_equal_the_local_shards(ray_instance, local_atlas, dataset):
    """The top-k shards as a Ray Data pipeline (map_batches on an actor pool):
    indices, values and receptive fields exactly the local shards'."""
    from convscope.report.build import data_sha256, model_sha256
    from convscope.report.executor import Env, EnvSpec, StageTask
    from convscope.report.plan import plan_atlas
    from convscope.report.ray_executor import RayExecutor, RayOptions

    env = Env.open(EnvSpec(None, {}, str(dataset), None, "cpu", PROFILE, 0, (), ()))
    layers = json.loads(local_atlas.summary.read_text())["provenance"]["layers"]
    plan = plan_atlas(env.model, layers, PROFILE, seed=0, dataset_size=len(env.split), history=None, history_source="")
    tasks = [StageTask(s.name, s.title, s.function, s.params) for s in plan.stages if s.name.startswith("topk@")]
    assert len(tasks) == 4
    executor = RayExecutor(RayOptions(workers=2, data=True))
    executor.prepare(env, {"library": __import__("convscope").__version__, "model_sha256": model_sha256(env.model),
                           "data_sha256": data_sha256(env.split)})
    got: dict = {}
    try:
        executor.run(tasks, lambda task, result, seconds, cpu: got.__setitem__(task.name, result), Progress())
    finally:
        executor.close()
    assert executor.stats["ray_data"] == 4 and executor.stats["remote"] == 0
    for task in tasks:
        expected, shard = local_atlas.results[task.name], got[task.name]
        assert (shard.start, shard.stop, shard.k, shard.layers) == (expected.start, expected.stop, expected.k, expected.layers)
        assert shard.arrays.keys() == expected.arrays.keys()
        for key, array in expected.arrays.items():
            assert shard.arrays[key].dtype == array.dtype and np.array_equal(shard.arrays[key], array), key


def test_a_failing_stage_raises_its_own_error(ray_instance, dataset):
    """A stage that fails on a worker raises its own exception in the driver (here
    the address error naming the valid layers), not a Ray wrapper."""
    from convscope.address import AddressError
    from convscope.report.build import data_sha256, model_sha256
    from convscope.report.executor import Env, EnvSpec, StageTask
    from convscope.report.ray_executor import RayExecutor, RayOptions

    env = Env.open(EnvSpec(None, {}, str(dataset), None, "cpu", PROFILE, 0, (), ()))
    executor = RayExecutor(RayOptions(workers=1))
    executor.prepare(env, {"model_sha256": model_sha256(env.model), "data_sha256": data_sha256(env.split)})
    task = StageTask("topk@0-9", "top-k", "convscope.report.stages:stage_topk_shard",
                     {"layers": ["Conv2D_9"], "k": 2, "start": 0, "stop": 10})
    try:
        with pytest.raises(AddressError, match="Conv2D_9") as caught:
            executor.run([task], lambda *a: None, Progress())
    finally:
        executor.close()
    assert "Conv2D_1" in str(caught.value)
    assert any("topk@0-9" in note for note in getattr(caught.value, "__notes__", []))


def test_ctrl_c_stops_a_ray_build_cleanly(ray_instance, tmp_path, dataset):
    """``convscope report --executor ray --ray-address auto`` (this module's Ray
    instance), SIGINT once a stage is done: exit status 1, the resume message, no
    traceback, the actors gone, the finished stage kept."""
    out = tmp_path / "cli"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", CI="")
    command = [sys.executable, "-m", "convscope", "report", "--quick", "--layers", "Conv2D_1", "--out", str(out),
               "--dataset", str(dataset), "--executor", "ray", "--ray-address", "auto", "--ray-workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    lines: list[str] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "✓" in line:
                process.send_signal(signal.SIGINT)
                break
        _, rest = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = "".join(lines) + rest
    assert any("✓" in line for line in lines), stderr
    assert process.returncode == 1, stderr
    assert "interrupted" in stderr and "run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    assert list((out / ".stages").glob("*.json"))  # the finished stage is kept
    assert _free_cpus(ray_instance) == 2.0  # its actors were killed


def test_ray_is_imported_only_for_the_ray_executor():
    code = ("import sys, convscope.cli.report_cmd, convscope.report.build, convscope.report.ray_executor; "
            "print('ray' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


def test_ray_options_and_errors(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from convscope.cli import main
    from convscope.report.ray_executor import RayExecutor, RayExecutorError, RayOptions, _mismatch, import_ray

    result = CliRunner().invoke(main, ["report", "--out", str(tmp_path), "--ray-workers", "2"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "--ray-workers only apply with --executor ray" in result.output
    with pytest.raises(ValueError, match="--ray-workers"):
        RayOptions(workers=0)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(RayExecutorError, match=r'pip install "convscope\[ray\]"'):
        import_ray()
    with pytest.raises(RayExecutorError, match=r'pip install "convscope\[ray\]"'):
        RayExecutor(RayOptions(workers=1))  # at once, not at the first stage
    facts = {"host": "node-2", "pid": 7, "version": "0.1.0", "model_sha256": "a", "data_sha256": "b"}
    assert _mismatch(facts, {"version": "0.1.0", "model_sha256": "a", "data_sha256": "b"}) == ""
    assert "same convscope version" in _mismatch(facts, {"version": "0.2.0"})
    assert "other weights" in _mismatch(facts, {"model_sha256": "x"})
    assert "same dataset" in _mismatch(facts, {"model_sha256": "a", "data_sha256": "x"})


def test_report_with_the_ray_executor_without_ray_says_how_to_install_it(tmp_path):
    """``convscope report --executor ray`` in a Python without Ray (hidden from the
    import system in a real subprocess): exit status 1, one line naming the extra,
    no traceback, no output folder. Runs whether or not Ray is installed."""
    out = tmp_path / "atlas"
    code = ("import runpy, sys; sys.modules['ray'] = None; "
            f"sys.argv = ['convscope', 'report', '--quick', '--executor', 'ray', '--out', {str(out)!r}]; "
            "runpy.run_module('convscope', run_name='__main__')")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1, done.stderr
    assert 'Error: the Ray executor needs Ray: pip install "convscope[ray]"' in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()
