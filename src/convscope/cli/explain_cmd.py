"""``convscope explain`` — attributions for one image: which pixels made a class,
map or unit respond; and the sanity check of the methods.

Thin: parse, load the model and the image, call :mod:`convscope.app.explain`,
write its result. The method choices come from the explain registry
(:mod:`convscope.explain.registry`), read when the command runs, so a method
registered by a user appears in ``--method``, ``--method all``, ``--smooth-base``
(if it is a gradient method) and ``--sanity-methods``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import click

from convscope.cli.common import (
    FiniteFloatRange, data_dir_option, dataset_option, device_option, fail, json_option, load_model_or_fail,
    model_option, out_option,
)
from convscope.cli.images import DEFAULT_IMAGE, resolve_image

#: the images ``--sanity`` adds after ``--image`` come from the start of the test split
SANITY_SPLIT = "test"


class MethodChoice(click.Choice):
    """``click.Choice`` over the registered explanation methods, read from the
    registry each time it is used (not frozen at import).

    Args:
        which: ``"all"`` (every method) or ``"smoothable"`` (what SmoothGrad may wrap).
        extra: extra choices (``"all"``).
    """

    def __init__(self, which: str = "all", extra: tuple[str, ...] = ()) -> None:
        self.which = which
        self.extra = extra
        super().__init__((), case_sensitive=True)

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        from convscope.explain import registry

        names = registry.method_names() if self.which == "all" else registry.smoothable_methods()
        return (*names, *self.extra)

    @choices.setter
    def choices(self, value: Any) -> None:  # click.Choice.__init__ assigns; the registry is the source
        pass


class MethodHelpOption(click.Option):
    """An option whose help lists the registered methods with their one-line summaries."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from convscope.explain import registry

        lines = "; ".join(f"{name} = {registry.method_info(name).summary}" for name in registry.method_names())
        self.help = f"{lines}; all = every method side by side."
        return super().get_help_record(ctx)


class BaselineType(click.ParamType):
    """``min``, ``mean`` or a finite number (model-input units)."""

    name = "min|mean|NUMBER"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float | str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            text = str(value).strip().lower()
            if text in ("min", "mean"):
                return text
            try:
                number = float(text)
            except ValueError:
                self.fail(f"{str(value)[:40]!r} is not 'min', 'mean' or a number.", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _parse_target(text: str | None) -> int | str | None:
    if text is None:
        return None
    text = text.strip()
    if not text:
        fail("--target is empty: give a class number or name, or a map/unit address such as Conv2D_3:56")
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def _sanity_methods(text: str | None) -> list[str] | None:
    from convscope.explain import registry

    if text is None:
        return None
    methods = [m.strip() for m in text.split(",") if m.strip()]
    known = registry.method_names()
    unknown = [m[:40] for m in methods if m not in known]
    if not methods or unknown:
        fail(f"--sanity-methods: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(known)}")
    return methods


def _default_image(split_length: int) -> str:
    """``test:1302`` (the reference's example) when the model's test set has it, else ``test:0``."""
    index = int(DEFAULT_IMAGE.split(":")[1])
    return DEFAULT_IMAGE if split_length > index else "test:0"


@click.command()
@click.option("--method", "-m", default="deconvnet", show_default=True, type=MethodChoice(extra=("all",)),
              cls=MethodHelpOption)
@click.option(
    "--image", "-i", "image", default=None, metavar="IMAGE",
    help="Image: test:INDEX or train:INDEX of --dataset (default test:1302, or test:0 if the test set is smaller), "
    "or an image file, converted as the model's spec says.",
)
@click.option(
    "--target", "-t", default=None, metavar="CLASS|NAME|ADDRESS",
    help="What to explain: a class number or class name (its logit), a map 'Conv2D_3:56' (mean activation), a unit "
    "'Conv2D_3:56@1,1' or node 'Dense_1:42'. Default: the predicted class.",
)
@click.option("--all-classes", is_flag=True, help="Explain every class logit; one figure, one shared scale.")
@click.option("--layer", default=None, help="Conv layer for gradcam / ggradcam. Default: the model's last conv layer "
              "with maps (Conv2D_3 for the reference models).")
@click.option(
    "--keep", default="map", show_default=True, type=click.Choice(["map", "max"]),
    help="deconvnet with a map target: send the whole map down (map) or only its strongest unit (max).",
)
@click.option("--window", default=None, type=click.IntRange(min=1),
              help="occlusion: patch side (px). Default: a seventh of the image side (4 px on 28×28).")
@click.option("--stride", default=None, type=click.IntRange(min=1), help="occlusion: patch step (px). Default: half the window.")
@click.option(
    "--baseline", default="min", show_default=True, type=BaselineType(),
    help="occlusion / ig: value of 'no information' in model-input units, per channel: 'min' = each image's "
    "darkest value (the background of a digit), 'mean' = its mean colour, or a number (0 = the image mean after "
    "standardisation).",
)
@click.option("--steps", default=50, show_default=True, type=click.IntRange(2, 10_000), help="ig: path points (Gauss-Legendre).")
@click.option("--samples", default=25, show_default=True, type=click.IntRange(1, 10_000), help="smoothgrad: noisy copies.")
@click.option(
    "--noise", default=0.15, show_default=True, type=FiniteFloatRange(0, 10),
    help="smoothgrad: noise std as a fraction of the image's value range.",
)
@click.option(
    "--smooth-base", default="saliency", show_default=True, type=MethodChoice("smoothable"),
    help="smoothgrad: the gradient method averaged over noisy copies.",
)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1),
              help="Seed for smoothgrad noise and sanity-check weights.")
@click.option(
    "--sanity", is_flag=True,
    help="Run the model-parameter randomisation test instead (Adebayo et al. 2018): randomise layers from the top "
    "and report how similar each method's map stays (Spearman of |attr|, SSIM). Figure + JSON.",
)
@click.option(
    "--sanity-methods", default=None, metavar="M1,M2,...",
    help="--sanity: comma-separated methods to test. Default: saliency,deconvnet,gbp,gradcam,ig (the registry's "
    "sanity methods).",
)
@click.option(
    "--sanity-images", default=8, show_default=True, type=click.IntRange(1, 1000),
    help="--sanity: number of images averaged: --image plus the first test images.",
)
@dataset_option
@model_option
@data_dir_option
@device_option
@json_option
@out_option("convscope-out/explain")
def explain(
    method: str, image: str | None, target: str | None, all_classes: bool, layer: str | None, keep: str,
    window: int | None, stride: int | None, baseline: float | str, steps: int, samples: int, noise: float,
    smooth_base: str, seed: int, sanity: bool, sanity_methods: str | None, sanity_images: int, dataset: str | None,
    model_path: Path | None, data_dir: Path | None, device: str, as_json: bool, out_dir: Path,
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
      convscope explain --method gradcam --model fashion.json --target Sandal
      convscope explain --method all --image test:1816
      convscope explain --sanity --sanity-images 16
    """
    from convscope.app import explain as app
    from convscope.cli.common import model_split_or_fail
    from convscope.cli.output import finish, terminal_progress, write_result, writing
    from convscope.progress import Cancelled
    from convscope.spec import spec_of

    parsed_target = _parse_target(target)
    chosen_sanity = _sanity_methods(sanity_methods) if sanity else None
    if not sanity and all_classes and parsed_target is not None:
        fail("--all-classes explains every class logit; drop --target (or drop --all-classes)")
    if not sanity and all_classes and method == "all":
        fail("--all-classes works with one method; choose --method")
    model = load_model_or_fail(model_path, device)
    spec = spec_of(model)
    split = None
    if image is None or (sanity and sanity_images > 1):
        split = model_split_or_fail(model, SANITY_SPLIT, dataset, data_dir)
    picked = resolve_image(image if image is not None else _default_image(len(split)), data_dir, dataset, spec=spec)
    options = {"layer": layer, "keep": keep, "window": window, "stride": stride, "baseline": baseline, "steps": steps,
               "samples": samples, "noise_level": noise, "seed": seed, "base": smooth_base}
    try:
        with terminal_progress(disable=as_json) as progress:
            if sanity:
                import numpy as np

                extra = max(0, min(sanity_images - 1, len(split) if split is not None else 0))
                images = np.concatenate([picked.image[None], np.asarray(split.images[:extra])]) if extra else picked.image[None]
                labels = [picked.label, *(int(v) for v in split.labels[:extra])] if extra else [picked.label]
                result = app.sanity_check(
                    model, images, chosen_sanity, labels=labels,
                    sources=[picked.source, *(f"{SANITY_SPLIT}:{i}" for i in range(extra))], seed=seed,
                    options=options, progress=progress,
                )
            else:
                result = app.explain_image(
                    model, picked.image, method, parsed_target, all_classes=all_classes, options=options,
                    label=picked.label, source=picked.source, progress=progress,
                )
    except Cancelled:
        fail("cancelled; nothing was written")
    except ValueError as exc:  # bad target / layer / option (AddressError, SpecError are ValueErrors)
        fail(str(exc))
    with writing(Path(out_dir)):
        written = write_result(result, Path(out_dir))
    finish(result, written, as_json)
