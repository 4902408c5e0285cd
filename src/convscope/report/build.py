"""Build the atlas: plan the typed stages, take the stored ones from the cache, run
the rest on an executor, then write the pages and ``atlas.json``.

Example::

    from convscope.report import AtlasOptions, build_atlas
    result = build_atlas(AtlasOptions(out_dir=Path("convscope-out/atlas"), profile="quick"))
    result.index          # .../index.html
    result.executed       # stages computed this time (the rest came from OUT/.stages)

The MNIST atlas is one self-contained ``index.html`` (every image inline); a model
with more than ``profile.single_page_maps`` conv maps gets one page per layer
(``layers/<layer>.html``) with its pictures as files beside it (``img/``).
"""

from __future__ import annotations

import hashlib
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convscope import __version__
from convscope.io import atomic_write_bytes, atomic_write_text, write_json
from convscope.layers import atlas_layers, layer_kinds
from convscope.progress import Progress, silent
from convscope.report import stages as st
from convscope.report import views as vw
from convscope.report.cache import StageCache, stage_key
from convscope.report.codec import encode
from convscope.report.executor import Env, EnvSpec, Executor, LocalExecutor, StageTask, torch_threads_for
from convscope.report.plan import AtlasPlan, StageSpec, plan_atlas
from convscope.report.profile import PROFILES, Profile


@dataclass
class AtlasOptions:
    """What to build.

    Attributes:
        out_dir: output folder (``index.html``, ``atlas.json``, ``.stages/``).
        model: the model reference (``None``: the shipped Model A; see
            :func:`convscope.models.loading.load_any`).
        model_options: ``weights``, ``spec_fields``, ``allow_unverified`` for the loader.
        dataset: the dataset (``None``: the model's own).
        data_dir: explicit data folder.
        layers: layers that get a section (``None``: conv layers + hidden dense layers).
        profile: ``"full"`` or ``"quick"`` (or a :class:`Profile`).
        seed: base seed of every random start.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        command: the command line, recorded in the provenance section.
        history_search: folders whose ``*/history.json`` may hold the model's training history.
        threads: PyTorch CPU threads (``None``: 1).
        workers: the local executor's stages computed at once (threads of this
            process, one PyTorch thread each; 1 = one after another).
        pages: ``"auto"``, ``"single"`` (one self-contained file) or ``"split"`` (one page per layer).
        cache_dir: where stage results are stored (default ``OUT/.stages``; may be shared).
        model_path: older name of ``model`` (a path).
        executor: who computes the stages: ``"local"`` (this process) or ``"ray"``
            (:mod:`convscope.report.ray_executor`; needs ``pip install "convscope[ray]"``).
        ray: the :class:`~convscope.report.ray_executor.RayOptions` of ``executor="ray"``
            (``None``: a local Ray instance, one worker per CPU).
    """

    out_dir: Path = Path("convscope-out/atlas")
    model: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    data_dir: Path | None = None
    layers: list[str] | None = None
    profile: str | Profile = "full"
    seed: int = 0
    device: str = "auto"
    command: str = ""
    history_search: list[Path] = field(default_factory=lambda: [Path("runs")])
    threads: int | None = None
    workers: int = 1
    pages: str = "auto"
    cache_dir: Path | None = None
    model_path: Path | None = None
    executor: str = "local"
    ray: Any = None


@dataclass
class StageTiming:
    """One stage of one build: ``seconds`` this build, ``cached`` if it was loaded,
    ``original_seconds`` what computing it took."""

    name: str
    title: str
    seconds: float
    cached: bool
    original_seconds: float
    cpu_seconds: float = 0.0


@dataclass
class BuildResult:
    """A finished build."""

    out_dir: Path
    index: Path
    summary: Path
    timings: list[StageTiming]
    total_seconds: float
    pages: list[Path] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def executed(self) -> list[str]:
        return [t.name for t in self.timings if not t.cached]

    @property
    def cached(self) -> list[str]:
        return [t.name for t in self.timings if t.cached]


#: Hooks the tests use: ``on_stage(name)`` is called before a stage is computed.
StageHook = Callable[[str], None]
#: A line of build log (``✓ oip:Conv2D_3  4.1 s``).
LogFn = Callable[[str], None]


def resolve_layers(model: torch.nn.Module, layers: list[str] | None) -> list[str]:
    """Validated section layers in forward order.

    Raises:
        AddressError: an unknown layer (the message lists the valid ones).
        ValueError: a layer that cannot get a section (e.g. the output logits).
    """
    from convscope.address import layer_output_shapes, resolve_address

    kinds = layer_kinds(model)
    names = atlas_layers(model) if not layers else list(dict.fromkeys(resolve_address(model, t).layer for t in layers))
    shapes = layer_output_shapes(model)
    valid = [n for n, k in kinds.items() if k in ("conv", "pool", "dense") and n in shapes]
    bad = [n for n in names if n not in valid]
    if bad:
        raise ValueError(f"the atlas has sections for layers with maps or nodes ({', '.join(valid[:30])}); not for {', '.join(bad)}")
    order = list(kinds)
    names.sort(key=order.index)
    return names


def model_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of the model's tensors (names, shapes, bytes) and of its spec."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    spec = getattr(model, "convscope_spec", None)
    digest.update(repr(spec.to_dict() if spec is not None else None).encode())
    return digest.hexdigest()


def data_sha256(split: Any) -> str:
    """SHA-256 of a split's images and labels (the data every stage reads)."""
    return hashlib.sha256(np.ascontiguousarray(split.images).tobytes()
                          + np.ascontiguousarray(split.labels).tobytes()).hexdigest()


def make_executor(options: AtlasOptions, env: Env, threads: int) -> Executor:
    """The executor ``options.executor`` names (Ray is imported only for ``"ray"``,
    and only when it starts)."""
    if options.executor == "local":
        return LocalExecutor(env, threads, workers=options.workers)
    if options.executor == "ray":
        from convscope.report.ray_executor import RayExecutor, RayOptions

        return RayExecutor(options.ray if options.ray is not None else RayOptions(), threads)
    raise ValueError(f"unknown executor {options.executor!r}: use 'local' or 'ray'")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def build_atlas(
    options: AtlasOptions,
    *,
    progress: Progress | None = None,
    on_stage: StageHook | None = None,
    log: LogFn | None = None,
    executor: Executor | None = None,
    model: torch.nn.Module | None = None,
) -> BuildResult:
    """Build (or resume) the atlas in ``options.out_dir``.

    Args:
        options: what to build.
        progress: stage progress and cancellation (default: silent).
        on_stage: called with a stage's name just before it is computed.
        log: receives one line per finished stage.
        executor: who computes the stages (default: the one ``options.executor`` names,
            closed at the end; an executor given here is prepared — ``prepare(env, identity,
            model_given=...)`` when it has that method — but left open).
        model: an already loaded model (the Python API), instead of ``options.model``.

    Returns:
        A :class:`BuildResult`. Stages stored with the same key are loaded, not
        recomputed. The pages are replaced atomically at the end.

    Raises:
        ModelFileError, DataNotFoundError, DatasetError, AddressError, ValueError: bad inputs.
    """
    from convscope.device import resolve_device
    from convscope.spec import spec_of

    started = time.perf_counter()
    progress = progress or silent()
    log = log or (lambda line: None)
    threads = torch_threads_for(options.threads)
    profile = PROFILES[options.profile] if isinstance(options.profile, str) else options.profile
    device = resolve_device(options.device)
    reference = options.model if options.model is not None else (None if options.model_path is None else str(options.model_path))
    loaded_kind, loaded_label = "given", "a model given to build_atlas"
    model_given = model is not None
    if model is None:
        from convscope.models.loading import open_model

        loaded = open_model(reference, device=device, **options.model_options)
        model, loaded_kind, loaded_label = loaded.model, loaded.kind, loaded.label
    model = model.to(device).eval()
    spec = spec_of(model)
    layers = resolve_layers(model, options.layers)
    env_spec = EnvSpec(
        model=reference, model_options=dict(options.model_options), dataset=options.dataset,
        data_dir=None if options.data_dir is None else str(options.data_dir), device=str(device), profile=profile,
        seed=int(options.seed), layers=tuple(layers), conv_layers=(),
    )
    env = Env.open(env_spec, model=model)
    split = env.split
    history, source = st.find_history(model, reference, [Path(d) for d in options.history_search])
    plan = plan_atlas(model, layers, profile, seed=int(options.seed), dataset_size=len(split),
                      history=history, history_source=source)
    made = executor is None
    executor = executor if executor is not None else make_executor(options, env, threads)
    identity = {
        "version": st.STAGE_VERSION, "library": __version__, "model_sha256": model_sha256(model),
        "data_sha256": data_sha256(split), "seed": int(options.seed),
        # where the stages compute (a Ray executor's GPU workers: "cuda")
        "device": getattr(executor, "device", None) or device.type,
    }
    prepare = getattr(executor, "prepare", None)
    if prepare is not None:
        prepare(env, identity, model_given=model_given)
    out_dir = Path(options.out_dir)
    cache = StageCache(Path(options.cache_dir) if options.cache_dir is not None else out_dir / ".stages")
    try:
        results, timings = run_plan(plan, identity, cache, executor, progress, on_stage=on_stage, log=log)
    finally:
        if made:
            executor.close()
    assemble_started = time.perf_counter()
    provenance = {
        "library_version": __version__, "torch_version": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "device": str(device), "torch_threads": threads,
        "executor": getattr(executor, "description", None) or getattr(executor, "name", "local"),
        "model": loaded_label, "model_name": spec.name, "model_kind": loaded_kind,
        "model_sha256": identity["model_sha256"],
        "source": dict(getattr(getattr(model, "config", None), "source", {}) or {}) or "—",
        "input": f"{'×'.join(str(v) for v in spec.input_shape)}, {spec.preprocessing}",
        "data": f"{split.dataset} {split.split} split, {len(split.images)} images",
        "data_sha256": identity["data_sha256"], "seed": int(options.seed), "profile": profile.to_dict(),
        "layers": layers, "command": options.command or "convscope report (Python API)",
        "built": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    if isinstance(provenance["source"], dict):
        provenance["source"] = {k: v for k, v in provenance["source"].items() if k in ("file", "sha256", "format", "keras_version", "reference", "kind")} or "—"
    total_maps = sum(results[f"oip:{layer}"].maps for layer in plan.conv_layers)
    split_pages = options.pages == "split" or (options.pages == "auto" and total_maps > profile.single_page_maps)
    pages = write_pages(out_dir, plan, results, env, provenance, timings, profile, split_pages)
    index = pages[0]
    total = time.perf_counter() - started
    assemble = time.perf_counter() - assemble_started
    summary = write_json(out_dir / "atlas.json", {
        "provenance": provenance,
        "timings": [{"stage": t.name, "seconds": round(t.seconds, 3), "cached": t.cached,
                     "original_seconds": round(t.original_seconds, 3), "cpu_seconds": round(t.cpu_seconds, 3)}
                    for t in timings] + [{"stage": "html", "seconds": round(assemble, 3), "cached": False}],
        "total_seconds": round(total, 3),
        "pages": [str(p.relative_to(out_dir)) for p in pages],
        "stages": {name: _summary_meta(result) for name, result in results.items() if "@" not in name},
    })
    log(f"  ✓ {'html':<16} {assemble:.1f} s   ({sum(p.stat().st_size for p in pages) / 1e6:.1f} MB in {len(pages)} page(s))")
    return BuildResult(out_dir=out_dir, index=index, summary=summary, timings=timings, total_seconds=total, pages=pages,
                       results=results)


def _summary_meta(result: Any) -> dict[str, Any]:
    meta, _, _ = encode(result)
    return {k: v for k, v in meta.items() if not k.startswith("__")}


def run_plan(
    plan: AtlasPlan,
    identity: dict[str, Any],
    cache: StageCache,
    executor: Executor,
    progress: Progress,
    *,
    on_stage: StageHook | None = None,
    log: LogFn | None = None,
) -> tuple[dict[str, Any], list[StageTiming]]:
    """Load the stored stages and compute the others on ``executor``, wave by wave
    (a wave: every stage whose inputs are ready). Each result is stored as soon as it
    arrives, so an interrupted build (Ctrl-C, a lost worker) resumes with only the
    missing stages."""
    log = log or (lambda line: None)
    keys: dict[str, str] = {}
    for stage in plan.stages:  # deps come first in the plan
        keys[stage.name] = stage_key({**identity, "stage": stage.name, "function": stage.function, "params": stage.params,
                                      "deps": {d: keys[d] for d in stage.deps}})
    results: dict[str, Any] = {}
    timing: dict[str, StageTiming] = {}
    pending = []
    for stage in plan.stages:
        stored = cache.load(stage.name, keys[stage.name])
        if stored is not None:
            results[stage.name] = stored[0]
            timing[stage.name] = StageTiming(stage.name, stage.title, 0.0, True, stored[1])
        else:
            pending.append(stage)
    overall = progress.task("atlas", len(plan.stages))
    overall.update(len(plan.stages) - len(pending))

    def on_done(task: StageTask, result: Any, seconds: float, cpu: float) -> None:
        cache.save(task.name, task.key, result, seconds)
        results[task.name] = result
        timing[task.name] = StageTiming(task.name, task.title, seconds, False, seconds, cpu)
        log(f"  ✓ {task.name:<16} {seconds:.1f} s  (CPU {cpu:.1f} s)")
        overall.advance()

    priority = critical_path_costs(plan.stages)
    scheduled: set[str] = set()

    def ready_tasks() -> list[StageTask]:
        """The pending stages whose inputs are all there, not handed out yet."""
        ready = [s for s in pending if s.name not in scheduled and all(d in results for d in s.deps)]
        scheduled.update(s.name for s in ready)
        return [StageTask(stage.name, stage.title, stage.function, stage.params, {d: results[d] for d in stage.deps},
                          keys[stage.name], stage.single_thread, priority[stage.name], stage.merge) for stage in ready]

    started = None if on_stage is None else (lambda task: on_stage(task.name))
    while pending:
        tasks = ready_tasks()
        if not tasks:
            raise RuntimeError(f"atlas plan has unmet dependencies: {[s.name for s in pending]}")
        if getattr(executor, "streams", False):  # stages start as soon as their inputs are there
            executor.run(tasks, on_done, progress, started, more=ready_tasks)
        else:  # in waves of independent stages
            executor.run(tasks, on_done, progress, started)
        pending = [s for s in pending if s.name not in results]
    for name, t in timing.items():
        if t.cached:
            log(f"  ↺ {name:<16} cached (computed in {t.original_seconds:.1f} s)")
    return results, [timing[s.name] for s in plan.stages]


def critical_path_costs(stages: Sequence[StageSpec]) -> dict[str, float]:
    """Each stage's cost plus the costliest chain of stages that wait for it (an
    executor running several stages at once starts the highest first)."""
    waiting: dict[str, list[str]] = {stage.name: [] for stage in stages}
    for stage in stages:
        for dep in stage.deps:
            waiting.setdefault(dep, []).append(stage.name)
    total: dict[str, float] = {}
    for stage in reversed(stages):  # deps come first in the plan: whoever waits is already done
        total[stage.name] = float(stage.cost) + max((total[w] for w in waiting[stage.name]), default=0.0)
    return total


def atlas_view(
    plan: AtlasPlan, results: dict[str, Any], env: Env, provenance: dict[str, Any], timings: list[StageTiming],
    profile: Profile, sink: vw.ImageSink, pages: dict[str, str],
) -> vw.AtlasView:
    """The view model of the whole atlas."""
    names = env.class_names
    card: st.ModelCard = results["model_card"]
    compare: st.Comparison | None = results.get("compare")
    layers = [
        vw.layer_view(layer, results["activations"], results["topk"], compare, results.get(f"oip:{layer}"), names, sink,
                      "" if layer not in pages else pages[layer])
        for layer in plan.layers
    ]
    maps = [vw.maps_view(layer, results[f"oip:{layer}"], results["topk"], results.get("deconv"), sink)
            for layer in plan.conv_layers if layer not in pages]
    alive = " · ".join(f"{layer}: {results[f'oip:{layer}'].alive}/{results[f'oip:{layer}'].maps}" for layer in plan.conv_layers)
    return vw.AtlasView(
        title=f"Inside {card.name}", model_name=card.name, profile=profile.name,
        card=vw.model_card_view(card, results["training"], sink), layers=layers, maps=maps,
        classes=vw.classes_view(results["classes"], len(names), sink) if "classes" in results else None,
        compare=vw.compare_view(compare, names, card.evaluation["confusion"], sink) if compare is not None else None,
        mistakes=vw.mistakes_view(results["mistakes"], names, sink) if "mistakes" in results else None,
        dream=vw.dream_view(results["dream"], sink) if "dream" in results else None,
        provenance=vw.provenance_rows(provenance),
        timings=[vw.TimingRow(t.name, t.title, t.seconds, t.cpu_seconds, t.cached, t.original_seconds) for t in timings],
        total_stage_seconds=sum(t.seconds for t in timings), alive=alive or "—",
        goto_example=f"{plan.conv_layers[-1]}:0" if plan.conv_layers else (plan.layers[0] + ":0" if plan.layers else ""),
        built=provenance["built"], version=__version__, dataset=str(env.split.dataset), pages=pages,
        draw=_draw(results, env),
    )


def _draw(results: dict[str, Any], env: Env) -> dict[str, Any] | None:
    """The draw pad (:func:`convscope.report.views.draw_view`) with the activation
    stage's sample images (one per class) to start from."""
    acts: st.Activations | None = results.get("activations")
    indices = list(acts.samples) if acts is not None else []
    labels = [int(env.split.labels[i]) for i in indices]
    return vw.draw_view(env.model, [env.split.images[i] for i in indices], [f"test:{i}" for i in indices], labels)


def write_pages(
    out_dir: Path, plan: AtlasPlan, results: dict[str, Any], env: Env, provenance: dict[str, Any],
    timings: list[StageTiming], profile: Profile, split_pages: bool,
) -> list[Path]:
    """Write ``index.html`` (and, split, ``layers/<layer>.html`` and ``img/``); returns the pages, index first."""
    from convscope.report.html import render_atlas, render_layer_page

    out_dir.mkdir(parents=True, exist_ok=True)
    if not split_pages:
        view = atlas_view(plan, results, env, provenance, timings, profile, vw.data_uri_sink, {})
        return [atomic_write_text(out_dir / "index.html", render_atlas(view))]

    written: dict[str, str] = {}

    def file_sink(stage: str, name: str, data: bytes) -> str:
        suffix = ".jpg" if data[:2] == b"\xff\xd8" else ".png"
        relative = f"img/{_slug(stage)}/{_slug(name)}{suffix}"
        if relative not in written:
            atomic_write_bytes(out_dir / relative, data)
            written[relative] = relative
        return relative

    def page_sink(stage: str, name: str, data: bytes) -> str:  # layer pages live one folder down
        return "../" + file_sink(stage, name, data)

    pages_map = {layer: f"layers/{_slug(layer)}.html" for layer in plan.layers}
    view = atlas_view(plan, results, env, provenance, timings, profile, file_sink, pages_map)
    paths = [atomic_write_text(out_dir / "index.html", render_atlas(view))]
    names = env.class_names
    compare = results.get("compare")
    for layer in plan.layers:
        layer_view = vw.layer_view(layer, results["activations"], results["topk"], compare, results.get(f"oip:{layer}"),
                                   names, page_sink, "")
        maps = (vw.maps_view(layer, results[f"oip:{layer}"], results["topk"], results.get("deconv"), page_sink)
                if f"oip:{layer}" in results else None)
        paths.append(atomic_write_text(out_dir / pages_map[layer], render_layer_page(view, layer_view, maps, "../index.html")))
    return paths


def command_line() -> str:
    """The current command line, shell-quoted."""
    import shlex

    return " ".join(shlex.quote(a) for a in ["convscope", *sys.argv[1:]])


__all__ = ["AtlasOptions", "BuildResult", "StageTiming", "atlas_view", "build_atlas", "command_line", "data_sha256",
           "make_executor", "model_sha256", "resolve_layers", "run_plan", "write_pages"]
