"""``convscope oip`` and ``convscope classes``: optimised input patterns.

Thin: parse, call :mod:`convscope.optvis`, render with :mod:`convscope.render.oip`,
write via :mod:`convscope.io`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from convscope.cli.common import (
    data_dir_option, device_option, emit_json, fail, json_option, load_model_or_fail, model_option, out_option,
)

if TYPE_CHECKING:  # the engine is imported lazily, when a command runs
    from convscope.optvis.modern import ModernOIPs


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


# -- the modern ascent (convscope.optvis.modern) ----------------------------------

#: Default --diversity-weight: the weight benchmarks/oip_options.py measures.
DIVERSITY_WEIGHT = 2.0


@dataclass(frozen=True)
class _ModernOptions:
    """The "Modern:" options as given; ``None`` = the API's default."""

    parametrisation: str = "pixel"
    optimizer: str = "normalized"
    lr: float | None = None
    transforms: bool = False
    l1: float = 0.0
    tv: float = 0.0
    blur_every: int = 0
    blur_sigma: float | None = None
    diversity: int = 1
    diversity_weight: float | None = None

    def changed(self) -> list[str]:
        """The options that differ from their defaults, as typed (``["--param fourier", ...]``)."""
        words = []
        for name in fields(self):
            value, default = getattr(self, name.name), name.default
            if value != default:
                flag = "--" + {"parametrisation": "param"}.get(name.name, name.name).replace("_", "-")
                words.append(flag if isinstance(value, bool) else f"{flag} {value:g}" if isinstance(value, float)
                             else f"{flag} {value}")
        return words

    @property
    def active(self) -> bool:
        return bool(self.changed())

    @property
    def weight(self) -> float:
        return DIVERSITY_WEIGHT if self.diversity_weight is None else self.diversity_weight

    def label(self) -> str:
        """Short description for titles: ``"fourier + adam + transforms"``."""
        parts = [self.parametrisation, self.optimizer]
        if self.lr is not None:
            parts[-1] += f" lr {self.lr:g}"
        parts += ["transforms"] * self.transforms + [f"L1 {self.l1:g}"] * bool(self.l1) + [f"TV {self.tv:g}"] * bool(self.tv)
        parts += [f"blur/{self.blur_every}"] * bool(self.blur_every)
        parts += [f"diversity ×{self.diversity} (w {self.weight:g})"] * (self.diversity > 1)
        return " + ".join(parts)


def _given(name: str) -> bool:
    """True when the option ``name`` was typed (not left at its default)."""
    source = click.get_current_context().get_parameter_source(name)
    return source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def _check_modern_combination(modern: _ModernOptions, *, strategy: str, compare_strategies: bool, early_stop: bool) -> None:
    """One clear usage error (exit status 2) for options that do not go with the modern ascent."""
    chosen = ", ".join(modern.changed())

    def refuse(message: str) -> None:
        raise click.UsageError(message)

    if strategy == "1":
        refuse(f"--strategy 1 (coarse-to-fine) cannot be combined with the modern options ({chosen}); "
               "drop --strategy 1 or the modern options")
    if compare_strategies:
        refuse(f"--compare-strategies compares the reference strategies and cannot be combined with the modern options "
               f"({chosen}); drop one of them")
    if early_stop:
        refuse(f"--early-stop belongs to the reference ascent; the modern ascent ({chosen}) always runs --steps steps: "
               "drop --early-stop")
    for name, flag in (("epsilon", "--epsilon"), ("criterion", "--criterion")):
        if _given(name):
            hint = "use --lr for the modern step size" if name == "epsilon" else "the modern ascent runs --steps steps"
            refuse(f"{flag} belongs to the reference ascent, not the modern one ({chosen}): drop {flag}; {hint}")
    if modern.blur_every and modern.parametrisation != "pixel":
        refuse("--blur-every blurs pixels and does nothing with --param fourier: drop --blur-every or use --param pixel")
    if modern.blur_sigma is not None and not modern.blur_every:
        refuse("--blur-sigma needs --blur-every K (K ≥ 1): add --blur-every or drop --blur-sigma")
    if modern.diversity_weight is not None and modern.diversity == 1:
        refuse("--diversity-weight needs --diversity K with K ≥ 2 (the number of OIPs per map)")
    if modern.diversity > 1:
        typed = [flag for name, flag in (("precursor", "--precursor"), ("candidates", "--candidates"),
                                          ("dataset_starts", "--dataset-starts")) if _given(name)]
        if typed:
            refuse(f"--diversity {modern.diversity} starts every member from its own random image and does not use "
                   f"the precursor (one best start per map): drop {' and '.join(typed)}")


def _write_manifest(out_dir: Path, manifest: dict, written: list[Path], started: float, as_json: bool) -> bool:
    """Stamp the run time, write ``manifest.json`` (atomically) and, with ``--json``,
    print the manifest plus the file list. True when the JSON was printed (then
    the human summary is skipped)."""
    from convscope.io import write_json

    manifest["seconds"] = round(time.perf_counter() - started, 3)
    written.append(write_json(out_dir / "manifest.json", manifest))
    if as_json:
        emit_json(manifest | {"files": [str(p) for p in written]})
    return as_json


def _modern_oips(model, layer_name: str, maps, modern: _ModernOptions, *, seed: int, steps: int, precursor: bool,
                 candidates: int, dataset, epsilon: float, progress):
    """:func:`~convscope.optvis.modern.modern_oips` with the command's options."""
    from convscope.optvis.modern import modern_oips

    options = {name: value for name, value in (("lr", modern.lr), ("blur_sigma", modern.blur_sigma)) if value is not None}
    return modern_oips(
        model, layer_name, maps, diversity_members=modern.diversity, diversity_weight=modern.weight, seed=seed,
        steps=steps, precursor=precursor, n_candidates=candidates, dataset_images=dataset, epsilon=epsilon,
        progress=progress, parametrisation=modern.parametrisation, optimizer=modern.optimizer,
        transforms=modern.transforms, l1=modern.l1, tv=modern.tv, blur_every=modern.blur_every, **options,
    )


def _modern_records(maps: list[int], run: "ModernOIPs") -> list[dict]:
    """Per-map manifest records. With K > 1 members, ``initial_loss`` / ``final_loss``
    are the members' means and ``members`` lists each (index j = ``.npy[map, j]``)."""
    records = []
    for i, map_index in enumerate(maps):
        initial, final = run.initial_loss[i].tolist(), run.final_loss[i].tolist()
        record = {
            "map": map_index, "initial_loss": sum(initial) / len(initial), "final_loss": sum(final) / len(final),
            "status": "max_steps" if max(final) > 0 else "dead", "converged_step": -1, "start": run.starts[i],
        }
        if run.similarity is not None:
            similarity = run.similarity[i].tolist()
            record["best_final_loss"] = max(final)
            record["mean_pairwise_similarity"] = sum(similarity) / len(similarity)
            record["members"] = [
                {"member": j, "initial_loss": initial[j], "final_loss": final[j], "similarity": similarity[j],
                 "status": "max_steps" if final[j] > 0 else "dead"}
                for j in range(len(final))
            ]
        records.append(record)
    return records


def _modern_map_outputs(out_dir: Path, layer: str, map_index: int, i: int, run: "ModernOIPs", modern: _ModernOptions) -> list[Path]:
    from convscope.io import save_figure, save_npy
    from convscope.render import oip as draw

    k = modern.diversity
    stem, label = f"{layer}_map{map_index:03d}", f"{layer}:{map_index}"
    history = run.history[:, i * k : (i + 1) * k]
    written = []
    for j in range(k):
        subtitle = (f"mean activation {float(run.initial_loss[i, j]):.3g} → {float(run.final_loss[i, j]):.3g}"
                    f" · {modern.label()} · start: {run.starts[i]}")
        if k > 1:
            subtitle += f" · similarity to the other members {float(run.similarity[i, j]):.2f}"
        name = f"{stem}_views.png" if k == 1 else f"{stem}_member{j}_views.png"
        member_label = label if k == 1 else f"{label} member {j}"
        written.append(save_figure(out_dir / name, draw.oip_views(run.images[i, j], title=member_label, subtitle=subtitle)))
    if k == 1:
        figure = draw.loss_curve(history[:, 0], title=f"{label} ({modern.label()})", steps=run.record_steps)
    else:
        names = [f"member {j}" for j in range(k)]
        figure = draw.layer_loss_curves(history, names, title=f"{label}, {k} members", highlight=names,
                                        steps=run.record_steps)
    written.append(save_figure(out_dir / f"{stem}_loss.png", figure))
    written.append(save_npy(out_dir / f"{stem}.npy", run.images[i, :, 0] if k > 1 else run.images[i, 0, 0]))
    return written


def _run_modern(model, jobs, modern: _ModernOptions, *, seed: int, steps: int, precursor: bool, candidates: int, dataset,
                epsilon: float, write_per_map: bool, as_json: bool, out_dir: Path) -> None:
    """The modern path of ``convscope oip``: same file layout as the reference path."""
    from convscope.io import save_figure, save_npy
    from convscope.render import oip as draw

    k = modern.diversity
    manifest: dict = {"command": "oip", "seed": seed, "strategy": "modern",
                      "modern": {"options": modern.changed(), "label": modern.label()}, "layers": {}}
    written: list[Path] = []
    started = time.perf_counter()
    for layer_name, map_tensor in jobs:
        maps = map_tensor.tolist()
        description = f"{layer_name} modern ({len(maps)} maps" + (f" × {k})" if k > 1 else ")")
        with _progress_bar(description, steps) as progress:
            run = _modern_oips(model, layer_name, map_tensor, modern, seed=seed, steps=steps, precursor=precursor,
                               candidates=candidates, dataset=dataset, epsilon=epsilon, progress=progress)
        records = _modern_records(maps, run)
        info = {
            "maps": len(maps), "non_zero": sum(r["status"] != "dead" for r in records),
            "dead_maps": [r["map"] for r in records if r["status"] == "dead"], "params": run.params, "per_map": records,
        }
        if k > 1:
            info["members_per_map"] = k
            info["mean_pairwise_similarity"] = float(run.similarity.mean())
        manifest["layers"][layer_name] = info
        images = run.images  # (M, K, 1, H, W)
        flat_images = images.reshape(-1, *images.shape[2:])
        written.append(save_npy(out_dir / f"{layer_name}_oips.npy", images[:, :, 0] if k > 1 else images[:, 0, 0]))
        if len(flat_images) > 1:
            labels = maps if k == 1 else [f"{m}·{j}" for m in maps for j in range(k)]  # loss-curve labels
            if k == 1:
                figure = draw.layer_gallery(flat_images, maps, run.final_loss[:, 0],
                                            title=f"OIPs of {layer_name} ({modern.label()}, seed {seed})")
            else:
                figure = draw.diversity_gallery(
                    images, maps, run.final_loss, run.similarity.mean(dim=1),
                    title=(f"{layer_name}: {k} OIPs per map, seed {seed}\n{modern.label()}\n"
                           f"mean pairwise similarity {info['mean_pairwise_similarity']:.2f} (sim: per map)"))
            written.append(save_figure(out_dir / f"{layer_name}_gallery.png", figure))
            written.append(save_figure(out_dir / f"{layer_name}_losses.png", draw.layer_loss_curves(
                run.history, labels, title=f"{layer_name} ({modern.label()})", steps=run.record_steps)))
        if write_per_map:
            for i, map_index in enumerate(maps):
                written.extend(_modern_map_outputs(out_dir, layer_name, map_index, i, run, modern))
    if _write_manifest(out_dir, manifest, written, started, as_json):
        return
    for layer_name, info in manifest["layers"].items():
        if info["maps"] == 1:
            rec = info["per_map"][0]
            line = (f"{layer_name}:{rec['map']}: mean activation {rec['initial_loss']:.4g} → {rec['final_loss']:.4g} "
                    f"({modern.label()})")
            if k > 1:
                finals = ", ".join(f"{member['final_loss']:.3g}" for member in rec["members"])
                line = (f"{layer_name}:{rec['map']}: {k} OIPs, mean activation {finals}; "
                        f"mean pairwise similarity {rec['mean_pairwise_similarity']:.3f} ({modern.label()})")
        else:
            line = f"{layer_name}: {info['non_zero']} of {info['maps']} maps reach a non-zero OIP ({modern.label()})"
            if info["dead_maps"]:
                dead = info["dead_maps"]
                line += f"; never reacted: {dead[:20]}{' …' if len(dead) > 20 else ''}"
            if k > 1:
                line += f"; mean pairwise similarity {info['mean_pairwise_similarity']:.3f}"
        click.echo(line)
    click.echo(f"{len(written)} files in {out_dir} ({manifest['seconds']:.1f} s)")


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
@click.option("--param", "parametrisation", type=click.Choice(["pixel", "fourier"]), default="pixel", show_default=True,
              help="Modern: optimise pixels or a 1/f-scaled Fourier spectrum.")
@click.option("--optimizer", type=click.Choice(["normalized", "adam"]), default="normalized", show_default=True,
              help="Modern: normalized = the reference's unit-RMS step; adam = Adam.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Modern: step size [default: 0.01 for normalized; Adam 0.05 (pixel), 0.02 (fourier)].")
@click.option("--transforms/--no-transforms", default=False, show_default=True,
              help="Modern: random shift (±2 px), scale (±10 %) and rotation (±10°) before every step.")
@click.option("--l1", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Modern: weight of the L1 penalty (mean |pixel|).")
@click.option("--tv", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Modern: weight of the total-variation penalty.")
@click.option("--blur-every", type=click.IntRange(0), default=0, show_default=True,
              help="Modern: blur the pixels every K steps (pixel parametrisation; 0 = off).")
@click.option("--blur-sigma", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Modern: width of that 3×3 Gaussian blur, px [default: 0.5].")
@click.option("--diversity", type=click.IntRange(1), default=1, show_default=True,
              help="Modern: K OIPs per map pushed apart by a diversity penalty (1 = off); gallery row per map.")
@click.option("--diversity-weight", type=click.FloatRange(min=0), default=None,
              help=f"Modern: weight of the diversity penalty [default: {DIVERSITY_WEIGHT:g}].")
@model_option
@data_dir_option
@device_option
@json_option
@out_option("convscope-out/oip")
def oip(layer, maps, all_maps, all_layers, strategy, precursor, candidates, dataset_starts, steps, epsilon, criterion,
        early_stop, per_map, compare_strategies, seed, parametrisation, optimizer, lr, transforms, l1, tv, blur_every,
        blur_sigma, diversity, diversity_weight, model_path, data_dir, device, as_json, out_dir) -> None:
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
    modern = _ModernOptions(parametrisation, optimizer, lr, transforms, l1, tv, blur_every, blur_sigma, diversity,
                            diversity_weight)
    if modern.active:
        _check_modern_combination(modern, strategy=strategy, compare_strategies=compare_strategies,
                                  early_stop=early_stop)
    import torch

    from convscope.address import AddressError
    from convscope.io import save_figure, save_npy
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
    if modern.active:
        dataset = _dataset_images(model, data_dir, 10000) if dataset_starts and modern.diversity == 1 else None
        _run_modern(model, jobs, modern, seed=seed, steps=steps, precursor=precursor, candidates=candidates,
                    dataset=dataset, epsilon=epsilon, write_per_map=write_per_map, as_json=as_json, out_dir=out_dir)
        return
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
    if _write_manifest(out_dir, manifest, written, started, as_json):
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
@out_option("convscope-out/classes")
def classes(steps, passes, jitter, epsilon, seed, model_path, device, as_json, out_dir) -> None:
    """Class patterns: maximise each class logit (softmax bypassed).

    Reference §5: noise start, STEPS reference ascent steps with a random
    jitter each step, a second pass seeded with the first. Writes a 2×5 grid
    of the digits 0–9 (classes.png), the first pass (classes_pass1.png), the
    images (classes.npy) and classes.json (logits and probabilities).

    \b
    Example:
      convscope classes --out my-classes
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
