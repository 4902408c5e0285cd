"""OIPs of many maps at once: precursor + reference ascent, chunked, per layer.

Python API for notebooks::

    from convscope.optvis.oip import compute_oips
    result = compute_oips(model, "Conv2D_3", seed=0)          # all 128 maps
    result.images            # (128, 1, 28, 28) the OIPs
    result.coverage          # maps with a non-zero OIP
    result.ascent.losses     # (steps + 1, 128) loss history
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from convscope.address import AddressError, layer_output_shapes, resolve_address
from convscope.device import model_device
from convscope.optvis import objectives as obj
from convscope.optvis.ascent import AscentResult, ProgressFn, reference_ascent
from convscope.optvis.init import REFERENCE_WEIGHTS, unit_generator, unit_initial_images
from convscope.spec import spec_of
from convscope.optvis.precursor import PrecursorResult, precursor_starts


@dataclass
class LayerOIPs:
    """OIPs for a list of maps of one layer.

    Attributes:
        layer: layer name.
        map_indices: ``(M,)`` the maps.
        initial_images: ``(M, 1, H, W)`` where each ascent started.
        ascent: the :class:`~convscope.optvis.ascent.AscentResult` (member ``i`` = map ``map_indices[i]``).
        precursor: the precursor's choice, or ``None`` when random starts were used.
        seed: the seed of the run.
    """

    layer: str
    map_indices: torch.Tensor
    initial_images: torch.Tensor
    ascent: AscentResult
    precursor: PrecursorResult | None
    seed: int

    @property
    def images(self) -> torch.Tensor:
        """``(M, 1, H, W)`` the OIPs."""
        return self.ascent.images

    @property
    def coverage(self) -> int:
        """Number of maps whose OIP reaches a non-zero activation."""
        return int((self.ascent.final_loss > 0).sum())

    def per_map(self) -> list[dict]:
        """One JSON-ready record per map."""
        records = []
        for i, map_index in enumerate(self.map_indices.tolist()):
            records.append(
                {
                    "map": map_index,
                    "initial_loss": float(self.ascent.initial_loss[i]),
                    "final_loss": float(self.ascent.final_loss[i]),
                    "status": self.ascent.status[i],
                    "converged_step": int(self.ascent.converged_step[i]),
                    "dead_step": int(self.ascent.dead_step[i]),
                    "start": self.precursor.source[i] if self.precursor is not None else "random",
                }
            )
        return records


def validate_maps(model: nn.Module, layer: str, map_indices: Sequence[int] | None) -> tuple[str, torch.Tensor]:
    """Check ``layer`` and ``map_indices`` against the model; ``None`` = all maps.

    Raises:
        AddressError: unknown layer or a map index out of range (the message says
            the valid range).
    """
    address = resolve_address(model, layer)
    if address.map_index is not None:
        if map_indices is not None:
            raise AddressError(f"give the map either in the address ({layer!r}) or as map indices, not both")
        return address.layer, torch.tensor([address.map_index])
    shape = layer_output_shapes(model)[address.layer]
    n_maps = shape[0]
    if map_indices is None:
        return address.layer, torch.arange(n_maps)
    maps = torch.as_tensor(list(map_indices), dtype=torch.long)
    bad = [int(m) for m in maps if not 0 <= int(m) < n_maps]
    if bad:
        raise AddressError(f"{address.layer} has {n_maps} maps, so map indices must be 0..{n_maps - 1}; got {bad}")
    return address.layer, maps


def compute_oips(
    model: nn.Module,
    layer: str,
    map_indices: Sequence[int] | None = None,
    *,
    seed: int = 0,
    steps: int = 600,
    epsilon: float = 0.01,
    criterion: float | None = 2e-4,
    early_stop: bool = False,
    precursor: bool = True,
    n_candidates: int = 512,
    dataset_images: torch.Tensor | None = None,
    preactivation_steps: int = 300,
    scales: Sequence[int] | None = None,
    weights: Sequence[float] = REFERENCE_WEIGHTS,
    chunk_size: int = 512,
    n_report_steps: int = 6,
    progress: ProgressFn | None = None,
    candidate_scales: Sequence[int] | None = None,
    candidate_weights: Sequence[float] | None = None,
) -> LayerOIPs:
    """OIPs of ``map_indices`` (default: all maps) of ``layer``.

    Args:
        model: the network.
        layer: ``"Conv2D_3"`` (or ``"Conv2D_3:120"`` for one map).
        map_indices: maps to optimise; ``None`` = all of the layer.
        seed: with the layer and the map, seeds every random image: a map's start
            depends on ``(seed, layer, map)`` only, not on the other maps requested.
        steps, epsilon, criterion, early_stop: the reference ascent (see
            :func:`~convscope.optvis.ascent.reference_ascent`).
        precursor: choose starts with :func:`~convscope.optvis.precursor.precursor_starts`;
            ``False`` = the reference: one random start per map with ``scales``/``weights``
            (``scales`` default: the reference's 3, 7, 14, 28 scaled to the input size).
        n_candidates, dataset_images, preactivation_steps: precursor options.
        candidate_scales, candidate_weights: the precursor candidates' fluctuations
            (default: the reference's scales with the long-scale weights 0.2, 0.2, 0, 0).
        chunk_size: at most this many maps per batch (bounds memory).
        progress: ``progress(step, steps, active)`` (per chunk).

    Returns:
        :class:`LayerOIPs`.
    """
    layer_name, maps = validate_maps(model, layer, map_indices)
    spec = spec_of(model)
    device = model_device(model)
    if precursor:
        chosen = precursor_starts(
            model, layer_name, maps, n_candidates=n_candidates, generator=unit_generator(seed, layer_name, "candidates"),
            dataset_images=dataset_images, preactivation_steps=preactivation_steps, epsilon=epsilon,
            **({} if candidate_scales is None else {"scales": candidate_scales}),
            **({} if candidate_weights is None else {"weights": candidate_weights}),
        )
        initial = chosen.images
    else:
        chosen = None
        initial = unit_initial_images(seed, layer_name, maps, scales=scales, weights=weights, size=spec.size,
                                      channels=spec.channels)
    results = []
    for start in range(0, len(maps), chunk_size):
        chunk_maps = maps[start : start + chunk_size]
        results.append(
            reference_ascent(
                model, obj.channels(layer_name, chunk_maps), initial[start : start + chunk_size].to(device),
                steps=steps, epsilon=epsilon, criterion=criterion, early_stop=early_stop,
                n_report_steps=n_report_steps, progress=progress,
            )
        )
    ascent = merge_results(results)
    ascent.params.update({"layer": layer_name, "seed": seed, "precursor": precursor})
    if chosen is not None:
        ascent.params["precursor_params"] = chosen.params
    else:
        ascent.params.update({"scales": None if scales is None else list(scales), "weights": list(weights)})
    return LayerOIPs(layer=layer_name, map_indices=maps, initial_images=initial, ascent=ascent, precursor=chosen, seed=seed)


def merge_results(results: list[AscentResult]) -> AscentResult:
    """Concatenate chunked :class:`AscentResult` s along the member axis."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    return AscentResult(
        images=torch.cat([r.images for r in results]),
        losses=torch.cat([r.losses for r in results], dim=1),
        snapshots=torch.cat([r.snapshots for r in results], dim=1),
        snapshot_steps=first.snapshot_steps,
        converged_step=torch.cat([r.converged_step for r in results]),
        dead_step=torch.cat([r.dead_step for r in results]),
        status=[s for r in results for s in r.status],
        initial_loss=torch.cat([r.initial_loss for r in results]),
        final_loss=torch.cat([r.final_loss for r in results]),
        member_steps=sum(r.member_steps for r in results),
        params=dict(first.params),
    )


__all__ = ["LayerOIPs", "compute_oips", "merge_results", "validate_maps"]
