"""The atlas plan: which typed stages a model gets, their parameters, chunks and
dependencies — a pure function of the model, its layers and the profile.

Chunks: the OIPs of a layer are computed in groups of ``profile.oip_chunk`` maps
(``oip:Conv2D_3@0-127``) and merged (``oip:Conv2D_3``); top-k runs over dataset
shards of ``profile.topk_shard`` images (``topk@0-9999``) merged into ``topk``;
the deconvnets of the strongest examples come in the same map groups per layer
(``deconv:Conv2D_3@0-127``) merged into ``deconv``. Merge stages (``merge=True``)
only combine their chunks' results, so an executor that spreads the chunks runs
the merges where the results arrive (the driver).
Every unit's random start depends on (seed, layer, unit) only, so the chunking
never changes a map's start, and a plan is the same on every executor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from convscope.report.profile import Profile

MODULE = "convscope.report.stages"


@dataclass
class StageSpec:
    """One planned stage.

    Attributes:
        name: unique name (``"oip:Conv2D_3@0-63"``).
        title: what it does.
        function: ``"module:function"`` (a stage function of :mod:`convscope.report.stages`).
        params: its parameters (JSON values; part of its cache key).
        deps: names of the stages whose results it reads.
        single_thread: many tiny operations (one PyTorch thread is faster).
        group: the page section it belongs to (for progress displays).
        cost: a rough relative cost (for scheduling).
        merge: only combines the results of its chunks (cheap; best run where they arrive).
    """

    name: str
    title: str
    function: str
    params: dict[str, Any]
    deps: tuple[str, ...] = ()
    single_thread: bool = False
    group: str = ""
    cost: float = 1.0
    merge: bool = False


@dataclass
class AtlasPlan:
    """The stages in a valid run order, and what the page needs to know."""

    stages: list[StageSpec]
    layers: list[str]
    conv_layers: list[str]
    dense_layers: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    def by_name(self) -> dict[str, StageSpec]:
        return {s.name: s for s in self.stages}


def _chunks(count: int, size: int) -> list[list[int]]:
    size = max(1, int(size))
    return [list(range(start, min(count, start + size))) for start in range(0, count, size)]


def plan_atlas(
    model: nn.Module,
    layers: list[str],
    profile: Profile,
    *,
    seed: int,
    dataset_size: int,
    history: dict | None,
    history_source: str,
) -> AtlasPlan:
    """The stages of one atlas build.

    Args:
        model: the network (its spec and layer shapes decide the sections).
        layers: the section layers (validated, forward order).
        profile: work parameters (chunk sizes included).
        seed: the base seed.
        dataset_size: number of test images.
        history: the training history found with the model (or ``None``).
        history_source: where it was found (or why not).
    """
    from convscope.address import layer_output_shapes
    from convscope.layers import conv_layers, layer_kinds

    shapes = layer_output_shapes(model)
    kinds = layer_kinds(model)
    oip_capable = set(conv_layers(model))
    convs = [n for n in layers if n in oip_capable or (kinds.get(n) == "conv" and len(shapes.get(n, ())) == 3)]
    dense = [n for n in layers if kinds.get(n) == "dense"]
    all_convs = conv_layers(model)
    p = profile
    compared = ([all_convs[-1]] if all_convs else []) + dense
    compared = compared or layers[:1]
    stages: list[StageSpec] = [
        # costs: rough seconds on one CPU core for an MNIST-size model (only their order matters)
        # the model card's pass over the split also keeps the compared layers' outputs for the comparison
        StageSpec("model_card", "model card: evaluation, confusion", f"{MODULE}:stage_model_card",
                  {"compare_layers": compared}, group="model", cost=dataset_size / 1200),
        StageSpec("training", "training curves", f"{MODULE}:stage_training",
                  {"history": history, "source": history_source}, group="model"),
        StageSpec("activations", "filters, activation grids", f"{MODULE}:stage_activations",
                  {"layers": layers, "first_conv": all_convs[0] if all_convs else None}, ("model_card",), group="layers"),
    ]
    shards = []
    shard = max(1, int(p.topk_shard))
    for start in range(0, dataset_size, shard):
        stop = min(dataset_size, start + shard)
        name = f"topk@{start}-{stop - 1}"
        shards.append(name)
        stages.append(StageSpec(name, f"top-k examples, images {start}–{stop - 1}", f"{MODULE}:stage_topk_shard",
                                {"layers": layers, "k": p.topk, "start": start, "stop": stop}, group="layers",
                                cost=(stop - start) / 2300))
    stages.append(StageSpec("topk", "top-k strips", f"{MODULE}:stage_topk", {"shards": shards}, tuple(shards), group="layers",
                            merge=True))
    oip_params = {"steps": p.oip_steps, "epsilon": p.oip_epsilon, "criterion": p.oip_criterion,
                  "report_steps": p.oip_report_steps, "candidates": p.precursor_candidates,
                  "dataset": min(p.precursor_dataset, dataset_size),
                  "preactivation_steps": p.precursor_preactivation_steps, "seed": seed}
    for layer in convs:
        count = int(shapes[layer][0])
        chunk_names = []
        for maps in _chunks(count, p.oip_chunk):
            name = f"oip:{layer}@{maps[0]}-{maps[-1]}"
            chunk_names.append(name)
            stages.append(StageSpec(name, f"OIPs of {layer} maps {maps[0]}–{maps[-1]}", f"{MODULE}:stage_oip_chunk",
                                    {"layer": layer, "maps": maps, **oip_params}, group="oips", cost=len(maps) / 13))
        stages.append(StageSpec(f"oip:{layer}", f"OIPs of {layer}", f"{MODULE}:stage_oip", {"chunks": chunk_names},
                                (*chunk_names, "topk"), group="oips", merge=True))
    deconv_chunks = []
    for layer in convs:
        for maps in _chunks(int(shapes[layer][0]), p.oip_chunk):
            name = f"deconv:{layer}@{maps[0]}-{maps[-1]}"
            deconv_chunks.append(name)
            stages.append(StageSpec(name, f"deconvnets of {layer} maps {maps[0]}–{maps[-1]}",
                                    f"{MODULE}:stage_deconv_chunk", {"layer": layer, "maps": maps}, ("topk",),
                                    single_thread=True, group="maps", cost=len(maps) / 200))
    stages.append(StageSpec("deconv", "deconvnets of the strongest examples", f"{MODULE}:stage_deconv",
                            {"chunks": deconv_chunks}, tuple(deconv_chunks), group="maps", merge=True))
    stages.append(StageSpec("classes", "class visualisations", f"{MODULE}:stage_classes",
                            {"steps": p.class_steps, "epsilon": p.class_epsilon, "seed": seed,
                             "max_classes": p.max_classes}, group="classes", cost=4.0))
    stages.append(StageSpec("compare", "the most confused pair, dense node patterns", f"{MODULE}:stage_compare",
                            {"layers": compared, "dense": dense, "examples": p.compare_examples},
                            ("model_card",), group="compare", cost=6.0))
    stages.append(StageSpec("mistakes", "mistakes explained", f"{MODULE}:stage_mistakes",
                            {"n": p.mistakes, "ig_steps": p.ig_steps}, ("model_card",), group="mistakes"))
    if all_convs:
        stages.append(StageSpec("dream", "DeepDream of the default photo", f"{MODULE}:stage_dream",
                                {"width": p.dream_width, "octaves": p.dream_octaves, "steps": p.dream_steps,
                                 "carve_rounds": p.carve_rounds, "carve_epochs": p.carve_epochs,
                                 "layer": all_convs[-1], "seed": seed}, group="dream", cost=4.0))
    return AtlasPlan(stages=stages, layers=layers, conv_layers=convs, dense_layers=dense)


__all__ = ["AtlasPlan", "StageSpec", "plan_atlas"]
