"""Use cases of optimised input patterns: the OIPs of maps (reference strategy 0,
strategy 1, the modern options, diversity) and the class patterns.

::

    from convscope.app.oip import OIPOptions, run_oips, class_patterns
    run = run_oips(model, [("Conv2D_3", [120, 56])], OIPOptions(steps=600))
    run.to_json()["layers"]["Conv2D_3"]["per_map"][0]["final_loss"]
    run.figures()["Conv2D_3_map120_views"]()      # a matplotlib Figure

The CLI (``convscope oip`` / ``convscope classes``), the atlas and the explorer
all call these functions; they never read or write files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from convscope.app.base import Result
from convscope.progress import Progress, silent

#: Default diversity weight (the one ``benchmarks/oip_options.py`` measures).
DIVERSITY_WEIGHT = 2.0


class OptionsError(ValueError):
    """Options that do not go together; the message names the command-line flags."""


@dataclass(frozen=True)
class ModernOptions:
    """The options beyond the reference (their defaults = the reference path)."""

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
        """The options that differ from their defaults, as flags (``["--param fourier", ...]``)."""
        words = []
        for item in fields(self):
            value, default = getattr(self, item.name), item.default
            if value != default:
                flag = "--" + {"parametrisation": "param"}.get(item.name, item.name).replace("_", "-")
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


@dataclass(frozen=True)
class OIPOptions:
    """Every option of an OIP run, with the reference's defaults in one place.

    ``epsilon`` / ``criterion`` ``None`` mean "not given" (then 0.01 / 2e-4 for the
    reference; the modern path refuses them). ``scales`` / ``scale_weights``: the
    initial image's length scales and weights (default: the reference's 3, 7, 14,
    28 scaled to the input size, weights 0.5 each for random starts, 0.2, 0.2, 0, 0
    for the precursor's candidates). ``report_steps``: the posts' log-spaced
    snapshot schedule (6 → 0, 9, 18, 36, 72, 144, 288, 599 for 600 steps).
    ``log``: include the posts' per-report loss log in the summary.
    """

    strategy: str = "0"
    steps: int = 600
    epsilon: float | None = None
    criterion: float | None = None
    early_stop: bool = False
    precursor: bool = True
    candidates: int = 512
    dataset_starts: bool = False
    scales: tuple[int, ...] | None = None
    scale_weights: tuple[float, ...] | None = None
    report_steps: int = 6
    seed: int = 0
    compare_strategies: bool = False
    per_map: bool | None = None
    log: bool = False
    modern: ModernOptions = field(default_factory=ModernOptions)
    #: precursor: steps of pre-ReLU ascent for maps no start triggers
    preactivation_steps: int = 300
    #: the reference ascent's maps split over this many threads, one PyTorch thread
    #: each (the same OIPs for any number); ``None``: one batch on PyTorch's threads.
    #: The modern path and strategy 1 always run one batch.
    workers: int | None = None
    #: which options the user gave explicitly (for the combination checks)
    given: frozenset[str] = frozenset()

    @property
    def step_size(self) -> float:
        return 0.01 if self.epsilon is None else self.epsilon

    @property
    def convergence(self) -> float:
        return 2e-4 if self.criterion is None else self.criterion

    def check(self) -> None:
        """Raise :class:`OptionsError` for options that do not go together."""
        modern = self.modern
        for name, value in (("steps", self.steps), ("candidates", self.candidates)):
            if value < 1:
                raise OptionsError(f"--{name} must be at least 1; got {value}")
        for name, value in (("epsilon", self.epsilon), ("criterion", self.criterion), ("lr", modern.lr),
                            ("l1", modern.l1), ("tv", modern.tv), ("blur-sigma", modern.blur_sigma),
                            ("diversity-weight", modern.diversity_weight)):
            if value is not None and (not math.isfinite(value) or value < 0):
                raise OptionsError(f"--{name} must be a finite, non-negative number; got {value}")
        if self.scales is not None or self.scale_weights is not None:
            scales, weights = self.scales or (), self.scale_weights or ()
            if self.scales is None or self.scale_weights is None or len(scales) != len(weights):
                raise OptionsError("--scales and --scale-weights go together, one weight per scale (e.g. --scales 3,7,14,28 "
                                   "--scale-weights 0.2,0.2,0,0)")
            if any(s < 1 for s in scales) or not any(w != 0 for w in weights) or any(not math.isfinite(w) for w in weights):
                raise OptionsError("--scales must be whole numbers ≥ 1 and --scale-weights finite numbers, at least one non-zero")
        if self.workers is not None and self.workers < 1:
            raise OptionsError(f"--workers must be at least 1; got {self.workers}")
        if (self.workers or 1) > 1 and "workers" in self.given and (modern.active or self.strategy == "1"):
            path = "strategy 1" if self.strategy == "1" else f"the modern ascent ({', '.join(modern.changed())})"
            raise OptionsError(f"--workers splits the reference ascent's maps over threads; {path} runs one batch: "
                               "drop --workers")
        if self.report_steps < 1 or self.report_steps > 20:
            raise OptionsError(f"--report-steps must be 1..20; got {self.report_steps}")
        if not modern.active:
            return
        chosen = ", ".join(modern.changed())
        if self.strategy == "1":
            raise OptionsError(f"--strategy 1 (coarse-to-fine) cannot be combined with the modern options ({chosen}); "
                               "drop --strategy 1 or the modern options")
        if self.compare_strategies:
            raise OptionsError("--compare-strategies compares the reference strategies and cannot be combined with the "
                               f"modern options ({chosen}); drop one of them")
        if self.early_stop:
            raise OptionsError(f"--early-stop belongs to the reference ascent; the modern ascent ({chosen}) always runs "
                               "--steps steps: drop --early-stop")
        for name, flag in (("epsilon", "--epsilon"), ("criterion", "--criterion")):
            if getattr(self, name) is not None:
                hint = "use --lr for the modern step size" if name == "epsilon" else "the modern ascent runs --steps steps"
                raise OptionsError(f"{flag} belongs to the reference ascent, not the modern one ({chosen}): drop {flag}; {hint}")
        if modern.blur_every and modern.parametrisation != "pixel":
            raise OptionsError("--blur-every blurs pixels and does nothing with --param fourier: drop --blur-every or use "
                               "--param pixel")
        if modern.blur_sigma is not None and not modern.blur_every:
            raise OptionsError("--blur-sigma needs --blur-every K (K ≥ 1): add --blur-every or drop --blur-sigma")
        if modern.diversity_weight is not None and modern.diversity == 1:
            raise OptionsError("--diversity-weight needs --diversity K with K ≥ 2 (the number of OIPs per map)")
        if modern.diversity > 1:
            typed = [flag for name, flag in (("precursor", "--precursor"), ("candidates", "--candidates"),
                                             ("dataset_starts", "--dataset-starts")) if name in self.given]
            if typed:
                raise OptionsError(f"--diversity {modern.diversity} starts every member from its own random image and does "
                                   f"not use the precursor (one best start per map): drop {' and '.join(typed)}")


@dataclass
class LayerRun:
    """The OIPs of some maps of one layer (``K`` members per map; ``K`` = 1 unless diversity).

    Attributes:
        layer: layer name.
        maps: the ``M`` maps.
        images: ``(M, K, C, H, W)`` standardised OIPs.
        initial_loss, final_loss: ``(M, K)`` the map's mean activation at the start / end.
        history: ``(R, M·K)`` the objective at ``history_steps`` (every step for the
            reference: ``R = steps + 1``).
        snapshots: ``(S, M, C, H, W)`` images at ``snapshot_steps`` (reference path), or ``None``.
        status: per map ``converged`` | ``max_steps`` | ``dead``.
        converged_step: per map, or -1.
        starts: per map, where its start came from.
        similarity: ``(M, K)`` diversity runs, else ``None``.
        strategy1_final: ``(M,)`` strategy 1's final activation (``--compare-strategies``).
        fires_on_data: ``(M,)`` bool, the map fires on some dataset image (when known).
        params: every parameter used.
    """

    layer: str
    maps: list[int]
    images: torch.Tensor
    initial_loss: torch.Tensor
    final_loss: torch.Tensor
    history: torch.Tensor
    history_steps: list[int]
    snapshots: torch.Tensor | None
    snapshot_steps: list[int]
    status: list[str]
    converged_step: list[int]
    starts: list[str]
    similarity: torch.Tensor | None
    params: dict[str, Any]
    strategy1_final: torch.Tensor | None = None
    strategy1_params: dict[str, Any] | None = None
    fires_on_data: torch.Tensor | None = None
    member_steps: int = 0

    @property
    def members(self) -> int:
        return int(self.images.shape[1])

    def map_history(self, i: int) -> torch.Tensor:
        """``(R, K)`` the history of map ``i``'s members."""
        k = self.members
        return self.history[:, i * k : (i + 1) * k]

    def log(self, i: int) -> list[dict[str, float]]:
        """The posts' log for map ``i`` (member 0): loss and its change at every report step."""
        if self.snapshot_steps and len(self.history_steps) == self.history.shape[0] and self.history_steps[-1] >= self.snapshot_steps[-1]:
            values = self.map_history(i)[:, 0]
            index = {s: j for j, s in enumerate(self.history_steps)}
            rows, previous = [], None
            for step in self.snapshot_steps:
                loss = float(values[index[step]])
                rows.append({"step": step, "loss": loss, "delta": 0.0 if previous is None else loss - previous})
                previous = loss
            return rows
        return [{"step": s, "loss": float(v), "delta": 0.0} for s, v in zip(self.history_steps, self.map_history(i)[:, 0])]

    def record(self, i: int, full_losses: bool) -> dict[str, Any]:
        """The manifest record of map ``i``."""
        initial, final = self.initial_loss[i].tolist(), self.final_loss[i].tolist()
        record: dict[str, Any] = {
            "map": self.maps[i],
            "initial_loss": sum(initial) / len(initial),
            "final_loss": sum(final) / len(final),
            "status": self.status[i],
            "converged_step": self.converged_step[i],
            "start": self.starts[i],
            "log": self.log(i),
        }
        if self.fires_on_data is not None:
            record["fires_on_data"] = bool(self.fires_on_data[i])
        if self.strategy1_final is not None:
            record["strategy1_final_loss"] = float(self.strategy1_final[i])
        if full_losses:
            record["losses"] = self.map_history(i)[:, 0].tolist()
            if self.history_steps != list(range(len(self.history_steps))):
                record["loss_steps"] = list(self.history_steps)
        if self.similarity is not None:
            similarity = self.similarity[i].tolist()
            record["best_final_loss"] = max(final)
            record["mean_pairwise_similarity"] = sum(similarity) / len(similarity)
            record["members"] = [
                {"member": j, "initial_loss": initial[j], "final_loss": final[j], "similarity": similarity[j],
                 "status": "max_steps" if final[j] > 0 else "dead"}
                for j in range(len(final))
            ]
        return record


@dataclass
class OIPRun(Result):
    """The result of :func:`run_oips`: one :class:`LayerRun` per layer."""

    layers: list[LayerRun]
    options: OIPOptions
    model_name: str
    seconds: float = 0.0
    kind = "manifest"

    # -- JSON --------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        o = self.options
        strategy: Any = "modern" if o.modern.active else int(o.strategy)
        data: dict[str, Any] = {"command": "oip", "model": self.model_name, "seed": o.seed, "strategy": strategy,
                                "seconds": round(self.seconds, 3), "layers": {}}
        if o.modern.active:
            data["modern"] = {"options": o.modern.changed(), "label": o.modern.label()}
        for run in self.layers:
            full = len(run.maps) <= 16
            records = [run.record(i, full) for i in range(len(run.maps))]
            info: dict[str, Any] = {
                "maps": len(run.maps),
                "non_zero": sum(1 for r in records if r["final_loss"] > 0),
                "dead_maps": [r["map"] for r in records if not r["final_loss"] > 0],
                "params": run.params,
                "per_map": records,
                "report_steps": list(run.snapshot_steps),
            }
            if run.fires_on_data is not None:
                info["zero_but_fires_on_data"] = [r["map"] for r in records if not r["final_loss"] > 0 and r.get("fires_on_data")]
            if run.similarity is not None:
                info["members_per_map"] = run.members
                info["mean_pairwise_similarity"] = float(run.similarity.mean())
            if run.strategy1_final is not None:
                s0, s1 = run.final_loss[:, 0], run.strategy1_final
                info["strategy_comparison"] = {
                    "strategy1_higher": int((s1 > s0).sum()), "strategy0_higher": int((s1 < s0).sum()),
                    "strategy1_non_zero": int((s1 > 0).sum()),
                    "mean_final_strategy0": float(s0.mean()), "mean_final_strategy1": float(s1.mean()),
                    "strategy1_params": run.strategy1_params,
                }
            data["layers"][run.layer] = info
        return data

    # -- arrays and figures --------------------------------------------------------
    def _per_map(self) -> bool:
        single = len(self.layers) == 1 and len(self.layers[0].maps) == 1
        return single if self.options.per_map is None else self.options.per_map

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for run in self.layers:
            out[f"{run.layer}_oips"] = _squeeze(run.images)
            out[f"{run.layer}_loss_history"] = run.history.numpy()
            if self._per_map():
                for i, m in enumerate(run.maps):
                    out[f"{run.layer}_map{m:03d}"] = _squeeze(run.images[i : i + 1])[0]
        return out

    def figures(self) -> dict[str, Callable[[], Figure]]:
        from convscope.render import oip as draw

        o = self.options
        label = o.modern.label() if o.modern.active else None
        out: dict[str, Callable[[], Figure]] = {}
        for run in self.layers:
            flat = run.images.reshape(-1, *run.images.shape[2:])
            if len(flat) > 1:
                if run.members == 1:
                    title = f"OIPs of {run.layer} ({label}, seed {o.seed})" if label else f"OIPs of {run.layer} (seed {o.seed})"
                    out[f"{run.layer}_gallery"] = (lambda r=run, t=title: draw.layer_gallery(
                        r.images[:, 0], r.maps, r.final_loss[:, 0], title=t,
                        fires_on_data=None if r.fires_on_data is None else r.fires_on_data.tolist()))
                else:
                    out[f"{run.layer}_gallery"] = (lambda r=run: draw.diversity_gallery(
                        r.images, r.maps, r.final_loss, r.similarity.mean(dim=1),
                        title=(f"{r.layer}: {r.members} OIPs per map, seed {o.seed}\n{label}\n"
                               f"mean pairwise similarity {float(r.similarity.mean()):.2f} (sim: per map)")))
                labels = run.maps if run.members == 1 else [f"{m}·{j}" for m in run.maps for j in range(run.members)]
                out[f"{run.layer}_losses"] = (lambda r=run, lab=labels: draw.layer_loss_curves(
                    r.history, lab, title=f"{r.layer}" + (f" ({label})" if label else ""),
                    steps=None if r.history_steps == list(range(len(r.history_steps))) else r.history_steps))
            if run.strategy1_final is not None:
                name = "strategy 0" + (" + precursor" if o.precursor else "")
                out[f"{run.layer}_strategies"] = (lambda r=run, n=name: draw.strategy_comparison(
                    r.final_loss[:, 0], r.strategy1_final, label_a=n, label_b="strategy 1",
                    title=f"{r.layer}, seed {o.seed}", map_indices=r.maps))
            if self._per_map():
                for i in range(len(run.maps)):
                    out.update(self._map_figures(run, i))
        return out

    def _map_figures(self, run: LayerRun, i: int) -> dict[str, Callable[[], Figure]]:
        from convscope.render import oip as draw

        o = self.options
        m = run.maps[i]
        stem, label = f"{run.layer}_map{m:03d}", f"{run.layer}:{m}"
        out: dict[str, Callable[[], Figure]] = {}
        for j in range(run.members):
            subtitle = f"mean activation {float(run.initial_loss[i, j]):.3g} → {float(run.final_loss[i, j]):.3g}"
            if o.modern.active:
                subtitle += f" · {o.modern.label()}"
            elif o.strategy == "1":
                subtitle += " · strategy 1"
            else:
                subtitle += f" · {run.status[i]}"
            subtitle += f" · start: {run.starts[i]}"
            if run.similarity is not None:
                subtitle += f" · similarity to the other members {float(run.similarity[i, j]):.2f}"
            name = f"{stem}_views" if run.members == 1 else f"{stem}_member{j}_views"
            member_label = label if run.members == 1 else f"{label} member {j}"
            out[name] = (lambda r=run, ii=i, jj=j, t=member_label, s=subtitle: draw.oip_views(r.images[ii, jj], title=t, subtitle=s))
        if run.snapshots is not None:
            out[f"{stem}_evolution"] = lambda r=run, ii=i: draw.evolution_strip(
                r.snapshots[:, ii], r.snapshot_steps, r.map_history(ii)[:, 0], title=label)
        if run.members == 1:
            if o.modern.active:
                out[f"{stem}_loss"] = lambda r=run, ii=i: draw.loss_curve(
                    r.map_history(ii)[:, 0], title=f"{label} ({o.modern.label()})", steps=r.history_steps)
            else:
                out[f"{stem}_loss"] = lambda r=run, ii=i: draw.loss_curve(
                    r.map_history(ii)[:, 0], title=label, converged_step=r.converged_step[ii],
                    snapshot_steps=r.snapshot_steps)
        else:
            names = [f"member {j}" for j in range(run.members)]
            out[f"{stem}_loss"] = lambda r=run, ii=i: draw.layer_loss_curves(
                r.map_history(ii), names, title=f"{label}, {r.members} members", highlight=names, steps=r.history_steps)
        return out

    def summary(self) -> list[str]:
        o = self.options
        lines = []
        for run in self.layers:
            finals = run.final_loss.mean(dim=1)
            if len(run.maps) == 1:
                i = 0
                if run.members > 1:
                    values = ", ".join(f"{v:.3g}" for v in run.final_loss[0].tolist())
                    lines.append(f"{run.layer}:{run.maps[0]}: {run.members} OIPs, mean activation {values}; mean pairwise "
                                 f"similarity {float(run.similarity[0].mean()):.3f} ({o.modern.label()})")
                else:
                    how = o.modern.label() if o.modern.active else run.status[0]
                    lines.append(f"{run.layer}:{run.maps[0]}: mean activation {float(run.initial_loss[0, 0]):.4g} → "
                                 f"{float(run.final_loss[0, 0]):.4g} ({how})")
            else:
                alive = int((finals > 0).sum())
                line = f"{run.layer}: {alive} of {len(run.maps)} maps reach a non-zero OIP"
                if o.modern.active:
                    line += f" ({o.modern.label()})"
                dead = [m for m, v in zip(run.maps, finals.tolist()) if not v > 0]
                if dead:
                    line += f"; never reacted: {dead[:20]}{' …' if len(dead) > 20 else ''}"
                if run.similarity is not None:
                    line += f"; mean pairwise similarity {float(run.similarity.mean()):.3f}"
                lines.append(line)
                i = None
            if run.strategy1_final is not None:
                s0, s1 = run.final_loss[:, 0], run.strategy1_final
                lines.append(f"  strategy 1 higher on {int((s1 > s0).sum())} of {len(run.maps)} maps; mean final activation "
                             f"{float(s0.mean()):.3f} (strategy 0) vs {float(s1.mean()):.3f} (strategy 1); strategy 1 "
                             f"non-zero {int((s1 > 0).sum())}")
            if o.log:
                for i in range(min(len(run.maps), 8)):
                    lines.append(f"  log of {run.layer}:{run.maps[i]}")
                    for row in run.log(i):
                        lines.append(f"    step {row['step']:>5}: loss {row['loss']:.6g}  (Δ {row['delta']:+.3g})")
        return lines


def _squeeze(images: torch.Tensor) -> np.ndarray:
    """``(M, K, C, H, W)`` → the saved layout: ``(M, H, W)`` (gray, K = 1), ``(M, C, H, W)``
    (colour), ``(M, K, H, W)`` / ``(M, K, C, H, W)`` (diversity)."""
    array = images.numpy()
    if array.shape[1] == 1:
        array = array[:, 0]
        return array[:, 0] if array.shape[1] == 1 else array
    return array[:, :, 0] if array.shape[2] == 1 else array


# ---------------------------------------------------------------------------
# the use cases
# ---------------------------------------------------------------------------
def resolve_jobs(model: nn.Module, jobs: Sequence[tuple[str, Sequence[int] | None]]) -> list[tuple[str, torch.Tensor]]:
    """Validate ``(layer, maps or None)`` pairs against the model (``"all"`` layers:
    use :func:`~convscope.optvis.oip.conv_layers`). Raises ``AddressError``."""
    from convscope.optvis.oip import validate_maps

    return [validate_maps(model, layer, None if maps is None else list(maps)) for layer, maps in jobs]


def run_oips(
    model: nn.Module,
    jobs: Sequence[tuple[str, Sequence[int] | None]],
    options: OIPOptions | None = None,
    *,
    dataset_images: torch.Tensor | None = None,
    fires_on_data: dict[str, torch.Tensor] | None = None,
    progress: Progress | None = None,
) -> OIPRun:
    """The OIPs of ``jobs`` = ``[(layer, maps or None for all), ...]``.

    Args:
        model: the network (with its spec).
        jobs: layers and maps.
        options: see :class:`OIPOptions` (default: the reference).
        dataset_images: preprocessed ``(N, C, H, W)`` dataset images, tried by the
            precursor for maps no random candidate triggers (``dataset_starts``) and
            used to tell a map that never fires from one that fires on data.
        fires_on_data: per layer ``(C,)`` bool, known from elsewhere (the atlas' top-k).
        progress: reports per layer; can cancel.

    Raises:
        OptionsError: options that do not go together.
        AddressError: unknown layer or maps.
    """
    from convscope.spec import spec_of

    options = options or OIPOptions()
    options.check()
    progress = progress or silent()
    spec = spec_of(model)
    started = time.perf_counter()
    layers = []
    for layer_name, maps in resolve_jobs(model, jobs):
        if options.modern.active:
            run = _modern_layer(model, layer_name, maps, options, dataset_images, progress)
        elif options.strategy == "1":
            run = _strategy1_layer(model, layer_name, maps, options, progress)
        else:
            run = _reference_layer(model, layer_name, maps, options, dataset_images, progress)
        if options.compare_strategies and options.strategy == "0" and not options.modern.active:
            other = _strategy1_layer(model, layer_name, maps, options, progress)
            run.strategy1_final = other.final_loss[:, 0]
            run.strategy1_params = other.params
        if fires_on_data is not None and layer_name in fires_on_data:
            run.fires_on_data = fires_on_data[layer_name][maps].bool().cpu()
        elif dataset_images is not None and len(dataset_images):
            run.fires_on_data = _fires_on(model, layer_name, maps, dataset_images)
        layers.append(run)
    return OIPRun(layers=layers, options=options, model_name=spec.name, seconds=time.perf_counter() - started)


def _fires_on(model: nn.Module, layer: str, maps: torch.Tensor, dataset_images: torch.Tensor) -> torch.Tensor:
    from convscope.models.twin import frozen_twin
    from convscope.optvis.precursor import _per_map

    peaks = _per_map(frozen_twin(model), layer, dataset_images, "amax", 1024)
    return (peaks[:, maps] > 0).any(dim=0)


def _reference_layer(model, layer, maps, o: OIPOptions, dataset_images, progress: Progress) -> LayerRun:
    from convscope.optvis.init import REFERENCE_WEIGHTS
    from convscope.optvis.oip import compute_oips

    precursor_options = {}
    if o.scales is not None and o.scale_weights is not None:
        precursor_options = {"candidate_scales": o.scales, "candidate_weights": o.scale_weights}
    with progress.task(f"{layer} ({len(maps)} maps)", o.steps) as task:
        result = compute_oips(
            model, layer, maps.tolist(), seed=o.seed, steps=o.steps, epsilon=o.step_size, criterion=o.convergence,
            early_stop=o.early_stop, precursor=o.precursor, n_candidates=o.candidates,
            dataset_images=dataset_images if o.dataset_starts else None,
            scales=o.scales, weights=o.scale_weights or REFERENCE_WEIGHTS, n_report_steps=o.report_steps,
            preactivation_steps=o.preactivation_steps, progress=task.engine_callback(), workers=o.workers,
            **precursor_options,
        )
    a = result.ascent
    m = len(maps)
    return LayerRun(
        layer=layer, maps=maps.tolist(), images=a.images[:, None], initial_loss=a.initial_loss.reshape(m, 1),
        final_loss=a.final_loss.reshape(m, 1), history=a.losses, history_steps=list(range(a.losses.shape[0])),
        snapshots=a.snapshots, snapshot_steps=list(a.snapshot_steps), status=list(a.status),
        converged_step=[int(v) for v in a.converged_step], starts=[r["start"] for r in result.per_map()],
        similarity=None, params=dict(a.params), member_steps=int(a.member_steps),
    )


def _strategy1_layer(model, layer, maps, o: OIPOptions, progress: Progress) -> LayerRun:
    from convscope.optvis import objectives as obj
    from convscope.optvis.init import unit_generator
    from convscope.optvis.strategies import DEFAULT_STAGE_STEPS, coarse_to_fine_ascent

    generators = [unit_generator(o.seed, layer, f"{m}/strategy1") for m in maps.tolist()]
    with progress.task(f"{layer} strategy 1 ({len(maps)} maps)", sum(DEFAULT_STAGE_STEPS)) as task:
        result = coarse_to_fine_ascent(model, obj.channels(layer, maps), len(maps), generators=generators,
                                       epsilon=o.step_size, progress=task.engine_callback())
    m = len(maps)
    return LayerRun(
        layer=layer, maps=maps.tolist(), images=result.images[:, None], initial_loss=result.losses[0].reshape(m, 1),
        final_loss=result.final_loss.reshape(m, 1), history=result.losses,
        history_steps=list(range(result.losses.shape[0])), snapshots=None, snapshot_steps=[],
        status=["max_steps"] * m, converged_step=[-1] * m, starts=["random"] * m, similarity=None,
        params=result.params | {"seed": o.seed, "layer": layer},
    )


def _modern_layer(model, layer, maps, o: OIPOptions, dataset_images, progress: Progress) -> LayerRun:
    from convscope.optvis.modern import modern_oips

    modern = o.modern
    extra = {name: value for name, value in (("lr", modern.lr), ("blur_sigma", modern.blur_sigma)) if value is not None}
    k = modern.diversity
    description = f"{layer} modern ({len(maps)} maps" + (f" × {k})" if k > 1 else ")")
    with progress.task(description, o.steps) as task:
        run = modern_oips(
            model, layer, maps, diversity_members=k, diversity_weight=modern.weight, seed=o.seed, steps=o.steps,
            precursor=o.precursor, n_candidates=o.candidates,
            dataset_images=dataset_images if o.dataset_starts and k == 1 else None, epsilon=o.step_size,
            progress=task.engine_callback(), parametrisation=modern.parametrisation, optimizer=modern.optimizer,
            transforms=modern.transforms, l1=modern.l1, tv=modern.tv, blur_every=modern.blur_every, **extra,
        )
    finals = run.final_loss
    return LayerRun(
        layer=layer, maps=maps.tolist(), images=run.images, initial_loss=run.initial_loss, final_loss=finals,
        history=run.history, history_steps=list(run.record_steps), snapshots=None, snapshot_steps=[],
        status=["max_steps" if float(finals[i].max()) > 0 else "dead" for i in range(len(maps))],
        converged_step=[-1] * len(maps), starts=list(run.starts), similarity=run.similarity, params=dict(run.params),
        member_steps=int(run.member_steps),
    )


# ---------------------------------------------------------------------------
# class patterns
# ---------------------------------------------------------------------------
@dataclass
class ClassPatternsRun(Result):
    """Each class logit maximised: ``images (C, channels, H, W)``, the first pass,
    the final own-class logit and probability."""

    classes: list[int]
    names: list[str]
    images: torch.Tensor
    first_pass: torch.Tensor
    logits: torch.Tensor
    probabilities: torch.Tensor
    params: dict[str, Any]
    seconds: float = 0.0
    kind = "classes"

    def to_json(self) -> dict[str, Any]:
        return {
            "command": "classes", "params": self.params, "seconds": round(self.seconds, 3),
            "per_class": [{"class": c, "name": n, "logit": float(self.logits[i]), "probability": float(self.probabilities[i])}
                          for i, (c, n) in enumerate(zip(self.classes, self.names))],
        }

    def arrays(self) -> dict[str, np.ndarray]:
        array = self.images.numpy()
        return {"classes": array[:, 0] if array.shape[1] == 1 else array}

    def figures(self) -> dict[str, Callable[[], Figure]]:
        from convscope.render import oip as draw

        p = self.params
        return {
            "classes": lambda: draw.class_grid(
                self.images, self.names, self.probabilities, self.logits,
                title=f"class patterns: each logit maximised ({p['passes']} passes × {p['steps']} steps, "
                      f"jitter ±{p['jitter']} px)"),
            "classes_pass1": lambda: draw.class_grid(self.first_pass, self.names, title="class patterns after the first pass"),
        }

    def summary(self) -> list[str]:
        return [f"class {n}: logit {float(self.logits[i]):.2f}, p = {float(self.probabilities[i]):.4f}"
                for i, n in enumerate(self.names)]


def class_patterns(
    model: nn.Module, classes: Sequence[int] | None = None, *, steps: int = 300, epsilon: float = 0.01, jitter: int = 1,
    passes: int = 2, seed: int = 0, progress: Progress | None = None,
) -> ClassPatternsRun:
    """Maximise each class logit (reference §5); see
    :func:`convscope.optvis.strategies.class_patterns`. Classes by index (default all)."""
    from convscope.optvis.strategies import class_patterns as engine
    from convscope.spec import spec_of

    for name, value in (("steps", steps), ("passes", passes)):
        if value < 1:
            raise OptionsError(f"--{name} must be at least 1; got {value}")
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise OptionsError(f"--epsilon must be a finite number > 0; got {epsilon}")
    progress = progress or silent()
    spec = spec_of(model)
    started = time.perf_counter()
    with progress.task("class logits", steps * passes) as task:
        state = {"offset": 0, "last": 0}

        def tick(step: int, total: int, active: int) -> None:
            if step < state["last"]:  # a new pass began
                state["offset"] += total
            state["last"] = step
            task.update(state["offset"] + step)

        result = engine(model, classes, steps=steps, epsilon=epsilon, jitter=jitter, passes=passes, seed=seed, progress=tick)
    chosen = result.params["classes"]
    return ClassPatternsRun(
        classes=chosen, names=[spec.class_name(c) for c in chosen], images=result.images, first_pass=result.first_pass,
        logits=result.logits, probabilities=result.probabilities, params=dict(result.params),
        seconds=time.perf_counter() - started,
    )


def with_given(options: OIPOptions, **given: bool) -> OIPOptions:
    """``options`` with the names of the explicitly given options recorded."""
    return replace(options, given=frozenset(name for name, flag in given.items() if flag))


__all__ = [
    "ClassPatternsRun", "DIVERSITY_WEIGHT", "LayerRun", "ModernOptions", "OIPOptions", "OIPRun", "OptionsError",
    "class_patterns", "resolve_jobs", "run_oips", "with_given",
]
