"""Look-inside commands: ``activations``, ``filters``, ``predict``, ``compare``,
``mistakes``, ``topk``. Thin: parse, call the :mod:`convscope.inside` engines, draw
with :mod:`convscope.render.inside`, write PNG / NPY / JSON via :mod:`convscope.io`."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from convscope.cli.common import (
    data_dir_option,
    device_option,
    echo_err,
    emit_json,
    fail,
    json_option,
    load_model_or_fail,
    model_option,
    out_option,
)
from convscope.cli.images import image_option, resolve_image, resolve_images, split_image_texts

CMAPS = ("viridis", "magma", "inferno", "jet", "gray", "binary")


# -- shared helpers -------------------------------------------------------------
@contextlib.contextmanager
def _progress(description: str, enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar on stderr; yields a ``progress(done, total)`` callback."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def _slug(text: str) -> str:
    stem = Path(text).stem if not re.match(r"^(test|train):\d+$", text) else text.replace(":", "-")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "image"


def _model_label(model_path: Path | None) -> str:
    return str(model_path) if model_path is not None else "shipped Model A (seed_cnn)"


def _load_split(split: str, data_dir: Path | None):
    from convscope.data import DataNotFoundError, DatasetError, IdxError, load_split

    try:
        return load_split(split, "mnist", data_dir)
    except (DataNotFoundError, DatasetError, IdxError, ValueError, OSError) as exc:
        fail(str(exc))


def _subset(split, num_images: int | None):
    """The first ``num_images`` images of a split (all when ``None``)."""
    if num_images is None or num_images >= len(split):
        return split
    import dataclasses

    return dataclasses.replace(split, images=split.images[:num_images], labels=split.labels[:num_images])


def _layers_or_fail(model, texts: tuple[str, ...] | list[str], allowed_all: list[str]) -> list[str]:
    from convscope.address import AddressError, resolve_address

    names: list[str] = []
    for text in texts:
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            if part.lower() == "all":
                names.extend(allowed_all)
                continue
            try:
                names.append(resolve_address(model, part).layer)
            except AddressError as exc:
                fail(str(exc))
    if not names:
        fail("no layer given: use e.g. --layer Conv2D_1 (or --layer all)")
    return list(dict.fromkeys(names))


def _writer(out_dir: Path):
    """Collects written files; stops with one line when the folder cannot be written."""
    from convscope import io

    files: dict[str, str] = {}

    def write(kind: str, name: str, value: Any, key: str | None = None) -> None:
        path = out_dir / name
        try:
            if kind == "figure":
                io.save_figure(path, value)
            elif kind == "npy":
                io.save_npy(path, value)
            elif kind == "json":
                io.write_json(path, value)
            elif kind == "image":
                io.save_image(path, value)
        except OSError as exc:
            fail(f"cannot write {path}: {exc.strerror or exc}")
        files[key or name] = str(path)

    return write, files


def _input_png(image) -> Any:
    from PIL import Image

    return Image.fromarray(image).resize((112, 112), Image.Resampling.NEAREST)


def _class_names(model) -> list[str]:
    names = getattr(getattr(model, "config", None), "class_names", None)
    return list(names) if names else [str(i) for i in range(10)]


def _caption(picked, probabilities, names) -> str:
    predicted = int(probabilities.argmax())
    label = f" (label {names[picked.label]})" if picked.label is not None else ""
    return f"{picked.source}{label}\npredicted {names[predicted]} ({float(probabilities[predicted]):.1%})"


# -- activations ----------------------------------------------------------------
@click.command("activations")
@image_option
@click.option("--layer", "-l", "layers", multiple=True, default=("Conv2D_1",), show_default=True,
              help="Layer(s) to show: a name (Conv2D_1 … Dense_2, logits, probabilities), repeat or comma-separate; "
                   "'all' = every layer.")
@click.option("--per-row", type=click.IntRange(1), default=None,
              help="Maps per grid row. Default 8 for conv/pool layers; dense layers: 10 (Dense_1 as a 10×10 block), about √N for bigger ones (Flatten).")
@click.option("--cmap", type=click.Choice(CMAPS), default="viridis", show_default=True, help="Colormap.")
@click.option("--scaling", type=click.Choice(["raw", "reference"]), default="raw", show_default=True,
              help="raw: the activations as they are (the reference's default; clipping hides what maps react to). "
                   "reference: per map standardised (mean 0, std 1), ×64+128, clipped to 0..255.")
@click.option("--color-scale", type=click.Choice(["shared", "per-map"]), default="shared", show_default=True,
              help="shared: one colour scale (and colourbar) for all maps; per-map: each map stretched min..max.")
@model_option
@data_dir_option
@device_option
@out_option("convscope-out/activations")
@json_option
def activations(image, layers, per_row, cmap, scaling, color_scale, model_path, data_dir, device, out_dir,
                as_json) -> None:
    """Grid of all maps of a layer for one image (reference §2), the input beside it.

    Conv/pool layers: one cell per map (H×W pixels), 8 per row, thin lines between
    maps; row labels give the first map index of the row. Dense layers: one 1×1 cell
    per node. A PNG/JPG is converted like MNIST digits first and the 28×28 result is
    shown, so you see what the model saw.

    Writes into --out, per layer: activations_<image>_<layer>.png and .npy (raw
    activations, (C,H,W) or (F,)), plus input_<image>.png and activations_<image>.json
    (shape, per-map max/mean, probabilities).

    \b
    Examples:
      convscope activations -i test:1302 --layer Conv2D_1
      convscope activations -i my_digit.png --layer all --cmap magma --scaling reference
      convscope activations -i train:7 -l Conv2D_3 -l Dense_1 --color-scale per-map --json
    """
    from convscope.address import layer_names
    from convscope.inside import layer_activations
    from convscope.render.inside import activation_grid_figure

    model = load_model_or_fail(model_path, device)
    picked = resolve_image(image, data_dir)
    names = _layers_or_fail(model, layers, layer_names(model))
    with _progress("activations", enabled=len(names) > 2) as progress:
        outputs = layer_activations(model, picked.image, names + ["probabilities"], batch_size=1)
        probabilities = outputs["probabilities"][0]
        class_names = _class_names(model)
        caption = _caption(picked, probabilities, class_names)
        write, files = _writer(out_dir)
        slug = _slug(picked.source)
        write("image", f"input_{slug}.png", _input_png(picked.image), "input_png")
        report_layers = {}
        for done, name in enumerate(names, start=1):
            values = outputs[name][0]
            figure = activation_grid_figure(
                values, layer=name, image=picked.image, image_title=caption, original=picked.original,
                per_row=per_row, cmap=cmap, scaling=scaling, color_scale=color_scale,
            )
            write("figure", f"activations_{slug}_{name}.png", figure)
            write("npy", f"activations_{slug}_{name}.npy", values)
            flat = values.reshape(values.shape[0], -1) if values.ndim == 3 else values.reshape(-1, 1)
            report_layers[name] = {
                "shape": list(values.shape),
                "max": float(values.max()),
                "mean": float(values.mean()),
                "fraction_positive": float((values > 0).float().mean()),
                "map_max": [round(float(v), 6) for v in flat.max(1).values],
                "map_mean": [round(float(v), 6) for v in flat.mean(1)],
            }
            if progress:
                progress(done, len(names))
    report = {
        "image": picked.source,
        "label": picked.label,
        "model": _model_label(model_path),
        "predicted": int(probabilities.argmax()),
        "probabilities": [round(float(p), 6) for p in probabilities],
        "parameters": {"layers": names, "per_row": per_row, "cmap": cmap, "scaling": scaling,
                       "color_scale": color_scale},
        "layers": report_layers,
    }
    write("json", f"activations_{slug}.json", report, "json")
    report["files"] = files
    if as_json:
        emit_json(report)
        return
    click.echo(f"{picked.source}: predicted {class_names[report['predicted']]} "
               f"({max(report['probabilities']):.1%})" + (f", label {picked.label}" if picked.label is not None else ""))
    for name, info in report_layers.items():
        click.echo(f"  {name:<14} shape {tuple(info['shape'])}, max {info['max']:.3f}, "
                   f"{100 * info['fraction_positive']:.0f}% units > 0")
    echo_err(f"wrote {len(files)} files into {out_dir}")


# -- filters --------------------------------------------------------------------
@click.command("filters")
@click.option("--layer", "-l", "layers", multiple=True, default=("Conv2D_1",), show_default=True,
              help="Conv layer(s): Conv2D_1 (32 kernels 3×3), Conv2D_2 (64×32), Conv2D_3 (128×64); 'all' = every "
                   "conv layer. Repeat or comma-separate.")
@click.option("--cmap", default="RdBu_r", show_default=True, help="Diverging colormap (0 = white).")
@model_option
@device_option
@out_option("convscope-out/filters")
@json_option
def filters(layers, cmap, model_path, device, out_dir, as_json) -> None:
    """Raw kernel weights of conv layers, one shared symmetric colour scale per layer.

    Conv2D_1: its 32 kernels as 3×3 images (8 per row). Deeper layers: an out × in
    grid of 3×3 kernels (row = output map, column = input map).

    Writes filters_<layer>.png, filters_<layer>.npy ((out, in, 3, 3) weights) and
    filters.json (shape, weight range, per-kernel L2 norms, biases).

    \b
    Examples:
      convscope filters
      convscope filters --layer all --json
    """
    from matplotlib import colormaps

    from convscope.address import AddressError
    from convscope.inside import conv_filters, conv_layers
    from convscope.render.inside import kernel_grid_figure

    if cmap not in colormaps:
        fail(f"unknown colormap {cmap!r}; try RdBu_r, coolwarm, PiYG or seismic")
    model = load_model_or_fail(model_path, device)
    names = _layers_or_fail(model, layers, conv_layers(model))
    write, files = _writer(out_dir)
    report_layers = {}
    for name in names:
        try:
            bank = conv_filters(model, name)
        except AddressError as exc:
            fail(str(exc))
        write("figure", f"filters_{name}.png", kernel_grid_figure(bank, cmap=cmap))
        write("npy", f"filters_{name}.npy", bank.weights)
        norms = bank.weights.flatten(2).norm(dim=2)  # (out, in)
        report_layers[name] = {
            "shape": list(bank.weights.shape),
            "min": float(bank.weights.min()),
            "max": float(bank.weights.max()),
            "color_limit": bank.limit,
            "kernel_l2_norm_per_output": [round(float(v), 6) for v in bank.weights.flatten(1).norm(dim=1)],
            "mean_kernel_l2_norm": float(norms.mean()),
            "bias": None if bank.bias is None else [round(float(v), 6) for v in bank.bias],
        }
    report = {"model": _model_label(model_path), "parameters": {"layers": names, "cmap": cmap},
              "layers": report_layers}
    write("json", "filters.json", report, "json")
    report["files"] = files
    if as_json:
        emit_json(report)
        return
    for name, info in report_layers.items():
        click.echo(f"{name}: kernels {tuple(info['shape'])}, weights {info['min']:.3f} .. {info['max']:.3f}")
    echo_err(f"wrote {len(files)} files into {out_dir}")


# -- predict --------------------------------------------------------------------
@click.command("predict")
@click.argument("images_arg", nargs=-1, metavar="[IMAGE]...")
@image_option(default=None, multiple=True)
@click.option("--top", "top_k", type=click.IntRange(1, 10), default=3, show_default=True,
              help="How many most probable classes to list.")
@model_option
@data_dir_option
@device_option
@out_option("convscope-out/predict")
@json_option
def predict(images_arg, image, top_k, model_path, data_dir, device, out_dir, as_json) -> None:
    """Class probabilities for images: bars per image and the top classes.

    IMAGE is test:INDEX, train:INDEX or a PNG/JPG (given as arguments or with -i;
    default test:1302 — in the real MNIST file that is a "1", not the reference's
    ambiguous "4"; `convscope compare` finds ambiguous 4s from the data). Writes
    predict_<image>.png per image and predictions.json.

    \b
    Examples:
      convscope predict test:1302
      convscope predict my_digit.png test:1270 --top 5 --json
    """
    from convscope.inside import predict_images
    from convscope.render.inside import probability_figure

    texts = list(images_arg) + list(image or ())
    if not texts:
        texts = ["test:1302"]
    model = load_model_or_fail(model_path, device)
    picked = resolve_images(texts, data_dir)
    import numpy as np

    predictions = predict_images(model, np.stack([p.image for p in picked]), class_names=_class_names(model))
    write, files = _writer(out_dir)
    results = []
    for item, prediction in zip(picked, predictions):
        slug = _slug(item.source)
        write("figure", f"predict_{slug}.png", probability_figure(
            prediction.probabilities, image=item.image, label=item.label, source=item.source,
            class_names=prediction.class_names, original=item.original), f"predict_{slug}_png")
        results.append({"image": item.source, "label": item.label, **prediction.to_dict(top_k)})
    report = {"model": _model_label(model_path), "parameters": {"top": top_k}, "predictions": results}
    write("json", "predictions.json", report, "json")
    report["files"] = files
    if as_json:
        emit_json(report)
        return
    for result in results:
        tops = ", ".join(f"{t['name']} {t['probability']:.1%}" for t in result["top"])
        label = f" (label {result['label']})" if result["label"] is not None else ""
        click.echo(f"{result['image']}{label}: {tops}")
    echo_err(f"wrote {len(files)} files into {out_dir}")


# -- compare --------------------------------------------------------------------
@click.command("compare")
@click.option("--classes", nargs=2, type=click.IntRange(0, 9), default=(4, 9), show_default=True,
              help="The two classes A B to compare.")
@click.option("--layers", "layers_text", default="Conv2D_3,Dense_1", show_default=True,
              help="Comma-separated layers to compare.")
@click.option("--examples", "n_examples", type=click.IntRange(1, 12), default=3, show_default=True,
              help="Clear examples per class, and ambiguous A examples, chosen automatically.")
@click.option("--images", "images_text", default=None,
              help="Use these test images instead of the automatic choice, e.g. "
                   "test:1270,test:1816,test:7,test:9 (each must be a true A or B; they are grouped by their label, and the "
                   "ambiguous figure shows them in the order given).")
@click.option("--top", "top_n", type=click.IntRange(1, 200), default=20, show_default=True,
              help="Rows of the Cohen's d table (and outlined positions: the top 10).")
@click.option("--threshold", type=float, default=0.0, show_default=True,
              help="A unit counts as 'active' when its activation is > this value.")
@click.option("--cmap", type=click.Choice(CMAPS), default="viridis", show_default=True, help="Colormap of the grids.")
@click.option("--num-images", type=click.IntRange(2), default=None,
              help="Use only the first N images of the split (a quick look; default: all).")
@model_option
@data_dir_option
@device_option
@out_option("convscope-out/compare")
@json_option
def compare(classes, layers_text, n_examples, images_text, top_n, threshold, cmap, num_images, model_path, data_dir,
            device, out_dir, as_json) -> None:
    """Compare two classes inside the network (reference §3, "FCPs").

    \b
    1. Side by side: the Conv2D_3 maps and Dense_1 nodes of three clear A and three
       clear B test images; positions active in ALL A and in NO B are outlined red,
       the reverse cyan  (compare_A_B_patterns.png).
    2. The reference's "Part VI": ambiguous A images next to clear A and B images with
       their probability vectors  (compare_A_B_ambiguous.png).
    3. Over the whole test set: class-mean activation per position and the positions /
       nodes that best separate A from B, ranked by Cohen's d
       (compare_A_B_separation.png, table in compare_A_B.json, arrays in .npy).

    How examples are chosen: the reference's test indices (1270, 1302, 1816, 1249, 1410,
    1858) do not all hold those digits in the real MNIST file (1302 is a "1"), so the
    examples come from the data and the model: "clear" = correctly classified with the
    largest log-probability margin; "ambiguous A" = true A that the model still calls
    A, with the highest P(B). Override with --images.

    \b
    Examples:
      convscope compare --classes 4 9
      convscope compare --classes 3 5 --layers Conv2D_3 --top 50 --json
      convscope compare --classes 4 9 --images test:1270,test:1816,test:4860,test:7,test:9
    """
    from convscope.data import is_dataset_ref, parse_image_ref
    from convscope.inside import compare_classes
    from convscope.inside.class_patterns import Examples
    from convscope.render.inside import MARK_A, MARK_B, class_rows_figure, separation_figure

    class_a, class_b = classes
    if class_a == class_b:
        fail(f"--classes needs two different classes (got {class_a} twice)")
    model = load_model_or_fail(model_path, device)
    names = _layers_or_fail(model, [layers_text], [])
    split = _subset(_load_split("test", data_dir), num_images)
    class_names = list(split.class_names)
    examples = None
    given_order: list[int] = []
    if images_text:
        texts = split_image_texts(images_text)
        chosen_a, chosen_b = [], []
        for text in texts:
            if not is_dataset_ref(text) or parse_image_ref(text)[0] != "test":
                fail(f"--images takes test-set references like test:1270 (got {text!r})")
            index = parse_image_ref(text)[1]
            if not 0 <= index < len(split):
                fail(f"{text}: the test set has {len(split)} images, so the index must be 0..{len(split) - 1}")
            label = int(split.labels[index])
            given_order.append(index)
            if label == class_a:
                chosen_a.append(index)
            elif label == class_b:
                chosen_b.append(index)
            else:
                fail(f"{text} is a '{class_names[label]}', neither class {class_a} nor {class_b}; "
                     "pick test images of the two compared classes")
        if not chosen_a or not chosen_b:
            fail(f"--images needs at least one true {class_a} and one true {class_b}")
        examples = Examples(clear_a=chosen_a, clear_b=chosen_b, ambiguous_a=[], chosen_by="--images")
    with _progress(f"activations of {len(split):,} test images") as progress:
        comparison = compare_classes(model, split.images, split.labels, class_a, class_b, layers=names,
                                     n_examples=n_examples, examples=examples, threshold=threshold,
                                     progress=progress)
    ex = comparison.examples
    a_name, b_name = class_names[class_a], class_names[class_b]

    def row(index: int, role: str) -> dict:
        return comparison.example_row(index, role, class_names)

    marks = {name: [(comparison.layers[name].a_only.numpy(), MARK_A), (comparison.layers[name].b_only.numpy(), MARK_B)]
             for name in names}
    legend = [(MARK_A, f"active in all {a_name}s shown, in no {b_name}"),
              (MARK_B, f"active in all {b_name}s shown, in no {a_name}")]
    write, files = _writer(out_dir)
    base = f"compare_{a_name}_{b_name}"
    chosen = "chosen with --images" if ex.chosen_by == "--images" else "clearest by the model"
    rows = [row(i, f"{a_name}:") for i in ex.clear_a] + [row(i, f"{b_name}:") for i in ex.clear_b]
    write("figure", f"{base}_patterns.png", class_rows_figure(
        rows, names, marks=marks, cmap=cmap, legend=legend, class_names=class_names,
        title=f"Class patterns: {len(ex.clear_a)} '{a_name}' vs {len(ex.clear_b)} '{b_name}' test images ({chosen})",
    ), "patterns_png")
    if given_order:
        rows6 = [row(i, f"{class_names[comparison.labels[i]]}:") for i in dict.fromkeys(given_order)]
        write("figure", f"{base}_ambiguous.png", class_rows_figure(
            rows6, names, marks=marks, cmap=cmap, legend=legend, class_names=class_names,
            title=f"Your '{a_name}' and '{b_name}' images with their probability vectors (order as given)",
        ), "ambiguous_png")
    elif ex.ambiguous_a:
        rows6 = ([row(i, f"ambiguous {a_name}") for i in ex.ambiguous_a] + [row(ex.clear_a[0], f"clear {a_name}")]
                 + [row(i, f"clear {b_name}") for i in ex.clear_b])
        write("figure", f"{base}_ambiguous.png", class_rows_figure(
            rows6, names, marks=marks, cmap=cmap, legend=legend, class_names=class_names,
            title=(f"Ambiguous '{a_name}'s (true {a_name}, highest P({b_name}) while still predicted {a_name}) "
                   f"next to clear '{a_name}' and '{b_name}'"),
        ), "ambiguous_png")
    separations = [comparison.layers[name].separation for name in names]
    write("figure", f"{base}_separation.png", separation_figure(separations, top=min(10, top_n), cmap=cmap,
                                                                class_names=class_names), "separation_png")
    for name in names:
        sep = comparison.layers[name].separation
        write("npy", f"{base}_{name}_cohens_d.npy", sep.cohens_d)
        write("npy", f"{base}_{name}_class_means.npy", sep.class_means)
    report = {
        "model": _model_label(model_path),
        "parameters": {"classes": [class_a, class_b], "layers": names, "examples": n_examples, "top": top_n,
                       "threshold": threshold, "images": images_text},
        "note": ("examples chosen from the data and the model (the reference's indices 1270/1302/1816/1249/1410/1858 "
                 "do not all hold those digits in the real MNIST test file)") if ex.chosen_by != "--images" else None,
        **comparison.to_dict(top=top_n),
    }
    write("json", f"{base}.json", report, "json")
    report["files"] = files
    if as_json:
        emit_json(report)
        return
    kind = "Given" if ex.chosen_by == "--images" else "Clear"
    click.echo(f"{kind} {a_name}s: {', '.join(f'test:{i}' for i in ex.clear_a)}; {kind.lower()} {b_name}s: "
               f"{', '.join(f'test:{i}' for i in ex.clear_b)}"
               + (f"; ambiguous {a_name}s: {', '.join(f'test:{i}' for i in ex.ambiguous_a)}" if ex.ambiguous_a else ""))
    for i in ex.ambiguous_a:
        probs = comparison.probabilities[i]
        click.echo(f"  test:{i}: P({a_name}) {float(probs[class_a]):.1%}, P({b_name}) {float(probs[class_b]):.1%}")
    for name in names:
        layer = report["layers"][name]
        click.echo(f"{name}: {len(layer['active_in_all_a_and_no_b'])} positions only in {a_name}s, "
                   f"{len(layer['active_in_all_b_and_no_a'])} only in {b_name}s; best separating: "
                   + ", ".join(f"{r['address']} (d={r['cohens_d']:+.2f})" for r in layer["separating"][:3]))
    echo_err(f"wrote {len(files)} files into {out_dir}")




# -- mistakes -------------------------------------------------------------------
def _parse_pair(_ctx, _param, value):
    if value is None:
        return None
    match = re.match(r"^\s*(\d)\s*[,:/>-]+\s*(\d)\s*$", value)
    if not match:
        raise click.BadParameter("use TRUE,PREDICTED with two digits, e.g. --pair 4,9")
    true, pred = int(match[1]), int(match[2])
    if true == pred:
        raise click.BadParameter("true and predicted class must differ (a mistake), e.g. --pair 4,9")
    return true, pred


@click.command("mistakes")
@click.option("--pair", callback=_parse_pair, default=None, metavar="TRUE,PRED",
              help="Only mistakes with this true and predicted class, e.g. 4,9 (true 4 predicted as 9).")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True, help="At most this many images.")
@click.option("--order", type=click.Choice(["confidence", "index"]), default="confidence", show_default=True,
              help="confidence: most confident mistakes first; index: test-set order.")
@click.option("--per-row", type=click.IntRange(1), default=10, show_default=True, help="Images per gallery row.")
@model_option
@data_dir_option
@device_option
@out_option("convscope-out/mistakes")
@json_option
def mistakes(pair, limit, order, per_row, model_path, data_dir, device, out_dir, as_json) -> None:
    """Gallery of misclassified test images with true / predicted labels and
    probabilities, plus the confusion matrix.

    Writes mistakes.png (the gallery), confusion.png and mistakes.json (every shown
    mistake: image, true, predicted, P(predicted), P(true)).

    \b
    Examples:
      convscope mistakes
      convscope mistakes --pair 4,9 --json
    """
    from convscope.evaluation import evaluate_model
    from convscope.inside import select_mistakes
    from convscope.render.confusion import confusion_figure
    from convscope.render.inside import mistakes_figure

    model = load_model_or_fail(model_path, device)
    split = _load_split("test", data_dir)
    with _progress(f"classifying {len(split):,} test images") as progress:
        evaluation = evaluate_model(model, split, progress=progress)
    chosen = select_mistakes(evaluation, pair=pair, limit=limit, order=order)
    names = tuple(evaluation.class_names)
    write, files = _writer(out_dir)
    write("figure", "mistakes.png", mistakes_figure(chosen, split.images, per_row=per_row, class_names=names),
          "mistakes_png")
    write("figure", "confusion.png", confusion_figure(evaluation), "confusion_png")
    count_pair = int(evaluation.confusion[pair[0], pair[1]]) if pair else None
    report = {
        "model": _model_label(model_path),
        "accuracy": evaluation.accuracy,
        "parameters": {"pair": list(pair) if pair else None, "limit": limit, "order": order},
        "pair_count": count_pair,
        **chosen.to_dict(split="test", class_names=names),
    }
    write("json", "mistakes.json", report, "json")
    report["files"] = files
    if as_json:
        emit_json(report)
        return
    what = f"true {pair[0]} predicted {pair[1]}" if pair else "all classes"
    click.echo(f"accuracy {evaluation.accuracy:.2%}: {chosen.total_errors} mistakes; {what}: "
               f"{count_pair if pair else chosen.total_errors}, showing {len(chosen.indices)}")
    for entry in report["mistakes"][:5]:
        click.echo(f"  {entry['image']}: {entry['true']} → {entry['predicted']} ({entry['p_predicted']:.1%})")
    echo_err(f"wrote {len(files)} files into {out_dir}")


# -- topk -----------------------------------------------------------------------
def _parse_maps(text: str | None, count: int) -> list[int] | None:
    if text is None:
        return None
    chosen: list[int] = []
    for part in text.split(","):
        part = part.strip()
        match = re.match(r"^(\d+)(?:-(\d+))?$", part)
        if not match:
            fail(f"cannot read --maps {text!r}: use e.g. 0-15,120")
        low, high = int(match[1]), int(match[2] or match[1])
        if low > high or high >= count:
            fail(f"--maps {part}: the layer has {count} maps, so use indices 0..{count - 1}")
        chosen.extend(range(low, high + 1))
    return list(dict.fromkeys(chosen))


@click.command("topk")
@click.option("--layer", "-l", default="Conv2D_3", show_default=True, help="Layer whose maps (or nodes) to rank.")
@click.option("--k", "k", type=click.IntRange(1, 100), default=9, show_default=True, help="Images per map.")
@click.option("--maps", "maps_text", default=None,
              help="Maps to draw, e.g. 0-15,120 (default: all; the JSON/NPY always cover all maps).")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="Images to search.")
@click.option("--per-row", type=click.IntRange(1), default=8, show_default=True, help="Map blocks per row.")
@click.option("--batch-size", type=click.IntRange(1), default=1000, show_default=True, help="Images per forward pass.")
@click.option("--num-images", type=click.IntRange(2), default=None,
              help="Use only the first N images of the split (a quick look; default: all).")
@model_option
@data_dir_option
@device_option
@out_option("convscope-out/topk")
@json_option
def topk(layer, k, maps_text, split, per_row, batch_size, num_images, model_path, data_dir, device, out_dir, as_json) -> None:
    """For every map of a layer, the k dataset images that activate it most (by the
    map's maximal activation), with the receptive field of the maximal unit outlined.

    All maps are ranked in one batched pass over the images. Writes
    topk_<layer>.png, topk_<layer>_indices.npy / _values.npy ((maps, k)) and
    topk_<layer>.json (per map: images, activations, positions, receptive fields).

    \b
    Examples:
      convscope topk --layer Conv2D_3
      convscope topk --layer Conv2D_1 --k 16 --maps 0-7 --json
    """
    from convscope.address import AddressError, resolve_address
    from convscope.inside import topk_examples
    from convscope.render.inside import topk_gallery_figure

    model = load_model_or_fail(model_path, device)
    try:
        name = resolve_address(model, layer).layer
    except AddressError as exc:
        fail(str(exc))
    data = _subset(_load_split(split, data_dir), num_images)
    with _progress(f"ranking {name} maps over {len(data):,} {split} images") as progress:
        result = topk_examples(model, data.images, name, k=k, batch_size=batch_size, progress=progress)
    maps = _parse_maps(maps_text, result.values.shape[0])
    write, files = _writer(out_dir)
    write("figure", f"topk_{name}.png", topk_gallery_figure(result, data.images, maps=maps, per_row=per_row,
                                                           split=split), "png")
    write("npy", f"topk_{name}_indices.npy", result.indices, "indices_npy")
    write("npy", f"topk_{name}_values.npy", result.values, "values_npy")
    report = {"model": _model_label(model_path),
              "parameters": {"layer": name, "k": result.k, "split": split, "maps_drawn": maps},
              **result.to_dict()}
    write("json", f"topk_{name}.json", report, "json")
    report["files"] = files
    if as_json:
        emit_json(report)
        return
    dead = int((result.values[:, 0] <= 0).sum())
    click.echo(f"{name}: {result.values.shape[0]} maps ranked over {result.num_images:,} {split} images; "
               f"{dead} maps never activate (> 0)")
    echo_err(f"wrote {len(files)} files into {out_dir}")
