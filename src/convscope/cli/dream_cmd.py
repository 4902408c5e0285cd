"""``convscope dream`` — DeepDreams of real photos with the MNIST CNN."""

from __future__ import annotations

import re
import time
from pathlib import Path

import click

from convscope.cli.common import device_option, echo_err, emit_json, fail, json_option, load_model_or_fail, model_option


def _check_objective_text(model, text: str):
    """Parse and validate an objective against the model; one clear error if bad."""
    from convscope.address import AddressError, resolve_address
    from convscope.optvis.objectives import parse_objective

    try:
        objective = parse_objective(text)
    except ValueError as exc:
        fail(f"--objective {text!r}: {exc}")
    for term in re.split(r"(?<![eE])[+-]", text):
        term = term.strip()
        if not term:
            continue
        if "*" in term:
            term = term.split("*", 1)[1].strip()
        try:
            resolve_address(model, term)
        except AddressError as exc:
            fail(f"--objective {text!r}: {exc}")
    return objective


def _save_photo(path: Path, array) -> None:
    from PIL import Image

    from convscope.io import save_image

    image = Image.fromarray(array)
    if path.suffix.lower() in (".jpg", ".jpeg") and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    save_image(path, image)


@click.command()
@click.argument("image", required=False, type=click.Path(path_type=Path))
@click.option(
    "--objective", "-o", "objective_text", default=None,
    help="What to dream: a map 'Conv2D_3:56', a layer 'Conv2D_3', or a weighted sum "
    "'Conv2D_3 + 0.5*Conv2D_2:7'. Default: Conv2D_3:56 for carve, Conv2D_3 for octaves.",
)
@click.option(
    "--mode", type=click.Choice(["octaves", "carve"]), default="octaves", show_default=True,
    help="octaves: full DeepDream (octaves, jitter, tiling). carve: the reference's single-map pattern "
    "carving (28×28 OIP ascent, upscale, re-add the photo's detail).",
)
@click.option(
    "--tiling", type=click.Choice(["fullconv", "tiles", "downscale"]), default="fullconv", show_default=True,
    help="How the 28×28 model sees a big photo (octaves mode): fullconv = conv layers on the whole image "
    "(no seams; objective must be in conv/pool layers); tiles = 28×28 tiles as a batch, randomly rolled "
    "each step; downscale = squeeze the whole photo to 28×28 (the reference).",
)
@click.option("--octaves", type=click.IntRange(1), default=4, show_default=True, help="Number of scales (octaves mode).")
@click.option(
    "--octave-scale", type=click.FloatRange(min=1.0, min_open=True), default=1.4, show_default=True,
    help="Size ratio between neighbouring octaves. An octave is never smaller than 28×28.",
)
@click.option(
    "--steps", type=click.IntRange(0), default=None,
    help="Ascent steps per octave (default 10), or per round in carve mode (default 150).",
)
@click.option("--rounds", type=click.IntRange(1), default=4, show_default=True, help="Carve mode: downscale/ascent/upscale loops.")
@click.option(
    "--step-size", type=click.FloatRange(min=0, min_open=True), default=None,
    help="Step along the unit-RMS gradient, in standardised units: default 0.05 (octaves; 0.1 for a stronger dream), 0.01 (carve, as the reference).",
)
@click.option("--jitter", type=click.IntRange(0), default=None, help="Largest random roll per step in pixels (default: 28, less on small images).")
@click.option("--seed", default=0, show_default=True, help="Seed for the random rolls.")
@click.option(
    "--color", "color", type=click.Choice(["luminance", "gray"]), default="luminance", show_default=True,
    help="luminance: dream on brightness and keep the photo's colours; gray: a gray dream.",
)
@click.option(
    "--tone", type=click.Choice(["soft", "clip"]), default="soft", show_default=True,
    help="8-bit output: soft = smooth shoulder near black and white (keeps texture in shadows/highlights); clip = cut.",
)
@click.option("--guide", type=click.Path(path_type=Path), default=None, help="Dream toward the features of this image (in the objective's layer).")
@click.option("--zoom-frames", type=click.IntRange(0), default=0, show_default=True, help="Also write a zoom sequence of N frames (PNG).")
@click.option("--zoom", type=click.FloatRange(min=1.0, min_open=True), default=1.05, show_default=True, help="Magnification per zoom frame.")
@click.option("--format", "image_format", type=click.Choice(["png", "jpg"]), default="png", show_default=True, help="Output image format (8-bit).")
@click.option("--tile-batch", type=click.IntRange(1), default=512, show_default=True, help="Tiles per forward pass (memory bound for --tiling tiles).")
@click.option("--bf16", is_flag=True, help="Run the model in bfloat16 autocast (faster on recent CPUs/GPUs).")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("convscope-out/dream"), show_default=True,
    help="Output folder (created if needed).",
)
@model_option
@device_option
@json_option
def dream(
    image: Path | None, objective_text: str | None, mode: str, tiling: str, octaves: int, octave_scale: float,
    steps: int | None, rounds: int, step_size: float | None, jitter: int | None, seed: int, color: str, tone: str,
    guide: Path | None, zoom_frames: int, zoom: float, image_format: str, tile_batch: int, bf16: bool,
    out_dir: Path, model_path: Path | None, device: str, as_json: bool,
) -> None:
    """Dream a photo with the MNIST CNN: its pen-stroke features grow into the picture.

    IMAGE is any PNG/JPEG (default: the Grace Hopper photo that ships with
    matplotlib, so this works offline). The dream keeps the photo's size and,
    with --color luminance, its colours. Writes OUT/dream.png (or .jpg),
    OUT/dream.json (settings and objective before/after), carve mode also
    OUT/carve_panels.png (the reference's panels), and with --zoom-frames
    OUT/frames/frame_NNNN.png. Files are written only when the dream is done.

    \b
    Examples:
      convscope dream                                      # Grace Hopper, Conv2D_3, fullconv
      convscope dream photo.jpg --objective Conv2D_2 --octaves 5
      convscope dream photo.jpg --tiling tiles --objective "Dense_1:42"
      convscope dream --mode carve --objective Conv2D_3:56  # the reference's first experiment
      convscope dream photo.jpg --guide other.jpg --zoom-frames 20
    """
    import numpy as np
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from convscope.dream import TilingError, carve, deep_dream, dream_colour, guided_objective
    from convscope.dream import zoom_frames as make_zoom_frames
    from convscope.dream.colour import merge_luminance, split_luminance
    from convscope.dream.octaves import zoom_centre
    from convscope.io import save_figure, write_json
    from convscope.photos import PhotoError, default_photo_path, read_photo

    model = load_model_or_fail(model_path, device)
    if objective_text is None:
        objective_text = "Conv2D_3:56" if mode == "carve" else "Conv2D_3"
    objective = _check_objective_text(model, objective_text)
    if mode == "carve" and (guide is not None or zoom_frames):
        fail("--guide and --zoom-frames work with --mode octaves, not carve")

    photo_path = image if image is not None else default_photo_path()
    try:
        photo = read_photo(photo_path)
        guide_photo = read_photo(guide, gray=True) if guide is not None else None
    except PhotoError as exc:
        fail(str(exc))
    height, width = photo.shape[:2]
    if height < 28 or width < 28:
        fail(f"{photo_path} is {width}x{height} pixels; the model needs at least 28x28")

    steps = steps if steps is not None else (150 if mode == "carve" else 10)
    step_size = step_size if step_size is not None else (0.01 if mode == "carve" else 0.05)
    console = Console(stderr=True)
    photo_tensor = torch.from_numpy(np.array(photo, copy=True))
    started = time.perf_counter()

    try:
        if guide_photo is not None:
            objective = guided_objective(model, torch.from_numpy(np.array(guide_photo, copy=True)).float(), objective, tiling)
        options = dict(
            tiling=tiling, octaves=octaves, octave_scale=octave_scale, steps=steps, step_size=step_size,
            jitter=jitter, seed=seed, tile_batch=tile_batch, bfloat16=bf16,
        )
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True, disable=not console.is_terminal,
        ) as bar:
            task = bar.add_task(f"dream {mode}", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            if mode == "carve":
                dreamed = dream_colour(
                    lambda y: carve(model, objective, y, rounds=rounds, epochs=steps, epsilon=step_size, progress=progress),
                    photo_tensor, color=color, tone=tone,
                )
            else:
                dreamed = dream_colour(
                    lambda y: deep_dream(model, objective, y, progress=progress, **options), photo_tensor, color=color,
                    tone=tone,
                )
            frames = []
            if zoom_frames:
                bar.update(task, description="zoom frames", completed=0)
                luminance, chroma = split_luminance(photo_tensor)
                # frame 0 is the dream itself (same seed), then zoom in and dream again
                zoomed = make_zoom_frames(
                    model, objective, luminance, zoom_frames, zoom=zoom, progress=progress, seed=seed,
                    **{k: v for k, v in options.items() if k != "seed"},
                )
                # The colours zoom with the frames: frame i shows the centre magnified zoom**i.
                frames = [
                    merge_luminance(
                        frame.cpu(), None if chroma is None else zoom_centre(chroma, zoom**index), color, tone
                    ).numpy()
                    for index, frame in enumerate(zoomed)
                ]
    except (TilingError, ValueError) as exc:
        fail(str(exc))
    seconds = time.perf_counter() - started

    # Everything is computed; now write (each file atomically).
    result = dreamed.result
    out_dir = Path(out_dir)
    files = {}
    try:
        dream_file = out_dir / f"dream.{image_format}"
        _save_photo(dream_file, dreamed.image.numpy())
        files["dream"] = str(dream_file)
        if mode == "carve":
            from convscope.render.dream import carve_panels

            panels = out_dir / "carve_panels.png"
            save_figure(panels, carve_panels(result, photo))
            files["panels"] = str(panels)
        for index, frame in enumerate(frames):
            frame_file = out_dir / "frames" / f"frame_{index:04d}.png"
            _save_photo(frame_file, frame)
        if frames:
            files["frames"] = str(out_dir / "frames")
        summary = {
            "image": str(photo_path),
            "mode": mode,
            "color": color,
            "tone": tone,
            "guide": str(guide) if guide is not None else None,
            **result.to_dict(),
            "width": width,
            "height": height,
            "seconds": round(seconds, 2),
            "clipped_fraction": dreamed.clipped_fraction,
            "zoom_frames": len(frames),
            "files": files,
        }
        write_json(out_dir / "dream.json", summary)
    except OSError as exc:
        fail(f"cannot write the results to {out_dir}: {exc}")
    if as_json:
        emit_json(summary)
        return
    for note in result.notes:
        echo_err(f"note: {note}")
    click.echo(
        f"dreamed {photo_path.name} ({width}x{height}) with {result.parameters.get('objective')} "
        f"[{mode}{'' if mode == 'carve' else ', ' + tiling}] in {seconds:.1f} s: objective "
        f"{result.objective_before:.4g} -> {result.objective_after:.4g}"
    )
    click.echo(f"wrote {', '.join(files.values())} and {out_dir / 'dream.json'}")
