"""The atlas stages: each calls the engines, draws its pictures and returns a
:class:`~convscope.report.cache.StageOutput` (cached by the builder).

Stages never write files themselves (the builder stores their output); they run
the engines of :mod:`convscope.inside`, :mod:`convscope.optvis`,
:mod:`convscope.explain` and :mod:`convscope.dream`, and the renderers of
:mod:`convscope.render` for the few large figures.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from convscope.device import model_device
from convscope.report import images as img
from convscope.report.cache import StageOutput
from convscope.report.profile import Profile

#: Bump when a stage's output changes meaning (invalidates stored results).
STAGE_VERSION = 10

#: Fixed colour scale of OIPs (they are standardised: mean 0, std 1).
OIP_SCALE = (-3.0, 3.0)
OIP_CMAP = "viridis"
ACT_CMAP = "viridis"
ATTR_CMAP = "RdBu_r"

Progress = Callable[[int, int], None]


@dataclass
class Context:
    """Everything a stage may read.

    Attributes:
        model: the network (eval mode).
        ascent_model: a frozen channels-last copy for gradient ascent (faster on CPU).
        split: the test split.
        profile: work parameters.
        seed: base seed of every random choice.
        layers: layers that get a section.
        conv_layers: the section layers holding a convolution (OIPs, deconvnets).
        model_path: the model file stem (``None``: shipped model).
        outputs: outputs of the stages finished so far.
        progress: ``progress(done, total)`` inside the running stage.
    """

    model: nn.Module
    ascent_model: nn.Module
    split: Any
    profile: Profile
    seed: int
    layers: list[str]
    conv_layers: list[str]
    model_path: Path | None
    outputs: dict[str, StageOutput] = field(default_factory=dict)
    progress: Progress | None = None

    @property
    def class_names(self) -> list[str]:
        return [str(n) for n in self.split.class_names]

    def generator(self, salt: str) -> torch.Generator:
        """A generator seeded from the base seed and ``salt`` (independent per stage)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(salt.encode()))

    def tick(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)


def _np(tensor: Any) -> np.ndarray:
    if isinstance(tensor, torch.Tensor):
        return tensor.detach().float().cpu().numpy()
    return np.asarray(tensor)


def layer_kinds(model: nn.Module) -> dict[str, str]:
    """``{layer: "conv" | "pool" | "dense" | "other"}`` for the top-level layers."""
    kinds = {}
    for name, module in model.named_children():
        parts = list(module.modules())
        if any(isinstance(m, nn.Conv2d) for m in parts):
            kinds[name] = "conv"
        elif any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in parts):
            kinds[name] = "pool"
        elif any(isinstance(m, nn.Linear) for m in parts):
            kinds[name] = "dense"
        else:
            kinds[name] = "other"
    return kinds


def default_layers(model: nn.Module) -> list[str]:
    """Conv layers and hidden dense layers (every dense layer but the output)."""
    kinds = layer_kinds(model)
    dense = [n for n, k in kinds.items() if k == "dense"]
    return [n for n, k in kinds.items() if k == "conv"] + dense[:-1]


# ----------------------------------------------------------------------------- model card
def find_history(model: nn.Module, model_path: Path | None, search_dirs: list[Path]) -> tuple[dict | None, str]:
    """The training history stored with or near the model.

    Looks, in order, at: the config's ``training["history"]``; ``history.json``
    and ``<name>.history.json`` beside the model file; then ``history.json`` files
    in ``search_dirs/*/`` whose model files carry the same weights hash.

    Returns:
        ``(history dict with "epochs" and "lr_history", where it came from)`` or
        ``(None, reason)``.
    """
    from convscope.models import shipped_model_path

    config = getattr(model, "config", None)
    training = dict(getattr(config, "training", {}) or {})
    embedded = training.get("history")
    if isinstance(embedded, dict) and embedded.get("epochs"):
        return embedded, "model config"
    if isinstance(embedded, list) and embedded:
        return {"epochs": embedded, "lr_history": training.get("lr_history", [])}, "model config"
    stem = Path(model_path).with_suffix("") if model_path is not None else shipped_model_path()
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
        # elsewhere: only a history whose model file has our weights
        for model_file in history.get("model_files", []):
            if not str(model_file).endswith(".json"):
                continue
            # recorded relative to where training ran; also look beside the history file
            for config_file in (Path(model_file), path.parent / Path(model_file).name):
                try:
                    recorded = json.loads(config_file.read_text(encoding="utf-8")).get("weights_sha256")
                except (OSError, ValueError, AttributeError):
                    continue
                if sha and recorded == sha:
                    return history, str(path)
    return None, "no training history was recorded with this model"


def stage_model_card(ctx: Context) -> StageOutput:
    """Summary, parameter counts, recipe, test accuracy, per-class accuracy and the
    confusion matrix (the evaluation every later stage reuses)."""
    from convscope.evaluation import evaluate_model
    from convscope.models import summary_rows
    from convscope.render.confusion import confusion_figure

    model = ctx.model
    evaluation = evaluate_model(model, ctx.split, progress=ctx.tick)
    out = StageOutput()
    rows = summary_rows(model)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    config = getattr(model, "config", None)
    out.meta = {
        "architecture": getattr(model, "architecture", type(model).__name__),
        "summary": [{"name": r.name, "kind": r.kind, "output_shape": list(r.output_shape), "params": r.params} for r in rows],
        "total_params": total,
        "trainable_params": trainable,
        "training": getattr(config, "training", {}) or {},
        "config_test_accuracy": getattr(config, "test_accuracy", None),
        "preprocessing": getattr(config, "preprocessing", None),
        "evaluation": evaluation.to_dict(),
    }
    out.arrays = {
        "predictions": evaluation.predictions.astype(np.int16),
        "probabilities": evaluation.probabilities.astype(np.float32),
    }
    out.images["confusion"] = img.figure_png(confusion_figure(evaluation), dpi=100)
    return out


def stage_training(ctx: Context, history: dict | None, source: str) -> StageOutput:
    """The training curves from the history found with the model (or a note that
    none was recorded)."""
    out = StageOutput(meta={"history_source": source})
    if history is None:
        return out
    from convscope.render.training import curves_options, training_curves_figure
    from convscope.training.loop import EpochRecord

    fields = set(EpochRecord.__dataclass_fields__)
    try:
        records = [EpochRecord(**{k: v for k, v in e.items() if k in fields}) for e in history["epochs"]]
        out.images["curves"] = img.figure_png(
            training_curves_figure(records, history.get("lr_history", []), "", **curves_options(history)), dpi=90
        )
        out.meta["history"] = {
            "epochs": len(records),
            "final_test_accuracy": history.get("test_accuracy", records[-1].test_accuracy),
            "final_train_accuracy": records[-1].train_accuracy,
            "train_seconds": history.get("train_seconds"),
        }
    except (TypeError, KeyError, ValueError, IndexError) as exc:
        out.meta["history_source"] = f"a history was found ({source}) but could not be read: {exc}"
    return out


def _evaluation_view(ctx: Context) -> SimpleNamespace:
    card = ctx.outputs["model_card"]
    predictions = card.arrays["predictions"].astype(np.int64)
    labels = np.asarray(ctx.split.labels, dtype=np.int64)
    return SimpleNamespace(
        predictions=predictions,
        probabilities=card.arrays["probabilities"],
        labels=labels,
        misclassified=np.flatnonzero(predictions != labels).astype(np.int64),
    )


# ----------------------------------------------------------------------------- activations
def sample_indices(predictions: np.ndarray, labels: np.ndarray, classes: int = 10) -> list[int]:
    """One test image per class: the first (in file order) that the model gets right."""
    picked = []
    for cls in range(classes):
        hits = np.flatnonzero((labels == cls) & (predictions == cls))
        if len(hits) == 0:
            hits = np.flatnonzero(labels == cls)
        picked.append(int(hits[0]) if len(hits) else 0)
    return picked


def stage_activations(ctx: Context) -> StageOutput:
    """Raw filters of the first conv layer and activation grids of every section
    layer for one sample digit per class (one shared colour scale per layer).
    (The dense layers' class-mean patterns come from the comparison stage, which
    already passes the whole test split through them.)"""
    from convscope.inside import conv_filters, layer_activations
    from convscope.render.inside import kernel_grid_figure

    view = _evaluation_view(ctx)
    samples = sample_indices(view.predictions, view.labels, len(ctx.class_names))
    images = ctx.split.images[samples]
    acts = layer_activations(ctx.model, images, ctx.layers)
    out = StageOutput(meta={"samples": samples, "layers": {}})
    for i, index in enumerate(samples):
        out.images[f"digit/{i}"] = img.digit_png(images[i])
    for name in ctx.layers:
        values = _np(acts[name])  # (10, C, H, W) or (10, F)
        vmax = float(values.max()) or 1.0
        shape = list(values.shape[1:])
        # 3×3 maps read better in wide rows; larger maps in rows of 8
        per_row = 8 if values.ndim == 4 and (shape[1] > 5 or shape[0] < 64) else 16
        for i in range(len(samples)):
            out.images[f"grid/{name}/{i}"] = img.grid_png(values[i], ACT_CMAP, 0.0, vmax, per_row=per_row)
        active = (values > 0).reshape(len(samples), -1).mean(axis=1)
        out.meta["layers"][name] = {"shape": shape, "vmax": vmax, "per_row": per_row,
                                    "active_fraction": [float(a) for a in active]}
    # raw filters of the model's first conv layer (deeper kernels are 3×3×C stacks nobody can read)
    first = next((n for n, k in layer_kinds(ctx.model).items() if k == "conv"), None)
    if first is not None and first in ctx.conv_layers:
        bank = conv_filters(ctx.model, first)
        out.images["filters"] = img.figure_png(kernel_grid_figure(bank), dpi=90)
        out.meta["filters_layer"] = first
        out.meta["filters_shape"] = list(bank.weights.shape)
    return out


# ----------------------------------------------------------------------------- top-k
def stage_topk(ctx: Context) -> StageOutput:
    """For every map/node of the section layers, the test images that activate it
    most (one pass), drawn with the maximal unit's receptive field."""
    from convscope.inside import topk_layers

    k = ctx.profile.topk
    # the frozen channels-last copy: same maps, ≈1.4× faster on CPU
    result = topk_layers(ctx.ascent_model, ctx.split.images, ctx.layers, k=k, progress=ctx.tick)
    out = StageOutput(meta={"k": k, "num_images": len(ctx.split.images), "layers": {}})
    images = ctx.split.images
    for name, top in result.items():
        indices = top.indices.numpy()
        values = top.values.numpy()
        rects = top.rectangles.numpy() if top.rectangles is not None else None
        out.arrays[f"indices/{name}"] = indices.astype(np.int32)
        out.arrays[f"values/{name}"] = values.astype(np.float32)
        if rects is not None:
            out.arrays[f"rects/{name}"] = rects.astype(np.int16)
        for m in range(indices.shape[0]):
            out.images[f"strip/{name}/{m}"] = img.digits_with_fields_png(
                [images[int(i)] for i in indices[m]], None if rects is None else rects[m]
            )
        field = None
        if rects is not None:
            t, l, b, r = (int(v) for v in rects[0, 0])
            field = [b - t, r - l]
        out.meta["layers"][name] = {"maps": int(indices.shape[0]), "receptive_field": field}
    return out


# ----------------------------------------------------------------------------- OIPs
def stage_oip(ctx: Context, layer: str) -> StageOutput:
    """The OIP of every map of ``layer`` (:func:`convscope.optvis.oip.compute_oips`:
    precursor starts, then the reference ascent of all maps in one batch);
    evolution strips from its snapshots."""
    from convscope.address import layer_output_shapes
    from convscope.inference import to_input
    from convscope.optvis.oip import compute_oips

    p = ctx.profile
    count = int(layer_output_shapes(ctx.model)[layer][0])
    maps = list(range(count))
    dataset = to_input(ctx.ascent_model, ctx.split.images[: p.precursor_dataset]) if p.precursor_dataset else None
    ctx.tick(0, p.oip_steps)
    computed = compute_oips(
        ctx.ascent_model, layer, maps, seed=ctx.seed + zlib.crc32(layer.encode()) % 10_000, steps=p.oip_steps,
        epsilon=p.oip_epsilon, criterion=p.oip_criterion, early_stop=True, n_candidates=p.precursor_candidates,
        dataset_images=dataset, preactivation_steps=p.precursor_preactivation_steps,
        n_report_steps=p.oip_report_steps, progress=lambda step, steps, _active: ctx.tick(step, steps),
    )
    result = computed.ascent
    starts = computed.precursor
    oips = _np(result.images)[:, 0]  # (C, 28, 28)
    snaps = _np(result.snapshots)[:, :, 0]  # (S, C, 28, 28)
    final = _np(result.final_loss).astype(np.float64)
    status = list(result.status)
    dead = [bool(s == "dead" or f <= 0) for s, f in zip(status, final)]
    out = StageOutput()
    lo, hi = OIP_SCALE
    for m in maps:
        out.images[f"oip/{m}"] = img.map_png(oips[m], OIP_CMAP, lo, hi)
        out.images[f"evo/{m}"] = img.strip_png(list(snaps[:, m]), OIP_CMAP, lo, hi)
    out.arrays = {
        "oips": oips.astype(np.float16),
        "final_loss": final,
        "initial_loss": _np(result.initial_loss).astype(np.float64),
        "converged_step": _np(result.converged_step).astype(np.int32),
        # the objective over the ascent, ≤ 61 points per map (sparklines on the map cards)
        "loss_curve": _np(result.losses)[np.unique(np.linspace(0, result.losses.shape[0] - 1, 61).round().astype(int))]
        .T.astype(np.float32),
        "start_score": _np(starts.scores).astype(np.float64) if starts is not None else np.zeros(count),
    }
    out.meta = {
        "layer": layer,
        "maps": count,
        "status": status,
        "dead": dead,
        "source": list(starts.source) if starts is not None else ["random"] * count,
        "snapshot_steps": [int(s) for s in result.snapshot_steps],
        "alive": int(count - sum(dead)),
        "member_steps": int(result.member_steps),
        "params": {**result.params, "precursor": starts.params if starts is not None else {}},
    }
    return out


# ----------------------------------------------------------------------------- deconvnet
def stage_deconv(ctx: Context) -> StageOutput:
    """Deconvnet (Zeiler & Fergus) of each map's strongest test image."""
    from convscope.explain import Deconvnet
    from convscope.inference import to_input

    topk = ctx.outputs["topk"]
    method = Deconvnet(ctx.model)
    out = StageOutput(meta={"layers": {}})
    total = sum(topk.arrays[f"indices/{n}"].shape[0] for n in ctx.conv_layers)
    done = 0
    for name in ctx.conv_layers:
        indices = topk.arrays[f"indices/{name}"][:, 0]
        x = to_input(ctx.model, ctx.split.images[indices.astype(np.int64)])
        maps = []
        for m, index in enumerate(indices):
            attribution = method.attribute(x[m : m + 1], target=f"{name}:{m}")
            values = _np(attribution)[0, 0]
            maps.append(values)
            # a few pixels dominate a deconvnet; scale to the 99th percentile of |value| (the rest clips)
            limit = float(np.percentile(np.abs(values), 99)) or None
            out.images[f"deconv/{name}/{m}"] = img.signed_png(values, limit, cmap=ATTR_CMAP)
            out.images[f"input/{name}/{m}"] = img.digit_png(ctx.split.images[int(index)])
            done += 1
            ctx.tick(done, total)
        out.arrays[f"deconv/{name}"] = np.stack(maps).astype(np.float32)
        out.meta["layers"][name] = {"images": [int(i) for i in indices]}
    return out


# ----------------------------------------------------------------------------- classes
def stage_classes(ctx: Context) -> StageOutput:
    """Class visualisations (:func:`convscope.optvis.strategies.class_patterns`):
    each class logit maximised from noise with a little jitter, two passes."""
    from convscope.optvis.strategies import class_patterns

    p = ctx.profile
    n = len(ctx.class_names)
    total = 2 * p.class_steps
    state = {"pass": 0, "last": 0}

    def tick(step: int, steps: int, _active: int) -> None:
        if step < state["last"]:  # the second pass began
            state["pass"] += 1
        state["last"] = step
        ctx.tick(state["pass"] * steps + step, total)

    result = class_patterns(ctx.ascent_model, steps=p.class_steps, epsilon=p.class_epsilon, passes=2,
                            seed=ctx.seed, progress=tick)
    with torch.no_grad():
        probs = torch.softmax(ctx.model(result.images.to(model_device(ctx.model))).float(), dim=1).cpu().numpy()
    pictures = _np(result.images)[:, 0]
    out = StageOutput()
    lo, hi = OIP_SCALE
    for c in range(n):
        out.images[f"class/{c}"] = img.map_png(pictures[c], OIP_CMAP, lo, hi)
        out.images[f"class_gray/{c}"] = img.map_png(pictures[c], "gray", lo, hi)
    out.arrays = {"images": pictures.astype(np.float16), "probabilities": probs.astype(np.float32)}
    out.meta = {
        "p_class": [float(probs[c, c]) for c in range(n)],
        "predicted": [int(probs[c].argmax()) for c in range(n)],
        "final_logit": [float(v) for v in _np(result.logits)],
        "params": result.params,
    }
    return out


# ----------------------------------------------------------------------------- 4 vs 9
def stage_compare(ctx: Context, class_a: int = 4, class_b: int = 9) -> StageOutput:
    """The reference's 4-vs-9 comparison: clear and ambiguous examples chosen from
    the data and the model, their Conv2D_3 / Dense_1 patterns with marks, and the
    probabilities."""
    from convscope.inside import compare_classes
    from convscope.render.inside import MARK_A, MARK_B, class_rows_figure, separation_figure

    kinds = layer_kinds(ctx.model)
    convs = [n for n, k in kinds.items() if k == "conv"]
    dense = [n for n, k in kinds.items() if k == "dense"]
    layers = [convs[-1]] + dense[:-1]
    comparison = compare_classes(
        ctx.ascent_model, ctx.split.images, ctx.split.labels, class_a, class_b, layers=layers,
        n_examples=ctx.profile.compare_examples, progress=ctx.tick,
    )
    ex = comparison.examples
    names = ctx.class_names
    a_name, b_name = names[class_a], names[class_b]

    def row(index: int, role: str) -> dict:
        return comparison.example_row(index, role, names)

    marks = {n: [(comparison.layers[n].a_only.numpy(), MARK_A), (comparison.layers[n].b_only.numpy(), MARK_B)]
             for n in layers}
    legend = [(MARK_A, f"active in all clear {a_name}s, in no {b_name}"),
              (MARK_B, f"active in all clear {b_name}s, in no {a_name}")]
    rows = ([row(i, f"ambiguous {a_name}") for i in ex.ambiguous_a] + [row(i, f"clear {a_name}") for i in ex.clear_a]
            + [row(i, f"clear {b_name}") for i in ex.clear_b])
    out = StageOutput()
    if rows:  # an untrained model may classify no image of the two classes correctly
        out.images["rows"] = img.figure_png(class_rows_figure(
            rows, layers, marks=marks, legend=legend, class_names=names,
            title=f"{layers[0]} and {layers[-1]} patterns: ambiguous '{a_name}'s, clear '{a_name}'s and clear '{b_name}'s",
        ), dpi=90)
    separations = [comparison.layers[n].separation for n in layers]
    out.images["separation"] = img.figure_png(separation_figure(separations, top=10, class_names=names), dpi=80)
    for index in comparison.images:
        out.images[f"digit/{index}"] = img.digit_png(comparison.images[index])
    out.meta = {
        "class_a": class_a, "class_b": class_b, "compared_layers": layers,
        **comparison.to_dict(top=10),
        "dense": {},
    }
    for name in dense[:-1]:
        dense_patterns(out, name, _np(comparison.layers[name].separation.class_means), len(names))
    return out


def dense_patterns(out: StageOutput, name: str, means: np.ndarray, classes: int) -> None:
    """Node patterns of one dense layer from its class means ``(classes, F)``: the
    heat map, the most class-specific nodes, the nodes that never fire on average."""
    means = np.nan_to_num(means.astype(np.float64))
    vmax = float(means.max()) or 1.0
    out.images[f"dense/{name}"] = img.map_png(means, ACT_CMAP, 0.0, vmax)
    specific = []
    for c in range(classes):
        others = np.delete(means, c, axis=0).mean(axis=0)
        order = np.argsort(-(means[c] - others), kind="stable")[:5]
        specific.append([int(o) for o in order])
    out.arrays[f"dense_means/{name}"] = means.astype(np.float32)
    out.meta["dense"][name] = {"vmax": vmax, "nodes": int(means.shape[1]), "top_nodes": specific,
                               "silent_nodes": int((means.max(axis=0) <= 0).sum())}


# ----------------------------------------------------------------------------- mistakes
def stage_mistakes(ctx: Context) -> StageOutput:
    """The most confident mistakes, each explained (integrated gradients from an
    empty image) for its true and its predicted class on one shared scale."""
    from convscope.explain import IntegratedGradients
    from convscope.inference import to_input
    from convscope.inside import select_mistakes

    view = _evaluation_view(ctx)
    mistakes = select_mistakes(view, limit=ctx.profile.mistakes)
    out = StageOutput(meta={"total_errors": int(mistakes.total_errors), "mistakes": []})
    if len(mistakes.indices) == 0:
        return out
    x = to_input(ctx.model, ctx.split.images[mistakes.indices])
    method = IntegratedGradients(ctx.model)
    steps = ctx.profile.ig_steps
    for_true = _np(method.attribute(x, [int(t) for t in mistakes.labels], baseline="min", steps=steps))[:, 0]
    ctx.tick(1, 2)
    for_pred = _np(method.attribute(x, [int(p) for p in mistakes.predictions], baseline="min", steps=steps))[:, 0]
    ctx.tick(2, 2)
    for j, index in enumerate(mistakes.indices):
        limit = float(max(np.abs(for_true[j]).max(), np.abs(for_pred[j]).max())) or 1.0
        out.images[f"digit/{j}"] = img.digit_png(ctx.split.images[index])
        out.images[f"true/{j}"] = img.signed_png(for_true[j], limit, ATTR_CMAP)
        out.images[f"pred/{j}"] = img.signed_png(for_pred[j], limit, ATTR_CMAP)
        probs = mistakes.probabilities[j]
        top3 = np.argsort(-probs, kind="stable")[:3]
        out.meta["mistakes"].append({
            "index": int(index),
            "true": int(mistakes.labels[j]),
            "predicted": int(mistakes.predictions[j]),
            "p_true": float(probs[mistakes.labels[j]]),
            "p_predicted": float(probs[mistakes.predictions[j]]),
            "top3": [[int(c), float(probs[c])] for c in top3],
            "scale": limit,
        })
    out.meta["method"] = f"integrated gradients, {steps} steps, baseline: empty image"
    return out


# ----------------------------------------------------------------------------- dream
def stage_dream(ctx: Context) -> StageOutput:
    """The default photo: the reference's single-map pattern carving, and an
    octave DeepDream of the deepest conv layer (full-convolutional)."""
    from PIL import Image

    from convscope.dream import carve, deep_dream, dream_colour
    from convscope.optvis import objectives as obj
    from convscope.photos import DEFAULT_PHOTO, default_photo

    p = ctx.profile
    photo = default_photo()
    height, width = photo.shape[:2]
    new_size = (p.dream_width, max(28, round(height * p.dream_width / width)))
    photo = np.array(Image.fromarray(photo).resize(new_size, Image.Resampling.BICUBIC))
    kinds = layer_kinds(ctx.model)
    deepest = [n for n, k in kinds.items() if k == "conv"][-1]
    from convscope.address import layer_output_shapes

    count = int(layer_output_shapes(ctx.model)[deepest][0])
    carve_map = 56 if count > 56 else 0
    oip = ctx.outputs.get(f"oip:{deepest}")
    if oip is not None and oip.meta["dead"][carve_map]:
        alive = [m for m, d in enumerate(oip.meta["dead"]) if not d]
        carve_map = alive[0] if alive else carve_map
    gray = torch.as_tensor(np.array(Image.fromarray(photo).convert("L")), dtype=torch.float32)
    total = p.carve_rounds * p.carve_epochs + p.dream_octaves * p.dream_steps
    carved = carve(
        ctx.model, obj.channel(f"{deepest}:{carve_map}"), gray, rounds=p.carve_rounds, epochs=p.carve_epochs,
        progress=lambda done, _t: ctx.tick(done, total),
    )
    offset = p.carve_rounds * p.carve_epochs
    dreamed = dream_colour(
        lambda y: deep_dream(
            ctx.model, obj.layer(deepest), y, tiling="fullconv", octaves=p.dream_octaves, steps=p.dream_steps,
            seed=ctx.seed, progress=lambda done, _t: ctx.tick(offset + done, total),
        ),
        torch.as_tensor(photo),
    )
    out = StageOutput()
    out.images["photo"] = img.jpeg_bytes(photo)
    out.images["dream"] = img.jpeg_bytes(_np(dreamed.image).astype(np.uint8))
    pattern = _np(carved.pattern)
    out.images["carve_pattern"] = img.map_png(pattern, OIP_CMAP, *OIP_SCALE)
    out.images["carve_upscaled"] = img.jpeg_bytes(np.clip(_np(carved.upscaled), 0, 255).astype(np.uint8))
    out.images["carve_final"] = img.jpeg_bytes(np.clip(_np(carved.adjusted), 0, 255).astype(np.uint8))
    result = dreamed.result
    out.meta = {
        "photo": DEFAULT_PHOTO,
        "size": [int(photo.shape[1]), int(photo.shape[0])],
        "carve": {"map": f"{deepest}:{carve_map}", **carved.to_dict()},
        "dream": {"objective": deepest, **result.to_dict(), "clipped_fraction": dreamed.clipped_fraction},
    }
    out.meta["dream"].pop("values", None)
    return out
