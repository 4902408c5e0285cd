"""Beyond the reference: Fourier 1/f parametrisation, transformation robustness,
L1 / total-variation / blur regularisers, a diversity objective and Adam — as
pieces of the one optimisation core (:mod:`convscope.optvis.core`), measured
against strategy 0 in ``benchmarks/oip_options.py``.

Every variant reports the *clean* objective: the map's mean activation on the
standardised (mean 0, std 1), untransformed image — the quantity strategy 0
maximises — so activations are comparable across variants.

Example::

    from convscope.optvis.modern import modern_ascent
    res = modern_ascent(model, obj.channels("Conv2D_3", range(128)), 128,
                        parametrisation="fourier", optimizer="adam", transforms=True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from convscope.device import model_device
from convscope.optvis import objectives as obj
from convscope.optvis.ascent import ProgressFn
from convscope.optvis.callbacks import BlurEvery, DeadMembers, ProgressCallback, RecordEvery
from convscope.optvis.compile import compile_for_input_gradient
from convscope.optvis.core import NormalizedAscent, TorchOptimizer, optimize
from convscope.optvis.init import random_initial_images, unit_generator, unit_initial_images
from convscope.optvis.params import FourierImage, PixelImage
from convscope.optvis.transforms import RandomAffine, gaussian_blur, random_transform  # noqa: F401 - re-exported
from convscope.spec import spec_of

PARAMETRISATIONS = ("pixel", "fourier")
OPTIMIZERS = ("normalized", "adam")


@dataclass
class ModernResult:
    """``images (N, 1, H, W)`` standardised; ``clean_losses (R, N)`` clean
    objective at ``record_steps``; ``final_loss (N,)``; ``params``; ``member_steps``:
    members × steps computed (members dead from the start leave the batch)."""

    images: torch.Tensor
    clean_losses: torch.Tensor
    record_steps: list[int]
    final_loss: torch.Tensor
    params: dict
    member_steps: int = 0


def modern_ascent(
    model: nn.Module,
    objective: obj.Objective,
    n: int,
    *,
    steps: int = 600,
    parametrisation: str = "pixel",
    optimizer: str = "normalized",
    lr: float | None = None,
    transforms: bool = False,
    l1: float = 0.0,
    tv: float = 0.0,
    blur_every: int = 0,
    blur_sigma: float = 0.5,
    extra: obj.Objective | None = None,
    initial: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    generators: list[torch.Generator] | None = None,
    record_every: int = 10,
    progress: ProgressFn | None = None,
) -> ModernResult:
    """Optimise ``n`` members with the chosen options.

    Args:
        model: the network.
        objective: the clean objective ``(n,)`` (e.g. ``channels``); recorded.
        n: batch size.
        steps: optimisation steps.
        parametrisation: ``"pixel"`` (standardised pixels) or ``"fourier"`` (1/f-scaled spectrum).
        optimizer: ``"normalized"`` (the reference's unit-RMS step of size ``lr``,
            default 0.01) or ``"adam"`` (default lr 0.05 for pixels, 0.02 for Fourier).
        transforms: random shift/scale/rotation before every forward pass.
        l1, tv: weights of the L1 and total-variation penalties (subtracted).
        blur_every: blur the pixels every k steps (pixel parametrisation only; 0 = off).
        extra: an extra term added to the optimised objective (e.g. ``-w * diversity(...)``).
        initial: ``(n, C, H, W)`` start images (default: reference random images).
        generator: randomness (start, transforms).
        generators: one generator per member for a random Fourier start (a member's
            start then depends on its own generator only).
        record_every: record the clean objective every k steps (and at the end).
    """
    if parametrisation not in PARAMETRISATIONS:
        raise ValueError(f"parametrisation must be one of {PARAMETRISATIONS}; got {parametrisation!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {optimizer!r}")
    device = model_device(model)
    spec = spec_of(model)
    size = spec.size if initial is None else tuple(initial.shape[-2:])
    compiled = compile_for_input_gradient(model, [objective, extra], size)
    clean_objective, extra = compiled.objectives
    if initial is None and parametrisation == "pixel":
        initial = random_initial_images(n, size=spec.size, channels=spec.channels, generator=generator)
    if initial is not None:
        initial = initial.cpu()
    if parametrisation == "pixel":
        image_param = PixelImage(initial.to(device), restandardize=optimizer == "normalized", standardize_render=True)
    else:
        image_param = FourierImage(n, spec.size, spec.channels, generator=generator, generators=generators,
                                   initial=initial).to(device)
    goal = clean_objective
    if l1:
        goal = goal - l1 * obj.l1()
    if tv:
        goal = goal - tv * obj.total_variation()
    if extra is not None:
        goal = goal + extra
    if lr is None:
        lr = 0.01 if optimizer == "normalized" else (0.05 if parametrisation == "pixel" else 0.02)
    step_rule = NormalizedAscent(lr) if optimizer == "normalized" else TorchOptimizer(torch.optim.Adam, lr=lr)
    # optimising the clean objective itself on untransformed images: every step's score *is* the clean
    # objective, so the records are read from the run's losses instead of a second pass
    clean_is_goal = goal is clean_objective and not transforms
    blurred = bool(blur_every) and parametrisation == "pixel"
    # a member with no score and no gradient since the start never moves (Adam has no state for it, the
    # normalised step is 0) — unless something else changes its image or couples it to the others: random
    # transforms, blurring, or an extra term such as diversity. Then it can leave the batch: same numbers
    frozen_dead = not transforms and not blurred and extra is None
    callbacks = [
        *([DeadMembers(10, from_start=True)] if frozen_dead else []),
        *([RecordEvery(clean_objective, record_every)] if not clean_is_goal else []),
        *([BlurEvery(blur_every, blur_sigma)] if blurred else []),
        ProgressCallback(progress),
    ]
    run = optimize(
        compiled.model, goal, image_param, steps=steps, step_rule=step_rule,
        transforms=[RandomAffine()] if transforms else [], callbacks=callbacks, generator=generator,
        extent=compiled.extent, freeze=frozen_dead, pad_single=False,
    )
    options = {
        "parametrisation": parametrisation, "optimizer": optimizer, "lr": lr, "transforms": transforms,
        "l1": l1, "tv": tv, "blur_every": blur_every, "blur_sigma": blur_sigma, "steps": steps, "objective": goal.name,
    }
    if clean_is_goal:
        record_steps = [step for step in range(steps + 1) if RecordEvery.records_at(step, steps, record_every)]
        clean = run.losses[record_steps].clone()
    else:
        clean, record_steps = run.records["clean"], run.records["clean_steps"]
    return ModernResult(run.images, clean, record_steps, clean[-1].clone(), options, run.member_steps)


def diversity(layer_name: str, groups: torch.Tensor | list[int]) -> obj.Objective:
    """Diversity penalty (Lucid-style): per member, the mean cosine similarity of
    its ``layer_name`` Gram matrix to those of the other members of its group.
    Subtract it: ``channels(...) - w * diversity("Conv2D_2", groups)`` makes the
    members of a group (same map) find different OIPs. Couples batch members."""
    group_ids = torch.as_tensor(groups, dtype=torch.long)

    def fn(a: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = a[layer_name]
        flat = out.reshape(out.shape[0], out.shape[1], -1)
        gram = torch.bmm(flat, flat.transpose(1, 2)).reshape(out.shape[0], -1)
        gram = F.normalize(gram, dim=1)
        similarity = gram @ gram.T
        same = (group_ids[:, None] == group_ids[None, :]).to(out.device)
        same.fill_diagonal_(False)
        counts = same.sum(dim=1).clamp_min(1)
        return (similarity * same).sum(dim=1) / counts

    return obj.Objective(fn, (layer_name,), f"diversity({layer_name})")


def diversity_layer(model: nn.Module, layer_name: str) -> str:
    """The layer whose Gram matrices the diversity penalty compares for OIPs of
    ``layer_name``: the conv layer before it (``Conv2D_2`` for ``Conv2D_3``, as in
    ``benchmarks/oip_options.py``), or ``layer_name`` itself for the first one."""
    from convscope.layers import conv_layers

    order = [name for name, _ in model.named_children()]
    if layer_name not in order:
        return layer_name
    earlier = [name for name in conv_layers(model) if order.index(name) < order.index(layer_name)]
    return earlier[-1] if earlier else layer_name


@dataclass
class ModernOIPs:
    """OIPs of maps of one layer with the modern options, ``K`` members per map.

    Attributes:
        layer: layer name.
        map_indices: ``(M,)`` the maps.
        images: ``(M, K, 1, H, W)`` standardised images.
        initial_loss, final_loss: ``(M, K)`` clean objective (the map's mean
            activation on the untransformed image) at the start / end.
        history: ``(R, M·K)`` clean objective at ``record_steps`` (member ``i·K + j``).
        record_steps: the ``R`` steps.
        starts: per map, where its start came from (precursor source or ``"random"``).
        similarity: ``(M, K)`` each member's mean similarity to the other members of
            its map (diversity runs), else ``None``.
        params: every parameter, for manifests.
        member_steps: members × steps computed.
    """

    layer: str
    map_indices: torch.Tensor
    images: torch.Tensor
    initial_loss: torch.Tensor
    final_loss: torch.Tensor
    history: torch.Tensor
    record_steps: list[int]
    starts: list[str]
    similarity: torch.Tensor | None
    params: dict
    member_steps: int = 0


def modern_oips(
    model: nn.Module,
    layer_name: str,
    map_indices: torch.Tensor,
    *,
    diversity_members: int = 1,
    diversity_weight: float = 2.0,
    seed: int = 0,
    steps: int = 600,
    precursor: bool = True,
    n_candidates: int = 512,
    dataset_images: torch.Tensor | None = None,
    epsilon: float = 0.01,
    record_every: int | None = None,
    progress: ProgressFn | None = None,
    **options,
) -> ModernOIPs:
    """OIPs of ``map_indices`` of ``layer_name`` with :func:`modern_ascent`.

    Args:
        model: the network.
        layer_name: e.g. ``"Conv2D_3"``.
        map_indices: ``(M,)`` maps.
        diversity_members: ``K`` members per map; ``K > 1`` subtracts
            ``diversity_weight ×`` :func:`diversity` on :func:`diversity_layer`.
        seed: seeds every random number.
        steps: optimisation steps.
        precursor: with ``K == 1``, start from the precursor's image per map
            (:func:`~convscope.optvis.precursor.precursor_starts`); ``K > 1`` members
            need different starts, so they start from seeded random images.
        n_candidates, dataset_images, epsilon: precursor options.
        record_every: record the clean objective every k steps (default: ~60 records).
        progress: ``progress(step, steps, members)``.
        **options: :func:`modern_ascent` options (``parametrisation``, ``optimizer``,
            ``lr``, ``transforms``, ``l1``, ``tv``, ``blur_every``, ``blur_sigma``).

    Returns:
        :class:`ModernOIPs`.
    """
    from convscope.optvis.precursor import precursor_starts  # local: precursor imports the ascent

    maps = torch.as_tensor(map_indices, dtype=torch.long).reshape(-1)
    k, m = int(diversity_members), len(maps)
    if k < 1:
        raise ValueError(f"diversity_members must be >= 1; got {k}")
    # starts depend on (seed, layer, map[, member]) only; transforms share one generator
    generator = unit_generator(seed, layer_name, "transforms")
    chosen, initial = None, None
    spec = spec_of(model)
    if k == 1 and precursor:
        chosen = precursor_starts(model, layer_name, maps, n_candidates=n_candidates,
                                  generator=unit_generator(seed, layer_name, "candidates"),
                                  dataset_images=dataset_images, epsilon=epsilon)
        initial = chosen.images
    units = [m_ if k == 1 else f"{m_}#{j}" for m_ in maps.tolist() for j in range(k)]
    generators = None
    if initial is None and options.get("parametrisation", "pixel") == "pixel":
        initial = unit_initial_images(seed, layer_name, units, size=spec.size, channels=spec.channels)
    elif initial is None:
        generators = [unit_generator(seed, layer_name, f"{unit}/fourier") for unit in units]
    groups = torch.arange(m).repeat_interleave(k)
    members = maps.repeat_interleave(k)
    compared = diversity_layer(model, layer_name) if k > 1 else None
    extra = -diversity_weight * diversity(compared, groups) if k > 1 and diversity_weight > 0 else None
    record_every = record_every or max(1, steps // 60)
    result = modern_ascent(
        model, obj.channels(layer_name, members), m * k, steps=steps, extra=extra, initial=initial,
        generator=generator, generators=generators, record_every=record_every, progress=progress, **options,
    )
    similarity = None
    if k > 1:
        with torch.no_grad():
            images = result.images.to(model_device(model))
            similarity = diversity(compared, groups)(model, images).double().cpu().reshape(m, k)
    params = result.params | {
        "algorithm": "modern", "layer": layer_name, "seed": seed, "record_every": record_every,
        "precursor": chosen is not None, "diversity": k,
        "diversity_weight": diversity_weight if k > 1 else 0.0, "diversity_layer": compared,
    }
    if chosen is not None:
        params["precursor_params"] = chosen.params
    return ModernOIPs(
        layer=layer_name, map_indices=maps, images=result.images.reshape(m, k, *result.images.shape[1:]),
        initial_loss=result.clean_losses[0].reshape(m, k), final_loss=result.final_loss.reshape(m, k),
        history=result.clean_losses, record_steps=result.record_steps,
        starts=chosen.source if chosen is not None else ["random"] * m, similarity=similarity, params=params,
        member_steps=result.member_steps,
    )