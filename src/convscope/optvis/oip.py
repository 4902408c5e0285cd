"""OIPs of many maps at once: precursor + reference ascent, chunked, per layer.

The maps of a layer can also be split over ``workers`` threads, each computing
its share of the batch with one PyTorch thread (:func:`compute_oips`). A step of
a 28×28 ascent is many small kernels, which a second intra-op thread speeds up
little; two batches side by side use two cores better. Every member's numbers
are those of the one-thread batched run, whatever the number of workers.

Python API for notebooks::

    from convscope.optvis.oip import compute_oips
    result = compute_oips(model, "Conv2D_3", seed=0)          # all 128 maps
    result.images            # (128, 1, 28, 28) the OIPs
    result.coverage          # maps with a non-zero OIP
    result.ascent.losses     # (steps + 1, 128) loss history
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from convscope.address import AddressError, layer_output_shapes, resolve_address
from convscope.device import model_device, torch_threads
from convscope.optvis import objectives as obj
from convscope.optvis.ascent import AscentResult, ProgressFn, reference_ascent
from convscope.optvis.compile import compile_for_input_gradient
from convscope.optvis.core import Cancelled
from convscope.optvis.init import REFERENCE_WEIGHTS, unit_generator, unit_initial_images
from convscope.spec import spec_of
from convscope.tracing_gate import GATE
from convscope.optvis.precursor import PrecursorResult, precursor_starts


#: the fewest maps a worker thread gets by default (see :func:`compute_oips`)
MIN_SHARE = 32


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
    workers: int | None = None,
    min_share: int = MIN_SHARE,
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
        progress: ``progress(step, steps, active)`` (per chunk; with workers, the
            slowest share's step and the members still active in all shares).
        workers: ``None``: one batch on PyTorch's threads (their number changes the
            last bits, and so after many steps the images). A number: the maps
            split into that many shares, computed at once in threads with one
            PyTorch thread each (CPU models; on an accelerator one batch) — the
            same OIPs whatever the number (images bit for bit; loss values to
            float rounding).
        min_share: with workers, no share gets fewer maps than this (fewer
            workers are used): a small share's steps are too cheap to gain from a
            thread of its own (32 maps of Model A's Conv2D_1 take 1.5 s in one
            thread, 2.0–2.4 s split in two).

    Returns:
        :class:`LayerOIPs`.
    """
    layer_name, maps = validate_maps(model, layer, map_indices)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1; got {workers}")
    device = model_device(model)
    split = workers is not None and device.type == "cpu"
    workers = workers if split else 1
    # with workers the precursor runs with one thread too: the numbers then do not depend on their count
    with torch_threads(1) if split else contextlib.nullcontext():
        spec = spec_of(model)
        if precursor:
            chosen = precursor_starts(
                model, layer_name, maps, n_candidates=n_candidates,
                generator=unit_generator(seed, layer_name, "candidates"), dataset_images=dataset_images,
                preactivation_steps=preactivation_steps, epsilon=epsilon,
                **({} if candidate_scales is None else {"scales": candidate_scales}),
                **({} if candidate_weights is None else {"weights": candidate_weights}),
            )
            initial = chosen.images
        else:
            chosen = None
            initial = unit_initial_images(seed, layer_name, maps, scales=scales, weights=weights, size=spec.size,
                                          channels=spec.channels)

        def ascend(network: nn.Module, members: torch.Tensor, report: ProgressFn | None) -> AscentResult:
            """The reference ascent of the members at positions ``members`` of ``maps``."""
            return reference_ascent(
                network, obj.channels(layer_name, maps[members]), initial[members].to(device),
                steps=steps, epsilon=epsilon, criterion=criterion, early_stop=early_stop,
                n_report_steps=n_report_steps, progress=report,
            )

        shares = share_members(len(maps), max(1, min(workers, len(maps) // max(1, min_share))), chunk_size)
        threads = 1 if len(shares) == 1 else min(workers, len(shares))
        if threads == 1:
            ascent = merge_results([ascend(model, members, progress) for members in shares])
        else:
            copies = [_prepared_copy(model, layer_name, maps, tuple(initial.shape[-2:])) for _ in range(threads)]
            ascent = _ascend_at_once(ascend, copies, shares, progress)
        ascent.params.update({"layer": layer_name, "seed": seed, "precursor": precursor,
                              # the PyTorch threads of each batch change the last bits of the numbers
                              "torch_threads": torch.get_num_threads(), "workers": threads})
        if chosen is not None:
            ascent.params["precursor_params"] = chosen.params
        else:
            ascent.params.update({"scales": None if scales is None else list(scales), "weights": list(weights)})
        return LayerOIPs(layer=layer_name, map_indices=maps, initial_images=initial, ascent=ascent, precursor=chosen,
                         seed=seed)


def share_members(count: int, workers: int, chunk_size: int) -> list[torch.Tensor]:
    """Member positions ``0..count-1`` split into shares for ``workers``, each at
    most ``chunk_size`` long.

    One worker: consecutive chunks (the batches of a plain run). Several: dealt
    round-robin into ``workers`` (or more, for the size bound) shares, so that maps
    that converge early or die are spread over the workers instead of leaving one
    idle. Returns ``(n_i,)`` index tensors in member order.
    """
    if count == 0:
        return [torch.arange(0)]
    if workers <= 1:
        return [torch.arange(start, min(start + chunk_size, count)) for start in range(0, count, chunk_size)]
    n_shares = max(min(workers, count), -(-count // chunk_size))
    return [torch.arange(first, count, n_shares) for first in range(n_shares)]


def _prepared_copy(model: nn.Module, layer: str, maps: torch.Tensor, size: tuple[int, int]) -> nn.Module:
    """A private copy of ``model`` for one worker thread, its receptive-field geometry
    already derived here.

    Threads must not share the model: preparing a run copies it and probes it,
    which must not meet another thread's hooks on the same modules. And the
    geometry is derived by a ``torch.fx`` trace, which patches every module's call
    in the whole process while it runs; derived now, before any thread starts,
    the threads find it kept with their copy and never trace.
    """
    private = copy.deepcopy(model)
    compile_for_input_gradient(private, [obj.channels(layer, maps)], size)
    return private


def _ascend_at_once(
    ascend, models: list[nn.Module], shares: list[torch.Tensor], progress: ProgressFn | None
) -> AscentResult:
    """Run ``ascend(model, share, report)`` for every share in one thread per model
    (the caller set one PyTorch thread), each thread on its own model, and merge the
    results back into member order."""
    lock = threading.Lock()
    free = list(models)  # the models not in use by a thread
    stop = threading.Event()  # set when one share failed or the caller was interrupted
    # (step, active) per share; a finished share's entry becomes None
    state: list[tuple[int, int] | None] = [(0, len(share)) for share in shares]

    def report(i: int, step: int, steps: int, active: int) -> None:
        if stop.is_set():
            raise Cancelled("stopped: another share of the OIPs failed or the run was interrupted")
        with lock:
            state[i] = (step, active)
            slowest = min(entry[0] for entry in state if entry is not None)
            total = sum(entry[1] for entry in state if entry is not None)
        if progress is not None:
            progress(slowest, steps, total)

    def run(i: int) -> AscentResult:
        with lock:
            network = free.pop()
        try:
            with GATE.shared():  # a torch.fx trace elsewhere in the process waits for the share, and vice versa
                result = ascend(network, shares[i], lambda step, steps, active: report(i, step, steps, active))
        finally:
            with lock:
                free.append(network)
                state[i] = None
        return result

    with concurrent.futures.ThreadPoolExecutor(len(models), thread_name_prefix="convscope-oip") as pool:
        futures = [pool.submit(run, i) for i in range(len(shares))]
        try:
            # the first failure stops the others at once, instead of after the shares before it finished
            concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
            for future in futures:
                if future.done() and future.exception() is not None:
                    raise future.exception()
            results = [future.result() for future in futures]
        except BaseException:
            stop.set()  # the other shares stop at their next step instead of running to the end
            for future in futures:
                future.cancel()
            raise
    order = torch.argsort(torch.cat(shares))
    return select_members(merge_results(results), order)


def select_members(result: AscentResult, index: torch.Tensor) -> AscentResult:
    """The members ``index`` of ``result`` (``(K,)`` positions), in that order."""
    rows = index.tolist()
    return AscentResult(
        images=result.images[index],
        losses=result.losses[:, index],
        snapshots=result.snapshots[:, index],
        snapshot_steps=list(result.snapshot_steps),
        converged_step=result.converged_step[index],
        dead_step=result.dead_step[index],
        status=[result.status[i] for i in rows],
        initial_loss=result.initial_loss[index],
        final_loss=result.final_loss[index],
        member_steps=result.member_steps,
        params=dict(result.params),
    )


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


__all__ = ["LayerOIPs", "compute_oips", "merge_results", "select_members", "share_members", "validate_maps"]
