"""One progress mechanism for every long piece of work, which can also cancel.

Use cases (:mod:`convscope.app`) and engines report through a :class:`Progress`;
front ends decide how it looks (a rich bar in the terminal, a stage list in the
atlas build, JSON events in the explorer) by giving it a sink::

    progress = Progress(sink=lambda event: print(event.label, event.completed, event.total))
    with progress.task("OIPs Conv2D_3", total=600) as task:
        for step in range(600):
            ...
            task.update(step + 1)         # raises Cancelled once progress.cancel() was called

Engines take the plain callback ``progress(step, steps, active)``;
:meth:`Task.engine_callback` adapts a task to it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from convscope.optvis.core import Cancelled


@dataclass
class ProgressEvent:
    """One update of one task.

    Attributes:
        task_id: unique per :class:`Progress`.
        label: what is being done.
        completed / total: units done and expected (``total`` ``None`` = unknown).
        fields: extra values (e.g. ``active`` members, a loss).
        finished: the task has ended.
        elapsed: seconds since the task started.
    """

    task_id: int
    label: str
    completed: float
    total: float | None
    fields: dict[str, Any] = field(default_factory=dict)
    finished: bool = False
    elapsed: float = 0.0


class CancelToken:
    """A thread-safe flag: :meth:`cancel` from anywhere, :meth:`check` in the work loop."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`~convscope.optvis.core.Cancelled` once cancelled."""
        if self._event.is_set():
            raise Cancelled("cancelled")


class Task:
    """One task of a :class:`Progress` (use as a context manager)."""

    def __init__(self, progress: "Progress", task_id: int, label: str, total: float | None) -> None:
        self.progress = progress
        self.task_id = task_id
        self.label = label
        self.total = total
        self.completed = 0.0
        self.started = time.perf_counter()
        self.fields: dict[str, Any] = {}

    def __enter__(self) -> "Task":
        self._emit()
        return self

    def __exit__(self, *exc: object) -> None:
        self._emit(finished=True)

    def update(self, completed: float | None = None, total: float | None = None, **fields: Any) -> None:
        """Set the done count (and the total, extra fields); raises ``Cancelled`` when cancelled."""
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        self.fields.update(fields)
        self._emit()
        self.progress.check()

    def advance(self, amount: float = 1, **fields: Any) -> None:
        self.update(self.completed + amount, **fields)

    def engine_callback(self) -> Callable[[int, int, int], None]:
        """An engine-style ``progress(step, steps, active)`` that updates this task."""

        def callback(step: int, steps: int, active: int) -> None:
            self.update(step, steps, active=active)

        return callback

    def _emit(self, finished: bool = False) -> None:
        if self.progress.sink is not None:
            self.progress.sink(ProgressEvent(
                self.task_id, self.label, self.completed, self.total, dict(self.fields), finished,
                time.perf_counter() - self.started,
            ))


class Progress:
    """Where use cases report progress; also the cancellation switch.

    Args:
        sink: receives every :class:`ProgressEvent` (``None`` = silent).
        token: a shared :class:`CancelToken` (default: a new one).
    """

    def __init__(self, sink: Callable[[ProgressEvent], None] | None = None, token: CancelToken | None = None) -> None:
        self.sink = sink
        self.token = token or CancelToken()
        self._ids = 0
        self._lock = threading.Lock()

    def task(self, label: str, total: float | None = None) -> Task:
        with self._lock:
            self._ids += 1
            return Task(self, self._ids, label, total)

    def cancel(self) -> None:
        self.token.cancel()

    def check(self) -> None:
        self.token.check()


def silent() -> Progress:
    """A progress that shows nothing (and is never cancelled unless asked)."""
    return Progress()


__all__ = ["CancelToken", "Cancelled", "Progress", "ProgressEvent", "Task", "silent"]
