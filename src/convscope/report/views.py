"""Typed view models of the atlas page, built from the typed stage results.

The HTML templates (``report/templates``) only read these objects' fields; all
choices (texts, numbers, which pictures, links) are made here. Pictures are
referenced through an image sink: a data URI in the one-file atlas, a file beside
the page when the atlas is split into one page per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convscope.report import images as img
from convscope.report.stages import (
    ACT_CMAP, ATTR_CMAP, OIP_CMAP, OIP_SCALE, Activations, ClassPatterns, Comparison, Deconvnets, Dream, LayerOIPs,
    Mistakes, ModelCard, TopK, TrainingCurves,
)

#: ``sink(stage, name, data) -> src`` for an <img>.
ImageSink = Callable[[str, str, bytes], str]


def data_uri_sink(stage: str, name: str, data: bytes) -> str:
    """Every picture inline (the one-file atlas)."""
    return img.data_uri(data, "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png")


@dataclass
class Img:
    src: str
    alt: str
    cls: str = ""


@dataclass
class Legend:
    label: str
    low: str
    high: str
    gradient: str


def legend(cmap: str, low: str, high: str, label: str) -> Legend:
    return Legend(label, low, high, img.legend_gradient(cmap))


def percent(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f} %"


def map_id(layer: str, index: int) -> str:
    """The anchor of one map (``Conv2D_3-120``)."""
    return f"{layer}-{index}".replace(".", "_")


def sparkline(values: Sequence[float], width: int = 150, height: int = 34) -> str:
    """An inline SVG polyline of ``values`` (the OIP objective over the ascent steps)."""
    values = [float(v) for v in values]
    if len(values) < 2:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    points = " ".join(f"{i * (width - 2) / (len(values) - 1) + 1:.1f},{height - 2 - (v - low) / span * (height - 4):.1f}"
                      for i, v in enumerate(values))
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="objective from {values[0]:.3g} to {values[-1]:.3g}"><polyline points="{points}" fill="none" '
            f'stroke="#2f6fde" stroke-width="1.5"/></svg>')


@dataclass
class ProbabilityBar:
    name: str
    percent: float
    width: float
    predicted: bool
    label: bool


def probability_bars(probs: Sequence[float], names: Sequence[str], label: int | None = None, top: int = 10) -> list[ProbabilityBar]:
    """The ``top`` classes' probabilities (all when there are few), the predicted one marked."""
    order = list(range(len(probs))) if len(probs) <= top else sorted(range(len(probs)), key=lambda i: -probs[i])[:top]
    predicted = max(range(len(probs)), key=lambda i: probs[i])
    return [ProbabilityBar(str(names[i]), 100 * float(probs[i]), max(0.5, 100 * float(probs[i])), i == predicted, i == label)
            for i in order]


# ----------------------------------------------------------------------------- model card
@dataclass
class ModelCardView:
    name: str
    architecture: str
    accuracy: float
    accuracy_text: str
    errors: int
    num_images: int
    total_params: int
    trainable_params: int
    preprocessing: str
    dataset: str
    input_shape: str
    summary: list[dict[str, Any]]
    keras_summary: bool
    recipe: list[tuple[str, str]]
    curves: Img | None
    curves_note: str
    per_class: list[dict[str, Any]]
    per_class_floor: float
    confusion: Img | None
    config_note: str
    confusions: str


def model_card_view(card: ModelCard, training: TrainingCurves, sink: ImageSink) -> ModelCardView:
    ev = card.evaluation
    names = ev["class_names"]
    accuracy = float(ev["accuracy"])
    recipe = [(str(k), str(v)) for k, v in (card.training.get("recipe") or {}).items()]
    recipe += [(str(k), str(v)) for k, v in card.training.items() if k not in ("recipe", "history", "lr_history")]
    values = [v for v in ev["per_class_accuracy"].values() if v is not None]
    floor = min(0.95, (min(values) if values else 0.0))
    floor = 0.0 if floor < 0.5 else floor
    per_class = []
    for name in names:
        value = ev["per_class_accuracy"][name]
        width = 0.0 if value is None else max(0.0, (value - floor) / ((1 - floor) or 1)) * 100
        per_class.append({"name": name, "count": ev["per_class_count"][name], "accuracy": percent(value), "width": width})
    if "curves" in training.images:
        curves = Img(sink("training", "curves", training.images["curves"]), "training curves", "fig")
        note = f"{training.history.get('epochs', '?')} epochs; history from {training.source}."
    else:
        curves, note = None, f"No training curves: {training.source}."
    config_note = ""
    if card.config_test_accuracy is not None:
        agree = "matches" if abs(card.config_test_accuracy - accuracy) < 5e-5 else "differs from"
        config_note = f"The model file records {percent(card.config_test_accuracy)}; this evaluation {agree} it."
    confusions = ", ".join(f"{c['true']}→{c['predicted']} ×{c['count']}" for c in ev["top_confusions"])
    confusion = (Img(sink("model_card", "confusion", card.images["confusion"]), "confusion matrix", "fig")
                 if "confusion" in card.images else None)
    return ModelCardView(
        name=card.name, architecture=card.architecture, accuracy=accuracy, accuracy_text=percent(accuracy),
        errors=int(ev["num_errors"]), num_images=int(ev["num_images"]), total_params=card.total_params,
        trainable_params=card.trainable_params, preprocessing=card.preprocessing, dataset=card.dataset,
        input_shape="×".join(str(v) for v in card.input_shape),
        summary=[{**r, "shape": "×".join(str(s) for s in r["output_shape"])} for r in card.summary],
        keras_summary=card.keras_summary, recipe=recipe, curves=curves, curves_note=note, per_class=per_class,
        per_class_floor=floor, confusion=confusion, config_note=config_note, confusions=confusions or "none",
    )


# ----------------------------------------------------------------------------- layers
@dataclass
class ActTile:
    input: Img
    class_name: str
    ref: str
    active_percent: float
    grid: Img


@dataclass
class DenseView:
    image: Img
    legend: Legend
    nodes: int
    silent: int
    rows: list[tuple[str, str]]
    class_names: list[str]


@dataclass
class Tile:
    anchor: str
    map: int
    state: str
    title: str
    image: Img


@dataclass
class Coverage:
    parts: list[dict[str, Any]]
    legend: list[tuple[str, str]]
    text: str


@dataclass
class Strip:
    map: int
    anchor: str | None
    image: Img


@dataclass
class LayerView:
    name: str
    anchor: str
    shape: str
    dense: bool
    filters: Img | None
    act_note: str
    act_legend: Legend
    act_cell: str
    act_tiles: list[ActTile]
    dense_patterns: DenseView | None
    gallery: list[Tile] | None
    gallery_title: str
    gallery_note: str
    oip_legend: Legend
    coverage: Coverage | None
    k: int
    topk_summary: str
    topk_open: bool
    topk_strip_width: int
    strips: list[Strip]
    has_maps: bool
    maps_href: str


def _coverage(oip: LayerOIPs) -> Coverage:
    labels = {"random": "random start", "dataset": "dataset image", "preactivation": "pre-ReLU ascent", "none": "nothing fired"}
    count = oip.maps
    parts = [{"source": s, "width": 100 * oip.source.count(s) / count, "count": oip.source.count(s), "label": label}
             for s, label in labels.items() if oip.source.count(s)]
    states = [oip.state(m) for m in range(count)]
    status = {s: oip.status.count(s) for s in ("converged", "max_steps", "dead")}
    reference = " (the reference found 61 of 128)" if oip.layer == "Conv2D_3" and count == 128 else ""
    silent = states.count("silent")
    candidates = oip.params.get("precursor_params", {}).get("n_candidates", "?")
    text = (f"Precursor: {candidates} long-scale random starts scored per map in one pass; silent maps then tried the "
            f"test images and a pre-ReLU ascent. After the ascent {oip.alive} of {count} maps respond{reference}; "
            f"{status['converged']} converged early, {status['max_steps']} ran all {oip.params.get('steps')} steps, "
            f"{states.count('dead')} never fire on any input tried")
    text += f", {silent} stay at 0 here although they fire on test images." if silent else "."
    return Coverage(parts, list(labels.items()), text)


def layer_view(
    layer: str, acts: Activations, topk: TopK, compare: Comparison | None, oip: LayerOIPs | None,
    class_names: Sequence[str], sink: ImageSink, maps_href: str,
) -> LayerView:
    info = acts.layers[layer]
    shape = info["shape"]
    dense = len(shape) == 1
    per_row = info.get("per_row", 8)
    what = ("the 100 nodes as a 10×10 block (node = row·10 + column)" if dense and shape[0] == 100
            else f"nodes in rows of {per_row} (node = row·{per_row} + column)" if dense
            else f"{shape[0]} maps in rows of {per_row} (map = row·{per_row} + column)")
    tiles = [
        ActTile(
            input=Img(sink("activations", f"input/{i}", acts.images[f"input/{i}"]), f"test:{index}", "px"),
            class_name=str(class_names[acts.sample_classes[i]]), ref=f"test:{index}",
            active_percent=100 * info["active_fraction"][i],
            grid=Img(sink("activations", f"grid/{layer}/{i}", acts.images[f"grid/{layer}/{i}"]),
                     f"{layer} activations for test:{index}", "px"),
        )
        for i, index in enumerate(acts.samples)
    ]
    filters = None
    if acts.filters_layer == layer and "filters" in acts.images:
        filters = Img(sink("activations", "filters", acts.images["filters"]), f"{layer} kernels", "fig")
    dense_view = None
    if dense and compare is not None and layer in compare.dense:
        d = compare.dense[layer]
        dense_view = DenseView(
            image=Img(sink("compare", f"dense/{layer}", compare.images[f"dense/{layer}"]), f"{layer} class-mean node patterns", "px"),
            legend=legend(ACT_CMAP, "0", f"{d['vmax']:.3g}", "mean activation"), nodes=d["nodes"], silent=d["silent_nodes"],
            rows=[(str(class_names[c]), ", ".join(str(n) for n in nodes)) for c, nodes in enumerate(d["top_nodes"])],
            class_names=[str(n) for n in class_names],
        )
    gallery = None
    if oip is not None:
        gallery = [Tile(map_id(layer, m), m, oip.state(m), f"{layer}:{m} — {oip.state(m)}",
                        Img(sink(f"oip:{layer}", f"oip/{m}", oip.images[f"oip/{m}"]), f"OIP {layer}:{m}", "px"))
                   for m in range(oip.maps)]
    k = topk.k
    field_ = topk.layers[layer]["receptive_field"]
    field_note = (f"orange: the {field_[0]}×{field_[1]} receptive field of the strongest unit" if field_
                  else "dense nodes see the whole image")
    count = topk.layers[layer]["maps"]
    strips = [Strip(m, map_id(layer, m) if oip is not None else None,
                    Img(sink("topk", f"strip/{layer}/{m}", topk.images[f"strip/{layer}/{m}"]), f"top {k} for {layer}:{m}", "px strip"))
              for m in range(count)]
    silent = sum(1 for m in range(oip.maps) if oip.state(m) == "silent") if oip is not None else 0
    return LayerView(
        name=layer, anchor=f"layer-{layer}".replace(".", "_"), shape="×".join(str(s) for s in shape), dense=dense,
        filters=filters,
        act_note=f"Raw values, {what}; one colour scale for all {len(tiles)} images.",
        act_legend=legend(ACT_CMAP, "0", f"{info['vmax']:.3g}", "activation"),
        act_cell="180px" if dense else ("260px" if shape[-1] > 8 else "220px"), act_tiles=tiles,
        dense_patterns=dense_view, gallery=gallery,
        gallery_title="" if oip is None else f"{oip.alive} of {oip.maps} respond",
        gallery_note=("Optimised input patterns: the input that maximises each map's mean activation (reference gradient "
                      "ascent, re-standardised every step). Red: never fires on any input tried"
                      + ("; orange: 0 here although the map fires on test images" if silent else "")
                      + ". Click a tile for the map's card."),
        oip_legend=legend(OIP_CMAP, f"{OIP_SCALE[0]:g}", f"{OIP_SCALE[1]:g}", "standardised pixel"),
        coverage=_coverage(oip) if oip is not None else None,
        k=k, topk_summary=f"Top {k} of {topk.num_images:,} test images per {'node' if dense else 'map'} ({field_note})",
        topk_open=count <= 64, topk_strip_width=48 * k + 40, strips=strips, has_maps=oip is not None, maps_href=maps_href,
    )


@dataclass
class MapCard:
    anchor: str
    layer: str
    map: int
    state: str
    badge: str
    oip: Img
    final: str
    source: str
    spark: str
    strongest: str
    strongest_value: str
    steps: str
    evolution: Img | None
    strip: Img
    k: int
    deconv_input: Img | None
    deconv: Img | None


@dataclass
class MapsView:
    layer: str
    anchor: str
    cards: list[MapCard]
    oip_legend: Legend
    attr_legend: Legend


def maps_view(layer: str, oip: LayerOIPs, topk: TopK, deconv: Deconvnets | None, sink: ImageSink) -> MapsView:
    final = oip.arrays["final_loss"]
    values, indices = topk.values(layer), topk.indices(layer)
    curves = oip.arrays.get("loss_curve")
    badges = {"dead": "never fires", "silent": "0 here · fires on data", "converged": "converged", "responds": "responds"}
    cards = []
    for m in range(oip.maps):
        state = oip.state(m)
        stage = f"oip:{layer}"
        has_deconv = deconv is not None and f"deconv/{layer}/{m}" in deconv.images
        cards.append(MapCard(
            anchor=map_id(layer, m), layer=layer, map=m, state=state, badge=badges[state],
            oip=Img(sink(stage, f"oip/{m}", oip.images[f"oip/{m}"]), f"OIP {layer}:{m}", "px oip"),
            final=f"{final[m]:.3g}", source=oip.source[m], spark=sparkline(curves[m]) if curves is not None else "",
            strongest=f"test:{int(indices[m, 0])}", strongest_value=f"{values[m, 0]:.3g}",
            steps=", ".join(str(s) for s in oip.snapshot_steps),
            evolution=(Img(sink(stage, f"evo/{m}", oip.images[f"evo/{m}"]), f"OIP evolution {layer}:{m}", "px evo")
                       if f"evo/{m}" in oip.images else None),
            strip=Img(sink("topk", f"strip/{layer}/{m}", topk.images[f"strip/{layer}/{m}"]), f"top examples {layer}:{m}", "px strip"),
            k=int(indices.shape[1]),
            deconv_input=(Img(sink("deconv", f"input/{layer}/{m}", deconv.images[f"input/{layer}/{m}"]), f"test:{int(indices[m, 0])}", "px")
                          if has_deconv else None),
            deconv=(Img(sink("deconv", f"deconv/{layer}/{m}", deconv.images[f"deconv/{layer}/{m}"]), f"deconvnet {layer}:{m}", "px")
                    if has_deconv else None),
        ))
    return MapsView(layer=layer, anchor=f"maps-{layer}".replace(".", "_"), cards=cards,
                    oip_legend=legend(OIP_CMAP, f"{OIP_SCALE[0]:g}", f"{OIP_SCALE[1]:g}", "OIP and evolution: standardised pixel"),
                    attr_legend=legend(ATTR_CMAP, "−", "+", "deconvnet (each map its own scale)"))


# ----------------------------------------------------------------------------- other sections
@dataclass
class ClassFigure:
    name: str
    image: Img
    gray: Img | None
    p: str


@dataclass
class ClassesView:
    figures: list[ClassFigure]
    lead: str
    legend: Legend
    title: str


def classes_view(out: ClassPatterns, total_classes: int, sink: ImageSink) -> ClassesView:
    figures = []
    for i, name in enumerate(out.names):
        gray = out.images.get(f"class_gray/{i}")
        figures.append(ClassFigure(
            name=name, image=Img(sink("classes", f"class/{i}", out.images[f"class/{i}"]), f"class {name}", "px"),
            gray=Img(sink("classes", f"class_gray/{i}", gray), f"class {name} gray", "px") if gray else None,
            p=f"{100 * out.p_class[i]:.1f} %"))
    p = out.params
    shown = f"the first {len(out.names)} of {total_classes} classes" if total_classes > len(out.names) else "every class"
    lead = (f"The input that maximises each class logit ({shown}; the softmax replaced by a linear output, reference "
            f"gradient ascent from random multi-scale starts, {p.get('passes')} passes of {p.get('steps')} steps with "
            f"±{p.get('jitter')} px jitter).")
    title = ", ".join(out.names[:4]) + (" …" if len(out.names) > 4 else "")
    return ClassesView(figures, lead, legend(OIP_CMAP, f"{OIP_SCALE[0]:g}", f"{OIP_SCALE[1]:g}", "standardised pixel"), title)


@dataclass
class ExampleCard:
    image: Img
    role: str
    ref: str
    p_a: str
    p_b: str
    bars: list[ProbabilityBar]


@dataclass
class CompareView:
    a: str
    b: str
    layer: str
    ambiguous: list[ExampleCard]
    clear: list[ExampleCard]
    rows: Img | None
    separation: Img
    counts: str


def compare_view(out: Comparison, class_names: Sequence[str], confusion: Sequence[Sequence[int]], sink: ImageSink) -> CompareView:
    a, b = out.class_a, out.class_b
    names = [str(n) for n in class_names]

    def cards(entries, role: str) -> list[ExampleCard]:
        result = []
        for e in entries:
            index = int(e["image"].split(":")[1])
            probs = e["probabilities"]
            result.append(ExampleCard(
                Img(sink("compare", f"input/{index}", out.images[f"input/{index}"]), e["image"], "px"), role, e["image"],
                f"{100 * probs[a]:.1f} %", f"{100 * probs[b]:.1f} %", probability_bars(probs, names, e["label"])))
        return result

    d = out.details
    counts = f"{confusion[a][b]} true {names[a]}s are called {names[b]} and {confusion[b][a]} true {names[b]}s {names[a]}"
    return CompareView(
        a=names[a], b=names[b], layer=out.compared_layers[0] if out.compared_layers else "",
        ambiguous=cards(d.get("ambiguous_a", []), f"ambiguous {names[a]}"),
        clear=cards(d.get("clear_a", []), f"clear {names[a]}") + cards(d.get("clear_b", []), f"clear {names[b]}"),
        rows=Img(sink("compare", "rows", out.images["rows"]), "class patterns", "fig") if "rows" in out.images else None,
        separation=Img(sink("compare", "separation", out.images["separation"]), "separation", "fig"), counts=counts,
    )


@dataclass
class MistakeView:
    index: int
    true: str
    predicted: str
    p_predicted: str
    p_true: str
    input: Img
    for_true: Img
    for_pred: Img
    top3: str


@dataclass
class MistakesView:
    items: list[MistakeView]
    total: int
    method: str
    legend: Legend


def mistakes_view(out: Mistakes, class_names: Sequence[str], sink: ImageSink) -> MistakesView:
    names = [str(n) for n in class_names]
    items = []
    for j, m in enumerate(out.mistakes):
        t, p = m["true"], m["predicted"]
        items.append(MistakeView(
            index=m["index"], true=names[t], predicted=names[p], p_predicted=f"{100 * m['p_predicted']:.1f} %",
            p_true=f"{100 * m['p_true']:.2f} %",
            input=Img(sink("mistakes", f"input/{j}", out.images[f"input/{j}"]), f"test:{m['index']}", "px"),
            for_true=Img(sink("mistakes", f"true/{j}", out.images[f"true/{j}"]), f"evidence for {names[t]}", "px"),
            for_pred=Img(sink("mistakes", f"pred/{j}", out.images[f"pred/{j}"]), f"evidence for {names[p]}", "px"),
            top3=", ".join(f"{names[c]}: {100 * v:.1f} %" for c, v in m["top3"])))
    return MistakesView(items, out.total_errors, out.method, legend(ATTR_CMAP, "against", "for", "attribution"))


@dataclass
class DreamView:
    photo: Img
    pattern: Img
    carved: Img
    dream: Img
    title: str
    lead: str
    carve_caption: str
    carved_caption: str
    dream_caption: str


def dream_view(out: Dream, sink: ImageSink) -> DreamView:
    carve, dream = out.carve, out.dream
    gain = dream.get("objective_gain")
    gain_text = f"{gain:.1f}×" if gain else "n/a"
    params = carve.get("parameters", {})
    return DreamView(
        photo=Img(sink("dream", "photo", out.images["photo"]), "photo"),
        pattern=Img(sink("dream", "carve_pattern", out.images["carve_pattern"]), "carved pattern", "px"),
        carved=Img(sink("dream", "carve_final", out.images["carve_final"]), "carving result"),
        dream=Img(sink("dream", "dream", out.images["dream"]), "deep dream"),
        title=f"{out.photo}, resized to {out.size[0]}×{out.size[1]}",
        lead=(f"The reference's pattern carving of one map — {carve['map']}, {carve.get('chosen_by', '')} — (downscale to "
              f"the model's input, ascent, upscale, re-add the lost detail; {params.get('rounds')} rounds of "
              f"{params.get('epochs')} steps) and a full octave DeepDream of the whole {dream['objective']} layer "
              f"({len(dream['octave_sizes'])} octaves × {dream['parameters']['steps']} steps, full-convolutional)."),
        carve_caption=f"carving {carve['map']}: the pattern",
        carved_caption=(f"detail re-added, width adjusted — the \"apparition\" (objective {carve['objective_before']:.3g} → "
                        f"{carve['objective_after']:.3g})"),
        dream_caption=(f"octave DeepDream of {dream['objective']} (objective {dream['objective_before']:.3g} → "
                       f"{dream['objective_after']:.3g}, {gain_text})"),
    )


@dataclass
class TimingRow:
    name: str
    title: str
    seconds: float
    cpu: float
    cached: bool
    original: float


@dataclass
class AtlasView:
    """Everything the page shows."""

    title: str
    model_name: str
    profile: str
    card: ModelCardView
    layers: list[LayerView]
    maps: list[MapsView]
    classes: ClassesView | None
    compare: CompareView | None
    mistakes: MistakesView | None
    dream: DreamView | None
    provenance: list[tuple[str, str]]
    timings: list[TimingRow]
    total_stage_seconds: float
    alive: str
    goto_example: str
    built: str
    version: str
    dataset: str
    pages: dict[str, str] = field(default_factory=dict)
    draw: dict[str, Any] | None = None


#: Largest model (weights, in numbers) whose weights the atlas page carries for its draw pad
#: (float32, base64: 5.3 MB of page per million numbers).
DRAW_MAX_WEIGHTS = 2_500_000


def draw_view(model: Any, pictures: Sequence[np.ndarray], refs: Sequence[str], labels: Sequence[int]) -> dict[str, Any] | None:
    """The draw pad of the atlas: the model as a program for the page's JavaScript
    forward pass (:func:`convscope.report.jsmodel.forward_program`) and a few test
    images to start from; ``None`` when the page cannot run the model (a layer the
    JavaScript does not know, or more than :data:`DRAW_MAX_WEIGHTS` weights).

    Returns ``{"program", "drawable", "samples" [{"ref", "label", "pixels" (base64 uint8)}],
    "weights_mb", "note"}``.
    """
    import base64

    from convscope.report.jsmodel import JSForwardUnsupported, forward_program
    from convscope.spec import spec_of

    spec = spec_of(model)
    if sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers()) > 2 * DRAW_MAX_WEIGHTS:
        return None
    try:
        program = forward_program(model)
    except JSForwardUnsupported:
        return None
    if program["weight_count"] > DRAW_MAX_WEIGHTS:
        return None
    names = spec.class_names
    drawable = spec.is_gray and spec.image_conversion == "digit"
    samples = [{"ref": ref, "label": str(names[label]) if 0 <= label < len(names) else str(label),
                "pixels": base64.b64encode(np.ascontiguousarray(picture, dtype=np.uint8).tobytes()).decode("ascii")}
               for picture, ref, label in zip(pictures, refs, labels)]
    size = len(program["weights"]) / 1e6
    how = ("Draw with the mouse, a finger or a pen: the drawing is converted as convscope converts an image file "
           "(MNIST-style: cropped, fitted into 20×20, centred by mass)" if drawable else
           "Open an image file (the browser resizes it to the model's input, close to — not exactly — convscope's own "
           "conversion)")
    note = (f"{how}, then every layer is computed right here by a JavaScript forward pass (equal to PyTorch within 1e-4); "
            f"nothing leaves this page. The model's {program['weight_count']:,} weights add {size:.1f} MB to this file.")
    return {"program": program, "drawable": drawable, "samples": samples, "weights_mb": round(size, 2), "note": note}


def provenance_rows(provenance: dict[str, Any]) -> list[tuple[str, str]]:
    def value(v: Any) -> str:
        if isinstance(v, dict):
            return " · ".join(f"{k} = {x}" for k, x in v.items())
        if isinstance(v, list):
            return ", ".join(str(x) for x in v)
        return str(v)

    return [(k.replace("_", " "), value(v)) for k, v in provenance.items()]


__all__ = [
    "AtlasView", "DRAW_MAX_WEIGHTS", "ImageSink", "LayerView", "MapsView", "classes_view", "compare_view", "data_uri_sink", "draw_view", "dream_view",
    "layer_view", "map_id", "maps_view", "mistakes_view", "model_card_view", "provenance_rows",
]
