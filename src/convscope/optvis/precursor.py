"""The precursor (planned by the reference, never built): pick good initial images.

For every map, many long-scale random images are scored in one batch (one
forward pass gives the scores of *every* map of the layer for every candidate)
and the full ascent starts from the best one. Maps that no random candidate
triggers get two further chances:

1. ``dataset``: the dataset image (if given) that activates the map most;
2. ``preactivation``: a short reference ascent on the map's *pre-ReLU* mean
   (``Conv2D_3.conv``), which has a gradient even while the ReLU output is 0,
   started from the candidate whose pre-activation came closest to firing.

Example::

    starts = precursor_starts(model, "Conv2D_3", range(128), generator=gen)
    starts.images            # (128, 1, 28, 28)
    starts.source            # ["random", ..., "preactivation", "none"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from convscope.address import find_module
from convscope.device import model_device
from convscope.models.twin import frozen_twin
from convscope.optvis import objectives as obj
from convscope.optvis.ascent import reference_ascent
from convscope.optvis.init import LONG_SCALE_WEIGHTS, random_initial_images, reference_scales
from convscope.probe import Probe
from convscope.spec import spec_of

SOURCE_RANDOM = "random"
SOURCE_DATASET = "dataset"
SOURCE_PREACTIVATION = "preactivation"
SOURCE_NONE = "none"


@dataclass
class PrecursorResult:
    """Chosen initial images for a list of maps.

    Attributes:
        images: ``(M, C, H, W)`` standardised initial images, one per map.
        scores: ``(M,)`` map mean activation of the chosen image.
        source: per map, where the image came from: ``"random"`` (best random
            candidate), ``"dataset"``, ``"preactivation"`` (pre-ReLU ascent made
            it fire) or ``"none"`` (nothing tried made the map fire; the image is
            the candidate closest to firing).
        n_candidates: random candidates scored per map.
        params: parameters used.
    """

    images: torch.Tensor
    scores: torch.Tensor
    source: list[str]
    n_candidates: int
    params: dict


def score_maps(model: nn.Module, layer: str, images: torch.Tensor, *, chunk: int = 1024) -> torch.Tensor:
    """Mean activation of every map of ``layer`` for every image: ``(N, C)``
    (``(N, F)`` for a dense layer). One early-stopped forward pass per chunk."""
    return _per_map(model, layer, images, "mean", chunk)


def _closest_to_firing(model: nn.Module, pre_layer: str, images: torch.Tensor, *, chunk: int = 1024) -> torch.Tensor:
    """Max pre-activation over positions per map: ``(N, C)``."""
    return _per_map(model, pre_layer, images, "amax", chunk)


@torch.no_grad()
def _per_map(model: nn.Module, layer: str, images: torch.Tensor, reduce: str, chunk: int) -> torch.Tensor:
    """``layer``'s output reduced over positions (``"mean"`` or ``"amax"``) per map
    and image: ``(N, C)``, in chunks of ``chunk`` images."""
    model.eval()
    values = []
    with Probe(model, [layer], detach=True) as probe:
        for start in range(0, images.shape[0], chunk):
            out = probe.run(images[start : start + chunk])[layer]
            values.append(getattr(out.reshape(out.shape[0], out.shape[1], -1), reduce)(dim=2).float().cpu())
    return torch.cat(values)


def precursor_starts(
    model: nn.Module,
    layer: str,
    map_indices: Sequence[int] | torch.Tensor,
    *,
    n_candidates: int = 512,
    scales: Sequence[int] | None = None,
    weights: Sequence[float] = LONG_SCALE_WEIGHTS,
    generator: torch.Generator | None = None,
    dataset_images: torch.Tensor | None = None,
    preactivation_steps: int = 300,
    epsilon: float = 0.01,
    candidates: torch.Tensor | None = None,
) -> PrecursorResult:
    """Choose one initial image per map of ``layer``.

    Args:
        model: the network.
        layer: layer name, e.g. ``"Conv2D_3"``.
        map_indices: the maps to find starts for.
        n_candidates: random long-scale candidates (shared by all maps: one forward
            pass scores every map).
        scales, weights: the candidates' fluctuations (default: the reference's
            scales for the input size with the "large-scale only" weights 0.2, 0.2, 0, 0).
        generator: randomness (seeded for repeatable runs).
        dataset_images: optional ``(N, 1, H, W)`` preprocessed dataset images,
            tried for maps that no random candidate triggers.
        preactivation_steps: steps of pre-ReLU ascent for maps still silent
            (0 disables). Needs a ``LAYER.conv`` / ``LAYER.linear`` submodule.
        epsilon: step size of that ascent.
        candidates: use these ``(K, 1, H, W)`` standardised images instead of
            drawing random ones (for several layers sharing candidates).

    Returns:
        A :class:`PrecursorResult` in the order of ``map_indices``.
    """
    maps = torch.as_tensor(list(map_indices) if not isinstance(map_indices, torch.Tensor) else map_indices, dtype=torch.long)
    spec = spec_of(model)
    scales = tuple(scales) if scales is not None else reference_scales(spec.height)
    if candidates is None:
        candidates = random_initial_images(n_candidates, scales=scales, weights=weights, size=spec.size,
                                           channels=spec.channels, generator=generator)
    candidates = candidates.to(model_device(model))
    scorer = frozen_twin(model)  # channels-last forward passes: ≈ 5× faster max-pooling on CPU
    all_scores = score_maps(scorer, layer, candidates)[:, maps]  # (K, M)
    best_score, best_index = all_scores.max(dim=0)
    images = candidates[best_index].cpu().clone()
    scores = best_score.clone()
    source = [SOURCE_RANDOM if float(s) > 0 else SOURCE_NONE for s in best_score]

    silent = [i for i, s in enumerate(source) if s == SOURCE_NONE]
    if silent and dataset_images is not None and len(dataset_images):
        data_scores = score_maps(scorer, layer, dataset_images.to(candidates.device))[:, maps[silent]]
        d_best, d_index = data_scores.max(dim=0)
        for local, (value, index) in enumerate(zip(d_best.tolist(), d_index.tolist())):
            if value > 0:
                member = silent[local]
                images[member] = dataset_images[index].cpu()
                scores[member] = value
                source[member] = SOURCE_DATASET
    silent = [i for i, s in enumerate(source) if s == SOURCE_NONE]
    pre_layer = _pre_activation_layer(model, layer)
    if silent and preactivation_steps > 0 and pre_layer is not None:
        closeness = _closest_to_firing(scorer, pre_layer, candidates)[:, maps[silent]]  # (K, S)
        closest = closeness.argmax(dim=0)
        starts = candidates[closest].cpu()
        for local, member in enumerate(silent):
            images[member] = starts[local]
        lifted = reference_ascent(
            model, obj.channels(pre_layer, maps[silent]), starts.to(candidates.device),
            steps=preactivation_steps, epsilon=epsilon,
        )
        post = score_maps(scorer, layer, lifted.images.to(candidates.device))
        for local, member in enumerate(silent):
            value = float(post[local, maps[member]])
            if value > 0:
                images[member] = lifted.images[local]
                scores[member] = value
                source[member] = SOURCE_PREACTIVATION
    params = {
        "n_candidates": int(candidates.shape[0]),
        "candidate_scales": list(scales),
        "candidate_weights": list(weights),
        "dataset_images": 0 if dataset_images is None else int(len(dataset_images)),
        "preactivation_layer": pre_layer,
        "preactivation_steps": preactivation_steps if pre_layer else 0,
    }
    return PrecursorResult(images=images, scores=scores, source=source, n_candidates=int(candidates.shape[0]), params=params)


def _pre_activation_layer(model: nn.Module, layer: str) -> str | None:
    """``LAYER.conv`` or ``LAYER.linear`` if the block has one (the pre-ReLU output)."""
    for child in ("conv", "linear"):
        try:
            find_module(model, f"{layer}.{child}")
            return f"{layer}.{child}"
        except ValueError:
            continue
    return None