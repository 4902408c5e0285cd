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

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from convscope.data.preprocess import standardize
from convscope.models.twin import gradient_twin, input_extent
from convscope.optvis.objectives import Objective
from convscope.optvis.own_channel import own_channel_objective
from convscope.probe import optional_probe

#: progress(step, steps, active_members)
ProgressFn = Callable[[int, int, int], None]

#: Added to the gradient's RMS before dividing (the reference's 1e-7).
GRADIENT_EPS = 1e-7

STATUS_CONVERGED = "converged"
STATUS_MAX_STEPS = "max_steps"
STATUS_DEAD = "dead"


@dataclass
class AscentResult:
    """What :func:`reference_ascent` returns (all tensors on CPU).

    Attributes:
        images: ``(N, 1, H, W)`` final images (standardised).
        losses: ``(steps + 1, N)`` objective of the image after ``t`` updates;
            rows after a member froze repeat its frozen value.
        snapshots: ``(S, N, 1, H, W)`` images at ``snapshot_steps``.
        snapshot_steps: the ``S`` steps (0, the reference's logarithmic steps, last).
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


def report_steps(steps: int, n_report_steps: int = 8) -> list[int]:
    """The reference's logarithmic reporting steps.

    ``n_el = floor(steps / 2**n_report_steps)``; reports at ``n_el * 2**j`` for
    ``j < n_report_steps``, plus step 0 and the last step. For 600 steps and 8:
    ``[0, 2, 4, 8, 16, 32, 64, 128, 256, 600]``. (When ``steps < 2**n`` the
    reference's ``n_el`` is 0; we use 1 so the reports stay distinct.)
    """
    n_el = max(1, steps // (2**n_report_steps))
    picked = {0, steps}
    picked.update(n_el * 2**j for j in range(n_report_steps) if n_el * 2**j <= steps)
    return sorted(picked)


def normalise_gradient(gradient: torch.Tensor) -> torch.Tensor:
    """Per member unit-RMS gradient: ``g / (sqrt(mean(g**2)) + 1e-7)``, ``(N, ...)``."""
    rms = gradient.pow(2).reshape(gradient.shape[0], -1).mean(dim=1).sqrt()
    return gradient / (rms + GRADIENT_EPS).reshape((-1,) + (1,) * (gradient.ndim - 1))


def random_roll(images: torch.Tensor, max_shift: int, generator: torch.Generator | None) -> tuple[torch.Tensor, tuple[int, int]]:
    """Roll the batch by one random ``(dy, dx)`` in ``[-max_shift, max_shift]``."""
    shift = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator)
    dy, dx = int(shift[0]), int(shift[1])
    return torch.roll(images, shifts=(dy, dx), dims=(-2, -1)), (dy, dx)


def reference_ascent(
    model: nn.Module,
    objective: Objective,
    images: torch.Tensor,
    *,
    steps: int = 600,
    epsilon: float = 0.01,
    n_report_steps: int = 8,
    criterion: float | None = None,
    early_stop: bool = False,
    freeze: bool = True,
    dead_patience: int = 10,
    jitter: int = 0,
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
    fast: bool = True,
) -> AscentResult:
    """Run the reference gradient ascent on a batch of initial images.

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
            member (:func:`~convscope.optvis.own_channel.own_channel_objective`).
            Same results up to float rounding, about 2× faster on CPU (10× for
            ``Conv2D_1``); the caller's model is never modified.

    Returns:
        An :class:`AscentResult`.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W); got shape {tuple(images.shape)}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0; got {steps}")
    n_members = images.shape[0]
    extent = tuple(images.shape[-2:])
    if fast:
        objective = own_channel_objective(model, objective)
    layers = objective.layers
    if fast:
        model = gradient_twin(model, layers)
        if layers:
            extent = input_extent(model, layers, extent)
    crop = extent != tuple(images.shape[-2:])
    was_training = model.training
    model.eval()
    current = images.detach().clone()
    losses = torch.zeros((steps + 1, n_members), dtype=torch.float64)
    snapshot_steps = report_steps(steps, n_report_steps)
    snapshot_index = {s: i for i, s in enumerate(snapshot_steps)}
    snapshots = torch.zeros((len(snapshot_steps), *images.shape), dtype=images.dtype)
    converged_step = torch.full((n_members,), -1, dtype=torch.long)
    dead_step = torch.full((n_members,), -1, dtype=torch.long)
    frozen_at = torch.full((n_members,), -1, dtype=torch.long)
    status = [STATUS_MAX_STEPS] * n_members
    quiet_count = torch.zeros(n_members, dtype=torch.long)  # successive small relative changes
    zero_count = torch.zeros(n_members, dtype=torch.long)  # successive zero loss & gradient
    previous_loss = torch.zeros(n_members, dtype=torch.float64)

    active = torch.arange(n_members)  # members still in the batch
    updating = torch.ones(n_members, dtype=torch.bool)  # members still being changed
    active_objective = objective
    member_steps = 0
    try:
        with optional_probe(model, layers) as probe:
            for step in range(steps + 1):
                # oneDNN picks a different convolution kernel for a batch of one,
                # which would make a single-map run differ (by float rounding,
                # amplified over hundreds of steps) from the same map in a batch;
                # a lone member is therefore run as a batch of two (itself twice).
                n_active = len(active)
                padded = n_active == 1
                rows = active.repeat(2) if padded else active
                batch = current[rows].requires_grad_(True)
                model_input = batch
                if jitter > 0:
                    model_input, _ = random_roll(batch, jitter, generator)
                need_gradient = step < steps
                step_objective = active_objective.subset(torch.zeros(2, dtype=torch.long)) if padded else active_objective
                with torch.set_grad_enabled(need_gradient):
                    network_input = model_input[..., : extent[0], : extent[1]].contiguous() if crop else model_input
                    activations = probe.run(network_input)
                    scores = step_objective.score(activations, model_input)
                if scores.shape != (len(rows),):
                    raise ValueError(f"objective returned shape {tuple(scores.shape)}; expected ({len(rows)},)")
                scores = scores[:n_active]
                member_steps += n_active
                step_losses = scores.detach().to(torch.float64).cpu()
                losses[step, active] = step_losses
                if not need_gradient:
                    break
                (gradient,) = torch.autograd.grad(scores.sum(), batch)
                batch, gradient = batch[:n_active], gradient[:n_active]
                # bookkeeping on the members still updating
                upd = updating[active]
                mean_abs_gradient = gradient.detach().abs().reshape(len(active), -1).mean(dim=1).cpu()
                # dead: loss and mean gradient both exactly 0
                is_zero = (step_losses == 0) & (mean_abs_gradient == 0)
                zero_count[active] = torch.where(is_zero, zero_count[active] + 1, torch.zeros_like(zero_count[active]))
                newly_dead = upd & (zero_count[active] > dead_patience)
                # convergence after step 10
                if criterion is not None and step > 10:
                    safe = step_losses.abs() > 0
                    relative = torch.where(
                        safe, (step_losses - previous_loss[active]).abs() / step_losses.abs().clamp_min(1e-300), torch.inf
                    )
                    small = safe & (relative < criterion)
                    quiet_count[active] = torch.where(small, quiet_count[active] + 1, torch.zeros_like(quiet_count[active]))
                    reached = (quiet_count[active] >= 4) & (converged_step[active] < 0) & upd & ~newly_dead
                    converged_step[active[reached]] = step
                    newly_converged = reached if early_stop else torch.zeros_like(reached)
                else:
                    newly_converged = torch.zeros(len(active), dtype=torch.bool)
                previous_loss[active] = step_losses
                for local in torch.nonzero(newly_dead).flatten().tolist():
                    member = int(active[local])
                    dead_step[member] = step
                    status[member] = STATUS_DEAD
                stop_now = newly_dead | newly_converged
                # snapshot before the update: the image after `step` updates
                if step in snapshot_index:
                    snapshots[snapshot_index[step], active] = batch.detach().cpu()
                # the update (frozen members keep their image)
                moving = upd & ~stop_now
                step_image = standardize(batch.detach() + epsilon * normalise_gradient(gradient))
                new_images = torch.where(moving.to(batch.device).reshape(-1, 1, 1, 1), step_image, batch.detach())
                current[active] = new_images
                frozen_members = active[stop_now]
                frozen_at[frozen_members] = step
                updating[frozen_members] = False
                if freeze and bool(stop_now.any()):
                    keep = torch.nonzero(~stop_now).flatten()
                    active = active[keep]
                    active_objective = active_objective.subset(keep)
                if progress is not None:
                    progress(step + 1, steps, int(updating.sum()))
                if len(active) == 0:
                    break
    finally:
        model.train(was_training)

    # fill the rows after a member froze with its frozen value
    for member in range(n_members):
        start = int(frozen_at[member])
        if start >= 0:
            losses[start + 1 :, member] = losses[start, member]
    for i, s in enumerate(snapshot_steps):
        for member in range(n_members):
            start = int(frozen_at[member])
            if start >= 0 and s > start:
                snapshots[i, member] = current[member]
    if steps in snapshot_index:
        snapshots[snapshot_index[steps]] = current
    for member in range(n_members):
        if status[member] != STATUS_DEAD and converged_step[member] >= 0:
            status[member] = STATUS_CONVERGED
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
        images=current.detach().cpu(),
        losses=losses,
        snapshots=snapshots,
        snapshot_steps=snapshot_steps,
        converged_step=converged_step,
        dead_step=dead_step,
        status=status,
        initial_loss=losses[0].clone(),
        final_loss=losses[-1].clone(),
        member_steps=member_steps,
        params=params,
    )


__all__ = [
    "AscentResult", "GRADIENT_EPS", "STATUS_CONVERGED", "STATUS_DEAD", "STATUS_MAX_STEPS",
    "normalise_gradient", "random_roll", "reference_ascent", "report_steps",
]
