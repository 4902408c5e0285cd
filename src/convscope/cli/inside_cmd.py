"""Look-inside commands: ``activations``, ``filters``, ``predict``, ``compare``,
``mistakes``, ``topk``. Thin: parse the options, load the model and the data,
call one :mod:`convscope.app.inside` function, write its result.

Every command works on any model with a spec; images and datasets default to the
model's own (``--dataset`` chooses another); classes are given by name or index.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from convscope.cli.common import (
    FiniteFloatRange,
    data_dir_option,
    dataset_option,
    device_option,
    fail,
    json_option,
    load_model_or_fail,
    model_option,
    model_split_or_fail,
    out_option,
    short,
)
from convscope.cli.images import image_option, resolve_image, resolve_images, split_image_texts

CMAPS = ("viridis", "magma", "inferno", "jet", "gray", "binary")
INPUT_CMAPS = ("gray", "gray_r", "binary", "viridis", "magma", "inferno", "jet")
#: Longest text an option may hold before it is refused (and never echoed whole).
MAX_TEXT = 4096


# -- shared helpers (also used by evaluate_cmd) ------------------------------------------------


def model_label(model_path: Path | None) -> str:
    return str(model_path) if model_path is not None else "shipped Model A (seed_cnn)"


def split_layer_texts(texts: str | Sequence[str] | None) -> list[str]:
    """``("Conv2D_1,Dense_1", "Conv2D_3:5@1,2")`` → ``["Conv2D_1", "Dense_1", "Conv2D_3:5@1,2"]``:
    commas separate layers, except the one inside a unit position ``@ROW,COL``."""
    if texts is None:
        return []
    if isinstance(texts, str):
        texts = [texts]
    out: list[str] = []
    for text in texts:
        parts = str(text).split(",")
        i = 0
        while i < len(parts):
            part = parts[i]
            if re.search(r"@\s*-?\d+\s*$", part) and i + 1 < len(parts) and re.fullmatch(r"\s*-?\d+\s*", parts[i + 1]):
                part = f"{part},{parts[i + 1]}"
                i += 1
            if part.strip():
                out.append(part.strip())
            i += 1
    return out


def check_length(text: str | None, what: str) -> None:
    if text is not None and len(str(text)) > MAX_TEXT:
        fail(f"{what} {short(text, 60)!r} is too long (at most {MAX_TEXT:,} characters); "
             "`convscope summary` lists the model's names")


def prepare_out(out_dir: Path) -> None:
    """Stop before any long work when the output folder cannot be written
    (:func:`convscope.cli.output.check_output_folder`; creates nothing)."""
    from convscope.cli.output import check_output_folder

    check_output_folder(out_dir)


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a use case; a user error or Ctrl-C becomes one clear line (nothing written)."""
    from convscope.address import AddressError
    from convscope.app.inside import InsideError
    from convscope.data import DataNotFoundError, DatasetError
    from convscope.data.preprocess import ImageLayoutError
    from convscope.progress import Cancelled
    from convscope.spec import SpecError

    try:
        return fn(*args, **kwargs)
    except Cancelled:
        fail("cancelled; nothing was written")
    except (AddressError, InsideError, SpecError, ImageLayoutError, DatasetError, DataNotFoundError) as exc:
        fail(" ".join(str(exc).split())[:1000])
    except RuntimeError as exc:
        if "not reached" not in str(exc):
            raise
        fail(" ".join(str(exc).split())[:1000])


def write_outputs(result: Any, out_dir: Path, *, figures: bool = True) -> list[Path]:
    """Write a result: its pictures (``pictures()``), text files (``texts()``), then
    figures, arrays and JSON (:func:`convscope.cli.output.write_result`); the JSON
    lists every file written. All or nothing (:func:`convscope.cli.output.writing`)."""
    from convscope import io
    from convscope.cli.output import write_result, writing

    extra: list[Path] = []
    with writing(out_dir):
        io.make_folders(out_dir)
        pictures = result.pictures() if hasattr(result, "pictures") else {}
        for stem, picture in pictures.items():
            extra.append(io.save_image(out_dir / f"{stem}.png", picture))
        texts = result.texts() if hasattr(result, "texts") else {}
        for name, text in texts.items():
            extra.append(io.atomic_write_text(out_dir / name, text))
        written = write_result(result, out_dir, figures=figures)
        paths = extra + written
        if extra:
            data = result.to_json()
            data["files"] = [str(p) for p in paths]
            io.write_json(written[-1], data)
    return paths


def run_use_case(fn: Callable[..., Any], *args: Any, out_dir: Path, as_json: bool, figures: bool = True,
                 **kwargs: Any) -> None:
    """The whole tail of a command: the use case under a terminal progress bar, the
    files, the summary or JSON."""
    from convscope.cli.output import finish, terminal_progress

    prepare_out(out_dir)
    with terminal_progress(disable=as_json) as progress:
        result = call(fn, *args, progress=progress, **kwargs)
    written = write_outputs(result, out_dir, figures=figures)
    finish(result, written, as_json)


def _spec(model):
    from convscope.spec import spec_of

    return spec_of(model)


def _default_image(model) -> str:
    return "test:1302" if _spec(model).dataset == "mnist" else "test:0"


def input_cmap_option(func):
    return click.option("--input-cmap", type=click.Choice(INPUT_CMAPS), default="gray", show_default=True,
                        help="Colormap of gray input images (RGB inputs are shown as they are).")(func)


def _split_option(func):
    return click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
                        help="Which split of the dataset to use.")(func)


# -- activations ----------------------------------------------------------------------------------
@click.command("activations")
@click.option("--image", "-i", "image", default=None, metavar="IMAGE",
              help="Image: test:INDEX or train:INDEX of the dataset, or an image file (converted as the model's spec "
                   "says). Default: test:1302 for MNIST models, else test:0.")
@click.option("--layer", "-l", "layers", multiple=True, default=(),
              help="Layer(s) to show: a name (Conv2D_1, stages.0, …, logits, probabilities) or an address with a map "
                   "or unit (Conv2D_3:5, Conv2D_3:5@1,2: outlined, its value printed); repeat or comma-separate; "
                   "'all' = every layer. Default: the first conv layer.")
@click.option("--per-row", type=click.IntRange(1, 4096), default=None,
              help="Maps per grid row. Default 8 for conv/pool layers; dense layers: 10 (100 nodes as a 10×10 block), "
                   "about √N for bigger ones.")
@click.option("--first", type=click.IntRange(1), default=None,
              help="Draw only the first N maps (nodes) of each layer; the .npy and JSON keep all.")
@click.option("--cmap", type=click.Choice(CMAPS), default="viridis", show_default=True, help="Colormap of the maps.")
@click.option("--scaling", type=click.Choice(["raw", "reference"]), default="raw", show_default=True,
              help="raw: the activations as they are (the reference's default; clipping hides what maps react to). "
                   "reference: per map standardised (mean 0, std 1), ×64+128, clipped to 0..255.")
@click.option("--color-scale", type=click.Choice(["shared", "per-map"]), default="shared", show_default=True,
              help="shared: one colour scale (and colourbar) for all maps; per-map: each map stretched min..max.")
@input_cmap_option
@model_option
@dataset_option
@data_dir_option
@device_option
@out_option("convscope-out/activations")
@json_option
def activations(image, layers, per_row, first, cmap, scaling, color_scale, input_cmap, model_path, dataset, data_dir,
                device, out_dir, as_json) -> None:
    """Grid of all maps of a layer for one image (reference §2), the input beside it.

    Conv/pool layers: one cell per map (H×W pixels), 8 per row, thin lines between
    maps; row labels give the first map index of the row. Dense layers: one 1×1 cell
    per node. An image file is converted as the model's spec says (MNIST-style for
    the digit models) and the result is shown, so you see what the model saw; RGB
    inputs are shown in colour.

    Writes into --out, per layer: activations_<image>_<layer>.png and .npy (raw
    activations, (C,H,W) or (F,)), plus input_<image>.png and activations_<image>.json
    (shape, per-map max/mean, probabilities, class names).

    \b
    Examples:
      convscope activations -i test:1302 --layer Conv2D_1
      convscope activations -i my_digit.png --layer all --cmap magma --scaling reference
      convscope activations -i train:7 -l Conv2D_3:5@1,2 -l Dense_1 --first 32 --json
    """
    from convscope.app import inside

    check_length(image, "image")
    texts = split_layer_texts(layers)
    for text in texts:
        check_length(text, "layer")
    model = load_model_or_fail(model_path, device)
    picked = resolve_image(image or _default_image(model), data_dir, dataset, spec=_spec(model))
    run_use_case(inside.activations, model, picked, texts or None, per_row=per_row, cmap=cmap, scaling=scaling,
                 color_scale=color_scale, first=first, input_cmap=input_cmap, model_label=model_label(model_path),
                 out_dir=out_dir, as_json=as_json)


# -- filters --------------------------------------------------------------------------------------
@click.command("filters")
@click.option("--layer", "-l", "layers", multiple=True, default=(),
              help="Conv layer(s), e.g. Conv2D_1 (32 kernels 3×3); 'all' = every convolution. Repeat or "
                   "comma-separate. Default: the first conv layer.")
@click.option("--cmap", default="RdBu_r", show_default=True, help="Diverging colormap (0 = white).")
@click.option("--per-row", type=click.IntRange(1, 1024), default=None, help="Kernels per row (default 8).")
@click.option("--no-color", "no_color", is_flag=True,
              help="Kernels on RGB inputs: one gray tile per channel instead of one colour tile per kernel.")
@model_option
@device_option
@out_option("convscope-out/filters")
@json_option
def filters(layers, cmap, per_row, no_color, model_path, device, out_dir, as_json) -> None:
    """Raw kernel weights of conv layers, one shared symmetric colour scale per layer.

    A first conv layer: its kernels as small images (8 per row) — in colour for an
    RGB model (channel = colour, mid-gray = 0). Deeper layers: an out × in grid of
    kernels (row = output map, column = input map).

    Writes filters_<layer>.png, filters_<layer>.npy ((out, in, kh, kw) weights) and
    filters.json (shape, weight range, per-kernel L2 norms, biases).

    \b
    Examples:
      convscope filters
      convscope filters --layer all --json
    """
    from matplotlib import colormaps

    from convscope.app import inside

    if cmap not in colormaps:
        fail(f"unknown colormap {short(cmap, 40)!r}; try RdBu_r, coolwarm, PiYG or seismic")
    texts = split_layer_texts(layers)
    for text in texts:
        check_length(text, "layer")
    model = load_model_or_fail(model_path, device)
    run_use_case(inside.filters, model, texts or None, cmap=cmap, per_row=per_row, color=not no_color,
                 model_label=model_label(model_path), out_dir=out_dir, as_json=as_json)


# -- predict --------------------------------------------------------------------------------------
@click.command("predict")
@click.argument("images_arg", nargs=-1, metavar="[IMAGE]...")
@image_option(default=None, multiple=True)
@click.option("--top", "top_k", type=click.IntRange(1, 1000), default=3, show_default=True,
              help="How many most probable classes to list.")
@input_cmap_option
@model_option
@dataset_option
@data_dir_option
@device_option
@out_option("convscope-out/predict")
@json_option
def predict(images_arg, image, top_k, input_cmap, model_path, dataset, data_dir, device, out_dir, as_json) -> None:
    """Class probabilities for images: bars per image (class names from the model)
    and the top classes.

    IMAGE is test:INDEX, train:INDEX (of the model's dataset, or --dataset), an
    image file or a folder of images (given as arguments or with -i; default
    test:1302 for MNIST models — in the real MNIST file that is a "1", not the
    reference's ambiguous "4"; `convscope compare` finds ambiguous examples from
    the data — else test:0). Writes predict_<image>.png per image and
    predictions.json; two inputs with the same file name get predict_x.png and
    predict_x-2.png (a note says which is which).

    \b
    Examples:
      convscope predict test:1302
      convscope predict my_digit.png test:1270 --top 5 --json
      convscope predict photos/ --model my_rgb_model.json
    """
    from convscope.app import inside

    texts = list(images_arg) + list(image or ())
    for text in texts:
        check_length(text, "image")
    model = load_model_or_fail(model_path, device)
    picked = resolve_images(texts or [_default_image(model)], data_dir, dataset, spec=_spec(model))
    run_use_case(inside.predict, model, picked, top=top_k, input_cmap=input_cmap, model_label=model_label(model_path),
                 out_dir=out_dir, as_json=as_json)


# -- compare --------------------------------------------------------------------------------------
@click.command("compare")
@click.option("--classes", nargs=2, type=str, default=None, metavar="A B",
              help="The two classes to compare, by name or index (4 9; Sandal Sneaker). Default: the pair the model "
                   "confuses most on the images used (4 vs 9 for the shipped model).")
@click.option("--layers", "layers_text", default=None,
              help="Comma-separated layers to compare. Default: the last conv layer and the hidden dense layers "
                   "(Conv2D_3,Dense_1 for Model A).")
@click.option("--examples", "n_examples", type=click.IntRange(1, 12), default=3, show_default=True,
              help="Clear examples per class, and ambiguous A examples, chosen automatically.")
@click.option("--images", "images_text", default=None,
              help="Use these images instead of the automatic choice, e.g. test:1270,test:1816,test:7,test:9 (each must "
                   "be a true A or B; they are grouped by their label, and the ambiguous figure shows them in the "
                   "order given).")
@click.option("--top", "top_n", type=click.IntRange(1, 200), default=20, show_default=True,
              help="Rows of the Cohen's d table (and outlined positions: the top 10).")
@click.option("--threshold", type=FiniteFloatRange(-1e6, 1e6), default=0.0, show_default=True,
              help="A unit counts as 'active' when its activation is > this value.")
@click.option("--per-row", type=click.IntRange(1, 4096), default=None,
              help="Maps per grid row in the figures. Default: a roughly square grid (12 for 128 maps of 3×3, 10 for "
                   "100 dense nodes), drawn large enough to check each unit.")
@click.option("--cmap", type=click.Choice(CMAPS), default="viridis", show_default=True, help="Colormap of the grids.")
@input_cmap_option
@_split_option
@click.option("--num-images", type=click.IntRange(2), default=None,
              help="Use only the first N images of the split (a quick look; default: all).")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Images per forward pass.")
@model_option
@dataset_option
@data_dir_option
@device_option
@out_option("convscope-out/compare")
@json_option
def compare(classes, layers_text, n_examples, images_text, top_n, threshold, per_row, cmap, input_cmap, split,
            num_images, batch_size, model_path, dataset, data_dir, device, out_dir, as_json) -> None:
    """Compare two classes inside the network (reference §3, "FCPs").

    \b
    1. Side by side: the last conv layer's maps and the hidden dense nodes of three
       clear A and three clear B images; outlined: positions active in ALL A and NO B
       (red), the reverse (cyan), in ALL A and SOME (not all) B (yellow), the reverse
       (magenta)  (compare_A_B_patterns.png).
    2. The reference's "Part VI": ambiguous A images next to clear A and B images with
       their probability vectors  (compare_A_B_ambiguous.png).
    3. Over the whole split: class-mean activation per position and the positions /
       nodes that best separate A from B, ranked by Cohen's d
       (compare_A_B_separation.png, table in compare_A_B.json, arrays in .npy).

    How examples are chosen: from the data and the model (for MNIST, the reference's
    test indices 1270, 1302, 1816, 1249, 1410, 1858 do not all hold those digits):
    "clear" = correctly classified with the largest log-probability margin;
    "ambiguous A" = true A that the model still calls A, with the highest P(B).
    Override with --images.

    \b
    Examples:
      convscope compare                       # the most confused pair (4 vs 9)
      convscope compare --classes 3 5 --layers Conv2D_3 --top 50 --json
      convscope compare --classes 4 9 --images test:1270,test:1816,test:4860,test:7,test:9
      convscope compare --model fashion.json --classes Sandal Sneaker
    """
    from convscope.app import inside
    from convscope.data import is_dataset_ref, parse_image_ref

    for text in (classes or ()):
        check_length(text, "class")
    check_length(layers_text, "--layers")
    check_length(images_text, "--images")
    model = load_model_or_fail(model_path, device)
    class_a = class_b = None
    if classes:
        class_a, class_b = (call(inside.class_index, model, text) for text in classes)
        if class_a == class_b:
            fail(f"--classes needs two different classes (got {short(classes[0], 40)} twice)")
    indices = None
    if images_text:
        indices = []
        for text in split_image_texts(images_text):
            if not is_dataset_ref(text) or parse_image_ref(text)[0] != split:
                fail(f"--images takes {split}-set references like {split}:1270 (got {short(text, 40)!r})")
            indices.append(parse_image_ref(text)[1])
    data = model_split_or_fail(model, split, dataset, data_dir)
    run_use_case(inside.compare, model, data, class_a, class_b, layers=split_layer_texts(layers_text) or None,
                 n_examples=n_examples, images=indices, top=top_n, threshold=threshold, cmap=cmap, per_row=per_row,
                 input_cmap=input_cmap, num_images=num_images, batch_size=batch_size,
                 model_label=model_label(model_path), out_dir=out_dir, as_json=as_json)


# -- mistakes -------------------------------------------------------------------------------------
_PAIR_SEPARATORS = (",", "->", "→", ">", ":", "/", "-")


def _check_pair(_ctx, _param, value):
    if value is None:
        return None
    if len(value) > MAX_TEXT or not any(sep in value for sep in _PAIR_SEPARATORS):
        raise click.BadParameter("use TRUE,PREDICTED with two class names or indices, e.g. --pair 4,9")
    return value


def parse_pair(model, text: str) -> tuple[int, int]:
    """``"4,9"`` / ``"Shirt,T-shirt/top"`` / ``"4-9"`` → ``(true, predicted)`` class indices."""
    from convscope.app.inside import InsideError, class_index

    for sep in _PAIR_SEPARATORS:
        start = 0
        while (i := text.find(sep, start)) >= 0:
            left, right = text[:i].strip(), text[i + len(sep):].strip()
            start = i + 1
            try:
                pair = class_index(model, left), class_index(model, right)
            except InsideError:
                continue
            if pair[0] == pair[1]:
                fail("true and predicted class must differ (a mistake), e.g. --pair 4,9")
            return pair
    names = _spec(model).class_names
    fail(f"cannot read --pair {short(text, 60)!r} as TRUE,PREDICTED: use two of the classes "
         f"({', '.join(names[:12])}{', …' if len(names) > 12 else ''}) or their indices, e.g. --pair 4,9")
    raise AssertionError  # unreachable


@click.command("mistakes")
@click.option("--pair", callback=_check_pair, default=None, metavar="TRUE,PRED",
              help="Only mistakes with this true and predicted class (names or indices), e.g. 4,9 (true 4 predicted "
                   "as 9) or Shirt,T-shirt/top.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True, help="At most this many images.")
@click.option("--order", type=click.Choice(["confidence", "index"]), default="confidence", show_default=True,
              help="confidence: most confident mistakes first; index: dataset order.")
@click.option("--per-row", type=click.IntRange(1, 100), default=10, show_default=True, help="Images per gallery row.")
@input_cmap_option
@_split_option
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Images per forward pass.")
@model_option
@dataset_option
@data_dir_option
@device_option
@out_option("convscope-out/mistakes")
@json_option
def mistakes(pair, limit, order, per_row, input_cmap, split, batch_size, model_path, dataset, data_dir, device, out_dir,
             as_json) -> None:
    """Gallery of misclassified images with true / predicted class names and
    probabilities, plus the confusion matrix.

    Writes mistakes.png (the gallery), confusion.png and mistakes.json (every shown
    mistake: image, true, predicted, P(predicted), P(true)).

    \b
    Examples:
      convscope mistakes
      convscope mistakes --pair 4,9 --json
      convscope mistakes --model fashion.json --pair Shirt,T-shirt/top
    """
    from convscope.app import inside

    model = load_model_or_fail(model_path, device)
    chosen = parse_pair(model, pair) if pair is not None else None
    data = model_split_or_fail(model, split, dataset, data_dir)
    run_use_case(inside.mistakes, model, data, pair=chosen, limit=limit, order=order, per_row=per_row,
                 input_cmap=input_cmap, batch_size=batch_size, model_label=model_label(model_path), out_dir=out_dir,
                 as_json=as_json)


# -- topk -----------------------------------------------------------------------------------------
@click.command("topk")
@click.option("--layer", "-l", default=None,
              help="Layer whose maps (or nodes) to rank. Default: the last conv layer (Conv2D_3 for Model A).")
@click.option("--k", "k", type=click.IntRange(1, 100), default=9, show_default=True, help="Images per map.")
@click.option("--maps", "maps_text", default=None,
              help="Maps to draw, e.g. 0-15,120 (default: all; the JSON/NPY always cover all maps).")
@_split_option
@click.option("--per-row", type=click.IntRange(1, 256), default=8, show_default=True, help="Map blocks per row.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Images per forward pass.")
@click.option("--num-images", type=click.IntRange(2), default=None,
              help="Use only the first N images of the split (a quick look; default: all).")
@input_cmap_option
@model_option
@dataset_option
@data_dir_option
@device_option
@out_option("convscope-out/topk")
@json_option
def topk(layer, k, maps_text, split, per_row, batch_size, num_images, input_cmap, model_path, dataset, data_dir, device,
         out_dir, as_json) -> None:
    """For every map of a layer, the k dataset images that activate it most (by the
    map's maximal activation), with the receptive field of the maximal unit outlined.

    All maps are ranked in one batched pass over the images. Receptive fields come
    from the layers' kernels, strides, paddings and dilations (traced through the
    model's graph, residual branches included); where that geometry cannot be
    traced they are measured from input gradients — the JSON's receptive_field
    says which. Writes topk_<layer>.png, topk_<layer>_indices.npy / _values.npy
    ((maps, k)) and topk_<layer>.json (per map: images, activations, positions,
    receptive fields).

    \b
    Examples:
      convscope topk --layer Conv2D_3
      convscope topk --layer Conv2D_1 --k 16 --maps 0-7 --json
    """
    from convscope.app import inside

    check_length(layer, "layer")
    check_length(maps_text, "--maps")
    model = load_model_or_fail(model_path, device)
    data = model_split_or_fail(model, split, dataset, data_dir)
    run_use_case(inside.topk, model, data, layer, k=k, maps=maps_text, per_row=per_row, batch_size=batch_size,
                 num_images=num_images, input_cmap=input_cmap, model_label=model_label(model_path), out_dir=out_dir,
                 as_json=as_json)


__all__ = [
    "activations", "call", "check_length", "compare", "filters", "mistakes", "model_label", "parse_pair", "predict",
    "prepare_out", "run_use_case", "short", "split_layer_texts", "topk", "write_outputs",
]
