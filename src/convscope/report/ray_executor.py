"""Run the atlas stages on Ray: a local Ray instance or a cluster.

::

    convscope report --executor ray                          # a local Ray instance, one worker per CPU
    convscope report --executor ray --ray-address auto       # the cluster this machine belongs to
    convscope report --executor ray --ray-address ray://head:10001 --ray-gpus-per-worker 1 \\
        --cache-dir /shared/atlas-stages

How it works:

* **Actors.** ``N`` :class:`StageWorker` actors each rebuild the stages'
  :class:`~convscope.report.executor.Env` once from the
  :class:`~convscope.report.executor.EnvSpec` (the model is loaded once per
  actor) and then take stage tasks, one at a time: OIP chunks, top-k shards,
  deconvnet chunks, class patterns, the model card, … The ``EnvSpec`` — and the
  model itself when it was given in memory (the Python API) — is put into the
  object store once and handed to every actor by reference; the inputs a task
  reads (e.g. the merged top-k for the deconvnet chunks) are put there once per
  build and fetched once per actor.
* **Results** come back encoded by :mod:`convscope.report.codec` (arrays travel
  through the object store, not through the task's return message), are decoded
  in the driver and handed to ``on_done`` at once, which stores them in the
  content-addressed cache: an interrupted run, or one that lost a worker,
  resumes with only the missing chunks.
* **Merges** (``task.merge``: ``oip:<layer>``, ``topk``, ``deconv``) run in the
  driver, where their chunks' results arrive.
* **A lost worker** (its process killed, its node gone): the task it held is
  given to another worker and a new actor replaces the lost one; a task that
  loses its worker ``max_attempts`` times stops the build with a clear error.
* **Progress** of every running task is polled from its actor and shown in the
  driver's :class:`~convscope.progress.Progress` (the terminal display).
* **Ctrl-C** (the progress' cancel token, or ``KeyboardInterrupt``) cancels the
  submitted Ray work, kills the actors and re-raises, so ``convscope report``
  prints its resume message.
* **Ray Data** (``RayOptions(data=True)``, ``--ray-data``): the top-k shards run
  as a Ray Data pipeline — ``map_batches`` over the shard list with an actor pool
  whose actors hold the model and compute a shard's running top-k per channel;
  the shard results are merged once at the end (the ``topk`` stage). The results
  are the local shards', exactly.

Every stage function is the one the local executor runs, with the same chunks
(the profile's ``oip_chunk`` / ``topk_shard``) and the same PyTorch thread count,
and every unit's random start depends on (seed, layer, unit) only — so a Ray
build gives the local build's numbers. Ray is imported only when this executor
starts (``--executor ray``).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from convscope.device import usable_cores
from convscope.progress import CancelToken, Progress, Task
from convscope.report.executor import DoneFn, Env, EnvSpec, StageTask, StartFn, run_task

#: the stage function Ray Data runs (``RayOptions(data=True)``)
TOPK_SHARD = "convscope.report.stages:stage_topk_shard"


class RayExecutorError(RuntimeError):
    """Ray is missing, the cluster cannot be reached or lacks the resources, a worker
    cannot open the model or the data (or sees other files than the driver), or a
    stage lost its worker too often."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how the Ray executor runs.

    Attributes:
        address: ``None``: start a local Ray instance with ``workers × cpus_per_worker``
            CPUs; ``"auto"``: the cluster this machine belongs to; ``"ray://HOST:PORT"``:
            a remote cluster through Ray Client.
        workers: stage actors (``None``: local → this machine's CPUs; cluster → its
            CPUs ÷ ``cpus_per_worker``, or its GPUs ÷ ``gpus_per_worker``).
        cpus_per_worker: CPUs each actor reserves.
        gpus_per_worker: GPUs each actor reserves (> 0: the actors compute on ``cuda``).
        data: run the top-k shards as a Ray Data pipeline (``map_batches`` with an actor pool).
        max_attempts: how often one task may lose its worker before the build stops.
        start_timeout: seconds to wait for a worker to start (model and data loaded).
        poll_seconds: how often the driver looks for finished tasks and progress.
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    data: bool = False
    max_attempts: int = 3
    start_timeout: float = 600.0
    poll_seconds: float = 0.2

    def __post_init__(self) -> None:
        if self.workers is not None and int(self.workers) < 1:
            raise ValueError(f"--ray-workers must be at least 1; got {self.workers}")
        if not self.cpus_per_worker > 0:
            raise ValueError(f"CPUs per Ray worker must be > 0; got {self.cpus_per_worker}")
        if self.gpus_per_worker < 0:
            raise ValueError(f"--ray-gpus-per-worker must be ≥ 0; got {self.gpus_per_worker}")
        if int(self.max_attempts) < 1:
            raise ValueError(f"max_attempts must be at least 1; got {self.max_attempts}")


#: what to tell a user whose Python lacks Ray (or Ray Data's pyarrow/pandas)
INSTALL_HINT = 'the Ray executor needs Ray: pip install "convscope[ray]"'


def ray_available() -> bool:
    """Whether ``ray`` can be imported (checked without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # a broken or stubbed-out ``ray`` entry
        return False


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`RayExecutorError` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise RayExecutorError(INSTALL_HINT) from None
    return ray


def _decode_shipped(shipped: tuple[dict, dict, dict]) -> Any:
    """A result from its codec parts, its arrays copied out of the object store
    (read-only shared memory there) so that it behaves like a local result."""
    import numpy as np

    from convscope.report.codec import decode

    meta, arrays, blobs = shipped
    return decode(meta, {k: np.array(v) for k, v in arrays.items()}, dict(blobs))


def _environment_facts(env: Env) -> dict[str, Any]:
    """What a worker reports after opening its environment (the driver compares)."""
    from convscope import __version__
    from convscope.report.build import data_sha256, model_sha256

    return {"pid": os.getpid(), "host": socket.gethostname(), "version": __version__,
            "model_sha256": model_sha256(env.model), "data_sha256": data_sha256(env.split), "device": env.spec.device}


def _open_env(spec: EnvSpec, model: Any) -> Env:
    """The worker's environment: the model given in memory (moved to the worker's
    device), or the one the spec names, loaded here."""
    if model is not None:
        model = model.to(spec.device)
    return Env.open(spec, model=model)


# ----------------------------------------------------------------------------- workers
class StageWorker:
    """A Ray actor that holds one :class:`Env` and computes stage tasks.

    Ray resolves the ``spec`` and ``model`` object references before ``__init__``
    (they are stored once). It runs two threads (``max_concurrency=2``): the stage
    in one, :meth:`progress` / :meth:`cancel` answered in the other.
    """

    def __init__(self, spec: EnvSpec, model: Any, threads: int) -> None:
        self.env = _open_env(spec, model)
        self.threads = int(threads)
        self.token = CancelToken()
        self.state: tuple[str, float, float | None] = ("", 0.0, None)
        self.memo: collections.OrderedDict[str, Any] = collections.OrderedDict()

    def ready(self) -> dict[str, Any]:
        return _environment_facts(self.env)

    def run(self, task: StageTask, inputs: dict[str, Any]) -> tuple[dict, dict, dict, float, float]:
        """Compute ``task`` (its ``inputs``: name → object reference of an encoded
        result); returns the codec parts of the result, seconds and CPU seconds."""
        import ray

        from convscope.report.codec import encode

        values = {}
        for name, ref in inputs.items():
            key = ref.hex()
            if key not in self.memo:
                self.memo[key] = _decode_shipped(ray.get(ref))
                while len(self.memo) > 8:  # the inputs of the current wave; older ones go
                    self.memo.popitem(last=False)
            values[name] = self.memo[key]
        task = dataclasses.replace(task, inputs=values)
        self.state = (task.name, 0.0, None)

        def record(event: Any) -> None:
            self.state = (task.name, float(event.completed), event.total)

        progress = Progress(sink=record, token=self.token)
        with progress.task(task.title, None) as handle:
            result, seconds, cpu = run_task(self.env, task, handle, self.threads)
        meta, arrays, blobs = encode(result)
        return meta, arrays, blobs, seconds, cpu

    def progress(self) -> tuple[str, float, float | None]:
        """``(task name, completed, total)`` of the running task."""
        return self.state

    def cancel(self) -> None:
        self.token.cancel()


class TopkShardActor:
    """The Ray Data ``map_batches`` actor: holds the model and data; each row of its
    batch names a top-k shard task, whose running top-k per channel it computes."""

    def __init__(self, spec: Any, model: Any, tasks: Any, threads: int, expected: dict[str, str]) -> None:
        import ray

        def value(x: Any) -> Any:
            return ray.get(x) if isinstance(x, ray.ObjectRef) else x

        self.env = _open_env(value(spec), value(model))
        self.tasks: list[StageTask] = value(tasks)
        self.threads = int(threads)
        facts = _environment_facts(self.env)
        problem = _mismatch(facts, expected)
        if problem:
            raise RayExecutorError(problem)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from convscope.report.codec import pack

        payloads, seconds, cpus = [], [], []
        for index in batch["task"]:
            result, took, cpu = run_task(self.env, self.tasks[int(index)], None, self.threads)
            payloads.append(pack(result))
            seconds.append(took)
            cpus.append(cpu)
        return {"task": np.asarray(batch["task"], dtype=np.int64), "payload": np.array(payloads, dtype=object),
                "seconds": np.asarray(seconds, dtype=np.float64), "cpu": np.asarray(cpus, dtype=np.float64)}


def _mismatch(facts: dict[str, Any], expected: dict[str, str]) -> str:
    """Why a worker's environment is not the driver's ('' when it is)."""
    where = f"the Ray worker on {facts.get('host')} (pid {facts.get('pid')})"
    if expected.get("version") and facts["version"] != expected["version"]:
        return (f"{where} runs convscope {facts['version']}, the driver {expected['version']}: install the same "
                "convscope version on every node")
    if expected.get("model_sha256") and facts["model_sha256"] != expected["model_sha256"]:
        return (f"{where} loaded a model with other weights than the driver's: every worker must read the same model "
                "file (put it on a path every node sees)")
    if expected.get("data_sha256") and facts["data_sha256"] != expected["data_sha256"]:
        return (f"{where} read other test images than the driver: every worker must read the same dataset "
                "(same --dataset / --data-dir, on a path every node sees)")
    return ""


def _error_text(exc: BaseException, limit: int = 300) -> str:
    """The useful line of a Ray error (the remote exception's own message), at most ``limit`` characters."""
    text = _error_line(exc)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and not type(cause).__module__.startswith("ray."):
        return f"{type(cause).__name__}: {cause}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and not head.startswith("ray."):
            return line
    return lines[-1] if lines else type(exc).__name__


@dataclass
class _Worker:
    actor: Any
    index: int
    ready_ref: Any = None
    started: float = field(default_factory=time.perf_counter)
    facts: dict[str, Any] = field(default_factory=dict)
    task: StageTask | None = None
    ref: Any = None
    handle: Task | None = None


# ----------------------------------------------------------------------------- executor
class RayExecutor:
    """The atlas stages as Ray work (see the module docstring).

    Args:
        options: where and how (default: a local Ray instance, one worker per CPU).
        threads: PyTorch threads per task (the local executor's default: 1).

    Use: ``build_atlas(options, executor=RayExecutor(RayOptions(workers=2)))`` — or
    ``AtlasOptions(executor="ray", ray=RayOptions(...))``. :meth:`prepare` (called by
    the build) hands over the driver's environment; Ray starts at the first task
    (a build whose stages are all stored never starts it). :meth:`close` kills the
    actors and shuts down a Ray instance this executor started.

    Attributes:
        stats: ``{"lost_workers": int, "retried": [task names], "remote": int, "driver": int,
            "ray_data": int, "workers": int}`` of this executor's life.
    """

    name = "ray"

    def __init__(self, options: RayOptions | None = None, threads: int = 1) -> None:
        if not ray_available():  # say so before any work, not at the first stage
            raise RayExecutorError(INSTALL_HINT)
        self.options = options or RayOptions()
        self.threads = max(1, int(threads))
        self.env: Env | None = None
        self.expected: dict[str, str] = {}
        self.model_given = False
        self.stats: dict[str, Any] = {"lost_workers": 0, "retried": [], "remote": 0, "driver": 0, "ray_data": 0,
                                      "workers": 0}
        self._workers: list[_Worker] = []
        self._spec_ref: Any = None
        self._model_ref: Any = None
        self._inputs: dict[str, tuple[Any, Any]] = {}
        self._started_ray = False
        self._actor_class: Any = None
        self._count = 0

    # -- set-up ---------------------------------------------------------------
    @property
    def device(self) -> str:
        """Where the workers compute (part of the stage cache keys)."""
        return "cuda" if self.options.gpus_per_worker > 0 else "cpu"

    @property
    def description(self) -> str:
        """One line for the atlas' provenance."""
        o = self.options
        where = o.address or "local instance"
        gpus = f", {o.gpus_per_worker:g} GPU" if o.gpus_per_worker else ""
        data = ", top-k on Ray Data" if o.data else ""
        count = self.stats["workers"] or o.workers or "?"
        return f"ray ({where}; {count} workers × {o.cpus_per_worker:g} CPU{gpus}{data})"

    def prepare(self, env: Env, identity: dict[str, Any], *, model_given: bool = False) -> None:
        """Take the driver's environment and the identity the workers must match
        (``library``, ``model_sha256``, ``data_sha256``). ``model_given``: the model
        was passed in memory (it is shipped through the object store; otherwise each
        worker loads it from ``env.spec.model``)."""
        self.env = env
        self.model_given = bool(model_given)
        self.expected = {"version": str(identity.get("library", "")), "model_sha256": str(identity.get("model_sha256", "")),
                         "data_sha256": str(identity.get("data_sha256", ""))}

    def _ray(self) -> Any:
        """Connect to (or start) Ray once."""
        ray = import_ray()
        if ray.is_initialized():
            return ray
        o = self.options
        settings: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
        try:
            if o.address is None:
                workers = o.workers or usable_cores()
                ray.init(num_cpus=max(1, math.ceil(workers * o.cpus_per_worker)), **settings)
            else:
                ray.init(address=o.address, **settings)
        except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; say which cluster and why
            where = f"the Ray cluster at {o.address}" if o.address else "a local Ray instance"
            raise RayExecutorError(f"could not start or reach {where}: {_error_text(exc)}") from None
        self._started_ray = True
        return ray

    def _put_environment(self, ray: Any) -> None:
        """The EnvSpec (and an in-memory model) into the object store, once."""
        if self.env is None:
            raise RayExecutorError("RayExecutor.prepare(env, identity) was not called (build_atlas calls it)")
        if self._spec_ref is None:
            self._spec_ref = ray.put(dataclasses.replace(self.env.spec, device=self.device))
            if self.model_given:
                import copy

                model = self.env.model
                if any(p.device.type != "cpu" for p in model.parameters()):
                    model = copy.deepcopy(model).cpu()
                self._model_ref = ray.put(model)

    def _worker_count(self, ray: Any) -> int:
        o = self.options
        if o.workers:
            count = int(o.workers)
        else:
            resources = ray.cluster_resources()
            if o.gpus_per_worker > 0:
                count = int(resources.get("GPU", 0) // o.gpus_per_worker)
            else:
                count = int(resources.get("CPU", 1) // o.cpus_per_worker)
        resources = ray.cluster_resources()
        need_cpu, have_cpu = count * o.cpus_per_worker, resources.get("CPU", 0)
        need_gpu, have_gpu = count * o.gpus_per_worker, resources.get("GPU", 0)
        if count < 1 or need_cpu > have_cpu + 1e-9 or need_gpu > have_gpu + 1e-9:
            raise RayExecutorError(
                f"{max(count, 1)} Ray workers need {need_cpu:g} CPUs and {need_gpu:g} GPUs; the cluster has "
                f"{have_cpu:g} CPUs and {have_gpu:g} GPUs: use fewer --ray-workers or less --ray-gpus-per-worker")
        return count

    def _new_worker(self, ray: Any) -> _Worker:
        if self._actor_class is None:
            o = self.options
            self._actor_class = ray.remote(StageWorker).options(
                num_cpus=o.cpus_per_worker, num_gpus=o.gpus_per_worker, max_concurrency=2, max_restarts=0,
                max_task_retries=0)
        self._count += 1
        actor = self._actor_class.remote(self._spec_ref, self._model_ref, self.threads)
        return _Worker(actor=actor, index=self._count, ready_ref=actor.ready.remote())

    def _start_workers(self, ray: Any) -> None:
        self._put_environment(ray)
        count = self._worker_count(ray)
        self._workers = [self._new_worker(ray) for _ in range(count)]
        self.stats["workers"] = count

    def worker_pids(self) -> dict[str, int]:
        """``{task name: pid}`` of the workers computing a task now (tests kill one)."""
        return {w.task.name: int(w.facts["pid"]) for w in self._workers if w.task is not None and "pid" in w.facts}

    # -- running --------------------------------------------------------------
    def run(self, tasks: Sequence[StageTask], on_done: DoneFn, progress: Progress, on_start: StartFn | None = None) -> None:
        """Compute ``tasks``: merges here, the others on the actors (the top-k shards
        on Ray Data with ``data=True``); ``on_done`` is called in this thread as each
        result arrives. Raises the first stage failure after the running tasks ended."""
        remote = [t for t in tasks if not t.merge]
        here = [t for t in tasks if t.merge]
        try:
            if self.options.data:
                shards = [t for t in remote if t.function == TOPK_SHARD]
                if shards:
                    self._run_data(shards, on_done, progress, on_start)
                    remote = [t for t in remote if t.function != TOPK_SHARD]
            self._run_actors(remote, here, on_done, progress, on_start)
        except BaseException:  # Ctrl-C, a cancel, a failed stage, a failing on_done: no Ray work left behind
            self._abort()
            raise

    def _input_ref(self, ray: Any, name: str, result: Any) -> Any:
        """The object reference of an input result (put once per build)."""
        from convscope.report.codec import encode

        stored = self._inputs.get(name)
        if stored is None or stored[0] is not result:
            stored = (result, ray.put(encode(result)))
            self._inputs[name] = stored
        return stored[1]

    def _run_here(self, task: StageTask, on_done: DoneFn, progress: Progress, on_start: StartFn | None) -> None:
        assert self.env is not None
        if on_start is not None:
            on_start(task)
        with progress.task(task.title, None) as handle:
            try:
                result, seconds, cpu = run_task(self.env, task, handle, self.threads)
            except Exception as exc:
                if hasattr(exc, "add_note"):
                    exc.add_note(f"while merging atlas stage {task.name!r} ({task.title})")
                raise
        self.stats["driver"] += 1
        on_done(task, result, seconds, cpu)

    def _submit(self, ray: Any, worker: _Worker, task: StageTask, progress: Progress, on_start: StartFn | None) -> None:
        if on_start is not None:
            on_start(task)
        inputs = {name: self._input_ref(ray, name, value) for name, value in task.inputs.items()}
        worker.task = task
        worker.handle = progress.task(f"{task.title} · worker {worker.index}", None).__enter__()
        worker.ref = worker.actor.run.remote(dataclasses.replace(task, inputs={}), inputs)
        self.stats["remote"] += 1

    @staticmethod
    def _release(worker: _Worker) -> None:
        if worker.handle is not None:
            worker.handle.__exit__(None, None, None)
        worker.task = worker.ref = worker.handle = None

    def _replace(self, ray: Any, worker: _Worker) -> None:
        """A new actor in place of a lost one."""
        try:
            ray.kill(worker.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - it is gone already
            pass
        fresh = self._new_worker(ray)
        worker.actor, worker.ready_ref, worker.started, worker.facts = fresh.actor, fresh.ready_ref, fresh.started, {}
        worker.index = fresh.index

    def _run_actors(self, tasks: list[StageTask], here: list[StageTask], on_done: DoneFn, progress: Progress,
                    on_start: StartFn | None) -> None:
        if not tasks and not here:
            return
        ray = self._ray() if tasks else sys.modules.get("ray")
        from ray.exceptions import ObjectLostError, RayActorError, RayTaskError

        if tasks and not self._workers:
            self._start_workers(ray)
        queue = collections.deque(tasks)  # plan order: the model card (which later waves wait for) first
        local = collections.deque(here)
        lost: collections.Counter[str] = collections.Counter()
        failure: BaseException | None = None
        last_poll = time.perf_counter()
        while any(w.ref is not None for w in self._workers) or (failure is None and (queue or local)):
            progress.check()
            if failure is None:
                for worker in self._workers:
                    if queue and worker.ready_ref is None and worker.task is None:
                        self._submit(ray, worker, queue.popleft(), progress, on_start)
                if local:  # a merge runs here while the workers compute
                    self._run_here(local.popleft(), on_done, progress, on_start)
                    continue
            waiting = {w.ref: w for w in self._workers if w.ref is not None}
            starting = {w.ready_ref: w for w in self._workers if w.ready_ref is not None}
            if not waiting and not starting:
                break
            refs = [*waiting, *starting]
            done, rest = ray.wait(refs, num_returns=1, timeout=self.options.poll_seconds)
            if done and rest:
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                done += more
            for ref in done:
                if ref in starting:
                    worker = starting[ref]
                    worker.ready_ref = None
                    try:
                        worker.facts = ray.get(ref)
                    except RayActorError as exc:
                        raise RayExecutorError(
                            f"a Ray worker could not open the model and the data: {_error_text(exc)}. Every worker "
                            "needs the same convscope version, and the model file and the dataset on paths it can "
                            "read (see docs/SCALING.md)") from None
                    problem = _mismatch(worker.facts, self.expected)
                    if problem:
                        raise RayExecutorError(problem)
                    continue
                worker = waiting[ref]
                task = worker.task
                assert task is not None
                self._release(worker)
                try:
                    meta, arrays, blobs, seconds, cpu = ray.get(ref)
                except (RayActorError, ObjectLostError) as exc:  # the worker (or its node) is gone: retry elsewhere
                    self.stats["lost_workers"] += 1
                    lost[task.name] += 1
                    self._replace(ray, worker)
                    if lost[task.name] >= self.options.max_attempts:
                        failure = failure or RayExecutorError(
                            f"atlas stage {task.name!r} lost its Ray worker {lost[task.name]} times "
                            f"(last: {_error_text(exc)}); finished stages are kept, run again to resume")
                    else:
                        self.stats["retried"].append(task.name)
                        queue.appendleft(task)
                    continue
                except RayTaskError as exc:  # the stage itself failed: report its own error
                    if failure is None:
                        cause = getattr(exc, "cause", None)
                        failure = cause if isinstance(cause, Exception) else RayExecutorError(_error_text(exc))
                        if hasattr(failure, "add_note"):
                            failure.add_note(f"while computing atlas stage {task.name!r} ({task.title}) on a Ray worker")
                    continue
                on_done(task, _decode_shipped((meta, arrays, blobs)), seconds, cpu)
            for worker in starting.values():
                if worker.ready_ref is not None and time.perf_counter() - worker.started > self.options.start_timeout:
                    raise RayExecutorError(
                        f"a Ray worker did not start within {self.options.start_timeout:.0f} s: the cluster may lack "
                        f"the resources ({self.options.cpus_per_worker:g} CPU, {self.options.gpus_per_worker:g} GPU "
                        "per worker) or the model takes that long to load")
            if time.perf_counter() - last_poll > 0.5:
                self._poll_progress(ray)
                last_poll = time.perf_counter()
        if failure is not None:
            raise failure

    def _poll_progress(self, ray: Any) -> None:
        """Show each running task's own progress (asked from its actor)."""
        busy = {w.actor.progress.remote(): w for w in self._workers if w.task is not None}
        if not busy:
            return
        done, _ = ray.wait(list(busy), num_returns=len(busy), timeout=0.05)
        for ref in done:
            worker = busy[ref]
            try:
                name, completed, total = ray.get(ref)
            except Exception:  # noqa: BLE001 - a worker that just died: its task result says so
                continue
            if worker.task is not None and worker.handle is not None and name == worker.task.name:
                worker.handle.update(completed, total)

    def _run_data(self, tasks: list[StageTask], on_done: DoneFn, progress: Progress, on_start: StartFn | None) -> None:
        """The top-k shards as a Ray Data pipeline: one row per shard,
        ``map_batches`` on an actor pool that holds the model and the data."""
        ray = self._ray()
        try:
            import ray.data
        except ImportError as exc:  # Ray without its data extra (pyarrow, pandas)
            raise RayExecutorError(f"--ray-data needs Ray Data ({exc}): pip install \"convscope[ray]\"") from None

        from convscope.report.codec import unpack

        self._put_environment(ray)
        self._kill_workers()  # the pipeline's actors get every worker's resources
        count = min(self._worker_count(ray), len(tasks))
        self.stats["workers"] = max(self.stats["workers"], count)
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # no banners; failures still raise
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        for task in tasks:
            if on_start is not None:
                on_start(task)
        o = self.options
        # The spec and the task list are small plain values (they travel with the actors'
        # creation); only a model given in memory goes by reference (stored once).
        assert self.env is not None
        constructor = {"spec": dataclasses.replace(self.env.spec, device=self.device), "model": self._model_ref,
                       "tasks": [dataclasses.replace(t, inputs={}) for t in tasks], "threads": self.threads,
                       "expected": dict(self.expected)}
        dataset = ray.data.from_items([{"task": i} for i in range(len(tasks))], override_num_blocks=len(tasks))
        shards = dataset.map_batches(
            TopkShardActor, batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=count),
            num_cpus=o.cpus_per_worker, num_gpus=o.gpus_per_worker or None, fn_constructor_kwargs=constructor,
        )
        with progress.task(f"top-k shards on Ray Data ({count} actors)", len(tasks)) as handle:
            try:
                for batch in shards.iter_batches(batch_size=None, batch_format="numpy"):
                    for index, payload, seconds, cpu in zip(batch["task"], batch["payload"], batch["seconds"], batch["cpu"]):
                        on_done(tasks[int(index)], unpack(bytes(payload)), float(seconds), float(cpu))
                        self.stats["ray_data"] += 1
                        handle.advance()
            except Exception as exc:
                if isinstance(exc, RayExecutorError) or type(exc).__module__.startswith("convscope"):
                    raise
                raise RayExecutorError(f"the Ray Data top-k pipeline failed: {_error_text(exc)}") from None

    # -- stopping -------------------------------------------------------------
    def _kill_workers(self) -> None:
        ray = sys.modules.get("ray")
        for worker in self._workers:
            if ray is not None and worker.ref is not None:
                try:
                    ray.cancel(worker.ref)
                except Exception:  # noqa: BLE001 - finished or gone
                    pass
            self._release(worker)
        for worker in self._workers:
            if ray is not None:
                try:
                    ray.kill(worker.actor, no_restart=True)
                except Exception:  # noqa: BLE001 - gone already
                    pass
        self._workers = []

    def _abort(self) -> None:
        """Cancel the submitted work and kill the actors (Ctrl-C, a failure)."""
        self._kill_workers()

    def close(self) -> None:
        """Kill the actors, drop the stored objects, shut down a Ray instance this executor started."""
        self._kill_workers()
        self._inputs.clear()
        self._spec_ref = self._model_ref = None
        ray = sys.modules.get("ray")
        if self._started_ray and ray is not None and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False


__all__ = ["RayExecutor", "RayExecutorError", "RayOptions", "StageWorker", "TopkShardActor", "import_ray", "ray_available"]
