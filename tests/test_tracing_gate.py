"""torch.fx tracing (receptive-field geometry) never runs while a worker thread
holding the gate does forward passes: fx patches nn.Module for the whole process."""

from __future__ import annotations

import copy
import threading
import time

import torch

from convscope.receptive_field import field_geometry
from convscope.tracing_gate import GATE, TracingGate


def test_a_trace_waits_for_the_workers_forward_passes(shipped_model):
    worker_model = copy.deepcopy(shipped_model)
    errors: list[BaseException] = []
    passes = 0
    started = threading.Event()

    def work() -> None:
        nonlocal passes
        with GATE.shared():
            started.set()
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    with torch.no_grad():
                        worker_model(torch.zeros(4, 1, 28, 28))
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)
                    return
                passes += 1

    thread = threading.Thread(target=work)
    thread.start()
    started.wait(5)
    for _ in range(3):  # fresh models: nothing cached, every call traces
        geometry = field_geometry(copy.deepcopy(shipped_model), "Conv2D_3")
        assert (geometry.size, geometry.jump) == ((18, 18), (4, 4))  # 3x3 conv, pool, 3x3 conv, pool, 3x3 conv
    thread.join(10)
    assert not errors, errors[0]
    assert passes > 0


def test_the_gate_lets_workers_share_and_a_worker_trace():
    gate = TracingGate()
    inside = threading.Barrier(2, timeout=5)

    def work() -> None:
        with gate.shared():
            inside.wait()  # two workers hold the gate at once

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert not any(thread.is_alive() for thread in threads)
    with gate.shared(), gate.exclusive():  # a worker may trace: its own share is set aside
        pass
    with gate.exclusive():
        pass
