"""The one optimisation core: objective × parametrisation × step rule × transforms ×
callbacks, batched over members.

Every input optimisation in convscope — the reference OIP ascent (strategy 0),
strategy 1's resolution stages, the modern options (Fourier, Adam, transformation
robustness, regularisers, diversity), class patterns and each DeepDream octave —
is one call of :func:`optimize` with different pieces::

    from convscope.optvis import objectives as obj
    from convscope.optvis.core import NormalizedAscent, optimize
    from convscope.optvis.params import PixelImage
    from convscope.optvis.callbacks import Convergence, DeadMembers

    run = optimize(model, obj.channels("Conv2D_3", range(128)), PixelImage(starts),
                   steps=600, step_rule=NormalizedAscent(0.01),
                   callbacks=[DeadMembers(10), Convergence(2e-4, early_stop=True)])
    run.images, run.losses, run.status

The pieces (each a small object; write your own):

* **objective** — :class:`~convscope.optvis.objectives.Objective`, a score ``(N,)`` per
  member to *increase*; batched objectives give each member its own target.
* **parametrisation** — holds the optimised tensors of all ``N`` members and renders
  the images ``(n, C, H, W)`` from them (:mod:`convscope.optvis.params`: pixels,
  Fourier spectrum, low-resolution stages); ``commit`` writes a step back (and
  re-standardises, as the reference does).
* **step rule** — :class:`NormalizedAscent` (the reference: per-member unit-RMS
  gradient times ε) or :class:`TorchOptimizer` (any ``torch.optim`` optimizer).
* **transforms** — callables ``transform(images, generator) -> images`` applied to
  the rendered image before the forward pass (:mod:`convscope.optvis.transforms`).
* **callbacks** — :class:`Callback` objects: member freezing on convergence and death,
  snapshots, records, periodic blur, progress, cancellation
  (:mod:`convscope.optvis.callbacks`).
* **scorer** — how scores and gradients are obtained; default: the objective through
  the one :class:`~convscope.probe.Probe`; dreams plug in their tilings.

A member that stops (converged, dead) keeps its image and leaves the batch, so it
costs nothing more — with a stateless step rule; with a stateful optimizer (Adam)
it stays in the batch and is not updated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from convscope.data.preprocess import standardize
from convscope.optvis.objectives import Objective
from convscope.probe import optional_probe

#: Added to the gradient's RMS before dividing (the reference's 1e-7).
GRADIENT_EPS = 1e-7

STATUS_CONVERGED = "converged"
STATUS_MAX_STEPS = "max_steps"
STATUS_DEAD = "dead"

#: ``transform(images (n, C, H, W), generator) -> images``
Transform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


def normalise_gradient(gradient: torch.Tensor) -> torch.Tensor:
    """Per member unit-RMS gradient: ``g / (sqrt(mean(g**2)) + 1e-7)``, ``(N, ...)``."""
    rms = gradient.pow(2).reshape(gradient.shape[0], -1).mean(dim=1).sqrt()
    return gradient / (rms + GRADIENT_EPS).reshape((-1,) + (1,) * (gradient.ndim - 1))


# ---------------------------------------------------------------------------
# pieces: protocols and the two step rules
# ---------------------------------------------------------------------------
class Parametrisation(Protocol):
    """What :func:`optimize` needs from a parametrisation of ``n`` members."""

    n: int

    def leaves(self, rows: torch.Tensor, persistent: bool) -> list[torch.Tensor]:
        """The tensors to differentiate for members ``rows`` (requires_grad). With
        ``persistent`` the same tensor objects every step (for stateful optimizers)."""
        ...

    def render(self, leaves: list[torch.Tensor]) -> torch.Tensor:
        """Images ``(len(rows), C, H, W)`` from the leaves (differentiable)."""
        ...

    def commit(self, rows: torch.Tensor, leaves: list[torch.Tensor], new: list[torch.Tensor], moving: torch.Tensor) -> None:
        """Write the stepped values ``new`` of members ``rows`` back; members where
        ``moving`` is False keep their values."""
        ...

    def images(self) -> torch.Tensor:
        """Current images of all ``n`` members ``(n, C, H, W)`` (no graph)."""
        ...


class StepRule:
    """Turns gradients into new leaf values. ``stateful`` rules hold optimizer state
    per tensor: stopped members leave their batch only when the rule can
    :meth:`restrict` its state to the members that stay (and the parametrisation
    says ``subsets_persistent``); otherwise they stay, not updated."""

    stateful = False

    def start(self, leaves: list[torch.Tensor]) -> None:
        """Called once with the persistent leaves (stateful rules)."""

    def can_restrict(self, leaves: list[torch.Tensor]) -> bool:
        """Whether :meth:`restrict` can keep a subset of the members of ``leaves``."""
        return not self.stateful

    def restrict(self, keep: torch.Tensor, old: list[torch.Tensor], new: list[torch.Tensor]) -> None:
        """Carry the state of members ``keep`` (rows of the ``old`` leaves) over to the
        ``new`` leaves, which hold those members only (stateful rules)."""

    def propose(self, leaves: list[torch.Tensor], gradients: list[torch.Tensor]) -> list[torch.Tensor]:
        """New values for the leaves, given ``d score / d leaf`` (ascent)."""
        raise NotImplementedError


@dataclass
class NormalizedAscent(StepRule):
    """The reference's step: ``leaf + epsilon · g / rms(g)`` per member."""

    epsilon: float = 0.01

    def propose(self, leaves: list[torch.Tensor], gradients: list[torch.Tensor]) -> list[torch.Tensor]:
        return [leaf.detach() + self.epsilon * normalise_gradient(g) for leaf, g in zip(leaves, gradients)]


class TorchOptimizer(StepRule):
    """Any ``torch.optim`` optimizer (maximising): ``TorchOptimizer(torch.optim.Adam, lr=0.05)``."""

    stateful = True

    def __init__(self, factory: Callable[..., torch.optim.Optimizer], **options: Any) -> None:
        self.factory = factory
        self.options = options
        self.optimizer: torch.optim.Optimizer | None = None

    def start(self, leaves: list[torch.Tensor]) -> None:
        self.optimizer = self.factory(leaves, **self.options)

    def can_restrict(self, leaves: list[torch.Tensor]) -> bool:
        """True when every state tensor is a scalar (Adam's step count) or shaped like
        its parameter, so each member's state is its own rows: element-wise
        optimizers (Adam, AdamW, SGD with momentum, RMSprop, …), not LBFGS."""
        if self.optimizer is None:
            return False
        for leaf in leaves:
            for value in self.optimizer.state.get(leaf, {}).values():
                if torch.is_tensor(value) and value.ndim > 0 and value.shape != leaf.shape:
                    return False
        return True

    def restrict(self, keep: torch.Tensor, old: list[torch.Tensor], new: list[torch.Tensor]) -> None:
        """A new optimizer over ``new``, each state tensor's rows ``keep`` carried over
        (so the members that stay step exactly as they would have)."""
        assert self.optimizer is not None, "TorchOptimizer.start was not called"
        optimizer = self.factory(new, **self.options)
        for before, after in zip(old, new):
            state = self.optimizer.state.get(before)
            if state:
                optimizer.state[after] = {
                    key: (value[keep.to(value.device)].clone() if value.ndim > 0 else value.clone())
                    if torch.is_tensor(value) else value
                    for key, value in state.items()
                }
        self.optimizer = optimizer

    def propose(self, leaves: list[torch.Tensor], gradients: list[torch.Tensor]) -> list[torch.Tensor]:
        assert self.optimizer is not None, "TorchOptimizer.start was not called"
        self.optimizer.zero_grad(set_to_none=True)
        for leaf, g in zip(leaves, gradients):
            leaf.grad = -g  # optimizers minimise
        self.optimizer.step()
        return [leaf.detach() for leaf in leaves]


# ---------------------------------------------------------------------------
# scorers
# ---------------------------------------------------------------------------
class Scorer(Protocol):
    """Scores (and, for custom gradient paths, the gradient) of a batch of images."""

    #: layers the scorer reads (for the compile step and the probe)
    layers: tuple[str, ...]
    #: True: ``score`` returns a graph to differentiate; False: it returns the gradient itself
    differentiable: bool

    def __enter__(self) -> "Scorer": ...

    def __exit__(self, *exc: object) -> None: ...

    def score(self, images: torch.Tensor, objective: Objective, need_gradient: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(scores (n,), d sum(scores) / d images or None)``."""
        ...


class ProbeScorer:
    """The default scorer: the objective's layers captured by one probe, the network
    fed ``crop(images)`` (the part of the image the layers can see)."""

    differentiable = True

    def __init__(self, model: nn.Module, layers: Sequence[str], extent: tuple[int, int] | None = None) -> None:
        self.model = model
        self.layers = tuple(layers)
        self.extent = extent
        self._probe = optional_probe(model, list(self.layers))

    def __enter__(self) -> "ProbeScorer":
        self._probe.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._probe.__exit__(*exc)

    def view(self, images: torch.Tensor) -> torch.Tensor:
        if self.extent is None or tuple(images.shape[-2:]) == tuple(self.extent):
            return images
        return images[..., : self.extent[0], : self.extent[1]].contiguous()

    def activations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._probe.run(self.view(images))

    def score(self, images: torch.Tensor, objective: Objective, need_gradient: bool) -> tuple[torch.Tensor, None]:
        return objective.score(self.activations(images), images), None


# ---------------------------------------------------------------------------
# callbacks and the run state
# ---------------------------------------------------------------------------
class Callback:
    """Hooks into :func:`optimize`; every method is optional. ``run`` is the live
    :class:`Run`; ``active`` indices are into the run's members."""

    #: layers this callback reads through the run's probe (e.g. a recorded objective)
    layers: tuple[str, ...] = ()

    def on_start(self, run: "Run") -> None: ...

    def on_step_start(self, run: "Run", step: int) -> None: ...

    def on_gradient(self, run: "Run", step: int, scores: torch.Tensor, gradients: list[torch.Tensor]) -> None:
        """After the gradient of ``step``; mark members to stop with :meth:`Run.stop`."""

    def on_before_update(self, run: "Run", step: int, images: torch.Tensor) -> None:
        """``images``: the active members' images after ``step`` updates (detached)."""

    def on_update(self, run: "Run", step: int, new: list[torch.Tensor]) -> list[torch.Tensor]:
        """May change the proposed leaf values (e.g. a periodic blur)."""
        return new

    def on_step_end(self, run: "Run", step: int) -> None: ...

    def on_end(self, run: "Run") -> None: ...


@dataclass
class Run:
    """Live state of one optimisation, then its result (tensors on CPU at the end).

    Attributes:
        n: members.
        steps: updates.
        losses: ``(steps + 1, n)`` float64, the optimised objective after ``t``
            updates; rows after a member stopped repeat its last value.
        status: per member ``"converged"`` | ``"max_steps"`` | ``"dead"``.
        converged_step / dead_step / stopped_at: ``(n,)`` step or ``-1``.
        member_steps: member forward+backward passes computed (a cost measure).
        images: ``(n, C, H, W)`` final images.
        records: what callbacks recorded (``"snapshots"``, ``"clean"`` …).
        active: members still in the batch; ``updating``: still being changed.
    """

    n: int
    steps: int
    generator: torch.Generator | None
    losses: torch.Tensor
    status: list[str]
    converged_step: torch.Tensor
    dead_step: torch.Tensor
    stopped_at: torch.Tensor
    active: torch.Tensor
    updating: torch.Tensor
    member_steps: int = 0
    images: torch.Tensor | None = None
    records: dict[str, Any] = field(default_factory=dict)
    scorer: Any = None
    parametrisation: Any = None
    _stopping: torch.Tensor | None = None

    @property
    def final_loss(self) -> torch.Tensor:
        return self.losses[-1]

    @property
    def stopping(self) -> torch.Tensor:
        """``(n_active,)`` bool: members marked to stop at the current step."""
        assert self._stopping is not None
        return self._stopping

    def stop(self, local: torch.Tensor, status: str | None = None, *, at_step: int | None = None) -> None:
        """Mark active members (a bool mask over ``active``) to stop after this step."""
        assert self._stopping is not None
        self._stopping |= local
        if status is not None:
            for index in torch.nonzero(local).flatten().tolist():
                member = int(self.active[index])
                self.status[member] = status
                if status == STATUS_DEAD and at_step is not None:
                    self.dead_step[member] = at_step

    def evaluate(self, objective: Objective, images: torch.Tensor) -> torch.Tensor:
        """``objective`` on ``images`` through the run's scorer (no gradient)."""
        with torch.no_grad():
            scores, _ = self.scorer.score(images, objective, False)
        return scores


class Cancelled(Exception):
    """An optimisation (or a use case) was cancelled; finished work is kept by the caller."""


# ---------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------
def optimize(
    model: nn.Module,
    objective: Objective,
    parametrisation: Parametrisation,
    *,
    steps: int,
    step_rule: StepRule | None = None,
    transforms: Sequence[Transform] = (),
    callbacks: Sequence[Callback] = (),
    generator: torch.Generator | None = None,
    scorer: Any = None,
    extent: tuple[int, int] | None = None,
    freeze: bool = True,
    pad_single: bool = True,
    evaluate_last: bool = True,
) -> Run:
    """Optimise ``parametrisation``'s images to increase ``objective``.

    Args:
        model: the network, used as given (run it through
            :func:`convscope.optvis.compile.compile_for_input_gradient` first for the
            exact speed rewrites); put in eval mode for the call.
        objective: scores ``(n,)`` to increase.
        parametrisation: the members' optimised tensors and their images.
        steps: number of updates; the objective is evaluated ``steps + 1`` times
            (the last time without a gradient).
        step_rule: default :class:`NormalizedAscent` (ε 0.01).
        transforms: applied in order to the rendered images before every forward pass.
        callbacks: see :class:`Callback`.
        generator: randomness for the transforms.
        scorer: default a :class:`ProbeScorer` over the objective's and callbacks' layers.
        extent: feed the network only ``images[..., :h, :w]`` (the default scorer).
        freeze: stopped members leave the batch (stateless step rules, and stateful
            ones whose state can be restricted to the members that stay, over a
            parametrisation with ``subsets_persistent``); with ``False`` they stay and
            are not updated (same results, more compute).
        pad_single: run a lone member as a batch of two (itself twice): oneDNN picks
            another kernel for a batch of one, which would make a single-member run
            differ by float rounding from the same member in a batch.
        evaluate_last: evaluate the objective once more after the last update
            (``losses[steps]``); ``False`` saves that pass (the row stays 0) — and
            its transforms' random draws, for loops that share a generator.

    Returns:
        The finished :class:`Run`.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0; got {steps}")
    step_rule = step_rule or NormalizedAscent()
    n = parametrisation.n
    layers = tuple(dict.fromkeys([*objective.layers, *(layer for cb in callbacks for layer in cb.layers)]))
    scorer = scorer if scorer is not None else ProbeScorer(model, layers, extent)
    run = Run(
        n=n, steps=steps, generator=generator,
        losses=torch.zeros((steps + 1, n), dtype=torch.float64),
        status=[STATUS_MAX_STEPS] * n,
        converged_step=torch.full((n,), -1, dtype=torch.long),
        dead_step=torch.full((n,), -1, dtype=torch.long),
        stopped_at=torch.full((n,), -1, dtype=torch.long),
        active=torch.arange(n), updating=torch.ones(n, dtype=torch.bool),
        scorer=scorer, parametrisation=parametrisation,
    )
    persistent = step_rule.stateful
    drop = freeze and (not persistent or bool(getattr(parametrisation, "subsets_persistent", False)))
    if persistent:
        step_rule.start(parametrisation.leaves(run.active, True))
    active_objective = objective
    was_training = model.training
    model.eval()
    try:
        with scorer:
            for callback in callbacks:
                callback.on_start(run)
            for step in range(steps + 1 if evaluate_last else steps):
                for callback in callbacks:
                    callback.on_step_start(run, step)
                n_active = len(run.active)
                padded = pad_single and n_active == 1 and not persistent
                rows = run.active.repeat(2) if padded else run.active
                need_gradient = step < steps
                leaves = parametrisation.leaves(rows, persistent)
                step_objective = active_objective.subset(torch.zeros(2, dtype=torch.long)) if padded else active_objective
                with torch.set_grad_enabled(need_gradient):
                    images = parametrisation.render(leaves)
                    seen = images
                    for transform in transforms:
                        seen = transform(seen, generator)
                    scores, seen_gradient = scorer.score(seen, step_objective, need_gradient)
                if scores.shape != (len(rows),):
                    raise ValueError(f"objective returned shape {tuple(scores.shape)}; expected ({len(rows)},)")
                run.member_steps += n_active
                run.losses[step, run.active] = scores[:n_active].detach().to(torch.float64).cpu()
                if not need_gradient:
                    break
                if seen_gradient is None:
                    gradients = list(torch.autograd.grad(scores.sum(), leaves))
                else:
                    gradients = list(torch.autograd.grad(seen, leaves, seen_gradient))
                if padded:
                    leaves = [leaf[:n_active] for leaf in leaves]
                    gradients = [g[:n_active] for g in gradients]
                    images = images[:n_active]
                run._stopping = torch.zeros(n_active, dtype=torch.bool)
                for callback in callbacks:
                    callback.on_gradient(run, step, scores.detach()[:n_active], gradients)
                stop_now = run._stopping & run.updating[run.active]
                for callback in callbacks:
                    callback.on_before_update(run, step, images.detach())
                moving = run.updating[run.active] & ~stop_now
                new = step_rule.propose(leaves, gradients)
                for callback in callbacks:
                    new = callback.on_update(run, step, new)
                parametrisation.commit(run.active, leaves, new, moving)
                stopped_members = run.active[stop_now]
                run.stopped_at[stopped_members] = step
                run.updating[stopped_members] = False
                if drop and bool(stop_now.any()) and (not persistent or step_rule.can_restrict(leaves)):
                    keep = torch.nonzero(~stop_now).flatten()
                    run.active = run.active[keep]
                    active_objective = active_objective.subset(keep)
                    if persistent and len(run.active):  # the optimizer's state follows its members
                        step_rule.restrict(keep, leaves, parametrisation.leaves(run.active, True))
                for callback in callbacks:
                    callback.on_step_end(run, step)
                if len(run.active) == 0:
                    break
    finally:
        model.train(was_training)
        run._stopping = None

    for member in range(n):
        start = int(run.stopped_at[member])
        if start >= 0:
            run.losses[start + 1 :, member] = run.losses[start, member]
    for member in range(n):
        if run.status[member] != STATUS_DEAD and run.converged_step[member] >= 0:
            run.status[member] = STATUS_CONVERGED
    run.images = parametrisation.images().detach().cpu()
    for callback in callbacks:
        callback.on_end(run)
    return run


def check_finite(name: str, value: float) -> float:
    """``value`` if finite, else a ``ValueError`` naming ``name``."""
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value}")
    return value


def restandardize(images: torch.Tensor) -> torch.Tensor:
    """Per-member standardisation (mean 0, std 1), the reference's re-standardise."""
    return standardize(images)


__all__ = [
    "Callback", "Cancelled", "GRADIENT_EPS", "NormalizedAscent", "Parametrisation", "ProbeScorer", "Run",
    "STATUS_CONVERGED", "STATUS_DEAD", "STATUS_MAX_STEPS", "Scorer", "StepRule", "TorchOptimizer", "Transform",
    "check_finite", "normalise_gradient", "optimize",
]
