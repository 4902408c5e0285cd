"""``convscope oip`` and ``convscope classes``: optimised input patterns.

Thin: parse, call :mod:`convscope.optvis`, render with :mod:`convscope.render.oip`,
write via :mod:`convscope.io`.
"""

from __future__ import annotations

import dataclasses

import click
from click.core import ParameterSource

from convscope.cli.common import (
    SEED, FiniteFloatRange, data_dir_option, dataset_option, device_option, fail, json_option, load_model_or_fail,
    model_option, model_split_or_fail, out_option,
)

#: Default --diversity-weight (the weight benchmarks/oip_options.py measures).
DIVERSITY_WEIGHT = 2.0


def _given(name: str) -> bool:
    """True when the option ``name`` was typed (not left at its default)."""
    source = click.get_current_context().get_parameter_source(name)
    return source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def _numbers(text: str | None, kind: type, flag: str) -> tuple | None:
    """``"3,7,14,28"`` → ``(3, 7, 14, 28)``; a bad list is a usage error naming the flag."""
    if text is None:
        return None
    try:
        values = tuple(kind(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, e.g. 3,7,14,28; got {text!r}", param_hint=flag) from None
    if not values:
        raise click.BadParameter("give at least one number", param_hint=flag)
    return values


@click.command()
@click.option("--layer", default="Conv2D_3", show_default=True, help="Layer whose maps to visualise (or LAYER:MAP).")
@click.option("--map", "maps", type=int, multiple=True, help="Map index; repeat for several (e.g. --map 120 --map 56).")
@click.option("--all", "all_maps", is_flag=True, help="All maps of --layer (gallery + manifest).")
@click.option("--all-layers", is_flag=True, help="All maps of every conv layer (Conv2D_1..3 for Model A).")
@click.option("--strategy", type=click.Choice(["0", "1"]), default="0", show_default=True,
              help="0: the reference ascent at 28×28; 1: coarse-to-fine 7→14→28 (+ final) stages.")
@click.option("--precursor/--no-precursor", default=True, show_default=True,
              help="Start from the best of many long-scale random images per map (strategy 0); "
                   "--no-precursor = one random start per map, as the reference.")
@click.option("--candidates", type=click.IntRange(1, 65536), default=512, show_default=True, help="Precursor: random candidates scored.")
@click.option("--dataset-starts", is_flag=True,
              help="Precursor: try the dataset's test images for maps no random candidate triggers (and mark maps that "
                   "fire on data but not on their OIP in the gallery).")
@click.option("--steps", type=click.IntRange(1, 1_000_000), default=600, show_default=True, help="Ascent steps (the reference's n_epochs).")
@click.option("--epsilon", type=FiniteFloatRange(min=0, min_open=True), default=0.01, show_default=True, help="Step size on the unit-RMS gradient.")
@click.option("--criterion", type=FiniteFloatRange(min=0, min_open=True), default=2e-4, show_default=True,
              help="Convergence: relative loss change below this for 4 successive steps (after step 10).")
@click.option("--early-stop/--no-early-stop", default=False, show_default=True, help="Freeze maps once converged (faster).")
@click.option("--per-map/--no-per-map", default=None,
              help="Write views, evolution strip and loss curve per map (default: on for listed maps, off for --all and --all-layers).")
@click.option("--compare-strategies", is_flag=True,
              help="Also run strategy 1 on the same maps; write LAYER_strategies.png and per-map strategy-1 activation.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for all random images (same seed → same OIPs).")
@click.option("--param", "parametrisation", type=click.Choice(["pixel", "fourier"]), default="pixel", show_default=True,
              help="Modern: optimise pixels or a 1/f-scaled Fourier spectrum.")
@click.option("--optimizer", type=click.Choice(["normalized", "adam"]), default="normalized", show_default=True,
              help="Modern: normalized = the reference's unit-RMS step; adam = Adam.")
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Modern: step size [default: 0.01 for normalized; Adam 0.05 (pixel), 0.02 (fourier)].")
@click.option("--transforms/--no-transforms", default=False, show_default=True,
              help="Modern: random shift (±2 px), scale (±10 %) and rotation (±10°) before every step.")
@click.option("--l1", type=FiniteFloatRange(min=0), default=0.0, show_default=True,
              help="Modern: weight of the L1 penalty (mean |pixel|).")
@click.option("--tv", type=FiniteFloatRange(min=0), default=0.0, show_default=True,
              help="Modern: weight of the total-variation penalty.")
@click.option("--blur-every", type=click.IntRange(0), default=0, show_default=True,
              help="Modern: blur the pixels every K steps (pixel parametrisation; 0 = off).")
@click.option("--blur-sigma", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Modern: width of that 3×3 Gaussian blur, px [default: 0.5].")
@click.option("--diversity", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Modern: K OIPs per map pushed apart by a diversity penalty (1 = off); gallery row per map.")
@click.option("--diversity-weight", type=FiniteFloatRange(min=0), default=None,
              help=f"Modern: weight of the diversity penalty [default: {DIVERSITY_WEIGHT:g}].")
@click.option("--scales", default=None, metavar="N,N,...",
              help="Initial image: length scales of the random fluctuations (grid sizes), e.g. 3,7,14,28 "
                   "[default: the reference's 3,7,14,28 scaled to the input size].")
@click.option("--scale-weights", default=None, metavar="W,W,...",
              help="Initial image: one weight per scale, e.g. 0.2,0.2,0,0 for long scales only "
                   "[default: 0.5 each; the precursor's candidates 0.2,0.2,0,0].")
@click.option("--report-steps", type=click.IntRange(1, 20), default=6, show_default=True,
              help="Log-spaced report steps as the posts: n_el = steps // 2^N, reports at n_el·2^j, plus 0 and the last "
                   "step (600 steps, 6: 0, 9, 18, 36, 72, 144, 288, 599).")
@click.option("--log", is_flag=True, help="Print the posts' log: loss and its change at every report step, per map.")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Reference ascent: split the maps over this many threads, one PyTorch thread each (default: one "
                   "per core, at most 4; one batch on a GPU). The OIPs are the same for any number.")
@model_option
@dataset_option
@data_dir_option
@device_option
@json_option
@out_option("convscope-out/oip")
def oip(layer, maps, all_maps, all_layers, strategy, precursor, candidates, dataset_starts, steps, epsilon, criterion,
        early_stop, per_map, compare_strategies, seed, parametrisation, optimizer, lr, transforms, l1, tv, blur_every,
        blur_sigma, diversity, diversity_weight, scales, scale_weights, report_steps, log, workers, model_path, dataset,
        data_dir, device, as_json, out_dir) -> None:
    """Optimised input patterns (OIPs): images that maximally trigger a map.

    Gradient ascent on the map's mean activation, exactly as the reference
    (unit-RMS gradient, step EPSILON, re-standardise every step), batched over
    all requested maps. Outputs under --out: per map the OIP in viridis / gray /
    contrast-enhanced, the evolution strip and the loss curve; per layer a
    gallery with dead maps crossed out, the OIPs as .npy, and manifest.json
    (parameters, seed, per-map final loss, convergence step, status).

    Any "Modern:" option switches to the modern ascent (convscope.optvis.modern):
    Fourier parametrisation, Adam, transformation robustness, L1 / TV / blur
    regularisers, diversity. Its activations are the clean objective (the map's
    mean activation on the untransformed image), as for the reference. It
    writes the same files except the evolution strip; with --diversity K the
    .npy holds (maps, K, 28, 28) and the manifest the K members per map and
    their mean pairwise similarity.

    \b
    Examples:
      convscope oip --layer Conv2D_3 --map 120
      convscope oip --layer Conv2D_3 --all --early-stop
      convscope oip --all-layers --early-stop --json
      convscope oip --layer Conv2D_3 --map 120 --param fourier --optimizer adam --transforms
      convscope oip --layer Conv2D_3 --map 7 --diversity 4
    """
    from convscope.address import AddressError
    from convscope.app.oip import ModernOptions, OIPOptions, OptionsError, run_oips
    from convscope.cli.output import finish, terminal_progress, write_result, writing
    from convscope.device import default_workers, model_device
    from convscope.optvis.core import Cancelled

    modern = ModernOptions(parametrisation, optimizer, lr, transforms, l1, tv, blur_every, blur_sigma, diversity,
                           diversity_weight)
    given = frozenset(name for name in ("precursor", "candidates", "dataset_starts", "workers") if _given(name))
    options = OIPOptions(
        strategy=strategy, steps=steps, epsilon=epsilon if _given("epsilon") or not modern.active else None,
        criterion=criterion if _given("criterion") or not modern.active else None, early_stop=early_stop,
        precursor=precursor, candidates=candidates, dataset_starts=dataset_starts,
        scales=_numbers(scales, int, "--scales"), scale_weights=_numbers(scale_weights, float, "--scale-weights"),
        report_steps=report_steps, seed=seed, compare_strategies=compare_strategies,
        per_map=(not (all_maps or all_layers)) if per_map is None else per_map, log=log,
        modern=modern, given=given, workers=workers,
    )
    try:
        options.check()
    except OptionsError as exc:
        raise click.UsageError(str(exc)) from None
    model = load_model_or_fail(model_path, device)
    if workers is None and not modern.active and strategy == "0":
        options = dataclasses.replace(options, workers=default_workers(model_device(model)))
    if sum(bool(x) for x in (maps, all_maps, all_layers)) > 1:
        fail("choose one of --map, --all and --all-layers")
    if ":" in layer and (maps or all_maps or all_layers):
        fail(f"--layer {layer} already names a map; drop the ':MAP' part to use --map/--all")
    if not (maps or all_maps or all_layers) and ":" not in layer:
        fail(f"say which maps: --map N (e.g. --map 120), --all for every map of {layer}, or --all-layers")
    from convscope.layers import conv_layers

    try:
        jobs = [(name, None) for name in conv_layers(model)] if all_layers else [(layer, list(maps) if maps else None)]
        from convscope.app.oip import resolve_jobs

        resolve_jobs(model, jobs)  # bad layers and maps stop here, before any work
    except AddressError as exc:
        fail(str(exc))
    dataset_images = None
    if dataset_starts and modern.diversity == 1:
        from convscope.inference import to_input

        split = model_split_or_fail(model, "test", dataset, data_dir)
        dataset_images = to_input(model, split.images[:10000]).cpu()
    try:
        with terminal_progress(disable=as_json) as progress:
            run = run_oips(model, jobs, options, dataset_images=dataset_images, progress=progress)
    except Cancelled:
        fail("interrupted: nothing was written (the files are written when every OIP is finished)")
    with writing(out_dir):
        written = write_result(run, out_dir)
    finish(run, written, as_json)


@click.command()
@click.option("--steps", type=click.IntRange(1), default=300, show_default=True, help="Ascent steps per pass (reference: 300).")
@click.option("--passes", type=click.IntRange(1), default=2, show_default=True, help="Passes; each later pass starts from the previous result.")
@click.option("--jitter", type=click.IntRange(0), default=1, show_default=True, help="Random roll per step, ± pixels (1 px ≈ 4 % of 28).")
@click.option("--epsilon", type=FiniteFloatRange(min=0, min_open=True), default=0.01, show_default=True, help="Step size on the unit-RMS gradient.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for the start images and jitter.")
@model_option
@device_option
@json_option
@out_option("convscope-out/classes")
def classes(steps, passes, jitter, epsilon, seed, model_path, device, as_json, out_dir) -> None:
    """Class patterns: maximise each class logit (softmax bypassed).

    Reference §5: noise start, STEPS reference ascent steps with a random
    jitter each step, a second pass seeded with the first. Writes a grid of
    the classes (classes.png: the digits 0–9 for the MNIST models, the model's
    class names otherwise), the first pass (classes_pass1.png), the images
    (classes.npy) and classes.json (logits and probabilities).

    \b
    Example:
      convscope classes --out my-classes
    """
    from convscope.app.oip import OptionsError, class_patterns
    from convscope.cli.output import finish, terminal_progress, write_result, writing
    from convscope.optvis.core import Cancelled

    model = load_model_or_fail(model_path, device)
    try:
        with terminal_progress(disable=as_json) as progress:
            result = class_patterns(model, steps=steps, epsilon=epsilon, jitter=jitter, passes=passes, seed=seed,
                                    progress=progress)
    except OptionsError as exc:
        raise click.UsageError(str(exc)) from None
    except Cancelled:
        fail("interrupted: nothing was written")
    with writing(out_dir):
        written = write_result(result, out_dir)
    finish(result, written, as_json)
