"""``convscope oip`` and ``convscope classes``: optimised input patterns.

Thin: parse, call :mod:`convscope.optvis`, render with :mod:`convscope.render.oip`,
write via :mod:`convscope.io`.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import click

from convscope.cli.common import (
    data_dir_option, device_option, echo_err, emit_json, fail, json_option, load_model_or_fail, model_option, out_option,
)


@contextlib.contextmanager
def _progress_bar(description: str, total: int):
    """A rich progress bar on stderr; yields ``progress(step, steps, active)``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[active]} active"),
        TimeElapsedColumn(), console=Console(stderr=True), transient=True,
    ) as bar:
        task = bar.add_task(description, total=total, active="")

        def progress(step: int, steps: int, active: int) -> None:
            bar.update(task, completed=step, total=steps, active=str(active))

        yield progress


def _dataset_images(model, data_dir: Path | None, count: int):
    from convscope.data import load_split
    from convscope.inference import to_input

    try:
        split = load_split("test", data_dir=data_dir)
    except Exception as exc:  # noqa: BLE001 - any data problem becomes one clear line
        fail(f"--dataset-starts needs the MNIST test images: {exc}")
    return to_input(model, split.images[:count]).cpu()


def _map_outputs(out_dir: Path, layer: str, result, index: int, map_index: int) -> list[Path]:
    from convscope.io import save_figure, save_npy
    from convscope.render import oip as draw

    ascent = result.ascent
    stem = f"{layer}_map{map_index:03d}"
    label = f"{layer}:{map_index}"
    final = float(ascent.final_loss[index])
    subtitle = (
        f"mean activation {float(ascent.initial_loss[index]):.3g} → {final:.3g} · {ascent.status[index]}"
        f" · start: {result.per_map()[index]['start']}"
    )
    written = [
        save_figure(out_dir / f"{stem}_views.png", draw.oip_views(ascent.images[index], title=label, subtitle=subtitle)),
        save_figure(
            out_dir / f"{stem}_evolution.png",
            draw.evolution_strip(ascent.snapshots[:, index], ascent.snapshot_steps, ascent.losses[:, index], title=label),
        ),
        save_figure(
            out_dir / f"{stem}_loss.png",
            draw.loss_curve(
                ascent.losses[:, index], title=label, converged_step=int(ascent.converged_step[index]),
                snapshot_steps=ascent.snapshot_steps,
            ),
        ),
        save_npy(out_dir / f"{stem}.npy", ascent.images[index, 0]),
    ]
    return written


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
@click.option("--candidates", type=click.IntRange(1), default=512, show_default=True, help="Precursor: random candidates scored.")
@click.option("--dataset-starts", is_flag=True, help="Precursor: try MNIST test images for maps no random candidate triggers.")
@click.option("--steps", type=click.IntRange(1), default=600, show_default=True, help="Ascent steps (the reference's n_epochs).")
@click.option("--epsilon", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True, help="Step size on the unit-RMS gradient.")
@click.option("--criterion", type=click.FloatRange(min=0, min_open=True), default=2e-4, show_default=True,
              help="Convergence: relative loss change below this for 4 successive steps (after step 10).")
@click.option("--early-stop/--no-early-stop", default=False, show_default=True, help="Freeze maps once converged (faster).")
@click.option("--per-map/--no-per-map", default=None,
              help="Write views, evolution strip and loss curve per map (default: on for single maps, off for --all).")
@click.option("--compare-strategies", is_flag=True,
              help="Also run strategy 1 on the same maps; write LAYER_strategies.png and per-map strategy-1 activation.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for all random images (same seed → same OIPs).")
@model_option
@data_dir_option
@device_option
@json_option
@out_option("runs/oip")
def oip(layer, maps, all_maps, all_layers, strategy, precursor, candidates, dataset_starts, steps, epsilon, criterion,
        early_stop, per_map, compare_strategies, seed, model_path, data_dir, device, as_json, out_dir) -> None:
    """Optimised input patterns (OIPs): images that maximally trigger a map.

    Gradient ascent on the map's mean activation, exactly as the reference
    (unit-RMS gradient, step EPSILON, re-standardise every step), batched over
    all requested maps. Outputs under --out: per map the OIP in viridis / gray /
    contrast-enhanced, the evolution strip and the loss curve; per layer a
    gallery with dead maps crossed out, the OIPs as .npy, and manifest.json
    (parameters, seed, per-map final loss, convergence step, status).

    \b
    Examples:
      convscope oip --layer Conv2D_3 --map 120
      convscope oip --layer Conv2D_3 --all --early-stop
      convscope oip --all-layers --early-stop --json
    """
    import torch

    from convscope.address import AddressError
    from convscope.io import save_figure, save_npy, write_json
    from convscope.optvis import objectives as obj
    from convscope.optvis.oip import compute_oips, conv_layers, validate_maps
    from convscope.optvis.strategies import coarse_to_fine_ascent
    from convscope.render import oip as draw

    model = load_model_or_fail(model_path, device)
    if sum(bool(x) for x in (maps, all_maps, all_layers)) > 1:
        fail("choose one of --map, --all and --all-layers")
    if ":" in layer and (maps or all_maps or all_layers):
        fail(f"--layer {layer} already names a map; drop the ':MAP' part to use --map/--all")
    if not (maps or all_maps or all_layers) and ":" not in layer:
        fail(f"say which maps: --map N (e.g. --map 120), --all for every map of {layer}, or --all-layers")
    try:
        if all_layers:
            jobs = [(name, None) for name in conv_layers(model)]
        else:
            jobs = [(layer, list(maps) if maps else None)]
        jobs = [validate_maps(model, name, chosen) for name, chosen in jobs]
    except AddressError as exc:
        fail(str(exc))
    single = not (all_maps or all_layers)
    write_per_map = single if per_map is None else per_map
    dataset = _dataset_images(model, data_dir, 10000) if dataset_starts else None

    manifest: dict = {"command": "oip", "seed": seed, "strategy": int(strategy), "layers": {}}
    written: list[Path] = []
    started = time.perf_counter()
    for layer_name, map_tensor in jobs:
        if strategy == "1":
            with _progress_bar(f"{layer_name} strategy 1", 540) as progress:
                c2f = coarse_to_fine_ascent(
                    model, obj.channels(layer_name, map_tensor), len(map_tensor),
                    generator=torch.Generator().manual_seed(seed), epsilon=epsilon, progress=progress,
                )
            images, final_loss, losses = c2f.images, c2f.final_loss, c2f.losses
            records = [{"map": int(m), "initial_loss": float(c2f.losses[0, i]), "final_loss": float(c2f.final_loss[i]),
                        "status": "max_steps", "converged_step": -1, "start": "random"} for i, m in enumerate(map_tensor)]
            params = c2f.params | {"seed": seed, "layer": layer_name}
            result = None
        else:
            with _progress_bar(f"{layer_name} ({len(map_tensor)} maps)", steps) as progress:
                result = compute_oips(
                    model, layer_name, map_tensor.tolist(), seed=seed, steps=steps, epsilon=epsilon, criterion=criterion,
                    early_stop=early_stop, precursor=precursor, n_candidates=candidates, dataset_images=dataset,
                    progress=progress,
                )
            images, final_loss, losses = result.images, result.ascent.final_loss, result.ascent.losses
            records, params = result.per_map(), result.ascent.params
        alive = int((final_loss > 0).sum())
        manifest["layers"][layer_name] = {
            "maps": len(map_tensor), "non_zero": alive, "dead_maps": [r["map"] for r in records if not r["final_loss"] > 0],
            "params": params, "per_map": records,
        }
        if compare_strategies and strategy == "0":
            with _progress_bar(f"{layer_name} strategy 1", 540) as progress:
                other = coarse_to_fine_ascent(
                    model, obj.channels(layer_name, map_tensor), len(map_tensor),
                    generator=torch.Generator().manual_seed(seed), epsilon=epsilon, progress=progress,
                )
            for record, value in zip(records, other.final_loss.tolist()):
                record["strategy1_final_loss"] = value
            wins = int((other.final_loss > final_loss).sum())
            manifest["layers"][layer_name]["strategy_comparison"] = {
                "strategy1_higher": wins, "strategy0_higher": int((other.final_loss < final_loss).sum()),
                "strategy1_non_zero": int((other.final_loss > 0).sum()),
                "mean_final_strategy0": float(final_loss.mean()), "mean_final_strategy1": float(other.final_loss.mean()),
                "strategy1_params": other.params,
            }
            label0 = "strategy 0" + (" + precursor" if precursor else "")
            written.append(save_figure(out_dir / f"{layer_name}_strategies.png", draw.strategy_comparison(
                final_loss, other.final_loss, label_a=label0, label_b="strategy 1", title=f"{layer_name}, seed {seed}")))
        stem = f"{layer_name}_oips"
        written.append(save_npy(out_dir / f"{stem}.npy", images[:, 0]))
        if len(map_tensor) > 1:
            written.append(save_figure(
                out_dir / f"{layer_name}_gallery.png",
                draw.layer_gallery(images, map_tensor.tolist(), final_loss, title=f"OIPs of {layer_name} (seed {seed})"),
            ))
            written.append(save_figure(out_dir / f"{layer_name}_losses.png",
                                       draw.layer_loss_curves(losses, map_tensor.tolist(), title=layer_name)))
        if write_per_map:
            for i, map_index in enumerate(map_tensor.tolist()):
                if result is not None:
                    written.extend(_map_outputs(out_dir, layer_name, result, i, map_index))
                else:
                    written.append(save_figure(out_dir / f"{layer_name}_map{map_index:03d}_views.png",
                                               draw.oip_views(images[i], title=f"{layer_name}:{map_index} (strategy 1)")))
    manifest["seconds"] = round(time.perf_counter() - started, 3)
    written.append(write_json(out_dir / "manifest.json", manifest))
    if as_json:
        emit_json(manifest | {"files": [str(p) for p in written]})
        return
    for layer_name, info in manifest["layers"].items():
        dead = info["dead_maps"]
        line = f"{layer_name}: {info['non_zero']} of {info['maps']} maps reach a non-zero OIP"
        if info["maps"] == 1:
            rec = info["per_map"][0]
            line = (f"{layer_name}:{rec['map']}: mean activation {rec['initial_loss']:.4g} → {rec['final_loss']:.4g} "
                    f"({rec['status']})")
        elif dead:
            line += f"; never reacted: {dead[:20]}{' …' if len(dead) > 20 else ''}"
        click.echo(line)
        if "strategy_comparison" in info:
            cmp = info["strategy_comparison"]
            click.echo(f"  strategy 1 higher on {cmp['strategy1_higher']} of {info['maps']} maps; mean final activation "
                       f"{cmp['mean_final_strategy0']:.3f} (strategy 0) vs {cmp['mean_final_strategy1']:.3f} (strategy 1); "
                       f"strategy 1 non-zero {cmp['strategy1_non_zero']}")
    click.echo(f"{len(written)} files in {out_dir} ({manifest['seconds']:.1f} s)")


@click.command()
@click.option("--steps", type=click.IntRange(1), default=300, show_default=True, help="Ascent steps per pass (reference: 300).")
@click.option("--passes", type=click.IntRange(1), default=2, show_default=True, help="Passes; each later pass starts from the previous result.")
@click.option("--jitter", type=click.IntRange(0), default=1, show_default=True, help="Random roll per step, ± pixels (1 px ≈ 4 % of 28).")
@click.option("--epsilon", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True, help="Step size on the unit-RMS gradient.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the start images and jitter.")
@model_option
@device_option
@json_option
@out_option("runs/classes")
def classes(steps, passes, jitter, epsilon, seed, model_path, device, as_json, out_dir) -> None:
    """Class patterns: maximise each class logit (softmax bypassed).

    Reference §5: noise start, STEPS reference ascent steps with a random
    jitter each step, a second pass seeded with the first. Writes a 2×5 grid
    of the digits 0–9 (classes.png), the first pass (classes_pass1.png), the
    images (classes.npy) and classes.json (logits and probabilities).

    \b
    Example:
      convscope classes --out runs/classes
    """
    from convscope.io import save_figure, save_npy, write_json
    from convscope.optvis.strategies import class_patterns
    from convscope.render import oip as draw

    model = load_model_or_fail(model_path, device)
    started = time.perf_counter()
    with _progress_bar("class logits", steps) as progress:
        result = class_patterns(model, steps=steps, epsilon=epsilon, jitter=jitter, passes=passes, seed=seed, progress=progress)
    labels = result.params["classes"]
    written = [
        save_figure(out_dir / "classes.png", draw.class_grid(
            result.images, labels, result.probabilities, result.logits,
            title=f"class patterns: each logit maximised ({passes} passes × {steps} steps, jitter ±{jitter} px)")),
        save_figure(out_dir / "classes_pass1.png", draw.class_grid(
            result.first_pass, labels, title="class patterns after the first pass")),
        save_npy(out_dir / "classes.npy", result.images[:, 0]),
    ]
    summary = {
        "command": "classes", "params": result.params,
        "per_class": [{"class": c, "logit": float(result.logits[i]), "probability": float(result.probabilities[i])}
                      for i, c in enumerate(labels)],
        "seconds": round(time.perf_counter() - started, 3),
    }
    written.append(write_json(out_dir / "classes.json", summary))
    if as_json:
        emit_json(summary | {"files": [str(p) for p in written]})
        return
    for row in summary["per_class"]:
        click.echo(f"class {row['class']}: logit {row['logit']:.2f}, p = {row['probability']:.4f}")
    click.echo(f"{len(written)} files in {out_dir}")
