"""The atlas page: one HTML file, CSS inline, every image a data URI — it opens
from disk, offline, with no fonts, scripts or stylesheets fetched from anywhere.

:func:`render_page` turns the stage outputs into the page; nothing here runs a
model.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

from convscope.report import images as img
from convscope.report.stages import ACT_CMAP, ATTR_CMAP, OIP_CMAP, OIP_SCALE, Context

CSS = """
:root {
  --fg: #1d2330; --muted: #5b6475; --line: #dfe3ea; --bg: #f6f7fb; --card: #ffffff;
  --accent: #2f6fde; --accent-soft: #e8f0fe; --dead: #d64545; --ok: #1f9d55; --warn: #c77700;
  --nav-w: 250px;
}
* { box-sizing: border-box; }
html { scroll-padding-top: 12px; }
body {
  margin: 0; color: var(--fg); background: var(--bg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans",
        "Liberation Sans", sans-serif;
  display: grid; grid-template-columns: var(--nav-w) minmax(0, 1fr);
}
code, .mono, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; font-size: 0.88em; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
nav.toc {
  position: sticky; top: 0; align-self: start; height: 100vh; overflow-y: auto;
  background: #111827; color: #cbd5e1; padding: 18px 14px 30px; font-size: 13.5px;
}
nav.toc .brand { color: #fff; font-weight: 700; font-size: 17px; margin-bottom: 2px; }
nav.toc .sub { color: #94a3b8; font-size: 12px; margin-bottom: 14px; }
nav.toc ol { list-style: none; margin: 0; padding: 0; }
nav.toc li { margin: 1px 0; }
nav.toc li li a { padding-left: 20px; font-size: 12.5px; color: #94a3b8; }
nav.toc a { color: #e2e8f0; display: block; padding: 3px 8px; border-radius: 6px; }
nav.toc a:hover { background: #1f2937; text-decoration: none; }
nav.toc form { margin: 0 0 14px; }
nav.toc input { width: 100%; padding: 6px 9px; border-radius: 7px; border: 1px solid #334155; background: #0b1220; color: #e2e8f0; font: inherit; }
nav.toc .stat { margin-top: 16px; padding: 10px; border-radius: 8px; background: #1f2937; font-size: 12.5px; }
nav.toc .stat b { color: #fff; font-size: 20px; display: block; }
main { padding: 26px 34px 80px; max-width: 1500px; }
header.top h1 { margin: 0 0 4px; font-size: 28px; letter-spacing: -0.01em; }
header.top p { margin: 0; color: var(--muted); }
section.block {
  background: var(--card); border: 1px solid var(--line); border-radius: 14px;
  padding: 20px 24px 24px; margin: 22px 0; box-shadow: 0 1px 2px rgba(16, 24, 40, 0.04);
}
section.block > h2 { margin: 0 0 6px; font-size: 22px; }
h3 { margin: 22px 0 8px; font-size: 17px; }
h3 small, h2 small { color: var(--muted); font-weight: 400; font-size: 13px; margin-left: 6px; }
p.lead { color: var(--muted); margin: 0 0 12px; max-width: 75ch; }
p.note { color: var(--muted); font-size: 13px; margin: 6px 0; max-width: 90ch; }
img { max-width: 100%; }
img.px { image-rendering: pixelated; image-rendering: crisp-edges; }
img.fig { display: block; height: auto; border-radius: 6px; }
.kpis { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; margin: 12px 0 4px; }
.kpi { background: var(--accent-soft); border-radius: 10px; padding: 10px 14px; }
.kpi .label { color: var(--muted); font-size: 12.5px; }
.kpi .value { font-size: 22px; font-weight: 700; }
.two { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(420px, 100%), 1fr)); gap: 20px; align-items: start; }
table.t { border-collapse: collapse; font-size: 13.5px; width: 100%; }
table.t th, table.t td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: baseline; }
table.t th { color: var(--muted); font-weight: 600; background: #fafbfd; }
table.t td.num, table.t th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.prov th { width: 170px; white-space: nowrap; }
table.t tr.total td { font-weight: 700; border-top: 2px solid var(--line); }
.bar { display: inline-block; height: 9px; border-radius: 5px; background: var(--accent); vertical-align: middle; }
.legend { display: inline-flex; align-items: center; gap: 8px; font-size: 12.5px; color: var(--muted); margin: 4px 0 10px; }
.legend .scale { width: 180px; height: 12px; border-radius: 3px; border: 1px solid var(--line); }
.legend .sw { width: 12px; height: 12px; border-radius: 3px; display: inline-block; }
.grid-acts { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(var(--cell, 250px), 100%), 1fr)); gap: 14px; }
.act { border: 1px solid var(--line); border-radius: 10px; padding: 8px; background: #fcfcfe; }
.act .head { display: flex; align-items: center; gap: 8px; font-size: 12.5px; color: var(--muted); margin-bottom: 6px; }
.act .head img { width: 42px; height: 42px; border-radius: 4px; }
.act > img { width: 100%; height: auto; border-radius: 4px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(64px, 1fr)); gap: 6px; }
.tile { position: relative; display: block; border-radius: 6px; overflow: hidden; border: 2px solid transparent; background: #eef1f6; }
.tile img { display: block; width: 100%; height: auto; }
.tile span { position: absolute; left: 2px; top: 1px; font-size: 10.5px; color: #fff; text-shadow: 0 0 3px #000, 0 0 2px #000; }
.tile.dead { border-color: var(--dead); }
.tile.dead::after { content: "dead"; position: absolute; right: 2px; bottom: 1px; font-size: 10px; font-weight: 700; color: #fff; background: var(--dead); padding: 0 3px; border-radius: 3px; }
.tile:hover { border-color: var(--accent); }
.coverage { display: grid; gap: 8px; max-width: 760px; }
.stack { display: flex; height: 22px; border-radius: 6px; overflow: hidden; border: 1px solid var(--line); }
.stack > div { color: #fff; font-size: 11.5px; line-height: 22px; text-align: center; white-space: nowrap; overflow: hidden; }
.src-random { background: #1f9d55; } .src-dataset { background: #2f6fde; }
.src-preactivation { background: #8b5cf6; } .src-none { background: #9aa3b2; }
.topk-list { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(var(--strip, 300px), 100%), 1fr)); gap: 6px 14px; }
.topk-list a { display: flex; align-items: center; gap: 8px; font-size: 11.5px; color: var(--muted); }
.topk-list a b { min-width: 30px; color: var(--fg); font-weight: 600; }
.topk-list img { height: 42px; width: auto; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(330px, 100%), 1fr)); gap: 14px; }
article.map { border: 1px solid var(--line); border-radius: 12px; padding: 10px 12px 12px; background: #fff; scroll-margin-top: 10px; }
article.map:target { outline: 3px solid var(--accent); outline-offset: 2px; }
article.map header { display: flex; justify-content: space-between; align-items: baseline; gap: 8px; margin-bottom: 6px; }
article.map header a.self { font-weight: 700; color: var(--fg); }
.badge { font-size: 11px; padding: 1px 7px; border-radius: 999px; background: #e8f5ee; color: var(--ok); font-weight: 600; }
.badge.dead { background: #fdecec; color: var(--dead); }
.badge.none { background: #f1f2f5; color: var(--muted); }
.map-row { display: grid; grid-template-columns: 84px 1fr; gap: 10px; align-items: start; }
.map-row .oip { width: 84px; height: 84px; border-radius: 6px; }
.map-row .facts { font-size: 12px; color: var(--muted); line-height: 1.45; }
svg.spark { display: block; margin: 2px 0; background: #f6f8fc; border-radius: 4px; }
.lbl { font-size: 11px; text-transform: uppercase; letter-spacing: 0.05em; color: var(--muted); margin: 8px 0 2px; }
.evo { width: 100%; height: auto; border-radius: 4px; }
.strip { max-width: 100%; height: auto; }
.deconv { display: flex; gap: 6px; align-items: center; }
.deconv img { width: 84px; height: 84px; border-radius: 4px; }
.deconv .facts { font-size: 12px; color: var(--muted); }
.classes { display: grid; grid-template-columns: repeat(auto-fill, minmax(120px, 1fr)); gap: 12px; }
.classes figure, .digits figure { margin: 0; text-align: center; font-size: 12.5px; color: var(--muted); }
.classes figure img { width: 100%; height: auto; border-radius: 8px; }
.classes figure b { color: var(--fg); font-size: 16px; }
.digits { display: flex; flex-wrap: wrap; gap: 12px; }
.digits figure img { width: 84px; height: 84px; border-radius: 6px; }
.probs { display: grid; grid-template-columns: 18px 1fr 48px; gap: 1px 6px; align-items: center; font-size: 11.5px; min-width: 150px; }
.probs .b { height: 8px; border-radius: 4px; background: #4e79a7; }
.probs .b.pred { background: #f28e2b; }
.mistakes { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(360px, 100%), 1fr)); gap: 14px; }
.mistake { border: 1px solid var(--line); border-radius: 12px; padding: 10px 12px; }
.mistake .imgs { display: grid; grid-template-columns: repeat(3, 1fr); gap: 6px; text-align: center; font-size: 11.5px; color: var(--muted); }
.mistake .imgs img { width: 100%; height: auto; border-radius: 4px; }
.dream { display: grid; grid-template-columns: repeat(auto-fit, minmax(230px, 1fr)); gap: 14px; }
.dream figure { margin: 0; font-size: 12.5px; color: var(--muted); }
.dream figure img { width: 100%; height: auto; border-radius: 8px; }
.dream figure img.px { image-rendering: pixelated; }
.more { margin-top: 8px; font-size: 13px; }
.legends { display: flex; flex-wrap: wrap; gap: 4px 28px; }
.nodes { display: grid; grid-template-columns: 22px minmax(0, 1fr); gap: 6px; max-width: 1100px; }
.nodes .rowlabels { display: grid; grid-template-rows: repeat(10, 1fr); font-size: 12px; color: var(--muted); text-align: right; }
.nodes .rowlabels span { display: flex; align-items: center; justify-content: flex-end; }
.nodes img { width: 100%; height: 240px; border-radius: 4px; }
@media (max-width: 900px) {
  body { grid-template-columns: minmax(0, 1fr); }
  nav.toc { position: static; height: auto; }
  table.t { display: block; overflow-x: auto; }
  main { padding: 14px; }
}
"""

#: Opens a closed <details> when a link points inside it (no network, inline).
SCRIPT = """
function openTarget(){var id=decodeURIComponent(location.hash.slice(1));if(!id)return;
var el=document.getElementById(id);if(!el)return;for(var p=el.parentElement;p;p=p.parentElement){if(p.tagName==='DETAILS')p.open=true;}
el.scrollIntoView();}
window.addEventListener('hashchange',openTarget);window.addEventListener('DOMContentLoaded',openTarget);
function gotoMap(form){var t=form.elements.address.value.trim().replace(':','-');var el=document.getElementById(t);
form.elements.address.setCustomValidity(el?'':'no such map: try Conv2D_3:120');form.reportValidity();
if(el)location.hash='#'+t;return false;}
"""


def esc(value: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(value), quote=True)


def uri(images: dict[str, bytes], name: str) -> str:
    """The data URI of a stage image (JPEG or PNG by its magic bytes)."""
    data = images[name]
    return img.data_uri(data, "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png")


def image_tag(images: dict[str, bytes], name: str, alt: str, cls: str = "", attrs: str = "") -> str:
    """``<img>`` of a stage image."""
    return f'<img src="{uri(images, name)}" alt="{esc(alt)}" class="{cls}" decoding="async" {attrs}>'


def legend(cmap: str, low: str, high: str, label: str) -> str:
    """A colour legend: the gradient of ``cmap`` with its end values."""
    return (f'<div class="legend"><span>{esc(label)}</span><span>{esc(low)}</span>'
            f'<span class="scale" style="background:{img.legend_gradient(cmap)}"></span><span>{esc(high)}</span></div>')


def map_id(layer: str, index: int) -> str:
    """The anchor of one map (``Conv2D_3-120``)."""
    return f"{layer}-{index}"


def percent(value: float, digits: int = 2) -> str:
    return f"{100 * value:.{digits}f} %"


def probability_bars(probs: Sequence[float], names: Sequence[str], label: int | None = None) -> str:
    """Ten small horizontal bars (predicted class orange)."""
    predicted = max(range(len(probs)), key=lambda i: probs[i])
    rows = []
    for i, p in enumerate(probs):
        mark = "pred" if i == predicted else ""
        name = f"<b>{esc(names[i])}</b>" if i == label else esc(names[i])
        rows.append(f'<span>{name}</span><span><span class="b {mark}" style="display:block;width:{max(0.5, 100 * p):.1f}%">'
                    f'</span></span><span class="num">{100 * p:.1f}%</span>')
    return '<div class="probs">' + "".join(rows) + "</div>"


# ----------------------------------------------------------------------------- sections
def section_model_card(ctx: Context) -> str:
    card = ctx.outputs["model_card"]
    meta, images = card.meta, card.images
    evaluation = meta["evaluation"]
    accuracy = evaluation["accuracy"]
    names = evaluation["class_names"]
    rows = []
    for row in meta["summary"]:
        shape = "×".join(str(s) for s in row["output_shape"])
        rows.append(f'<tr><td><code>{esc(row["name"])}</code></td><td>{esc(row["kind"])}</td>'
                    f'<td class="mono">{shape}</td><td class="num">{row["params"]:,}</td></tr>')
    rows.append(f'<tr class="total"><td colspan="3">total ({meta["trainable_params"]:,} trainable)</td>'
                f'<td class="num" id="total-params" data-value="{meta["total_params"]}">{meta["total_params"]:,}</td></tr>')
    summary = ('<table class="t"><thead><tr><th>layer</th><th>type</th><th>output (C×H×W)</th>'
               '<th class="num">parameters</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    training = meta.get("training") or {}
    recipe = training.get("recipe") or {}
    recipe_rows = "".join(f"<tr><th>{esc(k)}</th><td class='mono'>{esc(v)}</td></tr>" for k, v in recipe.items())
    extra = {k: v for k, v in training.items() if k not in ("recipe", "history", "lr_history")}
    recipe_rows += "".join(f"<tr><th>{esc(k)}</th><td class='mono'>{esc(v)}</td></tr>" for k, v in extra.items())
    recipe_html = ("<table class='t'>" + recipe_rows + "</table>") if recipe_rows else "<p class='note'>The model file records no training recipe.</p>"
    per_class = evaluation["per_class_accuracy"]
    counts = evaluation["per_class_count"]
    pc_rows = []
    for name in names:
        value = per_class[name]
        width = 0 if value is None else max(0.0, (value - 0.95) / 0.05) * 100
        shown = "—" if value is None else percent(value)
        pc_rows.append(f'<tr><td><b>{esc(name)}</b></td><td class="num">{counts[name]:,}</td>'
                       f'<td class="num">{shown}</td><td style="width:45%"><span class="bar" style="width:{width:.1f}%">'
                       f"</span></td></tr>")
    per_class_html = ('<table class="t"><thead><tr><th>class</th><th class="num">images</th><th class="num">accuracy</th>'
                      '<th>(bar: 95 % … 100 %)</th></tr></thead><tbody>' + "".join(pc_rows) + "</tbody></table>")
    training_out = ctx.outputs["training"]
    if "curves" in training_out.images:
        hist = training_out.meta.get("history", {})
        curves = (image_tag(training_out.images, "curves", "training curves", "fig")
                  + f"<p class='note'>{hist.get('epochs', '?')} epochs; history from "
                    f"<code>{esc(training_out.meta['history_source'])}</code>.</p>")
    else:
        curves = f"<p class='note'>No training curves: {esc(training_out.meta['history_source'])}.</p>"
    confusions = ", ".join(f"{c['true']}→{c['predicted']} ×{c['count']}" for c in evaluation["top_confusions"])
    config_acc = meta.get("config_test_accuracy")
    config_note = ""
    if config_acc is not None:
        agree = "matches" if abs(config_acc - accuracy) < 5e-5 else "differs from"
        config_note = f"The model file records {percent(config_acc)}; this evaluation {agree} it."
    return f"""
<section class="block" id="model-card">
  <h2>Model card <small>{esc(meta['architecture'])}</small></h2>
  <p class="lead">The network, how it was trained and how well it does on the {evaluation['num_images']:,} test images.</p>
  <div class="kpis">
    <div class="kpi"><div class="label">test accuracy</div><div class="value" id="test-accuracy" data-value="{accuracy!r}">{percent(accuracy)}</div></div>
    <div class="kpi"><div class="label">errors</div><div class="value">{evaluation['num_errors']:,} / {evaluation['num_images']:,}</div></div>
    <div class="kpi"><div class="label">parameters</div><div class="value">{meta['total_params']:,}</div></div>
    <div class="kpi"><div class="label">preprocessing</div><div class="value" style="font-size:17px">{esc(meta.get('preprocessing'))}</div></div>
  </div>
  <p class="note">{esc(config_note)} Most frequent confusions (true→predicted): {esc(confusions) or 'none'}.</p>
  <div class="two">
    <div><h3>Architecture</h3>{summary}</div>
    <div><h3>Training recipe</h3>{recipe_html}</div>
  </div>
  <h3>Training curves</h3>{curves}
  <div class="two">
    <div><h3>Per-class accuracy</h3>{per_class_html}</div>
    <div><h3>Confusion matrix</h3>{image_tag(images, 'confusion', 'confusion matrix', 'fig')}</div>
  </div>
</section>"""


def _coverage(meta: dict) -> str:
    count = meta["maps"]
    labels = {"random": "random start", "dataset": "dataset image", "preactivation": "pre-ReLU ascent",
              "none": "nothing fired"}
    parts = []
    for source, label in labels.items():
        n = meta["source"].count(source)
        if n:
            parts.append(f'<div class="src-{source}" style="width:{100 * n / count:.2f}%" title="{label}: {n}">{n}</div>')
    alive = meta["alive"]
    status = {s: meta["status"].count(s) for s in ("converged", "max_steps", "dead")}
    reference = " (the reference found 61 of 128)" if meta["layer"] == "Conv2D_3" and count == 128 else ""
    legend_html = " ".join(f'<span class="sw src-{s}"></span> {esc(label)}' for s, label in labels.items())
    return f"""
<div class="coverage">
  <div class="stack">{''.join(parts)}</div>
  <div class="legend">{legend_html}</div>
  <p class="note" style="margin:0">Precursor: {meta['params']['precursor'].get('n_candidates', '?')} long-scale random
  starts scored per map in one pass; silent maps then tried the test images and a pre-ReLU ascent.
  After the ascent <b>{alive} of {count}</b> maps respond{reference};
  {status['converged']} converged early, {status['max_steps']} ran all {meta['params'].get('steps')} steps, {status['dead']} dead.</p>
</div>"""


def section_layer(ctx: Context, layer: str) -> str:
    acts = ctx.outputs["activations"]
    topk = ctx.outputs["topk"]
    info = acts.meta["layers"][layer]
    names = ctx.class_names
    samples = acts.meta["samples"]
    shape = info["shape"]
    dense = len(shape) == 1
    parts = [f'<section class="block" id="layer-{esc(layer)}" data-layer="{esc(layer)}">',
             f"<h2>{esc(layer)} <small>{'×'.join(str(s) for s in shape)} per image</small></h2>"]
    if acts.meta.get("filters_layer") == layer:
        parts.append("<h3>Raw filters</h3><p class='note'>The kernels as learned, one shared symmetric scale "
                     "(red positive, blue negative).</p>" + image_tag(acts.images, "filters", f"{layer} kernels", "fig", 'style="max-width:640px"'))
    cell = "180px" if dense else ("260px" if shape[-1] > 8 else "220px")
    tiles = []
    for i, index in enumerate(samples):
        frac = info["active_fraction"][i]
        tiles.append(
            f'<div class="act"><div class="head">{image_tag(acts.images, f"digit/{i}", f"test:{index}", "px")}'
            f"<span><b>{esc(names[i])}</b> · test:{index}<br>{100 * frac:.0f}% of units &gt; 0</span></div>"
            f'{image_tag(acts.images, f"grid/{layer}/{i}", f"{layer} activations for test:{index}", "px")}</div>'
        )
    per_row = info.get("per_row", 8)
    what = ("the 100 nodes as a 10×10 block (node = row·10 + column)" if dense and shape[0] == 100
            else f"nodes in rows of {per_row} (node = row·{per_row} + column)" if dense
            else f"{shape[0]} maps in rows of {per_row} (map = row·{per_row} + column)")
    parts.append(f"<h3>Activations for one digit per class</h3><p class='note'>Raw post-ReLU values, {what}; "
                 "one colour scale for all ten digits.</p>"
                 + legend(ACT_CMAP, "0", f"{info['vmax']:.3g}", "activation")
                 + f'<div class="grid-acts" style="--cell:{cell}">' + "".join(tiles) + "</div>")
    compare = ctx.outputs["compare"]
    if dense and layer in compare.meta.get("dense", {}):
        d = compare.meta["dense"][layer]
        top_rows = "".join(
            f"<tr><td><b>{esc(names[c])}</b></td><td class='mono'>{', '.join(str(n) for n in nodes)}</td></tr>"
            for c, nodes in enumerate(d["top_nodes"]))
        labels = "".join(f"<span>{esc(n)}</span>" for n in names)
        parts.append(
            "<h3>Node patterns <small>class means over the whole test split</small></h3>"
            f"<p class='note'>One row per true class, one column per node (0 … {d['nodes'] - 1}, left to right); "
            f"{d['silent_nodes']} nodes stay at 0 on average for every class.</p>"
            + legend(ACT_CMAP, "0", f"{d['vmax']:.3g}", "mean activation")
            + f'<div class="nodes"><div class="rowlabels">{labels}</div>'
            + image_tag(compare.images, f"dense/{layer}", f"{layer} class-mean node patterns", "px")
            + "</div><h3>Most class-specific nodes</h3><table class='t' style='max-width:560px'><tr><th>class</th>"
              "<th>nodes (class mean minus the other classes' mean, largest first)</th></tr>" + top_rows + "</table>")
    if layer in ctx.conv_layers:
        oip = ctx.outputs[f"oip:{layer}"]
        meta = oip.meta
        tiles = []
        for m in range(meta["maps"]):
            dead = meta["dead"][m]
            tiles.append(f'<a class="tile{" dead" if dead else ""}" href="#{map_id(layer, m)}" data-map="{m}" '
                         f'title="{esc(layer)}:{m} — {esc(meta["status"][m])}">'
                         f'{image_tag(oip.images, f"oip/{m}", f"OIP {layer}:{m}", "px")}<span>{m}</span></a>')
        parts.append(
            f"<h3>OIPs of every map <small>{meta['alive']} of {meta['maps']} respond</small></h3>"
            "<p class='note'>Optimised input patterns: the 28×28 input that maximises each map's mean activation "
            "(reference gradient ascent, re-standardised every step). Dead maps (red) stayed at 0 from every start. "
            "Click a tile for the map's page.</p>"
            + legend(OIP_CMAP, f"{OIP_SCALE[0]:g}", f"{OIP_SCALE[1]:g}", "standardised pixel")
            + f'<div class="gallery oip-gallery" data-layer="{esc(layer)}">' + "".join(tiles) + "</div>"
            + "<h3>Precursor coverage</h3>" + _coverage(meta))
    k = topk.meta["k"]
    field = topk.meta["layers"][layer]["receptive_field"]
    field_note = f"orange: the {field[0]}×{field[1]} receptive field of the strongest unit" if field else "dense nodes see the whole image"
    count = topk.meta["layers"][layer]["maps"]
    strips = []
    link = layer in ctx.conv_layers
    for m in range(count):
        label = f"<b>{m}</b>"
        tag = image_tag(topk.images, f"strip/{layer}/{m}", f"top {k} for {layer}:{m}", "px strip")
        if link:
            strips.append(f'<a href="#{map_id(layer, m)}">{label}{tag}</a>')
        else:
            strips.append(f"<a>{label}{tag}</a>")
    body = f'<div class="topk-list topk" data-layer="{esc(layer)}" style="--strip:{48 * k + 40}px">' + "".join(strips) + "</div>"
    summary_text = f"Top {k} of {topk.meta['num_images']:,} test images per {'node' if dense else 'map'} ({field_note})"
    parts.append(f"<h3>Top-{k} dataset examples</h3><details{' open' if count <= 64 else ''}><summary>{esc(summary_text)}"
                 f"</summary>{body}</details>")
    if link:
        parts.append(f'<p class="more"><a href="#maps-{esc(layer)}">→ every map of {esc(layer)} on its own card</a></p>')
    parts.append("</section>")
    return "\n".join(parts)


def sparkline(values: Sequence[float], width: int = 150, height: int = 34) -> str:
    """An inline SVG line of ``values`` (the OIP objective over the ascent steps)."""
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


def section_maps(ctx: Context, layer: str) -> str:
    oip = ctx.outputs[f"oip:{layer}"]
    topk = ctx.outputs["topk"]
    deconv = ctx.outputs["deconv"]
    meta = oip.meta
    final = oip.arrays["final_loss"]
    values = topk.arrays[f"values/{layer}"]
    indices = topk.arrays[f"indices/{layer}"]
    steps = meta["snapshot_steps"]
    curves = oip.arrays.get("loss_curve")
    cards = []
    for m in range(meta["maps"]):
        dead = meta["dead"][m]
        status = meta["status"][m]
        badge = ('<span class="badge dead">dead</span>' if dead else
                 f'<span class="badge">{"converged" if status == "converged" else "responds"}</span>')
        strongest = int(indices[m, 0])
        cards.append(f"""
<article class="map" id="{map_id(layer, m)}" data-layer="{esc(layer)}" data-map="{m}">
  <header><a class="self" href="#{map_id(layer, m)}">{esc(layer)}:{m}</a>{badge}</header>
  <div class="map-row">{image_tag(oip.images, f"oip/{m}", f"OIP {layer}:{m}", "px oip")}
    <div class="facts">OIP mean activation <b>{final[m]:.3g}</b> · start: {esc(meta['source'][m])}<br>
    {sparkline(curves[m]) if curves is not None else ''}
    strongest test image: test:{strongest} (its strongest unit {values[m, 0]:.3g})</div></div>
  <div class="lbl">evolution · steps {esc(', '.join(str(s) for s in steps))}</div>
  {image_tag(oip.images, f"evo/{m}", f"OIP evolution {layer}:{m}", "px evo")}
  <div class="lbl">top {indices.shape[1]} test images · receptive field in orange</div>
  {image_tag(topk.images, f"strip/{layer}/{m}", f"top examples {layer}:{m}", "px strip")}
  <div class="lbl">deconvnet of the strongest image</div>
  <div class="deconv">{image_tag(deconv.images, f"input/{layer}/{m}", f"test:{strongest}", "px")}
    {image_tag(deconv.images, f"deconv/{layer}/{m}", f"deconvnet {layer}:{m}", "px")}
    <span class="facts">test:{strongest} and its {esc(layer)}:{m} activations projected back to pixels (red +, blue −; scale: 99th percentile of |value|)</span></div>
</article>""")
    return (f'<section class="block" id="maps-{esc(layer)}"><h2>Every map of {esc(layer)} '
            f"<small>{meta['maps']} cards; link to one with <code>#{esc(map_id(layer, 0))}</code></small></h2>"
            "<p class='lead'>Per map: its OIP, how the OIP evolved during the ascent, the test images that excite it "
            "most, and a deconvnet (Zeiler &amp; Fergus) of the strongest one.</p>"
            + '<div class="legends">'
            + legend(OIP_CMAP, f"{OIP_SCALE[0]:g}", f"{OIP_SCALE[1]:g}", "OIP and evolution: standardised pixel")
            + legend(ATTR_CMAP, "−", "+", "deconvnet (each map its own scale)") + "</div>"
            + f'<div class="cards" data-layer="{esc(layer)}">' + "".join(cards) + "</div></section>")


def section_classes(ctx: Context) -> str:
    out = ctx.outputs["classes"]
    names = ctx.class_names
    figures = []
    for c, name in enumerate(names):
        p = out.meta["p_class"][c]
        figures.append(f"<figure>{image_tag(out.images, f'class/{c}', f'class {name}', 'px')}"
                       f"<figcaption><b>{esc(name)}</b><br>P({esc(name)}) = {100 * p:.1f} %</figcaption></figure>")
    grays = "".join(f"<figure>{image_tag(out.images, f'class_gray/{c}', f'class {n} gray', 'px')}</figure>"
                    for c, n in enumerate(names))
    return f"""
<section class="block" id="classes">
  <h2>Class visualisations <small>0–9</small></h2>
  <p class="lead">The input that maximises each class logit (the softmax replaced by a linear output, reference
  gradient ascent from random multi-scale starts, {out.meta["params"].get("passes")} passes of {out.meta["params"].get("steps")} steps with ±{out.meta["params"].get("jitter")} px jitter). Ghostly digits appear.</p>
  {legend(OIP_CMAP, f"{OIP_SCALE[0]:g}", f"{OIP_SCALE[1]:g}", "standardised pixel")}
  <div class="classes">{''.join(figures)}</div>
  <h3>The same in gray</h3><div class="classes">{grays}</div>
</section>"""


def section_compare(ctx: Context) -> str:
    out = ctx.outputs["compare"]
    meta = out.meta
    names = ctx.class_names
    a, b = meta["class_a"], meta["class_b"]

    def cards(entries: Iterable[dict], role: str) -> str:
        html_parts = []
        for e in entries:
            index = int(e["image"].split(":")[1])
            probs = e["probabilities"]
            html_parts.append(
                f"<figure>{image_tag(out.images, f'digit/{index}', e['image'], 'px')}<figcaption>{esc(role)}<br>"
                f"<code>{esc(e['image'])}</code><br>P({a}) {100 * probs[a]:.1f} % · P({b}) {100 * probs[b]:.1f} %"
                f"{probability_bars(probs, names, e['label'])}</figcaption></figure>")
        return "".join(html_parts)

    return f"""
<section class="block" id="compare">
  <h2>4 versus 9 <small>the reference's Part VI</small></h2>
  <p class="lead">Clear and ambiguous examples are chosen from the real test set by the model's probabilities
  (the reference's indices do not hold those digits in the real MNIST file): ambiguous {a}s are true {a}s the model
  still calls {a} with the highest P({b}). Their {esc(meta['compared_layers'][0])} patterns are hard to read by eye, yet the dense
  layers turn them into a confident decision.</p>
  <h3>Ambiguous {a}s</h3><div class="digits">{cards(meta['ambiguous_a'], f'ambiguous {a}')}</div>
  <h3>Clear {a}s and clear {b}s</h3><div class="digits">{cards(meta['clear_a'], f'clear {a}')}{cards(meta['clear_b'], f'clear {b}')}</div>
  <h3>Patterns side by side</h3>
  {image_tag(out.images, 'rows', 'class patterns', 'fig') if 'rows' in out.images else
   f"<p class='note'>The model classifies no {a} or {b} correctly, so there are no examples to compare.</p>"}
  <h3>Over the whole test split</h3>
  <p class="note">Class means and Cohen's d for every position; outlined: the ten positions that separate the classes best.</p>
  {image_tag(out.images, 'separation', 'separation', 'fig')}
</section>"""


def section_mistakes(ctx: Context) -> str:
    out = ctx.outputs["mistakes"]
    names = ctx.class_names
    items = []
    for j, m in enumerate(out.meta["mistakes"]):
        t, p = m["true"], m["predicted"]
        top = ", ".join(f"{names[c]}: {100 * v:.1f} %" for c, v in m["top3"])
        items.append(f"""
<div class="mistake" id="mistake-{m['index']}">
  <div><b>test:{m['index']}</b> — true <b>{esc(names[t])}</b>, predicted <b>{esc(names[p])}</b>
  ({100 * m['p_predicted']:.1f} %; true class {100 * m['p_true']:.2f} %)</div>
  <div class="imgs">
    <div>{image_tag(out.images, f'digit/{j}', f"test:{m['index']}", 'px')}input</div>
    <div>{image_tag(out.images, f'true/{j}', f"evidence for {names[t]}", 'px')}evidence for {esc(names[t])} (true)</div>
    <div>{image_tag(out.images, f'pred/{j}', f"evidence for {names[p]}", 'px')}evidence for {esc(names[p])} (predicted)</div>
  </div>
  <p class="note">top 3: {esc(top)}</p>
</div>""")
    body = "".join(items) or "<p>No misclassified test images.</p>"
    return f"""
<section class="block" id="mistakes">
  <h2>Mistakes explained <small>{len(out.meta['mistakes'])} of {out.meta['total_errors']} errors, most confident first</small></h2>
  <p class="lead">For each misclassified test image: which pixels speak for the true class and which for the predicted
  one ({esc(out.meta.get('method', ''))}). Both maps of one image share one symmetric scale.</p>
  {legend(ATTR_CMAP, "against", "for", "attribution")}
  <div class="mistakes">{body}</div>
</section>"""


def section_dream(ctx: Context) -> str:
    out = ctx.outputs["dream"]
    meta = out.meta
    carve, dream = meta["carve"], meta["dream"]
    gain = dream.get("objective_gain")
    gain_text = f"{gain:.1f}×" if gain else "n/a"
    return f"""
<section class="block" id="dream">
  <h2>DeepDream <small>{esc(meta['photo'])}, resized to {meta['size'][0]}×{meta['size'][1]}</small></h2>
  <p class="lead">The reference's pattern carving of one map (downscale to 28×28, ascent, upscale, re-add the lost detail;
  {carve['parameters']['rounds']} rounds of {carve['parameters']['epochs']} steps) and a full octave DeepDream of the whole
  {esc(dream['objective'])} layer ({len(dream['octave_sizes'])} octaves × {dream['parameters']['steps']} steps,
  full-convolutional, luminance dreamed and colour kept).</p>
  <div class="dream">
    <figure>{image_tag(out.images, 'photo', 'photo')}<figcaption>the photo</figcaption></figure>
    <figure>{image_tag(out.images, 'carve_pattern', 'carved pattern', 'px')}<figcaption>carving {esc(carve['map'])}: the 28×28 pattern</figcaption></figure>
    <figure>{image_tag(out.images, 'carve_final', 'carving result')}<figcaption>detail re-added, width adjusted — the "apparition"
      (objective {carve['objective_before']:.3g} → {carve['objective_after']:.3g})</figcaption></figure>
    <figure>{image_tag(out.images, 'dream', 'deep dream')}<figcaption>octave DeepDream of {esc(dream['objective'])}
      (objective {dream['objective_before']:.3g} → {dream['objective_after']:.3g}, {gain_text})</figcaption></figure>
  </div>
</section>"""


def section_provenance(ctx: Context, provenance: dict, timings: Sequence[Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, dict):
            return " · ".join(f"{esc(k)} = {esc(x)}" for k, x in v.items())
        if isinstance(v, list):
            return esc(", ".join(str(x) for x in v))
        return esc(v)

    rows = "".join(f"<tr><th>{esc(k.replace('_', ' '))}</th><td class='mono'>{value(v)}</td></tr>"
                   for k, v in provenance.items())
    total = sum(t.seconds for t in timings)
    trows = "".join(
        f"<tr><td>{esc(t.name)}</td><td>{esc(t.title)}</td><td class='num'>{t.seconds:.2f} s</td>"
        f"<td class='num'>{'' if t.cached else '%.2f s' % t.cpu_seconds}</td>"
        f"<td>{'stored (computed in %.1f s)' % t.original_seconds if t.cached else 'computed'}</td></tr>"
        for t in timings)
    return f"""
<section class="block" id="provenance">
  <h2>Parameters and provenance</h2>
  <table class="t prov">{rows}</table>
  <h3>Stage timings <small>this build, {total:.1f} s in stages</small></h3>
  <table class="t" id="timings"><thead><tr><th>stage</th><th>what</th><th class="num">wall</th><th class="num">CPU</th><th>source</th></tr></thead>
  <tbody>{trows}</tbody></table>
  <p class="note">Stages are stored in <code>.stages/</code> beside this page, keyed by a hash of the model files, the data,
  the seed and the parameters; an interrupted build resumes from them.</p>
</section>"""


def render_page(ctx: Context, provenance: dict, timings: Sequence[Any]) -> str:
    """The whole atlas as one HTML document."""
    card = ctx.outputs["model_card"].meta
    accuracy = card["evaluation"]["accuracy"]
    arch = card["architecture"]
    toc = ['<li><a href="#model-card">Model card</a></li>', '<li><a href="#layers">Layers</a><ol>']
    toc += [f'<li><a href="#layer-{esc(l)}">{esc(l)}</a></li>' for l in ctx.layers]
    toc += ["</ol></li>", '<li><a href="#maps">Every map</a><ol>']
    toc += [f'<li><a href="#maps-{esc(l)}">{esc(l)} maps</a></li>' for l in ctx.conv_layers]
    toc += ["</ol></li>", '<li><a href="#classes">Class visualisations</a></li>', '<li><a href="#compare">4 versus 9</a></li>',
            '<li><a href="#mistakes">Mistakes explained</a></li>', '<li><a href="#dream">DeepDream</a></li>',
            '<li><a href="#provenance">Provenance &amp; timings</a></li>']
    alive = " · ".join(f"{l}: {ctx.outputs[f'oip:{l}'].meta['alive']}/{ctx.outputs[f'oip:{l}'].meta['maps']}"
                       for l in ctx.conv_layers)
    body = [section_model_card(ctx), '<div id="layers"></div>']
    body += [section_layer(ctx, layer) for layer in ctx.layers]
    body.append('<div id="maps"></div>')
    body += [section_maps(ctx, layer) for layer in ctx.conv_layers]
    body += [section_classes(ctx), section_compare(ctx), section_mistakes(ctx), section_dream(ctx),
             section_provenance(ctx, provenance, timings)]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>convscope atlas — {esc(arch)}</title>
<link rel="icon" href="data:,">
<style>{CSS}</style>
<script>{SCRIPT}</script>
</head><body>
<nav class="toc" aria-label="contents"><div class="brand">convscope atlas</div>
<div class="sub">{esc(arch)} · {esc(provenance['profile']['name'])} profile</div>
<form onsubmit="return gotoMap(this)"><input name="address" placeholder="go to map, e.g. {esc(ctx.conv_layers[-1] + ':0') if ctx.conv_layers else ''}" aria-label="go to a map"></form>
<ol>{''.join(toc)}</ol>
<div class="stat">test accuracy<b>{percent(accuracy)}</b>maps responding<br>{esc(alive)}</div>
</nav>
<main>
<header class="top"><h1>Inside {esc(arch)}</h1>
<p>{card['total_params']:,} parameters · test accuracy {percent(accuracy)} · built {esc(provenance['built'])} with convscope {esc(provenance['library_version'])}</p>
<p class="lead" style="margin-top:8px">How to read it: the model card says what the network is and how well it does; each layer
section shows what its maps respond to — activations for one digit per class, the optimised input pattern (OIP) of every map and
the test images that excite it most. Click any OIP tile (or type a map such as <code>Conv2D_3:120</code> in the box on the left)
for that map's own card. The last sections show what the network thinks the classes look like, why 4s and 9s get confused,
its mistakes, and a DeepDream.</p></header>
{''.join(body)}
</main></body></html>
"""
