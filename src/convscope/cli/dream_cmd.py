"""``convscope dream`` — DeepDreams of real photos with any model.

Thin: parse → load the model → read the photos → call :mod:`convscope.app.dream`
inside the terminal progress → write the photos and the result → print.
"""

from __future__ import annotations

from pathlib import Path

import click

from convscope.cli.common import (
    FiniteFloatRange, device_option, fail, json_option, load_model_or_fail, model_option, out_option,
)


def _save_photo(path: Path, array) -> Path:
    from PIL import Image

    from convscope.io import save_image

    image = Image.fromarray(array)
    if path.suffix.lower() in (".jpg", ".jpeg") and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    return save_image(path, image)


@click.command()
@click.argument("image", required=False, type=click.Path(path_type=Path))
@click.option(
    "--objective", "-o", "objective_text", default=None,
    help="What to dream: a map 'Conv2D_3:56', a layer 'Conv2D_3', or a weighted sum "
    "'Conv2D_3 + 0.5*Conv2D_2:7 - 1e-3*Conv2D_1'. Default for the shipped models: Conv2D_3:56 for carve, Conv2D_3 "
    "for octaves; for other models the deepest layer with maps (carve: its strongest map on the photo).",
)
@click.option(
    "--mode", type=click.Choice(["octaves", "carve"]), default="octaves", show_default=True,
    help="octaves: full DeepDream (octaves, jitter, tiling). carve: the reference's single-map pattern "
    "carving (OIP ascent on the model's input size, upscale, re-add the photo's detail).",
)
@click.option(
    "--tiling", type=click.Choice(["fullconv", "tiles", "downscale"]), default="fullconv", show_default=True,
    help="How the fixed-size model sees a big photo (octaves mode): fullconv = the layers up to the objective's on "
    "the whole image (no seams; objective must be in conv/pool layers); tiles = input-size tiles as a batch, randomly "
    "rolled each step; downscale = squeeze the whole photo to the model's input size (the reference).",
)
@click.option("--octaves", type=click.IntRange(1), default=4, show_default=True, help="Number of scales (octaves mode).")
@click.option(
    "--octave-scale", type=FiniteFloatRange(min=1.0, min_open=True), default=1.4, show_default=True,
    help="Size ratio between neighbouring octaves. An octave is never smaller than the model's input.",
)
@click.option(
    "--steps", type=click.IntRange(0), default=None,
    help="Ascent steps per octave (default 10), or per round in carve mode (default 150).",
)
@click.option("--rounds", type=click.IntRange(1), default=4, show_default=True, help="Carve mode: downscale/ascent/upscale loops.")
@click.option(
    "--step-size", type=FiniteFloatRange(min=0, min_open=True), default=None,
    help="Step along the unit-RMS gradient, in units of the image's standard deviation in the model's input space: "
    "default 0.05 (octaves; 0.1 for a stronger dream), 0.01 (carve, as the reference).",
)
@click.option("--jitter", type=click.IntRange(0), default=None, help="Largest random roll per step in pixels (default: one model input, less on small images).")
@click.option("--seed", type=click.IntRange(0, 2**62), default=0, show_default=True, help="Seed for the random rolls.")
@click.option(
    "--color", "color", type=click.Choice(["luminance", "gray"]), default="luminance", show_default=True,
    help="luminance: keep the photo's colours (a gray model dreams on brightness; an RGB model in colour); gray: a gray dream.",
)
@click.option(
    "--tone", type=click.Choice(["soft", "clip"]), default="soft", show_default=True,
    help="8-bit output: soft = smooth shoulder near black and white (keeps texture in shadows/highlights); clip = cut.",
)
@click.option("--guide", type=click.Path(path_type=Path), default=None, help="Dream toward the features of this image (in the objective's layer).")
@click.option("--zoom-frames", type=click.IntRange(0), default=0, show_default=True, help="Also write a zoom sequence of N frames (PNG).")
@click.option("--zoom", type=FiniteFloatRange(min=1.0, min_open=True), default=1.05, show_default=True, help="Magnification per zoom frame.")
@click.option("--format", "image_format", type=click.Choice(["png", "jpg"]), default="png", show_default=True, help="Output image format (8-bit).")
@click.option("--tile-batch", type=click.IntRange(1), default=512, show_default=True, help="Tiles per forward pass (memory bound for --tiling tiles; lowered to fit the memory budget).")
@click.option(
    "--memory-limit", type=FiniteFloatRange(min=0, min_open=True), default=None, metavar="GB",
    help="Memory the dream may use, in GB (default: 80 % of the free memory). The dream is estimated before it "
    "starts: fullconv runs in stripes and tiles in smaller chunks to fit, or it stops at once with what to change.",
)
@click.option("--bf16", is_flag=True, help="Run the model in bfloat16 autocast (faster on recent CPUs/GPUs).")
@out_option("convscope-out/dream")
@model_option
@device_option
@json_option
def dream(
    image: Path | None, objective_text: str | None, mode: str, tiling: str, octaves: int, octave_scale: float,
    steps: int | None, rounds: int, step_size: float | None, jitter: int | None, seed: int, color: str, tone: str,
    guide: Path | None, zoom_frames: int, zoom: float, image_format: str, tile_batch: int, memory_limit: float | None,
    bf16: bool, out_dir: Path, model_path: Path | None, device: str, as_json: bool,
) -> None:
    """Dream a photo with a model: its features grow into the picture.

    IMAGE is any PNG/JPEG (default: the Grace Hopper photo that ships with
    matplotlib, so this works offline). A gray model dreams on the photo's
    brightness and keeps its colours (--color luminance); an RGB model dreams in
    colour. The dream keeps the photo's size. Writes OUT/dream.png (or .jpg),
    OUT/dream.json (settings and objective before/after), octaves mode also
    OUT/dream_comparison.png and OUT/dream_values.png, carve mode
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
    from convscope.app.dream import carve_photo, dream_photo
    from convscope.cli.output import finish, terminal_progress, write_result, writing
    from convscope.optvis.core import Cancelled
    from convscope.photos import PhotoError, default_photo_path, read_photo

    model = load_model_or_fail(model_path, device)
    if mode == "carve" and (guide is not None or zoom_frames):
        fail("--guide and --zoom-frames work with --mode octaves, not carve")
    photo_path = image if image is not None else default_photo_path()
    try:
        photo = read_photo(photo_path)
        guide_photo = read_photo(guide) if guide is not None else None
    except PhotoError as exc:
        fail(str(exc))

    with terminal_progress(disable=as_json) as progress:
        try:
            if mode == "carve":
                result = carve_photo(
                    model, photo, objective=objective_text, rounds=rounds, steps=150 if steps is None else steps,
                    step_size=0.01 if step_size is None else step_size, color=color, tone=tone,
                    memory_limit=memory_limit, source=str(photo_path), progress=progress,
                )
            else:
                result = dream_photo(
                    model, photo, objective=objective_text, tiling=tiling, octaves=octaves, octave_scale=octave_scale,
                    steps=10 if steps is None else steps, step_size=0.05 if step_size is None else step_size,
                    jitter=jitter, seed=seed, color=color, tone=tone, guide=guide_photo, zoom_frames=zoom_frames,
                    zoom=zoom, tile_batch=tile_batch, bfloat16=bf16, memory_limit=memory_limit,
                    source=str(photo_path), guide_source=None if guide is None else str(guide), progress=progress,
                )
        except Cancelled:
            fail("cancelled; nothing was written")
        except ValueError as exc:
            fail(str(exc))

    # Everything is computed; now write (each file atomically, the JSON last; all or nothing).
    out_dir = Path(out_dir)
    photos: list[Path] = []
    with writing(out_dir):
        # the dream in --format; zoom frames are always PNG
        for stem, pixels in result.images().items():
            photos.append(_save_photo(out_dir / f"{stem}.{image_format if stem == 'dream' else 'png'}", pixels))
        written = write_result(result, out_dir, arrays=False)
    finish(result, photos + written, as_json)
