"""The explorer's forward worker processes (``convscope serve --processes N``), the
in-process batcher they replace by default (``--processes 0``), and what happens when
a worker dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.serve.conftest import REPO, assert_concurrent_equal_sequential, forward_png, start_server, stop_server
from tests.serve.test_api import _drawing, _floats


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(p) for p in handle.read().split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the worker processes from /proc")
def test_workers_answer_and_a_killed_worker_fails_nothing_else(mnist_dir):
    """Two workers answer alike; killing one leaves the other answering the same bytes;
    killing both leaves the server answering in its own process (to float32 rounding)."""
    server = start_server("--processes", "2", mnist_dir=mnist_dir)
    try:
        status, health, _ = server.request("GET", "/api/health")
        assert status == 200 and health["forward_processes"] == 2
        workers = _children(server.process.pid)
        assert len(workers) == 2
        bodies = [_drawing(seed) for seed in range(8)]
        assert_concurrent_equal_sequential(server, bodies)
        before = [forward_png(server, body) for body in bodies[:3]]
        assert all(status == 200 for status, _, _ in before)

        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while server.request("GET", "/api/health")[1]["forward_processes"] != 1:  # the server notices at once
            assert time.monotonic() < deadline, "the server did not notice the dead worker"
            time.sleep(0.05)
        after = [forward_png(server, body) for body in bodies[:3]]
        assert [raw for _, _, raw in after] == [raw for _, _, raw in before]

        os.kill(workers[1], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while server.request("GET", "/api/health")[1]["forward_processes"] != 0:
            assert time.monotonic() < deadline, "the server did not notice the second dead worker"
            time.sleep(0.05)
        for (status, data, _), (_, want, _) in zip((forward_png(server, body) for body in bodies[:3]), before):
            assert status == 200  # computed in the server process now, batched and padded
            assert data["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)
            for name, entry in data["layers"].items():
                assert np.allclose(_floats(entry), _floats(want["layers"][name]), rtol=1e-5, atol=1e-6), name
    finally:
        stop_server(server)
    log = "".join(server.stderr)
    assert log.count("stopped:") == 2 and "1 left" in log and "0 left" in log, log[-2000:]
    assert "Traceback" not in log


def test_in_process_batching_answers_are_the_padded_pass_and_equal_under_concurrency(mnist_dir, shipped_model, tmp_path):
    """``--processes 0``: forward passes run batched in the server process, each a row of
    the engine's pass over a zero-padded batch of the measured consistent size."""
    from tests.serve.test_api import _padded_reference

    from convscope.data.user_image import load_image_for_model
    from convscope.spec import spec_of

    server = start_server("--processes", "0", mnist_dir=mnist_dir)
    try:
        assert server.request("GET", "/api/health")[1]["forward_processes"] == 0
        assert _children(server.process.pid) == [] if sys.platform.startswith("linux") else True
        body = _drawing(1)
        status, data, _ = forward_png(server, body)
        assert status == 200, data
        path = tmp_path / "drawing.png"
        path.write_bytes(body)
        prepared = load_image_for_model(path, spec_of(shipped_model))
        batch = _padded_reference(shipped_model, prepared.image)
        for name, entry in data["layers"].items():
            assert np.array_equal(_floats(entry), batch[name][0].numpy()), name
        assert_concurrent_equal_sequential(server, [_drawing(seed) for seed in range(8)])
    finally:
        stop_server(server)
    assert not any("Traceback" in line for line in server.stderr)


_WORKERS = r"""
import asyncio, json, os, sys, threading
import numpy as np
from convscope.models import load_model
from convscope.serve import Explorer, RequestError
from convscope.serve.processes import ForwardProcesses

explorer = Explorer(load_model(None))
real = explorer.input_from_bytes

def input_from_bytes(data, name="the upload"):
    if data == b"die":
        os._exit(3)
    if data == b"boom":
        raise ZeroDivisionError("a bug")
    return real(data, name)

explorer.input_from_bytes = input_from_bytes   # before the fork: the workers inherit it
if sys.argv[1] == "thread":
    threading.Thread(target=threading.Event().wait, daemon=True).start()
    try:
        ForwardProcesses(explorer, 1).start()
    except RuntimeError as exc:
        print(json.dumps({"refused": str(exc)}))
    sys.exit(0)
processes = ForwardProcesses(explorer, 2)
processes.start()
pids = [w.process.pid for w in processes._workers]
good = np.zeros((28, 28), np.uint8)
good[6:22, 12:16] = 255
import io
from PIL import Image
buffer = io.BytesIO(); Image.fromarray(good).save(buffer, "PNG")
png = buffer.getvalue()
names = explorer.layer_names

async def main():
    out = {}
    async def ask(payload, source="bytes"):
        try:
            return "ok", json.loads(await processes.submit(source, payload, names, "list"))["predicted"]
        except RequestError as exc:
            return exc.status, str(exc)
    out["good"] = await ask(png)
    out["json"] = await ask({"pixels": good.tolist()}, "json")
    out["bad"] = await ask(b"not an image")
    out["boom"] = await ask(b"boom")
    out["die"] = await ask(b"die")
    out["alive"] = processes.alive
    out["after"] = [await ask(png) for _ in range(3)]
    both = await asyncio.gather(ask(b"die"), ask(png))
    out["both"] = both
    out["alive_end"] = processes.alive
    out["refused_when_none"] = await ask(png)
    return out

out = asyncio.run(main())
processes.close()
out["exited"] = [not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z" for pid in pids]
print(json.dumps(out))
"""


def _run_script(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", _WORKERS, *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks worker processes and reads /proc")
def test_worker_answers_errors_and_deaths():
    out = _run_script("run")
    assert out["good"] == ["ok", 1] and out["json"] == ["ok", 1]  # a drawn vertical bar: a one
    assert out["bad"][0] == 400 and "image" in out["bad"][1]  # the explorer's own message travels back
    assert out["boom"][0] == 500 and "ZeroDivisionError" in out["boom"][1] and "a bug" not in out["boom"][1]
    assert out["die"] == [500, "the process computing this request stopped; try again"]
    assert out["alive"] == 1 and out["after"] == [["ok", 1]] * 3  # the other worker takes every request
    assert out["both"][0][0] == 500 and out["alive_end"] == 0
    # the request queued beside the dying one is refused, not left hanging, when no worker is left
    assert out["both"][1] == [503, "no forward worker process is left; try again"]
    assert out["refused_when_none"] == [503, "no forward worker process is left; try again"]
    assert out["exited"] == [True, True]


def test_workers_are_not_forked_beside_other_threads():
    out = _run_script("thread")
    assert "before other threads start" in out["refused"]


def test_fork_is_refused_for_a_model_off_the_cpu():
    import torch

    from convscope.serve.processes import fork_available

    assert fork_available(torch.nn.Linear(2, 2)) is None or "fork" in str(fork_available(torch.nn.Linear(2, 2)))
    why = fork_available(torch.nn.Linear(2, 2, device="meta"))
    assert why is not None and "meta" in why
