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
        shared: what one stage computed for another in this process (the model card's
            pass over the split keeps the compared layers' outputs for the comparison);
            shared by the worker environments of one executor. Only a speed-up: a
            stage that finds nothing here computes the same values itself.
    """

    spec: EnvSpec
    model: nn.Module
    ascent_model: nn.Module
    split: Any
    shared: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

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
    def open(cls, spec: EnvSpec, *, model: nn.Module | None = None, split: Any = None,
             shared: dict[str, Any] | None = None) -> "Env":
        """Load the model and the data (or take the given ones; ``shared``: another
        environment's :attr:`shared`)."""
        from convscope.data.catalog import split_for_model
        from convscope.models.loading import load_any
        from convscope.models.twin import frozen_twin
        from convscope.spec import spec_of

        if model is None:
            model = load_any(spec.model, device=spec.device, **spec.model_options)
        model.eval()
        if split is None:
            split = split_for_model(spec_of(model), "test", spec.dataset, spec.data_dir)
        return cls(spec=spec, model=model, ascent_model=frozen_twin(model), split=split,
                   shared=shared if shared is not None else {})


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
#: more(): the tasks that became ready since the last call (an executor that ``streams`` takes them)
MoreFn = Callable[[], list[StageTask]]


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


def run_task(
    env: Env, task: StageTask, progress: Task | None, threads: int, *, thread_clock: bool = False
) -> tuple[Any, float, float]:
    """Compute one task in this process; returns ``(result, seconds, cpu_seconds)``.

    ``thread_clock``: count the CPU time of the calling thread only (several tasks
    running at once in threads of one process, each with one PyTorch thread)."""
    from convscope.device import torch_threads

    function = resolve_function(task.function)
    clock = time.thread_time if thread_clock else time.process_time
    started, cpu = time.perf_counter(), clock()
    with torch_threads(1 if task.single_thread else threads):
        result = function(env, task.params, task.inputs, progress)
    return result, time.perf_counter() - started, clock() - cpu


class LocalExecutor:
    """Runs the tasks in this process (the default): one after another, or with
    ``workers`` > 1 that many at a time in threads, each with one PyTorch thread and
    its own copy of the model (stages set a model's mode and may rewrite it for the
    length of a pass, and receptive-field geometry is kept per model object). The
    stage functions and their results are the same either way (each stage's
    randomness depends only on its parameters)."""

    name = "local"

    def __init__(self, env: Env, threads: int = 1, workers: int = 1) -> None:
        self.env = env
        self.threads = threads
        self.workers = max(1, int(workers))
        self._envs: list[Env] = [env]

    def _run_one(self, env: Env, task: StageTask, progress: Progress, threads: int, thread_clock: bool):
        with progress.task(task.title, None) as handle:
            try:
                return run_task(env, task, handle, threads, thread_clock=thread_clock)
            except Exception as exc:  # say which stage failed; keep the traceback (a bug to fix)
                if hasattr(exc, "add_note"):
                    exc.add_note(f"while computing atlas stage {task.name!r} ({task.title})")
                raise

    #: takes ``more``: the tasks that became ready join the running batch
    streams = True

    def run(self, tasks: Sequence[StageTask], on_done: DoneFn, progress: Progress, on_start: StartFn | None = None,
            more: MoreFn | None = None) -> None:
        """As :meth:`Executor.run`; ``more()``, called after each finished task, returns
        the tasks that became ready (they are computed in this same call)."""
        if self.workers == 1:
            pending = list(tasks)
            while pending:
                task = pending.pop(0)
                if on_start is not None:
                    on_start(task)
                on_done(task, *self._run_one(self.env, task, progress, self.threads, False))
                if more is not None:
                    pending.extend(more())
            return
        self._run_threads(tasks, on_done, progress, on_start, more)

    def _worker_envs(self, count: int) -> list[Env]:
        """``count`` environments: the first is ``env``, the others copy its model;
        each with its receptive-field geometry derived."""
        import copy

        if len(self._envs) == 1:
            _warm_geometry(self.env)
        while len(self._envs) < count:
            self._envs.append(Env.open(self.env.spec, model=copy.deepcopy(self.env.model), split=self.env.split,
                                       shared=self.env.shared))
            _warm_geometry(self._envs[-1])
        return self._envs[:count]

    def _run_threads(self, tasks: Sequence[StageTask], on_done: DoneFn, progress: Progress, on_start: StartFn | None,
                     more: MoreFn | None) -> None:
        import concurrent.futures
        import queue

        from convscope.tracing_gate import GATE

        count = self.workers
        free: queue.SimpleQueue[Env] = queue.SimpleQueue()
        for env in self._worker_envs(count):
            free.put(env)

        def compute(task: StageTask) -> tuple[Any, float, float]:
            env = free.get()
            try:
                with GATE.shared():
                    return self._run_one(env, task, progress, 1, True)
            finally:
                free.put(env)

        failure: BaseException | None = None
        with concurrent.futures.ThreadPoolExecutor(count, thread_name_prefix="convscope-stage") as pool:
            running: dict[concurrent.futures.Future, StageTask] = {}
            pending = list(tasks)
            try:
                while pending or running:
                    # the costliest first (a stage's cost includes what waits for it), so that the
                    # last ones to finish are short
                    pending.sort(key=lambda task: -task.cost)
                    while pending and len(running) < count and failure is None:
                        task = pending.pop(0)
                        if on_start is not None:
                            on_start(task)
                        running[pool.submit(compute, task)] = task
                    if not running:
                        break
                    done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                    for future in done:
                        task = running.pop(future)
                        try:
                            result = future.result()
                        except BaseException as exc:  # noqa: BLE001 - re-raised once the running ones end
                            failure = failure or exc
                            continue
                        on_done(task, *result)
                        if more is not None and failure is None:
                            pending.extend(more())
            except BaseException:
                progress.cancel()  # Ctrl-C: the running stages stop at their next progress check
                raise
        if failure is not None:
            raise failure

    def close(self) -> None:
        self._envs = [self.env]


def _warm_geometry(env: Env) -> None:
    """Derive every layer's receptive-field geometry of the environment's models now
    (kept per model), so that stages running side by side rarely need to trace
    (tracing pauses the other workers: :mod:`convscope.tracing_gate`)."""
    from convscope.layers import model_layers
    from convscope.receptive_field import field_geometry

    for model in (env.model, env.ascent_model):
        modules = dict(model.named_modules())
        for layer in model_layers(model):
            # the layer and its parts (``Conv2D_3.conv``: the pre-activation the precursor lifts)
            for name in [layer.name, *(f"{layer.name}.{child}" for child, _ in modules[layer.name].named_children())]:
                try:
                    field_geometry(model, name)
                except Exception:  # noqa: BLE001 - only a head start; a stage reports its own errors
                    continue


def torch_threads_for(requested: int | None) -> int:
    """PyTorch intra-op threads for the build (default 1: the atlas is many small
    batches, where a second intra-op thread mostly spins on a shared 2-core machine)."""
    return max(1, int(requested)) if requested is not None else 1


__all__ = ["Env", "EnvSpec", "Executor", "LocalExecutor", "StageTask", "resolve_function", "run_task", "torch_threads_for"]
