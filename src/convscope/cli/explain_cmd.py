"""``convscope explain`` — attributions for one image: which pixels made a class,
map or unit respond; and the sanity check of the methods."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from convscope.cli.common import (
    data_dir_option, device_option, echo_err, emit_json, fail, json_option, load_model_or_fail, model_option, out_option,
)
from convscope.cli.images import image_option, resolve_image

METHOD_NAMES = ("saliency", "deconvnet", "gbp", "gradcam", "ggradcam", "occlusion", "ig", "smoothgrad")
SANITY_DEFAULT = "saliency,deconvnet,gbp,gradcam,ig"


def _parse_baseline(text: str) -> float | str:
    text = text.strip().lower()
    if text == "min":
        return "min"
    try:
        return float(text)
    except ValueError:
        fail(f"--baseline must be 'min' (each image's background) or a number; got {text!r}")
    raise AssertionError  # unreachable


def _parse_target(text: str | None) -> int | str | None:
    if text is None:
        return None
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _stats(values) -> dict[str, float]:
    flat = values.detach().reshape(-1).double()
    total = float(flat.abs().sum()) or 1.0
    return {
        "min": float(flat.min()), "max": float(flat.max()), "sum": float(flat.sum()),
        "abs_sum": float(flat.abs().sum()), "positive_share": float(flat.clamp_min(0).sum()) / total,
    }


@click.command()
@click.option(
    "--method", "-m", default="deconvnet", show_default=True, type=click.Choice([*METHOD_NAMES, "all"]),
    help="saliency = plain gradient; deconvnet = Zeiler & Fergus; gbp = guided backprop; gradcam / ggradcam = "
    "(guided) Grad-CAM on --layer; occlusion = sliding patch; ig = integrated gradients; smoothgrad = noise-averaged "
    "--smooth-base; all = every method side by side.",
)
@image_option
@click.option(
    "--target", "-t", default=None, metavar="CLASS|ADDRESS",
    help="What to explain: a class 0-9 (its logit), a map 'Conv2D_3:56' (mean activation), a unit "
    "'Conv2D_3:56@1,1' or node 'Dense_1:42'. Default: the predicted class.",
)
@click.option("--all-classes", is_flag=True, help="Explain each of the 10 class logits; one figure, one shared scale.")
@click.option("--layer", default="Conv2D_3", show_default=True, help="Conv layer for gradcam / ggradcam.")
@click.option(
    "--keep", default="map", show_default=True, type=click.Choice(["map", "max"]),
    help="deconvnet with a map target: send the whole map down (map) or only its strongest unit (max).",
)
@click.option("--window", default=4, show_default=True, type=click.IntRange(1, 28), help="occlusion: patch side (px).")
@click.option("--stride", default=2, show_default=True, type=click.IntRange(1, 28), help="occlusion: patch step (px).")
@click.option(
    "--baseline", default="min", show_default=True,
    help="occlusion / ig: value of 'no information' in model-input units: 'min' = each image's background "
    "(black), or a number (0 = the image mean after standardisation).",
)
@click.option("--steps", default=50, show_default=True, type=click.IntRange(2, 10_000), help="ig: path points (Gauss-Legendre).")
@click.option("--samples", default=25, show_default=True, type=click.IntRange(1, 10_000), help="smoothgrad: noisy copies.")
@click.option(
    "--noise", default=0.15, show_default=True, type=click.FloatRange(0, 10),
    help="smoothgrad: noise std as a fraction of the image's value range.",
)
@click.option(
    "--smooth-base", default="saliency", show_default=True, type=click.Choice(["saliency", "deconvnet", "gbp", "ggradcam", "ig"]),
    help="smoothgrad: the gradient method averaged over noisy copies.",
)
@click.option("--seed", default=0, show_default=True, help="Seed for smoothgrad noise and sanity-check weights.")
@click.option(
    "--sanity", is_flag=True,
    help="Run the model-parameter randomisation test instead (Adebayo et al. 2018): randomise layers from the top "
    "and report how similar each method's map stays (Spearman of |attr|, SSIM). Figure + JSON.",
)
@click.option(
    "--sanity-methods", default=SANITY_DEFAULT, show_default=True, help="--sanity: comma-separated methods to test."
)
@click.option(
    "--sanity-images", default=8, show_default=True, type=click.IntRange(1, 1000),
    help="--sanity: number of images averaged: --image plus the first test images.",
)
@model_option
@data_dir_option
@device_option
@json_option
@out_option("convscope-out/explain")
def explain(
    method: str, image: str, target: str | None, all_classes: bool, layer: str, keep: str, window: int, stride: int,
    baseline: str, steps: int, samples: int, noise: float, smooth_base: str, seed: int, sanity: bool,
    sanity_methods: str, sanity_images: int, model_path: Path | None, data_dir: Path | None, device: str,
    as_json: bool, out_dir: Path,
) -> None:
    """Explain one image: an attribution map for a class, map or unit.

    Writes a PNG figure (input, map with colourbar, overlay), the raw map as
    .npy, and explain.json (numbers and the parameters used) under --out.

    \b
    Examples:
      convscope explain --method deconvnet --image test:1302 --target Conv2D_3:56
      convscope explain --method deconvnet --target Conv2D_2:7 --keep max
      convscope explain --method gbp --image test:1302 --all-classes
      convscope explain --method ig --target 4 --steps 64 --json
      convscope explain --method all --image test:1816
      convscope explain --sanity --sanity-images 16
    """
    import torch

    from convscope.address import AddressError
    from convscope.explain import explain as run_method
    from convscope.inference import to_input
    from convscope.io import save_figure, save_npy, write_json

    model = load_model_or_fail(model_path, device)
    picked = resolve_image(image, data_dir)
    x = to_input(model, picked.image)
    with torch.no_grad():
        probabilities = torch.softmax(model.eval()(x), dim=1)[0].cpu()
    predicted = int(probabilities.argmax())
    image_title = f"{picked.source}" + (f"  label {picked.label}" if picked.label is not None else "")
    image_title += f"\npredicted {predicted} (p={float(probabilities[predicted]):.3f})"
    summary: dict[str, Any] = {
        "image": picked.source, "label": picked.label, "predicted": predicted,
        "probabilities": [round(float(p), 6) for p in probabilities],
    }
    if sanity:
        _run_sanity(model, x, picked, summary, image_title, sanity_methods, sanity_images, seed, layer, data_dir,
                    out_dir, as_json)
        return

    options: dict[str, Any] = {
        "saliency": {}, "deconvnet": {"keep": keep}, "gbp": {}, "gradcam": {"layer": layer},
        "ggradcam": {"layer": layer}, "occlusion": {"window": window, "stride": stride, "baseline": _parse_baseline(baseline)},
        "ig": {"steps": steps, "baseline": _parse_baseline(baseline)},
    }
    options["smoothgrad"] = {"base": smooth_base, "samples": samples, "noise_level": noise, "seed": seed,
                             **options[smooth_base]}
    methods = list(METHOD_NAMES) if method == "all" else [method]
    parsed_target = _parse_target(target)
    if all_classes and parsed_target is not None:
        fail("--all-classes explains each of the 10 class logits; drop --target (or drop --all-classes)")
    if all_classes and method == "all":
        fail("--all-classes works with one method; choose --method")
    n_classes = int(probabilities.numel())
    inputs = x.repeat(n_classes, 1, 1, 1) if all_classes else x
    given = torch.arange(n_classes) if all_classes else parsed_target

    from convscope.render.explain import all_classes_figure, explanation_figure, methods_figure

    results = {}
    for name in methods:
        try:
            results[name] = run_method(model, inputs, name, given, **options[name])
        except (AddressError, ValueError) as exc:
            fail(str(exc))
    out_dir = Path(out_dir)
    written: list[str] = []
    entries = []
    target_text = "predicted class" if parsed_target is None else str(parsed_target)
    for name, result in results.items():
        maps = result.attributions.detach().cpu()
        entry: dict[str, Any] = {"method": name, "title": result.params.get("title", name), "signed": result.signed,
                                 "params": {k: v for k, v in result.params.items() if k != "title"}}
        if all_classes:
            stem = f"explain_{name}_all_classes"
            entry["target"] = "all classes"
            entry["per_class"] = [_stats(maps[k]) for k in range(n_classes)]
            if result.delta is not None:
                entry["ig_delta"] = [float(d) for d in result.delta]
        else:
            tgt = result.target
            entry["target"] = tgt
            stem = f"explain_{name}_" + _safe_name(f"class{tgt}" if isinstance(tgt, int) else str(tgt))
            entry.update(_stats(maps[0]))
            if result.delta is not None:
                entry["ig_delta"] = float(result.delta[0])
        array = maps[:, 0] if maps.shape[1] == 1 else maps  # (N, H, W) for grayscale
        written.append(str(save_npy(out_dir / f"{stem}.npy", array if all_classes else array[0])))
        entry["npy"] = written[-1]
        if method != "all":
            if all_classes:
                fig = all_classes_figure(picked.image, maps, probabilities=probabilities.tolist(), signed=result.signed,
                                         method_title=entry["title"], image_title=image_title, label=picked.label)
            else:
                tgt = result.target
                tgt_text = f"class {tgt}" if isinstance(tgt, int) else f"{tgt}"
                if name == "deconvnet" and not isinstance(tgt, int) and "@" not in str(tgt):
                    tgt_text += f" (keep {keep})"
                note = f"IG convergence delta {float(result.delta[0]):+.2e}" if result.delta is not None else ""
                fig = explanation_figure(picked.image, maps[0], signed=result.signed, method_title=entry["title"],
                                         target_text=tgt_text, image_title=image_title, note=note)
            written.append(str(save_figure(out_dir / f"{stem}.png", fig)))
            entry["png"] = written[-1]
        entries.append(entry)
    if method == "all":
        panels = {e["title"]: (results[e["method"]].attributions[0].cpu(), e["signed"]) for e in entries}
        fig = methods_figure(picked.image, panels, image_title=image_title,
                             target_text=f"target: {entries[0]['target']}" if entries else target_text)
        written.append(str(save_figure(out_dir / "explain_all_methods.png", fig)))
    summary.update({"all_classes": all_classes, "results": entries, "files": written})
    write_json(out_dir / "explain.json", summary)
    if as_json:
        emit_json(summary)
        return
    for entry in entries:
        line = f"{entry['title']:<28} target {entry['target']}"
        if not all_classes:
            line += f"  min {entry['min']:+.3g}  max {entry['max']:+.3g}  sum {entry['sum']:+.3g}"
            if "ig_delta" in entry:
                line += f"  IG delta {entry['ig_delta']:+.2e}"
        click.echo(line)
    echo_err(f"{picked.source}: predicted {predicted} (p={float(probabilities[predicted]):.3f}); wrote {len(written)} files to {out_dir}")


def _run_sanity(model, x, picked, summary, image_title, sanity_methods, sanity_images, seed, layer, data_dir,
                out_dir, as_json) -> None:
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from convscope.data import DataNotFoundError, DatasetError, load_split
    from convscope.explain.sanity import sanity_check
    from convscope.inference import to_input
    from convscope.io import save_figure, write_json
    from convscope.render.explain import sanity_figure

    methods = [m.strip() for m in sanity_methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHOD_NAMES or m == "smoothgrad"]
    if not methods or unknown:
        fail(f"--sanity-methods: unknown {unknown or 'empty list'}; choose from {', '.join(METHOD_NAMES[:-1])}")
    extra = []
    if sanity_images > 1:
        try:
            split = load_split("test", data_dir=data_dir)
        except (DataNotFoundError, DatasetError, OSError) as exc:
            fail(str(exc))
        extra = [to_input(model, split.images[: sanity_images - 1])]
    inputs = torch.cat([x, *extra])
    options = {"gradcam": {"layer": layer}, "ggradcam": {"layer": layer}, "occlusion": {"baseline": "min"},
               "ig": {"baseline": "min", "steps": 32}}
    with Progress(TextColumn("[bold]sanity check"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True, disable=as_json) as progress:
        task = progress.add_task("stages", total=None)
        try:
            result = sanity_check(model, inputs, methods, seed=seed,
                                  options={m: options[m] for m in methods if m in options},
                                  progress=lambda done, total: progress.update(task, completed=done, total=total))
        except (ValueError, RuntimeError) as exc:
            fail(str(exc))
    data = {**summary, "sanity": result.to_dict(),
            "images_used": [picked.source] + [f"test:{i}" for i in range(sanity_images - 1)]}
    fig = sanity_figure(result, image=picked.image, image_index=0, image_title=picked.source)
    files = [str(save_figure(Path(out_dir) / "sanity.png", fig)), str(Path(out_dir) / "sanity.json")]
    data["files"] = files
    write_json(Path(out_dir) / "sanity.json", data)
    if as_json:
        emit_json(data)
        return
    click.echo(f"{'method':<16}" + "".join(f"{s:>11}" for s in ["trained", *(f"+{n}" for n in result.stages[1:])]))
    for m in methods:
        click.echo(f"{m + ' ρ':<16}" + "".join(f"{v:>11.3f}" for v in result.spearman[m]))
        click.echo(f"{m + ' SSIM':<16}" + "".join(f"{v:>11.3f}" for v in result.ssim[m]))
    echo_err(f"Spearman ρ of |attribution| and SSIM vs the trained model's map, mean over {len(inputs)} images; "
             f"layers randomised cumulatively from the top. Wrote {', '.join(files)}")
