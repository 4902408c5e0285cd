"""The atlas stages: typed, pure functions of their inputs.

Every stage is a module-level function ``stage(env, params, inputs, progress)``
returning a dataclass of this module (encodable by :mod:`convscope.report.codec`),
so any executor can run it and the cache can store it. Large stages come in chunks
(OIPs by groups of maps, top-k by dataset shards) with a merge stage, so the work
can be spread over workers. Stages compute through the application layer and the
engines, and draw their many small pictures (PNG bytes) for the page; they never
write files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from convscope.progress import Task
from convscope.report import images as img
from convscope.report.executor import Env

#: Bump when a stage's output changes meaning (invalidates stored results).
STAGE_VERSION = 11

#: Fixed colour scale of OIPs and class patterns (they are standardised: mean 0, std 1).
OIP_SCALE = (-3.0, 3.0)
OIP_CMAP = "viridis"
ACT_CMAP = "viridis"
ATTR_CMAP = "RdBu_r"


def _np(tensor: Any) -> np.ndarray:
    if isinstance(tensor, torch.Tensor):
        return tensor.detach().float().cpu().numpy()
    return np.asarray(tensor)


def _tick(progress: Task | None, done: float, total: float | None = None) -> None:
    if progress is not None:
        progress.update(done, total)


def _inner_progress(progress: Task | None):
    """A :class:`~convscope.progress.Progress` whose tasks move the stage's task (an
    application-layer function reports through it)."""
    from convscope.progress import Progress

    return Progress(sink=(lambda event: _tick(progress, event.completed, event.total)) if progress is not None else None)


# ----------------------------------------------------------------------------- model card
@dataclass
class ModelCard:
    """The model, its evaluation on the test split, and the confusion matrix."""

    name: str
    architecture: str
    summary: list[dict[str, Any]]
    keras_summary: bool
    total_params: int
    trainable_params: int
    training: dict[str, Any]
    config_test_accuracy: float | None
    preprocessing: str
    input_shape: list[int]
    dataset: str
    evaluation: dict[str, Any]
    predictions: np.ndarray
    probabilities: np.ndarray
    images: dict[str, bytes] = field(default_factory=dict)


def stage_model_card(env: Env, params: dict, inputs: dict, progress: Task | None) -> ModelCard:
    """Summary, parameter counts, recipe, test accuracy, per-class accuracy and the
    confusion matrix (the evaluation later stages reuse)."""
    from convscope.app.inside import evaluate
    from convscope.models.summary import summary_table
    from convscope.render.confusion import confusion_figure
    from convscope.spec import spec_of

    model = env.model
    spec = spec_of(model)
    # the channels-last twin: the same predictions (logits equal to float rounding), ≈ 1.5× faster on CPU
    shared = list(params.get("compare_layers") or [])
    logits = None
    if shared:  # one pass for the evaluation and the comparison (the same batches: the same logits, bit for bit)
        try:
            outputs = split_outputs(env, shared, progress)
        except (ValueError, RuntimeError):  # a layer the pass cannot capture: the comparison will say why
            outputs = None
        if outputs is not None:
            logits = outputs["logits"]
            env.shared[_outputs_key(shared)] = outputs
    evaluation = evaluate(env.ascent_model, env.split, progress=_inner_progress(progress), logits=logits).evaluation
    table = summary_table(model)
    config = getattr(model, "config", None)
    card = ModelCard(
        name=spec.name,
        architecture=table.title,
        summary=[{"name": r.name, "kind": r.kind, "output_shape": list(r.output_shape), "params": r.params} for r in table.rows],
        keras_summary=bool(table.keras),
        total_params=int(table.total),
        trainable_params=int(table.trainable),
        training=dict(getattr(config, "training", {}) or {}),
        config_test_accuracy=getattr(config, "test_accuracy", None),
        preprocessing=spec.preprocessing,
        input_shape=list(spec.input_shape),
        dataset=str(env.split.dataset),
        evaluation=evaluation.to_dict(),
        predictions=evaluation.predictions.astype(np.int32),
        probabilities=evaluation.probabilities.astype(np.float32),
    )
    if len(spec.class_names) <= 40:
        card.images["confusion"] = img.figure_png(confusion_figure(evaluation), dpi=100)
    return card


#: Images per forward pass of the whole-split passes (the evaluation's batch size:
#: equal batches give equal logits, bit for bit).
SPLIT_BATCH = 1000


def _outputs_key(layers: list[str]) -> str:
    return "split_outputs:" + ",".join(layers)


def split_outputs(env: Env, layers: list[str], progress: Task | None = None) -> dict[str, torch.Tensor]:
    """The outputs of ``layers`` and ``"logits"`` for the whole test split on the
    channels-last twin, ``{layer: (N, ...)}`` (batches of :data:`SPLIT_BATCH`)."""
    from convscope.inside import layer_activations

    return layer_activations(env.ascent_model, env.split.images, list(layers) + ["logits"], batch_size=SPLIT_BATCH,
                             progress=lambda done, total: _tick(progress, done, total))


def most_confused_pair(card: ModelCard, labels: np.ndarray) -> tuple[int, int]:
    """The class pair the model confuses most on its own test set
    (:func:`convscope.evaluation.confused_pairs`: the symmetric count, ties broken by
    the probability mass; 4 and 9 for the shipped model), as ``(a, b)`` with ``a < b``."""
    from convscope.evaluation import confused_pairs

    confusion = np.asarray(card.evaluation["confusion"])
    if confusion.shape[0] < 2:
        return 0, 0
    pair = confused_pairs(confusion, card.probabilities, labels)[0]
    return pair.a, pair.b


# ----------------------------------------------------------------------------- training
@dataclass
class TrainingCurves:
    source: str
    history: dict[str, Any]
    images: dict[str, bytes] = field(default_factory=dict)


def find_history(model: nn.Module, model_ref: str | None, search_dirs: list[Path]) -> tuple[dict | None, str]:
    """The training history stored with or near the model (front-end I/O: the build
    calls this and passes the history to :func:`stage_training`).

    Looks, in order, at: the config's ``training["history"]``; ``history.json``
    and ``<name>.history.json`` beside the model file; then ``history.json`` files
    in ``search_dirs/*/`` whose model files carry the same weights hash.
    """
    from convscope.models import shipped_model_path
    from convscope.models.loading import SHIPPED_MODELS

    config = getattr(model, "config", None)
    training = dict(getattr(config, "training", {}) or {})
    embedded = training.get("history")
    if isinstance(embedded, dict) and embedded.get("epochs"):
        return embedded, "model config"
    if isinstance(embedded, list) and embedded:
        return {"epochs": embedded, "lr_history": training.get("lr_history", [])}, "model config"
    if model_ref is None:
        stem = shipped_model_path()
    elif str(model_ref) in SHIPPED_MODELS:
        stem = shipped_model_path().with_name(SHIPPED_MODELS[str(model_ref)])
    else:
        path = Path(str(model_ref).split(":")[0])
        stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    candidates = [stem.parent / "history.json", stem.parent / f"{stem.name}.history.json"]
    sha = getattr(config, "weights_sha256", "")
    for folder in search_dirs:
        if folder.is_dir():
            candidates += sorted(folder.glob("*/history.json"))
    for path in candidates:
        try:
            history = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(history, dict) or not history.get("epochs"):
            continue
        if path.parent == stem.parent:
            return history, str(path)
        for model_file in history.get("model_files", []):
            if not str(model_file).endswith(".json"):
                continue
            for config_file in (Path(model_file), path.parent / Path(model_file).name):
                try:
                    recorded = json.loads(config_file.read_text(encoding="utf-8")).get("weights_sha256")
                except (OSError, ValueError, AttributeError):
                    continue
                if sha and recorded == sha:
                    return history, str(path)
    return None, "no training history was recorded with this model"


def stage_training(env: Env, params: dict, inputs: dict, progress: Task | None) -> TrainingCurves:
    """The training curves from the history found with the model (or a note that none was recorded)."""
    history, source = params.get("history"), params.get("source", "")
    out = TrainingCurves(source=source, history={})
    if history is None:
        return out
    from convscope.render.training import curves_options, training_curves_figure
    from convscope.training.loop import EpochRecord

    fields_ = set(EpochRecord.__dataclass_fields__)
    try:
        records = [EpochRecord(**{k: v for k, v in e.items() if k in fields_}) for e in history["epochs"]]
        out.images["curves"] = img.figure_png(
            training_curves_figure(records, history.get("lr_history", []), "", **curves_options(history)), dpi=90)
        out.history = {
            "epochs": len(records),
            "final_test_accuracy": history.get("test_accuracy", records[-1].test_accuracy),
            "final_train_accuracy": records[-1].train_accuracy,
            "train_seconds": history.get("train_seconds"),
        }
    except (TypeError, KeyError, ValueError, IndexError) as exc:
        out.source = f"a history was found ({source}) but could not be read: {exc}"
    return out


# ----------------------------------------------------------------------------- activations
@dataclass
class Activations:
    """Activation grids of every section layer for one image per class, and the
    first conv layer's raw filters."""

    samples: list[int]
    sample_classes: list[int]
    layers: dict[str, dict[str, Any]]
    filters_layer: str | None
    filters_shape: list[int]
    images: dict[str, bytes] = field(default_factory=dict)


def sample_indices(predictions: np.ndarray, labels: np.ndarray, classes: int = 10, limit: int = 10) -> tuple[list[int], list[int]]:
    """One test image per class (at most ``limit`` classes, spread over all): the
    first (in file order) the model gets right. Returns ``(indices, classes)``."""
    chosen_classes = list(range(classes)) if classes <= limit else [round(i * (classes - 1) / (limit - 1)) for i in range(limit)]
    picked = []
    for cls in chosen_classes:
        hits = np.flatnonzero((labels == cls) & (predictions == cls))
        if len(hits) == 0:
            hits = np.flatnonzero(labels == cls)
        picked.append(int(hits[0]) if len(hits) else 0)
    return picked, chosen_classes


def stage_activations(env: Env, params: dict, inputs: dict, progress: Task | None) -> Activations:
    """Raw filters of the first conv layer and activation grids of every section layer
    for one sample image per class (one shared colour scale per layer)."""
    from convscope.inside import conv_filters, layer_activations
    from convscope.render.inside import kernel_grid_figure

    card: ModelCard = inputs["model_card"]
    labels = np.asarray(env.split.labels, dtype=np.int64)
    samples, classes = sample_indices(card.predictions.astype(np.int64), labels, len(env.class_names))
    pictures = env.split.images[samples]
    layers = list(params["layers"])
    acts = layer_activations(env.model, pictures, layers)
    out = Activations(samples=samples, sample_classes=classes, layers={}, filters_layer=None, filters_shape=[])
    for i in range(len(samples)):
        out.images[f"input/{i}"] = img.picture_png(pictures[i])
    for name in layers:
        values = _np(acts[name])
        vmax = float(values.max()) or 1.0
        shape = list(values.shape[1:])
        per_row = 8 if values.ndim == 4 and (shape[1] > 5 or shape[0] < 64) else 16
        for i in range(len(samples)):
            out.images[f"grid/{name}/{i}"] = img.grid_png(values[i], ACT_CMAP, 0.0, vmax, per_row=per_row)
        active = (values > 0).reshape(len(samples), -1).mean(axis=1)
        out.layers[name] = {"shape": shape, "vmax": vmax, "per_row": per_row, "active_fraction": [float(a) for a in active]}
    first = params.get("first_conv")
    if first:
        try:
            bank = conv_filters(env.model, first)
            out.images["filters"] = img.figure_png(kernel_grid_figure(bank), dpi=90)
            out.filters_layer = first
            out.filters_shape = list(bank.weights.shape)
        except (ValueError, AttributeError, TypeError):
            pass
    return out


# ----------------------------------------------------------------------------- top-k
@dataclass
class TopkShard:
    """Top-k candidates of one dataset shard, per layer: ``indices`` (global), ``values``, ``rects``."""

    start: int
    stop: int
    k: int
    layers: list[str]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def stage_topk_shard(env: Env, params: dict, inputs: dict, progress: Task | None) -> TopkShard:
    """The top-k images of the shard ``[start, stop)`` per map/node of the layers (one pass)."""
    from convscope.inside import topk_layers

    start, stop, k = int(params["start"]), int(params["stop"]), int(params["k"])
    layers = list(params["layers"])
    result = topk_layers(env.ascent_model, env.split.images[start:stop], layers, k=k,
                         progress=lambda done, total: _tick(progress, done, total))
    shard = TopkShard(start=start, stop=stop, k=k, layers=layers)
    for name, top in result.items():
        shard.arrays[f"indices/{name}"] = (top.indices.numpy() + start).astype(np.int64)
        shard.arrays[f"values/{name}"] = top.values.numpy().astype(np.float32)
        if top.rectangles is not None:
            shard.arrays[f"rects/{name}"] = top.rectangles.numpy().astype(np.int32)
    return shard


@dataclass
class TopK:
    """For every map/node of the section layers, the dataset images that activate it
    most, with the strongest unit's receptive field, and their strips."""

    k: int
    num_images: int
    layers: dict[str, dict[str, Any]]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)

    def indices(self, layer: str) -> np.ndarray:
        return self.arrays[f"indices/{layer}"]

    def values(self, layer: str) -> np.ndarray:
        return self.arrays[f"values/{layer}"]

    def fires_on_data(self, layer: str) -> np.ndarray:
        """``(M,)`` bool: the map's strongest unit is > 0 on some image."""
        return self.values(layer)[:, 0] > 0


def merge_topk(shards: list[TopkShard]) -> dict[str, dict[str, np.ndarray]]:
    """The global top-k from shard candidates: highest value first, ties → lower index
    (the order one pass over all images gives)."""
    merged: dict[str, dict[str, np.ndarray]] = {}
    k = shards[0].k
    for name in shards[0].layers:
        values = np.concatenate([s.arrays[f"values/{name}"] for s in shards], axis=1)
        indices = np.concatenate([s.arrays[f"indices/{name}"] for s in shards], axis=1)
        has_rects = all(f"rects/{name}" in s.arrays for s in shards)
        rects = np.concatenate([s.arrays[f"rects/{name}"] for s in shards], axis=1) if has_rects else None
        order = np.lexsort((indices, -values.astype(np.float64)), axis=1)[:, :k]
        rows = np.arange(values.shape[0])[:, None]
        merged[name] = {"indices": indices[rows, order], "values": values[rows, order]}
        if rects is not None:
            merged[name]["rects"] = rects[rows, order]
    return merged


def stage_topk(env: Env, params: dict, inputs: dict, progress: Task | None) -> TopK:
    """Merge the shards and draw the strips."""
    shards = sorted((inputs[name] for name in params["shards"]), key=lambda s: s.start)
    merged = merge_topk(shards)
    k = shards[0].k
    out = TopK(k=k, num_images=int(shards[-1].stop - shards[0].start), layers={})
    images = env.split.images
    total = sum(m["indices"].shape[0] for m in merged.values())
    done = 0
    for name, m in merged.items():
        indices, rects = m["indices"], m.get("rects")
        out.arrays[f"indices/{name}"] = indices.astype(np.int32)
        out.arrays[f"values/{name}"] = m["values"].astype(np.float32)
        if rects is not None:
            out.arrays[f"rects/{name}"] = rects.astype(np.int16)
        for unit in range(indices.shape[0]):
            out.images[f"strip/{name}/{unit}"] = img.pictures_with_fields_png(
                [images[int(i)] for i in indices[unit]], None if rects is None else rects[unit])
            done += 1
            _tick(progress, done, total)
        field_ = None
        if rects is not None:
            t, l, b, r = (int(v) for v in rects[0, 0])
            field_ = [b - t, r - l]
        out.layers[name] = {"maps": int(indices.shape[0]), "receptive_field": field_}
    return out


# ----------------------------------------------------------------------------- OIPs
@dataclass
class OIPChunk:
    """The OIPs of some maps of one layer."""

    layer: str
    maps: list[int]
    status: list[str]
    source: list[str]
    snapshot_steps: list[int]
    member_steps: int
    params: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)


def oip_options(params: dict):
    """The :class:`~convscope.app.oip.OIPOptions` of the atlas profile's OIP parameters."""
    from convscope.app.oip import OIPOptions

    return OIPOptions(steps=params["steps"], epsilon=params["epsilon"], criterion=params["criterion"], early_stop=True,
                      candidates=params["candidates"], report_steps=params["report_steps"], seed=params["seed"],
                      dataset_starts=params["dataset"] > 0, preactivation_steps=params["preactivation_steps"])


def stage_oip_chunk(env: Env, params: dict, inputs: dict, progress: Task | None) -> OIPChunk:
    """OIPs of ``params["maps"]`` of ``params["layer"]`` (precursor starts, the reference
    ascent of all of them in one batch, early stop) through :func:`convscope.app.oip.run_oips`."""
    from convscope.app.oip import run_oips
    from convscope.inference import to_input
    from convscope.progress import Progress

    layer, maps = params["layer"], list(params["maps"])
    dataset = to_input(env.ascent_model, env.split.images[: params["dataset"]]).cpu() if params["dataset"] else None
    inner = Progress(sink=(lambda event: _tick(progress, event.completed, event.total)) if progress is not None else None)
    run = run_oips(env.ascent_model, [(layer, maps)], oip_options(params), dataset_images=dataset, progress=inner).layers[0]
    images = _np(run.images[:, 0])  # (M, C, H, W)
    snaps = _np(run.snapshots) if run.snapshots is not None else None  # (S, M, C, H, W)
    losses = _np(run.history)
    picks = np.unique(np.linspace(0, losses.shape[0] - 1, 61).round().astype(int))
    out = OIPChunk(layer=layer, maps=maps, status=list(run.status), source=list(run.starts),
                   snapshot_steps=list(run.snapshot_steps), member_steps=int(run.member_steps),
                   params=dict(run.params))
    out.arrays = {
        "oips": images.astype(np.float16),
        "final_loss": _np(run.final_loss[:, 0]).astype(np.float64),
        "initial_loss": _np(run.initial_loss[:, 0]).astype(np.float64),
        "converged_step": np.asarray(run.converged_step, dtype=np.int32),
        "loss_curve": losses[picks].T.astype(np.float32),
    }
    lo, hi = OIP_SCALE
    for i, m in enumerate(maps):
        out.images[f"oip/{m}"] = img.input_png(images[i], OIP_CMAP, lo, hi)
        if snaps is not None:
            out.images[f"evo/{m}"] = img.input_strip_png(list(snaps[:, i]), OIP_CMAP, lo, hi)
    return out


@dataclass
class LayerOIPs:
    """Every OIP of one layer (the chunks merged), with each map's status."""

    layer: str
    maps: int
    status: list[str]
    source: list[str]
    dead: list[bool]
    fires_on_data: list[bool]
    snapshot_steps: list[int]
    alive: int
    params: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)

    def state(self, m: int) -> str:
        """``"responds"``, ``"converged"``, ``"silent"`` (0 here, fires on data) or ``"dead"`` (never fires)."""
        if not self.dead[m]:
            return "converged" if self.status[m] == "converged" else "responds"
        return "silent" if self.fires_on_data[m] else "dead"


def stage_oip(env: Env, params: dict, inputs: dict, progress: Task | None) -> LayerOIPs:
    """Merge a layer's OIP chunks; mark maps that fire on data although their OIP stayed at 0."""
    chunks = sorted((inputs[name] for name in params["chunks"]), key=lambda c: c.maps[0])
    layer = chunks[0].layer
    arrays = {key: np.concatenate([c.arrays[key] for c in chunks]) for key in chunks[0].arrays}
    status = [s for c in chunks for s in c.status]
    final = arrays["final_loss"]
    dead = [bool(s == "dead" or f <= 0) for s, f in zip(status, final)]
    topk: TopK | None = inputs.get("topk")
    fires = list(topk.fires_on_data(layer)) if topk is not None and f"values/{layer}" in topk.arrays else [False] * len(dead)
    images: dict[str, bytes] = {}
    for c in chunks:
        images.update(c.images)
    params_ = dict(chunks[0].params)
    params_["member_steps"] = sum(c.member_steps for c in chunks)
    return LayerOIPs(
        layer=layer, maps=len(status), status=status, source=[s for c in chunks for s in c.source], dead=dead,
        fires_on_data=[bool(f) for f in fires], snapshot_steps=chunks[0].snapshot_steps,
        alive=int(len(dead) - sum(dead)), params=params_, arrays=arrays, images=images,
    )


# ----------------------------------------------------------------------------- deconvnet
@dataclass
class Deconvnets:
    """Deconvnet (Zeiler & Fergus) of each conv map's strongest test image."""

    layers: dict[str, list[int]]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)


def _gray_attribution(values: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` attribution → ``(H, W)`` (summed over colour channels)."""
    values = np.asarray(values)
    return values.sum(axis=0) if values.ndim == 3 else values


def stage_deconv_chunk(env: Env, params: dict, inputs: dict, progress: Task | None) -> Deconvnets:
    """Deconvnets of ``params["maps"]`` of ``params["layer"]``: each map's activations in
    its strongest test image (from the merged top-k) projected back to pixels, one
    map at a time (so any grouping of maps gives the same pictures)."""
    from convscope.explain import Deconvnet
    from convscope.inference import to_input

    topk: TopK = inputs["topk"]
    name, chosen = params["layer"], [int(m) for m in params["maps"]]
    method = Deconvnet(env.model)
    out = Deconvnets(layers={})
    strongest = topk.indices(name)[chosen, 0].astype(np.int64)
    x = to_input(env.model, env.split.images[strongest])
    maps = []
    for i, (m, index) in enumerate(zip(chosen, strongest)):
        values = _gray_attribution(_np(method.attribute(x[i : i + 1], target=f"{name}:{m}"))[0])
        maps.append(values)
        limit = float(np.percentile(np.abs(values), 99)) or None
        out.images[f"deconv/{name}/{m}"] = img.signed_png(values, limit, cmap=ATTR_CMAP)
        out.images[f"input/{name}/{m}"] = img.picture_png(env.split.images[int(index)])
        _tick(progress, i + 1, len(chosen))
    out.arrays[f"deconv/{name}"] = np.stack(maps).astype(np.float32)
    out.layers[name] = [int(i) for i in strongest]
    return out


def stage_deconv(env: Env, params: dict, inputs: dict, progress: Task | None) -> Deconvnets:
    """Merge the deconvnet chunks (in plan order: layer by layer, maps ascending)."""
    out = Deconvnets(layers={})
    parts: dict[str, list[np.ndarray]] = {}
    for name in params["chunks"]:
        chunk: Deconvnets = inputs[name]
        for layer, strongest in chunk.layers.items():
            out.layers.setdefault(layer, []).extend(strongest)
            parts.setdefault(layer, []).append(chunk.arrays[f"deconv/{layer}"])
        out.images.update(chunk.images)
    out.arrays = {f"deconv/{layer}": np.concatenate(arrays) for layer, arrays in parts.items()}
    return out


# ----------------------------------------------------------------------------- classes
@dataclass
class ClassPatterns:
    """Each class logit maximised (up to ``max_classes`` classes)."""

    classes: list[int]
    names: list[str]
    p_class: list[float]
    predicted: list[int]
    final_logit: list[float]
    params: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)


def stage_classes(env: Env, params: dict, inputs: dict, progress: Task | None) -> ClassPatterns:
    from convscope.app.oip import class_patterns
    from convscope.device import model_device
    from convscope.progress import Progress
    from convscope.spec import model_output

    count = len(env.class_names)
    chosen = list(range(min(count, int(params["max_classes"]))))
    inner = Progress(sink=(lambda event: _tick(progress, event.completed, event.total)) if progress is not None else None)
    result = class_patterns(env.ascent_model, chosen, steps=params["steps"], epsilon=params["epsilon"], passes=2,
                            seed=params["seed"], progress=inner)
    with torch.no_grad():
        logits = model_output(env.model(result.images.to(model_device(env.model))))
        probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
    pictures = _np(result.images)  # (n, C, H, W)
    out = ClassPatterns(
        classes=chosen, names=list(result.names), p_class=[float(probs[i, c]) for i, c in enumerate(chosen)],
        predicted=[int(probs[i].argmax()) for i in range(len(chosen))], final_logit=[float(v) for v in _np(result.logits)],
        params=dict(result.params),
    )
    lo, hi = OIP_SCALE
    for i in range(len(chosen)):
        out.images[f"class/{i}"] = img.input_png(pictures[i], OIP_CMAP, lo, hi)
        if pictures.shape[1] == 1:
            out.images[f"class_gray/{i}"] = img.input_png(pictures[i], "gray", lo, hi)
    out.arrays = {"images": pictures.astype(np.float16), "probabilities": probs.astype(np.float32)}
    return out


# ----------------------------------------------------------------------------- class comparison
@dataclass
class Comparison:
    """The model's most confused class pair: clear and ambiguous examples, their
    patterns with marks, the best-separating positions, and dense node patterns."""

    class_a: int
    class_b: int
    compared_layers: list[str]
    details: dict[str, Any]
    dense: dict[str, dict[str, Any]]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)


def dense_patterns(out: Comparison, name: str, means: np.ndarray, classes: int) -> None:
    """Node patterns of one dense layer from its class means ``(classes, F)``."""
    means = np.nan_to_num(means.astype(np.float64))
    vmax = float(means.max()) or 1.0
    out.images[f"dense/{name}"] = img.map_png(means, ACT_CMAP, 0.0, vmax)
    specific = []
    for c in range(classes):
        others = np.delete(means, c, axis=0).mean(axis=0) if classes > 1 else np.zeros_like(means[0])
        order = np.argsort(-(means[c] - others), kind="stable")[:5]
        specific.append([int(o) for o in order])
    out.arrays[f"dense_means/{name}"] = means.astype(np.float32)
    out.dense[name] = {"vmax": vmax, "nodes": int(means.shape[1]), "top_nodes": specific,
                       "silent_nodes": int((means.max(axis=0) <= 0).sum())}


def stage_compare(env: Env, params: dict, inputs: dict, progress: Task | None) -> Comparison:
    """The model's most confused pair compared inside the network
    (:func:`convscope.app.inside.compare`): examples, marked patterns, separation,
    and the dense layers' class-mean node patterns."""
    from convscope.app.inside import compare

    card: ModelCard = inputs["model_card"]
    class_a, class_b = most_confused_pair(card, np.asarray(env.split.labels, dtype=np.int64))
    layers = list(params["layers"])
    names = env.class_names
    # the model card's pass kept these outputs when it ran in this process (else compare runs the same pass)
    outputs = env.shared.pop(_outputs_key(layers), None)
    result = compare(env.ascent_model, env.split, class_a, class_b, layers=layers, n_examples=params["examples"],
                     batch_size=SPLIT_BATCH, progress=_inner_progress(progress), outputs=outputs)
    comparison = result.comparison
    out = Comparison(class_a=class_a, class_b=class_b, compared_layers=layers, details=comparison.to_dict(top=10), dense={})
    rows = result.ambiguous_figure()
    if rows is None and comparison.examples.clear_a and comparison.examples.clear_b:
        rows = result.patterns_figure()
    if rows is not None:  # an untrained model may classify no image of the two classes correctly
        out.images["rows"] = img.figure_png(rows, dpi=90)
    out.images["separation"] = img.figure_png(result.separation_figure(), dpi=80)
    for index in comparison.images:
        out.images[f"input/{index}"] = img.picture_png(comparison.images[index])
    for name in params.get("dense", []):
        if name in comparison.layers:
            dense_patterns(out, name, _np(comparison.layers[name].separation.class_means), len(names))
    return out


# ----------------------------------------------------------------------------- mistakes
@dataclass
class Mistakes:
    total_errors: int
    mistakes: list[dict[str, Any]]
    method: str
    images: dict[str, bytes] = field(default_factory=dict)


def stage_mistakes(env: Env, params: dict, inputs: dict, progress: Task | None) -> Mistakes:
    """The most confident mistakes, each explained (integrated gradients from an empty
    image) for its true and its predicted class on one shared scale."""
    from types import SimpleNamespace

    from convscope.explain import IntegratedGradients
    from convscope.inference import to_input
    from convscope.inside import select_mistakes

    card: ModelCard = inputs["model_card"]
    predictions = card.predictions.astype(np.int64)
    labels = np.asarray(env.split.labels, dtype=np.int64)
    view = SimpleNamespace(predictions=predictions, probabilities=card.probabilities, labels=labels,
                           misclassified=np.flatnonzero(predictions != labels).astype(np.int64))
    mistakes = select_mistakes(view, limit=params["n"])
    steps = params["ig_steps"]
    out = Mistakes(total_errors=int(mistakes.total_errors), mistakes=[],
                   method=f"integrated gradients, {steps} steps, baseline: empty image")
    if len(mistakes.indices) == 0:
        return out
    x = to_input(env.model, env.split.images[mistakes.indices])
    method = IntegratedGradients(env.model)
    for_true = _np(method.attribute(x, [int(t) for t in mistakes.labels], baseline="min", steps=steps))
    _tick(progress, 1, 2)
    for_pred = _np(method.attribute(x, [int(p) for p in mistakes.predictions], baseline="min", steps=steps))
    _tick(progress, 2, 2)
    for j, index in enumerate(mistakes.indices):
        true_map, pred_map = _gray_attribution(for_true[j]), _gray_attribution(for_pred[j])
        limit = float(max(np.abs(true_map).max(), np.abs(pred_map).max())) or 1.0
        out.images[f"input/{j}"] = img.picture_png(env.split.images[index])
        out.images[f"true/{j}"] = img.signed_png(true_map, limit, ATTR_CMAP)
        out.images[f"pred/{j}"] = img.signed_png(pred_map, limit, ATTR_CMAP)
        probs = mistakes.probabilities[j]
        top3 = np.argsort(-probs, kind="stable")[:3]
        out.mistakes.append({
            "index": int(index), "true": int(mistakes.labels[j]), "predicted": int(mistakes.predictions[j]),
            "p_true": float(probs[mistakes.labels[j]]), "p_predicted": float(probs[mistakes.predictions[j]]),
            "top3": [[int(c), float(probs[c])] for c in top3], "scale": limit,
        })
    return out


# ----------------------------------------------------------------------------- dream
@dataclass
class Dream:
    photo: str
    size: list[int]
    carve: dict[str, Any]
    dream: dict[str, Any]
    images: dict[str, bytes] = field(default_factory=dict)


def carve_map_for(model: nn.Module, layer: str, photo: np.ndarray) -> int:
    """The map of ``layer`` that responds most to the photo (downscaled to the
    model's input, preprocessed as the model expects) — the map to carve."""
    from PIL import Image

    from convscope.inference import to_input
    from convscope.probe import capture
    from convscope.spec import spec_of

    spec = spec_of(model)
    picture = Image.fromarray(photo).convert("L" if spec.channels == 1 else "RGB")
    small = np.asarray(picture.resize((spec.width, spec.height), Image.Resampling.BICUBIC), dtype=np.uint8)
    with torch.no_grad():
        values = capture(model, to_input(model, small[None]), [layer], detach=True)[layer]
    means = values[0].reshape(values.shape[1], -1).mean(dim=1)
    return int(means.argmax())


def stage_dream(env: Env, params: dict, inputs: dict, progress: Task | None) -> Dream:
    """The default photo: the reference's single-map pattern carving (of the map that
    responds most to the photo) and an octave DeepDream of the deepest conv layer,
    through :mod:`convscope.app.dream` (gray models dream on luminance, RGB models on
    all three channels)."""
    from PIL import Image

    from convscope.app.dream import carve_photo, dream_photo
    from convscope.photos import DEFAULT_PHOTO, default_photo
    from convscope.spec import spec_of

    spec = spec_of(env.model)
    photo = default_photo()
    height, width = photo.shape[:2]
    new_size = (params["width"], max(spec.height, round(height * params["width"] / width)))
    photo = np.array(Image.fromarray(photo).resize(new_size, Image.Resampling.BICUBIC))
    deepest = params["layer"]
    carve_map = carve_map_for(env.model, deepest, photo)
    inner = _inner_progress(progress)
    carved = carve_photo(env.model, photo, objective=f"{deepest}:{carve_map}", rounds=params["carve_rounds"],
                         steps=params["carve_epochs"], source=DEFAULT_PHOTO, progress=inner)
    dreamed = dream_photo(env.model, photo, objective=deepest, tiling="fullconv", octaves=params["octaves"],
                          steps=params["steps"], seed=params["seed"], source=DEFAULT_PHOTO, progress=inner)
    engine = carved.engine
    out = Dream(photo=DEFAULT_PHOTO, size=[int(photo.shape[1]), int(photo.shape[0])],
                carve={"map": f"{deepest}:{carve_map}", "chosen_by": "the strongest mean activation on the photo",
                       **engine.to_dict()},
                dream={"objective": deepest, **dreamed.engine.to_dict(), "clipped_fraction": dreamed.clipped_fraction})
    out.dream.pop("values", None)
    if isinstance(out.dream.get("memory"), dict):  # free memory of the machine that ran it: not a result (runs differ)
        out.dream["memory"].pop("budget_bytes", None)
    out.carve.pop("round_losses", None)
    out.images["photo"] = img.jpeg_bytes(photo)
    out.images["dream"] = img.jpeg_bytes(np.asarray(dreamed.image, dtype=np.uint8))
    pattern = _np(engine.pattern)
    pattern = np.moveaxis(pattern, -1, 0) if pattern.ndim == 3 else pattern  # (h, w, 3) → (3, h, w)
    out.images["carve_pattern"] = img.input_png(pattern, OIP_CMAP, *OIP_SCALE)
    out.images["carve_final"] = img.jpeg_bytes(np.asarray(carved.image, dtype=np.uint8))
    return out


__all__ = [
    "Activations", "ClassPatterns", "Comparison", "Deconvnets", "Dream", "LayerOIPs", "Mistakes", "ModelCard",
    "OIPChunk", "STAGE_VERSION", "TopK", "TopkShard", "TrainingCurves", "carve_map_for", "find_history", "merge_topk",
    "most_confused_pair", "stage_deconv", "stage_deconv_chunk",
]
