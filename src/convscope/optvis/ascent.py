"""The reference OIP gradient ascent ("strategy 0"), batched.

Each batch member is one optimisation: its own initial image and its own score
(``objectives.channels(layer, map_indices)`` gives member ``i`` map
``map_indices[i]``). One forward/backward pass per step serves the whole batch;
members that converged (with ``early_stop``) or are dead are frozen and removed
from the batch, so they stop costing compute. Because members never interact
(the model is run in eval mode, no batch statistics) the batched result for a
map is the single-map run from the same initial image.

Per step, exactly as the reference (SEED-ALGORITHMS §4)::

    loss  = objective(image)                          # per member
    g     = d loss / d image
    g     = g / (sqrt(mean(g**2)) + 1e-7)             # unit RMS per member
    image = standardise(image + epsilon * g)          # mean 0, std 1 per member

Example::

    from convscope.optvis import objectives as obj
    from convscope.optvis.ascent import reference_ascent
    from convscope.optvis.init import random_initial_images

    gen = torch.Generator().manual_seed(0)
    start = random_initial_images(128, generator=gen)            # (128, 1, 28, 28)
    result = reference_ascent(model, obj.channels("Conv2D_3", range(128)), start)
    result.images, result.final_loss, result.status
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from convscope.optvis.callbacks import Convergence, DeadMembers, ProgressCallback, Snapshots
from convscope.optvis.compile import compile_for_input_gradient
from convscope.optvis.core import (
    GRADIENT_EPS, STATUS_CONVERGED, STATUS_DEAD, STATUS_MAX_STEPS, Callback, NormalizedAscent, normalise_gradient,
    optimize,
)
from convscope.optvis.objectives import Objective
from convscope.optvis.params import PixelImage
from convscope.optvis.transforms import Roll, random_roll

#: progress(step, steps, active_members)
ProgressFn = Callable[[int, int, int], None]


@dataclass
class AscentResult:
    """What :func:`reference_ascent` returns (all tensors on CPU).

    Attributes:
        images: ``(N, 1, H, W)`` final images (standardised).
        losses: ``(steps + 1, N)`` objective of the image after ``t`` updates;
            rows after a member froze repeat its frozen value.
        snapshots: ``(S, N, C, H, W)`` images at ``snapshot_steps``.
        snapshot_steps: the ``S`` steps (0, the reference's logarithmic steps, ``steps - 1``).
        converged_step: ``(N,)`` first step at which the convergence criterion
            had held for 4 successive steps; ``-1`` if never (or no criterion).
        dead_step: ``(N,)`` step at which a member was declared dead, ``-1`` if not.
        status: per member ``"converged"`` | ``"max_steps"`` | ``"dead"``.
        initial_loss: ``(N,)`` objective of the initial images.
        final_loss: ``(N,)`` objective of the final images.
        member_steps: total member-steps computed (forward+backward), a cost measure.
        params: the parameters used (for manifests).
    """

    images: torch.Tensor
    losses: torch.Tensor
    snapshots: torch.Tensor
    snapshot_steps: list[int]
    converged_step: torch.Tensor
    dead_step: torch.Tensor
    status: list[str]
    initial_loss: torch.Tensor
    final_loss: torch.Tensor
    member_steps: int = 0
    params: dict = field(default_factory=dict)

    @property
    def alive(self) -> torch.Tensor:
        """``(N,)`` bool: the member reached a non-zero objective."""
        return self.final_loss > 0


def report_steps(steps: int, n_report_steps: int = 6) -> list[int]:
    """The reference's logarithmic reporting steps, as the posts number them.

    ``n_el = floor(steps / 2**n_report_steps)``; reports at ``n_el * 2**j`` for
    ``j < n_report_steps``, plus step 0 and the last step ``steps - 1`` (the loop
    index of the last iteration). For 600 steps and 6 (the posts' 8 panels):
    ``[0, 9, 18, 36, 72, 144, 288, 599]``. Step ``s`` shows the image after ``s``
    updates, whose loss is ``losses[s]``. (When ``steps < 2**n`` the reference's
    ``n_el`` is 0; we use 1 so the reports stay distinct.)
    """
    if steps <= 0:
        return [0]
    n_el = max(1, steps // (2**n_report_steps))
    last = steps - 1
    picked = {0, last}
    picked.update(n_el * 2**j for j in range(n_report_steps) if n_el * 2**j <= last)
    return sorted(picked)


def reference_ascent(
    model: nn.Module,
    objective: Objective,
    images: torch.Tensor,
    *,
    steps: int = 600,
    epsilon: float = 0.01,
    n_report_steps: int = 6,
    criterion: float | None = None,
    early_stop: bool = False,
    freeze: bool = True,
    dead_patience: int = 10,
    jitter: int = 0,
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
    fast: bool = True,
    callbacks: Sequence[Callback] = (),
) -> AscentResult:
    """Run the reference gradient ascent on a batch of initial images: the one
    optimisation core (:func:`~convscope.optvis.core.optimize`) with pixel images,
    the normalised step, optional jitter, and the dead/convergence/snapshot callbacks.

    Args:
        model: the network (used in eval mode; its parameters are not changed).
        objective: scores ``(N,)`` to maximise; a batched objective
            (``channels``/``class_logits``) must have one entry per member.
        images: ``(N, 1, H, W)`` initial images, already standardised.
        steps: number of updates (the reference's ``n_epochs``).
        epsilon: step size on the unit-RMS gradient.
        n_report_steps: number of logarithmic snapshot steps (see :func:`report_steps`).
        criterion: relative loss change ``|Δloss / loss|`` below which a step
            counts as converged (reference: 2e-4 … 5e-4); ``None`` disables.
        early_stop: freeze a member once the criterion held for 4 successive
            steps after step 10.
        freeze: remove frozen (dead / early-stopped) members from the batch. With
            ``False`` they stay in the batch but are not updated (same results,
            more compute — for benchmarks).
        dead_patience: a member whose loss and mean |gradient| are both 0 for more
            than this many successive steps is dead (its image can never change).
        jitter: if > 0, each step the whole batch is rolled by a random
            ``(dy, dx)`` in ``[-jitter, jitter]`` pixels before the forward pass
            (the second reference's "5 % jitter"; the image itself is not moved).
        generator: randomness for ``jitter``.
        progress: ``progress(step, steps, active)`` called after every step.
        fast: run on a :func:`~convscope.models.twin.gradient_twin` of the model
            (frozen, channels-last, ReLU after max-pooling where nobody reads the
            block, a fast input gradient for the 1-channel first convolution) and
            feed the network only the part of the image its probed layers can see
            (:func:`~convscope.models.twin.input_extent`; 26×26 of 28×28 for
            Model A's ``Conv2D_3``), and compute only the scored map of each
            member (:func:`~convscope.optvis.own_channel.own_channel_objective`) —
            :func:`~convscope.optvis.compile.compile_for_input_gradient`.
            Same results up to float rounding, about 2× faster on CPU (10× for
            ``Conv2D_1``); the caller's model is never modified.
        callbacks: more :class:`~convscope.optvis.core.Callback` s (e.g. cancellation).

    Returns:
        An :class:`AscentResult`.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W); got shape {tuple(images.shape)}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0; got {steps}")
    compiled = compile_for_input_gradient(model, [objective], tuple(images.shape[-2:]), fast=fast)
    snapshots = Snapshots(report_steps(steps, n_report_steps))
    run = optimize(
        compiled.model, compiled.objectives[0], PixelImage(images, restandardize=True),
        steps=steps, step_rule=NormalizedAscent(epsilon),
        transforms=[Roll(jitter)] if jitter > 0 else [],
        callbacks=[DeadMembers(dead_patience), Convergence(criterion, early_stop=early_stop), snapshots,
                   *callbacks, ProgressCallback(progress)],
        generator=generator, extent=compiled.extent, freeze=freeze, pad_single=True,
    )
    params = {
        "algorithm": "reference (strategy 0)",
        "steps": steps,
        "epsilon": epsilon,
        "n_report_steps": n_report_steps,
        "criterion": criterion,
        "early_stop": early_stop,
        "dead_patience": dead_patience,
        "jitter": jitter,
        "objective": objective.name,
    }
    return AscentResult(
        images=run.images,
        losses=run.losses,
        snapshots=run.records["snapshots"],
        snapshot_steps=run.records["snapshot_steps"],
        converged_step=run.converged_step,
        dead_step=run.dead_step,
        status=run.status,
        initial_loss=run.losses[0].clone(),
        final_loss=run.losses[-1].clone(),
        member_steps=run.member_steps,
        params=params,
    )


__all__ = [
    "AscentResult", "GRADIENT_EPS", "STATUS_CONVERGED", "STATUS_DEAD", "STATUS_MAX_STEPS",
    "normalise_gradient", "random_roll", "reference_ascent", "report_steps",
]
