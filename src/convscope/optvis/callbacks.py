"""Callbacks for :func:`~convscope.optvis.core.optimize`.

* :class:`DeadMembers` — a member whose score and mean |gradient| are both exactly
  0 for more than ``patience`` steps can never change: stop it ("dead").
* :class:`Convergence` — the reference's criterion: after step 10, the relative
  change ``|Δloss / loss|`` below ``criterion`` for 4 successive steps; records
  the step, and stops the member with ``early_stop``.
* :class:`Snapshots` — images at chosen steps (the reference's logarithmic ones).
* :class:`RecordEvery` — another (e.g. the clean, penalty-free) objective every k steps.
* :class:`BlurEvery` — blur the pixels every k steps (a classic regulariser).
* :class:`ProgressCallback` — ``progress(step, steps, active_members)`` after every step.
* :class:`CancelCallback` — stop cleanly when a :class:`~convscope.progress.CancelToken` is set.

Order matters where callbacks read each other's marks: put :class:`DeadMembers`
before :class:`Convergence` (a member that dies this step is not "converged").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from convscope.optvis.core import STATUS_DEAD, Callback, Run
from convscope.optvis.objectives import Objective
from convscope.optvis.transforms import gaussian_blur


class DeadMembers(Callback):
    """Stop members whose score and mean |gradient| stayed exactly 0 for more than ``patience`` steps.

    With ``from_start`` only members that were so at every step since the start: for a
    stateful optimizer (Adam without weight decay) a member that never had a gradient
    has no state and never moves, while one that had a gradient before would still
    move on its momentum.
    """

    def __init__(self, patience: int = 10, *, from_start: bool = False) -> None:
        self.patience = int(patience)
        self.from_start = bool(from_start)

    def on_start(self, run: Run) -> None:
        self.zero_count = torch.zeros(run.n, dtype=torch.long)

    def on_gradient(self, run: Run, step: int, scores: torch.Tensor, gradients: list[torch.Tensor]) -> None:
        active = run.active
        losses = run.losses[step, active]
        mean_abs = gradients[0].detach().abs().reshape(len(active), -1).mean(dim=1).cpu()
        is_zero = (losses == 0) & (mean_abs == 0)
        counts = self.zero_count[active]
        self.zero_count[active] = torch.where(is_zero, counts + 1, torch.zeros_like(counts))
        newly_dead = run.updating[active] & (self.zero_count[active] > self.patience)
        if self.from_start:
            newly_dead &= self.zero_count[active] == step + 1
        if bool(newly_dead.any()):
            run.stop(newly_dead, STATUS_DEAD, at_step=step)


class Convergence(Callback):
    """The reference's convergence criterion (see the module docstring)."""

    def __init__(self, criterion: float | None, *, early_stop: bool = False, patience: int = 4, after: int = 10) -> None:
        self.criterion = criterion
        self.early_stop = early_stop
        self.patience = patience
        self.after = after

    def on_start(self, run: Run) -> None:
        self.quiet = torch.zeros(run.n, dtype=torch.long)
        self.previous = torch.zeros(run.n, dtype=torch.float64)

    def on_gradient(self, run: Run, step: int, scores: torch.Tensor, gradients: list[torch.Tensor]) -> None:
        active = run.active
        losses = run.losses[step, active]
        if self.criterion is not None and step > self.after:
            safe = losses.abs() > 0
            relative = torch.where(safe, (losses - self.previous[active]).abs() / losses.abs().clamp_min(1e-300), torch.inf)
            small = safe & (relative < self.criterion)
            counts = self.quiet[active]
            self.quiet[active] = torch.where(small, counts + 1, torch.zeros_like(counts))
            reached = (
                (self.quiet[active] >= self.patience) & (run.converged_step[active] < 0)
                & run.updating[active] & ~run.stopping
            )
            run.converged_step[active[reached]] = step
            if self.early_stop and bool(reached.any()):
                run.stop(reached)
        self.previous[active] = losses


class Snapshots(Callback):
    """The images at ``steps`` (after that many updates); a member that stopped
    earlier shows its final image. ``run.records["snapshots"]``: ``(S, n, C, H, W)``,
    ``run.records["snapshot_steps"]``: the ``S`` steps."""

    def __init__(self, steps: Sequence[int]) -> None:
        self.steps = sorted(set(int(s) for s in steps))
        self.index = {s: i for i, s in enumerate(self.steps)}

    def on_start(self, run: Run) -> None:
        images = run.parametrisation.images()
        self.snapshots = torch.zeros((len(self.steps), *images.shape), dtype=images.dtype)

    def on_before_update(self, run: Run, step: int, images: torch.Tensor) -> None:
        if step in self.index:
            self.snapshots[self.index[step], run.active] = images.cpu()

    def on_end(self, run: Run) -> None:
        assert run.images is not None
        for i, s in enumerate(self.steps):
            for member in range(run.n):
                start = int(run.stopped_at[member])
                if start >= 0 and s > start:
                    self.snapshots[i, member] = run.images[member]
        if run.steps in self.index:
            self.snapshots[self.index[run.steps]] = run.images
        run.records["snapshots"] = self.snapshots
        run.records["snapshot_steps"] = list(self.steps)


class RecordEvery(Callback):
    """``objective`` on the members' current images every ``every`` steps and after
    the last step (through the run's probe, no gradient, untransformed images).
    ``run.records[name]``: ``(R, n)`` float64; ``run.records[name + "_steps"]``."""

    def __init__(self, objective: Objective, every: int, name: str = "clean") -> None:
        self.objective = objective
        self.every = max(1, int(every))
        self.name = name
        self.layers = objective.layers

    def on_start(self, run: Run) -> None:
        self.values: list[torch.Tensor] = []
        self.steps_recorded: list[int] = []

    @staticmethod
    def records_at(step: int, steps: int, every: int) -> bool:
        """Whether a run of ``steps`` steps recording every ``every`` records at ``step``."""
        return step == steps or step % max(1, int(every)) == 0

    def on_step_start(self, run: Run, step: int) -> None:
        if self.records_at(step, run.steps, self.every):
            images = run.parametrisation.images()
            self.values.append(run.evaluate(self.objective, images).double().cpu())
            self.steps_recorded.append(step)

    def on_end(self, run: Run) -> None:
        run.records[self.name] = torch.stack(self.values) if self.values else torch.zeros((0, run.n), dtype=torch.float64)
        run.records[self.name + "_steps"] = list(self.steps_recorded)


@dataclass
class BlurEvery(Callback):
    """Blur the proposed pixels every ``every`` steps (3×3 Gaussian, ``sigma``)."""

    every: int
    sigma: float = 0.5
    layers: tuple[str, ...] = field(default=(), init=False)

    def on_update(self, run: Run, step: int, new: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.every > 0 and (step + 1) % self.every == 0:
            return [gaussian_blur(new[0], self.sigma), *new[1:]]
        return new


class ProgressCallback(Callback):
    """Calls ``progress(step, steps, active_members)`` after every update."""

    def __init__(self, progress: Callable[[int, int, int], None] | None) -> None:
        self.progress = progress

    def on_step_end(self, run: Run, step: int) -> None:
        if self.progress is not None:
            self.progress(step + 1, run.steps, int(run.updating.sum()))


class CancelCallback(Callback):
    """Raises :class:`~convscope.optvis.core.Cancelled` after a step once ``token`` is set."""

    def __init__(self, token) -> None:
        self.token = token

    def on_step_end(self, run: Run, step: int) -> None:
        if self.token is not None:
            self.token.check()


class OnScore(Callback):
    """Calls ``fn(score)`` with member 0's score after every update (dream progress)."""

    def __init__(self, fn: Callable[[float], None] | None) -> None:
        self.fn = fn

    def on_step_end(self, run: Run, step: int) -> None:
        if self.fn is not None:
            self.fn(float(run.losses[step, 0]))


__all__ = [
    "BlurEvery", "CancelCallback", "Convergence", "DeadMembers", "OnScore", "ProgressCallback", "RecordEvery",
    "Snapshots",
]
