"""One gate between ``torch.fx`` tracing and forward passes in other threads.

``torch.fx`` traces a model by patching ``nn.Module.__call__`` for the whole
process while it runs: a forward pass in another thread at that moment goes
through the tracer and fails (or worse). convscope traces only to derive
receptive-field geometry (:mod:`convscope.receptive_field`), and runs work in
several threads only where an executor asks for it (the local executor's
``workers``). Work that runs beside other work holds the gate :meth:`shared`;
tracing holds it :meth:`exclusive`, which waits until no other thread holds it.
A thread inside :meth:`shared` may trace: its own share is set aside meanwhile.
With one thread (the default everywhere) both are a counter and a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class TracingGate:
    """A shared/exclusive gate (many workers at once, or one tracer alone)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._local = threading.local()

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the gate beside other workers (waits while a tracer runs)."""
        with self._condition:
            self._condition.wait_for(lambda: not self._exclusive)
            self._shared += 1
        self._local.depth = getattr(self._local, "depth", 0) + 1
        try:
            yield
        finally:
            self._local.depth -= 1
            with self._condition:
                self._shared -= 1
                self._condition.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the gate alone (waits until every other worker's share ends)."""
        mine = getattr(self._local, "depth", 0)
        with self._condition:
            self._shared -= mine
            self._condition.notify_all()
            self._condition.wait_for(lambda: not self._exclusive and self._shared == 0)
            self._exclusive = True
        try:
            yield
        finally:
            with self._condition:
                self._exclusive = False
                self._shared += mine
                self._condition.notify_all()


#: the process's gate
GATE = TracingGate()

__all__ = ["GATE", "TracingGate"]
