"""Who runs the atlas stages: an executor interface, and the local executor.

The build plans typed stages (:mod:`convscope.report.plan`), skips the ones whose
results are stored, and hands the rest — in waves whose dependencies are done —
to an executor. Stage functions are module-level functions
``fn(env, params, inputs, progress) -> result`` of plain, encodable dataclasses,
so another executor (``convscope.report.ray_executor``) can run them in other
processes or machines: it rebuilds an :class:`Env` from its :class:`EnvSpec` once
per worker, and ships results through :mod:`convscope.report.codec`.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from convscope.progress import Progress, Task
from convscope.report.profile import Profile


@dataclass(frozen=True)
class EnvSpec:
    """Everything a worker needs to rebuild the environment of the stages (plain,
    picklable values only).

    Attributes:
        model: the ``--model`` reference (``None``: the shipped Model A).
        model_options: spec flags and weights for :func:`convscope.models.loading.load_any`.
        dataset: the dataset reference (``None``: the model's own).
        data_dir: explicit data folder.
        device: ``"cpu"``, ``"cuda"``, …
        profile: the work parameters.
        seed: the base seed.
        layers: the layers that get a section.
        conv_layers: the section layers that get OIPs.
    """

    model: str | None
    model_options: dict[str, Any]
    dataset: str | None
    data_dir: str | None
    device: str
    profile: Profile
    seed: int
    layers: tuple[str, ...]
    conv_layers: tuple[str, ...]


@dataclass
class Env:
    """What every stage reads.

    Attributes:
        spec: how this environment was made.
        model: the network (eval mode) with its spec.
        ascent_model: a frozen channels-last copy (faster input gradients on CPU).
        split: the test split of the dataset, checked against the model.
    """

    spec: EnvSpec
    model: nn.Module
    ascent_model: nn.Module
    split: Any

    @property
    def profile(self) -> Profile:
        return self.spec.profile

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def class_names(self) -> list[str]:
        from convscope.spec import spec_of

        return list(spec_of(self.model).class_names)

    @classmethod
    def open(cls, spec: EnvSpec, *, model: nn.Module | None = None, split: Any = None) -> "Env":
        """Load the model and the data (or take the given ones)."""
        from convscope.data.catalog import split_for_model
        from convscope.models.loading import load_any
        from convscope.models.twin import frozen_twin
        from convscope.spec import spec_of

        if model is None:
            model = load_any(spec.model, device=spec.device, **spec.model_options)
        model.eval()
        if split is None:
            split = split_for_model(spec_of(model), "test", spec.dataset, spec.data_dir)
        return cls(spec=spec, model=model, ascent_model=frozen_twin(model), split=split)


def resolve_function(path: str) -> Callable[..., Any]:
    """The module-level function named ``"module:function"`` (convscope's own only)."""
    module, _, name = path.partition(":")
    if not module.startswith("convscope."):
        raise ValueError(f"stage functions live in convscope; got {path!r}")
    return getattr(importlib.import_module(module), name)


@dataclass
class StageTask:
    """One stage to compute: ``function(env, params, inputs, progress)``.

    Attributes:
        name: the stage (e.g. ``"oip:Conv2D_3@0-63"``).
        title: what it does, for progress displays.
        function: ``"module:function"``.
        params: its parameters (JSON values).
        inputs: the results of the stages it reads, by name.
        key: its cache key.
        single_thread: run with one PyTorch thread (many tiny operations).
        cost: a rough relative cost (for scheduling).
        merge: only combines its chunks' results (an executor that spreads the
            chunks runs it where they arrive).
    """

    name: str
    title: str
    function: str
    params: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    single_thread: bool = False
    cost: float = 1.0
    merge: bool = False


#: on_done(task, result, seconds, cpu_seconds)
DoneFn = Callable[[StageTask, Any, float, float], None]
#: on_start(task): called just before a task is computed (or submitted)
StartFn = Callable[[StageTask], None]


class Executor(Protocol):
    """Runs batches of independent stage tasks."""

    name: str

    def run(self, tasks: Sequence[StageTask], on_done: DoneFn, progress: Progress, on_start: StartFn | None = None) -> None:
        """Compute every task (in any order, possibly in parallel), calling
        ``on_start`` before a task starts and ``on_done`` as soon as it finishes (in
        the caller's thread). Raises the first failure after the finished tasks were
        reported."""
        ...

    def close(self) -> None: ...


def run_task(env: Env, task: StageTask, progress: Task | None, threads: int) -> tuple[Any, float, float]:
    """Compute one task in this process; returns ``(result, seconds, cpu_seconds)``."""
    from convscope.device import torch_threads

    function = resolve_function(task.function)
    started, cpu = time.perf_counter(), time.process_time()
    with torch_threads(1 if task.single_thread else threads):
        result = function(env, task.params, task.inputs, progress)
    return result, time.perf_counter() - started, time.process_time() - cpu


class LocalExecutor:
    """Runs the tasks one after another in this process (the default)."""

    name = "local"

    def __init__(self, env: Env, threads: int = 1) -> None:
        self.env = env
        self.threads = threads

    def run(self, tasks: Sequence[StageTask], on_done: DoneFn, progress: Progress, on_start: StartFn | None = None) -> None:
        for task in tasks:
            if on_start is not None:
                on_start(task)
            with progress.task(task.title, None) as handle:
                try:
                    result, seconds, cpu = run_task(self.env, task, handle, self.threads)
                except Exception as exc:  # say which stage failed; keep the traceback (a bug to fix)
                    if hasattr(exc, "add_note"):
                        exc.add_note(f"while computing atlas stage {task.name!r} ({task.title})")
                    raise
            on_done(task, result, seconds, cpu)

    def close(self) -> None:
        return None


def torch_threads_for(requested: int | None) -> int:
    """PyTorch intra-op threads for the build (default 1: the atlas is many small
    batches, where a second intra-op thread mostly spins on a shared 2-core machine)."""
    return max(1, int(requested)) if requested is not None else 1


__all__ = ["Env", "EnvSpec", "Executor", "LocalExecutor", "StageTask", "resolve_function", "run_task", "torch_threads_for"]
