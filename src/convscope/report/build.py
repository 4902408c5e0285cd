"""Build the atlas: run the stages (resuming stored ones), then write one
self-contained ``index.html`` (every image inline) and ``atlas.json``.

Example::

    from convscope.report import AtlasOptions, build_atlas
    result = build_atlas(AtlasOptions(out_dir=Path("convscope-out/atlas"), profile="quick"))
    result.index          # .../index.html
    result.executed       # stages computed this time (the rest came from OUT/.stages)
"""

from __future__ import annotations

import hashlib
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convscope import __version__
from convscope.device import torch_threads
from convscope.io import atomic_write_text, write_json
from convscope.models.twin import frozen_twin
from convscope.report import stages as st
from convscope.report.cache import StageCache, StageOutput, stage_key
from convscope.report.profile import PROFILES, Profile


@dataclass
class AtlasOptions:
    """What to build.

    Attributes:
        out_dir: output folder (``index.html``, ``atlas.json``, ``.stages/``).
        model_path: model file (``None``: the shipped Model A).
        data_dir: MNIST folder (``None``: the usual search order).
        layers: layers that get a section (``None``: conv layers + hidden dense layers).
        profile: ``"full"`` or ``"quick"`` (or a :class:`Profile`).
        seed: base seed of every random start.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        command: the command line, recorded in the provenance section.
        history_search: folders whose ``*/history.json`` may hold the model's training history.
        threads: PyTorch CPU threads (``None``: 1, see :func:`choose_threads`).
    """

    out_dir: Path = Path("convscope-out/atlas")
    model_path: Path | None = None
    data_dir: Path | None = None
    layers: list[str] | None = None
    profile: str | Profile = "full"
    seed: int = 0
    device: str = "auto"
    command: str = ""
    history_search: list[Path] = field(default_factory=lambda: [Path("runs")])
    threads: int | None = None


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

    @property
    def executed(self) -> list[str]:
        return [t.name for t in self.timings if not t.cached]

    @property
    def cached(self) -> list[str]:
        return [t.name for t in self.timings if t.cached]


@dataclass
class Stage:
    """One unit of work: ``run(ctx)`` returns its output; ``params`` and ``deps``
    go into its cache key. ``single_thread`` stages run many tiny operations, for
    which a second intra-op thread costs more than it gives."""

    name: str
    title: str
    run: Callable[[st.Context], StageOutput]
    params: dict[str, Any]
    deps: tuple[str, ...] = ()
    single_thread: bool = False


#: Hooks the tests use: ``on_stage(name)`` is called before a stage is computed.
StageHook = Callable[[str], None]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def plan_stages(ctx: st.Context, history_search: list[Path]) -> list[Stage]:
    """The stages for this model, layers and profile, in run order."""
    p = ctx.profile
    history, source = st.find_history(ctx.model, ctx.model_path, history_search)
    history_hash = stage_key({"history": history}) if history is not None else None
    stages = [
        Stage("model_card", "model card: evaluation, confusion", st.stage_model_card, {}),
        Stage("training", "training curves", lambda c: st.stage_training(c, history, source),
              {"history": history_hash, "source": source}),
        Stage("activations", "filters, activation grids", st.stage_activations,
              {"layers": ctx.layers}, ("model_card",)),
        Stage("topk", "top-k dataset examples", st.stage_topk, {"layers": ctx.layers, "k": p.topk}),
    ]
    oip_params = {k: getattr(p, k) for k in (
        "oip_steps", "oip_epsilon", "oip_criterion", "oip_report_steps", "precursor_candidates",
        "precursor_dataset", "precursor_preactivation_steps")}
    for layer in ctx.conv_layers:
        stages.append(Stage(f"oip:{layer}", f"OIPs of {layer}", lambda c, layer=layer: st.stage_oip(c, layer),
                            {"layer": layer, **oip_params}))
    stages += [
        Stage("deconv", "deconvnets of the strongest examples", st.stage_deconv,
              {"layers": ctx.conv_layers}, ("topk",), single_thread=True),
        Stage("classes", "class visualisations 0-9", st.stage_classes,
              {"steps": p.class_steps, "epsilon": p.class_epsilon}),
        Stage("compare", "4 vs 9, dense node patterns", st.stage_compare, {"n": p.compare_examples}),
        Stage("mistakes", "mistakes explained", st.stage_mistakes, {"n": p.mistakes, "ig_steps": p.ig_steps},
              ("model_card",)),
        Stage("dream", "DeepDream of the default photo", st.stage_dream,
              {k: getattr(p, k) for k in ("dream_width", "dream_octaves", "dream_steps", "carve_rounds",
                                          "carve_epochs")},
              tuple(s for s in (f"oip:{ctx.conv_layers[-1]}",) if ctx.conv_layers)),
    ]
    return stages


def choose_threads(requested: int | None) -> int:
    """PyTorch intra-op threads for the build (see :attr:`AtlasOptions.threads`).

    Default 1: the atlas is many small batches (ascent steps of tens of images,
    single-image deconvnets), where a second intra-op thread mostly spins. On the
    shared 2-core machine ``--threads 2`` made the quick atlas 3.5× slower in wall
    time and the class visualisations 40× slower (``benchmarks/report_speed.py``).
    """
    return max(1, int(requested)) if requested is not None else 1


def resolve_layers(model: torch.nn.Module, layers: list[str] | None) -> tuple[list[str], list[str]]:
    """Validated section layers and the conv layers among them.

    Raises:
        AddressError: an unknown layer (the message lists the valid ones).
        ValueError: a layer that cannot get a section (e.g. the output logits).
    """
    from convscope.address import layer_output_shapes, resolve_address

    kinds = st.layer_kinds(model)
    if not layers:
        names = st.default_layers(model)
    else:
        names = list(dict.fromkeys(resolve_address(model, text).layer for text in layers))
    shapes = layer_output_shapes(model)
    valid = [n for n, k in kinds.items() if k in ("conv", "pool", "dense") and n in shapes]
    bad = [n for n in names if n not in valid]
    if bad:
        raise ValueError(f"the atlas has sections for {', '.join(valid)}; not for {', '.join(bad)}")
    names.sort(key=list(kinds).index)
    return names, [n for n in names if kinds[n] == "conv"]


def build_atlas(
    options: AtlasOptions,
    *,
    console: Any | None = None,
    on_stage: StageHook | None = None,
) -> BuildResult:
    """Build (or resume) the atlas in ``options.out_dir``.

    Args:
        options: what to build.
        console: a ``rich.console.Console`` for the progress bar (stderr by default).
        on_stage: called with a stage's name just before it is computed.

    Returns:
        A :class:`BuildResult`. Stages already stored with the same key are loaded,
        not recomputed. ``index.html`` is replaced atomically at the end.

    Raises:
        ModelFileError, DataNotFoundError, AddressError, ValueError: bad inputs.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from convscope.data import load_split
    from convscope.device import resolve_device
    from convscope.models import load_model, shipped_model_path
    from convscope.models.files import paths_for
    from convscope.report.html import render_page

    started = time.perf_counter()
    threads = choose_threads(options.threads)
    profile = PROFILES[options.profile] if isinstance(options.profile, str) else options.profile
    device = resolve_device(options.device)
    model = load_model(options.model_path, device=device)
    weights_path, config_path = paths_for(options.model_path if options.model_path is not None else shipped_model_path())
    split = load_split("test", data_dir=options.data_dir)
    layers, conv_layers = resolve_layers(model, options.layers)
    ctx = st.Context(
        model=model, ascent_model=frozen_twin(model), split=split, profile=profile, seed=int(options.seed),
        layers=layers, conv_layers=conv_layers, model_path=options.model_path,
    )
    identity = {
        "version": st.STAGE_VERSION,
        "library": __version__,
        "weights_sha256": _sha256_file(weights_path),
        "config_sha256": _sha256_file(config_path),
        "data_sha256": hashlib.sha256(np.ascontiguousarray(split.images).tobytes()
                                      + np.ascontiguousarray(split.labels).tobytes()).hexdigest(),
        "seed": int(options.seed),
        "device": device.type,
    }
    out_dir = Path(options.out_dir)
    cache = StageCache(out_dir / ".stages")
    stages = plan_stages(ctx, [Path(d) for d in options.history_search])
    keys: dict[str, str] = {}
    timings: list[StageTiming] = []
    console = console or Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task("atlas", total=len(stages))
        inner = progress.add_task("", total=1, visible=False)
        for stage in stages:
            key = stage_key({**identity, "stage": stage.name, "params": stage.params,
                             "deps": {d: keys[d] for d in stage.deps}})
            keys[stage.name] = key
            t0 = time.perf_counter()
            c0 = time.process_time()
            stored = cache.load(stage.name, key)
            if stored is not None:
                output, original = stored
                cached = True
            else:
                if on_stage is not None:
                    on_stage(stage.name)
                progress.update(inner, description=f"  {stage.title}", completed=0, total=1, visible=True)

                def tick(done: int, total: int) -> None:
                    progress.update(inner, completed=done, total=max(total, 1))

                ctx.progress = tick
                with torch_threads(1 if stage.single_thread else threads):
                    try:
                        output = stage.run(ctx)
                    except Exception as exc:  # say which stage failed; keep the traceback (a bug to fix)
                        if hasattr(exc, "add_note"):
                            exc.add_note(f"while computing atlas stage {stage.name!r} ({stage.title}); "
                                         f"finished stages are kept in {cache.folder}")
                        raise
                ctx.progress = None
                original = time.perf_counter() - t0
                cache.save(stage.name, key, output, original)
                cached = False
            seconds = time.perf_counter() - t0
            ctx.outputs[stage.name] = output
            timings.append(StageTiming(stage.name, stage.title, seconds, cached, original, time.process_time() - c0))
            progress.update(inner, visible=False)
            progress.advance(overall)
            how = (f"cached (computed in {original:.1f} s)" if cached
                   else f"{seconds:.1f} s  (CPU {timings[-1].cpu_seconds:.1f} s)")
            progress.console.print(f"  {'↺' if cached else '✓'} {stage.name:<16} {how}")
    assemble_started = time.perf_counter()
    provenance = {
        "library_version": __version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "torch_threads": threads,
        "model": str(options.model_path) if options.model_path else f"shipped Model A ({weights_path.name})",
        "weights_file": str(weights_path),
        "weights_sha256": identity["weights_sha256"],
        "config_sha256": identity["config_sha256"],
        "data": f"{split.dataset} {split.split} split, {len(split.images)} images",
        "data_sha256": identity["data_sha256"],
        "seed": int(options.seed),
        "profile": profile.to_dict(),
        "layers": layers,
        "command": options.command or "convscope report (Python API)",
        "built": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    html_text = render_page(ctx, provenance, timings)
    index = atomic_write_text(out_dir / "index.html", html_text)
    total = time.perf_counter() - started
    assemble = time.perf_counter() - assemble_started
    summary = write_json(out_dir / "atlas.json", {
        "provenance": provenance,
        "timings": [{"stage": t.name, "seconds": round(t.seconds, 3), "cached": t.cached,
                     "original_seconds": round(t.original_seconds, 3),
                     "cpu_seconds": round(t.cpu_seconds, 3)} for t in timings]
                   + [{"stage": "html", "seconds": round(assemble, 3), "cached": False}],
        "total_seconds": round(total, 3),
        "stages": {name: out.meta for name, out in ctx.outputs.items()},
    })
    console.print(f"  ✓ {'html':<16} {assemble:.1f} s   ({index.stat().st_size / 1e6:.1f} MB)")
    return BuildResult(out_dir=out_dir, index=index, summary=summary, timings=timings, total_seconds=total)


def command_line() -> str:
    """The current command line, shell-quoted."""
    import shlex

    return " ".join(shlex.quote(a) for a in ["convscope", *sys.argv[1:]])
